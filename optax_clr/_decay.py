"""Three classic decays: step, exponential and inverse time.

optax has ``exponential_decay`` but it cannot be swept: it tests
``decay_rate`` with a Python ``if`` (a tracer under ``jax.vmap`` fails) and
divides a float32 count. These decays split ``count`` into whole periods and
a remainder with integer arithmetic, and take logs of concrete rates in
float64, so they agree with optax where optax works and keep working under
``jax.vmap`` and at large counts.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_clr import _checks
from optax_clr import _numerics


def _periods(
    count: jax.typing.ArrayLike, period: Any, staircase: bool, dtype: Any
) -> jax.Array:
  """``count / period`` from an exact integer split, floored if staircase."""
  count = _numerics.as_count(count)
  period = _numerics.as_int(period, count)
  whole = (count // period).astype(dtype)
  if staircase:
    return whole
  return whole + (count % period).astype(dtype) / period.astype(dtype)


def step_decay_schedule(
    init_lr: jax.typing.ArrayLike,
    drop_every: jax.typing.ArrayLike,
    *,
    factor: jax.typing.ArrayLike = 0.5,
) -> optax.Schedule:
  r"""Step decay: multiply by ``factor`` every ``drop_every`` steps.

  .. math::

    \text{lr}(t) = \text{init\_lr} \cdot
      \text{factor}^{\lfloor t / \text{drop\_every} \rfloor}

  "Halve every n epochs" is ``factor=0.5`` with ``drop_every = n *
  steps_per_epoch``; PyTorch's ``StepLR(step_size, gamma)`` stepped per
  update is ``drop_every=step_size, factor=gamma``. ``init_lr`` and
  ``factor`` may be traced; concrete arguments are checked, traced ones are
  not.

  Args:
    init_lr: the rate before the first drop, ``>= 0``.
    drop_every: steps between drops, a whole number ``>= 1``.
    factor: the multiplier at each drop, in ``(0, 1]``.

  Returns:
    schedule
      A function that maps step counts to values.

  Examples:
    >>> import optax_clr
    >>> schedule = optax_clr.step_decay_schedule(0.1, drop_every=10)
    >>> [round(float(schedule(k)), 4) for k in (0, 9, 10, 25)]
    [0.1, 0.1, 0.05, 0.025]
  """
  _checks.check_number('init_lr', init_lr, lower=0.0)
  _checks.check_step_count('drop_every', drop_every)
  _checks.check_number('factor', factor, lower=0.0, upper=1.0, lower_open=True)
  # The staircase exponential decay is this formula exactly.
  return exponential_decay_schedule(
      init_lr, factor, decay_steps=drop_every, staircase=True
  )


def exponential_decay_schedule(
    init_lr: jax.typing.ArrayLike,
    decay_rate: jax.typing.ArrayLike,
    *,
    decay_steps: jax.typing.ArrayLike = 1,
    staircase: bool = False,
) -> optax.Schedule:
  r"""Exponential decay: multiply by ``decay_rate`` every ``decay_steps``.

  .. math::

    \text{lr}(t) = \text{init\_lr} \cdot
      \text{decay\_rate}^{t / \text{decay\_steps}}

  with the exponent floored when ``staircase``. "Multiply by 0.95 per
  epoch", :math:`\alpha_t = 0.95^{\text{epoch}} \alpha_0`, is
  ``decay_rate=0.95, decay_steps=steps_per_epoch``. Matches
  ``optax.exponential_decay`` and Keras ``ExponentialDecay`` but may be
  swept with ``jax.vmap`` over ``init_lr`` and ``decay_rate``. Concrete
  arguments are checked; traced ones are not.

  Args:
    init_lr: the rate at step 0, ``>= 0``.
    decay_rate: the factor per ``decay_steps``, ``> 0`` (``> 1`` grows, and
      saturates at the largest finite float instead of reaching inf).
    decay_steps: the steps over which the factor applies once, whole ``>=
      1``.
    staircase: decay in whole periods only.

  Returns:
    schedule
      A function that maps step counts to values.

  Examples:
    >>> import optax_clr
    >>> schedule = optax_clr.exponential_decay_schedule(1.0, 0.5, decay_steps=2)
    >>> [round(float(schedule(k)), 4) for k in (0, 1, 2, 4)]
    [1.0, 0.7071, 0.5, 0.25]
  """
  _checks.check_number('init_lr', init_lr, lower=0.0)
  _checks.check_number('decay_rate', decay_rate, lower=0.0, lower_open=True)
  _checks.check_step_count('decay_steps', decay_steps)
  staircase = _checks.check_bool('staircase', staircase)
  dtype = _numerics.output_dtype(init_lr)
  log_rate = _checks.log_of(decay_rate)

  largest = float(jnp.finfo(dtype).max)
  # Just below log(largest): exp of it rounds to a finite number.
  log_largest = float(np.log(largest)) - 1e-3

  def schedule(count: jax.typing.ArrayLike) -> jax.Array:
    periods = _periods(count, decay_steps, staircase, dtype)
    init = jnp.asarray(init_lr, dtype)
    # A growing rate (decay_rate > 1) saturates at the largest finite float
    # instead of reaching inf (and 0 * inf = NaN for init_lr = 0). The
    # exponent is clipped, not the result, so no branch holds an inf and the
    # gradients stay finite.
    exponent = periods * log_rate
    value = init * jnp.exp(jnp.minimum(exponent, log_largest)).astype(dtype)
    saturated = exponent + jnp.log(init) >= float(np.log(largest))
    return jnp.where(saturated, largest, jnp.minimum(value, largest))

  return schedule


def inverse_time_decay_schedule(
    init_lr: jax.typing.ArrayLike,
    decay_rate: jax.typing.ArrayLike,
    *,
    decay_steps: jax.typing.ArrayLike = 1,
    staircase: bool = False,
) -> optax.Schedule:
  r"""Inverse-time decay: divide by ``1 + decay_rate * t / decay_steps``.

  .. math::

    \text{lr}(t) = \frac{\text{init\_lr}}
      {1 + \text{decay\_rate} \cdot t / \text{decay\_steps}}

  with ``t / decay_steps`` floored when ``staircase`` (Keras
  ``InverseTimeDecay``; optax has none). "Divide by 1 + k·epoch",
  :math:`\alpha_t = \alpha_0 / (1 + k \cdot \text{epoch})`, is
  ``decay_rate=k, decay_steps=steps_per_epoch``. ``init_lr`` and
  ``decay_rate`` may be traced; concrete arguments are checked, traced ones
  are not.

  Args:
    init_lr: the rate at step 0, ``>= 0``.
    decay_rate: how fast the rate falls, ``>= 0`` (0 keeps it constant).
    decay_steps: the unit of ``t``, a whole number ``>= 1``.
    staircase: decay in whole periods only.

  Returns:
    schedule
      A function that maps step counts to values.

  Examples:
    >>> import optax_clr
    >>> schedule = optax_clr.inverse_time_decay_schedule(1.0, 0.5)
    >>> [round(float(schedule(k)), 4) for k in (0, 1, 2, 6)]
    [1.0, 0.6667, 0.5, 0.25]
  """
  _checks.check_number('init_lr', init_lr, lower=0.0)
  _checks.check_number('decay_rate', decay_rate, lower=0.0)
  _checks.check_step_count('decay_steps', decay_steps)
  staircase = _checks.check_bool('staircase', staircase)
  dtype = _numerics.output_dtype(init_lr, decay_rate)

  def schedule(count: jax.typing.ArrayLike) -> jax.Array:
    periods = _periods(count, decay_steps, staircase, dtype)
    rate = jnp.asarray(decay_rate, dtype)
    return jnp.asarray(init_lr, dtype) / (1.0 + rate * periods)

  return schedule
