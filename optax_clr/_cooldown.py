r"""A cooldown from any step: any schedule, then a decay to ``final_lr``.

The decision of when to cool down is often made late (at resume time, when
the budget is known) or swept (a ``jax.vmap`` over where the cooldown
starts); both the start and the length may therefore be traced.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_clr import _checks
from optax_clr import _numerics
from optax_clr import _wsd


def _is_nan(steps: jax.typing.ArrayLike) -> jax.Array:
  """Whether a (possibly traced) step count is NaN; integers never are."""
  steps = jnp.asarray(steps)
  if not jnp.issubdtype(steps.dtype, jnp.inexact):
    return jnp.zeros(steps.shape, bool)
  return jnp.isnan(steps)


def cooldown_schedule(
    schedule: Callable[[Any], Any],
    start_step: jax.typing.ArrayLike,
    decay_steps: jax.typing.ArrayLike,
    *,
    shape: str = '1-sqrt',
    final_lr: jax.typing.ArrayLike = 0.0,
) -> optax.Schedule:
  r"""``schedule`` until ``start_step``, then a cooldown to ``final_lr``.

  With :math:`s` = ``start_step``, :math:`D` = ``decay_steps`` and
  :math:`f` = ``final_lr``:

  .. math::

    \text{lr}(t) = \begin{cases}
      \text{schedule}(t) & t < s \\
      f + (\text{schedule}(s) - f) \cdot \text{fall}((t - s) / D)
        & s \le t < s + D \\
      f & t \ge s + D
    \end{cases}

  with ``fall`` of shape ``"linear"`` (:math:`1 - x`), ``"cosine"``
  (:math:`(1 + \cos \pi x) / 2`) or ``"1-sqrt"`` (:math:`1 - \sqrt{x}`, the
  default, after Hägele et al. 2024). The cooldown starts from the rate the
  base schedule has at :math:`s`, whatever it is doing there (a CLR cycle
  half way up, a cosine part way down). For a constant ``schedule`` this is
  :func:`optax_clr.wsd_schedule` with ``total_steps = s + D``, and with
  ``shape="linear"`` big_vision's ``cooldown_steps`` (which multiplies the
  live schedule by :math:`\min(1, (s + D - t) / D)` instead: the two differ
  for a base that still moves during the cooldown).

  ``start_step`` and ``decay_steps`` may be traced: a ``jax.vmap`` sweep
  over where the cooldown starts, or a start decided at resume time and fed
  to a jitted step. They are integers or whole floats (traced floats are
  rounded, negative ones read as 0); positions are integer arithmetic,
  exact at ``2**31 - 1`` (``10**12`` with ``jax_enable_x64``), and
  :math:`s + D` is never formed, so it cannot overflow. ``final_lr`` may be
  traced too. Concrete arguments are checked here (a NaN ``start_step`` is a
  ValueError naming it); traced ones are not, and a traced NaN is carried
  into the output rather than read as some step: a NaN ``start_step`` or
  ``decay_steps`` makes every value NaN, a NaN ``final_lr`` every value
  from :math:`s` on.
  The output is float32 for a float32 (or bfloat16) ``schedule``, float64
  for a float64 one under x64.

  Args:
    schedule: the base schedule, any ``optax.Schedule`` (it is called with
      the count and with ``start_step``).
    start_step: the first step of the cooldown, a whole number ``>= 0``.
    decay_steps: the length of the cooldown, a whole number ``>= 0`` (0
      drops to ``final_lr`` at ``start_step``).
    shape: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.
    final_lr: the rate the cooldown ends on and holds, ``>= 0``.

  Returns:
    schedule
      A function that maps step counts to values.

  Raises:
    ValueError: a concrete step count is negative, fractional or not
      finite (NaN included), ``final_lr`` is negative or not finite, or
      ``shape`` is unknown.
    TypeError: ``schedule`` is not callable, or a numeric argument is not a
      number.

  Examples:
    >>> import optax, optax_clr
    >>> base = optax.cosine_decay_schedule(1.0, decay_steps=100)
    >>> schedule = optax_clr.cooldown_schedule(base, start_step=4,
    ...                                        decay_steps=4, shape='linear')
    >>> [round(float(schedule(k)), 3) for k in range(10)]
    [1.0, 1.0, 0.999, 0.998, 0.996, 0.747, 0.498, 0.249, 0.0, 0.0]

  References:
    Hägele et al., `Scaling Laws and Compute-Optimal Training beyond Fixed
    Training Durations <https://arxiv.org/abs/2405.18392>`_, 2024.

    Zhai et al., `Scaling Vision Transformers
    <https://arxiv.org/abs/2106.04560>`_, 2022 (a linear cooldown of a
    constant or rsqrt rate).
  """
  schedule = _checks.check_callable('schedule', schedule)
  _checks.check_step_count('start_step', start_step, minimum=0)
  _checks.check_step_count('decay_steps', decay_steps, minimum=0)
  _checks.check_choice('shape', shape, _wsd.SHAPES)
  _checks.check_number('final_lr', final_lr, lower=0.0)

  def cooled(count: jax.typing.ArrayLike) -> jax.Array:
    count = _numerics.as_count(count)
    start = _wsd.steps_like(start_step, count)
    decay = _wsd.steps_like(decay_steps, count)
    base = jnp.asarray(schedule(count))
    top = jnp.asarray(schedule(start))
    dtype = _numerics.output_dtype(base, top, final_lr)
    # Both are in [0, max]: the difference cannot overflow.
    elapsed = count - start
    one = jnp.ones((), decay.dtype)
    # Progress clipped to [0, 1] and never 0 / 0, so the branches that
    # jnp.where discards hold no NaN (nor NaN gradients).
    progress = jnp.clip(elapsed, 0, decay).astype(dtype) / jnp.maximum(
        decay, one
    ).astype(dtype)
    final = jnp.asarray(final_lr, dtype)
    falling = final + (top.astype(dtype) - final) * _wsd._fall(  # pylint: disable=protected-access
        shape, progress
    )
    value = jnp.where(elapsed >= decay, final, falling)
    value = jnp.where(elapsed < 0, base.astype(dtype), value)
    # steps_like casts a NaN step to an integer, a value XLA leaves to the
    # backend (0 on CPU): a traced NaN must show, not start a cooldown there.
    unknown = jnp.logical_or(_is_nan(start_step), _is_nan(decay_steps))
    return jnp.where(unknown, jnp.asarray(jnp.nan, dtype), value)

  return cooled
