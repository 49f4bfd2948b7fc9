r"""K models trained as ONE compiled program: ``jit(vmap(scan))``.

Each model has its own hyperparameters (traced scalars inside the program, so
new values of the same shape reuse the compiled program), optimizer state and,
optionally, its own initialization, data order and random key. The K axis is
sharded over a mesh of every device of every process (or a user's mesh with
a ``data`` axis too); inside a device, the models run side by side
(``vmap``) or in chunks one after another (``lax.map``).
"""

from collections.abc import Callable, Mapping
import contextlib
import functools
import itertools
import math
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_clr import _cache
from optax_clr import _checks
from optax_clr import _host_loop
from optax_clr import _loss
from optax_clr import _mesh
from optax_clr import _progress
from optax_clr import _strategy

MODEL_AXIS = _mesh.MODEL_AXIS
DATA_AXIS = _mesh.DATA_AXIS


class SweepResult(NamedTuple):
  """What :func:`sweep` trained: arrays with a leading K axis (one per model).

  Attributes:
    losses: ``[K, num_steps]``, the loss of each step, before its update.
    params: the final parameters of every model.
    model_state: the final model state (None without one).
    aux: the stacked auxiliary outputs of ``loss_fn``, ``[K, num_steps,
      ...]`` (``{}`` without ``has_aux``).
    evals: ``eval_fn``'s metrics, ``[K, num_evals, ...]`` (None without
      ``eval_fn``).
    eval_steps: ``[num_evals]``, the updates done before each evaluation.
    hyperparams: the hyperparameters of every model, ``{name: [K]}``.
    learning_rates: ``[K, num_steps]``, the learning rate each update used,
      read from an ``optax.inject_hyperparams`` optimizer's state; None when
      the optimizer's state holds no ``learning_rate``.
    opt_state: the final optimizer state of every model: pass it back as
      ``sweep(..., opt_state=result.opt_state, first_step=num_steps)``, with
      ``params=result.params`` and ``params_axis=0``, to continue training.
  """

  losses: Any
  params: Any
  model_state: Any
  aux: Any
  evals: Any
  eval_steps: Any
  hyperparams: Any
  learning_rates: Any = None
  opt_state: Any = None


def grid(**axes: Any) -> dict[str, np.ndarray]:
  """The Cartesian product of hyperparameter values, one row per model.

  Flattened in C order: the first axis varies slowest, as
  ``itertools.product``.

  Args:
    **axes: ``name=values``, each a non-empty 1-D sequence of numbers.

  Returns:
    hyperparams
      ``{name: array of length K}`` with ``K`` the product of the lengths,
      ready for :func:`sweep`. Each array keeps its values' dtype (whole
      numbers stay integers).

  Raises:
    ValueError: no axes, or an axis that is empty or not 1-D.
    TypeError: values that are not real numbers.

  Examples:
    >>> import optax_clr
    >>> hp = optax_clr.grid(max_lr=[0.1, 0.2], step_size=[10, 20, 30])
    >>> hp['max_lr'].tolist()
    [0.1, 0.1, 0.1, 0.2, 0.2, 0.2]
    >>> hp['step_size'].tolist()
    [10, 20, 30, 10, 20, 30]
  """
  if not axes:
    raise ValueError('grid needs at least one axis, e.g. grid(max_lr=[...]).')
  arrays = {}
  for name, values in axes.items():
    array = np.asarray(values)
    if array.ndim != 1 or not array.size:
      raise ValueError(
          f'grid axis {name} must be a non-empty 1-D sequence, got {values!r}.'
      )
    if array.dtype.kind not in 'iuf':
      raise TypeError(f'grid axis {name} must hold real numbers, got {values!r}.')
    arrays[name] = array
  rows = list(itertools.product(*(range(a.size) for a in arrays.values())))
  index = np.asarray(rows, np.int64).reshape(len(rows), len(arrays))
  return {
      name: array[index[:, i]] for i, (name, array) in enumerate(arrays.items())
  }


class _Static(NamedTuple):
  has_aux: bool
  stateful: bool
  num_steps: int
  eval_every: int | None
  in_axes: tuple[Any, ...]
  resumed: bool  # opt_state is given, not initialized.


class _Plan(NamedTuple):
  """How the padded K axis runs: devices, then passes of side-by-side chunks."""

  mesh: jax.sharding.Mesh
  num_models: int  # K, before padding.
  per_device: int  # Models per device along the models axis (padding in).
  passes: int  # Chunks each device trains one after another.
  chunk: int  # Models side by side in one pass.
  gather: bool  # States replicated on every device, not sharded.
  # Steps between progress updates (the program's blocks); None: no bar.
  progress: int | None

  @property
  def padded(self) -> int:
    return self.per_device * _mesh.size(self.mesh, MODEL_AXIS)


def _learning_rate(opt_state: Any) -> jax.Array | None:
  """The ``learning_rate`` an ``inject_hyperparams`` state holds, if one."""
  try:
    return optax.tree_utils.tree_get(
        opt_state, 'learning_rate',
        filtering=lambda _, value: hasattr(value, 'dtype'),  # Not a state.
    )
  except (KeyError, ValueError):  # Several: ambiguous, leave it out.
    return None


def _told_ends(num_steps: int, eval_every: int | None,
               block: int) -> tuple[int, ...]:
  """The steps into a pass after which the bar hears, in order.

  ``_train_one``'s schedule of updates, for the host (``_progress.Channel``):
  each evaluation interval (the whole run without one) runs in blocks of
  ``block`` steps; the bar hears after every whole block, and after a
  shorter last block when it crosses a multiple of ``block``, unless that
  block ends the pass (the end of a pass is told after it, in ``_build``).

  Examples:
    >>> _told_ends(10, None, 3)
    (3, 6, 9)
    >>> _told_ends(10, 2, 3)  # Evaluations every 2 steps: 4 and 6 cross.
    (4, 6)
  """
  every = eval_every or num_steps
  chunks = num_steps // every
  head = chunks * every
  ends = []

  def interval(start, length, last):
    blocks, rest = divmod(length, block)
    ends.extend(start + block * (b + 1) for b in range(blocks))
    end = start + length
    if rest and not last and end // block != (end - rest) // block:
      ends.append(end)

  for chunk in range(chunks):
    interval(chunk * every, every,
             last=head == num_steps and chunk == chunks - 1)
  if head < num_steps:
    interval(head, num_steps - head, last=True)
  return tuple(ends)


def _step(carry, t, batch, *, loss_fn, tx, key, data, static):
  """Update ``t`` of one model: ``(carry, (loss, aux, learning rate))``.

  ``carry`` is ``(params, model_state, opt_state)``. The one step of both
  strategies: scanned by :func:`_train_one`, called from the host by
  :func:`_build_loop`.
  """
  params, model_state, opt_state = carry
  out = _loss.value_and_grad(
      loss_fn, params, model_state, batch, _loss.step_key(key, t),
      has_aux=static.has_aux, stateful=static.stateful, data=data,
  )
  updates, opt_state = tx.update(out.grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  records = (out.loss, out.aux, _learning_rate(opt_state))
  return (params, out.model_state, opt_state), records


def _evaluate(eval_fn, params, model_state, data):
  """``eval_fn``'s metrics of one model (None without ``eval_fn``)."""
  if eval_fn is None:
    return None
  kwargs = {} if data is None else {'data': data}
  return eval_fn(params, model_state, **kwargs)


def _train_one(params, model_state, key, hyperparams, batches, data,
               opt_state, first_step, progress, *, refs, static,
               progress_block, channel):
  """The training run of ONE model: a scan of steps, evaluations between.

  With a bar (``progress``, its token), the steps run in blocks of
  ``progress_block`` (static), and ``channel`` hears after each block as
  ``_told_ends`` says.
  """
  loss_fn, optimizer = refs[0](), refs[1]()
  eval_fn = refs[2]() if len(refs) > 2 else None
  tx = optimizer(hyperparams)
  if not static.resumed:
    opt_state = tx.init(params)

  def step(carry, inputs):
    return _step(carry, *inputs, loss_fn=loss_fn, tx=tx, key=key, data=data,
                 static=static)

  def steps_reporting(carry, inputs, last=False):
    """Scans ``step``, telling the bar after each block of its interval.

    The steps after the last whole block are told too, unless they end the
    run (``last``): the end of a run is told outside it (``_build``).
    """
    if progress is None:
      return jax.lax.scan(step, carry, inputs)
    # A check after every step would cost a conditional per step and model
    # (a tenth of a small model's step on CPU); one per block costs nothing.
    length = inputs[0].shape[0]
    blocks, rest = divmod(length, progress_block)

    def steps_from(carry, start, count):
      """``count`` (static) steps from ``inputs[start]``; the last index."""
      # Steps read their inputs by index, so that no block is sliced (and
      # copied) out of the batches; the last step index is carried out and
      # the bar is told that one: a count computed after the loop, not from
      # its inputs alone, which XLA could run (callback included) first.
      def body(carry, offset):
        here = jax.tree.map(
            lambda x: jax.lax.dynamic_index_in_dim(x, start + offset,
                                                   keepdims=False), inputs)
        carry, records = step(carry[0], here)
        return (carry, here[0]), records
      (carry, t), records = jax.lax.scan(
          body, (carry, inputs[0][0]), jnp.arange(count, dtype=jnp.int32))
      return carry, t, records

    def tell(t, steps):  # t is a scan index: vmap leaves it unbatched.
      # Steps into the pass; computed from t, so the callback waits for the
      # block. A whole block always crosses a multiple of the interval.
      done = t - first_step + 1
      ready = (done // progress_block != (done - steps) // progress_block)
      _progress.signal(progress, ready, channel.block_done)

    def block(carry, start):
      carry, t, records = steps_from(carry, start, progress_block)
      tell(t, progress_block)
      return carry, records

    parts = []
    if blocks:
      carry, records = jax.lax.scan(
          block, carry,
          progress_block * jnp.arange(blocks, dtype=jnp.int32))
      parts.append(jax.tree.map(
          lambda x: x.reshape(blocks * progress_block, *x.shape[2:]),
          records))
    if rest:
      carry, t, records = steps_from(carry, length - rest, rest)
      if not last:
        tell(t, rest)
      parts.append(records)
    return carry, jax.tree.map(lambda *x: jnp.concatenate(x), *parts)

  carry = (params, model_state, opt_state)
  steps = first_step + jnp.arange(static.num_steps, dtype=jnp.int32)
  every = static.eval_every or static.num_steps
  chunks = static.num_steps // every
  head = chunks * every
  split = lambda x, a, b: jax.tree.map(lambda leaf: leaf[a:b], x)

  def chunk(carry, inputs, last=False):
    carry, records = steps_reporting(carry, inputs, last)
    return carry, (records, _evaluate(eval_fn, carry[0], carry[1], data))

  inputs = jax.tree.map(
      lambda x: x.reshape(chunks, every, *x.shape[1:]),
      (steps[:head], split(batches, 0, head)),
  )
  if chunks == 1:
    # Called, not scanned: a loop of one trip that holds a callback stays a
    # loop, and copies the batches it slices on every call.
    carry, outputs = chunk(carry, jax.tree.map(lambda x: x[0], inputs),
                           last=head == static.num_steps)
    records, evals = jax.tree.map(lambda x: x[None], outputs)
  else:
    carry, (records, evals) = jax.lax.scan(chunk, carry, inputs)
  records = jax.tree.map(lambda x: x.reshape(head, *x.shape[2:]), records)
  if head < static.num_steps:  # Steps after the last evaluation.
    carry, tail = steps_reporting(
        carry, (steps[head:], split(batches, head, static.num_steps)),
        last=True)
    records = jax.tree.map(
        lambda a, b: jnp.concatenate([a, b]), records, tail
    )
  params, model_state, opt_state = carry
  losses, aux, learning_rates = records
  return losses, params, model_state, aux, evals, learning_rates, opt_state


# The outputs of _train_one that are training state (sharded over models);
# the others are per-step records (small, replicated on every device).
_STATES = (False, True, True, False, False, False, True)


def _build(refs, static, plan):
  """The jitted sweep: K padded models, sharded, in passes of chunks."""
  channel = _progress.Channel(static.num_steps)  # Used with a bar only.
  train = functools.partial(_train_one, refs=refs, static=static,
                            progress_block=plan.progress, channel=channel)
  in_axes = static.in_axes + (None,)
  devices = _mesh.size(plan.mesh, MODEL_AXIS)

  def side_by_side(args, token):
    vmapped = cast(Callable[..., Any], jax.vmap(train, in_axes=in_axes))
    outputs = vmapped(*args, token)
    if token is not None:  # After the pass's last losses, not before.
      _progress.signal(token, _progress.computed(outputs[0][:, -1]),
                       channel.pass_done)
    return outputs

  def program(*args, token=None):
    if plan.passes == 1:
      outputs = side_by_side(args, token)
    else:
      # Device d holds models [d * per_device, (d + 1) * per_device): pass p
      # trains chunk p of every device's models, all devices at once.
      def to_passes(x):
        x = x.reshape(devices, plan.passes, plan.chunk, *x.shape[1:])
        return x.swapaxes(0, 1).reshape(plan.passes, devices * plan.chunk,
                                        *x.shape[3:])

      mapped = [i for i, axis in enumerate(static.in_axes) if axis == 0]
      stacked = [jax.tree.map(to_passes, args[i]) for i in mapped]

      def one_pass(pieces):
        full = list(args)
        for i, piece in zip(mapped, pieces):
          full[i] = piece
        return side_by_side(full, token)

      outputs = jax.lax.map(one_pass, stacked)
      outputs = jax.tree.map(functools.partial(_from_passes, plan), outputs)
    return _trim(plan, outputs)

  return _Program(jax.jit(program, out_shardings=_out_shardings(plan)),
                  channel)


def _from_passes(plan, x):
  """``[passes, devices * chunk, ...]`` back to the padded K axis."""
  devices = _mesh.size(plan.mesh, MODEL_AXIS)
  x = x.reshape(plan.passes, devices, plan.chunk, *x.shape[2:])
  return x.swapaxes(0, 1).reshape(plan.padded, *x.shape[3:])


def _trim(plan, outputs):
  """The outputs of a sweep's K models, padding cut where they are whole."""
  trim = lambda tree: jax.tree.map(lambda x: x[:plan.num_models], tree)
  return tuple(
      trim(out) if plan.gather or not state else out
      for out, state in zip(outputs, _STATES)
  )


def _out_shardings(plan):
  """States sharded over the models (unless gathered), records replicated."""
  replicated = jax.sharding.NamedSharding(plan.mesh, _mesh.P())
  by_model = jax.sharding.NamedSharding(plan.mesh, _mesh.P(MODEL_AXIS))
  return tuple(
      by_model if state and not plan.gather else replicated
      for state in _STATES
  )


class _Loop(NamedTuple):
  """The ``"loop"`` strategy's programs of one plan (:func:`_run_loop`)."""

  start: Any  # (args, pass) -> (state, consts): a pass's first state.
  step: Any  # (state, consts) -> state, donating state.
  evaluate: Any  # (params, model_state, data) -> metrics; None: no eval_fn.
  finish: Any  # (the passes' outputs) -> the outputs of _build's program.


def _build_loop(refs, static, plan):
  """The sweep as steps called from the host (``strategy="loop"``).

  A pass's models (``devices * chunk``, sharded as in :func:`_build`) take
  one step per call of a jitted ``vmap`` of :func:`_step`; the state (the
  models' training state, the records of every step so far, the step
  count) is donated to each call. The step's batch is read by index from
  the pass's batches on the device.
  """
  devices = _mesh.size(plan.mesh, MODEL_AXIS)
  models = devices * plan.chunk
  params_axis, _, key_axis, _, batches_axis, _, opt_axis, _ = static.in_axes
  by_model = jax.sharding.NamedSharding(plan.mesh, _mesh.P(MODEL_AXIS))
  replicated = jax.sharding.NamedSharding(plan.mesh, _mesh.P())
  eval_fn = (lambda: refs[2]()) if len(refs) > 2 else (lambda: None)

  def take(args, p):
    """Pass ``p``'s models of the arguments with a K axis."""
    if plan.passes == 1:
      return args

    def piece(x):
      x = x.reshape(devices, plan.passes, plan.chunk, *x.shape[1:])
      x = jax.lax.dynamic_index_in_dim(x, p, axis=1, keepdims=False)
      return x.reshape(models, *x.shape[2:])

    return [jax.tree.map(piece, arg) if axis == 0 else arg
            for arg, axis in zip(args, static.in_axes)]

  def one(carry, i, first_step, key, hyperparams, batches, data):
    loss_fn, optimizer = refs[0](), refs[1]()
    return _step(carry, first_step + i, _host_loop.index(batches, i),
                 loss_fn=loss_fn, tx=optimizer(hyperparams), key=key,
                 data=data, static=static)

  def models_step(carry, i, consts):
    key, hyperparams, batches, data, first_step = consts
    if models == 1:
      # One model a pass: its plain step, not a vmap of one (a vmapped
      # convolution is a grouped one, slower on XLA:CPU).
      first = lambda tree, axis=0: tree if axis is None else jax.tree.map(
          lambda x: x[0], tree)
      out = one(first(carry), i, first_step, first(key, key_axis),
                first(hyperparams), first(batches, batches_axis), data)
      return jax.tree.map(lambda x: x[None], out)
    return jax.vmap(one, in_axes=(0, None, None, key_axis, 0, batches_axis,
                                  None))(carry, i, first_step, key,
                                         hyperparams, batches, data)

  def start(args, p):
    (params, model_state, key, hyperparams, batches, data, opt_state,
     first_step) = take(args, p)

    def init(params, model_state, hyperparams, opt_state):
      if not static.resumed:
        opt_state = refs[1]()(hyperparams).init(params)
      return params, model_state, opt_state

    carry = _host_loop.fresh(jax.vmap(
        init, in_axes=(params_axis, params_axis, 0, opt_axis),
        axis_size=models)(params, model_state, hyperparams, opt_state))
    consts = (key, hyperparams, batches, data, first_step)
    i = jnp.zeros([], jnp.int32)
    shapes = jax.eval_shape(lambda c: models_step(c, i, consts)[1], carry)
    records = _host_loop.buffers(shapes, static.num_steps, axis=1)
    return (carry, records, i), consts

  def step(state, consts):
    carry, records, i = state
    carry, values = models_step(carry, i, consts)
    return carry, _host_loop.write(records, values, i, axis=1), i + 1

  def evaluate(params, model_state, data):
    return jax.vmap(lambda p, s: _evaluate(eval_fn(), p, s, data))(
        params, model_state)

  def finish(passes):
    """``passes``: per pass, ``(carry, records, evals)``."""
    def outputs(carry, records, evals):
      (params, model_state, opt_state), (losses, aux, lrs) = carry, records
      if evals is not None:  # [num_evals] of [models, ...] -> [models, ...]
        evals = jax.tree.map(lambda *x: jnp.stack(x, axis=1), *evals)
      return losses, params, model_state, aux, evals, lrs, opt_state

    whole = [outputs(*part) for part in passes]
    if plan.passes == 1:
      return _trim(plan, whole[0])
    return _trim(plan, jax.tree.map(
        lambda *x: _from_passes(plan, jnp.stack(x)), *whole))

  state_shardings = (by_model, by_model, replicated)
  return _Loop(
      start=jax.jit(start, out_shardings=(state_shardings, None)),
      step=jax.jit(step, donate_argnums=0, out_shardings=state_shardings),
      evaluate=None if len(refs) < 3 else jax.jit(evaluate),
      finish=jax.jit(finish, out_shardings=_out_shardings(plan)),
  )


def _run_loop(loop, args, plan, static, token):
  """Runs :func:`_build_loop`'s programs; the outputs of :func:`_build`'s.

  The bar (``token``) hears where the scanned program's would: in each pass
  after the steps of ``_told_ends``, and at the pass's end.
  """
  num_steps, data = static.num_steps, args[5]
  every = static.eval_every or num_steps
  evaluations = set(range(every, num_steps + 1, every)
                    if loop.evaluate is not None else ())
  ends = set(_told_ends(num_steps, static.eval_every, plan.progress)
             if plan.progress else ()) | {num_steps}
  passes = []
  for p in range(plan.passes):
    evals = []

    def after(state, done, p=p, evals=evals):
      if done in evaluations:
        evals.append(loop.evaluate(state[0][0], state[0][1], data))
      if done in ends:
        _host_loop.tell(token, p * num_steps + done, state[2])

    state, consts = loop.start(args, np.asarray(p, np.int32))
    state = _host_loop.drive(
        loop.step, state, consts, num_steps,
        {done: functools.partial(after, done=done)
         for done in evaluations | ends},
        sync=_host_loop.needs_sync(plan.mesh))
    passes.append((state[0], state[1],
                   evals if loop.evaluate is not None else None))
  return loop.finish(passes)


class _Program(NamedTuple):
  """A compiled sweep and the channel its bar's updates reach."""

  run: Any
  channel: _progress.Channel


class _Programs:
  """The compiled sweeps of one (callables, static): one per plan."""

  def __init__(self, refs, static):
    self.refs, self.static = refs, static
    self._programs: dict[Any, Any] = {}
    self._convolves: bool | None = None

  def program(self, plan: _Plan) -> _Program:
    if plan not in self._programs:
      self._programs[plan] = _build(self.refs, self.static, plan)
    return self._programs[plan]

  def loop(self, plan: _Plan) -> _Loop:
    """The programs of ``strategy="loop"`` (:func:`_build_loop`)."""
    if (plan, 'loop') not in self._programs:
      self._programs[plan, 'loop'] = _build_loop(self.refs, self.static, plan)
    return self._programs[plan, 'loop']

  def convolves(self, args: list[Any]) -> bool:
    """Whether the loss computes a convolution (traced once, then known)."""
    if self._convolves is None:
      params, model_state, key, _, batches, data = args[:6]
      axes = self.static.in_axes

      def loss(params, model_state, key, batches, data):
        first = lambda tree, axis: jax.tree.map(
            lambda x: x[0], tree) if axis == 0 else tree
        batch = jax.tree.map(lambda x: x[0], first(batches, axes[4]))
        return _loss.value_and_grad(
            self.refs[0](), first(params, axes[0]),
            first(model_state, axes[1]), batch,
            _loss.step_key(first(key, axes[2]), jnp.zeros([], jnp.int32)),
            has_aux=self.static.has_aux, stateful=self.static.stateful,
            data=data)

      self._convolves = _strategy.convolves(loss, params, model_state, key,
                                            batches, data)
    return self._convolves


_PROGRAMS = _cache.ProgramCache()


def _leading(tree: Any) -> set[int | None]:
  return {
      (np.shape(leaf)[0] if np.ndim(leaf) else None)
      for leaf in jax.tree.leaves(tree)
  }


def _check_axis(name: str, value: Any) -> int | None:
  if value is None or (isinstance(value, int) and value == 0
                       and not isinstance(value, bool)):
    return value
  raise ValueError(f'{name} must be None or 0, got {value!r}.')


def _check_hyperparams(
    hyperparams: Any,
) -> tuple[dict[str, jax.Array], int | None]:
  if not isinstance(hyperparams, Mapping):
    raise TypeError(
        'hyperparams must be a dict {name: array of K values}, e.g.'
        f' optax_clr.grid(max_lr=[...]), got {hyperparams!r}.'
    )
  if not hyperparams:
    return {}, None
  arrays, lengths = {}, {}
  for name, values in hyperparams.items():
    if not isinstance(name, str):
      raise TypeError(f'hyperparams keys must be strings, got {name!r}.')
    array = _checks.concrete(values)
    if array is None:
      raise TypeError(f'hyperparams[{name!r}] must be concrete, not traced.')
    if array.dtype.kind not in 'biuf':
      raise TypeError(
          f'hyperparams[{name!r}] must hold real numbers, got {values!r}.'
      )
    if array.ndim < 1 or not array.shape[0]:
      raise ValueError(
          f'hyperparams[{name!r}] must have a leading axis of K >= 1 values'
          f' (one per model), got shape {array.shape}.'
      )
    lengths[name] = array.shape[0]
    arrays[name] = jnp.asarray(values)
  if len(set(lengths.values())) > 1:
    raise ValueError(
        'hyperparams arrays must all have the same length K (one value per'
        f' model), got lengths {lengths}.'
    )
  return arrays, next(iter(lengths.values()))


def _infer_num_models(params, params_axis, batches, batches_axis) -> int:
  """K from a stacked argument, for a sweep without hyperparameters."""
  for tree, axis in ((params, params_axis), (batches, batches_axis)):
    lengths = _leading(tree) if axis == 0 else set()
    if len(lengths) == 1 and None not in lengths:
      return cast(int, lengths.pop())
  raise ValueError(
      'hyperparams is empty, so K (the number of models) must come from'
      ' params_axis=0 or batches_axis=0.'
  )


def _check_optimizer(optimizer, hyperparams, num_models):
  """Builds every model's optimizer from concrete values, before compiling.

  The schedule factories check concrete arguments, so a bad value in any row
  is refused here, with its row, instead of passing traced and unchecked.
  """
  host = {name: np.asarray(values) for name, values in hyperparams.items()}
  for k in range(num_models if host else 1):
    row = {name: values[k] for name, values in host.items()}
    try:
      tx = optimizer(row)
    except KeyError as error:
      raise ValueError(
          f'optimizer(hp) read hp[{error.args[0]!r}], which hyperparams does'
          f' not have; it has {sorted(hyperparams)}.'
      ) from error
    except (ValueError, TypeError) as error:
      values = ', '.join(f'{name}={value!r}' for name, value in row.items())
      raise type(error)(
          f'optimizer(hp) refused the hyperparams of model {k} ({values}):'
          f' {error}'
      ) from error
    if not isinstance(tx, optax.GradientTransformation):
      raise TypeError(
          'optimizer(hp) must return an optax.GradientTransformation, got'
          f' {type(tx).__name__}.'
      )


def _check_stacked(name: str, tree: Any, axis: int | None, num_models: int,
                   axis_name: str | None = None):
  if axis is None:
    return
  lengths = _leading(tree)
  if lengths and lengths != {num_models}:
    setting = name if axis_name == name else f'{axis_name or name + "_axis"}=0'
    raise ValueError(
        f'{setting} needs every leaf of {name} to have a leading axis of'
        f' K={num_models} (one per model), got leading sizes'
        f' {sorted(lengths, key=str)}.'
    )


def _summary(tree: Any, limit: int = 300) -> str:
  text = str(tree)
  return text if len(text) <= limit else text[:limit] + ' ...'


def _check_opt_state(opt_state, optimizer, hyperparams, params, params_axis,
                     num_models):
  """Refuses an ``opt_state`` that ``optimizer(hp).init`` would not make.

  Compared with model 0's state (shapes only, nothing compiles): the tree
  structure, then each leaf's shape after the leading K axis.
  """
  _check_stacked('opt_state', opt_state, 0, num_models, axis_name='opt_state')
  row = {name: np.asarray(values)[0] for name, values in hyperparams.items()}
  first = params if params_axis is None else jax.tree.map(
      lambda x: x[0], params)
  expected = jax.eval_shape(lambda p: optimizer(row).init(p), first)
  expected_tree = jax.tree.structure(expected)
  given_tree = jax.tree.structure(opt_state)
  if expected_tree != given_tree:
    raise ValueError(
        'opt_state is not a state of optimizer(hp) for these params (the'
        ' state of another optimizer, or of other params?): optimizer(hp)'
        f'.init(params) has the structure {_summary(expected_tree)}, opt_state'
        f' has {_summary(given_tree)}.'
    )
  paths = jax.tree_util.tree_leaves_with_path(expected)
  for (path, want), got in zip(paths, jax.tree.leaves(opt_state)):
    shape = tuple(np.shape(got))[1:]
    if shape != tuple(want.shape):
      raise ValueError(
          f'opt_state{jax.tree_util.keystr(path)} has the shape'
          f' {shape} per model, but optimizer(hp).init(params) makes'
          f' {tuple(want.shape)}: a state of other params?'
      )


def _num_steps(batches: Any, batches_axis: int | None) -> int:
  leaves = jax.tree.leaves(batches)
  axis = 0 if batches_axis is None else 1
  sizes = {np.shape(leaf)[axis] if np.ndim(leaf) > axis else None
           for leaf in leaves}
  if not leaves or len(sizes) != 1 or None in sizes:
    raise ValueError(
        'batches must be a pytree of arrays with a leading num_steps axis'
        ' (after the K axis with batches_axis=0), the same on every leaf;'
        f' got leading sizes {sorted(sizes, key=str)}.'
    )
  num_steps = cast(int, sizes.pop())  # None was refused above.
  if num_steps < 1:
    raise ValueError('batches must hold at least one step.')
  return num_steps


def _key_axis(key: Any, num_models: int) -> int | None:
  if key is None:
    return None
  key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
  typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  single_ndim = 0 if typed else 1
  if key.ndim == single_ndim:
    return None
  if key.ndim == single_ndim + 1 and key.shape[0] == num_models:
    return 0
  raise ValueError(
      f'key must be one jax.random key or K={num_models} stacked keys, got'
      f' shape {key.shape} and dtype {key.dtype}.'
  )


def _check_chunk_size(chunk_size: Any) -> int | None:
  if chunk_size is None:
    return None
  if (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
      or chunk_size < 1):
    raise ValueError(
        'chunk_size must be None (chosen automatically) or a whole number of'
        f' models >= 1, got {chunk_size!r}.'
    )
  return chunk_size


def _place(args, in_axes, plan, batches_axis):
  """Pads the K axis to the plan's size and shards it over the mesh."""
  mesh, padding = plan.mesh, plan.padded - plan.num_models
  specs, paddings = [], []
  for i, (arg, axis) in enumerate(zip(args, in_axes)):
    if i == 4:  # batches: the batch axis over data.
      batch_axis = 1 if batches_axis is None else 2
      spec = lambda x, axis=axis: _mesh.batch_spec(
          mesh, np.ndim(x), batch_axis, axis == 0)
    else:
      spec = lambda x, axis=axis: _mesh.P() if axis is None else _mesh.P(
          MODEL_AXIS)
    specs.append(jax.tree.map(spec, arg))
    paddings.append(jax.tree.map(
        lambda x, axis=axis: 0 if axis is None else padding, arg))
  leaves, treedef = jax.tree.flatten(list(args))
  shardings = [jax.sharding.NamedSharding(mesh, spec)
               for spec in jax.tree.leaves(
                   specs, is_leaf=lambda x: isinstance(x, _mesh.P))]
  placed = _mesh.put_all(leaves, shardings, jax.tree.leaves(paddings))
  return jax.tree.unflatten(treedef, placed)


def sweep(
    loss_fn: Callable[..., Any],
    params: Any,
    optimizer: Callable[[dict[str, jax.Array]], optax.GradientTransformation],
    hyperparams: Mapping[str, Any],
    batches: Any,
    *,
    params_axis: int | None = None,
    batches_axis: int | None = None,
    model_state: Any = None,
    key: jax.Array | None = None,
    has_aux: bool = False,
    eval_fn: Callable[..., Any] | None = None,
    eval_every: int | None = None,
    data: Any = None,
    opt_state: Any = None,
    first_step: int = 0,
    mesh: jax.sharding.Mesh | None = None,
    chunk_size: int | None = None,
    gather: bool = False,
    progress: Any = False,
    strategy: str = 'auto',
) -> SweepResult:
  r"""Trains K models, one per hyperparameter row, as ONE compiled program.

  Model :math:`k` is trained with ``optimizer(hp_k)`` where ``hp_k =
  {name: hyperparams[name][k]}``, for as many steps as ``batches`` has: a
  ``lax.scan`` of the training step, ``jax.vmap``-ed over the K models and
  ``jax.jit``-ed once (or that step called from Python: ``strategy``).
  Inside the program the hyperparameters are traced scalars, so a schedule
  built from them compiles once, and calling again with other values of the
  same shapes reuses the compiled program.

  The K axis is sharded over the ``models`` axis of ``mesh``: by default a
  1-D mesh over every device of every process (``jax.devices()``; one
  process uses at most K devices), so under ``jax.distributed`` each process
  trains only the models of its own devices. A mesh with a ``data`` axis as
  well trains each model data-parallel: its batch axis is split over
  ``data`` and the compiler reduces the gradients, so a model whose batch
  does not fit one device can be swept. K is padded with copies of the last
  model to fill the devices (and the chunks) and trimmed, with results equal
  to a one-device run. On each device the models run side by side
  (``vmap``), or ``chunk_size`` at a time, one chunk after another inside the
  same program (``lax.map``): at most ``chunk_size`` models' activations and
  gradients are in memory at once, with results equal to the unchunked
  sweep. When ``chunk_size`` is not given it is chosen by a rule: on CPU one
  model at a time (XLA:CPU already spreads one model over the cores;
  vmapped convolutions become grouped convolutions and vmapped attention
  runs slower than a loop), all models side by side on GPU and TPU
  (``benchmarks/bench_loop.py`` measures both on CPU).

  ``strategy`` says how the steps run. ``"scan"``: the whole run is one
  program, as above. ``"loop"``: one compiled step of a chunk's models is
  called from Python once per step, the training state donated to it and
  the batch read by index on the device; the same results (to float32
  rounding), evaluations, progress and continuation, and neither recompiles
  for new hyperparameter values. ``"auto"`` takes ``"loop"`` on CPU when
  ``loss_fn`` computes a convolution, since XLA:CPU runs convolutions inside
  a compiled loop many times slower (jax-ml/jax#12868), and ``"scan"``
  otherwise. Measured on 2 CPU cores (``benchmarks/bench_strategy.py``,
  ``docs/scaling.md``), the loop ran two CNNs 11x-22x faster than the scan,
  and the scan ran an MLP 1.5x-1.7x and a small transformer 1.1x-1.3x faster
  than the loop; on GPU and TPU (not measured here) ``"auto"`` scans.

  Step :math:`t` of model :math:`k` computes

  .. math::

    L_{k,t},\ g = \nabla_\theta\, \ell(\theta_{k,t}, b_{k,t}), \quad
    \theta_{k,t+1} = \theta_{k,t} + u, \quad
    (u, s_{k,t+1}) = \text{optimizer}(hp_k).\text{update}(g, s_{k,t},
    \theta_{k,t})

  with the same ``loss_fn`` convention as :func:`optax_clr.range_test`:
  ``loss_fn(params, batch)``, or ``loss_fn(params, model_state, batch)``
  returning ``(loss, new_model_state)`` with ``model_state``, ``(loss,
  aux)`` in place of ``loss`` with ``has_aux``, and the keyword ``key=`` of
  ``jax.random.fold_in(key_k, t)`` with ``key``.

  Before compiling, ``optimizer`` is called once per model with its concrete
  values, so the schedule factories' checks refuse a bad value in any row,
  naming the model; inside the program the values are traced and unchecked.

  Args:
    loss_fn: the loss, as above.
    params: the initial parameters, shared by all models, or stacked along a
      leading K axis with ``params_axis=0`` (one initialization per seed).
    optimizer: ``optimizer(hp) -> optax.GradientTransformation``, called with
      a dict of scalars, e.g. ``lambda hp: optax.sgd(
      optax_clr.triangular_schedule(hp["base_lr"], hp["max_lr"],
      hp["step_size"]), momentum=0.9)``.
    hyperparams: ``{name: array with leading axis K}``, one value per model;
      :func:`optax_clr.grid` builds a Cartesian product. May be empty (models
      that differ only in ``params``, ``batches`` or ``key``) when
      ``params_axis`` or ``batches_axis`` is 0.
    batches: a pytree of arrays with a leading ``num_steps`` axis, shared by
      all models, or ``[K, num_steps, ...]`` with ``batches_axis=0`` (one data
      order per model).
    params_axis: None (shared) or 0 (stacked). ``model_state`` follows it.
    batches_axis: None (shared) or 0 (stacked).
    model_state: a pytree threaded through training (batch statistics), or
      None.
    key: a ``jax.random`` key shared by all models, K stacked keys (one per
      model), or None.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    eval_fn: ``eval_fn(params, model_state) -> metrics`` (a pytree), run
      after every ``eval_every`` updates (``model_state`` is None without
      one), or None.
    eval_every: updates between evaluations; None evaluates once, after the
      last update. Needs ``eval_fn``.
    data: a pytree of arrays shared by every model and step (a whole dataset
      kept on device, say), passed to ``loss_fn`` and ``eval_fn`` as the
      keyword ``data=``; then ``batches`` can hold indices into it. Arrays
      that a ``loss_fn`` closure captures are embedded in the compiled
      program as constants; large ones belong here.
    opt_state: the optimizer states to start from, stacked along a leading K
      axis (a previous result's ``opt_state``), or None to initialize them
      with ``optimizer(hp).init(params)``.
    first_step: the index of the first step, ``>= 0``: step ``t`` of this
      call folds ``first_step + t`` into ``key``, as an uninterrupted run
      would. With ``opt_state``, ``params`` and ``model_state`` of a
      previous result and the rest of the data, a sweep continued in pieces
      equals one sweep over the whole (successive halving trains the
      survivors on this way).
    mesh: None (every device, above), or a ``jax.sharding.Mesh`` with a
      ``models`` axis and optionally a ``data`` axis (no others), over
      devices of one or several processes. Inputs may be host arrays (NumPy,
      the same on every process) or global ``jax.Array`` s.
    chunk_size: at most this many models side by side on one device, ``>=
      1``; None chooses (above). ``1`` trains a device's models one after
      another.
    gather: whether ``params``, ``model_state`` and ``opt_state`` come back
      replicated on every device (readable on every process) rather than
      sharded over the ``models`` axis.
    progress: False, True, an int ``N`` (an update every ``N`` steps) or a
      dict of ``tqdm.tqdm`` options: a bar of steps done (passes of chunks
      times ``num_steps``), updated from inside the compiled program through
      a host callback, never a per-step sync; drawn by process 0. Needs
      tqdm (the ``progress`` extra). The steps run in blocks of ``N``
      (checked once a block, not once a step), so ``N`` is part of the
      compiled program: another explicit ``N`` compiles again.
    strategy: ``"auto"``, ``"scan"`` or ``"loop"`` (above). With
      ``"loop"`` the bar moves from Python after the same steps, each update
      waiting for its step.

  Returns:
    result
      A :class:`SweepResult` with a leading K axis on every field but
      ``eval_steps``. The per-step records (``losses``, ``aux``, ``evals``,
      ``learning_rates``) and ``hyperparams`` are whole on every process.
      ``params``, ``model_state`` and ``opt_state`` are global arrays
      sharded over the ``models`` axis (each process holds the models its
      devices trained) unless ``gather``; with several processes, read
      model ``k`` on every process with ``jax.tree.map(lambda x:
      multihost_utils.process_allgather(x)[k], result.params)``
      (``jax.experimental.multihost_utils``), or sweep with ``gather=True``.

  Raises:
    ValueError: ``hyperparams`` of different lengths, ``optimizer`` reading
      a name ``hyperparams`` lacks or refusing a model's values, a stacked
      argument whose leading size is not K, batches without a common
      ``num_steps`` axis, a bad ``eval_every``, a ``mesh`` without a
      ``models`` axis or whose ``data`` axis does not divide the batch
      size, ``chunk_size < 1`` or an unknown ``strategy``. All raised before
      anything compiles.
    TypeError: a callable argument that is not callable, ``optimizer`` not
      returning an ``optax.GradientTransformation``, ``hyperparams`` not
      a dict of numbers, ``mesh`` not a ``Mesh`` or a bad ``progress``.
    ImportError: ``progress`` without tqdm installed.

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import optax_clr
    >>> loss_fn = lambda w, batch: jnp.sum((w - batch) ** 2)
    >>> batches = jnp.ones((20, 3))
    >>> result = optax_clr.sweep(
    ...     loss_fn, jnp.zeros(3), lambda hp: optax.sgd(hp['lr']),
    ...     optax_clr.grid(lr=[0.01, 0.1, 0.4]), batches)
    >>> result.losses.shape
    (3, 20)
    >>> # Step t's loss is 3 (1 - 2 lr)^(2t): gradient descent on a quadratic.
    >>> [round(float(loss), 4) for loss in result.losses[:, -1]]
    [1.3922, 0.0006, 0.0]
  """
  prepared = _prepare(
      loss_fn, params, optimizer, hyperparams, batches,
      params_axis=params_axis,
      batches_axis=batches_axis,
      model_state=model_state,
      key=key,
      has_aux=has_aux,
      eval_fn=eval_fn,
      eval_every=eval_every,
      data=data,
      opt_state=opt_state,
      first_step=first_step,
      mesh=mesh,
      chunk_size=chunk_size,
      gather=gather,
      progress=progress,
      strategy=strategy,
  )
  program, args, plan, bar, hyperparams, num_steps, eval_every, evaluated = (
      prepared[:8])
  mesh, num_models = plan.mesh, plan.num_models
  total = plan.passes * num_steps
  with contextlib.ExitStack() as stack:
    token = stack.enter_context(_progress.bar(bar, total, 'sweep'))
    if prepared.loop is not None:  # Steps called from here.
      outputs = _run_loop(prepared.loop, args, plan, prepared.static, token)
      if token:
        jax.block_until_ready(outputs)
        _progress.update(token, total)
    elif plan.progress is None:  # No bar.
      outputs = program.run(*args)
    else:
      ends = _told_ends(num_steps, eval_every, plan.progress)
      inside = stack.enter_context(program.channel.attach(token, ends))
      replicated = jax.sharding.NamedSharding(mesh, _mesh.P())
      outputs = program.run(*args, token=_mesh.put(
          np.asarray(inside, np.int32), replicated))
      jax.block_until_ready(outputs)
      _progress.update(token, total)  # A call that ran without updates.
  losses, params, model_state, aux, evals, learning_rates, opt_state = (
      outputs)
  trim = lambda tree: _mesh.trim(tree, num_models, mesh)
  every = eval_every or num_steps
  eval_steps = every * np.arange(1, num_steps // every + 1)
  return SweepResult(
      losses=_mesh.local(losses),
      params=trim(params),
      model_state=trim(model_state),
      aux=_mesh.local(aux),
      evals=_mesh.local(evals) if evaluated else None,
      eval_steps=eval_steps,
      hyperparams=hyperparams,
      learning_rates=_mesh.local(learning_rates),
      opt_state=trim(opt_state),
  )


class _Prepared(NamedTuple):
  """A checked sweep, ready to run: its program and placed arguments."""

  program: _Program
  args: list[Any]
  plan: _Plan
  bar: _progress.Progress | None
  hyperparams: dict[str, jax.Array]
  num_steps: int
  eval_every: int | None
  evaluated: bool
  loop: _Loop | None = None  # strategy="loop"'s programs; None: scan.
  static: _Static | None = None


def _prepare(
    loss_fn: Callable[..., Any],
    params: Any,
    optimizer: Callable[[dict[str, jax.Array]], optax.GradientTransformation],
    hyperparams: Mapping[str, Any],
    batches: Any,
    *,
    params_axis: int | None = None,
    batches_axis: int | None = None,
    model_state: Any = None,
    key: jax.Array | None = None,
    has_aux: bool = False,
    eval_fn: Callable[..., Any] | None = None,
    eval_every: int | None = None,
    data: Any = None,
    opt_state: Any = None,
    first_step: int = 0,
    mesh: jax.sharding.Mesh | None = None,
    chunk_size: int | None = None,
    gather: bool = False,
    progress: Any = False,
    strategy: str = 'auto',
) -> _Prepared:
  """Checks the arguments of :func:`sweep`, builds and places (no run)."""
  loss_fn = _checks.check_callable('loss_fn', loss_fn)
  optimizer = _checks.check_callable('optimizer', optimizer)
  if eval_fn is not None:
    eval_fn = _checks.check_callable('eval_fn', eval_fn)
  has_aux = _checks.check_bool('has_aux', has_aux)
  params_axis = _check_axis('params_axis', params_axis)
  batches_axis = _check_axis('batches_axis', batches_axis)
  hyperparams, num_models = _check_hyperparams(hyperparams)
  if num_models is None:  # Models that differ only in their seeds, say.
    num_models = _infer_num_models(params, params_axis, batches, batches_axis)
  _check_stacked('params', params, params_axis, num_models)
  if model_state is not None:
    _check_stacked('model_state', model_state, params_axis, num_models,
                   axis_name='params_axis')
  _check_stacked('batches', batches, batches_axis, num_models)
  num_steps = _num_steps(batches, batches_axis)
  if eval_every is not None:
    if eval_fn is None:
      raise ValueError('eval_every needs an eval_fn to call.')
    _checks.check_step_count('eval_every', eval_every)
    eval_every = int(eval_every)
    if eval_every > num_steps:
      raise ValueError(
          f'eval_every must be at most num_steps={num_steps}, got'
          f' {eval_every}.'
      )
  key_axis = _key_axis(key, num_models)
  _checks.check_step_count('first_step', first_step, minimum=0)
  _check_optimizer(optimizer, hyperparams, num_models)
  if opt_state is not None:
    _check_opt_state(opt_state, optimizer, hyperparams, params, params_axis,
                     num_models)
  if mesh is None:
    mesh = _mesh.default(num_models)
  else:
    mesh = _mesh.check(mesh, axes=(MODEL_AXIS, DATA_AXIS),
                       required=MODEL_AXIS, caller='sweep')
  _mesh.check_batch(batches, 1 if batches_axis is None else 2,
                    _mesh.size(mesh, DATA_AXIS))
  chunk_size = _check_chunk_size(chunk_size)
  gather = _checks.check_bool('gather', gather)
  bar = _progress.check(progress)
  strategy = _strategy.check(strategy)
  is_traced = _strategy.traced((params, model_state, key, batches, data,
                                opt_state))

  in_axes = (params_axis, params_axis, key_axis, 0, batches_axis, None,
             None if opt_state is None else 0, None)
  static = _Static(has_aux, model_state is not None, num_steps, eval_every,
                   in_axes, opt_state is not None)
  callables = (loss_fn, optimizer) + (() if eval_fn is None else (eval_fn,))
  programs = _PROGRAMS.get(
      callables, static, lambda refs: _Programs(refs, static)
  )
  if chunk_size is None:
    chunk_size = _auto_chunk_size(mesh)
  per_device, passes, chunk = _mesh.padded_count(
      num_models, _mesh.size(mesh, MODEL_AXIS), chunk_size)
  plan = _Plan(mesh, num_models, per_device, passes, chunk, gather,
               None if bar is None else bar.interval(passes * num_steps))
  program = programs.program(plan)
  args = _place(
      (params, model_state, key, hyperparams, batches, data, opt_state,
       np.asarray(first_step, np.int32)),
      in_axes, plan, batches_axis,
  )
  strategy = _strategy.choose(
      strategy, platform=mesh.devices.flat[0].platform, is_traced=is_traced,
      convolution=lambda: programs.convolves(args))
  return _Prepared(program, args, plan, bar, hyperparams, num_steps,
                   eval_every, eval_fn is not None,
                   programs.loop(plan) if strategy == 'loop' else None,
                   static)


def _auto_chunk_size(mesh) -> int | None:
  """How many models run side by side on a device when not told.

  On CPU one at a time (1), one after another inside the program: XLA:CPU
  already spreads one model's operations over the cores, so vmapping the
  models buys little (at most 1.14x measured, for MLPs), and it can cost
  far more: vmapped convolutions become grouped convolutions (0.82x of K
  sequential runs for the examples CNN) and vmapped attention ran 0.72x-0.99x
  (``benchmarks/bench_loop.py``). One at a time ran at 0.98x-1.17x the
  speed of K separate jitted ``lax.scan`` runs on every family measured (a
  scanned CNN on CPU is slow either way: ``strategy``, in :func:`sweep`). On GPU and TPU, where one
  small model leaves the device idle, all of them (None).
  """
  if mesh.devices.flat[0].platform == 'cpu':
    return 1
  return None
