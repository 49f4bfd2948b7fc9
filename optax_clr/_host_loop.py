"""Steps driven from the host: one compiled step, called once per step.

The ``"loop"`` strategy of :func:`optax_clr.sweep` and
:func:`optax_clr.range_test` (:mod:`optax_clr._strategy` says when it runs).
The training state, with buffers for every step's records, is one pytree
that each call of the step donates (``donate_argnums``): the step updates it
in place, so memory holds one state, as in a scanned program. The step reads
its batch by index from arrays already on the device and counts its steps in
the state itself, so that a call copies nothing from the host: Python only
dispatches, and the device runs ahead of it until something waits (a bar's
update, or the end).
"""

from collections.abc import Callable, Mapping
from typing import Any
import weakref

import jax
import jax.numpy as jnp

from optax_clr import _progress


def needs_sync(mesh: Any) -> bool:
  """Whether a loop on ``mesh`` must wait for each step (see ``drive``)."""
  if mesh is None:
    return False
  devices = list(mesh.devices.flat)
  return len(devices) > 1 and devices[0].platform == 'cpu'


def fresh(tree: Any) -> Any:
  """Copies of ``tree``'s arrays, inside a program: buffers of their own.

  The state a loop donates must never be the caller's arrays (a program may
  hand an input it passes through back as its output).
  """
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def index(tree: Any, i: jax.Array, axis: int = 0) -> Any:
  """Entry ``i`` along ``axis`` of every leaf, inside a program (no copy)."""
  return jax.tree.map(
      lambda x: jax.lax.dynamic_index_in_dim(x, i, axis, keepdims=False), tree)


def buffers(shapes: Any, num_steps: int, axis: int = 0) -> Any:
  """Zeros to record ``num_steps`` values of ``shapes`` (``eval_shape``'s).

  The step axis is inserted at ``axis``.
  """
  return jax.tree.map(
      lambda s: jnp.zeros((*s.shape[:axis], num_steps, *s.shape[axis:]),
                          s.dtype), shapes)


def write(records: Any, values: Any, i: jax.Array, axis: int = 0) -> Any:
  """``records`` with ``values`` at step ``i`` (in place, once donated)."""
  return jax.tree.map(
      lambda r, v: jax.lax.dynamic_update_index_in_dim(r, v, i, axis),
      records, values)


# Per compiled step, its flat twins: ``{(state treedef, consts treedef):
# jitted step on leaves}``, dropped with the step.
_FLAT: 'weakref.WeakKeyDictionary[Any, dict[Any, Any]]' = (
    weakref.WeakKeyDictionary())


def _flat(step: Callable[..., Any], state_def: Any, consts_def: Any,
          unpack: bool) -> Callable[[list[Any], list[Any]], list[Any]]:
  """``step`` on the leaves of its state and consts, the state donated.

  A dispatch flattens its arguments; a tree of NNX variables flattens in
  Python, at a cost comparable to a small model's step. On lists of arrays
  the dispatch stays in JAX's C++ path. The unflattening is traced once.
  """
  twins = _FLAT.setdefault(step, {})
  key = (state_def, consts_def, unpack)
  if key not in twins:
    step_ref = weakref.ref(step)  # A value holding its key would keep it.

    def flat_step(leaves, const_leaves):
      state = jax.tree.unflatten(state_def, leaves)
      consts = jax.tree.unflatten(consts_def, const_leaves)
      traced = step_ref()
      assert traced is not None  # Traced inside drive, which holds it.
      return jax.tree.leaves(
          traced(state, *consts) if unpack else traced(state, consts))

    twins[key] = jax.jit(flat_step, donate_argnums=0)
  return twins[key]


def drive(step: Callable[..., Any], state: Any, consts: Any,
          num_steps: int,
          after: Mapping[int, Callable[[Any], None]], *,
          unpack: bool = False, sync: bool = False) -> Any:
  """``num_steps`` calls of ``state = step(state, consts)``.

  Args:
    step: the compiled step; its state is donated. The same function on
      every call (its flat twin is compiled once per function).
    state: the first state (never the caller's arrays: see :func:`fresh`).
    consts: the step's other inputs, the same at every step.
    num_steps: the number of calls.
    after: ``{done: hook}``: ``hook(state)`` runs after the ``done``-th call
      (an evaluation, a bar's update).
    unpack: call ``step(state, *consts)`` instead.
    sync: wait for each step before dispatching the next. Needed where the
      step's devices share the host's threads and meet in a collective
      (several CPU devices): a device's next step, dispatched early, can
      hold a thread while blocked in its all-reduce, and with every
      thread so held the other devices never arrive (XLA:CPU aborts after
      40 s in its rendezvous).

  Returns:
    The last state.
  """
  leaves, state_def = jax.tree.flatten(state)
  const_leaves, consts_def = jax.tree.flatten(consts)
  flat_step = _flat(step, state_def, consts_def, unpack)
  for done in range(1, num_steps + 1):
    leaves = flat_step(leaves, const_leaves)
    if sync:
      jax.block_until_ready(leaves)
    hook = after.get(done)
    if hook is not None:
      hook(jax.tree.unflatten(state_def, leaves))
  return jax.tree.unflatten(state_def, leaves)


def tell(token: int, done: int, ready: Any) -> None:
  """Moves bar ``token`` to ``done`` steps once ``ready`` is computed.

  The wait is what keeps the bar honest (Python dispatches ahead of the
  device); a bar has about fifty updates a run, so the waits cost little.
  Nothing happens without a bar (token 0).
  """
  if token:
    jax.block_until_ready(ready)
    _progress.update(token, done)
