"""Benchmark 7: the range test's first call against a plain jitted scan.

Each measurement is a fresh Python process, so nothing is cached in memory:
the time of the first call (tracing, compiling and the 100-step run) of
``optax_clr.range_test`` on the example MLP and digits, against a plain
``jax.jit`` of a ``lax.scan`` of the same training step (same ramp, same
optimizer, no range-test bookkeeping). A third variant repeats the range test
in a process that finds its program in JAX's persistent compilation cache
(``jax_compilation_cache_dir``), filled by an earlier process. The processes
alternate; medians and ratios are reported.
"""

import json
import os
import subprocess
import sys
import tempfile

from benchmarks import _harness

TITLE = "range test's first call vs a plain jitted lax.scan (fresh process each)"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS, BATCH_SIZE = 100, 32

# Times the first call in a fresh process; prints the seconds as JSON.
PROBE = '''
import functools, json, sys, time
import jax, optax
import optax_clr
from benchmarks import _models
variant, num_steps, batch_size, cache = sys.argv[1:5]
num_steps, batch_size = int(num_steps), int(batch_size)
if cache != '-':
  jax.config.update('jax_compilation_cache_dir', cache)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
apply, params = _models.init('mlp', seed=0)
loss = _models.loss_fn(apply)
batches = jax.block_until_ready(_models.batches(batch_size, num_steps))
optimizer = functools.partial(optax.sgd, momentum=0.9)
start = time.perf_counter()
if variant == 'plain':
  ramp = optax_clr.range_test_schedule(1e-5, 1.0, num_steps)

  @jax.jit
  def run(params, batches):
    tx = optimizer(ramp)

    def step(carry, batch):
      params, state = carry
      value, grads = jax.value_and_grad(loss)(params, batch)
      updates, state = tx.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), value

    return jax.lax.scan(step, (params, tx.init(params)), batches)

  jax.block_until_ready(run(params, batches))
else:
  jax.block_until_ready(optax_clr.range_test(
      loss, params, optimizer, batches, start_lr=1e-5, end_lr=1.0,
      num_steps=num_steps))
print(json.dumps(time.perf_counter() - start))
'''


def first_call_seconds(variant: str, num_steps: int, cache: str) -> float:
  """Runs :data:`PROBE` in a fresh process; the seconds of its first call."""
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get('JAX_PLATFORMS', 'cpu'))
  env['PYTHONPATH'] = os.pathsep.join(
      [REPO] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
  completed = subprocess.run(
      [sys.executable, '-c', PROBE, variant, str(num_steps), str(BATCH_SIZE),
       cache],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
      check=False,
  )
  if completed.returncode:
    raise RuntimeError(f'{variant} probe failed:\n{completed.stderr[-2000:]}')
  return float(json.loads(completed.stdout.strip().splitlines()[-1]))


def run(settings: _harness.Settings) -> dict:
  """Times the three variants in fresh processes; returns the record."""
  num_steps = 10 if settings.quick else NUM_STEPS
  repeats = settings.compile_repeats
  plain, ours, cached = 'plain jitted lax.scan', 'range_test', (
      'range_test, persistent cache warm')
  # The quick smoke run leaves out the cache (two processes fewer).
  names = (plain, ours) if settings.quick else (plain, ours, cached)
  samples = {name: [] for name in names}
  with tempfile.TemporaryDirectory() as cache:
    variants = {plain: ('plain', '-'), ours: ('range', '-'),
                cached: ('range', cache)}
    if cached in samples:
      first_call_seconds('range', num_steps, cache)  # Fills the cache.
    for i in range(repeats):
      order = names[i % len(names):] + names[:i % len(names)]
      for name in order:
        variant, where = variants[name]
        samples[name].append(first_call_seconds(variant, num_steps, where))
  timings = {name: _harness.stats(values) for name, values in samples.items()}
  return {
      'title': TITLE,
      'params': {'model': 'examples MLP', 'num_steps': num_steps,
                 'batch_size': BATCH_SIZE, 'repeats': repeats},
      'timings': {'first call': timings},
      'ratios': [
          _harness.ratio(timings, ours, plain, metric='first call',
                         target=('<=', 1.2)),
      ] + ([_harness.ratio(timings, cached, plain, metric='first call')]
           if cached in timings else []),
      'checks': {},
      'notes': [
          'Each sample is a new Python process: tracing, XLA compilation and'
          f' the {num_steps}-step run of the first call, data already on'
          ' device. The cached variant reads the compiled range test from a'
          ' jax_compilation_cache_dir written by an earlier process.',
      ],
  }
