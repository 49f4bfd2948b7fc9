"""The example models and data as pure functions of a parameter pytree.

Benchmarks need ``jax.jit(f).lower(...)`` and ``jax.vmap`` over stacked
parameters, so the Flax NNX models of ``examples/model.py`` are split once
into a static graph and a ``Param`` pytree, and merged back inside the loss.
"""

from collections.abc import Callable
import functools
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import data as data_lib
from examples import model as model_lib


@functools.lru_cache(maxsize=1)
def digits() -> data_lib.Dataset:
  """scikit-learn's 8x8 digits (bundled, no download), as ``examples`` loads it."""
  return data_lib.load_dataset('digits')


def init(name: str, seed: int) -> tuple[Callable[..., jax.Array], Any]:
  """``(apply, params)`` of the example ``"cnn"`` or ``"mlp"`` on digits.

  ``apply(params, images) -> logits`` is pure; ``params`` is the model's
  ``nnx.Param`` state (the example models hold nothing else).
  """
  model = model_lib.make_model(name, digits(), seed=seed)
  graphdef, params = nnx.split(model, nnx.Param)

  def apply(params: Any, images: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, params)(images)

  return apply, params


def loss_fn(apply: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
  """``loss(params, (images, labels))``: mean softmax cross-entropy."""

  def loss(params: Any, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    images, labels = batch
    logits = apply(params, images)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean()

  return loss


def batches(batch_size: int, num_steps: int, *, seed: int = 0):
  """``(images, labels)`` stacked along a leading ``num_steps`` axis.

  Shuffled epochs of the digits training set, drawn with NumPy so every
  framework sees the same batches in the same order.
  """
  dataset = digits()
  n = dataset.train_images.shape[0]
  rng = np.random.default_rng(seed)
  order = np.concatenate([
      rng.permutation(n) for _ in range(-(-num_steps * batch_size // n))
  ])[: num_steps * batch_size].reshape(num_steps, batch_size)
  images = dataset.train_images[order]
  labels = dataset.train_labels[order]
  return jnp.asarray(images), jnp.asarray(labels)


def unstack(stacked: Any) -> list[Any]:
  """A stacked pytree as a list of its slices along axis 0 (on device)."""
  size = jax.tree.leaves(stacked)[0].shape[0]
  return [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(size)]


def stack(trees: list[Any]) -> Any:
  return jax.tree.map(lambda *x: jnp.stack(x), *trees)


def max_abs_diff(a: Any, b: Any) -> float:
  """The largest absolute difference between two pytrees' leaves."""
  diffs = jax.tree.map(
      lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)
  return max(jax.tree.leaves(diffs))
