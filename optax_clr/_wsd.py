r"""Warmup-stable-decay (WSD): warm up, hold the peak, then cool down.

WSD brings its own warmup. To put a warmup in front of any other schedule of
this library, join a ramp to it with ``optax.join_schedules``; the joined
schedule counts from 0 again at the boundary. A linear warmup of 4 steps in
front of a triangular CLR:

>>> import optax, optax_clr
>>> clr = optax_clr.triangular_schedule(0.1, 0.5, step_size=2)
>>> warm_clr = optax.join_schedules(
...     [optax.linear_schedule(0.0, 0.1, transition_steps=4), clr],
...     boundaries=[4])
>>> [round(float(warm_clr(k)), 3) for k in range(9)]
[0.0, 0.025, 0.05, 0.075, 0.1, 0.3, 0.5, 0.3, 0.1]
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_clr import _checks
from optax_clr import _numerics

SHAPES = ('linear', 'cosine', '1-sqrt')


def steps_like(value: Any, like: jax.Array) -> jax.Array:
  """A (possibly traced) step count that may be 0, in the dtype of ``like``.

  Whole floats (a sweep over ``jnp.array([0., 100.])``) are rounded; traced
  values are clipped into ``[0, max]`` of the dtype, so nothing wraps.
  """
  value = jnp.asarray(value)
  top = int(jnp.iinfo(like.dtype).max)
  if jnp.issubdtype(value.dtype, jnp.integer):
    if jnp.iinfo(value.dtype).max > top:
      value = jnp.minimum(value, jnp.asarray(top, value.dtype))
    return jnp.maximum(value.astype(like.dtype), 0)
  wide = jnp.promote_types(value.dtype, jnp.float32)
  bound = np.asarray(top, wide)
  if int(bound) > top:  # top rounds up in the float dtype: step below it.
    bound = np.nextafter(bound, np.asarray(0, wide))
  value = jnp.clip(jnp.round(value.astype(wide)), 0, bound)
  return value.astype(like.dtype)


def _rise(shape: str, progress: jax.Array) -> jax.Array:
  """0 at progress 0 rising to 1 at progress 1."""
  if shape == 'linear':
    return progress
  if shape == 'cosine':
    # (1 - cos(pi x)) / 2, without cancellation near 0.
    return jnp.square(jnp.sin(jnp.pi / 2 * progress))
  return 1.0 - jnp.sqrt(1.0 - progress)


def _fall(shape: str, progress: jax.Array) -> jax.Array:
  """1 at progress 0 falling to 0 at progress 1."""
  if shape == 'linear':
    return 1.0 - progress
  if shape == 'cosine':
    # (1 + cos(pi x)) / 2, without cancellation near 1.
    return jnp.square(jnp.cos(jnp.pi / 2 * progress))
  return 1.0 - jnp.sqrt(progress)


def _check_phases(total_steps: Any, decay_steps: Any, warmup_steps: Any):
  _checks.check_step_count('total_steps', total_steps, minimum=1)
  _checks.check_step_count('decay_steps', decay_steps, minimum=0)
  _checks.check_step_count('warmup_steps', warmup_steps, minimum=0)
  total = _checks.concrete(total_steps)
  decay = _checks.concrete(decay_steps)
  warmup = _checks.concrete(warmup_steps)
  if total is None or decay is None or warmup is None:
    return
  if (warmup.astype(float) + decay.astype(float) > total.astype(float)).any():
    raise ValueError(
        'warmup_steps + decay_steps must be <= total_steps (the stable phase'
        f' cannot be negative), got warmup_steps={warmup_steps!r},'
        f' decay_steps={decay_steps!r} and total_steps={total_steps!r}.'
    )


def wsd_schedule(
    peak_lr: jax.typing.ArrayLike,
    total_steps: jax.typing.ArrayLike,
    decay_steps: jax.typing.ArrayLike,
    *,
    warmup_steps: jax.typing.ArrayLike = 0,
    init_lr: jax.typing.ArrayLike = 0.0,
    final_lr: jax.typing.ArrayLike = 0.0,
    warmup_shape: str = 'linear',
    decay_shape: str = '1-sqrt',
) -> optax.Schedule:
  r"""Warmup-stable-decay: rise to ``peak_lr``, hold it, then cool down.

  With ``W = warmup_steps``, ``D = decay_steps``, ``T = total_steps`` and
  the stable phase ``S = T - W - D``:

  .. math::

    \text{lr}(t) = \begin{cases}
      \text{init} + (\text{peak} - \text{init}) \cdot
        \text{rise}(t / W) & t < W \\
      \text{peak} & W \le t < W + S \\
      \text{final} + (\text{peak} - \text{final}) \cdot
        \text{fall}((t - W - S) / D) & W + S \le t < T \\
      \text{final} & t \ge T
    \end{cases}

  with ``rise`` and ``fall`` of shape ``"linear"`` (:math:`x`, :math:`1 -
  x`), ``"cosine"`` (:math:`(1 \mp \cos \pi x) / 2`) or ``"1-sqrt"``
  (:math:`1 - \sqrt{1 - x}`, :math:`1 - \sqrt{x}`). The default cooldown is
  ``"1-sqrt"``, which Hägele et al. (2024) found to match or beat cosine
  with a cooldown of about 20% of training.

  Equal to transformers' ``get_wsd_schedule(num_warmup_steps=W,
  num_decay_steps=D, num_training_steps=T, warmup_type, decay_type,
  min_lr_ratio=r)`` times ``peak_lr`` when ``init_lr = final_lr = r *
  peak_lr`` (transformers' default ``decay_type`` is ``"cosine"``).

  The rates may be traced (``jax.grad``, a ``jax.vmap`` sweep), and so may
  the step counts (integers or whole floats; a sweep over ``decay_steps``).
  Concrete arguments are checked here; traced ones are not. Negative counts
  read as 0.

  Args:
    peak_lr: the rate held in the stable phase, ``>= 0``.
    total_steps: the length of the whole schedule, a whole number ``>= 1``.
    decay_steps: the length of the cooldown, whole, ``>= 0``.
    warmup_steps: the length of the warmup, whole, ``>= 0``, with
      ``warmup_steps + decay_steps <= total_steps``.
    init_lr: the rate at step 0, ``>= 0``.
    final_lr: the rate the cooldown ends on and holds, ``>= 0``.
    warmup_shape: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.
    decay_shape: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.

  Returns:
    schedule
      A function that maps step counts to values.

  Raises:
    ValueError: a concrete argument is out of range, the phases do not fit
      in ``total_steps``, or a shape is unknown.
    TypeError: a numeric argument is not a number.

  Examples:
    >>> import optax_clr
    >>> schedule = optax_clr.wsd_schedule(
    ...     1.0, total_steps=10, decay_steps=4, warmup_steps=2)
    >>> [round(float(schedule(k)), 3) for k in range(11)]
    [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.293, 0.134, 0.0]

  References:
    Hu et al., `MiniCPM: Unveiling the Potential of Small Language Models
    with Scalable Training Strategies <https://arxiv.org/abs/2404.06395>`_,
    2024.

    Hägele et al., `Scaling Laws and Compute-Optimal Training beyond Fixed
    Training Durations <https://arxiv.org/abs/2405.18392>`_, 2024.
  """
  _checks.check_number('peak_lr', peak_lr, lower=0.0)
  _checks.check_number('init_lr', init_lr, lower=0.0)
  _checks.check_number('final_lr', final_lr, lower=0.0)
  _check_phases(total_steps, decay_steps, warmup_steps)
  _checks.check_choice('warmup_shape', warmup_shape, SHAPES)
  _checks.check_choice('decay_shape', decay_shape, SHAPES)
  dtype = _numerics.output_dtype(peak_lr, init_lr, final_lr)

  def schedule(count: jax.typing.ArrayLike) -> jax.Array:
    count = jnp.maximum(_numerics.as_count(count), 0)
    total = steps_like(total_steps, count)
    decay = steps_like(decay_steps, count)
    warmup = steps_like(warmup_steps, count)
    cooldown = total - decay  # W + S: where the cooldown starts.
    one = jnp.ones((), warmup.dtype)
    # Progress clipped to [0, 1] and never 0 / 0, so the branches that
    # jnp.where discards hold no NaN (nor NaN gradients).
    warm_progress = jnp.minimum(count, warmup).astype(dtype) / jnp.maximum(
        warmup, one
    ).astype(dtype)
    cool_steps = jnp.minimum(
        jnp.where(count > cooldown, count - cooldown, 0), decay
    )
    cool_progress = cool_steps.astype(dtype) / jnp.maximum(decay, one).astype(
        dtype
    )
    low = jnp.asarray(init_lr, dtype)
    peak = jnp.asarray(peak_lr, dtype)
    final = jnp.asarray(final_lr, dtype)
    rising = low + (peak - low) * _rise(warmup_shape, warm_progress)
    falling = final + (peak - final) * _fall(decay_shape, cool_progress)
    value = jnp.where(count < cooldown, peak, falling)
    value = jnp.where(count >= total, final, value)
    return jnp.where(count < warmup, rising, value)

  return schedule
