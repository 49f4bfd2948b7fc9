r"""The learning rate an optimizer state is at, for logging and resuming.

The state of an optax optimizer holds everything a schedule needs: the count
of updates done. ``optax.inject_hyperparams`` also keeps the rate itself; a
plain ``optax.adam(schedule)`` keeps only the count (in a
``ScaleByScheduleState``), so the schedule must be passed to read the rate.
Flax is not imported: any object with an ``opt_state`` attribute (an
``nnx.Optimizer``, a ``flax.training.train_state.TrainState``) is read
through it, and wrapped leaves (NNX's ``OptState`` variables) through their
single pytree leaf.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_clr import _checks

_INJECT_STATES = tuple(
    state
    for state in (
        getattr(optax, 'InjectHyperparamsState', None),
        getattr(optax, 'InjectStatefulHyperparamsState', None),
    )
    if isinstance(state, type)
)


def _is_inject(node: Any) -> bool:
  return isinstance(node, _INJECT_STATES) and 'learning_rate' in getattr(
      node, 'hyperparams', {}
  )


def _is_schedule(node: Any) -> bool:
  return isinstance(node, optax.ScaleByScheduleState)


def _find(opt_state: Any, test: Callable[[Any], bool]) -> list[tuple[str, Any]]:
  """``(path, node)`` for every node of ``opt_state`` that passes ``test``."""
  flat, _ = jax.tree_util.tree_flatten_with_path(
      opt_state, is_leaf=lambda node: _is_inject(node) or _is_schedule(node)
  )
  return [
      (jax.tree_util.keystr(path), node) for path, node in flat if test(node)
  ]


def _array(value: Any) -> jax.Array:
  """A (possibly wrapped) scalar leaf as an array."""
  leaves = jax.tree.leaves(value)
  return jnp.asarray(leaves[0] if len(leaves) == 1 else value)


def _one(found: list[tuple[str, Any]], what: str) -> Any:
  if len(found) > 1:
    paths = ', '.join(f'opt_state{path}' for path, _ in found)
    raise ValueError(
        f'opt_state holds {len(found)} {what}s, at {paths}: pass the state'
        ' of one of them (one group of optax.multi_transform, say'
        " opt_state.inner_states['head']), whose rate is then unambiguous."
    )
  return found[0][1]


def current_learning_rate(
    opt_state: Any,
    schedule: Callable[[Any], Any] | None = None,
) -> jax.Array:
  r"""The learning rate of the most recent update an optimizer state made.

  After :math:`k` updates the state's count is :math:`k`, and the rate is

  .. math::

    \text{lr} = \text{schedule}(\max(k - 1, 0))

  the rate update :math:`k` used (the first update's before any):
  what ``optax.inject_hyperparams`` holds as
  ``state.hyperparams["learning_rate"]``, so the two ways of building an
  optimizer read the same. The next update will use
  :math:`\text{schedule}(k)`, which is PyTorch's ``get_last_lr()`` after
  ``scheduler.step()``.

  Without ``schedule``, the rate is read from the one
  ``optax.inject_hyperparams`` state in ``opt_state`` that injects a
  ``learning_rate``. With ``schedule``, it is ``schedule`` at the count of
  the one ``ScaleByScheduleState`` (what ``optax.adam(schedule)`` keeps) or,
  if there is none, of the one injected state. ``opt_state`` may be nested
  in any pytree (``optax.chain``, ``optax.MultiSteps``, a train state), or
  be an object with an ``opt_state`` attribute such as an ``nnx.Optimizer``.
  It may be traced: call this inside a jitted train step to log the rate.

  Args:
    opt_state: an optax optimizer state, or an object with an ``opt_state``
      attribute (``nnx.Optimizer``, Flax's ``TrainState``).
    schedule: the learning-rate schedule the optimizer was built with, or
      None to read an injected rate.

  Returns:
    learning_rate
      A scalar array.

  Raises:
    ValueError: ``opt_state`` holds no learning rate (nor, with
      ``schedule``, a count), or several (``optax.multi_transform`` with a
      rate per group: pass one group's state).
    TypeError: ``schedule`` is not callable.

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax, optax_clr
    >>> schedule = optax_clr.triangular_schedule(0.1, 0.5, step_size=2)
    >>> params = jnp.zeros(2)
    >>> for tx in (optax.inject_hyperparams(optax.sgd)(learning_rate=schedule),
    ...            optax.sgd(schedule)):
    ...   state = tx.init(params)
    ...   rates = []
    ...   for _ in range(4):
    ...     _, state = tx.update(jnp.ones(2), state, params)
    ...     rates.append(round(float(
    ...         optax_clr.current_learning_rate(state, schedule)), 3))
    ...   print(rates)
    [0.1, 0.3, 0.5, 0.3]
    [0.1, 0.3, 0.5, 0.3]
  """
  if schedule is not None:
    schedule = _checks.check_callable('schedule', schedule)
  if not isinstance(opt_state, tuple) and hasattr(opt_state, 'opt_state'):
    opt_state = opt_state.opt_state
  injected = _find(opt_state, _is_inject)
  if schedule is None:
    if not injected:
      counted = _find(opt_state, _is_schedule)
      detail = (
          ' It keeps the count of a schedule: pass that schedule,'
          ' current_learning_rate(opt_state, schedule).'
          if counted
          else ' Build the optimizer with optax.inject_hyperparams, or pass'
          ' the schedule.'
      )
      raise ValueError(
          'opt_state holds no learning rate (no optax.inject_hyperparams'
          f' state with a learning_rate).{detail}'
      )
    state = _one(injected, 'injected learning rate')
    return _array(state.hyperparams['learning_rate'])
  counted = _find(opt_state, _is_schedule) or injected
  if not counted:
    raise ValueError(
        'opt_state holds no count of a learning-rate schedule (no'
        ' ScaleByScheduleState nor optax.inject_hyperparams state with a'
        f' learning_rate), got {type(opt_state).__name__}.'
    )
  state = _one(counted, 'schedule count')
  count = _array(state.count)
  return jnp.asarray(schedule(jnp.maximum(count - 1, 0)))
