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
prints two speedups (compile time apart, ``block_until_ready``, medians of
repeats): the vmapped program against K sequential runs of the same
single-model program, and, for a trainer that dispatches one jitted step at
a time from Python (as ``train.py`` does), one vmapped step call against K
single-model step calls per step::

  python examples/sweep.py
  python examples/sweep.py --max-lrs 0.05,0.1,0.2 --step-size-epochs 1,2,4

The training engine here (:func:`train_models`) is also what
``compare_schedules.py`` runs.
"""

import argparse
from collections.abc import Callable, Mapping, Sequence
import itertools
import math
import os
import statistics
import sys
import time
from typing import Any, NamedTuple

if not __package__:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_clr
from examples import data
from examples import model as model_lib
from examples import train
# pylint: enable=g-import-not-at-top,wrong-import-position

Hyperparams = Mapping[str, jax.Array]
# Builds a model's optimizer (schedule inside) from its hyperparameters,
# concrete at initialization and traced scalars inside the vmapped run.
OptimizerFn = Callable[[Hyperparams], optax.GradientTransformation]
MODEL_AXIS = 'models'
LEARNING_RATE = 'learning_rate'


class TrainState(NamedTuple):
  """One model's training state (a leading K axis when stacked)."""

  params: Any
  rest: Any  # The model's non-parameter state (e.g. RNG counters).
  opt_state: Any  # Its count is the schedule's position.


class History(NamedTuple):
  """What a run records: per step and per evaluation."""

  lr: jax.Array  # [steps] the rate each update used.
  loss: jax.Array  # [steps] the training-batch loss before each update.
  test_loss: jax.Array  # [evals]
  test_accuracy: jax.Array  # [evals]


class Trained(NamedTuple):
  """The result of :func:`train_models` (arrays with a leading K axis)."""

  history: History
  state: TrainState
  eval_steps: np.ndarray  # [evals] updates done at each evaluation.
  compile_seconds: float
  run_seconds: float


def sgd_with(
    schedule_fn: Callable[[Hyperparams], optax.Schedule], momentum: float
) -> OptimizerFn:
  """SGD with momentum, its learning rate scheduled by ``schedule_fn``.

  ``optax.inject_hyperparams`` keeps the rate each update used in the
  optimizer state (``hyperparams["learning_rate"]``), where the run reads it.
  """

  def optimizer_fn(hparams: Hyperparams) -> optax.GradientTransformation:
    return optax.inject_hyperparams(optax.sgd)(
        learning_rate=schedule_fn(hparams), momentum=momentum
    )

  return optimizer_fn


def init_state(
    dataset: data.Dataset, model_name: str, seed: int,
    optimizer: optax.GradientTransformation,
) -> tuple[nnx.GraphDef, TrainState]:
  """Builds one model and splits it into a graph and a pure state."""
  module = model_lib.make_model(model_name, dataset, seed=seed)
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  opt_state = optimizer.init(params)
  return graphdef, TrainState(params, rest, opt_state)


def stack(trees: Sequence[Any]) -> Any:
  """Stacks identically structured pytrees along a new leading axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree: Any, index: int) -> Any:
  """The ``index``-th slice of a stacked pytree."""
  return jax.tree.map(lambda leaf: leaf[index], tree)


def batch_order(
    num_examples: int, batch_size: int, num_steps: int, seed: int
) -> np.ndarray:
  """Indices of ``num_steps`` shuffled batches: the trainer's data order.

  The epochs come from ``data.epoch_batches`` with
  ``np.random.default_rng(seed)``, as in ``train.py --seed``, so model k of a
  sweep sees the batches a ``train.py`` run with its seed would.

  Returns:
    int32 array of shape ``[num_steps, batch_size]``.
  """
  rng = np.random.default_rng(seed)
  index = np.arange(num_examples, dtype=np.int32)
  epochs, have = [], 0
  while have < num_steps:
    epochs.append(data.epoch_batches(index, index, batch_size, rng)[0])
    have += len(epochs[-1])
  return np.concatenate(epochs)[:num_steps]


class Steps(NamedTuple):
  """One model's pure training step and evaluation."""

  train: Callable[..., tuple[TrainState, tuple[jax.Array, jax.Array]]]
  evaluate: Callable[..., tuple[jax.Array, jax.Array]]


def make_steps(graphdef: nnx.GraphDef, optimizer_fn: OptimizerFn) -> Steps:
  """The pure step of ONE model, ``train(state, hparams, images, labels)``.

  Args:
    graphdef: the model's graph from ``nnx.split``.
    optimizer_fn: builds the optimizer from this model's hyperparameters
      (traced scalars under ``jax.vmap``); an ``optax.inject_hyperparams``
      optimizer with a ``learning_rate`` schedule.

  Returns:
    :class:`Steps`: ``train`` returns the new state and ``(lr, loss)``, the
    rate the update used and the batch loss before it; ``evaluate(state,
    images, labels)`` returns ``(loss, accuracy)``.
  """

  def loss_and_rest(params, rest, images, labels):
    module = nnx.merge(graphdef, params, rest)
    loss, logits = train.loss_fn(module, images, labels)
    _, _, new_rest = nnx.split(module, nnx.Param, ...)
    return loss, (logits, new_rest)

  def train_step(state, hparams, images, labels):
    grad_fn = jax.value_and_grad(loss_and_rest, has_aux=True)
    (loss, (_, rest)), grads = grad_fn(state.params, state.rest, images, labels)
    updates, opt_state = optimizer_fn(hparams).update(
        grads, state.opt_state, state.params
    )
    params = optax.apply_updates(state.params, updates)
    lr = opt_state.hyperparams[LEARNING_RATE]
    return TrainState(params, rest, opt_state), (lr, loss)

  def evaluate(state, images, labels):
    loss, (logits, _) = loss_and_rest(state.params, state.rest, images, labels)
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return loss, accuracy

  return Steps(train_step, evaluate)


def make_run(steps: Steps) -> Callable[..., tuple[TrainState, History]]:
  """The pure training run of ONE model (a scan of steps); vmap it for K.

  Args:
    steps: the model's :class:`Steps`.

  Returns:
    ``run(state, hparams, order, images, labels, test_images, test_labels)``
    where ``order`` is ``[evals, steps_per_eval, batch]`` batch indices; it
    returns the final state and the :class:`History`.
  """

  def run(state, hparams, order, images, labels, test_images, test_labels):
    def step(state, indices):
      return steps.train(state, hparams, images[indices], labels[indices])

    def chunk(state, indices):
      state, (lr, loss) = jax.lax.scan(step, state, indices)
      test_loss, accuracy = steps.evaluate(state, test_images, test_labels)
      return state, (lr, loss, test_loss, accuracy)

    state, (lr, loss, test_loss, accuracy) = jax.lax.scan(chunk, state, order)
    return state, History(lr.ravel(), loss.ravel(), test_loss, accuracy)

  return run


def model_mesh(num_models: int) -> jax.sharding.Mesh:
  """A 1-D mesh over as many devices as evenly divide ``num_models``."""
  devices = jax.devices()
  count = math.gcd(num_models, len(devices))
  return jax.sharding.Mesh(np.array(devices[:count]), (MODEL_AXIS,))


def place(mesh: jax.sharding.Mesh, stacked: Any, shared: Any):
  """Shards ``stacked`` over the K axis and replicates ``shared``."""
  P = jax.sharding.PartitionSpec  # pylint: disable=invalid-name
  by_model = jax.sharding.NamedSharding(mesh, P(MODEL_AXIS))
  replicated = jax.sharding.NamedSharding(mesh, P())
  return jax.device_put(stacked, by_model), jax.device_put(shared, replicated)


class Program(NamedTuple):
  """K models ready to run: the vmapped run and its placed arguments."""

  batched: Callable[..., tuple[TrainState, History]]  # jitted, vmapped.
  single: Callable[..., tuple[TrainState, History]]  # jitted, one model.
  steps: Steps  # One model's pure step (not jitted).
  stacked: tuple[Any, ...]  # (states, hparams, orders), leading K axis.
  shared: tuple[Any, ...]  # Training and test arrays, replicated.
  eval_steps: np.ndarray  # [evals] updates done at each evaluation.

  @property
  def num_models(self) -> int:
    return jax.tree.leaves(self.stacked)[0].shape[0]

  def model_args(self, index: int) -> tuple[Any, ...]:
    """The arguments of :attr:`single` for model ``index``."""
    return (*unstack(self.stacked, index), *self.shared)


def prepare(
    dataset: data.Dataset,
    *,
    model_name: str,
    optimizer_fn: OptimizerFn,
    hparams: Mapping[str, Sequence[float]],
    seeds: Sequence[int],
    num_steps: int,
    batch_size: int,
    eval_every: int,
) -> Program:
  """Builds K models (one per ``seeds`` entry) and their vmapped run.

  Args:
    dataset: the data; the whole training and test sets live on device.
    model_name: passed to ``model.make_model``.
    optimizer_fn: maps one model's hyperparameters to its optimizer (see
      :func:`make_steps`).
    hparams: ``{name: K values}``, the hyperparameters per model.
    seeds: K seeds; each sets a model's initialization and data order.
    num_steps: updates per model; a multiple of ``eval_every``.
    batch_size: examples per update.
    eval_every: updates between test-set evaluations.

  Returns:
    A :class:`Program`; the K axis is sharded over the devices that divide K.

  Raises:
    ValueError: ``num_steps`` is not a multiple of ``eval_every``, or an
      ``hparams`` entry does not have one value per seed.
  """
  if num_steps < 1 or eval_every < 1 or num_steps % eval_every:
    raise ValueError(
        f'num_steps ({num_steps}) must be a positive multiple of eval_every'
        f' ({eval_every}).'
    )
  num_models = len(seeds)
  stacked_hparams = {
      name: jnp.asarray(values, jnp.float32) for name, values in hparams.items()
  }
  for name, values in stacked_hparams.items():
    if values.shape != (num_models,):
      raise ValueError(
          f'hparams[{name!r}] must have one value per seed ({num_models}),'
          f' got shape {values.shape}.'
      )
  inits = [
      init_state(
          dataset, model_name, seed,
          optimizer_fn({name: values[k] for name, values in hparams.items()}),
      )
      for k, seed in enumerate(seeds)
  ]
  graphdef = inits[0][0]
  num_evals = num_steps // eval_every
  orders = np.stack([
      batch_order(len(dataset.train_labels), batch_size, num_steps, seed)
      for seed in seeds
  ]).reshape(num_models, num_evals, eval_every, batch_size)
  stacked, shared = place(
      model_mesh(num_models),
      (stack([state for _, state in inits]), stacked_hparams, orders),
      (dataset.train_images, dataset.train_labels, dataset.test_images,
       dataset.test_labels),
  )
  steps = make_steps(graphdef, optimizer_fn)
  run = make_run(steps)
  batched = jax.jit(jax.vmap(run, in_axes=(0, 0, 0, None, None, None, None)))
  eval_steps = eval_every * np.arange(1, num_evals + 1)
  return Program(batched, jax.jit(run), steps, stacked, shared, eval_steps)


def timed_compile(fn: Any, *args: Any) -> tuple[Any, float]:
  """``fn`` compiled for ``args``, and the seconds compiling took."""
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  return compiled, time.perf_counter() - start


def train_models(**kwargs: Any) -> Trained:
  """Builds K models with :func:`prepare` and trains them in one program.

  Args:
    **kwargs: the arguments of :func:`prepare`.

  Returns:
    :class:`Trained`, with a leading K axis on history and state.
  """
  program = prepare(**kwargs)
  args = (*program.stacked, *program.shared)
  compiled, compile_seconds = timed_compile(program.batched, *args)
  start = time.perf_counter()
  state, history = jax.block_until_ready(compiled(*args))
  run_seconds = time.perf_counter() - start
  return Trained(
      history, state, program.eval_steps, compile_seconds, run_seconds
  )


class Speedup(NamedTuple):
  """Steady-state seconds of the vmapped program and of K sequential runs."""

  num_models: int
  vmapped_seconds: float  # Median over repeats.
  sequential_seconds: float  # Median over repeats, all K runs together.
  vmapped_compile_seconds: float
  single_compile_seconds: float

  @property
  def speedup(self) -> float:
    return self.sequential_seconds / self.vmapped_seconds


def measure_speedup(
    program: Program, *, repeats: int
) -> tuple[Speedup, tuple[TrainState, History]]:
  """Times the K-model program against K runs of the 1-model program.

  Both are compiled first (compile time reported apart); then the two are
  run ``repeats`` times, interleaved, each ending in
  ``jax.block_until_ready``, and the medians are compared.

  Returns:
    The :class:`Speedup` and the vmapped program's (state, history).
  """
  if repeats < 1:
    raise ValueError(f'repeats must be >= 1, got {repeats}.')
  num_models = program.num_models
  batched_args = (*program.stacked, *program.shared)
  single_args = [program.model_args(k) for k in range(num_models)]
  batched, batched_compile = timed_compile(program.batched, *batched_args)
  single, single_compile = timed_compile(program.single, *single_args[0])
  vmapped_times, sequential_times = [], []
  for _ in range(repeats):
    start = time.perf_counter()
    outputs = jax.block_until_ready(batched(*batched_args))
    vmapped_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    jax.block_until_ready([single(*args) for args in single_args])
    sequential_times.append(time.perf_counter() - start)
  timing = Speedup(
      num_models,
      statistics.median(vmapped_times),
      statistics.median(sequential_times),
      batched_compile,
      single_compile,
  )
  return timing, outputs


def measure_step_speedup(
    program: Program, *, num_steps: int, repeats: int
) -> Speedup:
  """Times a Python loop of jitted steps: 1 vmapped call vs K calls a step.

  The pattern of a per-step trainer such as ``train.py``: every step is a
  dispatch from Python. The batches are on device before timing starts;
  compile time is reported apart; each pass of ``num_steps`` steps ends in
  ``jax.block_until_ready``; the two loops alternate ``repeats`` times and
  the medians are compared.
  """
  states, hparams, orders = program.stacked
  num_models = program.num_models
  flat = np.asarray(orders).reshape(num_models, -1, orders.shape[-1])
  if not 1 <= num_steps <= flat.shape[1]:
    raise ValueError(
        f'num_steps must be in [1, {flat.shape[1]}], got {num_steps}.'
    )
  images, labels = (np.asarray(array) for array in program.shared[:2])
  batches = jax.device_put(
      [(images[flat[:, t]], labels[flat[:, t]]) for t in range(num_steps)]
  )
  models = [
      (unstack(states, k), unstack(hparams, k), [(x[k], y[k]) for x, y in
                                                 batches])
      for k in range(num_models)
  ]
  vmapped, vmapped_compile = timed_compile(
      jax.jit(jax.vmap(program.steps.train)), states, hparams, *batches[0]
  )
  single, single_compile = timed_compile(
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


def triangular_fn(hparams: Hyperparams) -> optax.Schedule:
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
                      help='base_lr = max_lr / ratio (the seed: 3 or 4)')
  parser.add_argument('--epochs', type=int, default=8)
  parser.add_argument('--batch-size', type=int, default=32)
  parser.add_argument('--momentum', type=float, default=0.9)
  parser.add_argument('--repeats', type=int, default=3,
                      help='timing repeats (0 skips the speedup measurement)')
  parser.add_argument('--timing-steps', type=int, default=100,
                      help='steps of the per-step (Python loop) timing')
  parser.add_argument('--heatmap', default=os.path.join(
      'docs', 'images', 'sweep_heatmap.png'))
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the sweep; returns the table, accuracies and timings."""
  args = parse_args(argv)
  dataset = data.load_dataset(args.dataset, args.data_dir)
  steps_per_epoch = len(dataset.train_labels) // args.batch_size
  grid = Grid(args.max_lrs, args.step_size_epochs, args.seeds)
  program = prepare(
      dataset,
      model_name=args.model,
      optimizer_fn=sgd_with(triangular_fn, args.momentum),
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
    args_all = (*program.stacked, *program.shared)
    _, history = jax.block_until_ready(program.batched(*args_all))
  accuracy = np.asarray(history.test_accuracy[:, -1])
  table = format_table(grid, accuracy)
  print(table)
  save_heatmap(grid, accuracy, args.heatmap, ratio=args.ratio)
  print(f'wrote {args.heatmap}')
  if timing is not None:
    print(
        f'compile: vmapped {timing.vmapped_compile_seconds:.2f} s, single'
        f' {timing.single_compile_seconds:.2f} s\n'
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
