"""Cyclical learning rates and cyclical momentum (Smith, 2015).

One formula serves both: :func:`cycle_amplitude` gives the height of the
triangle wave at ``count`` (0 at the cycle ends, 1 at the peak) times the
policy's scale; the learning rate rises along it and the momentum falls.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_clr import _checks
from optax_clr import _numerics

MODES = ('triangular', 'triangular2', 'exp_range')
SCALE_MODES = ('cycle', 'iterations')
_IMPLIED_SCALE_MODE = {
    'triangular': 'cycle',
    'triangular2': 'cycle',
    'exp_range': 'iterations',
}


def _checked_scale(value: Any, argument: jax.Array, dtype: Any) -> jax.Array:
  """``scale_fn``'s output as ``dtype``: one real number per count."""
  value = jnp.asarray(value)
  if value.shape not in ((), argument.shape):
    raise ValueError(
        'scale_fn must return one number per count (shape () or the'
        f' shape {argument.shape} of its argument), got shape {value.shape}.'
    )
  if not (
      jnp.issubdtype(value.dtype, jnp.integer)
      or jnp.issubdtype(value.dtype, jnp.floating)
  ):
    raise TypeError(
        f'scale_fn must return a real number, got dtype {value.dtype}.'
    )
  return value.astype(dtype)


def cycle_amplitude(
    step_size: jax.typing.ArrayLike,
    *,
    step_size_down: jax.typing.ArrayLike | None,
    mode: str,
    gamma: jax.typing.ArrayLike,
    scale_fn: Callable[[jax.Array], jax.typing.ArrayLike] | None,
    scale_mode: str | None,
    dtype: Any,
) -> Callable[[jax.typing.ArrayLike], jax.Array]:
  """Checks the cycle arguments and returns ``count -> position * scale``.

  The position is computed with integers only: ``count % total`` and
  ``count // total`` are exact for every count the dtype holds, where PyTorch
  and Keras divide a float ``count / step_size``.
  """
  _checks.check_step_count('step_size', step_size)
  if step_size_down is None:
    step_size_down = step_size
  _checks.check_step_count('step_size_down', step_size_down)
  _checks.check_choice('mode', mode, MODES)
  _checks.check_number('gamma', gamma, lower=0.0, upper=1.0, lower_open=True)
  if scale_fn is None:
    implied = _IMPLIED_SCALE_MODE[mode]
    if scale_mode is not None and scale_mode != implied:
      raise ValueError(
          f'scale_mode={scale_mode!r} has no effect without scale_fn: mode'
          f' {mode!r} scales by {implied!r}. Pass scale_fn to choose the'
          ' scale_mode.'
      )
    scale_mode = implied
  else:
    _checks.check_callable('scale_fn', scale_fn)
    scale_mode = 'cycle' if scale_mode is None else scale_mode
  _checks.check_choice('scale_mode', scale_mode, SCALE_MODES)
  log_gamma = _checks.log_of(gamma) if mode == 'exp_range' else 0.0

  def scale(cycle: jax.Array, count: jax.Array) -> jax.Array:
    if scale_fn is not None:
      argument = cycle if scale_mode == 'cycle' else count
      return _checked_scale(scale_fn(argument), argument, dtype)
    if mode == 'triangular':
      return jnp.ones((), dtype)
    if mode == 'triangular2':
      return _numerics.inverse_power_of_two(cycle - 1, dtype)
    return _numerics.exp_of_product(count, log_gamma, dtype)

  def amplitude(count: jax.typing.ArrayLike) -> jax.Array:
    count = _numerics.as_count(count)
    up = _numerics.as_int(step_size, count)
    down = _numerics.as_int(step_size_down, count)
    # ``up + down`` may not fit the count dtype (two step sizes of 1.5e9 in
    # int32). Then no cycle ends within the counts the dtype holds: the
    # position is the count itself. Counts are non-negative, so truncating
    # division is floor division and the position is one multiply-subtract
    # away (cheaper than jnp's %, //).
    fits = up <= jnp.iinfo(count.dtype).max - down
    total = jnp.where(fits, up + down, 1)
    completed = jnp.where(fits, jax.lax.div(count, total), 0)
    cycle = completed + 1
    position = count - completed * total
    rising = position <= up
    # ``total - position`` written so that it never forms ``total``.
    numerator = jnp.where(rising, position, down - (position - up))
    denominator = jnp.where(rising, up, down)
    fraction = numerator.astype(dtype) / denominator.astype(dtype)
    return fraction * scale(cycle, count)

  return amplitude


def cyclic_schedule(
    base_lr: jax.typing.ArrayLike,
    max_lr: jax.typing.ArrayLike,
    step_size: jax.typing.ArrayLike,
    *,
    step_size_down: jax.typing.ArrayLike | None = None,
    mode: str = 'triangular',
    gamma: jax.typing.ArrayLike = 1.0,
    scale_fn: Callable[[jax.Array], jax.typing.ArrayLike] | None = None,
    scale_mode: str | None = None,
) -> optax.Schedule:
  r"""Cyclical learning rate (CLR) between ``base_lr`` and ``max_lr``.

  With ``total = step_size + step_size_down``, ``cycle = count // total + 1``
  and ``p = count % total``:

  .. math::

    \text{lr}(t) = \text{base\_lr} + (\text{max\_lr} - \text{base\_lr})
      \cdot h(p) \cdot \text{scale}, \quad
    h(p) = \begin{cases}
      p / \text{step\_size} & p \le \text{step\_size} \\
      (\text{total} - p) / \text{step\_size\_down} & \text{otherwise}
    \end{cases}

  where ``scale`` is 1 (``"triangular"``), :math:`2^{-(\text{cycle}-1)}`
  (``"triangular2"``), :math:`\gamma^{t}` (``"exp_range"``) or
  ``scale_fn(cycle)`` / ``scale_fn(t)`` for a custom ``scale_fn`` with
  ``scale_mode`` ``"cycle"`` / ``"iterations"``. With symmetric cycles this
  is Smith's (2015) ``cycle = floor(1 + t / (2 step_size))``,
  ``x = |t / step_size - 2 cycle + 1|``, ``lr = base + (max - base) max(0,
  1 - x) scale``.

  Step for step equal to PyTorch's ``CyclicLR`` (``schedule(0)`` is
  ``base_lr``, ``schedule(k)`` is the rate of the ``k+1``-th update), but the
  cycle position uses integer arithmetic (exact at ``2**31 - 1``, and at
  ``10**12`` with ``jax_enable_x64``, also when ``step_size + step_size_down``
  exceeds what the count dtype holds) and ``triangular2`` never overflows
  (PyTorch raises ``OverflowError`` after 1025 cycles; here the scale
  underflows smoothly and the rate settles at ``base_lr``). The cost per call
  does not depend on the number of cycles.

  Every argument except ``mode``, ``scale_fn`` and ``scale_mode`` may be a
  traced array, so ``jax.vmap`` can sweep ``max_lr``, ``step_size`` or
  ``gamma``. Concrete values are checked here; traced values are not checked.

  Args:
    base_lr: the lower bound of the cycle, ``>= 0``.
    max_lr: the upper bound of the cycle, ``>= base_lr``.
    step_size: steps from ``base_lr`` up to ``max_lr``: a whole number
      ``>= 1`` (``2000.0`` is fine, ``2.5`` is not).
    step_size_down: steps from ``max_lr`` back down; defaults to
      ``step_size``.
    mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``; ignored
      when ``scale_fn`` is given.
    gamma: the per-step factor of ``"exp_range"``, in ``(0, 1]``.
    scale_fn: a custom scale, called with the integer 1-based cycle number
      (``scale_mode="cycle"``, the default) or the integer global step
      (``scale_mode="iterations"``); it must be written in ``jnp`` ops and
      return one real number per count (anything else is an error naming
      ``scale_fn`` on the first call).
    scale_mode: ``"cycle"`` or ``"iterations"``; only meaningful with
      ``scale_fn`` (the built-in modes imply theirs).

  Returns:
    schedule
      A function that maps step counts to values.

  Raises:
    ValueError: a concrete argument is out of range, or a string option is
      unknown.
    TypeError: a numeric argument is not a number, or ``scale_fn`` is not
      callable.

  Examples:
    >>> import optax_clr
    >>> schedule = optax_clr.cyclic_schedule(0.001, 0.006, step_size=4)
    >>> [round(float(schedule(k)), 5) for k in range(0, 10, 2)]
    [0.001, 0.0035, 0.006, 0.0035, 0.001]

  References:
    Smith, `Cyclical Learning Rates for Training Neural Networks
    <https://arxiv.org/abs/1506.01186>`_, 2015.
  """
  _checks.check_number('base_lr', base_lr, lower=0.0)
  _checks.check_number('max_lr', max_lr, lower=0.0)
  _checks.check_not_below('base_lr', base_lr, 'max_lr', max_lr)
  dtype = _numerics.output_dtype(base_lr, max_lr)
  amplitude = cycle_amplitude(
      step_size,
      step_size_down=step_size_down,
      mode=mode,
      gamma=gamma,
      scale_fn=scale_fn,
      scale_mode=scale_mode,
      dtype=dtype,
  )

  def schedule(count: jax.typing.ArrayLike) -> jax.Array:
    low = jnp.asarray(base_lr, dtype)
    high = jnp.asarray(max_lr, dtype)
    return low + (high - low) * amplitude(count)

  return schedule


def triangular_schedule(
    base_lr: jax.typing.ArrayLike,
    max_lr: jax.typing.ArrayLike,
    step_size: jax.typing.ArrayLike,
    *,
    step_size_down: jax.typing.ArrayLike | None = None,
) -> optax.Schedule:
  r"""Triangular CLR: a constant-amplitude wave between the two bounds.

  .. math::

    \text{lr}(t) = \text{base\_lr} + (\text{max\_lr} - \text{base\_lr})
      \cdot h(t \bmod \text{total})

  with the triangle ``h`` of :func:`cyclic_schedule`. Concrete arguments are
  checked; traced ones (under ``jax.vmap``/``jax.jit``) are not.

  Args:
    base_lr: the lower bound, ``>= 0``.
    max_lr: the upper bound, ``>= base_lr``.
    step_size: steps of the rising half cycle (whole, ``>= 1``).
    step_size_down: steps of the falling half; defaults to ``step_size``.

  Returns:
    schedule
      A function that maps step counts to values.

  Examples:
    >>> import optax_clr
    >>> schedule = optax_clr.triangular_schedule(0.1, 0.5, step_size=2)
    >>> [round(float(schedule(k)), 3) for k in range(6)]
    [0.1, 0.3, 0.5, 0.3, 0.1, 0.3]

  References:
    Smith, `Cyclical Learning Rates for Training Neural Networks
    <https://arxiv.org/abs/1506.01186>`_, 2015.
  """
  return cyclic_schedule(
      base_lr, max_lr, step_size, step_size_down=step_size_down
  )


def triangular2_schedule(
    base_lr: jax.typing.ArrayLike,
    max_lr: jax.typing.ArrayLike,
    step_size: jax.typing.ArrayLike,
    *,
    step_size_down: jax.typing.ArrayLike | None = None,
) -> optax.Schedule:
  r"""Triangular2 CLR: the amplitude halves at every new cycle.

  .. math::

    \text{lr}(t) = \text{base\_lr} + (\text{max\_lr} - \text{base\_lr})
      \cdot h(t \bmod \text{total}) \cdot 2^{-(\text{cycle} - 1)}

  with the 1-based ``cycle = t // total + 1``. The scale underflows smoothly
  to 0 (the rate to ``base_lr``) instead of overflowing. Concrete arguments
  are checked; traced ones are not.

  Args:
    base_lr: the lower bound, ``>= 0``.
    max_lr: the first cycle's peak, ``>= base_lr``.
    step_size: steps of the rising half cycle (whole, ``>= 1``).
    step_size_down: steps of the falling half; defaults to ``step_size``.

  Returns:
    schedule
      A function that maps step counts to values.

  Examples:
    >>> import optax_clr
    >>> schedule = optax_clr.triangular2_schedule(0.0, 1.0, step_size=2)
    >>> [float(schedule(k)) for k in (2, 6, 10)]
    [1.0, 0.5, 0.25]

  References:
    Smith, `Cyclical Learning Rates for Training Neural Networks
    <https://arxiv.org/abs/1506.01186>`_, 2015.
  """
  return cyclic_schedule(
      base_lr,
      max_lr,
      step_size,
      step_size_down=step_size_down,
      mode='triangular2',
  )


def exp_range_schedule(
    base_lr: jax.typing.ArrayLike,
    max_lr: jax.typing.ArrayLike,
    step_size: jax.typing.ArrayLike,
    *,
    gamma: jax.typing.ArrayLike,
    step_size_down: jax.typing.ArrayLike | None = None,
) -> optax.Schedule:
  r"""Exp-range CLR: the amplitude decays by ``gamma`` every step.

  .. math::

    \text{lr}(t) = \text{base\_lr} + (\text{max\_lr} - \text{base\_lr})
      \cdot h(t \bmod \text{total}) \cdot \gamma^{t}

  ``gamma ** t`` is evaluated as ``exp(t * log(gamma))`` with the log taken
  in float64 on the host for a concrete ``gamma``, so it stays accurate at
  large ``t``. Concrete arguments are checked; traced ones are not.

  Args:
    base_lr: the lower bound, ``>= 0``.
    max_lr: the upper bound before decay, ``>= base_lr``.
    step_size: steps of the rising half cycle (whole, ``>= 1``).
    gamma: the per-step decay of the amplitude, in ``(0, 1]``.
    step_size_down: steps of the falling half; defaults to ``step_size``.

  Returns:
    schedule
      A function that maps step counts to values.

  Examples:
    >>> import optax_clr
    >>> schedule = optax_clr.exp_range_schedule(0.0, 1.0, 10, gamma=0.99)
    >>> round(float(schedule(10)), 4)  # 0.99 ** 10
    0.9044

  References:
    Smith, `Cyclical Learning Rates for Training Neural Networks
    <https://arxiv.org/abs/1506.01186>`_, 2015.
  """
  return cyclic_schedule(
      base_lr,
      max_lr,
      step_size,
      step_size_down=step_size_down,
      mode='exp_range',
      gamma=gamma,
  )


def cyclic_momentum_schedule(
    base_momentum: jax.typing.ArrayLike,
    max_momentum: jax.typing.ArrayLike,
    step_size: jax.typing.ArrayLike,
    *,
    step_size_down: jax.typing.ArrayLike | None = None,
    mode: str = 'triangular',
    gamma: jax.typing.ArrayLike = 1.0,
    scale_fn: Callable[[jax.Array], jax.typing.ArrayLike] | None = None,
    scale_mode: str | None = None,
) -> optax.Schedule:
  r"""Cyclical momentum: the mirror image of :func:`cyclic_schedule`.

  .. math::

    m(t) = \text{max\_momentum} - (\text{max\_momentum} -
      \text{base\_momentum}) \cdot h(p) \cdot \text{scale}

  Built with the same arguments as the learning-rate schedule, the momentum
  is at ``max_momentum`` when the rate is at ``base_lr`` and at
  ``base_momentum`` when the rate peaks, as in PyTorch's ``CyclicLR(...,
  cycle_momentum=True)``. Use it through ``optax.inject_hyperparams``, e.g.
  ``inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=m)`` or Adam's
  ``b1``. Concrete arguments are checked; traced ones are not.

  Args:
    base_momentum: the lowest momentum, ``>= 0``.
    max_momentum: the highest momentum, ``>= base_momentum``.
    step_size: steps of the half cycle in which momentum falls.
    step_size_down: steps of the half in which it rises back; defaults to
      ``step_size``.
    mode: as in :func:`cyclic_schedule`.
    gamma: as in :func:`cyclic_schedule`.
    scale_fn: as in :func:`cyclic_schedule`.
    scale_mode: as in :func:`cyclic_schedule`.

  Returns:
    schedule
      A function that maps step counts to values.

  Examples:
    >>> import optax_clr
    >>> schedule = optax_clr.cyclic_momentum_schedule(0.8, 0.9, step_size=2)
    >>> [round(float(schedule(k)), 3) for k in range(5)]
    [0.9, 0.85, 0.8, 0.85, 0.9]

  References:
    Smith, `A disciplined approach to neural network hyper-parameters
    <https://arxiv.org/abs/1803.09820>`_, 2018.
  """
  _checks.check_number('base_momentum', base_momentum, lower=0.0)
  _checks.check_number('max_momentum', max_momentum, lower=0.0)
  _checks.check_not_below(
      'base_momentum', base_momentum, 'max_momentum', max_momentum
  )
  dtype = _numerics.output_dtype(base_momentum, max_momentum)
  amplitude = cycle_amplitude(
      step_size,
      step_size_down=step_size_down,
      mode=mode,
      gamma=gamma,
      scale_fn=scale_fn,
      scale_mode=scale_mode,
      dtype=dtype,
  )

  def schedule(count: jax.typing.ArrayLike) -> jax.Array:
    low = jnp.asarray(base_momentum, dtype)
    high = jnp.asarray(max_momentum, dtype)
    return high - (high - low) * amplitude(count)

  return schedule
