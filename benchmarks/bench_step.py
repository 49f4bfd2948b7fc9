"""Benchmark 1: the cost of a schedule inside the example's jitted train step.

``examples/train.py`` as it trains: its ``Config`` defaults (CNN on digits,
batch 32, SGD with momentum 0.9 through ``optax.inject_hyperparams``), its
``make_optimizer`` and its ``train_step``, compiled once per schedule and
called in a Python loop. Every schedule of ``train.SCHEDULES`` (and cyclical
momentum) is timed against ``fixed``, the constant rate, interleaved.
Target: median ratio <= 1.01 in run time (the physical limit is 1.00) and
in compile time.
"""

import functools

from flax import nnx
import jax

from benchmarks import _harness
from benchmarks import _models
from examples import model as model_lib
from examples import train

TITLE = 'in-step overhead: the example train step, each schedule vs fixed LR'
CONSTANT = 'fixed'
CYCLE_MOMENTUM = 'triangular + cyclic momentum'


def configs(quick: bool) -> dict[str, train.Config]:
  """Name -> the example's config for that schedule."""
  model = 'mlp' if quick else 'cnn'  # The CNN compiles in about a second.
  names = (CONSTANT, 'triangular', 'triangular2') if quick else (
      train.SCHEDULES)
  out = {name: train.Config(model=model, schedule=name) for name in names}
  if not quick:
    out[CYCLE_MOMENTUM] = train.Config(
        model=model, schedule='triangular', cycle_momentum=True)
  return out


def make_step(config: train.Config, steps_per_epoch: int):
  """``(step, state)``: the example's train step with its graph bound."""
  dataset = _models.digits()
  model = model_lib.make_model(config.model, dataset, seed=config.seed)
  tx = train.make_optimizer(config, steps_per_epoch)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  step = functools.partial(train.train_step.__wrapped__, graphdef)
  return step, state


def run(settings: _harness.Settings) -> dict:
  """Times a loop of train steps per schedule; returns the record."""
  num_steps = 3 if settings.quick else 20
  cases = configs(settings.quick)
  batch_size = cases[CONSTANT].batch_size
  steps_per_epoch = _models.digits().train_images.shape[0] // batch_size
  batch_list = _models.unstack(_models.batches(batch_size, num_steps))
  compile_args, states = {}, {}
  for name, config in cases.items():
    step, states[name] = make_step(config, steps_per_epoch)
    compile_args[name] = (step, (states[name], *batch_list[0]))
  exes, compile_times = _harness.time_compiles(
      compile_args, repeats=settings.compile_repeats)

  def loop(name):
    exe, state = exes[name], states[name]
    for images, labels in batch_list:
      state, _ = exe(state, images, labels)
    return state

  # Short samples, so three times the repeats to beat the machine's noise.
  repeats = settings.repeats if settings.quick else 3 * settings.repeats
  run_times = _harness.time_interleaved(
      {name: (lambda n=name: loop(n)) for name in exes}, repeats=repeats)
  for name in run_times:  # Per step, not per loop.
    for key in ('median_s', 'min_s', 'max_s'):
      run_times[name][key] /= num_steps
    run_times[name]['samples_s'] = [
        s / num_steps for s in run_times[name]['samples_s']]
  costs = {name: _harness.compiled_cost(exe) for name, exe in exes.items()}
  checks = {}
  if all(costs.values()):
    for name, cost in costs.items():
      for key, value in cost.items():
        base = costs[CONSTANT].get(key)
        if name != CONSTANT and base:
          checks[f'{name} / {CONSTANT} XLA {key}'] = value / base
  hlo_lines = {name: jax.jit(fn).lower(*args).as_text().count('\n')
               for name, (fn, args) in compile_args.items()}
  for name, lines in hlo_lines.items():
    if name != CONSTANT:
      checks[f'{name} / {CONSTANT} HLO lines'] = lines / hlo_lines[CONSTANT]
  ratios = []
  for name in exes:
    if name == CONSTANT:
      continue
    ratios.append(_harness.ratio(run_times, name, CONSTANT,
                                 target=('<=', 1.01)))
    ratios.append(_harness.ratio(compile_times, name, CONSTANT,
                                 metric='compile', target=('<=', 1.01)))
  model = cases[CONSTANT].model
  return {
      'title': TITLE,
      'params': {'model': f'examples {model.upper()}', 'batch_size': batch_size,
                 'steps_per_sample': num_steps, 'repeats': repeats,
                 'compile_repeats': settings.compile_repeats},
      'timings': {'run': run_times, 'compile': compile_times},
      'ratios': ratios,
      'checks': checks,
      'cost': costs,
      'notes': [
          f'The example {model.upper()} on digits, batch {batch_size}. Run'
          f' time is per step: a sample is a Python loop of {num_steps} calls'
          ' of the compiled `examples.train.train_step`, divided by the number'
          ' of steps.',
          'Checks: ratios of XLA\'s static cost estimate of the compiled step'
          ' (flops, transcendentals, bytes accessed) and of the size of the'
          ' lowered program (HLO lines) to the fixed-rate step; unlike the'
          ' timings they do not depend on the machine\'s load.',
      ],
  }
