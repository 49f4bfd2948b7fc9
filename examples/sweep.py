r"""A grid of CLR hyperparameters trained as K models in ONE compiled program.

Every grid point (``max_lr`` x ``step_size``, optionally x seeds) is a model
with its own parameters, optimizer state, schedule hyperparameters and data
order. The models are stacked along a leading K axis and a pure training run
(a ``lax.scan`` over steps with the schedule inside the step, test accuracy
at every evaluation) is ``jax.vmap``-ed over that axis and ``jax.jit``-ed
once. With several devices the K axis is sharded over them
(``jax.sharding.Mesh`` + ``NamedSharding``); on CPU try
``XLA_FLAGS=--xla_force_host_platform_device_count=2``.

The script prints the table of final test accuracies, writes a heatmap, and
prints two speedups (first calls apart, ``block_until_ready``, medians of
repeats): one sweep of K models against K sweeps of one model, and, for a trainer that dispatches one jitted step at
a time from Python (as ``train.py`` does), one vmapped step call against K
single-model step calls per step::

  python examples/sweep.py        # heatmap in runs/sweep_heatmap.png
  python examples/sweep.py --max-lrs 0.05,0.1,0.2 --step-size-epochs 1,2,4
  python examples/sweep.py --heatmap docs/images/sweep_heatmap.png  # the docs'

The models train through ``optax_clr.sweep``; :mod:`examples.multi_model`
holds the NNX glue, shared with ``compare_schedules.py``.
"""

import argparse
from collections.abc import Callable, Sequence
import itertools
import os
import statistics
import sys
import time
from typing import Any, NamedTuple

if not __package__:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np
import optax

import optax_clr
from examples import compile_cache
from examples import data
from examples import model as model_lib
from examples import multi_model
# pylint: enable=g-import-not-at-top,wrong-import-position


class Speedup(NamedTuple):
  """Steady-state seconds of the vmapped program and of K sequential runs."""

  num_models: int
  vmapped_seconds: float  # Median over repeats.
  sequential_seconds: float  # Median over repeats, all K runs together.
  vmapped_first_seconds: float  # The first call: tracing and compiling too.
  single_first_seconds: float

  @property
  def speedup(self) -> float:
    return self.sequential_seconds / self.vmapped_seconds


def _first_call(fn: Callable[[], Any]) -> tuple[Any, float]:
  start = time.perf_counter()
  outputs = jax.block_until_ready(fn())
  return outputs, time.perf_counter() - start


def measure_speedup(
    program: multi_model.Program, *, repeats: int
) -> tuple[Speedup, tuple[multi_model.TrainState, multi_model.History]]:
  """Times one sweep of K models against K sweeps of one model.

  Both are compiled by a first call (its time, compile included, reported
  apart); then the two are run ``repeats`` times, interleaved, each ending
  in ``jax.block_until_ready``, and the medians are compared.

  Returns:
    The :class:`Speedup` and the vmapped program's (state, history).
  """
  if repeats < 1:
    raise ValueError(f'repeats must be >= 1, got {repeats}.')
  num_models = program.num_models
  every = slice(None)
  each = [slice(k, k + 1) for k in range(num_models)]
  outputs, vmapped_first = _first_call(lambda: program.run(every))
  _, single_first = _first_call(lambda: program.run(each[0]))
  vmapped_times, sequential_times = [], []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(program.run(every))
    vmapped_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    jax.block_until_ready([program.run(models) for models in each])
    sequential_times.append(time.perf_counter() - start)
  timing = Speedup(
      num_models,
      statistics.median(vmapped_times),
      statistics.median(sequential_times),
      vmapped_first,
      single_first,
  )
  return timing, outputs


def measure_step_speedup(
    program: multi_model.Program, *, num_steps: int, repeats: int
) -> Speedup:
  """Times a Python loop of jitted steps: 1 vmapped call vs K calls a step.

  The pattern of a per-step trainer such as ``train.py``: every step is a
  dispatch from Python. The batches are on device before timing starts;
  compile time is reported apart; each pass of ``num_steps`` steps ends in
  ``jax.block_until_ready``; the two loops alternate ``repeats`` times and
  the medians are compared.
  """
  states, hparams, orders = program.states, program.hparams, program.orders
  num_models = program.num_models
  if not 1 <= num_steps <= orders.shape[1]:
    raise ValueError(
        f'num_steps must be in [1, {orders.shape[1]}], got {num_steps}.'
    )
  images, labels = (np.asarray(program.data[name])
                    for name in ('images', 'labels'))
  batches = jax.device_put(
      [(images[orders[:, t]], labels[orders[:, t]]) for t in range(num_steps)]
  )
  models = [
      (
          multi_model.unstack(states, k),
          multi_model.unstack(hparams, k),
          [(x[k], y[k]) for x, y in batches],
      )
      for k in range(num_models)
  ]
  vmapped, vmapped_compile = multi_model.timed_compile(
      jax.jit(jax.vmap(program.steps.train)), states, hparams, *batches[0]
  )
  single, single_compile = multi_model.timed_compile(
      jax.jit(program.steps.train), *models[0][:2], *models[0][2][0]
  )
  jax.block_until_ready((batches, models))

  def loop(step, state, hp, model_batches):
    for x, y in model_batches:
      state, _ = step(state, hp, x, y)
    return state

  vmapped_times, sequential_times = [], []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(loop(vmapped, states, hparams, batches))
    vmapped_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    jax.block_until_ready([loop(single, *model) for model in models])
    sequential_times.append(time.perf_counter() - start)
  return Speedup(
      num_models, statistics.median(vmapped_times),
      statistics.median(sequential_times), vmapped_compile, single_compile,
  )


def triangular_fn(hparams: multi_model.Hyperparams) -> optax.Schedule:
  """Triangular CLR from traced ``base_lr``, ``max_lr``, ``step_size``."""
  return optax_clr.triangular_schedule(
      hparams['base_lr'], hparams['max_lr'], hparams['step_size']
  )


class Grid(NamedTuple):
  """The sweep's grid: max_lr x step_size x seed, one model per point."""

  max_lrs: tuple[float, ...]
  step_size_epochs: tuple[int, ...]
  seeds: tuple[int, ...]

  def points(self) -> list[tuple[float, int, int]]:
    """``(max_lr, step_size_epochs, seed)`` for every model, row-major."""
    return list(
        itertools.product(self.max_lrs, self.step_size_epochs, self.seeds)
    )

  def hparams(self, steps_per_epoch: int, ratio: float) -> dict[str, list]:
    """Triangular hyperparameters per model: ``base_lr = max_lr / ratio``."""
    points = self.points()
    return {
        'base_lr': [max_lr / ratio for max_lr, _, _ in points],
        'max_lr': [max_lr for max_lr, _, _ in points],
        'step_size': [epochs * steps_per_epoch for _, epochs, _ in points],
    }

  def to_cells(self, per_model: np.ndarray) -> np.ndarray:
    """``[K]`` values as ``[max_lrs, step_sizes, seeds]``."""
    shape = (len(self.max_lrs), len(self.step_size_epochs), len(self.seeds))
    return np.asarray(per_model).reshape(shape)


def format_table(grid: Grid, accuracy: np.ndarray) -> str:
  """A markdown table of final test accuracy (mean ± std over seeds)."""
  cells = grid.to_cells(accuracy)
  header = '| max_lr \\ step_size (epochs) | ' + ' | '.join(
      str(epochs) for epochs in grid.step_size_epochs
  ) + ' |'
  rule = '|---' * (len(grid.step_size_epochs) + 1) + '|'
  rows = [header, rule]
  for i, max_lr in enumerate(grid.max_lrs):
    entries = []
    for j in range(len(grid.step_size_epochs)):
      values = cells[i, j]
      entry = f'{values.mean():.4f}'
      if len(values) > 1:
        entry += f' ± {values.std():.4f}'
      entries.append(entry)
    rows.append(f'| {max_lr:g} | ' + ' | '.join(entries) + ' |')
  return '\n'.join(rows)


def save_heatmap(
    grid: Grid, accuracy: np.ndarray, path: str, *, ratio: float
) -> None:
  """Writes the mean final test accuracy per grid cell as a heatmap PNG."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  mean = grid.to_cells(accuracy).mean(axis=-1)
  rows, columns = mean.shape
  figure = Figure(figsize=(1.6 + 1.3 * columns, 1.2 + 0.7 * rows),
                  layout='constrained')
  ax = figure.subplots()
  image = ax.imshow(mean, cmap='viridis', aspect='auto')
  ax.set_xticks(range(columns), [str(e) for e in grid.step_size_epochs])
  ax.set_yticks(range(rows), [f'{lr:g}' for lr in grid.max_lrs])
  ax.set_xlabel('step_size (epochs)')
  ax.set_ylabel('max_lr')
  ax.set_title(f'final test accuracy, triangular CLR\n(mean of'
               f' {len(grid.seeds)} seed(s), base_lr = max_lr / {ratio:g})')
  middle = (mean.min() + mean.max()) / 2
  for (i, j), value in np.ndenumerate(mean):
    color = 'k' if value > middle else 'w'
    ax.text(j, i, f'{value:.3f}', ha='center', va='center', color=color)
  figure.colorbar(image, ax=ax)
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  figure.savefig(path, dpi=110)


def parse_list(kind: Callable[[str], Any]) -> Callable[[str], tuple]:
  """An argparse type for comma-separated lists."""
  return lambda text: tuple(kind(item) for item in text.split(','))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', default='digits')
  parser.add_argument('--data-dir', default=None)
  parser.add_argument('--model', default='mlp', choices=model_lib.MODELS,
                      help='mlp by default: XLA:CPU runs convolutions'
                      ' inside lax.scan slowly (jax-ml/jax#12868)')
  parser.add_argument('--max-lrs', type=parse_list(float),
                      default=(0.05, 0.1, 0.2, 0.4, 0.8))
  parser.add_argument('--step-size-epochs', type=parse_list(int),
                      default=(1, 2, 4))
  parser.add_argument('--seeds', type=parse_list(int), default=(0, 1, 2))
  parser.add_argument('--ratio', type=float, default=4.0,
                      help='base_lr = max_lr / ratio (Smith suggests 3 or 4)')
  parser.add_argument('--epochs', type=int, default=8)
  parser.add_argument('--batch-size', type=int, default=32)
  parser.add_argument('--momentum', type=float, default=0.9)
  parser.add_argument('--repeats', type=int, default=3,
                      help='timing repeats (0 skips the speedup measurement)')
  parser.add_argument('--timing-steps', type=int, default=100,
                      help='steps of the per-step (Python loop) timing')
  parser.add_argument('--heatmap',
                      default=os.path.join('runs', 'sweep_heatmap.png'),
                      help='PNG to write (the committed one:'
                      ' docs/images/sweep_heatmap.png)')
  compile_cache.add_flag(parser)
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the sweep; returns the table, accuracies and timings."""
  args = parse_args(argv)
  compile_cache.enable(args.compilation_cache)
  dataset = data.load_dataset(args.dataset, args.data_dir)
  steps_per_epoch = len(dataset.train_labels) // args.batch_size
  grid = Grid(args.max_lrs, args.step_size_epochs, args.seeds)
  program = multi_model.prepare(
      dataset,
      model_name=args.model,
      optimizer_fn=multi_model.sgd_with(triangular_fn, args.momentum),
      hparams=grid.hparams(steps_per_epoch, args.ratio),
      seeds=[seed for _, _, seed in grid.points()],
      num_steps=args.epochs * steps_per_epoch,
      batch_size=args.batch_size,
      eval_every=steps_per_epoch,
  )
  num_models = program.num_models
  print(f'{num_models} models in one program on {len(jax.devices())} '
        f'{jax.devices()[0].platform} device(s); jax {jax.__version__}, '
        f'optax {optax.__version__}')
  timing = None
  if args.repeats:
    timing, (_, history) = measure_speedup(program, repeats=args.repeats)
  else:
    _, history = jax.block_until_ready(program.run())
  accuracy = np.asarray(history.test_accuracy[:, -1])
  table = format_table(grid, accuracy)
  print(table)
  save_heatmap(grid, accuracy, args.heatmap, ratio=args.ratio)
  print(f'wrote {args.heatmap}')
  if timing is not None:
    print(
        f'first call (compile included): vmapped'
        f' {timing.vmapped_first_seconds:.2f} s, single'
        f' {timing.single_first_seconds:.2f} s\n'
        f'steady state (median of {args.repeats}): {num_models} models'
        f' vmapped {timing.vmapped_seconds:.3f} s, {num_models} sequential'
        f' runs {timing.sequential_seconds:.3f} s -> speedup'
        f' {timing.speedup:.2f}x'
    )
    steps = min(args.timing_steps, args.epochs * steps_per_epoch)
    step_timing = measure_step_speedup(
        program, num_steps=steps, repeats=args.repeats
    )
    print(
        f'Python loop of jitted steps ({steps} steps, median of'
        f' {args.repeats}): 1 vmapped call per step'
        f' {step_timing.vmapped_seconds:.3f} s, {num_models} calls per step'
        f' {step_timing.sequential_seconds:.3f} s -> speedup'
        f' {step_timing.speedup:.2f}x'
    )
  else:
    step_timing = None
  return {'table': table, 'accuracy': accuracy, 'grid': grid,
          'timing': timing, 'step_timing': step_timing}


if __name__ == '__main__':
  main()
