"""Text every CPython has: its standard library's ``.py`` files, as bytes.

The corpus is a fixed list of :data:`FILES`, each present in CPython 3.10 to
3.13 (checked against all four), read from the running interpreter's
standard library (``sysconfig.get_paths()['stdlib']``): no download. The
text of a file differs between Python versions, so the numbers of a run hold
for the version that ran it. The split is by file (every
``VALIDATION_EVERY``-th file of the sorted list is held out), so no
validation text is ever trained on; the vocabulary is the 256 byte values.

The interface the trainer, the comparison and other tasks build on::

  corpus = load_corpus()                      # Corpus of uint8 arrays
  offsets = batch_offsets(len(corpus.train), context=64, batch_size=16,
                          seed=0, steps=range(0, 600))   # [600, 16] int32
  tokens = windows(corpus.train, offsets[t], 64)         # [16, 65], jittable
  val = validation_windows(corpus, context=64, num_windows=256)

Batch ``t`` of seed ``s`` depends on ``(s, t)`` alone, so a run resumed at
any step, or continued from another run's checkpoint, sees the same batches
as an uninterrupted one without keeping an RNG state.
"""

from collections.abc import Iterable, Sequence
import math
import os
import sysconfig
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

FILES = (
    'argparse.py', 'ast.py', 'asyncio/base_events.py', 'asyncio/events.py',
    'base64.py', 'bdb.py', 'calendar.py', 'cmd.py', 'codecs.py',
    'collections/__init__.py', 'compileall.py', 'concurrent/futures/_base.py',
    'configparser.py', 'contextlib.py', 'copy.py', 'csv.py', 'dataclasses.py',
    'datetime.py', 'difflib.py', 'dis.py', 'email/message.py',
    'email/utils.py', 'enum.py', 'filecmp.py', 'fileinput.py', 'fractions.py',
    'ftplib.py', 'functools.py', 'gettext.py', 'glob.py', 'gzip.py',
    'heapq.py', 'http/client.py', 'http/cookiejar.py', 'imaplib.py',
    'ipaddress.py', 'json/decoder.py', 'json/encoder.py', 'locale.py',
    'logging/__init__.py', 'mimetypes.py', 'numbers.py', 'operator.py',
    'optparse.py', 'pickletools.py', 'platform.py', 'plistlib.py',
    'poplib.py', 'pprint.py', 'pstats.py', 'queue.py', 'random.py',
    'sched.py', 'selectors.py', 'shlex.py', 'shutil.py', 'smtplib.py',
    'socketserver.py', 'statistics.py', 'string.py', 'tabnanny.py',
    'textwrap.py', 'threading.py', 'timeit.py', 'tokenize.py', 'trace.py',
    'traceback.py', 'unittest/case.py', 'urllib/parse.py', 'uuid.py',
    'warnings.py', 'wave.py',
)
VALIDATION_EVERY = 8  # Files 7, 15, 23, ... of the sorted list: 9 of 72.
VOCAB_SIZE = 256  # Bytes.


class Corpus(NamedTuple):
  """The training and validation text, as byte values.

  Attributes:
    train: ``uint8[N]``, the training files concatenated.
    validation: ``uint8[M]``, the validation files concatenated.
    train_files: the training files, relative to the standard library.
    validation_files: the held-out files.
  """

  train: np.ndarray
  validation: np.ndarray
  train_files: tuple[str, ...]
  validation_files: tuple[str, ...]


def split_files(
    files: Sequence[str] = FILES,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """``(train, validation)``: every ``VALIDATION_EVERY``-th sorted file held out."""
  ordered = sorted(files)
  held = set(ordered[VALIDATION_EVERY - 1::VALIDATION_EVERY])
  return (tuple(f for f in ordered if f not in held),
          tuple(f for f in ordered if f in held))


def stdlib_dir() -> str:
  """The running interpreter's standard library directory."""
  return sysconfig.get_paths()['stdlib']


def load_corpus(root: str | None = None,
                files: Sequence[str] = FILES) -> Corpus:
  """Reads and splits the corpus.

  Args:
    root: the directory the files are relative to (default: the running
      interpreter's standard library).
    files: the files, relative to ``root``.

  Returns:
    The :class:`Corpus`.

  Raises:
    FileNotFoundError: a file is missing; the message names it.
  """
  root = stdlib_dir() if root is None else root
  train_files, validation_files = split_files(files)

  def read(names):
    parts = []
    for name in names:
      path = os.path.join(root, name)
      try:
        with open(path, 'rb') as f:
          parts.append(np.frombuffer(f.read(), np.uint8))
      except FileNotFoundError:
        raise FileNotFoundError(
            f'The LM corpus needs {name} from the standard library, but'
            f' {path} does not exist. It ships with CPython 3.10 to 3.13;'
            ' pass root= to read the files from another copy.') from None
    return np.concatenate(parts)

  return Corpus(read(train_files), read(validation_files), train_files,
                validation_files)


def batch_offsets(num_tokens: int, context: int, batch_size: int, seed: int,
                  steps: Iterable[int]) -> np.ndarray:
  """The start of every window of the given steps: ``int32[steps, batch]``.

  Step ``t`` of seed ``s`` draws ``batch_size`` uniform starts from
  ``np.random.default_rng([s, t])``: a pure function of ``(s, t)``.
  """
  high = num_tokens - context - 1
  if high < 1:
    raise ValueError(f'{num_tokens} tokens are too few for context {context}.')
  return np.stack([
      np.random.default_rng([seed, t]).integers(0, high, batch_size)
      for t in steps
  ]).astype(np.int32)


def validation_offsets(num_tokens: int, context: int,
                       num_windows: int) -> np.ndarray:
  """``num_windows`` starts spread evenly over the text: ``int32[n]``."""
  return np.linspace(0, num_tokens - context - 1, num_windows).astype(np.int32)


def validation_windows(corpus: Corpus, context: int,
                       num_windows: int) -> np.ndarray:
  """The validation set: ``int32[num_windows, context + 1]``, evenly spread."""
  offsets = validation_offsets(len(corpus.validation), context, num_windows)
  return np.asarray(windows(corpus.validation, offsets, context))


def windows(tokens, offsets, context: int):
  """The windows ``tokens[o : o + context + 1]``: ``int32[..., context + 1]``.

  Works on NumPy or JAX arrays (jittable: ``offsets`` may be traced).
  """
  index = jnp.asarray(offsets)[..., None] + jnp.arange(context + 1)
  return jnp.asarray(tokens)[index].astype(jnp.int32)


def bits_per_byte(loss_nats):
  """A mean cross-entropy in nats per byte, in bits per byte."""
  return loss_nats / math.log(2.0)
