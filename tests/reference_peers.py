"""Float64 transcriptions of the peers' restart, WSD and inverse-sqrt rules.

Nothing here imports optax_clr: PyTorch's ``CosineAnnealingWarmRestarts``
recurrence, Keras's ``CosineDecayRestarts`` algorithm, and transformers'
``get_wsd_schedule`` / ``get_inverse_sqrt_schedule`` lambdas, written from
their published sources one step at a time, plus exact integer references
for counts too large to step through.
"""

import math


def torch_warm_restarts(num_steps, base_lr, t_0, t_mult=1, eta_min=0.0):
  """PyTorch CosineAnnealingWarmRestarts, stepped once per update.

  Returns the rate each of the first ``num_steps`` updates uses: ``T_cur``
  advances by 1, and when it reaches ``T_i`` it restarts at 0 with ``T_i``
  multiplied by ``T_mult``.
  """
  rates, t_cur, t_i = [], 0, t_0
  for _ in range(num_steps):
    rates.append(
        eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2
    )
    t_cur += 1
    if t_cur >= t_i:
      t_cur -= t_i
      t_i *= t_mult
  return rates


def keras_cosine_decay_restarts(
    step, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0,
    alpha=0.0,
):
  """Keras CosineDecayRestarts at ``step`` (its float algorithm, float64)."""
  completed_fraction = step / first_decay_steps
  if t_mul == 1.0:
    i_restart = math.floor(completed_fraction)
    completed_fraction -= i_restart
  else:
    i_restart = math.floor(
        math.log(1.0 - completed_fraction * (1.0 - t_mul)) / math.log(t_mul)
    )
    sum_r = (1.0 - t_mul**i_restart) / (1.0 - t_mul)
    completed_fraction = (completed_fraction - sum_r) / t_mul**i_restart
  m_fac = m_mul**i_restart
  cosine_decayed = 0.5 * m_fac * (1.0 + math.cos(math.pi * completed_fraction))
  decayed = (1 - alpha) * cosine_decayed + alpha
  return initial_learning_rate * decayed


def exact_restart(count, first_period, period_mult):
  """(period index, position, period length) with Python integers."""
  index, start, length = 0, 0, first_period
  while start + length <= count:
    start += length
    length *= period_mult
    index += 1
  return index, count - start, length


def exact_restarts_lr(count, init_lr, first_period, period_mult=1,
                      peak_mult=1.0, min_lr=0.0):
  """The restarts formula at any ``count``, from :func:`exact_restart`."""
  if period_mult == 1:
    index, position = divmod(count, first_period)
    length = first_period
  else:
    index, position, length = exact_restart(count, first_period, period_mult)
  wave = (1 + math.cos(math.pi * position / length)) / 2
  return min_lr + (init_lr - min_lr) * peak_mult**index * wave


def hf_wsd_factor(step, num_warmup_steps, num_decay_steps,
                  num_training_steps, warmup_type='linear',
                  decay_type='cosine', min_lr_ratio=0.0, num_cycles=0.5):
  """transformers' ``_get_wsd_scheduler_lambda`` (the LambdaLR factor)."""
  num_stable_steps = num_training_steps - num_warmup_steps - num_decay_steps
  if step < num_warmup_steps:
    progress = float(step) / float(max(1, num_warmup_steps))
    if warmup_type == 'linear':
      factor = progress
    elif warmup_type == 'cosine':
      factor = 0.5 * (1.0 - math.cos(math.pi * progress))
    else:
      factor = 1.0 - math.sqrt(1.0 - progress)
    factor = factor * (1.0 - min_lr_ratio) + min_lr_ratio
    return max(0.0, factor)
  if step < num_warmup_steps + num_stable_steps:
    return 1.0
  if step < num_warmup_steps + num_stable_steps + num_decay_steps:
    progress = float(step - num_warmup_steps - num_stable_steps) / float(
        max(1, num_decay_steps)
    )
    if decay_type == 'linear':
      factor = 1.0 - progress
    elif decay_type == 'cosine':
      factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
    else:
      factor = 1.0 - math.sqrt(progress)
    factor = factor * (1.0 - min_lr_ratio) + min_lr_ratio
    return max(0.0, factor)
  return min_lr_ratio


def wsd_lr(step, peak, total, decay, warmup=0, init=0.0, final=0.0,
           warmup_shape='linear', decay_shape='1-sqrt'):
  """The WSD piecewise formula with separate start and end rates."""
  stable = total - warmup - decay
  rise = {
      'linear': lambda x: x,
      'cosine': lambda x: (1 - math.cos(math.pi * x)) / 2,
      '1-sqrt': lambda x: 1 - math.sqrt(1 - x),
  }[warmup_shape]
  fall = {
      'linear': lambda x: 1 - x,
      'cosine': lambda x: (1 + math.cos(math.pi * x)) / 2,
      '1-sqrt': lambda x: 1 - math.sqrt(x),
  }[decay_shape]
  step = max(step, 0)
  if step < warmup:
    return init + (peak - init) * rise(step / warmup)
  if step < warmup + stable:
    return peak
  if step < total:
    return final + (peak - final) * fall((step - warmup - stable) / decay)
  return final


def hf_inverse_sqrt_factor(step, num_warmup_steps, timescale=None):
  """transformers' ``get_inverse_sqrt_schedule`` factor (with its default)."""
  if timescale is None:
    timescale = num_warmup_steps or 10_000
  if step < num_warmup_steps:
    return float(step) / float(max(1, num_warmup_steps))
  shift = timescale - num_warmup_steps
  return 1.0 / math.sqrt((step + shift) / timescale)
