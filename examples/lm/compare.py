r"""Schedules of the byte-level transformer at equal budget, as sweeps.

Every schedule of :func:`specs` at every peak of a small grid, with 3 seeds
(initialization and data order), trains through ``optax_clr.sweep``
(``jit(vmap(scan))``), together with the same models at the rate
``suggest_lr`` reads from a range test of this model and WSD and cosine runs
planned for half the budget: ``Setup.models_per_sweep`` models per call, one
compiled program that every call reuses, so memory holds one chunk of models
and not all of them (peak RSS 1.1 GB, not 20). Then the trainer
(``examples.lm.train``) runs a constant rate with Orbax checkpoints and cools
down from two of them, for the Hägele et al. (2024) check. Writes
``results.json``, ``results.md``, ``curves.png`` and ``range_test.png``::

  python -m examples.lm.compare --out docs/lm   # the report (~13 min, 2 CPUs)
  python -m examples.lm.compare --quick         # a smoke test, runs/lm-quick
"""

import argparse
import dataclasses
import os
import sys
import tempfile
from typing import Any, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_clr
import optax_clr.nnx
from examples.lm import data
from examples.lm import model as model_lib
from examples.lm import report
from examples.lm import schedules
from examples.lm import train

SC = schedules.ScheduleConfig


def specs(steps: int, warmup: int, *, quick: bool = False) -> tuple[SC, ...]:
  """The schedules compared, each planned for ``steps`` updates."""
  wsd = [SC('wsd', steps, warmup, fraction, shape)
         for shape in schedules.DECAY_SHAPES
         for fraction in ((0.2,) if quick else (0.1, 0.2, 0.4))]
  if quick:
    return (SC('cosine', steps, warmup), *wsd)
  return (SC('cosine', steps, warmup), *wsd, SC('inverse_sqrt', steps, warmup),
          SC('one_cycle', steps, warmup), SC('triangular', steps, warmup))


@dataclasses.dataclass(frozen=True)
class Setup:
  """The comparison's sizes; the defaults are the report's.

  Attributes:
    config: the model, batch, budget and warmup of every run.
    peaks: the peak-rate grid every schedule trains at.
    short_peaks: the grid of the runs planned for half the budget (wider:
      a shorter run's best rate is higher).
    seeds: initializations and data orders.
    range_sweeps: range tests (data orders) whose median ``suggest_lr`` reads.
    range_steps: steps of each range test.
    range_start: the range test's first rate.
    range_end: its last rate.
    models_per_sweep: models per ``optax_clr.sweep`` call (memory grows with
      it: about 50 MB a model at the report's size).
    cooldown_seeds: seeds of the trainer's cooldown-from-checkpoint runs.
    cooldowns: which of them: ``'half'`` (from 40 % to 50 % of the budget),
      ``'full'`` (from 80 % to 100 %); none in ``--quick``.
    quick: the smoke test's schedules (:func:`specs`).
  """

  config: train.Config = train.Config()
  peaks: tuple[float, ...] = (0.0015, 0.003, 0.006)
  short_peaks: tuple[float, ...] = (0.0015, 0.003, 0.006, 0.012, 0.024)
  seeds: tuple[int, ...] = (0, 1, 2)
  range_sweeps: int = 5
  range_steps: int = 200
  range_start: float = 1e-5
  range_end: float = 1.0
  models_per_sweep: int = 26
  cooldown_seeds: int = 3
  cooldowns: tuple[str, ...] = ('half', 'full')
  quick: bool = False


QUICK = Setup(train.Config(**train.QUICK), peaks=(0.005, 0.01),
              short_peaks=(0.005, 0.01), seeds=(0, 1),
              range_sweeps=2, range_steps=40, models_per_sweep=28,
              cooldowns=(), quick=True)  # 28 models: one sweep call.
# --quick compiles two small programs (the range test, the sweep) and runs
# them for seconds: XLA's backend optimizations would take most of its time.
_QUICK_XLA_FLAGS = '--xla_backend_optimization_level=0'
_RANGE_STREAM = 1000  # Range-test data orders: seeds 1000, 1001, ...
_windows = data.windows  # For the losses, whose ``data=`` hides the module.


class Row(NamedTuple):
  """One model of the sweep."""

  spec: SC
  peak: float
  seed: int
  role: str  # 'grid', 'short' (planned for half the budget) or 'suggested'.


def reference_specs(setup: Setup, steps: int) -> tuple[SC, SC]:
  """WSD with a 1-sqrt 20 % cooldown and cosine, planned for ``steps``."""
  c = setup.config
  return (SC('wsd', steps, c.warmup_steps, 0.2, '1-sqrt'),
          SC('cosine', steps, c.warmup_steps))


def make_rows(setup: Setup, suggested: float) -> list[Row]:
  c = setup.config
  rows = [Row(s, p, seed, 'grid')
          for s in specs(c.steps, c.warmup_steps, quick=setup.quick)
          for p in setup.peaks for seed in setup.seeds]
  rows += [Row(s, p, seed, 'short')
           for s in reference_specs(setup, c.steps // 2)
           for p in setup.short_peaks for seed in setup.seeds]
  rows += [Row(s, suggested, seed, 'suggested')
           for s in reference_specs(setup, c.steps) for seed in setup.seeds]
  return rows


def range_test(setup: Setup, corpus: data.Corpus):
  """``range_sweeps`` range tests of the seed-0 model, one program.

  AdamW as trained (clipping, decay of the matrices), the rate raised
  exponentially from ``range_start`` to ``range_end``; no separate warmup:
  the ramp starts 3 decades below the grid, so its first steps are one.
  """
  c = setup.config
  model = model_lib.make_model(c.model_config(), seed=0)
  tokens = jnp.stack([data.windows(corpus.train, data.batch_offsets(
      len(corpus.train), c.context, c.batch_size, _RANGE_STREAM + k,
      range(setup.range_steps)), c.context)
                      for k in range(setup.range_sweeps)])
  tx = lambda lr: model_lib.make_optimizer(lr, weight_decay=c.weight_decay)
  result = jax.vmap(lambda batches: optax_clr.nnx.range_test(
      model, tx, model_lib.loss_fn, batches, start_lr=setup.range_start,
      end_lr=setup.range_end, num_steps=setup.range_steps))(tokens)
  return result, float(optax_clr.suggest_lr(result))


class Records(NamedTuple):
  """What the comparison keeps of its sweeps, on the host (NumPy).

  Attributes:
    losses: ``[K, steps]``, each model's training loss per step (nats).
    learning_rates: ``[K, steps]``, the rate each update used.
    evals: ``[K, evals]``, validation bits per byte after ``eval_steps``.
    eval_steps: ``[evals]``, the updates before each evaluation.
  """

  losses: np.ndarray
  learning_rates: np.ndarray
  evals: np.ndarray
  eval_steps: np.ndarray


def run_sweep(setup: Setup, corpus: data.Corpus, rows: list[Row]
              ) -> Records:
  """Trains every row, ``setup.models_per_sweep`` at a time.

  Each chunk is one ``optax_clr.sweep`` program (``jit(vmap(scan))`` over
  its models); every chunk has the same shapes (the last is padded with
  copies of its last row), so the program compiles once and the others
  reuse it. After each chunk only its per-step losses and rates and its
  evaluations come to the host; its parameters and optimizer states are
  dropped, so memory holds one chunk's models, not all of them.
  """
  c = setup.config
  mc = c.model_config()
  branches = sorted({dataclasses.replace(r.spec, decay_fraction=0.2)
                     for r in rows}, key=repr)
  seeds = sorted({r.seed for r in rows})
  inits = {s: nnx.state(model_lib.make_model(mc, seed=s), nnx.Param)
           for s in seeds}
  orders = {s: data.batch_offsets(len(corpus.train), c.context, c.batch_size,
                                  s, range(c.steps)) for s in seeds}
  graphdef = nnx.graphdef(model_lib.make_model(mc, seed=0))
  shared = {'text': jnp.asarray(corpus.train),
            'val': data.validation_windows(corpus, c.context, c.eval_windows)}

  def loss_fn(params, offsets, *, data):  # pylint: disable=redefined-outer-name
    tokens = _windows(data['text'], offsets, c.context)
    return model_lib.loss_fn(nnx.merge(graphdef, params), tokens)

  def eval_fn(params, model_state, *, data):  # pylint: disable=redefined-outer-name
    del model_state
    return model_lib.bits_per_byte(nnx.merge(graphdef, params), data['val'])

  def optimizer(h):
    return model_lib.make_optimizer(schedules.traced_schedule(
        tuple(branches), h['branch'], h['peak'], h['fraction']),
                                    weight_decay=c.weight_decay)

  size = min(setup.models_per_sweep, len(rows))
  parts = []
  for first in range(0, len(rows), size):
    chunk = rows[first:first + size]
    chunk += [chunk[-1]] * (size - len(chunk))  # One shape: one compile.
    hp = {
        'branch': np.array([branches.index(dataclasses.replace(
            r.spec, decay_fraction=0.2)) for r in chunk]),
        'peak': np.array([r.peak for r in chunk], np.float32),
        'fraction': np.array([r.spec.decay_fraction for r in chunk],
                             np.float32),
    }
    params = jax.tree.map(lambda *x: jnp.stack(x),
                          *[inits[r.seed] for r in chunk])
    offsets = np.stack([orders[r.seed] for r in chunk])
    result = optax_clr.sweep(loss_fn, params, optimizer, hp, offsets,
                             params_axis=0, batches_axis=0, data=shared,
                             eval_fn=eval_fn, eval_every=c.steps // 6)
    kept = len(rows) - first if first + size > len(rows) else size
    parts.append(jax.device_get((result.losses[:kept],
                                 result.learning_rates[:kept],
                                 result.evals[:kept])))
    eval_steps = np.asarray(result.eval_steps)
    del result, params
    print(f'sweep: {first + kept} of {len(rows)} models trained', flush=True)
  losses, lrs, evals = (np.concatenate(x) for x in zip(*parts))
  return Records(losses, lrs, evals, eval_steps)


def cooldown_runs(setup: Setup, peak: float, workdir: str) -> dict[str, Any]:
  """A constant run per seed, cooled down from 40 % and 80 % of the budget.

  The constant phase runs to 80 % of ``steps`` (40 % when ``setup.cooldowns``
  is only ``('half',)``) with checkpoints at 40 % and 80 %; from each, a
  1-sqrt cooldown of 20 % of the final length (to half the budget and to the
  full budget). Seeds are the first ``setup.cooldown_seeds`` of
  ``setup.seeds``. Without ``setup.cooldowns`` (``--quick``: every trainer
  run compiles its own step, seconds each; ``tests/test_lm.py`` checks the
  trainer's cooldown) nothing runs.
  """
  c = setup.config
  if not setup.cooldowns:
    return {'peak': peak}
  lengths = {'half': c.steps // 2, 'full': c.steps}
  starts = {name: n - round(0.2 * n) for name, n in lengths.items()}
  out = {'peak': peak, **{name: [] for name in setup.cooldowns}}
  for seed in setup.seeds[:setup.cooldown_seeds]:
    base = dataclasses.replace(c, schedule='constant', seed=seed,
                               peak_lr=peak, decay_shape='1-sqrt')
    constant = os.path.join(workdir, f'constant-{seed}')
    train.train_and_evaluate(dataclasses.replace(
        base, steps=max(starts[name] for name in setup.cooldowns),
        checkpoint_every=starts['half']), constant, progress=False)
    for name in setup.cooldowns:
      run = dataclasses.replace(base, schedule='wsd', steps=lengths[name],
                                checkpoint_every=lengths[name])
      final = train.train_and_evaluate(
          run, os.path.join(workdir, f'cooldown-{name}-{seed}'),
          cooldown_from=os.path.join(constant, 'checkpoints',
                                     str(starts[name])), progress=False)
      out[name].append(final['val_bpb'])
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--out', default=None,
                      help='output folder (default runs/lm-compare, or'
                      ' runs/lm-quick with --quick)')
  parser.add_argument('--quick', action='store_true',
                      help='a smoke test: a tiny model, 60 steps, 4 schedules')
  args = parser.parse_args(argv)
  if args.quick:  # Read when the backend starts (ignored if it has).
    os.environ['XLA_FLAGS'] = ' '.join(
        filter(None, (os.environ.get('XLA_FLAGS'), _QUICK_XLA_FLAGS)))
  setup = QUICK if args.quick else Setup()
  out = args.out or os.path.join('runs', 'lm-quick' if args.quick
                                 else 'lm-compare')
  os.makedirs(out, exist_ok=True)
  results = compare(setup, out)
  print(report.markdown(results))
  return 0


def compare(setup: Setup, out: str) -> dict[str, Any]:
  """Runs everything, writes the files into ``out``; returns the results."""
  corpus = data.load_corpus()
  result, suggested = range_test(setup, corpus)
  optax_clr.plot_range_test(result, path=os.path.join(out, 'range_test.png'))
  print(f'range test: suggest_lr = {suggested:.4g}', flush=True)
  rows = make_rows(setup, suggested)
  sweep = run_sweep(setup, corpus, rows)
  # Kept until the report is written: a failure after the sweep loses nothing.
  np.savez(os.path.join(out, 'sweep.npz'), evals=sweep.evals,
           losses=sweep.losses, learning_rates=sweep.learning_rates)
  results = report.collect(setup, rows, sweep, suggested)
  wsd = reference_specs(setup, setup.config.steps)[0]
  peak = results['schedules'][wsd.name]['best_peak']
  with tempfile.TemporaryDirectory() as workdir:
    results['cooldown'] = cooldown_runs(setup, peak, workdir)
  report.add_checks(results)
  report.write(results, sweep, rows, out)
  os.remove(os.path.join(out, 'sweep.npz'))
  return results


if __name__ == '__main__':
  sys.exit(main())
