r"""The example models, K at a time, trained by ``optax_clr.sweep``.

Each model has its own initialization (its seed), data order, schedule
hyperparameters (traced scalars inside the program, so the schedule compiles
once) and optimizer state; ``optax_clr.sweep`` trains all K as ONE
``jit(vmap(scan))`` program with the K axis sharded over the devices. This
module holds only the example-specific glue: NNX models split into
parameters and the rest (batch statistics, RNG state), the trainer's data
order, and the test-set evaluation. ``sweep.py`` and ``compare_schedules.py``
run their models through it.
"""

from collections.abc import Callable, Mapping, Sequence
import time
from typing import Any, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_clr
from examples import data
from examples import model as model_lib
from examples import train

Hyperparams = Mapping[str, jax.Array]
# Builds a model's optimizer (schedule inside) from its hyperparameters,
# concrete at initialization and traced scalars inside the vmapped run.
OptimizerFn = Callable[[Hyperparams], optax.GradientTransformation]
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
  seconds: float  # The first call's, tracing and compiling included.


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


class Program(NamedTuple):
  """K models ready to train as ONE ``optax_clr.sweep`` program.

  ``loss_fn`` and ``eval_fn`` are built once per program, so every
  :meth:`run` (all models, or one at a time) after the first finds its
  compiled program in ``optax_clr.sweep``'s cache.
  """

  graphdef: nnx.GraphDef
  states: TrainState  # [K] initial params, rest and optimizer state.
  hparams: dict[str, jax.Array]  # {name: [K]}
  orders: np.ndarray  # [K, num_steps, batch] indices into the training set.
  data: dict[str, jax.Array]  # The whole dataset, on device, shared.
  optimizer_fn: OptimizerFn
  loss_fn: Callable[..., Any]
  eval_fn: Callable[..., Any]
  eval_every: int
  steps: Steps  # One model's pure step, for per-step trainers.

  @property
  def num_models(self) -> int:
    return len(self.orders)

  @property
  def eval_steps(self) -> np.ndarray:
    """``[evals]``, the updates done at each evaluation."""
    num_evals = self.orders.shape[1] // self.eval_every
    return self.eval_every * np.arange(1, num_evals + 1)

  def run(self, models: slice = slice(None)) -> tuple[TrainState, History]:
    """Trains the models ``models`` (all by default) as one program.

    Returns:
      The final :class:`TrainState` (its ``opt_state`` None) and the
      :class:`History`, with a leading axis over the chosen models.
    """
    take = lambda tree: jax.tree.map(lambda leaf: leaf[models], tree)
    result = optax_clr.sweep(
        self.loss_fn, take(self.states.params), self.optimizer_fn,
        take(self.hparams), take(self.orders), params_axis=0, batches_axis=0,
        model_state=take(self.states.rest), eval_fn=self.eval_fn,
        eval_every=self.eval_every, data=self.data,
    )
    test_loss, test_accuracy = result.evals
    history = History(result.learning_rates, result.losses, test_loss,
                      test_accuracy)
    return TrainState(result.params, result.model_state, None), history


def _sweep_functions(graphdef: nnx.GraphDef):
  """The loss and evaluation of ONE model in ``optax_clr.sweep``'s terms.

  A batch is a row of indices into ``data``, the dataset kept on device and
  passed to the program as an argument (a closure would embed it in the
  compiled program as a constant).
  """

  def loss_fn(params, rest, indices, *, data):
    module = nnx.merge(graphdef, params, rest, copy=True)
    loss, _ = train.loss_fn(module, data['images'][indices],
                            data['labels'][indices])
    _, _, rest = nnx.split(module, nnx.Param, ...)
    return loss, rest

  def eval_fn(params, rest, *, data):
    module = nnx.merge(graphdef, params, rest, copy=True)
    module.eval()
    loss, logits = train.loss_fn(module, data['test_images'],
                                 data['test_labels'])
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == data['test_labels'])
    return loss, accuracy

  return loss_fn, eval_fn


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
  """Builds K models (one per ``seeds`` entry), ready for one sweep.

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
    A :class:`Program`; ``optax_clr.sweep`` shards its K axis over the
    devices (padding K to a multiple of their number).

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
  orders = np.stack([
      batch_order(len(dataset.train_labels), batch_size, num_steps, seed)
      for seed in seeds
  ])
  shared = jax.device_put({
      'images': dataset.train_images, 'labels': dataset.train_labels,
      'test_images': dataset.test_images, 'test_labels': dataset.test_labels,
  })
  loss_fn, eval_fn = _sweep_functions(graphdef)
  return Program(
      graphdef, stack([state for _, state in inits]), stacked_hparams, orders,
      shared, optimizer_fn, loss_fn, eval_fn, eval_every,
      make_steps(graphdef, optimizer_fn),
  )


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
  start = time.perf_counter()
  state, history = jax.block_until_ready(program.run())
  seconds = time.perf_counter() - start
  return Trained(history, state, program.eval_steps, seconds)
