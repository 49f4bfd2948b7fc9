"""Gradient accumulation: one optimizer step from several microbatches.

The loss and gradient of every microbatch are taken at the same parameters
(a ``lax.scan``, so memory holds one microbatch's activations at a time); the
gradients are averaged as ``optax.MultiSteps`` does (Welford's running mean,
``acc + (g - acc) / (k + 1)``, in the gradients' dtype), so the update equals
that of a training loop wrapped in ``optax.MultiSteps``. The model state
(batch statistics) is threaded through the microbatches in order.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from optax_clr import _loss


def _mean_or_last(stacked: jax.Array) -> jax.Array:
  """The mean of float leaves over the microbatches; the last one otherwise."""
  if jnp.issubdtype(stacked.dtype, jnp.inexact):
    return jnp.mean(stacked, axis=0)
  return stacked[-1]


def value_and_grad(
    loss_fn: Callable[..., Any],
    params: Any,
    model_state: Any,
    microbatches: Any,
    key: jax.Array | None,
    step: jax.Array,
    accumulation_steps: int,
    *,
    dtype: Any,
    has_aux: bool,
    stateful: bool,
    data: Any = None,
) -> _loss.LossStep:
  """The mean loss and gradient of one optimizer step's microbatches.

  Args:
    loss_fn: the user's loss, by the convention of :mod:`optax_clr._loss`.
    params: the parameters, the same for every microbatch.
    model_state: threaded through the microbatches in order.
    microbatches: a pytree with a leading axis of ``accumulation_steps``.
    key: microbatch ``j`` of step ``t`` receives ``fold_in(key, t * A +
      j)`` (``A = accumulation_steps``): every microbatch draws afresh, and
      ``A = 1`` is the key of step ``t``.
    step: the optimizer step.
    accumulation_steps: ``A``, the number of microbatches.
    dtype: the dtype the losses are averaged in (float32, or float64 under
      x64), whatever the loss's own dtype (bfloat16, say).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    stateful: whether ``loss_fn`` takes and returns a model state.
    data: arrays shared by every microbatch, passed as ``data=`` unless None.

  Returns:
    A :class:`optax_clr._loss.LossStep`: the mean loss (in ``dtype``), the
    aux leaves averaged over the microbatches (integer ones: the last
    microbatch's), the model state after the last microbatch and the mean
    gradient.
  """

  def one(carry, inputs):
    model_state, total, acc = carry
    index, batch = inputs
    out = _loss.value_and_grad(
        loss_fn, params, model_state, batch,
        _loss.step_key(key, step * accumulation_steps + index),
        has_aux=has_aux, stateful=stateful, data=data,
    )
    acc = jax.tree.map(lambda g, a: a + (g - a) / (index + 1), out.grads, acc)
    total = total + jnp.asarray(out.loss, dtype)
    return (out.model_state, total, acc), out.aux

  zeros = jax.tree.map(jnp.zeros_like, params)
  indices = jnp.arange(accumulation_steps, dtype=jnp.int32)
  (model_state, total, grads), aux = jax.lax.scan(
      one, (model_state, jnp.zeros([], dtype), zeros), (indices, microbatches)
  )
  loss = total / accumulation_steps
  return _loss.LossStep(
      loss, jax.tree.map(_mean_or_last, aux), model_state, grads
  )
