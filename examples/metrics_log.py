"""The trainer's metrics file (JSON lines) and its PNG plots.

One JSON object per training step: ``step`` (the optimizer's update count,
0-based, so ``lr == schedule(step)``), ``epoch`` (0-based), ``lr``, ``loss``
and ``accuracy`` of the batch; the last step of each epoch also carries
``test_loss`` and ``test_accuracy``.

Every line is strict JSON: a NaN or infinite value is written as ``null``
(:func:`dumps`, which the LM trainer's log uses too), never as the bare
``NaN`` that Python's ``json`` writes and other readers refuse. Files and
plots are replaced atomically (:func:`write_atomically`), so a failed write
(a full disk) leaves the previous version, not a cut one.
"""

from collections.abc import Iterable, Iterator, Sequence
import contextlib
import json
import math
import os
from typing import Any

Record = dict[str, Any]

PLOTS = ('loss', 'accuracy', 'lr')


class MetricsError(ValueError):
  """The metrics file is damaged where a resume needs it."""


class MetricsLog:
  """An append-only JSON-lines file, cut back to the epochs a resume keeps.

  Each :meth:`extend` appends whole lines with one ``write`` and ``fsync``s
  them before returning, and the trainer checkpoints an epoch only after its
  records are on disk. A crash can therefore only leave a cut line *after*
  the last checkpointed epoch, which a resume drops.
  """

  def __init__(self, path: str, *, keep_epochs: int):
    """Opens ``path``, keeping only records of epochs ``< keep_epochs``.

    Records of later epochs belong to work a restored checkpoint does not
    contain (a run killed mid-epoch or mid-write, or stopped on a non-finite
    loss); they are dropped, whatever their state, so that the file matches
    an uninterrupted run.

    Args:
      path: the ``.jsonl`` file; created (or emptied) if ``keep_epochs`` is 0.
      keep_epochs: the number of completed epochs to keep (0: start afresh).

    Raises:
      MetricsError: the file is missing, a line before the end of epoch
        ``keep_epochs - 1`` is damaged (the message names the line), or the
        file ends before that epoch does.
    """
    self.path = path
    self.records: list[Record] = []
    if keep_epochs:
      self.records = _records_of_epochs(path, keep_epochs)
    try:
      write_atomically(path, ''.join(_line(r) for r in self.records))
    except OSError as error:
      raise MetricsError(f'Cannot write {path}: {error}.') from error

  def extend(self, records: Iterable[Record]) -> None:
    """Appends whole records and waits until they are on disk.

    Raises:
      OSError: the write failed (a full disk); the file is cut back to the
        records it held before, and the error names it.
    """
    records = list(records)
    if not records:
      return
    payload = ''.join(_line(r) for r in records).encode()
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      size = os.fstat(fd).st_size
      try:
        view = memoryview(payload)
        while view:
          view = view[os.write(fd, view):]
        os.fsync(fd)
      except OSError as error:
        with contextlib.suppress(OSError):
          os.ftruncate(fd, size)  # no cut line left behind
        raise OSError(error.errno, error.strerror, self.path) from error
    finally:
      os.close(fd)
    self.records.extend(records)


def _finite(value: Any) -> Any:
  """``value`` with every NaN or infinite float (nested too) as None."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {key: _finite(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_finite(item) for item in value]
  return value


def dumps(value: Any) -> str:
  """``value`` as strict JSON: NaN and infinities are written as ``null``."""
  return json.dumps(_finite(value), allow_nan=False)


def _line(record: Record) -> str:
  return dumps(record) + '\n'


@contextlib.contextmanager
def _replacing(path: str) -> Iterator[str]:
  """Yields a temporary name, renamed to ``path`` once the block is done.

  Raises:
    OSError: the block or the rename failed; the temporary file is removed,
      ``path`` is as it was, and the error names ``path`` (a failed
      ``write`` or ``flush`` names no file).
  """
  tmp = path + '.tmp'
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException as error:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    if isinstance(error, OSError) and error.errno and error.filename is None:
      raise OSError(error.errno, error.strerror, path) from error
    raise


def write_atomically(path: str, text: str) -> None:
  """Writes ``path`` atomically (temporary file, fsync, rename).

  Raises:
    OSError: the write failed; ``path`` is as it was.
  """
  with _replacing(path) as tmp, open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
  try:
    os.fsync(directory)
  finally:
    os.close(directory)


def _parse(path: str, number: int, line: bytes) -> Record:
  """One line as a record, or MetricsError naming the file and line."""
  try:
    record = json.loads(line)
  except ValueError as error:
    raise MetricsError(
        f'{path}, line {number}: not a JSON record ({error}).'
    ) from error
  if not isinstance(record, dict) or not all(
      isinstance(record.get(key), int) for key in ('step', 'epoch')):
    raise MetricsError(
        f'{path}, line {number}: not a metrics record (an object with'
        f' integer "step" and "epoch"): {line[:80]!r}.'
    )
  return record


def _records_of_epochs(path: str, epochs: int) -> list[Record]:
  """The records of epochs ``< epochs``, which must all be there, intact."""
  advice = ('The checkpoint cannot be continued without them: restore the'
            ' file, or pass a new --workdir.')
  try:
    with open(path, 'rb') as f:
      payload = f.read()
  except OSError as error:
    raise MetricsError(
        f'Cannot read {path} ({error}), which must hold the records of the'
        f' {epochs} checkpointed epochs. {advice}'
    ) from error
  # The part after the last newline is a record cut by a crash: past the
  # checkpoint, since an epoch is checkpointed only once its lines are whole.
  lines = payload.split(b'\n')[:-1]
  records = []
  for number, line in enumerate(lines, 1):
    if records and records[-1]['epoch'] == epochs - 1 and (
        'test_loss' in records[-1]):
      break  # the checkpointed epochs are complete; the rest is dropped
    if not line.strip():
      continue
    record = _parse(path, number, line)
    if record['step'] != len(records) or record['epoch'] >= epochs:
      raise MetricsError(
          f'{path}, line {number}: step {record["step"]} of epoch'
          f' {record["epoch"]} where step {len(records)} of an epoch before'
          f' {epochs} belongs (the checkpoint is after epoch {epochs}).'
          f' {advice}'
      )
    records.append(record)
  else:
    if not (records and records[-1]['epoch'] == epochs - 1
            and 'test_loss' in records[-1]):
      last = (f'step {records[-1]["step"]} of epoch {records[-1]["epoch"]}'
              if records else 'no record')
      raise MetricsError(
          f'{path} ends at {last}, but the checkpoint is after epoch'
          f' {epochs} (0-based epoch {epochs - 1} and its test metrics are'
          f' missing). {advice}'
      )
  return records


def read_metrics(path: str) -> list[Record]:
  """Reads a metrics file written by :class:`MetricsLog`.

  A cut last line (a run writing, or killed while writing) is left out.

  Raises:
    MetricsError: a complete line is damaged; the message names it.
  """
  with open(path, 'rb') as f:
    lines = f.read().split(b'\n')[:-1]
  return [_parse(path, number, line)
          for number, line in enumerate(lines, 1) if line.strip()]


def plot_metrics(records: Sequence[Record], workdir: str) -> list[str]:
  """Writes ``loss.png``, ``accuracy.png``, ``lr.png`` and ``training.png``.

  Each is drawn into a temporary file and renamed, so a failed write (a
  full disk) leaves no cut image.

  Args:
    records: the metrics records.
    workdir: the folder to write into.

  Returns:
    The paths written.
  """
  # Imported here: matplotlib is only needed once a run ends.
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  paths = []
  for name in PLOTS:
    fig, ax = plt.subplots(figsize=(5, 3.5), layout='constrained')
    _draw(ax, name, records)
    paths.append(os.path.join(workdir, f'{name}.png'))
    _save(plt, fig, paths[-1])
  fig, axes = plt.subplots(1, len(PLOTS), figsize=(13, 3.5),
                           layout='constrained')
  for ax, name in zip(axes, PLOTS):
    _draw(ax, name, records)
  paths.append(os.path.join(workdir, 'training.png'))
  _save(plt, fig, paths[-1])
  return paths


def _save(plt: Any, fig: Any, path: str) -> None:
  """Saves and closes ``fig``: a temporary file renamed to ``path``."""
  try:
    with _replacing(path) as tmp:
      fig.savefig(tmp, dpi=120, format='png')
  finally:
    plt.close(fig)


def _draw(ax: Any, name: str, records: Sequence[Record]) -> None:
  steps = [r['step'] for r in records]
  ends = [r for r in records if 'test_loss' in r]
  if name == 'lr':
    ax.plot(steps, [r['lr'] for r in records], color='tab:green')
    ax.set_ylabel('learning rate')
  else:
    ax.plot(steps, [r[name] for r in records], lw=0.8, alpha=0.6,
            label=f'train {name} (batch)')
    ax.plot([r['step'] for r in ends], [r[f'test_{name}'] for r in ends],
            'o-', color='tab:red', label=f'test {name}')
    ax.set_ylabel(name)
    ax.legend()
    if name == 'loss':
      ax.set_yscale('log')
  ax.set_xlabel('step')
  ax.grid(alpha=0.3)
