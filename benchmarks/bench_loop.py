"""Benchmark 8: ``optax_clr.nnx.sweep`` of K models vs K sequential runs.

A user's NNX model, unchanged: the example MLP and the example CNN (two
convolutions with BatchNorm, dropout) on digits, and the suggestion suite's
byte-level transformer language model (``benchmarks/_suggest_lm.py``: two
pre-LayerNorm blocks of causal self-attention, width 32) on Python source;
SGD with momentum and a triangular CLR whose ``max_lr`` differs per model. The baseline is what a
user would write without the library: one jitted ``lax.scan`` of the
training step of ONE model, called K times.

The sweep picks how many models run side by side itself (``chunk_size``
unset): on CPU a device's models run one at a time inside the program.
Every family is also timed with all models side by side (``chunk_size=K``),
the choice the rule does not make on CPU.

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
from benchmarks import _suggest_lm
from examples import model as model_lib

TITLE = 'nnx.sweep of K models vs K sequential jitted runs, per model family'
BASE_LR, STEP_SIZE, MOMENTUM, BATCH_SIZE = 1e-3, 20, 0.9, 32
FIRST_CALL_REPEATS = 3


def loss(model, batch):
  images, labels = batch
  logits = model(images)
  return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                         labels).mean()


def lm_loss(model, windows):
  """Mean next-byte cross-entropy of ``windows [batch, CONTEXT + 1]``."""
  logits = model(windows[:, :-1])
  return optax.softmax_cross_entropy_with_integer_labels(
      logits, windows[:, 1:]).mean()


def lm_batches(batch_size: int, num_steps: int, *, seed: int = 0):
  """``[num_steps, batch_size, CONTEXT + 1]`` training windows, drawn with NumPy."""
  train, _ = _suggest_lm.load()
  rng = np.random.default_rng(seed)
  rows = rng.integers(0, train.shape[0], (num_steps, batch_size))
  return jax.numpy.asarray(train[rows])


def family(name: str, num_steps: int):
  """``(model, loss_fn, batches)`` of the model family ``name``."""
  if name == 'transformer':
    model = _suggest_lm.TransformerLM(rngs=nnx.Rngs(0))
    return model, lm_loss, lm_batches(BATCH_SIZE, num_steps)
  model = model_lib.make_model(name, _models.digits(), seed=0)
  return model, loss, _models.batches(BATCH_SIZE, num_steps)


def optimizer(hp):
  schedule = optax_clr.triangular_schedule(BASE_LR, hp['max_lr'], STEP_SIZE)
  return optax.sgd(schedule, momentum=MOMENTUM)


def sequential_run(model, loss_fn):
  """One model's training as a jitted scan: ``run(max_lr, batches)``."""
  graphdef, params0, state0 = nnx.split(model, nnx.Param, ...)

  def run(max_lr, batches):
    tx = optimizer({'max_lr': max_lr})

    def step(carry, batch):
      params, state, opt_state = carry

      def objective(params):
        module = nnx.merge(graphdef, params, state, copy=True)
        value = loss_fn(module, batch)
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
    # Each family once, one model: every code path, the fewest compiles.
    sizes = {'mlp': ((1, 2), 4), 'cnn': ((1,), 2), 'transformer': ((1,), 2)}
    other_choice_ks = ()
  else:  # The MLP as long as a user's digits run; the others shorter: on
    # XLA:CPU a CNN step inside a compiled loop takes ~25x its time as a
    # lone jitted call (see the notes), and the transformer compiles slowly.
    sizes = {'mlp': ((1, 4, 16), 1200), 'cnn': ((1, 4, 16), 5),
             'transformer': ((1, 4, 16), 30)}
    other_choice_ks = (4, 16)
  # The chunk_size the rule does not choose, timed warm at other_choice_ks:
  # on CPU the rule runs a device's models one at a time, so all side by side.
  other_choice = {f: ('all side by side', lambda k: k) for f in sizes}
  # Each first call compiles (up to ~25 s for the transformer on the shared
  # CPUs): three of each keeps the whole benchmark within ~20 minutes.
  first_repeats = 1 if settings.quick else min(settings.compile_repeats,
                                               FIRST_CALL_REPEATS)
  run_times, first_times, ratios, checks, notes = {}, {}, [], {}, []
  for name, (ks, num_steps) in sizes.items():
    model, loss_fn, batches = family(name, num_steps)
    for k in ks:
      hp = {'max_lr': max_lrs(k)}
      labels = {'seq': f'{name} K={k} sequential',
                'sweep': f'{name} K={k} sweep'}
      chunked = {}
      if name in other_choice and k in other_choice_ks:
        what, size = other_choice[name]
        chunked[f'{name} K={k} sweep, {what}'] = size(k)

      def sweep_call(chunk_size=None, fresh=False, model=model,
                     loss_fn=loss_fn, hp=hp, batches=batches):
        if fresh:  # A new function: no cache answers.
          loss_fn = lambda m, b, f=loss_fn: f(m, b)
        return optax_clr.nnx.sweep(model, optimizer, loss_fn, hp, batches,
                                   chunk_size=chunk_size).params

      def sequential_call(fresh=False, model=model, loss_fn=loss_fn, hp=hp,
                          batches=batches):
        jitted = (jax.jit(sequential_run(model, loss_fn)) if fresh
                  else compiled)
        return [jitted(lr, batches)[0] for lr in hp['max_lr']]

      compiled = jax.jit(sequential_run(model, loss_fn))
      first = {labels['seq']: functools.partial(sequential_call, fresh=True),
               labels['sweep']: functools.partial(sweep_call, fresh=True)}
      warm = {labels['seq']: sequential_call, labels['sweep']: sweep_call}
      for label, size in chunked.items():  # Timed warm only.
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
      checks[f'{name} K={k} sweep_vs_sequential_max_abs_diff'] = (
          _models.max_abs_diff(sweep_call(),
                               _models.stack(sequential_call())))
  steps = ', '.join(f'{f} {n}' for f, (_, n) in sizes.items())
  notes.append(
      f'One sample is a whole training: K models x num_steps ({steps}) of'
      f' batch {BATCH_SIZE}. "first call" includes tracing and compiling'
      ' (a fresh loss function, so no cache answers) and one run; the'
      ' sequential first call compiles once and runs K times. First calls'
      f' are timed {first_repeats} times each (each compiles), warm calls'
      f' {settings.repeats} times; the other chunk_size of a family is'
      ' timed warm only.')
  notes.append(
      'sweep: chunk_size unset, chosen by the rule of optax_clr.sweep: on'
      ' CPU a device\'s models run one at a time inside the program.')
  return {
      'title': TITLE,
      'params': {'sizes': {f: {'ks': list(k), 'num_steps': n}
                           for f, (k, n) in sizes.items()},
                 'batch_size': BATCH_SIZE,
                 'models': 'examples MLP, examples CNN (BatchNorm, dropout),'
                           ' byte-level transformer LM (2 blocks, width 32,'
                           ' context 32)',
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
