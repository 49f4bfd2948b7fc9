"""The LR range test: one compiled sweep of a growing hyperparameter."""

from collections.abc import Callable, Iterator
import contextlib
import functools
import inspect
from typing import Any, NamedTuple

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
import optax

from optax_clr import _accumulate
from optax_clr import _cache
from optax_clr import _checks
from optax_clr import _host_loop
from optax_clr import _loss
from optax_clr import _mesh
from optax_clr import _progress
from optax_clr import _ramp
from optax_clr import _strategy

# The floor of the divergence rule's scale: keeps a loss that starts at 0 from
# dividing by zero.
SCALE_FLOOR = 1e-8


class RangeTestResult(NamedTuple):
  r"""What :func:`range_test` recorded, one entry per step.

  A pytree: the first five fields are its leaves (arrays, stacked along a
  leading axis per ``jax.vmap``), the last two are static metadata.
  Entries after ``diverged_step`` are NaN (0 for integer aux leaves).

  Attributes:
    lrs: the swept values, ``lrs[t]`` is the value used by update ``t``.
    losses: the raw loss of step ``t``, taken before update ``t``.
    smoothed_losses: the bias-corrected exponential moving average of
      ``losses``.
    aux: the stacked auxiliary outputs of ``loss_fn`` (``{}`` without
      ``has_aux``).
    diverged_step: the first step where divergence was detected, or
      ``num_steps`` if never.
    mode: ``"exponential"`` or ``"linear"``, the ramp's spacing.
    hyperparam: the name of the swept hyperparameter.
  """

  lrs: Any
  losses: Any
  smoothed_losses: Any
  aux: Any
  diverged_step: Any
  mode: str = 'exponential'
  hyperparam: str = 'learning_rate'


_LEAVES = ('lrs', 'losses', 'smoothed_losses', 'aux', 'diverged_step')

jax.tree_util.register_pytree_with_keys(
    RangeTestResult,
    lambda r: (
        tuple((jax.tree_util.GetAttrKey(k), getattr(r, k)) for k in _LEAVES),
        (r.mode, r.hyperparam),
    ),
    lambda meta, leaves: RangeTestResult(
        **dict(zip(_LEAVES, leaves)), mode=meta[0], hyperparam=meta[1]
    ),
)


class _Carry(NamedTuple):
  params: Any
  model_state: Any  # None without one.
  opt_state: Any
  average: jax.Array  # the EMA before bias correction
  first: jax.Array  # the smoothed loss of step 0
  best: jax.Array  # the lowest smoothed loss so far
  diverged: jax.Array
  diverged_step: jax.Array
  step: jax.Array


def _make_optimizer(optimizer, hyperparam, schedule):
  """The optimizer with ``hyperparam`` following ``schedule``."""
  if hyperparam == 'learning_rate':
    return optimizer(schedule)
  factory = optax.inject_hyperparams(optimizer)
  try:
    return factory(**{hyperparam: schedule})
  except TypeError as error:
    raise TypeError(
        f'optimizer could not be built to sweep hyperparam={hyperparam!r}:'
        f' {error}. Bind its other hyperparameters first, e.g.'
        ' functools.partial(optax.sgd, learning_rate=0.1).'
    ) from error


def _check_hyperparam(optimizer, hyperparam):
  if not isinstance(hyperparam, str) or not hyperparam.isidentifier():
    raise ValueError(
        f'hyperparam must be the name of a parameter of optimizer, got'
        f' {hyperparam!r}.'
    )
  if hyperparam == 'learning_rate':
    return
  try:
    parameters = inspect.signature(optimizer).parameters
  except (TypeError, ValueError):
    return  # No signature to read (a builtin); the call will tell.
  # optax.inject_hyperparams binds by name: **kwargs does not count.
  takes = hyperparam in parameters and parameters[hyperparam].kind in (
      inspect.Parameter.POSITIONAL_OR_KEYWORD,
      inspect.Parameter.KEYWORD_ONLY,
  )
  if not takes:
    names = ', '.join(repr(name) for name in parameters)
    raise ValueError(
        f'hyperparam={hyperparam!r} is not a parameter of optimizer'
        f' {getattr(optimizer, "__name__", optimizer)!r}, which takes'
        f' {names}.'
    )


def _fill(value: jax.Array) -> jax.Array:
  """What a step after divergence records: NaN, or 0 for exact dtypes."""
  if jnp.issubdtype(value.dtype, jnp.inexact):
    return jnp.full_like(value, jnp.nan)
  return jnp.zeros_like(value)


def _ramp_and_optimizer(start_lr, end_lr, static):
  optimizer, hyperparam, num_steps, mode = static[1:5]
  schedule = _ramp.range_test_schedule(start_lr, end_lr, num_steps, mode=mode)
  return schedule, _make_optimizer(optimizer(), hyperparam, schedule)


def _init(params, model_state, start_lr, end_lr, *, static):
  num_steps = static[3]
  _, tx = _ramp_and_optimizer(start_lr, end_lr, static)
  # float32, or float64 under jax_enable_x64.
  zero = jnp.zeros([], jax.dtypes.canonicalize_dtype(jnp.float64))
  return _Carry(
      params=params,
      model_state=model_state,
      opt_state=tx.init(params),
      average=zero,
      first=zero,
      best=jnp.full_like(zero, jnp.inf),
      diverged=jnp.zeros([], bool),
      diverged_step=jnp.asarray(num_steps, jnp.int32),
      step=jnp.zeros([], jnp.int32),
  )


class _Track(NamedTuple):
  """The divergence rule's state: the smoothed loss so far."""

  average: jax.Array  # the EMA before bias correction
  first: jax.Array  # the smoothed loss of step 0
  best: jax.Array  # the lowest smoothed loss so far
  diverged: jax.Array
  diverged_step: jax.Array


def _track(track, loss, step, smoothing, threshold):
  """One step of the smoothing and divergence rule; ``(track, smoothed)``."""
  dtype = track.average.dtype
  average = smoothing * track.average + (1 - smoothing) * loss
  smoothed = average / (1 - smoothing ** (step + 1).astype(dtype))
  first = jnp.where(step == 0, smoothed, track.first)
  best = jnp.minimum(track.best, smoothed)
  bad = ~jnp.isfinite(loss)
  if threshold is not None:
    scale = jnp.maximum(jnp.maximum(jnp.abs(first), first - best), SCALE_FLOOR)
    bad = bad | (smoothed - best > threshold * scale)
  diverged = track.diverged | bad
  diverged_step = jnp.where(bad & ~track.diverged, step, track.diverged_step)
  return _Track(average, first, best, diverged, diverged_step), smoothed


def _loss_and_grads(params, model_state, batch, key, step, data, dtype, *,
                    static):
  """The step's loss, aux, new model state and gradients (microbatched)."""
  loss_fn, has_aux, stateful = static[0], static[5], static[6]
  accumulation_steps = static[7]
  if accumulation_steps == 1:
    loss, aux, model_state, grads = _loss.value_and_grad(
        loss_fn(), params, model_state, batch, _loss.step_key(key, step),
        has_aux=has_aux, stateful=stateful, data=data,
    )
  else:  # batch holds the step's microbatches along a leading axis.
    loss, aux, model_state, grads = _accumulate.value_and_grad(
        loss_fn(), params, model_state, batch, key, step, accumulation_steps,
        dtype=dtype, has_aux=has_aux, stateful=stateful, data=data,
    )
  # jax.grad has checked that the loss is a scalar.
  return jnp.asarray(loss, dtype), aux, model_state, grads


def _step(carry, batch, key, start_lr, end_lr, smoothing, threshold,
          data=None, *, static):
  """One step of the sweep: loss, divergence check, update.

  After divergence the update is scaled by zero rather than selected away:
  a ``jnp.where`` over every parameter and optimizer-state leaf made the
  range test compile about 10 % slower (measured against a plain jitted scan,
  as ``benchmarks/bench_compile.py`` does).
  """
  _, tx = _ramp_and_optimizer(start_lr, end_lr, static)
  step = carry.step
  dtype = carry.average.dtype
  loss, aux, model_state, grads = _loss_and_grads(
      carry.params, carry.model_state, batch, key, step, data, dtype,
      static=static)
  track, smoothed = _track(_Track(carry.average, carry.first, carry.best,
                                  carry.diverged, carry.diverged_step),
                           loss, step, smoothing, threshold)
  average, first, best = track.average, track.first, track.best
  diverged, diverged_step = track.diverged, track.diverged_step
  updates, opt_state = tx.update(grads, carry.opt_state, carry.params)
  live = (~diverged).astype(dtype)
  params = optax.apply_updates(carry.params, optax.tree.scale(live, updates))
  keep = lambda old, new: jax.tree.map(
      lambda o, n: jnp.where(diverged, o, n), old, new
  )
  carry = _Carry(
      params=params,
      model_state=keep(carry.model_state, model_state),
      opt_state=opt_state,
      average=average,
      first=first,
      best=best,
      diverged=diverged,
      diverged_step=diverged_step,
      step=step + 1,
  )
  record = jax.tree.map(
      lambda x: jnp.where(carry.diverged & (step > diverged_step), _fill(x), x),
      (loss, smoothed, aux),
  )
  return carry, record


def _update(carry, batch, key, tx, data, dtype, *, static):
  """One update of the training loop (no divergence rule): both strategies'.

  ``carry`` is ``(params, model_state, opt_state, step)``; returns it
  updated and the step's ``(loss, aux)``.
  """
  params, model_state, opt_state, step = carry
  loss, aux, model_state, grads = _loss_and_grads(
      params, model_state, batch, key, step, data, dtype, static=static)
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  return (params, model_state, opt_state, step + 1), (loss, aux)


def _loop_start(params, model_state, batches, key, start_lr, end_lr,
                data=None, *, static):
  """``strategy="loop"``'s first state: the carry of :func:`_update`, with
  buffers for every step's ``(loss, aux)`` (:mod:`optax_clr._host_loop`)."""
  init = _init(params, model_state, start_lr, end_lr, static=static)
  carry = _host_loop.fresh((init.params, init.model_state, init.opt_state,
                            init.step))
  shapes = jax.eval_shape(
      lambda carry: _loop_step((carry, None), batches, key, start_lr,
                               end_lr, data, static=static, record=False),
      carry)
  return carry, _host_loop.buffers(shapes, static[3])


def _loop_step(state, batches, key, start_lr, end_lr, data=None, *, static,
               record=True):
  """One step of ``strategy="loop"``: :func:`_update` on the step's batch,
  read by index from ``batches``; its ``(loss, aux)`` recorded in place."""
  carry, records = state
  accumulation_steps, step = static[7], carry[3]
  if accumulation_steps == 1:
    batch = _host_loop.index(batches, step)
  else:  # The step's microbatches.
    batch = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(
        x, step * accumulation_steps, accumulation_steps), batches)
  _, tx = _ramp_and_optimizer(start_lr, end_lr, static)
  dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
  carry, values = _update(carry, batch, key, tx, data, dtype, static=static)
  if not record:
    return values
  return carry, _host_loop.write(records, values, step)


def _scan(params, model_state, batches, key, start_lr, end_lr, smoothing,
          threshold, data=None, progress=None, *, static, channel,
          rule=True):
  """The whole range test as one program.

  The loop only trains and records raw losses; the smoothing, the divergence
  rule and the NaN fill run after it over the recorded losses (a scan of
  scalars), or, with ``rule=False``, on the host (:func:`_rule_on_host`):
  the program then returns ``((losses, aux), lrs)``. Updates after
  divergence are not skipped, as :func:`_step` skips them, but nothing they
  compute is kept: the records after ``diverged_step`` are filled, equal to
  :func:`_step`'s. Keeping the bookkeeping out of the training loop keeps that loop's program as small as
  a plain training scan's (``benchmarks/bench_compile.py``).
  """
  num_steps, accumulation_steps = static[3], static[7]
  if accumulation_steps > 1:
    batches = jax.tree.map(
        lambda x: x.reshape(num_steps, accumulation_steps, *x.shape[1:]),
        batches,
    )
  init = _init(params, model_state, start_lr, end_lr, static=static)
  dtype = init.average.dtype
  _, tx = _ramp_and_optimizer(start_lr, end_lr, static)

  def body(carry, batch):
    carry, (loss, aux) = _update(carry, batch, key, tx, data, dtype,
                                 static=static)
    if progress is not None:  # (token, every): a bar of steps done.
      _progress.report(progress[0], carry[3], num_steps, progress[1],
                       channel.block_done, after=loss)
    return carry, (loss, aux)

  carry = (init.params, init.model_state, init.opt_state, init.step)
  _, (losses, aux) = jax.lax.scan(body, carry, batches, length=num_steps)
  lrs = _lrs(start_lr, end_lr, static=static)
  if not rule:
    return (losses, aux), lrs

  def rule_step(track, loss_and_step):
    loss, step = loss_and_step
    return _track(track, loss, step, smoothing, threshold)

  start = _Track(init.average, init.first, init.best, init.diverged,
                 init.diverged_step)
  steps = jnp.arange(num_steps, dtype=jnp.int32)
  track, smoothed = jax.lax.scan(rule_step, start, (losses, steps))
  after = steps > track.diverged_step
  records = jax.tree.map(
      lambda x: jnp.where(
          after.reshape(-1, *([1] * (x.ndim - 1))), _fill(x), x),
      (losses, smoothed, aux),
  )
  return records, track.diverged_step, lrs


def _first_loss(loss_fn, params, model_state, batches, key, data, *,
                has_aux, stateful):
  """The loss and gradient of the first batch, for ``"auto"``'s reading."""
  return _loss.value_and_grad(
      loss_fn, params, model_state, jax.tree.map(lambda x: x[0], batches),
      _loss.step_key(key, jnp.zeros([], jnp.int32)), has_aux=has_aux,
      stateful=stateful, data=data)


def _run_loop(start, step, inputs, num_steps, token, ends, mesh):
  """The recorded ``(losses, aux)`` of ``strategy="loop"``'s host loop.

  ``inputs`` are ``(params, model_state, batches, key, start_lr, end_lr,
  data)``; the bar (``token``) hears after the steps ``ends``; ``mesh``
  says whether each step is waited for (:func:`_host_loop.needs_sync`).
  """
  params, model_state, batches, key, start_lr, end_lr, data = inputs
  # Placed once (weakly typed, as the scanned program sees Python numbers):
  # no step copies anything from the host.
  start_lr, end_lr = jax.device_put((start_lr, end_lr))
  consts = (batches, key, start_lr, end_lr, data)
  state = start(params, model_state, batches, key, start_lr, end_lr, data)
  after = {done: lambda state, done=done: _host_loop.tell(token, done,
                                                          state[0][3])
           for done in ends}
  _, records = _host_loop.drive(step, state, consts, num_steps, after,
                                unpack=True,
                                sync=_host_loop.needs_sync(mesh))
  return records


def _rule_on_host(losses, aux, smoothing, threshold):
  """:func:`_scan`'s smoothing, divergence rule and fill, in NumPy.

  For a range test whose inputs are concrete: the rule is a scan of
  scalars, which costs XLA more to compile (a fifth of the first call of a
  small model's range test) than it costs NumPy to run. The arithmetic is
  :func:`_track`'s, in the losses' dtype.
  """
  losses = np.asarray(losses)
  dtype = losses.dtype.type
  beta, one = dtype(smoothing), dtype(1)
  smoothed = np.empty_like(losses)
  average = dtype(0)
  for t, loss in enumerate(losses):
    average = beta * average + (one - beta) * loss
    smoothed[t] = average / (one - beta ** dtype(t + 1))
  best = np.minimum.accumulate(smoothed)
  bad = ~np.isfinite(losses)
  if threshold is not None:
    first = smoothed[0]
    scale = np.maximum(np.maximum(np.abs(first), first - best),
                       dtype(SCALE_FLOOR))
    bad |= smoothed - best > dtype(threshold) * scale
  num_steps = len(losses)
  diverged_step = int(np.argmax(bad)) if bad.any() else num_steps
  after = np.arange(num_steps) > diverged_step

  def fill(x):
    x = np.asarray(x)
    filler = np.nan if np.issubdtype(x.dtype, np.inexact) else 0
    return jnp.asarray(np.where(
        after.reshape(-1, *([1] * (x.ndim - 1))), filler, x).astype(x.dtype))

  records = jax.tree.map(fill, (losses, smoothed, aux))
  return records, jnp.asarray(diverged_step, jnp.int32)


def _lrs(start_lr, end_lr, *, static):
  """The swept values, one per step."""
  schedule, _ = _ramp_and_optimizer(start_lr, end_lr, static)
  return schedule(jnp.arange(static[3]))


def _build(refs, static):
  """The jitted programs of one configuration (callables behind ``refs``)."""
  static = (*refs, *static)
  channel = _progress.Channel(static[3])  # A bar's updates, no operands.
  scans = tuple(functools.partial(_scan, channel=channel, rule=rule)
                for rule in (True, False))
  return tuple(
      jax.jit(functools.partial(f, static=static))
      for f in (*scans, _init, _step, _lrs, _loop_start)
  ) + (jax.jit(functools.partial(_loop_step, static=static),
               donate_argnums=0), channel, _Decision())


class _Decision:
  """The ``"auto"`` strategy's reading of a loss, traced once."""

  def __init__(self):
    self.convolves: bool | None = None

  def get(self, loss: Callable[..., Any], *args: Any) -> bool:
    if self.convolves is None:
      self.convolves = _strategy.convolves(loss, *args)
    return self.convolves


_PROGRAMS = _cache.ProgramCache()


def _is_stacked(batches: Any) -> bool:
  """Whether ``batches`` is a pytree of stacked arrays, not an iterable."""
  if isinstance(batches, (list, Iterator)):
    return False
  leaves = jax.tree.leaves(batches)
  opaque = len(leaves) == 1 and leaves[0] is batches  # a data loader, say
  return not (opaque and not hasattr(batches, 'shape'))


def _check_stacked(batches: Any, num_steps: int,
                   accumulation_steps: int = 1) -> None:
  length = num_steps * accumulation_steps
  for path, leaf in jax.tree_util.tree_flatten_with_path(batches)[0]:
    shape = getattr(leaf, 'shape', None)
    if shape is None or not shape or shape[0] != length:
      expected = f'num_steps={num_steps}' if accumulation_steps == 1 else (
          f'num_steps * accumulation_steps = {num_steps} *'
          f' {accumulation_steps} = {length}')
      raise ValueError(
          f'batches must have a leading axis of length {expected}'
          f' on every leaf, got shape {shape} at'
          f' batches{jax.tree_util.keystr(path)}. Pass a list or iterator'
          ' of batches to feed them one at a time.'
      )


def _check_first_loss(losses: Any) -> None:
  if isinstance(losses, jax.core.Tracer):
    return
  first = np.asarray(losses).reshape(-1)[0]  # No indexing program to compile.
  if not np.isfinite(first):
    raise ValueError(
        f'loss_fn returned a non-finite loss ({float(first)}) at the first'
        ' step, before any update: check params and the first batch of'
        ' batches.'
    )


def _place_batch(mesh, leaf, *, axis):
  """A batch leaf on ``mesh``, its batch axis split over ``data``."""
  spec = _mesh.batch_spec(mesh, np.ndim(leaf), axis, models=False)
  sharding = jax.sharding.NamedSharding(mesh, spec)
  if isinstance(leaf, jax.core.Tracer):  # Under the user's jit or vmap.
    return jax.lax.with_sharding_constraint(leaf, sharding)
  return _mesh.put(leaf, sharding)


def _replicate(mesh, tree):
  sharding = jax.sharding.NamedSharding(mesh, _mesh.P())
  put = lambda leaf: (jax.lax.with_sharding_constraint(leaf, sharding)
                      if isinstance(leaf, jax.core.Tracer)
                      else _mesh.put(leaf, sharding))
  return jax.tree.map(put, tree)


def range_test(
    loss_fn: Callable[..., Any],
    params: Any,
    optimizer: Callable[..., optax.GradientTransformation],
    batches: Any,
    *,
    start_lr: jax.typing.ArrayLike = 1e-7,
    end_lr: jax.typing.ArrayLike = 10.0,
    num_steps: int = 100,
    mode: str = 'exponential',
    smoothing: jax.typing.ArrayLike = 0.98,
    divergence_threshold: jax.typing.ArrayLike | None = 4.0,
    has_aux: bool = False,
    hyperparam: str = 'learning_rate',
    model_state: Any = None,
    key: jax.Array | None = None,
    data: Any = None,
    accumulation_steps: int = 1,
    mesh: jax.sharding.Mesh | None = None,
    progress: Any = False,
    strategy: str = 'auto',
) -> RangeTestResult:
  r"""Sweeps a hyperparameter upwards for ``num_steps`` and records the loss.

  Update :math:`t` uses :math:`\text{lr}_t` from
  :func:`optax_clr.range_test_schedule`. With :math:`L_t` the loss before
  that update and :math:`\beta` = ``smoothing``, the smoothed loss (an
  exponential moving average with bias correction, as fastai) and the
  divergence rule, with :math:`\tau` = ``divergence_threshold``, are

  .. math::

    a_t = \beta a_{t-1} + (1 - \beta) L_t, \quad a_{-1} = 0, \quad
    s_t = \frac{a_t}{1 - \beta^{t + 1}}, \quad m_t = \min_{k \le t} s_k

    \text{diverged at } t \iff L_t \notin \mathbb{R}
    \ \text{ or } \
    s_t - m_t > \tau \cdot \max(|s_0|,\ s_0 - m_t,\ 10^{-8})

  The rise of the smoothed loss above its best is measured against the
  initial loss scale (or the drop seen so far, if larger), never as a
  multiple of the best loss, so losses that are negative or cross zero work.
  For positive losses that fall towards zero it reads "the smoothed loss rose
  :math:`\tau` initial losses above its best". From the step where the sweep
  diverged on, updates are scaled by zero (the parameters and the model state
  stay put) and the records after that step are NaN;
  ``divergence_threshold=None`` turns the rise rule off, but a non-finite
  loss still ends the sweep.

  With ``batches`` a pytree of arrays whose leading axis is ``num_steps``, the
  sweep is one jitted ``lax.scan``: no host round trip per step, and
  ``jax.vmap`` over ``params`` or ``batches`` runs several sweeps as one
  program. Or, with ``strategy="loop"``, one jitted step called from Python
  per step (its state donated, its batch read by index on the device), with
  the same result to float32 rounding; ``"auto"`` (the default) picks as
  :func:`optax_clr.sweep` does: the loop on CPU when ``loss_fn`` computes a
  convolution (a scanned convolution runs many times slower on XLA:CPU),
  the scan otherwise and under ``jax.vmap`` or ``jax.jit``, where the host
  cannot drive the steps. A list, iterator or other iterable of batches is
  fed one batch at a time to a jitted step (for data that does not fit in
  memory); it gives the same result and stops at divergence. Nothing is mutated: ``params`` and
  ``optimizer`` are as before, there is nothing to reset.

  A model with state that training updates (BatchNorm's batch statistics)
  passes it as ``model_state``: it is threaded through the sweep (the
  records after divergence are filled, whatever it becomes). A model with randomness (dropout)
  passes ``key``: step :math:`t` receives ``jax.random.fold_in(key, t)``, so
  a sweep is reproducible and every step draws afresh. For a Flax NNX module,
  :func:`optax_clr.nnx.range_test` does both.

  With ``accumulation_steps=A``, each step is one optimizer update from
  ``A`` microbatches: ``batches`` holds ``num_steps * A`` of them (stacked,
  or fed in order), :math:`L_t` is the mean of the step's ``A`` losses,
  the gradient their mean, and the ramp advances once per update, as in a
  training loop wrapped in ``optax.MultiSteps(tx, every_k_schedule=A)``.
  The model state passes through the microbatches in order; microbatch
  ``j`` of step ``t`` gets ``fold_in(key, t * A + j)``.

  Mixed precision: ``params`` may be bfloat16 (the optimizer state follows
  them), or ``loss_fn`` may cast float32 params to bfloat16 for its compute.
  Either way the losses, their moving average and the divergence rule are
  float32 (float64 under x64), so a bfloat16 loss's rounding never trips or
  masks divergence.

  Args:
    loss_fn: ``loss_fn(params, batch) -> loss`` (a scalar), or ``(loss, aux)``
      with ``has_aux=True``; aux may carry ``"accuracy"`` for
      ``suggest_clr_bounds(..., metric="accuracy")``. With ``model_state``
      it is called as ``loss_fn(params, model_state, batch)`` and returns
      ``(loss, new_model_state)`` (``((loss, aux), new_model_state)`` with
      ``has_aux``); with ``key`` it also receives the keyword ``key=``.
    params: the initial parameters, a pytree.
    optimizer: a factory of ``optax.GradientTransformation`` such as
      ``optax.adam`` or ``functools.partial(optax.sgd, momentum=0.9)``. It is
      called with the ramp as its learning rate, or, for another
      ``hyperparam``, wrapped in ``optax.inject_hyperparams`` and called with
      the ramp as that keyword (bind the learning rate yourself).
    batches: a pytree of arrays stacked along a leading axis of length
      ``num_steps`` (times ``accumulation_steps``; a pytree without leaves,
      such as None, passes None to every step), or a list or iterable yielding at least ``num_steps``
      batches (times ``accumulation_steps``).
    start_lr: the first swept value; ``> 0`` for the exponential ramp.
    end_lr: the last swept value, ``> start_lr``.
    num_steps: the number of steps, a whole number ``>= 2``.
    mode: ``"exponential"`` or ``"linear"`` spacing of the ramp.
    smoothing: the moving average's :math:`\beta`, in ``[0, 1)``.
    divergence_threshold: :math:`\tau > 0`, or None to turn the rise rule
      off (a non-finite loss still ends the sweep).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    hyperparam: the swept hyperparameter: ``"learning_rate"``, or any numeric
      keyword of ``optimizer`` such as ``"momentum"``, ``"b1"`` or
      ``"weight_decay"`` (Smith's momentum and weight-decay tests).
    model_state: a pytree of non-trained model state threaded through the
      sweep (not differentiated), or None.
    key: a ``jax.random`` key (typed or raw), or None; step ``t`` gets
      ``jax.random.fold_in(key, t)``.
    data: a pytree of arrays shared by every step (a whole dataset kept on
      device), passed to ``loss_fn`` as the keyword ``data=``, as in
      :func:`optax_clr.sweep`; then ``batches`` can hold indices into it.
    accumulation_steps: the number of microbatches per step, a whole
      number ``>= 1``.
    mesh: None (one device), or a ``jax.sharding.Mesh`` with a ``data``
      axis (over devices of one or several processes): the test runs
      data-parallel, every batch split along its axis 0 over ``data`` (the
      size of that axis must divide the batch size) and the gradients
      reduced by the compiler; other axes (``models``) replicate it. Inputs
      may be host arrays, the same on every process, or global arrays; every
      process receives the whole result.
    progress: False, True, an int ``N`` (an update every ``N`` steps) or a
      dict of ``tqdm.tqdm`` options: a bar of steps done, updated from
      inside the compiled program (drawn by process 0; needs tqdm, the
      ``progress`` extra), or from Python with ``strategy="loop"``.
    strategy: ``"auto"``, ``"scan"`` or ``"loop"`` (above). Traced inputs
      take ``"scan"``; ``"loop"`` refuses them. An iterable of batches is
      always fed one batch at a time, whatever ``strategy`` says.

  Returns:
    result
      A :class:`RangeTestResult` with fields ``lrs``, ``losses``,
      ``smoothed_losses``, ``aux`` and ``diverged_step``.

  Raises:
    ValueError: a bad argument, named in the message; batches whose leading
      axis is not ``num_steps``; a ``hyperparam`` the optimizer does not take;
      a non-finite loss at the first step; ``strategy="loop"`` with traced
      inputs.
    TypeError: ``loss_fn`` or ``optimizer`` is not callable, ``has_aux`` is
      not a bool, ``optimizer`` does not return an
      ``optax.GradientTransformation`` or cannot be built for ``hyperparam``
      (its learning rate unbound), or ``loss_fn`` returns the wrong
      structure.

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import optax_clr
    >>> loss_fn = lambda w, batch: jnp.sum((w - batch) ** 2)  # Hessian 2 I
    >>> batches = 1.0 + 0.1 * jnp.sin(jnp.arange(150.0)).reshape(50, 3)
    >>> result = optax_clr.range_test(
    ...     loss_fn, jnp.zeros(3), optax.sgd, batches,
    ...     start_lr=1e-3, end_lr=10.0, num_steps=50)
    >>> result.losses.shape, result.lrs.shape
    ((50,), (50,))
    >>> diverged_lr = float(result.lrs[result.diverged_step])
    >>> bool(1.0 < diverged_lr < 4.0)  # gradient descent diverges above 1
    True

  References:
    Smith, `Cyclical Learning Rates for Training Neural Networks
    <https://arxiv.org/abs/1506.01186>`_, 2015, section 3.3.

    Smith, `A disciplined approach to neural network hyper-parameters
    <https://arxiv.org/abs/1803.09820>`_, 2018.
  """
  loss_fn = _checks.check_callable('loss_fn', loss_fn)
  optimizer = _checks.check_callable('optimizer', optimizer)
  has_aux = _checks.check_bool('has_aux', has_aux)
  _checks.check_step_count('num_steps', num_steps, minimum=2)
  num_steps = int(num_steps)
  # Checks start_lr, end_lr and mode, naming each.
  schedule = _ramp.range_test_schedule(start_lr, end_lr, num_steps, mode=mode)
  _checks.check_number('smoothing', smoothing, lower=0.0, upper=1.0,
                       upper_open=True)
  if divergence_threshold is not None:
    _checks.check_number('divergence_threshold', divergence_threshold,
                         lower=0.0, lower_open=True)
  _check_hyperparam(optimizer, hyperparam)
  _checks.check_step_count('accumulation_steps', accumulation_steps)
  accumulation_steps = int(accumulation_steps)
  if mesh is not None:
    mesh = _mesh.check(mesh, axes=(_mesh.DATA_AXIS, _mesh.MODEL_AXIS),
                       required=_mesh.DATA_AXIS, caller='range_test')
  bar = _progress.check(progress)
  strategy = _strategy.check(strategy)

  tx = _make_optimizer(optimizer, hyperparam, schedule)
  if not isinstance(tx, optax.GradientTransformation):
    raise TypeError(
        'optimizer must return an optax.GradientTransformation, got'
        f' {type(tx).__name__} from {optimizer!r}.'
    )
  stateful = model_state is not None
  settings = (start_lr, end_lr, smoothing, divergence_threshold)
  (scan, scan_raw, init, step, ramp, loop_start, loop_step, channel,
   decision) = _PROGRAMS.get(
      (loss_fn, optimizer),
      (hyperparam, num_steps, mode, has_aux, stateful, accumulation_steps),
      lambda refs: _build(
          refs,
          (hyperparam, num_steps, mode, has_aux, stateful, accumulation_steps),
      ),
  )

  stacked = _is_stacked(batches)
  if stacked:
    _check_stacked(batches, num_steps, accumulation_steps)
  place = lambda batch, axis: batch
  if mesh is not None:
    place = functools.partial(_place_batch, mesh)
    if stacked:
      _mesh.check_batch(batches, 1, _mesh.size(mesh, _mesh.DATA_AXIS))
      batches = jax.tree.map(lambda x: place(x, axis=1), batches)
    params, model_state, key, data = _replicate(
        mesh, (params, model_state, key, data))

  if stacked:
    inputs = (params, model_state, batches, key, *settings, data)
    is_traced = _strategy.traced(inputs)
    chosen = _strategy.choose(
        strategy, is_traced=is_traced,
        platform=(jax.default_backend() if mesh is None
                  else mesh.devices.flat[0].platform),
        convolution=lambda: decision.get(
            functools.partial(_first_loss, loss_fn, has_aux=has_aux,
                              stateful=stateful),
            params, model_state, batches, key, data))
    with contextlib.ExitStack() as bars:
      token = bars.enter_context(_progress.bar(bar, num_steps, 'range test'))
      operands = None
      ends = ()
      if bar is not None:
        every = bar.interval(num_steps)
        ends = _progress.ends_every(every, num_steps)
        if chosen == 'scan':
          inside = bars.enter_context(channel.attach(token, ends))
          operands = _progress.operands(inside, every)
      if is_traced:
        (losses, smoothed, aux), diverged_step, lrs = scan(*inputs, operands)
      else:  # Concrete: the rule over the recorded losses runs on the host.
        if chosen == 'loop':
          raw, raw_aux = _run_loop(loop_start, loop_step, inputs[:6] + (data,),
                                   num_steps, token, ends, mesh)
          lrs = ramp(start_lr, end_lr)
        else:
          (raw, raw_aux), lrs = scan_raw(*inputs, operands)
        if mesh is not None:
          raw, raw_aux, lrs = _mesh.local((raw, raw_aux, lrs))
        (losses, smoothed, aux), diverged_step = _rule_on_host(
            raw, raw_aux, smoothing, divergence_threshold)
        _progress.update(token, num_steps)  # A call that ran without updates.
    if mesh is not None:
      losses, smoothed, aux, diverged_step, lrs = _mesh.local(
          (losses, smoothed, aux, diverged_step, lrs))
    _check_first_loss(losses)
  else:
    carry = init(params, model_state, start_lr, end_lr)
    records = []
    iterator = iter(batches)
    stack = contextlib.ExitStack()
    token = stack.enter_context(_progress.bar(bar, num_steps, 'range test'))
    for t in range(num_steps):
      micro = []
      for j in range(accumulation_steps):
        try:
          micro.append(next(iterator))
        except StopIteration:
          stack.close()
          raise ValueError(
              f'batches ran out after {t * accumulation_steps + j} batches;'
              f' num_steps={num_steps} needs one batch per step'
              + ('.' if accumulation_steps == 1 else
                 f', times accumulation_steps={accumulation_steps}.')
          ) from None
        if mesh is not None:
          _mesh.check_batch(micro[-1], 0, _mesh.size(mesh, _mesh.DATA_AXIS))
          micro[-1] = jax.tree.map(lambda x: place(x, axis=0), micro[-1])
      batch = micro[0] if accumulation_steps == 1 else jax.tree.map(
          lambda *x: jnp.stack(x), *micro)
      carry, record = step(carry, batch, key, *settings, data)
      if token and bar and (t + 1) % bar.interval(num_steps) == 0:
        _progress.update(token, t + 1)
      records.append(record)
      if t == 0:
        _check_first_loss(record[0])
      if isinstance(carry.diverged, jax.core.Tracer):
        continue
      if bool(carry.diverged):
        break
    if token:
      _progress.update(token, len(records))
    stack.close()
    fill = jax.tree.map(_fill, records[0])
    records += [fill] * (num_steps - len(records))
    losses, smoothed, aux = jax.tree.map(lambda *x: jnp.stack(x), *records)
    diverged_step = carry.diverged_step
    lrs = ramp(start_lr, end_lr)
    if mesh is not None:
      losses, smoothed, aux, diverged_step, lrs = _mesh.local(
          (losses, smoothed, aux, diverged_step, lrs))

  return RangeTestResult(
      lrs=lrs,
      losses=losses,
      smoothed_losses=smoothed,
      aux=aux,
      diverged_step=diverged_step,
      mode=mode,
      hyperparam=hyperparam,
  )

