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

The schedules and the optimizer are the trainer's (``make_optimizer``:
SGD with momentum, the rate from ``optax.inject_hyperparams``), so each row is
what ``python examples/train.py --schedule NAME`` would train. Outputs under
``--out``: ``results.json``, ``results.md`` (the table), ``curves.png`` (test
accuracy and learning rate against iteration) and ``range_test.png``::

  python examples/compare_schedules.py                # runs/compare/
  python examples/compare_schedules.py --seeds 20 --epochs 24 --out /tmp/cmp
  python examples/compare_schedules.py --out docs/compare  # the committed one

The policies and their training live in ``examples/compare/policies.py``,
the rows, table, JSON and curves in ``examples/compare/results.py``; this
file holds the command line and the run, and re-exports their names.
"""

import argparse
from collections.abc import Sequence
import dataclasses
import json
import os
import sys
import time
from typing import Any

if not __package__:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import optax

from examples import compile_cache
from examples import data
from examples import model as model_lib
from examples.compare.policies import BASELINE
from examples.compare.policies import BEST_FIXED
from examples.compare.policies import GRID_FACTORS
from examples.compare.policies import Policy
from examples.compare.policies import POLICIES
from examples.compare.policies import optimizer_fn
from examples.compare.policies import train_policy
from examples.compare.results import format_table
from examples.compare.results import is_cyclical
from examples.compare.results import iterations_to_reach
from examples.compare.results import lr_text
from examples.compare.results import make_row
from examples.compare.results import mean_std
from examples.compare.results import Row
from examples.compare.results import row_json
from examples.compare.results import rounded
from examples.compare.results import save_curves
from examples.compare.results import with_iterations
from examples.trainer.config import Config
from examples.trainer.find_lr import find_lr_bounds
# pylint: enable=g-import-not-at-top,wrong-import-position

__all__ = (
    'BASELINE',
    'BEST_FIXED',
    'GRID_FACTORS',
    'POLICIES',
    'Policy',
    'Row',
    'format_table',
    'is_cyclical',
    'iterations_to_reach',
    'lr_text',
    'main',
    'make_row',
    'mean_std',
    'optimizer_fn',
    'parse_args',
    'rounded',
    'row_json',
    'run',
    'save_curves',
    'train_policy',
    'with_iterations',
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  defaults = Config()
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
  config = Config(
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
  base_lr, max_lr = find_lr_bounds(config, dataset, print, args.out)
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
