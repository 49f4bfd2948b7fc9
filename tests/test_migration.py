"""Every row of docs/migration.md: the peer's values equal the mapping's.

PyTorch rows run torch where it is installed (skipped otherwise); the rows of
peers that are not installed here (Keras, transformers, fastai, DeepSpeed)
compare with float64 transcriptions of their published rules. Index
convention everywhere: ``schedule(t)`` is the rate of the ``(t+1)``-th update.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax import contrib
import pytest

import optax_clr
from tests import reference_peers as peers

LR = 0.1
N = 40


def ours(schedule, num_steps=N):
  """``schedule`` at steps ``0 .. num_steps - 1`` (vmapped: some optax
  schedules take only scalar counts)."""
  return np.asarray(jax.vmap(schedule)(jnp.arange(num_steps)), np.float64)


def close(actual, expected, rtol=2e-6, atol=1e-9):
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


# ---------------------------------------------------------------- PyTorch


def torch_rates(build, num_steps=N, metrics=None):
  """The rate each update uses, stepping the scheduler once per update."""
  torch = pytest.importorskip('torch')
  param = torch.nn.Parameter(torch.zeros(1))
  optimizer = torch.optim.SGD([param], lr=LR)
  scheduler = build(torch.optim.lr_scheduler, optimizer)
  rates = []
  for t in range(num_steps):
    rates.append(optimizer.param_groups[0]['lr'])
    optimizer.step()
    if metrics is None:
      scheduler.step()
    else:
      scheduler.step(metrics[t])
  return rates


class TestPyTorch:

  def test_lambda_lr(self):
    expected = torch_rates(lambda s, o: s.LambdaLR(o, lambda t: 0.97**t))
    close(ours(lambda t: LR * 0.97**t), expected)

  def test_multiplicative_lr(self):
    expected = torch_rates(lambda s, o: s.MultiplicativeLR(o, lambda t: 0.9))
    close(ours(optax_clr.exponential_decay_schedule(LR, 0.9)), expected,
          rtol=1e-5)

  def test_step_lr(self):
    expected = torch_rates(lambda s, o: s.StepLR(o, step_size=7, gamma=0.5))
    close(ours(optax_clr.step_decay_schedule(LR, drop_every=7, factor=0.5)),
          expected)

  def test_multi_step_lr(self):
    expected = torch_rates(
        lambda s, o: s.MultiStepLR(o, milestones=[5, 12, 30], gamma=0.3))
    schedule = optax.piecewise_constant_schedule(
        LR, {5: 0.3, 12: 0.3, 30: 0.3})
    close(ours(schedule), expected)

  def test_constant_lr(self):
    expected = torch_rates(
        lambda s, o: s.ConstantLR(o, factor=0.25, total_iters=6))
    schedule = optax.piecewise_constant_schedule(LR * 0.25, {6: 4.0})
    close(ours(schedule), expected)

  def test_linear_lr(self):
    expected = torch_rates(lambda s, o: s.LinearLR(
        o, start_factor=0.1, end_factor=0.8, total_iters=15))
    close(ours(optax.linear_schedule(LR * 0.1, LR * 0.8, 15)), expected)

  def test_exponential_lr(self):
    expected = torch_rates(lambda s, o: s.ExponentialLR(o, gamma=0.93))
    close(ours(optax_clr.exponential_decay_schedule(LR, 0.93)), expected,
          rtol=1e-5)

  def test_polynomial_lr(self):
    expected = torch_rates(
        lambda s, o: s.PolynomialLR(o, total_iters=25, power=2.0))
    close(ours(optax.polynomial_schedule(LR, 0.0, 2.0, 25)), expected,
          atol=1e-8)

  def test_cosine_annealing_lr_until_t_max(self):
    t_max = 30
    expected = torch_rates(
        lambda s, o: s.CosineAnnealingLR(o, T_max=t_max, eta_min=0.01))
    schedule = optax.cosine_decay_schedule(LR, t_max, alpha=0.01 / LR)
    close(ours(schedule)[:t_max + 1], expected[:t_max + 1], atol=1e-8)

  def test_chained_scheduler(self):
    expected = torch_rates(lambda s, o: s.ChainedScheduler([
        s.ConstantLR(o, factor=0.5, total_iters=4), s.ExponentialLR(o, 0.9)]))
    constant = optax.piecewise_constant_schedule(0.5, {4: 2.0})
    decay = optax_clr.exponential_decay_schedule(LR, 0.9)
    close(ours(lambda t: constant(t) * decay(t)), expected, rtol=1e-5)

  def test_sequential_lr(self):
    expected = torch_rates(lambda s, o: s.SequentialLR(o, [
        s.LinearLR(o, start_factor=0.1, total_iters=5),
        s.ExponentialLR(o, gamma=0.9)], milestones=[5]))
    schedule = optax.join_schedules(
        [optax.linear_schedule(LR * 0.1, LR, 5),
         optax_clr.exponential_decay_schedule(LR, 0.9)], [5])
    close(ours(schedule), expected, rtol=1e-5)

  def test_reduce_lr_on_plateau(self):
    losses = [1.0, 0.9, 0.8, 0.8, 0.81, 0.8, 0.79, 0.85, 0.9, 0.9, 0.95,
              0.7, 0.71, 0.72, 0.73, 0.74, 0.75, 0.76, 0.77, 0.78]
    expected = torch_rates(
        lambda s, o: s.ReduceLROnPlateau(o, factor=0.5, patience=2,
                                         threshold=1e-4),
        len(losses), metrics=losses)
    # optax reduces after ``patience`` bad evaluations, torch after more
    # than ``patience``: patience + 1 here. The scale multiplies updates.
    plateau = contrib.reduce_on_plateau(factor=0.5, patience=3, rtol=1e-4)
    state = plateau.init(jnp.zeros(1))
    seen = []
    for loss in losses:
      seen.append(LR * float(state.scale))
      _, state = plateau.update(jnp.ones(1), state, value=loss)
    close(seen, expected)

  def test_cyclic_lr(self):
    expected = torch_rates(lambda s, o: s.CyclicLR(
        o, base_lr=0.01, max_lr=LR, step_size_up=4, step_size_down=6,
        mode='triangular2', cycle_momentum=False))
    schedule = optax_clr.cyclic_schedule(0.01, LR, 4, step_size_down=6,
                                         mode='triangular2')
    close(ours(schedule), expected)

  def test_one_cycle_lr(self):
    expected = torch_rates(lambda s, o: s.OneCycleLR(
        o, max_lr=LR, total_steps=N, pct_start=0.3, cycle_momentum=False))
    close(ours(optax_clr.one_cycle_schedule(LR, N, pct_start=0.3)), expected,
          atol=1e-8)

  def test_cosine_annealing_warm_restarts(self):
    expected = torch_rates(lambda s, o: s.CosineAnnealingWarmRestarts(
        o, T_0=3, T_mult=2, eta_min=0.001))
    schedule = optax_clr.cosine_restarts_schedule(LR, 3, period_mult=2,
                                                  min_lr=0.001)
    close(ours(schedule), expected, atol=1e-8)


# ------------------------------------------------------------------ Keras


class TestKeras:

  @pytest.mark.parametrize('staircase', [False, True])
  def test_exponential_decay(self, staircase):
    steps = np.arange(N)
    exponent = steps / 6
    exponent = np.floor(exponent) if staircase else exponent
    schedule = optax_clr.exponential_decay_schedule(
        LR, 0.8, decay_steps=6, staircase=staircase)
    close(ours(schedule), LR * 0.8**exponent)

  def test_piecewise_constant_decay(self):
    boundaries, rates = [5, 17], [0.1, 0.05, 0.01]
    # Keras: rates[0] while step <= 5, rates[1] while step <= 17, then last.
    expected = [rates[0] if t <= 5 else rates[1] if t <= 17 else rates[2]
                for t in range(N)]
    schedule = optax.join_schedules(
        [optax.constant_schedule(r) for r in rates],
        [b + 1 for b in boundaries])
    close(ours(schedule), expected)

  def test_polynomial_decay(self):
    steps = np.minimum(np.arange(N), 25)
    expected = (LR - 0.001) * (1 - steps / 25) ** 0.5 + 0.001
    close(ours(optax.polynomial_schedule(LR, 0.001, 0.5, 25)), expected)

  @pytest.mark.parametrize('staircase', [False, True])
  def test_inverse_time_decay(self, staircase):
    periods = np.arange(N) / 4
    periods = np.floor(periods) if staircase else periods
    schedule = optax_clr.inverse_time_decay_schedule(
        LR, 0.5, decay_steps=4, staircase=staircase)
    close(ours(schedule), LR / (1 + 0.5 * periods))

  def test_cosine_decay(self):
    steps = np.minimum(np.arange(N), 30)
    decayed = (1 - 0.1) * 0.5 * (1 + np.cos(np.pi * steps / 30)) + 0.1
    close(ours(optax.cosine_decay_schedule(LR, 30, alpha=0.1)), LR * decayed,
          atol=1e-8)

  def test_cosine_decay_with_warmup(self):
    # Keras: initial -> warmup_target linearly over warmup_steps, then the
    # cosine over decay_steps from warmup_target down to alpha * target.
    warmup, decay, target, alpha = 8, 20, 0.2, 0.05
    expected = []
    for t in range(N):
      if t < warmup:
        expected.append(LR + (target - LR) * t / warmup)
      else:
        s = min(t - warmup, decay)
        expected.append(
            target * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * s / decay))
                      + alpha))
    schedule = optax.warmup_cosine_decay_schedule(
        LR, target, warmup, warmup + decay, end_value=alpha * target)
    close(ours(schedule), expected, atol=1e-8)

  def test_cosine_decay_restarts(self):
    expected = [peers.keras_cosine_decay_restarts(t, LR, 5, 2.0, 0.7, 0.1)
                for t in range(N)]
    schedule = optax_clr.cosine_restarts_schedule(
        LR, 5, period_mult=2, peak_mult=0.7, min_lr=0.1 * LR)
    close(ours(schedule), expected, atol=1e-8)


# ----------------------------------------------------------- transformers


def hf_warmup(t, warmup):
  return t / max(1, warmup)


class TestTransformers:

  def test_constant(self):
    close(ours(optax.constant_schedule(LR)), [LR] * N)

  def test_constant_with_warmup(self):
    expected = [LR * (hf_warmup(t, 7) if t < 7 else 1.0) for t in range(N)]
    close(ours(optax.linear_schedule(0.0, LR, 7)), expected)

  def test_linear_with_warmup(self):
    warmup, total = 6, 30
    expected = [LR * (hf_warmup(t, warmup) if t < warmup else
                      max(0.0, (total - t) / max(1, total - warmup)))
                for t in range(N)]
    schedule = optax_clr.wsd_schedule(LR, total, total - warmup,
                                      warmup_steps=warmup,
                                      decay_shape='linear')
    close(ours(schedule), expected, atol=1e-9)

  def test_cosine_with_warmup_until_the_end(self):
    warmup, total = 6, 30
    expected = [LR * (hf_warmup(t, warmup) if t < warmup else
                      max(0.0, 0.5 * (1 + math.cos(
                          math.pi * (t - warmup) / (total - warmup)))))
                for t in range(total + 1)]
    schedule = optax.warmup_cosine_decay_schedule(0.0, LR, warmup, total)
    close(ours(schedule, total + 1), expected, atol=1e-8)

  def test_cosine_with_min_lr(self):
    warmup, total, ratio = 5, 30, 0.1
    expected = []
    for t in range(total + 1):
      if t < warmup:
        expected.append(LR * hf_warmup(t, warmup))
      else:
        p = (t - warmup) / (total - warmup)
        expected.append(
            LR * (0.5 * (1 + math.cos(math.pi * p)) * (1 - ratio) + ratio))
    schedule = optax_clr.wsd_schedule(LR, total, total - warmup,
                                      warmup_steps=warmup,
                                      final_lr=ratio * LR,
                                      decay_shape='cosine')
    close(ours(schedule, total + 1), expected, atol=1e-8)

  def test_cosine_with_hard_restarts(self):
    warmup, total, cycles = 4, 34, 3
    expected = []
    for t in range(N):
      if t < warmup:
        expected.append(LR * hf_warmup(t, warmup))
        continue
      p = (t - warmup) / (total - warmup)
      expected.append(0.0 if p >= 1 else LR * max(
          0.0, 0.5 * (1 + math.cos(math.pi * ((cycles * p) % 1.0)))))
    schedule = optax.join_schedules([
        optax.linear_schedule(0.0, LR, warmup),
        optax_clr.cosine_restarts_schedule(LR, (total - warmup) // cycles),
        optax.constant_schedule(0.0),
    ], [warmup, total])
    close(ours(schedule), expected, atol=1e-8)

  def test_polynomial_decay_with_warmup(self):
    warmup, total, end, power = 5, 30, 1e-4, 2.0
    expected = []
    for t in range(N):
      if t < warmup:
        expected.append(LR * hf_warmup(t, warmup))
      elif t > total:
        expected.append(end)
      else:
        remaining = 1 - (t - warmup) / (total - warmup)
        expected.append((LR - end) * remaining**power + end)
    schedule = optax.join_schedules([
        optax.linear_schedule(0.0, LR, warmup),
        optax.polynomial_schedule(LR, end, power, total - warmup),
    ], [warmup])
    close(ours(schedule), expected, atol=1e-9)

  def test_inverse_sqrt(self):
    expected = [LR * peers.hf_inverse_sqrt_factor(t, 8) for t in range(N)]
    close(ours(optax_clr.inverse_sqrt_schedule(LR, 8)), expected)

  def test_wsd(self):
    expected = [LR * peers.hf_wsd_factor(t, 5, 10, 30, 'linear', 'cosine',
                                         0.1) for t in range(N)]
    schedule = optax_clr.wsd_schedule(
        LR, 30, 10, warmup_steps=5, init_lr=0.1 * LR, final_lr=0.1 * LR,
        decay_shape='cosine')
    close(ours(schedule), expected, atol=1e-9)


# ----------------------------------------------------------------- fastai


def fastai_cos(start, end, pos):
  """fastai's SchedCos."""
  return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def fastai_combined(pcts, phases, pos):
  """fastai's combine_scheds over ``pcts`` (fractions summing to 1)."""
  edges = np.concatenate([[0.0], np.cumsum(pcts)])
  index = int(np.nonzero(pos >= edges[:-1])[0].max())
  actual = (pos - edges[index]) / (edges[index + 1] - edges[index])
  return fastai_cos(*phases[index], actual)


class TestFastai:

  def test_fit_one_cycle(self):
    total, lr_max, div, div_final, pct = N, LR, 25.0, 1e5, 0.25
    expected = [
        fastai_combined([pct, 1 - pct], [(lr_max / div, lr_max),
                                         (lr_max, lr_max / div_final)],
                        t / total)
        for t in range(total)
    ]
    schedule = optax.cosine_onecycle_schedule(
        total, lr_max, pct_start=pct, div_factor=div,
        final_div_factor=div_final / div)
    # optax's float32 cosine cancels near the end: 4e-6 relative there.
    close(ours(schedule, total), expected, rtol=1e-5, atol=1e-9)

  def test_fit_flat_cos(self):
    total, pct, div_final = N, 0.75, 1e5
    expected = [fastai_combined([pct, 1 - pct], [(LR, LR),
                                                 (LR, LR / div_final)],
                                t / total)
                for t in range(total)]
    flat = round(pct * total)
    schedule = optax_clr.wsd_schedule(LR, total, total - flat,
                                      final_lr=LR / div_final,
                                      decay_shape='cosine')
    close(ours(schedule, total), expected, atol=1e-9)

  def test_fit_sgdr(self):
    n_cycles, cycle_len, cycle_mult, batches = 3, 1, 2, 5
    n_epoch = cycle_len * (cycle_mult**n_cycles - 1) // (cycle_mult - 1)
    total = n_epoch * batches
    pcts = [cycle_len * cycle_mult**i / n_epoch for i in range(n_cycles)]
    expected = [fastai_combined(pcts, [(LR, 0.0)] * n_cycles, t / total)
                for t in range(total)]
    schedule = optax_clr.cosine_restarts_schedule(
        LR, cycle_len * batches, period_mult=cycle_mult)
    close(ours(schedule, total), expected, atol=1e-9)


# -------------------------------------------------------------- DeepSpeed


def deepspeed_gamma(t, warmup, warmup_type, total=None):
  """DeepSpeed WarmupLR / WarmupDecayLR ``_get_gamma`` at iteration ``t``."""
  warmup = max(2, warmup)
  if t < warmup:
    if warmup_type == 'log':
      return math.log(t + 1) / math.log(warmup)
    return t / warmup
  if total is None:
    return 1.0
  return max(0.0, (total - t) / max(1.0, total - warmup))


def log_warmup(min_lr, max_lr, warmup):
  """DeepSpeed's log warmup, which optax lacks, as a jnp schedule."""
  warmup = max(2, warmup)

  def schedule(count):
    gamma = jnp.log1p(jnp.minimum(count, warmup - 1)) / math.log(warmup)
    return min_lr + (max_lr - min_lr) * gamma

  return schedule


class TestDeepSpeed:

  def test_warmup_lr_linear(self):
    expected = [0.01 + (LR - 0.01) * deepspeed_gamma(t, 10, 'linear')
                for t in range(N)]
    close(ours(optax.linear_schedule(0.01, LR, 10)), expected)

  def test_warmup_lr_log(self):
    expected = [0.01 + (LR - 0.01) * deepspeed_gamma(t, 10, 'log')
                for t in range(N)]
    close(ours(log_warmup(0.01, LR, 10)), expected)

  def test_warmup_decay_lr_linear(self):
    warmup, total = 8, 30
    expected = [0.01 + (LR - 0.01) * deepspeed_gamma(t, warmup, 'linear',
                                                     total)
                for t in range(N)]
    schedule = optax_clr.wsd_schedule(
        LR, total, total - warmup, warmup_steps=warmup, init_lr=0.01,
        final_lr=0.01, decay_shape='linear')
    close(ours(schedule), expected)

  def test_one_cycle(self):
    low, high, first, second, rate, decay_every = 0.01, LR, 4, 6, 0.5, 3
    total = first + second
    expected = []
    for t in range(N):
      if t < total:  # DeepSpeed reads the triangle one step ahead.
        _, fraction = peers_triangle(t + 1, first, second)
        expected.append(low + (high - low) * fraction)
      else:
        expected.append(low / (1 + rate * (t - total + 1) / decay_every))
    joined = optax.join_schedules([
        optax_clr.triangular_schedule(low, high, first, step_size_down=second),
        optax_clr.inverse_time_decay_schedule(low, rate,
                                              decay_steps=decay_every),
    ], [total])
    close(ours(lambda t: joined(t + 1)), expected)


def peers_triangle(t, up, down):
  """DeepSpeed OneCycle's ``_get_scale_factor`` (PyTorch's float triangle)."""
  total = float(up + down)
  cycle = math.floor(1 + t / total)
  x = 1.0 + t / total - cycle
  ratio = up / total
  return cycle, (x / ratio if x <= ratio else (x - 1) / (ratio - 1))


# ------------------------------- cooldowns, cycles and the current rate


class TestCooldownsAndCycles:

  def test_big_vision_constant_cooldown(self):
    total, cooldown = N, 15
    expected = [LR * min(1.0, (total - t) / cooldown) for t in range(N)]
    schedule = optax_clr.cooldown_schedule(
        optax.constant_schedule(LR), total - cooldown, cooldown,
        shape='linear')
    close(ours(schedule), expected)

  def test_big_vision_cooldown_of_a_moving_base(self):
    total, cooldown, timescale = N, 15, 10
    rsqrt = lambda t: LR / math.sqrt((t + timescale) / timescale)
    expected = [rsqrt(t) * min(1.0, (total - t) / cooldown) for t in range(N)]
    base = lambda t: LR / jnp.sqrt((t + timescale) / timescale)
    close(ours(lambda t: base(t) * jnp.minimum(1.0, (total - t) / cooldown)),
          expected)

  def test_transformers_wsd_without_warmup_is_a_cooldown(self):
    stable, decay = 22, 12
    expected = [LR * peers.hf_wsd_factor(t, 0, decay, stable + decay,
                                         min_lr_ratio=0.1) for t in range(N)]
    schedule = optax_clr.cooldown_schedule(
        optax.constant_schedule(LR), stable, decay, shape='cosine',
        final_lr=0.1 * LR)
    close(ours(schedule), expected)

  def test_levanter_cycle_ends_map_to_lengths(self):
    ends, total = [12, 25], N
    lengths = np.diff([0] + ends + [total]).tolist()
    schedule = optax_clr.wsd_restarts_schedule(
        LR, lengths, 4, warmup_steps=3, rewarmup_steps=2, final_lr=0.1 * LR)
    values = ours(schedule, total + 1)
    # Each listed end is a minimum of the curve: the decayed rate, from
    # which the next cycle rewarms.
    for end in ends + [total]:
      close(values[end], 0.1 * LR)
      assert values[end - 1] > values[end]
    close(values[[3, 14, 27]], LR)  # peaks after each (re)warmup

  def test_torch_get_last_lr_is_the_next_updates_rate(self):
    torch = pytest.importorskip('torch')
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=LR)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  lambda t: 0.9**t)
    schedule = lambda t: LR * 0.9**t
    tx = optax.sgd(schedule)
    params = jnp.zeros(1)
    state = tx.init(params)
    for k in range(1, 8):
      optimizer.step()
      scheduler.step()
      _, state = tx.update(jnp.ones(1), state, params)
      close(scheduler.get_last_lr()[0], schedule(k), rtol=1e-6)
      close(optax_clr.current_learning_rate(state, schedule),
            LR * 0.9**(k - 1), rtol=1e-6)
