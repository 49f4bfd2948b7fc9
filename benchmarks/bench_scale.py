"""Benchmark 9: sweeps that scale: memory with chunks, progress bars, processes.

Three measurements of ``optax_clr.sweep`` and ``optax_clr.range_test``:

* Memory: the peak resident set of a sweep of K = 4, 16, 64 models of a
  wide MLP (batch 1024, two hidden layers of 512, SGD with momentum), each
  configuration in a fresh Python process, with ``chunk_size`` unset (all
  K side by side) and with ``chunk_size=4`` (at most 4 models' activations
  and gradients at once, in one compiled program). Each process reports its
  own ``ru_maxrss`` (``resource.getrusage(RUSAGE_SELF)``), and its resident
  set before the sweep (imports, data and parameters on device), so the
  sweep's own share is their difference. The losses of the chunked and
  unchunked sweeps are compared.
* Progress: ``sweep`` (K = 8 of the example MLP on digits) and
  ``range_test`` (the same MLP) with ``progress=True`` against
  ``progress=False``, warm, interleaved, at 1200 and 4800 steps. Target:
  <= 1.02x per step, from the difference between the two lengths (the
  bar is fed by a host callback every ``total / 50`` steps, never a
  per-step sync); the whole calls' ratio, fixed costs included, is shown.
* Processes: the wall time of the same K = 8 sweep as 1 process x 1
  device, 1 process x 2 devices (``--xla_force_host_platform_device_count``)
  and 2 processes x 1 device (``jax.distributed`` with gloo collectives on
  127.0.0.1, a free port, retried when taken). Each launch times its first
  call (tracing, compiling, one run) and warm calls apart, and the whole
  launch (Python start to exit) is timed by the parent. No target: on a
  2-core machine there is at most one core per device.
"""

import functools
import io
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import jax
import numpy as np
import optax

import optax_clr
import optax_clr.nnx
from benchmarks import _harness
from benchmarks import _models
from benchmarks import bench_loop
from examples import model as model_lib

TITLE = ('sweeps that scale: peak memory with chunk_size, progress bars,'
         ' 1 or 2 devices and processes')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT_TAKEN = ('Failed to add port', 'Failed to start RPC server')
ATTEMPTS = 4
TIMEOUT_S = 600

# One configuration of the memory table, run as ``python -c MEMORY_SCRIPT
# K CHUNK NUM_STEPS``; prints one JSON line.
MEMORY_SCRIPT = textwrap.dedent('''
    import json, resource, sys
    import jax, jax.numpy as jnp, numpy as np, optax
    import optax_clr
    k, chunk, num_steps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    chunk = None if chunk == 'none' else int(chunk)
    batch, width, dim, classes = {batch}, {width}, 64, 10

    def rss():
      with open('/proc/self/status') as f:
        line = next(l for l in f if l.startswith('VmRSS:'))
      return int(line.split()[1]) * 1024

    def apply(p, x):
      h = jax.nn.relu(x @ p['w1'] + p['b1'])
      h = jax.nn.relu(h @ p['w2'] + p['b2'])
      return h @ p['w3'] + p['b3']

    def loss(p, batch):
      x, y = batch
      return optax.softmax_cross_entropy_with_integer_labels(
          apply(p, x), y).mean()

    rng = np.random.default_rng(0)
    shapes = dict(w1=(dim, width), b1=(width,), w2=(width, width),
                  b2=(width,), w3=(width, classes), b3=(classes,))
    params = {{n: jnp.asarray(rng.normal(0, 0.05, s), jnp.float32)
              for n, s in shapes.items()}}
    batches = (jnp.asarray(rng.normal(size=(num_steps, batch, dim)),
                           jnp.float32),
               jnp.asarray(rng.integers(0, classes, (num_steps, batch))))
    hp = {{'max_lr': np.geomspace(0.01, 0.3, k).astype(np.float32)}}
    optimizer = lambda hp: optax.sgd(optax_clr.triangular_schedule(
        1e-3, hp['max_lr'], 20), momentum=0.9)
    jax.block_until_ready((params, batches))
    before = rss()
    result = optax_clr.sweep(loss, params, optimizer, hp, batches,
                             chunk_size=chunk)
    losses = np.asarray(result.losses)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({{'before': before, 'peak': peak,
                      'losses': losses.tolist()}}))
''')

# One process of the processes measurement, run as ``python -c
# PROCESS_SCRIPT COORDINATOR NUM_PROCESSES PROCESS_ID NUM_STEPS WARM``;
# process 0 prints one JSON line.
PROCESS_SCRIPT = textwrap.dedent('''
    import json, sys, time
    sys.path.insert(0, {root!r})
    coordinator, num_processes, process_id = sys.argv[1:4]
    num_steps, warm = int(sys.argv[4]), int(sys.argv[5])
    import jax
    if int(num_processes) > 1:
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
      jax.distributed.initialize(coordinator, int(num_processes),
                                 int(process_id))
    import numpy as np
    import optax_clr.nnx
    from benchmarks import bench_scale
    model, batches, hp = bench_scale.process_sweep(num_steps)
    sweep = lambda: optax_clr.nnx.sweep(
        model, bench_scale.bench_loop.optimizer, bench_scale.bench_loop.loss,
        hp, batches)
    start = time.perf_counter()
    result = jax.block_until_ready(sweep())
    first = time.perf_counter() - start
    samples = []
    for _ in range(warm):
      start = time.perf_counter()
      jax.block_until_ready(sweep())
      samples.append(time.perf_counter() - start)
    if jax.process_index() == 0:
      print(json.dumps({{'first': first, 'warm': samples,
                        'devices': jax.device_count(),
                        'processes': jax.process_count(),
                        'losses': np.asarray(result.losses).tolist()}}))
''')

PROCESS_CONFIGS = {  # label -> (processes, devices per process)
    '1 process x 1 device': (1, 1),
    '1 process x 2 devices': (1, 2),
    '2 processes x 1 device': (2, 1),
}
PROCESS_K = 8
# The long run of the progress measurement, in multiples of the short one.
LONGER = 4


def process_sweep(num_steps: int):
  """The K = 8 sweep of the processes measurement: model, batches, hp."""
  model = model_lib.make_model('mlp', _models.digits(), seed=0)
  batches = jax.tree.map(np.asarray, _models.batches(
      bench_loop.BATCH_SIZE, num_steps))
  return model, batches, {'max_lr': bench_loop.max_lrs(PROCESS_K)}


def _env(devices: int) -> dict[str, str]:
  flags = os.environ.get('XLA_FLAGS', '')
  flags = ' '.join(f for f in flags.split()
                   if 'xla_force_host_platform_device_count' not in f)
  return {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': ROOT,
          'XLA_FLAGS': f'{flags} --xla_force_host_platform_device_count='
                       f'{devices}'.strip()}


def _json_line(text: str) -> dict:
  return json.loads(text.strip().splitlines()[-1])


def memory_table(settings: _harness.Settings):
  """Peak RSS per (K, chunk_size), each in a fresh process.

  All K models side by side (``chunk_size=K``) against ``chunk``: on CPU an
  unset ``chunk_size`` already runs the models one at a time.
  """
  if settings.quick:
    ks, chunk, num_steps, batch, width = (4,), 2, 3, 64, 64
  else:
    ks, chunk, num_steps, batch, width = (4, 16, 64), 4, 4, 1024, 512
  script = MEMORY_SCRIPT.format(batch=batch, width=width)
  rows, checks, results = [], {}, {}
  for k in ks:
    for size in (None, chunk):
      completed = subprocess.run(
          [sys.executable, '-c', script, str(k),
           str(k if size is None else size), str(num_steps)],
          cwd=ROOT, env=_env(1), capture_output=True, text=True,
          timeout=TIMEOUT_S, check=False)
      if completed.returncode:
        raise RuntimeError(completed.stderr[-3000:])
      results[k, size] = _json_line(completed.stdout)
    unchunked, chunked = results[k, None], results[k, chunk]
    diff = float(np.max(np.abs(np.asarray(unchunked['losses'])
                               - np.asarray(chunked['losses']))))
    checks[f'K={k} chunk_size={chunk}_vs_all_losses_max_abs_diff'] = diff
    mib = lambda b: round(b / 2**20, 1)
    rows.append([
        k,
        mib(unchunked['peak']), mib(unchunked['peak'] - unchunked['before']),
        mib(chunked['peak']), mib(chunked['peak'] - chunked['before']),
        round(unchunked['peak'] / chunked['peak'], 2),
        f'{diff:.3g}'])
  table = {
      'title': (f'Peak resident set of a sweep (MiB): MLP {64}-{width}-'
                f'{width}-10, batch {batch}, {num_steps} steps, each'
                ' configuration in a fresh process'),
      'header': ['K', 'chunk_size=K: peak', 'chunk_size=K: sweep\'s share',
                 f'chunk_size={chunk}: peak',
                 f'chunk_size={chunk}: sweep\'s share',
                 f'peak chunk_size=K / chunk_size={chunk}',
                 'losses max abs diff'],
      'rows': rows,
  }
  params = {'ks': list(ks), 'chunk_size': chunk, 'num_steps': num_steps,
            'batch_size': batch, 'width': width}
  return table, checks, params


def _per_step(short: dict, long: dict, extra_steps: int) -> dict:
  """Per-step times: each repeat's long call less its short call, per step.

  A call's fixed costs (creating and closing a bar, dispatch) cancel in the
  difference, so what is left is the cost of a step.
  """
  return _harness.stats([
      (b - a) / extra_steps
      for a, b in zip(short['samples_s'], long['samples_s'])
  ])


def progress_cost(settings: _harness.Settings):
  """progress=True vs False for a sweep and a range test, interleaved.

  Each runs at two lengths, ``num_steps`` and ``LONGER`` times it (20
  times in a quick run): the whole calls' ratio includes the bar's fixed
  costs; the per-step ratio (each repeat's long call less its short one,
  per extra step) is the one judged.
  """
  num_steps = 20 if settings.quick else 1200
  # Quick: a long run long enough that each repeat's difference stays
  # positive on a busy machine.
  lengths = (num_steps, (20 if settings.quick else LONGER) * num_steps)
  model = model_lib.make_model('mlp', _models.digits(), seed=0)
  data = {n: _models.batches(bench_loop.BATCH_SIZE, n) for n in lengths}
  hp = {'max_lr': bench_loop.max_lrs(PROCESS_K)}
  sink = io.StringIO()  # The bars draw here, not on the terminal.

  def bar(on):
    return {'file': sink} if on else False

  def sweep(on, n=num_steps):
    return optax_clr.nnx.sweep(model, bench_loop.optimizer, bench_loop.loss,
                               hp, data[n], progress=bar(on)).losses

  def range_test(on, n=num_steps):
    return optax_clr.nnx.range_test(
        model, optax.sgd, bench_loop.loss, data[n], start_lr=1e-4,
        end_lr=10.0, num_steps=n, progress=bar(on)).losses

  def label(kind, on, n):
    what = 'sweep' if kind is sweep else 'range_test'
    return f'{what}, progress={on}, ' + (
        'per step' if n == 'per' else f'{n} steps')

  fns = {label(kind, on, n): functools.partial(kind, on, n)
         for kind in (sweep, range_test) for n in lengths
         for on in (True, False)}
  timings = _harness.time_interleaved(fns, repeats=settings.repeats * 3,
                                      warmup=2)
  short, long = lengths
  per_step = {}
  ratios = []
  for kind in (sweep, range_test):
    for on in (True, False):
      per_step[label(kind, on, 'per')] = _per_step(
          timings[label(kind, on, short)], timings[label(kind, on, long)],
          long - short)
    ratios.append(_harness.ratio(
        timings, label(kind, True, short), label(kind, False, short),
        note='whole calls: the bar\'s fixed costs included'))
    ratios.append(_harness.ratio(
        per_step, label(kind, True, 'per'), label(kind, False, 'per'),
        metric='per step', target=('<=', 1.02),
        note=f'{short} -> {long} steps, the fixed costs cancel'))
  checks = {
      'sweep_progress_vs_none_losses_max_abs_diff': _models.max_abs_diff(
          sweep(True), sweep(False)),
      'range_test_progress_vs_none_losses_max_abs_diff': _models.max_abs_diff(
          range_test(True), range_test(False)),
      'bar_output_chars': len(sink.getvalue()),
  }
  return {'run': timings, 'per step': per_step}, ratios, checks, lengths


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('', 0))
    return s.getsockname()[1]


def _launch(label: str, num_steps: int, warm: int, workdir: str):
  """One launch of a processes configuration; (process 0's record, wall)."""
  processes, devices = PROCESS_CONFIGS[label]
  for attempt in range(ATTEMPTS):
    coordinator = f'127.0.0.1:{_free_port()}'
    logs = [(os.path.join(workdir, f'{attempt}-{i}.out'),
             os.path.join(workdir, f'{attempt}-{i}.err'))
            for i in range(processes)]
    running = []
    start = time.perf_counter()
    for i, (out, err) in enumerate(logs):
      with open(out, 'w') as stdout, open(err, 'w') as stderr:
        running.append(subprocess.Popen(
            [sys.executable, '-c', PROCESS_SCRIPT.format(root=ROOT),
             coordinator, str(processes), str(i), str(num_steps), str(warm)],
            cwd=ROOT, env=_env(devices), stdout=stdout, stderr=stderr))
    try:
      for p in running:
        p.wait(timeout=TIMEOUT_S)
    finally:
      for p in running:
        if p.poll() is None:
          p.kill()
          p.wait()
    wall = time.perf_counter() - start
    with open(logs[0][1]) as f:
      first_error = f.read()
    if running[0].returncode and any(m in first_error for m in PORT_TAKEN):
      continue
    for p, (_, err) in zip(running, logs):
      if p.returncode:
        with open(err) as f:
          raise RuntimeError(f'{label}: {f.read()[-3000:]}')
    with open(logs[0][0]) as f:
      return _json_line(f.read()), wall
  raise RuntimeError(f'the coordinator port was taken {ATTEMPTS} times')


def processes_wall(settings: _harness.Settings):
  """The K = 8 sweep on 1x1, 1x2 and 2x1 processes x devices."""
  num_steps, rounds, warm = ((20, 1, 2) if settings.quick else
                             (600, min(settings.compile_repeats, 3),
                              settings.repeats))
  labels = list(PROCESS_CONFIGS)
  first, runs, walls = ({l: [] for l in labels} for _ in range(3))
  losses = {}
  with tempfile.TemporaryDirectory() as workdir:
    for r in range(rounds):  # Launches interleaved, the order rotating.
      shift = r % len(labels)
      for label in labels[shift:] + labels[:shift]:
        record, wall = _launch(label, num_steps, warm, workdir)
        expected = PROCESS_CONFIGS[label]
        if (record['processes'], record['devices']) != (
            expected[0], expected[0] * expected[1]):
          raise RuntimeError(f'{label} ran as {record}')
        first[label].append(record['first'])
        runs[label].extend(record['warm'])
        walls[label].append(wall)
        losses[label] = np.asarray(record['losses'])
  timings = {
      'run': {l: _harness.stats(runs[l]) for l in labels},
      'first call': {l: _harness.stats(first[l]) for l in labels},
      'launch': {l: _harness.stats(walls[l]) for l in labels},
  }
  base = labels[0]
  ratios = [_harness.ratio(timings[m], l, base, metric=m)
            for m in ('run', 'first call', 'launch') for l in labels[1:]]
  checks = {f'{l} vs {base} losses_max_abs_diff': float(
      np.max(np.abs(losses[l] - losses[base]))) for l in labels[1:]}
  params = {'k': PROCESS_K, 'num_steps': num_steps, 'rounds': rounds,
            'warm_calls_per_launch': warm}
  return timings, ratios, checks, params


def run(settings: _harness.Settings) -> dict:
  """Runs the three measurements; returns the record."""
  table, memory_checks, memory_params = memory_table(settings)
  progress_timings, progress_ratios, progress_checks, progress_steps = (
      progress_cost(settings))
  process_timings, process_ratios, process_checks, process_params = (
      processes_wall(settings))
  timings = {'run': {**progress_timings['run'], **process_timings['run']},
             'per step': progress_timings['per step'],
             'first call': process_timings['first call'],
             'launch': process_timings['launch']}
  return {
      'title': TITLE,
      'params': {'memory': memory_params,
                 'progress': {'k': PROCESS_K,
                              'num_steps': list(progress_steps),
                              'model': 'examples MLP on digits'},
                 'processes': {**process_params,
                               'model': 'examples MLP on digits'},
                 'repeats': settings.repeats},
      'timings': timings,
      'ratios': progress_ratios + process_ratios,
      'tables': [table],
      'checks': {**memory_checks, **progress_checks, **process_checks},
      'notes': [
          'Memory: "peak" is the process\'s ru_maxrss, "sweep\'s share" the'
          ' peak less the resident set just before the sweep (JAX, the data'
          ' and the initial parameters already in memory); it includes'
          ' compiling. The parameters, momentum and per-step records of all'
          ' K models are held either way; chunk_size bounds the'
          ' activations and gradients in memory at once.',
          f'Progress: one sample is a whole sweep of K={PROCESS_K} models or'
          ' a whole range test, of'
          f' {progress_steps[0]} or {progress_steps[1]} steps; "per step" is'
          ' each repeat\'s long call less its short one, per extra step (the'
          ' fixed costs cancel), the ratio judged; bars drawn to a string,'
          f' not a terminal; {settings.repeats * 3} interleaved repeats.',
          f'Processes: K={PROCESS_K} example MLPs on digits,'
          f' {process_params["num_steps"]} steps, chunk_size unset (on CPU'
          ' one model at a time per device), the default mesh over every'
          ' device of every process.'
          f' {process_params["rounds"]} launches per configuration,'
          ' interleaved; each times its first call (tracing, compiling, one'
          f' run) and {process_params["warm_calls_per_launch"]} warm calls'
          ' (pooled in "run"); "launch" is the wall time from starting the'
          ' processes to their exit (imports, distributed start-up, all'
          ' calls). Times are process 0\'s.',
      ],
  }


if __name__ == '__main__':
  record = run(_harness.Settings(quick=True, repeats=3))
  print(json.dumps({k: record[k] for k in ('ratios', 'tables', 'checks')},
                   indent=1))
