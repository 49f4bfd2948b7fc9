"""The loss, the one jitted training step, the evaluation step and loop.

The model and its ``nnx.Optimizer`` travel as ``nnx.split`` parts: the static
graph definition and the state (parameters, BatchNorm statistics, dropout RNG
counters, optimizer state), which the step returns updated.
"""

import functools
import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import parallel


def loss_fn(
    model: nnx.Module, images: jax.Array, labels: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Mean softmax cross-entropy of a batch; returns ``(loss, logits)``."""
  logits = model(images)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return loss.mean(), logits


@functools.partial(jax.jit, static_argnums=0)
def train_step(
    graphdef: nnx.GraphDef, state: nnx.State, images: jax.Array,
    labels: jax.Array,
) -> tuple[nnx.State, dict[str, jax.Array]]:
  """One update of ``(model, optimizer)`` given as ``nnx.split`` parts.

  The model runs in training mode: BatchNorm normalises with the batch's
  statistics and updates its running averages, dropout draws a fresh mask
  from the model's RNG stream (whose counter advances). Both live in
  ``state`` (``nnx.BatchStat``, ``nnx.RngState``), so the returned state
  carries them to the next step and into the checkpoint.

  Returns:
    The new state and the batch's ``loss``, ``accuracy`` and the ``lr`` the
    update used, read from the optimizer state.
  """
  model, optimizer = nnx.merge(graphdef, state)
  model.train()
  grad_fn = nnx.value_and_grad(loss_fn, has_aux=True)
  (loss, logits), grads = grad_fn(model, images, labels)
  optimizer.update(model, grads)
  metrics = {
      'loss': loss,
      'accuracy': jnp.mean(jnp.argmax(logits, axis=-1) == labels),
      'lr': optimizer.opt_state.hyperparams['learning_rate'][...],
  }
  return nnx.state((model, optimizer)), metrics


@functools.partial(jax.jit, static_argnums=0)
def eval_step(
    graphdef: nnx.GraphDef, state: nnx.State, images: jax.Array,
    labels: jax.Array, weights: jax.Array,
) -> dict[str, jax.Array]:
  """Sums of the loss and of correct predictions, weighted (0 for padding).

  The model runs in evaluation mode (BatchNorm's running statistics, no
  dropout); ``state`` is not changed.
  """
  model, _ = nnx.merge(graphdef, state)
  model.eval()
  _, logits = loss_fn(model, images, labels)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = jnp.argmax(logits, axis=-1) == labels
  return {
      'loss_sum': jnp.sum(losses * weights),
      'correct': jnp.sum(correct * weights),
  }


def evaluate(
    graphdef: nnx.GraphDef, state: nnx.State, images: np.ndarray,
    labels: np.ndarray, batch_size: int, placement: parallel.Placement,
) -> dict[str, float]:
  """Test loss and accuracy over a whole split (padded to full batches)."""
  n = len(images)
  devices = jax.device_count()
  batch_size = math.ceil(min(batch_size, n) / devices) * devices
  padded = math.ceil(n / batch_size) * batch_size
  pad = [(0, padded - n)]
  images = np.pad(images, pad + [(0, 0)] * (images.ndim - 1))
  labels = np.pad(labels, pad)
  weights = np.pad(np.ones(n, np.float32), pad)
  totals = {'loss_sum': 0.0, 'correct': 0.0}
  for start in range(0, padded, batch_size):
    batch = slice(start, start + batch_size)
    sums = eval_step(
        graphdef, state, placement.shard(images[batch]),
        placement.shard(labels[batch]), placement.shard(weights[batch]),
    )
    for key, value in jax.device_get(sums).items():
      totals[key] += float(value)
  return {'test_loss': totals['loss_sum'] / n,
          'test_accuracy': totals['correct'] / n}

