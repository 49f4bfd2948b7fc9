"""Benchmark 8: ``optax_clr.nnx.sweep`` of K models vs K sequential runs.

A user's NNX model, unchanged: the example MLP and the example CNN (two
convolutions with BatchNorm, dropout) on digits, SGD with momentum and a
triangular CLR whose ``max_lr`` differs per model. The baseline is what a
user would write without the library: one jitted ``lax.scan`` of the
training step of ONE model, called K times.

The sweep picks how many models run side by side itself (``chunk_size``
unset): all of them for the MLP, one at a time inside the program for the
CNN on CPU, where vmapped convolutions become grouped convolutions. The CNN
is also timed with all models side by side (``chunk_size=K``), the choice
the rule avoids.

Both the first call (tracing, compiling and one run) and the steady state
(warm calls) are timed. Target: the sweep is at least as fast as the K
sequential runs (sequential / sweep >= 1) at every K, in steady state.
"""

import functools

from flax import nnx
import jax
import numpy as np
import optax

import optax_clr
import optax_clr.nnx
from benchmarks import _harness
from benchmarks import _models
from examples import model as model_lib

TITLE = 'nnx.sweep of K models vs K sequential jitted runs, per model family'
BASE_LR, STEP_SIZE, MOMENTUM, BATCH_SIZE = 1e-3, 20, 0.9, 32


def loss(model, batch):
  images, labels = batch
  logits = model(images)
  return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                         labels).mean()


def optimizer(hp):
  schedule = optax_clr.triangular_schedule(BASE_LR, hp['max_lr'], STEP_SIZE)
  return optax.sgd(schedule, momentum=MOMENTUM)


def sequential_run(model):
  """One model's training as a jitted scan: ``run(max_lr, batches)``."""
  graphdef, params0, state0 = nnx.split(model, nnx.Param, ...)

  def run(max_lr, batches):
    tx = optimizer({'max_lr': max_lr})

    def step(carry, batch):
      params, state, opt_state = carry

      def objective(params):
        module = nnx.merge(graphdef, params, state, copy=True)
        value = loss(module, batch)
        return value, nnx.split(module, nnx.Param, ...)[2]

      (value, state), grads = jax.value_and_grad(objective, has_aux=True)(
          params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), state, opt_state), value

    carry = (params0, state0, tx.init(params0))
    (params, _, _), losses = jax.lax.scan(step, carry, batches)
    return params, losses

  return run


def max_lrs(k: int) -> np.ndarray:
  return np.geomspace(0.01, 0.3, k).astype(np.float32)


def run(settings: _harness.Settings) -> dict:
  """Times sweep and sequential runs per family and K; returns the record."""
  if settings.quick:
    sizes = {'mlp': ((1, 2), 4), 'cnn': ((2,), 4)}
    side_by_side_ks = (2,)
  else:  # The MLP as long as a user's digits run; the CNN shorter.
    sizes = {'mlp': ((1, 4, 16), 1200), 'cnn': ((1, 4, 16), 100)}
    side_by_side_ks = (4,)
  first_repeats = min(settings.compile_repeats, _harness.MIN_REPEATS)
  run_times, first_times, ratios, checks, notes = {}, {}, [], {}, []
  for family, (ks, num_steps) in sizes.items():
    model = model_lib.make_model(family, _models.digits(), seed=0)
    batches = _models.batches(BATCH_SIZE, num_steps)
    for k in ks:
      hp = {'max_lr': max_lrs(k)}
      labels = {'seq': f'{family} K={k} sequential',
                'sweep': f'{family} K={k} sweep'}
      candidates = {labels['seq']: None, labels['sweep']: None}
      chunked = {}
      if family == 'cnn' and k in side_by_side_ks:
        labels['side'] = f'{family} K={k} sweep, all side by side'
        chunked[labels['side']] = k
        candidates[labels['side']] = None

      def sweep_call(chunk_size=None, fresh=False):
        loss_fn = (lambda m, b: loss(m, b)) if fresh else loss
        return optax_clr.nnx.sweep(model, optimizer, loss_fn, hp, batches,
                                   chunk_size=chunk_size).params

      def sequential_call(fresh=False):
        jitted = jax.jit(sequential_run(model)) if fresh else compiled
        return [jitted(lr, batches)[0] for lr in hp['max_lr']]

      compiled = jax.jit(sequential_run(model))
      first = {labels['seq']: functools.partial(sequential_call, fresh=True),
               labels['sweep']: functools.partial(sweep_call, fresh=True)}
      warm = {labels['seq']: sequential_call, labels['sweep']: sweep_call}
      for label, size in chunked.items():
        first[label] = functools.partial(sweep_call, size, fresh=True)
        warm[label] = functools.partial(sweep_call, size)
      first_times.update(_harness.time_interleaved(
          first, repeats=first_repeats, warmup=0))
      run_times.update(_harness.time_interleaved(
          warm, repeats=settings.repeats))
      ratios.append(_harness.ratio(run_times, labels['seq'],
                                   labels['sweep'], target=('>=', 1.0)))
      ratios.append(_harness.ratio(first_times, labels['seq'],
                                   labels['sweep'], metric='first call'))
      for label in chunked:
        ratios.append(_harness.ratio(run_times, label, labels['sweep']))
      checks[f'{family} K={k} sweep_vs_sequential_max_abs_diff'] = (
          _models.max_abs_diff(sweep_call(),
                               _models.stack(sequential_call())))
  steps = ', '.join(f'{f} {n}' for f, (_, n) in sizes.items())
  notes.append(
      f'One sample is a whole training: K models x num_steps ({steps}) of'
      f' batch {BATCH_SIZE}. "first call" includes tracing and compiling'
      ' (a fresh loss function, so no cache answers) and one run; the'
      ' sequential first call compiles once and runs K times.')
  notes.append(
      'sweep: chunk_size unset, chosen by the rule of optax_clr.sweep (all'
      ' models side by side for the MLP; one at a time inside the program'
      ' for the CNN on CPU, whose vmapped convolutions are grouped).')
  return {
      'title': TITLE,
      'params': {'sizes': {f: {'ks': list(k), 'num_steps': n}
                           for f, (k, n) in sizes.items()},
                 'batch_size': BATCH_SIZE,
                 'models': 'examples MLP, examples CNN (BatchNorm, dropout)',
                 'repeats': settings.repeats},
      'timings': {'run': run_times, 'first call': first_times},
      'ratios': ratios,
      'checks': checks,
      'notes': notes,
  }


if __name__ == '__main__':
  import json  # pylint: disable=g-import-not-at-top
  record = run(_harness.Settings(quick=True, repeats=3))
  print(json.dumps(record['ratios'], indent=1))
  print(record['checks'])
