"""Benchmark 4: K CLR configurations as one vmapped program vs K runs.

The example MLP on digits, SGD with momentum and a triangular CLR whose
``max_lr`` differs per configuration (a traced schedule argument). Two ways
to drive the steps:

* Python loop: one jitted step called per step; vmapped, one call advances
  all K models; sequential, K runs of the single-model step.
* ``lax.scan``: the whole run is one jitted program; vmapped, one call;
  sequential, K calls. On CPU this removes the dispatch cost that the
  vmapped loop saves, so the ratio can be near 1x.

Target: >= 10x at K=32 with the Python loop. Also reports the compiler's
planned peak bytes of each program.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_clr
from benchmarks import _harness
from benchmarks import _models
from examples import train

TITLE = 'vmap sweep: K configurations in one program vs K sequential runs'
BASE_LR, STEP_SIZE = 1e-3, 20
# The example trainer's defaults.
MOMENTUM, BATCH_SIZE = train.Config.momentum, train.Config.batch_size


def make_functions(apply):
  """``init(params, max_lr)``, ``step(...)`` and ``run(...)`` of one model."""
  loss = _models.loss_fn(apply)

  def tx(max_lr):
    schedule = optax_clr.triangular_schedule(BASE_LR, max_lr, STEP_SIZE)
    return optax.sgd(schedule, momentum=MOMENTUM)

  def init(params, max_lr):
    return tx(max_lr).init(params)

  def step(params, opt_state, max_lr, batch):
    value, grads = jax.value_and_grad(loss)(params, batch)
    updates, opt_state = tx(max_lr).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  def run(params, opt_state, max_lr, batches):
    def body(carry, batch):
      p, s, value = step(*carry, max_lr, batch)
      return (p, s), value

    (params, opt_state), losses = jax.lax.scan(
        body, (params, opt_state), batches)
    return params, opt_state, losses

  return init, step, run


def max_lrs(k: int) -> jax.Array:
  return jnp.asarray(np.geomspace(0.01, 0.3, k), jnp.float32)


def run(settings: _harness.Settings) -> dict:
  """Times the sweeps for each K; returns the record."""
  ks, num_steps = ((2,), 3) if settings.quick else ((8, 32, 128), 40)
  apply, params = _models.init('mlp', seed=0)
  init, step, scan_run = make_functions(apply)
  batches = _models.batches(BATCH_SIZE, num_steps)
  batch_list = _models.unstack(batches)
  run_times, compile_times, memory, ratios, checks = {}, {}, {}, [], {}

  for k in ks:
    lrs = max_lrs(k)
    stacked = _models.stack([params] * k)
    v_init = jax.vmap(init)
    states = jax.jit(v_init)(stacked, lrs)
    state = jax.jit(init)(params, lrs[0])
    v_step = jax.vmap(step, in_axes=(0, 0, 0, None))
    v_run = jax.vmap(scan_run, in_axes=(0, 0, 0, None))
    labels = {
        'loop_vmap': f'K={k} loop vmapped',
        'loop_seq': f'K={k} loop sequential',
        'scan_vmap': f'K={k} scan vmapped',
        'scan_seq': f'K={k} scan sequential',
    }
    exes, compiled = _harness.time_compiles({
        labels['loop_vmap']: (v_step, (stacked, states, lrs, batch_list[0])),
        labels['loop_seq']: (step, (params, state, lrs[0], batch_list[0])),
        labels['scan_vmap']: (v_run, (stacked, states, lrs, batches)),
        labels['scan_seq']: (scan_run, (params, state, lrs[0], batches)),
    }, repeats=settings.compile_repeats)
    compile_times.update(compiled)
    memory.update({l: _harness.compiled_bytes(e) for l, e in exes.items()})

    def loop_vmap(e=exes[labels['loop_vmap']], lrs=lrs, p=stacked, s=states):
      for batch in batch_list:
        p, s, _ = e(p, s, lrs, batch)
      return p

    def loop_seq(e=exes[labels['loop_seq']], lrs=lrs):
      out = []
      for i in range(k):
        p, s = params, state
        for batch in batch_list:
          p, s, _ = e(p, s, lrs[i], batch)
        out.append(p)
      return out

    def scan_vmap(e=exes[labels['scan_vmap']], lrs=lrs):
      return e(stacked, states, lrs, batches)[0]

    def scan_seq(e=exes[labels['scan_seq']], lrs=lrs):
      return [e(params, state, lrs[i], batches)[0] for i in range(k)]

    fns = dict(zip(labels.values(), (loop_vmap, loop_seq, scan_vmap,
                                     scan_seq)))
    run_times.update(_harness.time_interleaved(fns, repeats=settings.repeats))
    target = ('>=', 10.0) if k == 32 else None
    ratios.append(_harness.ratio(run_times, labels['loop_seq'],
                                 labels['loop_vmap'], target=target))
    ratios.append(_harness.ratio(run_times, labels['scan_seq'],
                                 labels['scan_vmap']))
    sequential = _models.stack(loop_seq())
    checks[f'K={k} loop_vmapped_vs_sequential_max_abs_diff'] = (
        _models.max_abs_diff(loop_vmap(), sequential))
    checks[f'K={k} scan_vmapped_vs_sequential_max_abs_diff'] = (
        _models.max_abs_diff(scan_vmap(), _models.stack(scan_seq())))
    checks[f'K={k} scan_vs_loop_max_abs_diff'] = _models.max_abs_diff(
        scan_vmap(), sequential)

  return {
      'title': TITLE,
      'params': {'ks': list(ks), 'num_steps': num_steps,
                 'batch_size': BATCH_SIZE, 'model': 'examples MLP (64-128-10)',
                 'repeats': settings.repeats},
      'timings': {'run': run_times, 'compile': compile_times},
      'memory': memory,
      'ratios': ratios,
      'checks': checks,
      'notes': [
          f'One sample is a whole sweep: K models x {num_steps} steps of'
          f' batch {BATCH_SIZE}, max_lr log-spaced in [0.01, 0.3].',
          'Peak bytes: arguments + outputs + temporaries of one call, from'
          ' `Compiled.memory_analysis()`; a sequential sweep runs the'
          ' single-model program K times, so its peak is that program\'s.',
      ],
  }
