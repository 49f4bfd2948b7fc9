r"""Warmup-stable-decay, repeated: cool down, then warm up again and go on.

Each cycle is a WSD schedule of its own: a (re)warmup, a stable phase and a
cooldown. Which cycle a count falls in is found in closed form: with one
length for every cycle, ``count // length`` (exact integers, as in
:func:`optax_clr.cosine_restarts_schedule`); with a list of lengths, one
vectorised comparison of the count with the table of cycle ends fixed when
the schedule is built. Either way the cost does not grow with the number of
cycles the count has passed (unlike ``optax.join_schedules``, one branch per
cycle), and no intermediate overflows.
"""

from collections.abc import Sequence
from typing import Any, cast

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
import optax

from optax_clr import _checks
from optax_clr import _numerics
from optax_clr import _restarts
from optax_clr import _wsd


def _is_sequence(value: Any) -> bool:
  if isinstance(value, (list, tuple)):
    return True
  array = _checks.concrete(value)
  return array is not None and array.ndim == 1


def _check_lengths(name: str, value: Any, *, minimum: int) -> list[int]:
  """A concrete non-empty sequence of whole numbers, as Python ints."""
  if isinstance(value, (list, tuple)):
    items = list(value)
  else:
    items = list(np.asarray(value))
  if not items:
    raise ValueError(f'{name} must hold at least one cycle, got {value!r}.')
  for i, item in enumerate(items):
    if isinstance(item, jax.core.Tracer):
      raise TypeError(
          f'{name} as a sequence must be concrete (it fixes the table of'
          f' cycles); got a traced entry at {name}[{i}]. Trace a single'
          ' length instead.'
      )
    _checks.check_step_count(f'{name}[{i}]', item, minimum=minimum)
  return [int(item) for item in items]


def _check_fit(cycle, length, ramp_name, ramp, decay, decay_name):
  if ramp + decay > length:
    raise ValueError(
        f'{ramp_name} + {decay_name} must be <= the length of cycle {cycle}'
        f' in cycle_steps (the stable phase cannot be negative), got'
        f' {ramp_name}={ramp}, {decay_name}={decay} and a cycle of {length}'
        ' steps.'
    )


def wsd_restarts_schedule(
    peak_lr: jax.typing.ArrayLike,
    cycle_steps: jax.typing.ArrayLike | Sequence[int],
    decay_steps: jax.typing.ArrayLike | Sequence[int],
    *,
    warmup_steps: jax.typing.ArrayLike = 0,
    rewarmup_steps: jax.typing.ArrayLike = 0,
    init_lr: jax.typing.ArrayLike = 0.0,
    final_lr: jax.typing.ArrayLike = 0.0,
    warmup_shape: str = 'linear',
    decay_shape: str = '1-sqrt',
) -> optax.Schedule:
  r"""Warmup-stable-decay cycles that warm up again from the decayed rate.

  Cycle :math:`i` lasts :math:`n_i` steps (``cycle_steps``) and ends with a
  cooldown of :math:`D_i` steps (``decay_steps``). It starts from
  :math:`a_0` = ``init_lr`` over :math:`U_0` = ``warmup_steps`` (the first
  cycle) or from :math:`a_i` = ``final_lr`` over :math:`U_i` =
  ``rewarmup_steps`` (every later one). At position :math:`p` in cycle
  :math:`i`:

  .. math::

    \text{lr} = \begin{cases}
      a_i + (\text{peak} - a_i) \cdot \text{rise}(p / U_i) & p < U_i \\
      \text{peak} & U_i \le p < n_i - D_i \\
      \text{final} + (\text{peak} - \text{final}) \cdot
        \text{fall}((p - n_i + D_i) / D_i) & p \ge n_i - D_i
    \end{cases}

  with ``rise`` and ``fall`` as in :func:`optax_clr.wsd_schedule`. The
  curve is continuous: a cycle's cooldown reaches ``final_lr`` at the first
  step of the next cycle, where the rewarmup starts from it; with
  ``rewarmup_steps=0`` the rate jumps back to the peak there (a warm
  restart). A single ``cycle_steps`` repeats forever; a sequence lists every
  cycle, and after the last one the rate holds ``final_lr``.

  This is levanter's cyclic WSD (``cycle_length`` as a list of lengths, or
  ``cycles`` as the steps where cycles end: their differences, with
  ``rewarmup`` in steps) and, with ``rewarmup_steps=0``, the WSD-S schedule
  of Wen et al. (2024): training goes on from each decayed checkpoint at the
  peak rate, so one run gives a cooled-down model at every cycle end.

  A single ``cycle_steps`` and ``decay_steps`` may be traced (a ``jax.vmap``
  sweep), and so may ``warmup_steps``, ``rewarmup_steps`` and the rates;
  sequences must be concrete (they fix the table of cycles). Positions are
  exact integers for every count the dtype holds (``2**31 - 1``; ``10**12``
  with ``jax_enable_x64``). Concrete arguments are checked here; traced
  ones are not. Negative counts read as 0.

  Args:
    peak_lr: the rate held in every stable phase, ``>= 0``.
    cycle_steps: the length of every cycle, a whole number ``>= 1``, or a
      sequence of per-cycle lengths.
    decay_steps: the cooldown of every cycle, a whole number ``>= 0``, or
      (with a sequence of ``cycle_steps``) a sequence of the same length.
    warmup_steps: the first cycle's warmup, whole, ``>= 0``.
    rewarmup_steps: every later cycle's warmup from ``final_lr``, whole,
      ``>= 0``.
    init_lr: the rate at step 0, ``>= 0``.
    final_lr: the rate every cooldown ends on, ``>= 0``.
    warmup_shape: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``, for the warmup
      and the rewarmups.
    decay_shape: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.

  Returns:
    schedule
      A function that maps step counts to values.

  Raises:
    ValueError: a concrete argument is out of range or not whole, a
      (re)warmup and cooldown do not fit in their cycle, the sequences'
      lengths differ or their total overflows the count dtype, or a shape
      is unknown.
    TypeError: a numeric argument is not a number, a sequence holds traced
      values, or ``decay_steps`` is a sequence while ``cycle_steps`` is not.

  Examples:
    >>> import optax_clr
    >>> schedule = optax_clr.wsd_restarts_schedule(
    ...     1.0, cycle_steps=[6, 5], decay_steps=[2, 2], warmup_steps=2,
    ...     rewarmup_steps=2, final_lr=0.1, decay_shape='linear')
    >>> [round(float(schedule(k)), 3) for k in range(13)]
    [0.0, 0.5, 1.0, 1.0, 1.0, 0.55, 0.1, 0.55, 1.0, 1.0, 0.55, 0.1, 0.1]

  References:
    Hu et al., `MiniCPM: Unveiling the Potential of Small Language Models
    with Scalable Training Strategies <https://arxiv.org/abs/2404.06395>`_,
    2024.

    Wen et al., `Understanding Warmup-Stable-Decay Learning Rates: A River
    Valley Loss Landscape Perspective <https://arxiv.org/abs/2410.05192>`_,
    2024 (WSD-S).
  """
  _checks.check_number('peak_lr', peak_lr, lower=0.0)
  _checks.check_number('init_lr', init_lr, lower=0.0)
  _checks.check_number('final_lr', final_lr, lower=0.0)
  _checks.check_step_count('warmup_steps', warmup_steps, minimum=0)
  _checks.check_step_count('rewarmup_steps', rewarmup_steps, minimum=0)
  _checks.check_choice('warmup_shape', warmup_shape, _wsd.SHAPES)
  _checks.check_choice('decay_shape', decay_shape, _wsd.SHAPES)
  listed = _is_sequence(cycle_steps)
  lengths = decays = None
  if listed:
    lengths = _check_lengths('cycle_steps', cycle_steps, minimum=1)
    if _is_sequence(decay_steps):
      decays = _check_lengths('decay_steps', decay_steps, minimum=0)
      if len(decays) != len(lengths):
        raise ValueError(
            'decay_steps must list one cooldown per cycle, got'
            f' {len(decays)} for {len(lengths)} cycles: decay_steps='
            f'{decay_steps!r}, cycle_steps={cycle_steps!r}.'
        )
    else:
      _checks.check_step_count('decay_steps', decay_steps, minimum=0)
      one = _checks.concrete(decay_steps)
      if one is None:
        raise TypeError(
            'decay_steps must be concrete with a sequence of cycle_steps, got'
            f' the traced value {decay_steps!r}.'
        )
      decays = [int(one)] * len(lengths)
    top = int(np.iinfo(_numerics.count_dtype()).max)
    if sum(lengths) > top:
      raise ValueError(
          f'cycle_steps adds up to {sum(lengths)} steps, more than {top}, the'
          f' largest count of {_numerics.count_dtype().name}.'
      )
  else:
    if _is_sequence(decay_steps):
      raise TypeError(
          'decay_steps may be a sequence only with a sequence of cycle_steps,'
          f' got decay_steps={decay_steps!r} and cycle_steps={cycle_steps!r}.'
      )
    _checks.check_step_count('cycle_steps', cycle_steps, minimum=1)
    _checks.check_step_count('decay_steps', decay_steps, minimum=0)
    length, decay = _checks.concrete(cycle_steps), _checks.concrete(decay_steps)
    if length is not None and decay is not None:
      lengths, decays = [int(length)] * 2, [int(decay)] * 2
  warmup = _checks.concrete(warmup_steps)
  rewarmup = _checks.concrete(rewarmup_steps)
  if lengths is not None and decays is not None:
    if warmup is not None:
      _check_fit(0, lengths[0], 'warmup_steps', int(warmup), decays[0],
                 'decay_steps')
    if rewarmup is not None:
      for i in range(1, len(lengths)):
        _check_fit(i, lengths[i], 'rewarmup_steps', int(rewarmup), decays[i],
                   'decay_steps')
    if not listed:
      lengths = decays = None
  dtype = _numerics.output_dtype(peak_lr, init_lr, final_lr)
  single = cast(jax.typing.ArrayLike, cycle_steps)  # read when not listed

  def schedule(count: jax.typing.ArrayLike) -> jax.Array:
    count = _numerics.as_count(count)
    if lengths is None or decays is None:
      index, position, _ = _restarts.restart_position(
          count, single, 1, dtype
      )
      length = _numerics.as_int(single, count)
      decay = jnp.minimum(_wsd.steps_like(decay_steps, count), length)
      past = jnp.zeros(count.shape, bool)
    else:
      ends = jnp.asarray(np.cumsum(lengths), count.dtype)
      index = jnp.sum(count[..., None] >= ends, axis=-1, dtype=count.dtype)
      begins = jnp.concatenate([jnp.zeros((1,), count.dtype), ends])
      position = count - jnp.take(begins, index)
      # One entry past the last cycle, read once the schedule is over.
      length = jnp.take(jnp.asarray(lengths + [1], count.dtype), index)
      decay = jnp.take(jnp.asarray(decays + [0], count.dtype), index)
      past = index >= len(lengths)
    first = index == 0
    ramp = jnp.where(
        first,
        _wsd.steps_like(warmup_steps, count),
        _wsd.steps_like(rewarmup_steps, count),
    )
    one = jnp.ones((), count.dtype)
    # Progress clipped to [0, 1] and never 0 / 0, so the branches that
    # jnp.where discards hold no NaN (nor NaN gradients).
    rise = jnp.minimum(position, ramp).astype(dtype) / jnp.maximum(
        ramp, one
    ).astype(dtype)
    cool_start = length - decay
    cool = jnp.clip(position - cool_start, 0, decay).astype(
        dtype
    ) / jnp.maximum(decay, one).astype(dtype)
    peak = jnp.asarray(peak_lr, dtype)
    final = jnp.asarray(final_lr, dtype)
    low = jnp.where(first, jnp.asarray(init_lr, dtype), final)
    rising = low + (peak - low) * _wsd._rise(warmup_shape, rise)  # pylint: disable=protected-access
    falling = final + (peak - final) * _wsd._fall(decay_shape, cool)  # pylint: disable=protected-access
    value = jnp.where(position < cool_start, peak, falling)
    value = jnp.where(position < ramp, rising, value)
    return jnp.where(past, final, value)

  return schedule
