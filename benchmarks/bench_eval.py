"""Benchmark 2: the cost of evaluating a schedule, vmapped over 2^20 counts.

``optax.linear_schedule`` is the floor (one clip and one multiply-add). Each
of our schedules and optax's built-ins (``cosine_onecycle_schedule``,
``exponential_decay``, ``sgdr_schedule``) is timed against it, and the textbook
naive ``triangular2`` (a float cycle and ``2.0 ** (cycle - 1)``) against ours
(integer cycle arithmetic and an exponent written into the float's bits).
Targets: triangular <= 1.3x linear_schedule, every cyclic mode <= 2.5x.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_clr
from benchmarks import _harness

TITLE = 'evaluation cost: schedules vmapped over many counts'
BASE_LR, MAX_LR, STEP_SIZE, GAMMA = 1e-3, 1e-1, 2000, 0.99999
FLOOR = 'optax.linear_schedule'
CYCLIC = ('triangular', 'triangular2', 'exp_range', 'cyclic_momentum')


def naive_triangular2(base_lr, max_lr, step_size) -> optax.Schedule:
  """Smith's formula in float arithmetic with ``2.0 ** (cycle - 1)``."""

  def schedule(count):
    t = jnp.asarray(count, jnp.float32)
    cycle = jnp.floor(1 + t / (2 * step_size))
    x = jnp.abs(t / step_size - 2 * cycle + 1)
    scale = 1.0 / (2.0 ** (cycle - 1))
    return base_lr + (max_lr - base_lr) * jnp.maximum(0.0, 1 - x) * scale

  return schedule


def schedules(num_counts: int) -> dict[str, Callable[..., jax.Array]]:
  """Name -> schedule; the counts span ``num_counts`` steps."""
  cycles = 8
  period = max(num_counts // cycles, 2)
  sgdr = [
      dict(init_value=BASE_LR, peak_value=MAX_LR, warmup_steps=period // 10,
           decay_steps=period, end_value=BASE_LR)
  ] * cycles
  return {
      FLOOR: optax.linear_schedule(BASE_LR, MAX_LR, num_counts),
      'optax.cosine_onecycle_schedule': optax.cosine_onecycle_schedule(
          num_counts, MAX_LR),
      'optax.exponential_decay': optax.exponential_decay(MAX_LR, 1000, 0.9),
      'optax.sgdr_schedule (8 cycles)': optax.sgdr_schedule(sgdr),
      'triangular': optax_clr.triangular_schedule(BASE_LR, MAX_LR, STEP_SIZE),
      'triangular2': optax_clr.triangular2_schedule(
          BASE_LR, MAX_LR, STEP_SIZE),
      'exp_range': optax_clr.exp_range_schedule(
          BASE_LR, MAX_LR, STEP_SIZE, gamma=GAMMA),
      'cyclic_momentum': optax_clr.cyclic_momentum_schedule(
          0.85, 0.95, STEP_SIZE),
      'naive triangular2 (2.0 ** x)': naive_triangular2(
          BASE_LR, MAX_LR, STEP_SIZE),
      'one_cycle': optax_clr.one_cycle_schedule(MAX_LR, num_counts),
      'one_cycle_momentum': optax_clr.one_cycle_momentum_schedule(num_counts),
      'step_decay': optax_clr.step_decay_schedule(MAX_LR, 1000),
      'exponential_decay': optax_clr.exponential_decay_schedule(
          MAX_LR, 0.9, decay_steps=1000),
      'inverse_time_decay': optax_clr.inverse_time_decay_schedule(
          MAX_LR, 0.5, decay_steps=1000),
      'range_test_schedule': optax_clr.range_test_schedule(
          1e-7, 10.0, num_counts),
  }


def run(settings: _harness.Settings) -> dict:
  """Times every schedule; returns the benchmark's record."""
  num_counts = 2**12 if settings.quick else 2**20
  number = 3 if settings.quick else 50
  counts = jnp.arange(num_counts, dtype=jnp.int32)
  fns = {name: jax.vmap(s) for name, s in schedules(num_counts).items()}
  executables, compile_times = _harness.time_compiles(
      {name: (fn, (counts,)) for name, fn in fns.items()},
      repeats=settings.compile_repeats,
  )
  # Cheap calls, so three times the repeats to beat the machine's noise.
  repeats = settings.repeats if settings.quick else 3 * settings.repeats
  run_times = _harness.time_interleaved(
      {name: (lambda e=e: e(counts)) for name, e in executables.items()},
      repeats=repeats,
      number=number,
  )
  timings = {'run': run_times, 'compile': compile_times}
  ratios = []
  for name in fns:
    if name == FLOOR:
      continue
    target = None
    if name == 'triangular':
      target = ('<=', 1.3)
    elif name in CYCLIC:
      target = ('<=', 2.5)
    ratios.append(_harness.ratio(run_times, name, FLOOR, target=target))
  pairs = (
      ('naive triangular2 (2.0 ** x)', 'triangular2'),
      ('one_cycle', 'optax.cosine_onecycle_schedule'),
      ('exponential_decay', 'optax.exponential_decay'),
  )
  ratios += [_harness.ratio(run_times, a, b) for a, b in pairs]

  ours = np.asarray(executables['triangular2'](counts))
  naive = np.asarray(executables['naive triangular2 (2.0 ** x)'](counts))
  checks = {
      'triangular2_vs_naive_max_rel_diff': float(
          np.max(np.abs(ours - naive) / np.abs(naive))),
  }
  return {
      'title': TITLE,
      'params': {'num_counts': num_counts, 'calls_per_sample': number,
                 'step_size': STEP_SIZE, 'repeats': repeats},
      'timings': timings,
      'ratios': ratios,
      'checks': checks,
      'notes': [
          f'Each schedule is `jax.jit(jax.vmap(schedule))` on {num_counts}'
          ' int32 counts; the floor is `optax.linear_schedule`.',
      ],
  }
