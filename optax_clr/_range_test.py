"""The LR range test: one compiled sweep of a growing hyperparameter."""

from collections.abc import Callable, Iterator
import functools
import inspect
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_clr import _checks
from optax_clr import _ramp

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
    lambda meta, leaves: RangeTestResult(*leaves, *meta),
)


class _Carry(NamedTuple):
  params: Any
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


def _init(params, start_lr, end_lr, smoothing, threshold, *, static):
  del smoothing, threshold
  optimizer, hyperparam, num_steps, mode = static[1:5]
  schedule = _ramp.range_test_schedule(start_lr, end_lr, num_steps, mode=mode)
  tx = _make_optimizer(optimizer, hyperparam, schedule)
  # float32, or float64 under jax_enable_x64.
  zero = jnp.zeros([], jax.dtypes.canonicalize_dtype(jnp.float64))
  return _Carry(
      params=params,
      opt_state=tx.init(params),
      average=zero,
      first=zero,
      best=jnp.full_like(zero, jnp.inf),
      diverged=jnp.zeros([], bool),
      diverged_step=jnp.asarray(num_steps, jnp.int32),
      step=jnp.zeros([], jnp.int32),
  )


def _step(carry, batch, start_lr, end_lr, smoothing, threshold, *, static):
  """One step of the sweep: loss, divergence check, masked update."""
  loss_fn, optimizer, hyperparam, num_steps, mode, has_aux = static
  schedule = _ramp.range_test_schedule(start_lr, end_lr, num_steps, mode=mode)
  tx = _make_optimizer(optimizer, hyperparam, schedule)
  if has_aux:
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, aux), grads = value_and_grad(carry.params, batch)
  else:
    loss, grads = jax.value_and_grad(loss_fn)(carry.params, batch)
    aux = {}
  dtype = carry.average.dtype
  loss = jnp.asarray(loss, dtype)  # jax.grad has checked that it is a scalar.
  step = carry.step
  average = smoothing * carry.average + (1 - smoothing) * loss
  smoothed = average / (1 - smoothing ** (step + 1).astype(dtype))
  first = jnp.where(step == 0, smoothed, carry.first)
  best = jnp.minimum(carry.best, smoothed)
  bad = ~jnp.isfinite(loss)
  if threshold is not None:
    scale = jnp.maximum(jnp.maximum(jnp.abs(first), first - best), SCALE_FLOOR)
    bad = bad | (smoothed - best > threshold * scale)
  diverged = carry.diverged | bad
  diverged_step = jnp.where(
      bad & ~carry.diverged, step, carry.diverged_step
  )
  updates, opt_state = tx.update(grads, carry.opt_state, carry.params)
  params = optax.apply_updates(carry.params, updates)
  keep = lambda old, new: jnp.where(diverged, old, new)
  carry = _Carry(
      params=jax.tree.map(keep, carry.params, params),
      opt_state=jax.tree.map(keep, carry.opt_state, opt_state),
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


def _scan(params, batches, start_lr, end_lr, smoothing, threshold, *, static):
  carry = _init(params, start_lr, end_lr, smoothing, threshold, static=static)
  step = functools.partial(
      _step,
      start_lr=start_lr,
      end_lr=end_lr,
      smoothing=smoothing,
      threshold=threshold,
      static=static,
  )
  carry, records = jax.lax.scan(step, carry, batches, length=static[3])
  return records, carry.diverged_step


_STATIC = ('static',)
_jit_init = jax.jit(_init, static_argnames=_STATIC)
_jit_step = jax.jit(_step, static_argnames=_STATIC)
_jit_scan = jax.jit(_scan, static_argnames=_STATIC)


def _is_stacked(batches: Any) -> bool:
  """Whether ``batches`` is a pytree of stacked arrays, not an iterable."""
  if isinstance(batches, (list, Iterator)):
    return False
  leaves = jax.tree.leaves(batches)
  opaque = len(leaves) == 1 and leaves[0] is batches  # a data loader, say
  return not (opaque and not hasattr(batches, 'shape'))


def _check_stacked(batches: Any, num_steps: int) -> None:
  for path, leaf in jax.tree_util.tree_flatten_with_path(batches)[0]:
    shape = getattr(leaf, 'shape', None)
    if shape is None or not shape or shape[0] != num_steps:
      raise ValueError(
          'batches must have a leading axis of length num_steps='
          f'{num_steps} on every leaf, got shape {shape} at'
          f' batches{jax.tree_util.keystr(path)}. Pass a list or iterator'
          ' of batches to feed them one at a time.'
      )


def _check_first_loss(loss: Any) -> None:
  first = _checks.concrete(loss)
  if first is not None and not np.isfinite(first):
    raise ValueError(
        f'loss_fn returned a non-finite loss ({float(first)}) at the first'
        ' step, before any update: check params and the first batch of'
        ' batches.'
    )


def _hashable(*values: Any) -> bool:
  try:
    hash(values)
  except TypeError:
    return False
  return True


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
  diverged on, updates are masked (the parameters stay put) and the records
  after that step are NaN; ``divergence_threshold=None`` turns the rise rule
  off, but a non-finite loss still ends the sweep.

  With ``batches`` a pytree of arrays whose leading axis is ``num_steps``, the
  sweep is one jitted ``lax.scan``: no host round trip per step, and
  ``jax.vmap`` over ``params`` or ``batches`` runs several sweeps as one
  program. A list, iterator or other iterable of batches is fed one batch at a
  time to a jitted step (for data that does not fit in memory); it gives the
  same result and stops at divergence. Nothing is mutated: ``params`` and
  ``optimizer`` are as before, there is nothing to reset.

  Args:
    loss_fn: ``loss_fn(params, batch) -> loss`` (a scalar), or ``(loss, aux)``
      with ``has_aux=True``; aux may carry ``"accuracy"`` for
      ``suggest_clr_bounds(..., metric="accuracy")``.
    params: the initial parameters, a pytree.
    optimizer: a factory of ``optax.GradientTransformation`` such as
      ``optax.adam`` or ``functools.partial(optax.sgd, momentum=0.9)``. It is
      called with the ramp as its learning rate, or, for another
      ``hyperparam``, wrapped in ``optax.inject_hyperparams`` and called with
      the ramp as that keyword (bind the learning rate yourself).
    batches: a pytree of arrays stacked along a leading axis of length
      ``num_steps`` (a pytree without leaves, such as None, passes None to
      every step), or a list or iterable yielding at least ``num_steps``
      batches.
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

  Returns:
    result
      A :class:`RangeTestResult` with fields ``lrs``, ``losses``,
      ``smoothed_losses``, ``aux`` and ``diverged_step``.

  Raises:
    ValueError: a bad argument, named in the message; batches whose leading
      axis is not ``num_steps``; a ``hyperparam`` the optimizer does not take;
      a non-finite loss at the first step.
    TypeError: ``loss_fn`` or ``optimizer`` is not callable, ``has_aux`` is
      not a bool, or ``optimizer`` cannot be built for ``hyperparam`` (its
      learning rate unbound).

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

  static = (loss_fn, optimizer, hyperparam, num_steps, mode, has_aux)
  if _hashable(*static):  # Compiled once per static configuration.
    scan, init, step = (
        functools.partial(f, static=static)
        for f in (_jit_scan, _jit_init, _jit_step)
    )
  else:  # An unhashable callable: compile without the cache.
    scan, init, step = (
        jax.jit(functools.partial(f, static=static))
        for f in (_scan, _init, _step)
    )
  settings = (start_lr, end_lr, smoothing, divergence_threshold)

  if _is_stacked(batches):
    _check_stacked(batches, num_steps)
    (losses, smoothed, aux), diverged_step = scan(
        params, batches, *settings
    )
    _check_first_loss(losses[0])
  else:
    carry = init(params, *settings)
    records = []
    iterator = iter(batches)
    for t in range(num_steps):
      try:
        batch = next(iterator)
      except StopIteration:
        raise ValueError(
            f'batches ran out after {t} batches; num_steps={num_steps}'
            ' needs one batch per step.'
        ) from None
      carry, record = step(carry, batch, *settings)
      records.append(record)
      if t == 0:
        _check_first_loss(record[0])
      if isinstance(carry.diverged, jax.core.Tracer):
        continue
      if bool(carry.diverged):
        break
    fill = jax.tree.map(_fill, records[0])
    records += [fill] * (num_steps - len(records))
    losses, smoothed, aux = jax.tree.map(lambda *x: jnp.stack(x), *records)
    diverged_step = carry.diverged_step

  return RangeTestResult(
      lrs=schedule(jnp.arange(num_steps)),
      losses=losses,
      smoothed_losses=smoothed,
      aux=aux,
      diverged_step=diverged_step,
      mode=mode,
      hyperparam=hyperparam,
  )

