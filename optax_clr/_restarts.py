"""Cosine annealing with warm restarts (SGDR, Loshchilov & Hutter, 2016).

Period ``i`` lasts ``first_period * period_mult**i`` steps. Which period a
count falls in is found in closed form with integers only: period ``i``
starts at ``first_period * G_i`` with ``G_i = 1 + m + ... + m**(i-1)``, so
with ``q = count // first_period`` the period index is the number of ``G_k``
(``k >= 1``) not above ``q``. The ``G_k`` that fit in the count's integer
dtype are a short table fixed when the schedule is traced (31 entries for
``period_mult=2`` and int32, 63 for int64): one comparison per entry,
whatever the number of restarts, and no product that can overflow.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_clr import _checks
from optax_clr import _numerics


# Just below log(largest finite float): exp of it rounds to a finite number.
_LOG_LARGEST = {
    np.dtype(dtype): float(np.log(np.finfo(dtype).max)) - 1e-3
    for dtype in (np.float32, np.float64)
}


def _concrete_period_mult(period_mult: Any) -> int:
  """Checks that ``period_mult`` is a concrete whole number >= 1."""
  if _checks.concrete(period_mult) is None:
    raise TypeError(
        'period_mult must be a concrete whole number (it fixes the shape of'
        f' the schedule), got the traced value {period_mult!r}.'
    )
  _checks.check_number('period_mult', period_mult, lower=1.0)
  array = np.asarray(period_mult)
  if array.ndim or array != np.floor(array):
    raise ValueError(
        'period_mult must be a whole number >= 1 (a fractional multiplier,'
        f' such as Keras t_mul=1.5, has no integer period), got {period_mult!r}.'
    )
  return int(array)


def _period_starts(period_mult: int, dtype: Any) -> list[int]:
  """``[G_1, G_2, ...]`` with ``G_k = (m**k - 1) / (m - 1)``, all <= max.

  Python integers, so the table itself never overflows; it stops at the
  last entry the integer ``dtype`` holds.
  """
  largest = int(jnp.iinfo(dtype).max)
  starts, total, power = [], 1, 1
  while total <= largest:
    starts.append(total)
    power *= period_mult
    total += power
  return starts


def _log_peak_mult(peak_mult: Any) -> Any:
  """``log(peak_mult)`` (float64 on the host when concrete), -inf at 0."""
  array = _checks.concrete(peak_mult)
  if array is None:
    return jnp.log(peak_mult)
  if np.all(array > 0):
    return _checks.log_of(peak_mult)
  with np.errstate(divide='ignore'):
    return np.log(array.astype(np.float64))


def restart_position(
    count: jax.typing.ArrayLike,
    first_period: jax.typing.ArrayLike,
    period_mult: int,
    dtype: Any,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(i, p, n)``: period index, position in it, period length.

  ``i`` and ``p`` are exact integers for every count the dtype holds (counts
  below 0 read as 0). The length ``n = first_period * period_mult**i`` is a
  float in ``dtype`` (``period_mult**i`` from a float64 table), never an
  integer: it can exceed the dtype (with ``first_period=1, period_mult=2`` the
  period that starts at ``2**31 - 1`` is ``2**31`` long).
  """
  count = _numerics.as_count(count)
  period = _numerics.as_int(first_period, count)
  count = jnp.maximum(count, 0).astype(period.dtype)
  period = jnp.maximum(period, 1)
  # Non-negative operands: truncating division is floor division.
  completed = jax.lax.div(count, period)
  if period_mult == 1:
    index = completed
    position = count - index * period
    return index, position, period.astype(dtype)
  starts = _period_starts(period_mult, period.dtype)
  table = jnp.asarray(np.asarray(starts), period.dtype)
  index = jnp.sum(completed[..., None] >= table, axis=-1, dtype=period.dtype)
  begins = jnp.concatenate([jnp.zeros((1,), period.dtype), table])
  position = count - period * jnp.take(begins, index)
  powers = np.asarray(
      [float(period_mult) ** k for k in range(len(starts) + 1)], np.float64
  )
  growth = jnp.take(jnp.asarray(powers, dtype), index)
  return index, position, period.astype(dtype) * growth


def cosine_restarts_schedule(
    init_lr: jax.typing.ArrayLike,
    first_period: jax.typing.ArrayLike,
    *,
    period_mult: int = 1,
    peak_mult: jax.typing.ArrayLike = 1.0,
    min_lr: jax.typing.ArrayLike = 0.0,
) -> optax.Schedule:
  r"""Cosine annealing with warm restarts (SGDR), in closed form.

  Period ``i`` lasts :math:`n_i = \text{first\_period} \cdot
  \text{period\_mult}^i` steps and starts where period ``i - 1`` ends; at
  position ``p`` inside it:

  .. math::

    \text{lr}(t) = \text{min\_lr} + (\text{init\_lr} - \text{min\_lr})
      \cdot \text{peak\_mult}^{i} \cdot \frac{1 + \cos(\pi p / n_i)}{2}

  Step for step equal to PyTorch's ``CosineAnnealingWarmRestarts(T_0=
  first_period, T_mult=period_mult, eta_min=min_lr)`` stepped once per
  update, and to Keras's ``CosineDecayRestarts(init_lr, first_period,
  t_mul=period_mult, m_mul=peak_mult, alpha=min_lr / init_lr)``. Unlike
  ``optax.sgdr_schedule`` (one joined schedule per period), the cost does not
  grow with the number of restarts, and the periods may grow.

  The period index and position are exact integers for every count the
  dtype holds (with ``first_period=1, period_mult=2`` a restart falls exactly
  on ``2**31 - 1``; with ``jax_enable_x64``, exact at ``10**12``), found with
  a fixed number of integer comparisons and no intermediate that overflows.
  ``peak_mult**i`` is ``exp(i * log(peak_mult))``, the log taken in float64
  for a concrete ``peak_mult``. Negative counts read as 0.

  ``period_mult`` must be concrete; every other argument may be traced (a
  ``jax.vmap`` sweep over ``init_lr``, ``first_period``, ``peak_mult`` or
  ``min_lr``, or ``jax.grad`` with respect to the rates). Concrete arguments
  are checked here; traced ones are not.

  To warm up first, join a ramp in front with ``optax.join_schedules``
  (the restarts then count from the end of the warmup).

  Args:
    init_lr: the first period's peak, ``>= min_lr``.
    first_period: the length of the first period, a whole number ``>= 1``.
    period_mult: the factor by which each period is longer than the one
      before, a concrete whole number ``>= 1``.
    peak_mult: the factor applied to the peak at each restart, ``>= 0``
      (Keras ``m_mul``; PyTorch has none, which is 1).
    min_lr: the floor every period anneals to, ``>= 0``.

  Returns:
    schedule
      A function that maps step counts to values.

  Raises:
    ValueError: a concrete argument is out of range or not whole.
    TypeError: an argument is not a number, or ``period_mult`` is traced.

  Examples:
    >>> import optax, optax_clr
    >>> schedule = optax_clr.cosine_restarts_schedule(1.0, 2, period_mult=2)
    >>> [round(float(schedule(k)), 3) for k in range(8)]
    [1.0, 0.5, 1.0, 0.854, 0.5, 0.146, 1.0, 0.962]
    >>> warm = optax.join_schedules(
    ...     [optax.linear_schedule(0.0, 1.0, 4), schedule], boundaries=[4])
    >>> [round(float(warm(k)), 3) for k in range(7)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 0.5, 1.0]

  References:
    Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm
    Restarts <https://arxiv.org/abs/1608.03983>`_, 2016.
  """
  _checks.check_number('init_lr', init_lr, lower=0.0)
  _checks.check_number('min_lr', min_lr, lower=0.0)
  _checks.check_not_below('min_lr', min_lr, 'init_lr', init_lr)
  _checks.check_step_count('first_period', first_period)
  period_mult = _concrete_period_mult(period_mult)
  _checks.check_number('peak_mult', peak_mult, lower=0.0)
  dtype = _numerics.output_dtype(init_lr, min_lr, peak_mult)
  log_peak = _log_peak_mult(peak_mult)

  def schedule(count: jax.typing.ArrayLike) -> jax.Array:
    index, position, length = restart_position(
        count, first_period, period_mult, dtype
    )
    fraction = position.astype(dtype) / length
    # (1 + cos(pi x)) / 2 == cos(pi x / 2)**2, without cancellation near 1.
    wave = jnp.square(jnp.cos(jnp.pi / 2 * fraction))
    # A growing peak (peak_mult > 1) saturates at the largest finite float:
    # the exponent is clipped so the scale stays finite, and the finite
    # product is formed before it so that no 0 * inf makes a NaN.
    exponent = index.astype(dtype) * jnp.asarray(log_peak, dtype)
    clipped = jnp.minimum(exponent, _LOG_LARGEST[dtype])
    scale = jnp.where(index == 0, jnp.ones((), dtype), jnp.exp(clipped))
    low = jnp.asarray(min_lr, dtype)
    high = jnp.asarray(init_lr, dtype)
    amplitude = (high - low) * wave
    largest = jnp.finfo(dtype).max
    saturated = exponent + jnp.log(amplitude) >= jnp.log(largest)
    value = jnp.minimum(low + amplitude * scale, largest)
    return jnp.where(saturated & (index > 0), largest, value)

  return schedule
