"""The calling convention of a user's ``loss_fn``, shared by the range test and
sweeps.

``loss_fn`` takes ``(params, batch)``, or ``(params, model_state, batch)``
when a model state (batch statistics, say) is threaded through training, plus
the keyword ``key=`` when a random key is given (and ``data=`` when a sweep
shares arrays such as a whole dataset). It returns the loss, or
``(loss, aux)`` with ``has_aux``; with a model state, that together with the
new state: ``(loss, new_model_state)`` or ``((loss, aux), new_model_state)``.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class LossStep(NamedTuple):
  """What one evaluation of ``loss_fn`` and its gradient gives."""

  loss: jax.Array
  aux: Any  # {} without has_aux.
  model_state: Any  # The new model state (None without one).
  grads: Any


def step_key(key: jax.Array | None, step: jax.Array) -> jax.Array | None:
  """The key of step ``step``: ``jax.random.fold_in(key, step)``."""
  return None if key is None else jax.random.fold_in(key, step)


def _unpack(output: Any, has_aux: bool) -> tuple[Any, Any]:
  if not has_aux:
    return output, {}
  if not (isinstance(output, (tuple, list)) and len(output) == 2):
    raise TypeError(
        'loss_fn must return (loss, aux) with has_aux=True, got'
        f' {type(output).__name__}.'
    )
  return output[0], output[1]


def value_and_grad(
    loss_fn: Callable[..., Any],
    params: Any,
    model_state: Any,
    batch: Any,
    key: jax.Array | None,
    *,
    has_aux: bool,
    stateful: bool,
    data: Any = None,
) -> LossStep:
  """Calls ``loss_fn`` by the convention above, with its gradient.

  Args:
    loss_fn: the user's loss.
    params: differentiated.
    model_state: passed (not differentiated) when ``stateful``.
    batch: the step's batch.
    key: passed as ``key=`` unless None.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    stateful: whether ``loss_fn`` takes and returns a model state.
    data: passed as ``data=`` unless None.

  Returns:
    A :class:`LossStep`; aux leaves are arrays (Python numbers converted).
  """
  kwargs = {} if key is None else {'key': key}
  if data is not None:
    kwargs['data'] = data

  def objective(params, model_state, batch):
    if stateful:
      output = loss_fn(params, model_state, batch, **kwargs)
      if not (isinstance(output, (tuple, list)) and len(output) == 2):
        raise TypeError(
            'with model_state, loss_fn must return (loss, new_model_state)'
            ' or, with has_aux=True, ((loss, aux), new_model_state); got'
            f' {type(output).__name__}.'
        )
      output, new_state = output
    else:
      output, new_state = loss_fn(params, batch, **kwargs), model_state
    loss, aux = _unpack(output, has_aux)
    return loss, (jax.tree.map(jnp.asarray, aux), new_state)

  (loss, (aux, new_state)), grads = jax.value_and_grad(
      objective, has_aux=True
  )(params, model_state, batch)
  return LossStep(loss, aux, new_state, grads)
