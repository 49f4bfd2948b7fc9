"""Benchmark 10: strategy "scan" vs "loop" vs the user's own loop, per family.

``optax_clr.nnx.sweep`` (K = 1 and 4 models) and ``optax_clr.nnx.range_test``
(one test) run each model family with the whole run scanned in one program
(``strategy="scan"``) and with one compiled step called from Python
(``strategy="loop"``), against what a user writes without the library: a
Python loop of ONE jitted training step (buffers donated, batches already on
the device), called for each of the K models in turn. Families: the example
MLP, the example CNN (BatchNorm, dropout), the CNN of Flax's NNX MNIST
tutorial (two 3x3 convolutions of 32 and 64 features, average pooling,
dense 256; here on the 8x8 digits) and the byte-level transformer LM of
``bench_loop``.

Both the first call (tracing and compiling a fresh loss function, then one
run) and the steady state (warm calls) are timed. ``strategy="auto"`` must
pick the faster of the two per family (``optax_clr/_strategy.py``); the
target is the engine at or under the user's loop (loop / engine >= 1).
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
from benchmarks import bench_loop

TITLE = 'strategy "scan" vs "loop" vs a Python loop of one jitted step'
STRATEGIES = ('scan', 'loop', 'auto')
RANGE_START, RANGE_END = 1e-4, 1.0


class TutorialCNN(nnx.Module):
  """The CNN of Flax's NNX MNIST tutorial, for 8x8 inputs (dense 256 in)."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(1, 32, kernel_size=(3, 3), rngs=rngs)
    self.conv2 = nnx.Conv(32, 64, kernel_size=(3, 3), rngs=rngs)
    self.avg_pool = functools.partial(nnx.avg_pool, window_shape=(2, 2),
                                      strides=(2, 2))
    self.linear1 = nnx.Linear(2 * 2 * 64, 256, rngs=rngs)
    self.linear2 = nnx.Linear(256, 10, rngs=rngs)

  def __call__(self, x):
    x = self.avg_pool(nnx.relu(self.conv1(x)))
    x = self.avg_pool(nnx.relu(self.conv2(x)))
    x = x.reshape(x.shape[0], -1)
    return self.linear2(nnx.relu(self.linear1(x)))


def family(name: str, num_steps: int):
  """``(model, loss_fn, batches)``: ``bench_loop``'s, or the tutorial CNN."""
  if name == 'tutorial_cnn':
    return (TutorialCNN(rngs=nnx.Rngs(0)), bench_loop.loss,
            _models.batches(bench_loop.BATCH_SIZE, num_steps))
  return bench_loop.family(name, num_steps)


def user_loop(model, loss_fn, tx_of):
  """A user's loop: ``run(value, batches) -> (params, losses)``.

  One jitted step of one model (``tx_of(value)`` its optimizer, ``value``
  traced), its state donated, called once per batch of a list of batches
  already on the device.
  """
  graphdef, params0, state0 = nnx.split(model, nnx.Param, ...)

  @functools.partial(jax.jit, donate_argnums=0)
  def step(carry, batch, value):
    params, state, opt_state = carry
    tx = tx_of(value)

    def objective(params):
      module = nnx.merge(graphdef, params, state, copy=True)
      loss = loss_fn(module, batch)
      return loss, nnx.split(module, nnx.Param, ...)[2]

    (loss, state), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), state, opt_state), loss

  @jax.jit
  def start(params, state, value):
    return jax.tree.map(lambda x: x.copy(),
                        (params, state, tx_of(value).init(params)))

  def run(value, batches):
    value = jax.device_put(value)  # Once, not once a step.
    carry, losses = start(params0, state0, value), []
    for batch in batches:
      carry, loss = step(carry, batch, value)
      losses.append(loss)
    return carry[0], losses

  return run


def range_tx(num_steps):
  return lambda _: optax.sgd(optax_clr.range_test_schedule(
      RANGE_START, RANGE_END, num_steps))


def run(settings: _harness.Settings) -> dict:
  """Times the strategies and the user's loop; returns the record."""
  if settings.quick:  # Every path once, the fewest compiles (the CNNs'
    # take seconds; tests/test_strategy.py runs both strategies on them).
    sizes = {'mlp': ((1,), 3)}
  else:  # Steps per family: a few seconds of the slowest contender.
    sizes = {'mlp': ((1, 4), 600), 'cnn': ((1, 4), 30),
             'tutorial_cnn': ((1, 4), 60), 'transformer': ((1, 4), 40)}
  # Each first call compiles: two samples each (one in a quick run, taken
  # with the warm calls' functions, their first call).
  first_repeats = 1 if settings.quick else 2
  run_times, first_times, ratios, checks, chosen = {}, {}, [], {}, {}
  for name, (ks, num_steps) in sizes.items():
    model, loss_fn, batches = family(name, num_steps)
    listed = _models.unstack(batches)  # The user's batches, on the device.

    def fresh(loss_fn=loss_fn):  # A new function: no cache answers.
      return lambda m, b: loss_fn(m, b)

    # The range test: one run, K = 1.
    def range_call(strategy, fresh_loss=False, model=model, loss_fn=loss_fn,
                   batches=batches, num_steps=num_steps):
      return optax_clr.nnx.range_test(
          model, optax.sgd, fresh() if fresh_loss else loss_fn, batches,
          start_lr=RANGE_START, end_lr=RANGE_END, num_steps=num_steps,
          strategy=strategy).losses

    user_range = user_loop(model, loss_fn, range_tx(num_steps))
    jobs = {f'{name} range_test {s}': functools.partial(range_call, s)
            for s in STRATEGIES}
    jobs[f'{name} range_test user loop'] = lambda u=user_range, b=listed: u(
        0.0, b)[1]
    firsts = {f'{name} range_test {s}': functools.partial(range_call, s, True)
              for s in ('scan', 'loop')}
    firsts[f'{name} range_test user loop'] = (
        lambda m=model, f=loss_fn, n=num_steps, b=listed: user_loop(
            m, f, range_tx(n))(0.0, b)[1])
    # A quick run skips it: the sweep's group runs the same code paths.
    groups = [] if settings.quick else [('range_test', jobs, firsts)]

    for k in ks:
      hp = {'max_lr': bench_loop.max_lrs(k)}

      def sweep_call(strategy, fresh_loss=False, model=model, loss_fn=loss_fn,
                     hp=hp, batches=batches):
        return optax_clr.nnx.sweep(
            model, bench_loop.optimizer, fresh() if fresh_loss else loss_fn,
            hp, batches, strategy=strategy).params

      tx_of = lambda value: bench_loop.optimizer({'max_lr': value})
      user = user_loop(model, loss_fn, tx_of)
      label = f'{name} K={k} sweep'
      jobs = {f'{label} {s}': functools.partial(sweep_call, s)
              for s in STRATEGIES}
      jobs[f'{label} user loop'] = lambda u=user, hp=hp, b=listed: [
          u(lr, b)[0] for lr in hp['max_lr']]
      firsts = {f'{label} {s}': functools.partial(sweep_call, s, True)
                for s in ('scan', 'loop')}
      firsts[f'{label} user loop'] = (
          lambda m=model, f=loss_fn, hp=hp, b=listed: [
              user_loop(m, f, tx_of)(lr, b)[0] for lr in hp['max_lr']])
      if settings.quick:  # The warm calls' first calls: no more compiles.
        firsts = {label: jobs[label] for label in firsts}
      groups.append((f'K={k} sweep', jobs, firsts))

    for what, jobs, firsts in groups:
      first_times.update(_harness.time_interleaved(
          firsts, repeats=first_repeats, warmup=0))
      run_times.update(_harness.time_interleaved(
          jobs, repeats=settings.repeats))
      prefix = next(iter(jobs)).rsplit(' ', 1)[0]
      # Warm calls, after timing: no compile for the check.
      scan, loop = (jobs[f'{prefix} {s}']() for s in ('scan', 'loop'))
      checks[f'{prefix} loop_vs_scan_max_abs_diff'] = float(np.nanmax(
          [np.nanmax(np.abs(np.asarray(a) - np.asarray(b)))
           for a, b in zip(jax.tree.leaves(scan), jax.tree.leaves(loop))]))
      user = f'{prefix} user loop'
      for s in STRATEGIES:
        ratios.append(_harness.ratio(
            run_times, user, f'{prefix} {s}',
            target=('>=', 1.0) if s == 'auto' else None))
      for s in ('scan', 'loop'):
        ratios.append(_harness.ratio(first_times, user, f'{prefix} {s}',
                                     metric='first call'))
      fastest = min(('scan', 'loop'),
                    key=lambda s, p=prefix: run_times[f'{p} {s}']['median_s'])
      chosen[f'{name} {what}'] = fastest
  notes = [
      'One sample is a whole training: K models x num_steps ('
      + ', '.join(f'{f} {n}' for f, (_, n) in sizes.items())
      + f') of batch {bench_loop.BATCH_SIZE}; the range test trains one'
      ' model. Ratios are the user\'s loop over the engine: above 1, the'
      ' engine is faster.',
      'first call: a fresh loss function, so tracing and compiling are'
      ' included, then one run; the user\'s first call jits a fresh step.'
      ' "auto" is timed warm only (it reuses the program of the strategy it'
      ' picks).',
      'The faster strategy in steady state, per family: '
      + ', '.join(f'{k}: {v}' for k, v in chosen.items()) + '.',
  ]
  return {
      'title': TITLE,
      'params': {'sizes': {f: {'ks': list(k), 'num_steps': n}
                           for f, (k, n) in sizes.items()},
                 'batch_size': bench_loop.BATCH_SIZE,
                 'first_call_repeats': first_repeats,
                 'repeats': settings.repeats},
      'timings': {'run': run_times, 'first call': first_times},
      'ratios': ratios,
      'checks': checks,
      'faster': chosen,
      'notes': notes,
  }


if __name__ == '__main__':
  import json  # pylint: disable=g-import-not-at-top
  record = run(_harness.Settings(quick=True, repeats=3))
  print(json.dumps(record['ratios'], indent=1))
  print(record['checks'], record['faster'])
