r"""The digits trainer with and without ``--find-lr``, seeds 0-2: a table.

Each run is ``python examples/train.py`` in a fresh process (so its wall
time includes start-up and compilation, as a user sees it), once with the
default hand-set bounds and once with ``--find-lr``, seed by seed, the two
interleaved. Writes ``results.json`` (every run's final metrics, the rate
``find_lr`` chose, its candidates, scores and cost) and ``table.md`` under
``--out`` (``docs/find_lr.md`` quotes the committed ones; the runs' workdirs
go under ``--workdirs``, git-ignored by default)::

  python -m examples.find_lr_report                  # runs/find_lr_report/
  python -m examples.find_lr_report --out docs/find_lr_report  # committed
  python -m examples.find_lr_report --seeds 0 --epochs 2 --out /tmp/quick
  python -m examples.find_lr_report --merge A/results.json B/results.json \
      --out DIR   # seeds run by separate processes, as one table

Unlike the other results files, this one holds wall-clock times: the extra
time ``--find-lr`` costs is one of the things it reports.
"""

import argparse
from collections.abc import Sequence
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import Any

if not __package__:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np
import optax

from examples import data
from examples.trainer.config import Config
# pylint: enable=g-import-not-at-top,wrong-import-position

TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train.py')
VARIANTS = {'default': [], 'find_lr': ['--find-lr']}


def run_once(workdir: str, seed: int, epochs: int,
             flags: Sequence[str]) -> dict[str, Any]:
  """One ``train.py`` run in a fresh process: its final metrics and time."""
  if os.path.exists(workdir):
    shutil.rmtree(workdir)  # train.py resumes an existing workdir
  command = [sys.executable, TRAIN, '--seed', str(seed), '--epochs',
             str(epochs), '--no-progress', '--workdir', workdir, *flags]
  start = time.perf_counter()
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  seconds = time.perf_counter() - start
  if done.returncode:
    raise RuntimeError(f'{" ".join(command)} failed:\n{done.stderr}')
  final = json.loads(done.stdout.strip().splitlines()[-1])
  record = {'test_accuracy': final['test_accuracy'],
            'test_loss': final['test_loss'], 'base_lr': final['base_lr'],
            'max_lr': final['max_lr'], 'wall_s': seconds}
  found = os.path.join(workdir, 'find_lr.json')
  if os.path.exists(found):
    with open(found) as f:
      record['find_lr'] = json.load(f)
  return record


def table(results: dict[str, Any]) -> str:
  """The markdown table: per seed, with and without ``--find-lr``."""
  seeds = results['seeds']
  runs = results['runs']
  steps = results['train_steps']
  head = ('| run | ' + ' | '.join(f'seed {s}' for s in seeds)
          + ' | mean |')
  lines = [head, '|---' * (len(seeds) + 2) + '|']
  for name, label in (('default', 'default bounds 0.01-0.1'),
                      ('find_lr', '`--find-lr`')):
    accuracy = [100 * runs[name][str(s)]['test_accuracy'] for s in seeds]
    lines.append(f'| test accuracy (%), {label} | '
                 + ' | '.join(f'{a:.2f}' for a in accuracy)
                 + f' | {np.mean(accuracy):.2f} |')
  found = [runs['find_lr'][str(s)]['find_lr'] for s in seeds]

  def row(label, values, mean=None):
    return f'| {label} | ' + ' | '.join(values) + f' | {mean or ""} |'

  lines.append(row('`find_lr` rate', [f'{f["learning_rate"]:.3g}'
                                      for f in found]))
  lines.append(row('CLR bounds (base-max)', [
      f'{f["clr_bounds"][0]:.3g}-{f["clr_bounds"][1]:.3g}' for f in found]))
  cost = [f['cost_steps'] for f in found]
  lines.append(row(
      f'extra optimizer steps (x the {steps} of training)',
      [f'{c} ({c / steps:.1f}x)' for c in cost], f'{np.mean(cost):.0f}'))
  extra = [runs['find_lr'][str(s)]['wall_s'] - runs['default'][str(s)]['wall_s']
           for s in seeds]
  lines.append(row('`find_lr` time (s)', [f'{f["seconds"]:.0f}' for f in found],
                   f'{np.mean([f["seconds"] for f in found]):.0f}'))
  lines.append(row('extra wall time of the run (s)', [f'{e:.0f}' for e in extra],
                   f'{np.mean(extra):.0f}'))
  walls = [runs['default'][str(s)]['wall_s'] for s in seeds]
  lines.append(row('wall time without `--find-lr` (s)',
                   [f'{w:.0f}' for w in walls], f'{np.mean(walls):.0f}'))
  return '\n'.join(lines)


def _merge(paths: Sequence[str], path: str, table_path: str) -> int:
  """Writes the results of several runs of this script as one."""
  parts = []
  for part in paths:
    with open(part) as f:
      parts.append(json.load(f))
  merged = dict(parts[0], parts=[p['command'] for p in parts])
  merged['command'] = None  # see 'parts'
  # The seeds each part finished (a part stopped early lists more).
  merged['seeds'] = sorted({int(seed) for p in parts
                            for seed in p['runs']['find_lr']})
  merged['runs'] = {
      name: {seed: run for p in parts for seed, run in p['runs'][name].items()}
      for name in VARIANTS}
  if len({p['epochs'] for p in parts}) != 1:
    raise ValueError('the results to merge differ in --epochs.')
  merged['table'] = table(merged)
  with open(path, 'w') as f:
    json.dump(merged, f, indent=1)
  with open(table_path, 'w') as f:
    f.write(merged['table'] + '\n')
  print(merged['table'])
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--epochs', type=int, default=Config().epochs)
  parser.add_argument('--out', default=os.path.join('runs', 'find_lr_report'),
                      help='results.json and table.md (docs/find_lr_report'
                      ' holds the committed ones)')
  parser.add_argument('--workdirs',
                      default=os.path.join('runs', 'find_lr_report_workdirs'),
                      help="the runs' workdirs (checkpoints, metrics, plots)")
  parser.add_argument('--merge', nargs='+', default=None, metavar='JSON',
                      help='run nothing: merge these results.json files (of'
                      ' other seeds) into --out')
  args = parser.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, 'results.json')
  if args.merge:
    return _merge(args.merge, path, os.path.join(args.out, 'table.md'))
  n = len(data.load_dataset('digits').train_labels)
  results = {
      'command': ' '.join(['python -m examples.find_lr_report',
                           *(sys.argv[1:] if argv is None else argv)]),
      'seeds': args.seeds,
      'epochs': args.epochs,
      'train_steps': args.epochs * (n // Config().batch_size),
      'runs': {name: {} for name in VARIANTS},
      'versions': {'jax': jax.__version__, 'optax': optax.__version__,
                   'numpy': np.__version__, 'python': platform.python_version(),
                   'platform': jax.devices()[0].platform,
                   'cpu_count': os.cpu_count()},
  }
  for seed in args.seeds:
    for name, flags in VARIANTS.items():
      workdir = os.path.join(args.workdirs, f'{name}-{seed}')
      run = run_once(workdir, seed, args.epochs, flags)
      results['runs'][name][str(seed)] = run
      print(f'seed {seed} {name}: test accuracy {run["test_accuracy"]:.4f},'
            f' {run["wall_s"]:.0f} s', flush=True)
      with open(path, 'w') as f:  # every run kept as soon as it ends
        json.dump(results, f, indent=1)
  text = table(results)
  results['table'] = text
  with open(path, 'w') as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(args.out, 'table.md'), 'w') as f:
    f.write(text + '\n')
  print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
