"""Benchmark 5: the compiled range test vs a Python loop of jitted steps.

``optax_clr.range_test`` on the example MLP and digits, both ways it runs:
with the batches stacked (one jitted ``lax.scan``, no host round trip) and
with a list of batches (one jitted step per batch, the loop every other
LR finder runs). Then 8 seeds: one ``jax.vmap`` of the compiled sweep vs 8
sequential sweeps. Warm (compiled programs cached) and cold
(``jax.clear_caches()`` first, so tracing and compilation are included).
"""

import functools

import jax
import optax

import optax_clr
from benchmarks import _harness
from benchmarks import _models
from examples import train

TITLE = 'range test: compiled sweep vs Python loop; 8 seeds vmapped vs sequential'
# The example trainer's defaults.
MOMENTUM, BATCH_SIZE = train.Config.momentum, train.Config.batch_size
# Low enough that SGD does not blow up, so every variant runs every step
# (the loop stops at divergence, the compiled sweep masks the updates).
START_LR, END_LR = 1e-5, 1.0
OPTIMIZER = functools.partial(optax.sgd, momentum=MOMENTUM)


def make_range_test(loss, num_steps):
  """``sweep(params, batches)``: our range test with fixed settings."""

  def sweep(params, batches):
    return optax_clr.range_test(
        loss, params, OPTIMIZER, batches, start_lr=START_LR, end_lr=END_LR,
        num_steps=num_steps, divergence_threshold=None)

  return sweep


def cold(fn):
  """``fn`` preceded by ``jax.clear_caches()``: a first call's cost."""

  def call():
    jax.clear_caches()
    return fn()

  return call


def run(settings: _harness.Settings) -> dict:
  """Times the range-test variants; returns the record."""
  num_steps, num_seeds = (8, 2) if settings.quick else (100, 8)
  apply, params = _models.init('mlp', seed=0)
  loss = _models.loss_fn(apply)
  sweep = make_range_test(loss, num_steps)
  batches = _models.batches(BATCH_SIZE, num_steps)
  batch_list = _models.unstack(batches)
  seeds = [_models.init('mlp', seed=s)[1] for s in range(num_seeds)]
  stacked = _models.stack(seeds)
  vmapped = jax.jit(jax.vmap(sweep, in_axes=(0, None)))

  compiled = 'compiled (lax.scan)'
  loop = 'Python loop of jitted steps'
  v_seeds = f'{num_seeds} seeds vmapped'
  s_seeds = f'{num_seeds} seeds sequential'
  fns = {
      compiled: lambda: sweep(params, batches),
      loop: lambda: sweep(params, batch_list),
      v_seeds: lambda: vmapped(stacked, batches),
      s_seeds: lambda: [sweep(p, batches) for p in seeds],
  }
  warm = _harness.time_interleaved(fns, repeats=settings.repeats)
  a, b = fns[compiled](), fns[loop]()
  sequential = _models.stack(fns[s_seeds]())
  checks = {
      'compiled_vs_loop_losses_max_abs_diff': _models.max_abs_diff(
          a.losses, b.losses),
      'compiled_diverged_step': int(a.diverged_step),
      'loop_diverged_step': int(b.diverged_step),
      'seeds_vmapped_vs_sequential_losses_max_abs_diff': _models.max_abs_diff(
          fns[v_seeds]().losses, sequential.losses),
  }
  # The quick smoke run skips the seeds' cold calls (a compile each).
  cold_names = (compiled, loop) if settings.quick else tuple(fns)
  cold_times = _harness.time_interleaved(
      {name: cold(fns[name]) for name in cold_names},
      repeats=settings.compile_repeats, warmup=0)
  ratios = [
      _harness.ratio(warm, loop, compiled, metric='warm'),
      _harness.ratio(cold_times, loop, compiled, metric='cold'),
      _harness.ratio(warm, s_seeds, v_seeds, metric='warm'),
  ]
  if s_seeds in cold_times:
    ratios.append(_harness.ratio(cold_times, s_seeds, v_seeds, metric='cold'))
  return {
      'title': TITLE,
      'params': {'model': 'examples MLP', 'num_steps': num_steps,
                 'batch_size': BATCH_SIZE, 'num_seeds': num_seeds,
                 'start_lr': START_LR, 'end_lr': END_LR,
                 'repeats': settings.repeats},
      'timings': {'warm': warm, 'cold': cold_times},
      'ratios': ratios,
      'checks': checks,
      'notes': [
          f'{num_steps} steps of SGD (momentum {MOMENTUM}) from {START_LR:g}'
          f' to {END_LR:g}, batch {BATCH_SIZE}. Warm: the compiled programs'
          ' are cached. Cold: `jax.clear_caches()` before each call, so the'
          ' time includes tracing and compiling.',
      ],
  }
