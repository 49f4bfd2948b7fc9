"""The suite's language-model task: a byte-level transformer on Python source.

Text every machine has without a download: a fixed list of files of the
running interpreter's standard library, split into training and test text
by file. A row is a window of ``CONTEXT + 1`` bytes; the model predicts
every byte from the ones before it. The model is a small decoder-only
transformer in Flax NNX: token and position embeddings, pre-LayerNorm
blocks of causal self-attention and a GELU MLP, a tied-free linear head.
"""

import functools
import os
import sysconfig

from flax import nnx
import jax.numpy as jnp
import numpy as np

CONTEXT = 32
VOCAB = 256
# Files that CPython 3.10 to 3.13 all ship, split by file.
TRAIN_FILES = (
    'argparse.py', 'ast.py', 'calendar.py', 'csv.py', 'dataclasses.py',
    'difflib.py', 'fractions.py', 'functools.py', 'heapq.py', 'random.py',
    'shutil.py', 'statistics.py', 'textwrap.py', 'tokenize.py',
)
TEST_FILES = ('bisect.py', 'copy.py', 'shlex.py', 'queue.py')
TEST_WINDOWS = 512


def _read(name: str) -> bytes:
  path = os.path.join(sysconfig.get_paths()['stdlib'], name)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'the language-model task reads {name} from the standard library at'
        f' {path}, which this Python does not have.'
    )
  with open(path, 'rb') as f:
    return f.read()


def _windows(names, limit=None) -> np.ndarray:
  text = np.frombuffer(b'\n'.join(_read(n) for n in names), np.uint8)
  size = CONTEXT + 1
  count = text.size // size
  windows = text[: count * size].reshape(count, size).astype(np.int32)
  if limit is not None:  # evenly spaced, so every test file is read
    windows = windows[np.linspace(0, count - 1, limit).astype(int)]
  return windows


@functools.lru_cache(maxsize=None)
def load() -> tuple[np.ndarray, np.ndarray]:
  """``(train, test)`` windows ``[rows, CONTEXT + 1]`` of byte ids."""
  return _windows(TRAIN_FILES), _windows(TEST_FILES, TEST_WINDOWS)


class Block(nnx.Module):
  """Pre-LayerNorm causal self-attention and MLP, each residual."""

  def __init__(self, width, heads, *, rngs):
    self.norm1 = nnx.LayerNorm(width, rngs=rngs)
    self.attention = nnx.MultiHeadAttention(
        heads, width, decode=False, rngs=rngs)
    self.norm2 = nnx.LayerNorm(width, rngs=rngs)
    self.up = nnx.Linear(width, 4 * width, rngs=rngs)
    self.down = nnx.Linear(4 * width, width, rngs=rngs)

  def __call__(self, x, mask):
    x = x + self.attention(self.norm1(x), mask=mask)
    return x + self.down(nnx.gelu(self.up(self.norm2(x))))


class TransformerLM(nnx.Module):
  """A decoder-only byte-level transformer: logits ``[batch, time, 256]``."""

  def __init__(self, *, width=32, heads=4, layers=2, rngs):
    self.embed = nnx.Embed(VOCAB, width, rngs=rngs)
    self.position = nnx.Param(0.02 * nnx.initializers.normal(1.0)(
        rngs.params(), (CONTEXT, width)))
    self.blocks = nnx.List(
        [Block(width, heads, rngs=rngs) for _ in range(layers)])
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.head = nnx.Linear(width, VOCAB, rngs=rngs)

  def __call__(self, tokens):
    length = tokens.shape[-1]
    x = self.embed(tokens) + self.position[...][:length]
    mask = nnx.make_causal_mask(tokens)
    for block in self.blocks:
      x = block(x, mask)
    return self.head(self.norm(x))


def bits_per_byte(model, windows) -> jnp.ndarray:
  """The mean next-byte cross-entropy in bits of ``windows [n, T + 1]``."""
  import optax  # pylint: disable=g-import-not-at-top
  logits = model(windows[:, :-1])
  nats = optax.softmax_cross_entropy_with_integer_labels(
      logits, windows[:, 1:]).mean()
  return nats / jnp.log(2.0)
