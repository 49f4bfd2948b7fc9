"""Independent float64 references, written from the papers and from PyTorch.

Nothing here imports optax_clr: these are the formulas the schedules must
reproduce, in plain Python/NumPy, one step at a time.
"""

import math

import numpy as np


def smith_clr(t, base_lr, max_lr, step_size, mode='triangular', gamma=1.0):
  """Smith's CLR formula (symmetric cycles) for one integer step ``t``."""
  cycle = np.floor(1 + t / (2 * step_size))
  x = np.abs(t / step_size - 2 * cycle + 1)
  if mode == 'triangular':
    scale = 1.0
  elif mode == 'triangular2':
    scale = 1 / (2 ** (cycle - 1))
  else:
    scale = gamma**t
  return base_lr + (max_lr - base_lr) * np.maximum(0, (1 - x)) * scale


def torch_cyclic_fraction(t, step_size_up, step_size_down=None):
  """PyTorch CyclicLR's (cycle, scale_factor) at ``last_epoch = t``."""
  step_size_down = step_size_up if step_size_down is None else step_size_down
  total = float(step_size_up + step_size_down)
  ratio = step_size_up / total
  cycle = math.floor(1 + t / total)
  x = 1.0 + t / total - cycle
  if x <= ratio:
    fraction = x / ratio
  else:
    fraction = (x - 1) / (ratio - 1)
  return cycle, fraction


def torch_cyclic_lr(
    t,
    base_lr,
    max_lr,
    step_size_up,
    step_size_down=None,
    mode='triangular',
    gamma=1.0,
    scale_fn=None,
    scale_mode='cycle',
):
  """PyTorch CyclicLR's learning rate at ``last_epoch = t``."""
  cycle, fraction = torch_cyclic_fraction(t, step_size_up, step_size_down)
  if scale_fn is None:
    if mode == 'triangular':
      scale_fn, scale_mode = (lambda x: 1.0), 'cycle'
    elif mode == 'triangular2':
      scale_fn, scale_mode = (lambda x: 1 / (2.0 ** (x - 1))), 'cycle'
    else:
      scale_fn, scale_mode = (lambda x: gamma**x), 'iterations'
  argument = cycle if scale_mode == 'cycle' else t
  return base_lr + (max_lr - base_lr) * fraction * scale_fn(argument)


def exact_triangle(t, step_size_up, step_size_down=None):
  """(cycle, position fraction) with Python integers: exact for any ``t``."""
  step_size_down = step_size_up if step_size_down is None else step_size_down
  total = step_size_up + step_size_down
  cycle, position = divmod(int(t), total)
  if position <= step_size_up:
    return cycle + 1, position / step_size_up
  return cycle + 1, (total - position) / step_size_down


def torch_one_cycle(
    t,
    total_steps,
    start_values,
    pct_start=0.3,
    anneal_strategy='cos',
    three_phase=False,
):
  """PyTorch OneCycleLR's value at step ``t`` for a table of phase corners.

  ``start_values`` is (initial, peak, minimum) for the learning rate, or
  (max_momentum, base_momentum, max_momentum_again) read as PyTorch's
  momentum columns. Mirrors ``OneCycleLR.get_lr`` including its float
  ``end_step`` boundaries; no clamping (the caller passes t <= T - 1).
  """
  first, second, third = start_values
  warmup = float(pct_start * total_steps)
  if three_phase:
    phases = [
        (warmup - 1, first, second),
        (2 * warmup - 2, second, first),
        (total_steps - 1, first, third),
    ]
  else:
    phases = [(warmup - 1, first, second), (total_steps - 1, second, third)]
  start_step = 0
  for i, (end_step, start, end) in enumerate(phases):
    if t <= end_step or i == len(phases) - 1:
      pct = (t - start_step) / (end_step - start_step)
      if anneal_strategy == 'cos':
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
      return (end - start) * pct + start
    start_step = end_step
  raise AssertionError('unreachable')


# ------------------------------------------ cooldowns and re-warming cycles

_FALL = {
    'linear': lambda x: 1 - x,
    'cosine': lambda x: (1 + math.cos(math.pi * x)) / 2,
    '1-sqrt': lambda x: 1 - math.sqrt(x),
}
_RISE = {
    'linear': lambda x: x,
    'cosine': lambda x: (1 - math.cos(math.pi * x)) / 2,
    '1-sqrt': lambda x: 1 - math.sqrt(1 - x),
}


def cooldown_lr(t, base, start, decay, shape='1-sqrt', final=0.0):
  """``base(t)`` before ``start``, then ``base(start)`` falling to ``final``."""
  t = max(int(t), 0)
  if t < start:
    return base(t)
  if t - start >= decay:
    return final
  return final + (base(start) - final) * _FALL[shape]((t - start) / decay)


def wsd_cycles_lr(t, peak, lengths, decays, warmup=0, rewarmup=0, init=0.0,
                  final=0.0, warmup_shape='linear', decay_shape='1-sqrt',
                  repeat=False):
  """Warmup-stable-decay cycles, walked one cycle at a time (Python ints).

  Cycle ``i`` lasts ``lengths[i]`` steps: it rises from ``init`` over
  ``warmup`` steps (cycle 0) or from ``final`` over ``rewarmup`` steps
  (later cycles), holds ``peak``, and falls to ``final`` over its last
  ``decays[i]`` steps. ``repeat`` repeats the single listed cycle forever;
  otherwise the rate holds ``final`` after the last cycle.
  """
  t = max(int(t), 0)
  index = 0
  if repeat:
    index, t = divmod(t, lengths[0])
    length, decay = lengths[0], decays[0]
  else:
    while index < len(lengths) and t >= lengths[index]:
      t -= lengths[index]
      index += 1
    if index == len(lengths):
      return final
    length, decay = lengths[index], decays[index]
  ramp, low = (warmup, init) if index == 0 else (rewarmup, final)
  if t < ramp:
    return low + (peak - low) * _RISE[warmup_shape](t / ramp)
  if t < length - decay:
    return peak
  return final + (peak - final) * _FALL[decay_shape](
      (t - (length - decay)) / decay)
