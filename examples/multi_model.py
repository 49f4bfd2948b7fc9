r"""K models trained as ONE compiled program: stacked states, ``jax.vmap``.

Each model has its own parameters, optimizer state, schedule hyperparameters
(traced scalars inside the program, so the schedule compiles once) and data
order; a pure training run (a ``lax.scan`` of the train step, test accuracy
at every evaluation) is ``jax.vmap``-ed over the leading K axis and the K axis
is sharded over the devices. ``sweep.py`` and ``compare_schedules.py`` run
their models through :func:`train_models`.
"""

from collections.abc import Callable, Mapping, Sequence
import math
import time
from typing import Any, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import data
from examples import model as model_lib
from examples import train

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
