r"""Smith's Table 1 / Fig. 8 protocol on the bundled digits, every policy.

The protocol of "Cyclical Learning Rates for Training Neural Networks"
(Smith, 2015), scaled to scikit-learn's 8x8 digits:

1. run the LR range test (``optax_clr.range_test``) from the initial model
   and read ``base_lr, max_lr = optax_clr.suggest_clr_bounds(result)``;
2. train every policy with those bounds: a fixed rate at ``base_lr`` (the
   paper's baseline), the best fixed rate of a small grid, step /
   exponential / inverse-time decay (starting at ``max_lr``), triangular,
   triangular2, exp_range and one-cycle; each policy with several seeds
   (initialization and data order), all seeds of a policy trained together
   as one ``jax.vmap``-ed, ``jax.jit``-ed program (the fixed-rate grid too,
   its rate traced per model);
3. report, per policy, the final test accuracy and the iterations needed to
   first reach a target test accuracy (by default the baseline's mean final
   accuracy, as in the paper's Table 1), as mean ± std over seeds.

The schedules and the optimizer are the trainer's (``train.make_optimizer``:
SGD with momentum, the rate from ``optax.inject_hyperparams``), so each row is
what ``python examples/train.py --schedule NAME`` would train. Outputs under
``--out``: ``results.json``, ``results.md`` (the table), ``curves.png`` (test
accuracy and learning rate against iteration) and ``range_test.png``::

  python examples/compare_schedules.py                # runs/compare/
  python examples/compare_schedules.py --seeds 20 --epochs 24 --out /tmp/cmp
  python examples/compare_schedules.py --out docs/compare  # the committed one
"""

import argparse
from collections.abc import Sequence
import dataclasses
import json
import os
import sys
import time
from typing import Any, NamedTuple

if not __package__:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np
import optax

from examples import compile_cache
from examples import data
from examples import model as model_lib
from examples import multi_model
from examples import train
# pylint: enable=g-import-not-at-top,wrong-import-position

BASELINE = 'fixed (base_lr)'
BEST_FIXED = 'best fixed (grid)'
# The fixed-rate grid, as multiples of the range test's max_lr.
GRID_FACTORS = (0.125, 0.25, 0.5, 1.0, 2.0)


class Policy(NamedTuple):
  """A row of the comparison: a label and the trainer's schedule name."""

  label: str
  schedule: str


POLICIES = (
    Policy(BASELINE, 'fixed'),
    Policy('step_decay', 'step_decay'),
    Policy('exponential_decay', 'exponential_decay'),
    Policy('inverse_time_decay', 'inverse_time_decay'),
    Policy('triangular', 'triangular'),
    Policy('triangular2', 'triangular2'),
    Policy('exp_range', 'exp_range'),
    Policy('one_cycle', 'one_cycle'),
)


class Row(NamedTuple):
  """One policy's per-seed results."""

  label: str
  schedule: str
  base_lr: float
  max_lr: float
  final_accuracy: np.ndarray  # [seeds]
  iterations: np.ndarray  # [seeds]; NaN where the target was never reached.
  accuracy: np.ndarray  # [seeds, evals] test accuracy at each evaluation.
  lr: np.ndarray  # [steps] the first seed's learning rate per update.


def optimizer_fn(
    config: train.Config, steps_per_epoch: int
) -> multi_model.OptimizerFn:
  """The trainer's optimizer, with any ``config`` fields from ``hparams``.

  Inside the vmapped run the ``hparams`` are traced scalars; only the fixed
  rate's ``base_lr`` is traced here (``optax.constant_schedule`` takes it as
  is), the other policies' settings are shared by all seeds and stay concrete.
  """

  def build(hparams: multi_model.Hyperparams) -> optax.GradientTransformation:
    return train.make_optimizer(
        dataclasses.replace(config, **hparams), steps_per_epoch
    )

  return build


def train_policy(
    config: train.Config, dataset: data.Dataset, *, seeds: Sequence[int],
    steps_per_epoch: int, eval_every: int,
    fixed_lrs: Sequence[float] | None = None,
) -> multi_model.Trained:
  """Trains one schedule for every seed (and fixed rate) as ONE program.

  Args:
    config: the trainer config; ``schedule`` picks the policy.
    dataset: the data.
    seeds: the seeds.
    steps_per_epoch: updates per epoch.
    eval_every: updates between test evaluations.
    fixed_lrs: for the fixed-rate grid, the rates: every rate runs with every
      seed, ``base_lr`` traced per model.

  Returns:
    The :class:`multi_model.Trained` result, models ordered rate-major.
  """
  hparams = {}
  if fixed_lrs is not None:
    hparams['base_lr'] = [lr for lr in fixed_lrs for _ in seeds]
    seeds = [seed for _ in fixed_lrs for seed in seeds]
  return multi_model.train_models(
      dataset=dataset,
      model_name=config.model,
      optimizer_fn=optimizer_fn(config, steps_per_epoch),
      hparams=hparams,
      seeds=seeds,
      num_steps=config.epochs * steps_per_epoch,
      batch_size=config.batch_size,
      eval_every=eval_every,
  )


def iterations_to_reach(
    accuracy: np.ndarray, eval_steps: np.ndarray, target: float
) -> np.ndarray:
  """Per model, the first evaluated iteration with accuracy >= ``target``.

  Args:
    accuracy: ``[models, evals]`` test accuracies.
    eval_steps: ``[evals]`` the iteration of each evaluation.
    target: the accuracy to reach.

  Returns:
    ``[models]`` float iterations, NaN where the target was never reached.
  """
  reached = accuracy >= target
  first = np.argmax(reached, axis=-1)
  return np.where(reached.any(axis=-1), eval_steps[first], np.nan)


def mean_std(values: np.ndarray) -> tuple[float, float]:
  """Mean and (population) std of the finite values; NaN if none."""
  finite = values[np.isfinite(values)]
  if not finite.size:
    return float('nan'), float('nan')
  return float(finite.mean()), float(finite.std())


def make_row(
    policy: Policy, trained: multi_model.Trained, models: slice, base_lr: float,
    max_lr: float,
) -> Row:
  """Collects the models ``models`` of ``trained`` into a :class:`Row`."""
  accuracy = np.asarray(trained.history.test_accuracy[models])
  return Row(
      label=policy.label,
      schedule=policy.schedule,
      base_lr=base_lr,
      max_lr=max_lr,
      final_accuracy=accuracy[:, -1],
      iterations=np.full(len(accuracy), np.nan),
      accuracy=accuracy,
      lr=np.asarray(trained.history.lr[models][0]),
  )


def with_iterations(
    rows: Sequence[Row], eval_steps: np.ndarray, target: float
) -> list[Row]:
  """The rows with ``iterations`` to ``target`` filled in."""
  return [
      row._replace(
          iterations=iterations_to_reach(row.accuracy, eval_steps, target)
      )
      for row in rows
  ]


def lr_text(row: Row) -> str:
  """How a row's learning rate is set, for the table."""
  if row.schedule == 'fixed':
    return f'{row.base_lr:.3g}'
  if row.schedule.endswith('decay'):
    return f'from {row.max_lr:.3g}'
  return f'{row.base_lr:.3g} to {row.max_lr:.3g}'


def format_table(rows: Sequence[Row], target: float, num_steps: int) -> str:
  """The markdown results table (mean ± std over seeds)."""
  lines = [
      f'| policy | LR | final test accuracy | iterations to {target:.4f}'
      ' | reached |',
      '|---|---|---|---|---|',
  ]
  for row in rows:
    accuracy, accuracy_std = mean_std(row.final_accuracy)
    iterations, iterations_std = mean_std(row.iterations)
    reached = int(np.isfinite(row.iterations).sum())
    steps = (
        f'{iterations:.0f} ± {iterations_std:.0f}' if reached else
        f'> {num_steps}'
    )
    lines.append(
        f'| {row.label} | {lr_text(row)} | {accuracy:.4f} ± {accuracy_std:.4f}'
        f' | {steps} | {reached}/{len(row.iterations)} |'
    )
  return '\n'.join(lines)


def rounded(values: np.ndarray) -> list[float]:
  """Values as floats with 6 significant digits (a compact JSON)."""
  return [float(f'{value:.6g}') for value in values]


def row_json(row: Row) -> dict[str, Any]:
  """A row as JSON-ready data (NaN iterations become null)."""
  accuracy, accuracy_std = mean_std(row.final_accuracy)
  iterations, iterations_std = mean_std(row.iterations)

  def number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)

  return {
      'schedule': row.schedule,
      'base_lr': row.base_lr,
      'max_lr': row.max_lr,
      'final_accuracy': [float(a) for a in row.final_accuracy],
      'final_accuracy_mean': accuracy,
      'final_accuracy_std': accuracy_std,
      'iterations_to_target': [number(i) for i in row.iterations],
      'iterations_mean': number(iterations),
      'iterations_std': number(iterations_std),
      'reached': int(np.isfinite(row.iterations).sum()),
      'test_accuracy_mean': rounded(row.accuracy.mean(axis=0)),
      'lr': rounded(row.lr),
  }


def is_cyclical(row: Row) -> bool:
  """CLR and one-cycle rows (drawn apart from the fixed rates and decays)."""
  return row.schedule in train.CYCLICAL or row.schedule == 'one_cycle'


def save_curves(
    rows: Sequence[Row], eval_steps: np.ndarray, target: float, path: str
) -> None:
  """Writes test accuracy (mean ± std band) and LR against iteration.

  Three panels: the baseline with the fixed rates and decays, the baseline
  with the cyclical policies, and every policy's learning rate.
  """
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  figure = Figure(figsize=(15, 4.6), layout='constrained')
  axes = figure.subplots(1, 3, sharey=False)
  groups = (
      [row for row in rows if not is_cyclical(row)],
      [rows[0]] + [row for row in rows if is_cyclical(row)],
  )
  colors = {row.label: f'C{i}' for i, row in enumerate(rows)}
  low = min(float(row.accuracy.mean(axis=0)[len(eval_steps) // 4])
            for row in rows)
  for ax, group in zip(axes, groups):
    for row in group:
      mean, std = row.accuracy.mean(axis=0), row.accuracy.std(axis=0)
      ax.plot(eval_steps, mean, color=colors[row.label], label=row.label)
      ax.fill_between(eval_steps, mean - std, mean + std,
                      color=colors[row.label], alpha=0.15)
    ax.axhline(target, color='k', lw=0.8, ls=':', label='target')
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_xlabel('iteration')
    ax.set_ylabel('test accuracy (mean ± std over seeds)')
    ax.legend(fontsize='small', loc='lower right')
    ax.grid(alpha=0.3)
  for row in rows:
    axes[2].plot(np.arange(len(row.lr)), row.lr, color=colors[row.label],
                 label=row.label)
  axes[2].set_yscale('log')
  axes[2].set_xlabel('iteration')
  axes[2].set_ylabel('learning rate')
  axes[2].grid(alpha=0.3)
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  figure.savefig(path, dpi=110)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  defaults = train.Config()
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n')[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  add = parser.add_argument
  add('--dataset', default='digits', choices=data.DATASETS)
  add('--data-dir', default=None)
  add('--model', default='mlp', choices=model_lib.MODELS,
      help='mlp by default: XLA:CPU runs convolutions inside'
      ' lax.scan slowly (jax-ml/jax#12868)')
  add('--seeds', type=int, default=10, help='seeds per policy (0, 1, ...)')
  add('--epochs', type=int, default=16)
  add('--batch-size', type=int, default=defaults.batch_size)
  add('--step-size-epochs', type=float, default=defaults.step_size_epochs,
      help='half a CLR cycle, and the decay period, in epochs')
  add('--gamma', type=float, default=defaults.gamma,
      help='exp_range per-step amplitude decay')
  add('--decay-rate', type=float, default=defaults.decay_rate,
      help='the decays\' rate per period')
  add('--momentum', type=float, default=defaults.momentum)
  add('--find-lr-steps', type=int, default=defaults.find_lr_steps)
  add('--evals-per-epoch', type=int, default=4)
  add('--target', type=float, default=None,
      help='test accuracy to reach (default: the baseline\'s final mean)')
  add('--out', default=os.path.join('runs', 'compare'),
      help='output folder (docs/compare holds the committed results)')
  compile_cache.add_flag(parser)
  return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
  """Runs the whole comparison; returns the JSON-ready results."""
  dataset = data.load_dataset(args.dataset, args.data_dir)
  config = train.Config(
      dataset=args.dataset, data_dir=args.data_dir, model=args.model,
      epochs=args.epochs, batch_size=args.batch_size,
      step_size_epochs=args.step_size_epochs, gamma=args.gamma,
      decay_rate=args.decay_rate, momentum=args.momentum,
      find_lr_steps=args.find_lr_steps, progress=False,
  )
  steps_per_epoch = len(dataset.train_labels) // config.batch_size
  if steps_per_epoch % args.evals_per_epoch:
    raise ValueError(
        f'--evals-per-epoch={args.evals_per_epoch} must divide the'
        f' {steps_per_epoch} steps per epoch.'
    )
  eval_every = steps_per_epoch // args.evals_per_epoch
  os.makedirs(args.out, exist_ok=True)
  base_lr, max_lr = train.find_lr_bounds(config, dataset, print, args.out)
  config = dataclasses.replace(config, base_lr=base_lr, max_lr=max_lr)
  seeds = list(range(args.seeds))
  rows = []
  eval_steps = None
  for policy in POLICIES:
    trained = train_policy(
        dataclasses.replace(config, schedule=policy.schedule), dataset,
        seeds=seeds, steps_per_epoch=steps_per_epoch, eval_every=eval_every,
    )
    eval_steps = trained.eval_steps
    rows.append(make_row(policy, trained, slice(None), base_lr, max_lr))
    print(f'{policy.label}: final accuracy'
          f' {rows[-1].final_accuracy.mean():.4f} ({trained.seconds:.1f} s'
          f' for {len(seeds)} seeds, compile included)')
  grid_lrs = [factor * max_lr for factor in GRID_FACTORS]
  grid = train_policy(
      dataclasses.replace(config, schedule='fixed'), dataset, seeds=seeds,
      steps_per_epoch=steps_per_epoch, eval_every=eval_every,
      fixed_lrs=grid_lrs,
  )
  grid_rows = [
      make_row(
          Policy(f'fixed {lr:.3g}', 'fixed'), grid,
          slice(i * len(seeds), (i + 1) * len(seeds)), lr, max_lr,
      )
      for i, lr in enumerate(grid_lrs)
  ]
  best = max(grid_rows, key=lambda row: row.final_accuracy.mean())
  rows.insert(1, best._replace(label=BEST_FIXED))
  target = args.target
  if target is None:
    target = float(rows[0].final_accuracy.mean())
  rows = with_iterations(rows, eval_steps, target)
  grid_rows = with_iterations(grid_rows, eval_steps, target)
  num_steps = config.epochs * steps_per_epoch
  table = format_table(rows, target, num_steps)
  print(table)
  results = {
      'protocol': 'Smith 2015, Table 1 / Fig. 8',
      'dataset': args.dataset,
      'model': args.model,
      'optimizer': f'sgd, momentum {args.momentum}',
      'seeds': seeds,
      'epochs': args.epochs,
      'batch_size': args.batch_size,
      'steps_per_epoch': steps_per_epoch,
      'num_steps': num_steps,
      'step_size': round(args.step_size_epochs * steps_per_epoch),
      'gamma': args.gamma,
      'decay_rate': args.decay_rate,
      'bounds': {'base_lr': base_lr, 'max_lr': max_lr},
      'target_accuracy': target,
      'eval_steps': [int(step) for step in eval_steps],
      'policies': {row.label: row_json(row) for row in rows},
      'fixed_grid': {row.label: row_json(row) for row in grid_rows},
      'versions': {'jax': jax.__version__, 'optax': optax.__version__},
      'device': f'{len(jax.devices())} x {jax.devices()[0].device_kind}',
      'table': table,
  }
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump(results, f, indent=1)
    f.write('\n')
  with open(os.path.join(args.out, 'results.md'), 'w') as f:
    f.write(table + '\n')
  save_curves(rows, eval_steps, target, os.path.join(args.out, 'curves.png'))
  print(f'wrote {args.out}/results.json, results.md, curves.png,'
        ' range_test.png')
  return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  start = time.perf_counter()
  args = parse_args(argv)
  compile_cache.enable(args.compilation_cache)
  results = run(args)
  print(f'total {time.perf_counter() - start:.1f} s')
  return results


if __name__ == '__main__':
  main()
