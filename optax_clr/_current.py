r"""The learning rate an optimizer state is at, for logging and resuming.

The state of an optax optimizer holds everything a schedule needs: the count
of updates done. ``optax.inject_hyperparams`` also keeps the rate itself; a
plain ``optax.adam(schedule)`` keeps only the count (in a
``ScaleByScheduleState``), so the schedule must be passed to read the rate.
Flax and Orbax are not imported. Besides optax's own state types, the state
may come in the two forms they turn it into: ``nnx.state(optimizer)`` (an
``nnx.State``, a mapping whose leaves are ``OptState`` variables) and an
Orbax restore without a target (plain dicts and lists, a named tuple becoming
a dict of its fields). Both are recognised by their keys: a mapping with a
``'hyperparams'`` mapping holding a ``'learning_rate'`` is an injected state,
a mapping whose only key is ``'count'`` a ``ScaleByScheduleState``. Wrapped
leaves (NNX variables, ``{'value': array}`` dicts) are read through their
single pytree leaf.
"""

from collections.abc import Callable, Mapping
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


def _hyperparams(node: Any) -> Any:
  """The hyperparameters ``node`` injects, or None if it is no such state."""
  if isinstance(node, _INJECT_STATES):
    return node.hyperparams
  if isinstance(node, Mapping) and 'hyperparams' in node:
    return node['hyperparams']  # nnx.state(optimizer), an Orbax restore.
  return None


def _is_inject(node: Any) -> bool:
  hyperparams = _hyperparams(node)
  return isinstance(hyperparams, Mapping) and 'learning_rate' in hyperparams


def _is_schedule(node: Any) -> bool:
  if isinstance(node, optax.ScaleByScheduleState):
    return True
  # A ScaleByScheduleState restored by Orbax without a target, or in an
  # nnx.State: its one field as the one key.
  return isinstance(node, Mapping) and list(node.keys()) == ['count']


def _count(node: Any) -> Any:
  return node['count'] if isinstance(node, Mapping) else node.count


def _inside_hyperparams_states(path: tuple[Any, ...]) -> bool:
  """Whether ``path`` runs through inject_hyperparams' schedule counts."""
  return any(
      getattr(key, 'key', getattr(key, 'name', None)) == 'hyperparams_states'
      for key in path
  )


def _find(opt_state: Any, test: Callable[[Any], bool]) -> list[tuple[str, Any]]:
  """``(path, node)`` for every node of ``opt_state`` that passes ``test``.

  The counts of an ``inject_hyperparams`` that injects no learning rate (a
  scheduled ``b1``, say) are no learning-rate schedule's: they are skipped.
  """
  flat, _ = jax.tree_util.tree_flatten_with_path(
      opt_state, is_leaf=lambda node: _is_inject(node) or _is_schedule(node)
  )
  return [
      (jax.tree_util.keystr(path), node)
      for path, node in flat
      if test(node) and not _inside_hyperparams_states(path)
  ]


def _array(value: Any) -> jax.Array:
  """A (possibly wrapped) scalar leaf as an array."""
  leaves = jax.tree.leaves(value)
  return jnp.asarray(leaves[0] if len(leaves) == 1 else value)


def _paths(found: list[tuple[str, Any]]) -> str:
  return ', '.join(f'opt_state{path}' for path, _ in found)


def _one(found: list[tuple[str, Any]], what: str) -> Any:
  if len(found) > 1:
    raise ValueError(
        f'opt_state holds {len(found)} {what}s, at {_paths(found)}: pass the'
        ' state of one of them (one group of optax.multi_transform, say'
        " opt_state.inner_states['head']), whose rate is then unambiguous."
    )
  return found[0][1]


def _what_it_is(opt_state: Any) -> str:
  """The type of ``opt_state``, and for plain containers what to pass."""
  name = type(opt_state).__name__
  if not isinstance(opt_state, (Mapping, list)):
    return f'got {name}'
  return (
      f'got a {name} with no such entry (a plain or nnx.State state is'
      " searched for a 'hyperparams' mapping with a 'learning_rate' and for"
      " a {'count': ...} schedule state). If the state was restored without"
      ' a target, restore it with one (tx.init(params) as the abstract'
      ' tree) and pass that'
  )


def current_learning_rate(
    opt_state: Any,
    schedule: Callable[[Any], Any] | None = None,
) -> jax.Array:
  r"""The learning rate of the most recent update an optimizer state made.

  After :math:`k` updates the state's count is :math:`k`, and the rate is

  .. math::

    \text{lr} = \begin{cases}
      \text{hyperparams["learning\_rate"]}
        & \text{with optax.inject\_hyperparams} \\
      \text{schedule}(\max(k - 1, 0)) & \text{otherwise}
    \end{cases}

  the rate update :math:`k` used (the first update's before any), so the two
  ways of building an optimizer read the same. The next update will use
  :math:`\text{schedule}(k)`, which is PyTorch's ``get_last_lr()`` after
  ``scheduler.step()``.

  An injected rate is the one the update used, so when ``opt_state`` holds
  one it is returned as it is, with or without ``schedule``: a rate set by
  hand (``state.hyperparams["learning_rate"] = 0.5``) or injected from
  another schedule is not replaced by ``schedule``'s value, and ``schedule``
  is not called. Otherwise the rate is ``schedule`` at the count of the one
  ``ScaleByScheduleState`` (what ``optax.adam(schedule)`` keeps).

  ``opt_state`` may be nested in any pytree (``optax.chain``,
  ``optax.MultiSteps``, a train state), be an object with an ``opt_state``
  attribute such as an ``nnx.Optimizer``, a mapping with an ``'opt_state'``
  entry, ``nnx.state(optimizer)``, or an Orbax restore without a target
  (plain dicts and lists): there an injected state is a mapping with a
  ``'hyperparams'`` mapping holding ``'learning_rate'``, and a
  ``ScaleByScheduleState`` a mapping whose one key is ``'count'``. It may be
  traced: call this inside a jitted train step to log the rate.

  Args:
    opt_state: an optax optimizer state, in any of the forms above.
    schedule: the learning-rate schedule the optimizer was built with, or
      None to read an injected rate.

  Returns:
    learning_rate
      A scalar array.

  Raises:
    ValueError: ``opt_state`` holds no learning rate (nor, with
      ``schedule``, a count); several (``optax.multi_transform`` with a rate
      per group: pass one group's state); or both an injected rate and a
      schedule's count, in different places (pass the state of one).
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

    A rate injected by hand is the one read, not the schedule's:

    >>> tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    >>> state = tx.init(params)
    >>> state.hyperparams['learning_rate'] = jnp.asarray(0.05)
    >>> updates, state = tx.update(jnp.ones(2), state, params)
    >>> print(updates, optax_clr.current_learning_rate(state, schedule))
    [-0.05 -0.05] 0.05
  """
  if schedule is not None:
    schedule = _checks.check_callable('schedule', schedule)
  if not isinstance(opt_state, tuple) and hasattr(opt_state, 'opt_state'):
    opt_state = opt_state.opt_state
  elif isinstance(opt_state, Mapping) and 'opt_state' in opt_state:
    opt_state = opt_state['opt_state']
  injected = _find(opt_state, _is_inject)
  counted = _find(opt_state, _is_schedule)
  if injected and counted:
    raise ValueError(
        f'opt_state holds an injected learning rate, at {_paths(injected)},'
        f' and the count of a learning-rate schedule, at {_paths(counted)}:'
        ' the rate is ambiguous. Pass the state of the one that sets the'
        ' rate.'
    )
  if injected:
    state = _one(injected, 'injected learning rate')
    return _array(_hyperparams(state)['learning_rate'])
  if schedule is None:
    detail = (
        ' It keeps the count of a schedule: pass that schedule,'
        ' current_learning_rate(opt_state, schedule).'
        if counted
        else ' Build the optimizer with optax.inject_hyperparams, or pass'
        f' the schedule ({_what_it_is(opt_state)}).'
    )
    raise ValueError(
        'opt_state holds no learning rate (no optax.inject_hyperparams'
        f' state with a learning_rate).{detail}'
    )
  if not counted:
    raise ValueError(
        'opt_state holds no count of a learning-rate schedule (no'
        ' ScaleByScheduleState nor optax.inject_hyperparams state with a'
        f' learning_rate), {_what_it_is(opt_state)}.'
    )
  state = _one(counted, 'schedule count')
  count = _array(_count(state))
  return jnp.asarray(schedule(jnp.maximum(count - 1, 0)))
