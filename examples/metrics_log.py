"""The trainer's metrics file (JSON lines) and its PNG plots.

One JSON object per training step: ``step`` (the optimizer's update count,
0-based, so ``lr == schedule(step)``), ``epoch`` (0-based), ``lr``, ``loss``
and ``accuracy`` of the batch; the last step of each epoch also carries
``test_loss`` and ``test_accuracy``.
"""

from collections.abc import Iterable, Sequence
import json
import os
from typing import Any

Record = dict[str, Any]

PLOTS = ('loss', 'accuracy', 'lr')


class MetricsLog:
  """An append-only JSON-lines file, cut back to the epochs a resume keeps."""

  def __init__(self, path: str, *, keep_epochs: int):
    """Opens ``path``, keeping only records of epochs ``< keep_epochs``.

    Records of later epochs belong to work a restored checkpoint does not
    contain (a run killed mid-epoch, or stopped on a non-finite loss); they
    are dropped so that the file matches an uninterrupted run.

    Args:
      path: the ``.jsonl`` file; created if missing.
      keep_epochs: the number of completed epochs to keep (0: start afresh).
    """
    self.path = path
    self.records: list[Record] = []
    if keep_epochs and os.path.exists(path):
      with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
      self.records = [r for r in records if r['epoch'] < keep_epochs]
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in self.records)
    os.replace(tmp, path)

  def extend(self, records: Iterable[Record]) -> None:
    """Appends records to the file and flushes it."""
    records = list(records)
    with open(self.path, 'a') as f:
      f.writelines(json.dumps(r) + '\n' for r in records)
    self.records.extend(records)


def read_metrics(path: str) -> list[Record]:
  """Reads a metrics file written by :class:`MetricsLog`."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def plot_metrics(records: Sequence[Record], workdir: str) -> list[str]:
  """Writes ``loss.png``, ``accuracy.png``, ``lr.png`` and ``training.png``.

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
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
  fig, axes = plt.subplots(1, len(PLOTS), figsize=(13, 3.5),
                           layout='constrained')
  for ax, name in zip(axes, PLOTS):
    _draw(ax, name, records)
  paths.append(os.path.join(workdir, 'training.png'))
  fig.savefig(paths[-1], dpi=120)
  plt.close(fig)
  return paths


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
