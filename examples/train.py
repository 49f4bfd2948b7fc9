r"""Trains a Flax NNX classifier with a cyclical learning rate.

The main job: ``python examples/train.py`` trains a small CNN on
scikit-learn's bundled 8x8 digits with a triangular CLR (no download). The
schedule lives inside the one compiled ``train_step``; the learning rate
logged with every step is read back from the ``optax.inject_hyperparams``
state, so it is the rate the update used.

Each run writes into its workdir: ``metrics.jsonl``, ``loss.png``,
``accuracy.png``, ``lr.png``, ``training.png`` and an Orbax checkpoint per
epoch. Running again with the same ``--workdir`` and a larger ``--epochs``
resumes and reproduces the uninterrupted run. The batch is sharded over all
devices (``jax.sharding``); ``--coordinator/--num-processes/--process-id``
run one process per host under JAX's multi-controller runtime::

  python examples/train.py
  python examples/train.py --find-lr --schedule triangular2 --epochs 12
  python examples/train.py --dataset mnist --data-dir ~/data/mnist
"""

import argparse
from collections.abc import Callable, Sequence
import dataclasses
import functools
import json
import math
import os
import sys
import time
from typing import Any

if not __package__:
  # Run as a script: make ``examples`` importable from the repository root.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

import optax_clr
import optax_clr.nnx
from examples import checkpointing
from examples import compile_cache
from examples import data
from examples import metrics_log
from examples import model as model_lib
from examples import parallel
# pylint: enable=g-import-not-at-top,wrong-import-position

SCHEDULES = (
    'fixed',
    'triangular',
    'triangular2',
    'exp_range',
    'one_cycle',
    'step_decay',
    'exponential_decay',
    'inverse_time_decay',
)
CYCLICAL = ('triangular', 'triangular2', 'exp_range')
OPTIMIZERS = ('sgd', 'adam')
# Seeds the range test's batches apart from the training data order.
_RANGE_TEST_STREAM = 1
# The range test's span (--find-lr): from well below any useful rate of SGD
# or Adam to far past divergence; 6 decades in the default 100 steps.
FIND_LR_START = 1e-5
FIND_LR_END = 10.0
# Fields that must match a checkpoint to resume from it (``epochs`` may grow
# unless the schedule's length depends on it).
_RESUME_FIELDS = (
    'dataset', 'model', 'schedule', 'base_lr', 'max_lr', 'step_size_epochs',
    'gamma', 'decay_rate', 'batch_size', 'optimizer', 'momentum',
    'cycle_momentum', 'base_momentum', 'max_momentum', 'seed',
)


@dataclasses.dataclass(frozen=True)
class Config:
  """The run's hyperparameters; the defaults are the main job's.

  Attributes:
    dataset: ``"digits"``, ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
    data_dir: the folder with the dataset's files (not needed for digits).
    model: ``"cnn"`` or ``"mlp"``.
    schedule: one of :data:`SCHEDULES`. ``fixed`` holds ``base_lr``; the
      cyclical policies run between ``base_lr`` and ``max_lr``; ``one_cycle``
      rises from ``base_lr`` to ``max_lr`` over the whole run and anneals;
      the decays start at ``max_lr``.
    base_lr: the lower learning rate.
    max_lr: the upper learning rate.
    step_size_epochs: half a CLR cycle in epochs (Smith suggests 2 to 10);
      also the decay period of the decays.
    gamma: the per-step amplitude decay of ``exp_range``, in ``(0, 1]``.
    decay_rate: the decays' rate per period: the factor of ``step_decay``
      and ``exponential_decay``, the ``k`` of ``inverse_time_decay``'s
      ``lr / (1 + k t)``.
    epochs: passes over the training set.
    batch_size: the global batch, split over all devices.
    eval_batch_size: the test-set batch.
    optimizer: ``"sgd"`` or ``"adam"``.
    momentum: SGD's momentum (0 for none) or Adam's ``b1``.
    cycle_momentum: cycle the momentum opposite to the learning rate, between
      ``base_momentum`` and ``max_momentum`` (cyclical and one-cycle only).
    base_momentum: the momentum at the learning-rate peak.
    max_momentum: the momentum at the learning-rate troughs.
    seed: seeds the initialisation and the data order.
    find_lr: run the LR range test first and take ``base_lr`` and ``max_lr``
      from ``optax_clr.suggest_clr_bounds``.
    find_lr_steps: the range test's steps.
    find_lr_sweeps: range tests run together (batch orders and dropout
      keys), read through their median.
    keep_checkpoints: how many of the newest epoch checkpoints to keep.
    progress: show a progress bar.
  """

  dataset: str = 'digits'
  data_dir: str | None = None
  model: str = 'cnn'
  schedule: str = 'triangular'
  base_lr: float = 0.01
  max_lr: float = 0.1
  step_size_epochs: float = 2.0
  gamma: float = 0.995
  decay_rate: float = 0.5
  epochs: int = 8
  batch_size: int = 32
  eval_batch_size: int = 1000
  optimizer: str = 'sgd'
  momentum: float = 0.9
  cycle_momentum: bool = False
  base_momentum: float = 0.85
  max_momentum: float = 0.95
  seed: int = 0
  find_lr: bool = False
  find_lr_steps: int = 100
  find_lr_sweeps: int = 5
  keep_checkpoints: int = 3
  progress: bool = True


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or infinite."""

  def __init__(self, step: int, lr: float, loss: float, *, workdir: str,
               epochs_kept: int):
    kept = (f'its checkpoint after epoch {epochs_kept}' if epochs_kept
            else 'no checkpoint (the first epoch did not finish)')
    super().__init__(
        f'Non-finite training loss {loss} at step {step} (learning rate'
        f' {lr:.6g}); stopping. {workdir} keeps {kept}, but it resumes only'
        ' with the same flags, which repeat the same steps and stop here'
        ' again. Start a new run with a new --workdir and a lower'
        ' --max-lr/--base-lr (or --find-lr).'
    )
    self.step = step
    self.lr = lr


def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
  if value not in choices:
    raise ValueError(f'{name} must be one of {tuple(choices)}, got {value!r}.')


def flag(name: str) -> str:
  """The command-line flag of a :class:`Config` field."""
  return '--' + name.replace('_', '-')


def _check_whole(config: Config, name: str, low: int, high: int) -> None:
  value = getattr(config, name)
  if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
      or not low <= value < high):
    bounds = f'>= {low}' if high == math.inf else f'in [{low}, {high})'
    raise ValueError(
        f'{flag(name)} must be a whole number {bounds}, got {value!r}.')


def _check_real(
    config: Config, name: str, low: float, high: float = math.inf, *,
    low_open: bool = False, high_open: bool = True,
) -> None:
  value = getattr(config, name)
  ok = (not isinstance(value, bool)
        and isinstance(value, (int, float, np.integer, np.floating))
        and math.isfinite(value)
        and (low < value if low_open else low <= value)
        and (value < high if high_open else value <= high))
  if not ok:
    interval = ('(' if low_open else '[') + f'{low:g}, {high:g}' + (
        ')' if high_open else ']')
    raise ValueError(
        f'{flag(name)} must be a finite number in {interval}, got {value!r}.')


def check_config(config: Config) -> None:
  """Refuses a config that cannot train, naming the flag, before any work.

  Every numeric field is checked (whole numbers by range, the rest finite
  and in range), including those the schedule does not use; checks that
  need the dataset (``--batch-size`` against the examples and devices, the
  step size in steps) follow in :func:`train_and_evaluate` before training.

  Args:
    config: the run's config.

  Raises:
    ValueError: a field is out of range; the message names its flag.
  """
  _check_choice(flag('dataset'), config.dataset, data.DATASETS)
  _check_choice(flag('model'), config.model, model_lib.MODELS)
  _check_choice(flag('schedule'), config.schedule, SCHEDULES)
  _check_choice(flag('optimizer'), config.optimizer, OPTIMIZERS)
  for name in ('epochs', 'batch_size', 'eval_batch_size', 'keep_checkpoints'):
    _check_whole(config, name, 1, math.inf)
  _check_whole(config, 'find_lr_steps', 2, math.inf)
  _check_whole(config, 'find_lr_sweeps', 1, math.inf)
  _check_whole(config, 'seed', 0, 2**63)
  _check_real(config, 'base_lr', 0.0)
  _check_real(config, 'max_lr', 0.0)
  _check_real(config, 'step_size_epochs', 0.0, low_open=True)
  _check_real(config, 'gamma', 0.0, 1.0, low_open=True, high_open=False)
  if config.schedule == 'step_decay':  # the factor per period
    _check_real(config, 'decay_rate', 0.0, 1.0, low_open=True,
                high_open=False)
  elif config.schedule == 'exponential_decay':  # may grow: > 1 is allowed
    _check_real(config, 'decay_rate', 0.0, low_open=True)
  else:
    _check_real(config, 'decay_rate', 0.0)
  for name in ('momentum', 'base_momentum', 'max_momentum'):
    _check_real(config, name, 0.0, 1.0)
  if config.cycle_momentum and config.base_momentum > config.max_momentum:
    raise ValueError(
        f'--base-momentum ({config.base_momentum}) must be at most'
        f' --max-momentum ({config.max_momentum}).')
  if config.schedule in CYCLICAL + ('one_cycle',) and not config.find_lr:
    if config.max_lr < config.base_lr:
      raise ValueError(
          f'--max-lr ({config.max_lr}) must be at least --base-lr'
          f' ({config.base_lr}) for schedule {config.schedule!r}.')
    if config.schedule == 'one_cycle' and config.base_lr <= 0:
      raise ValueError(
          f'--base-lr must be > 0 for one_cycle (it starts there), got'
          f' {config.base_lr}.')


def _step_size(config: Config, steps_per_epoch: int) -> int:
  """Half a cycle (and the decay period) in steps, or ValueError."""
  steps = round(config.step_size_epochs * steps_per_epoch)
  if steps < 1:
    raise ValueError(
        f'--step-size-epochs {config.step_size_epochs} is'
        f' {config.step_size_epochs * steps_per_epoch:.3g} steps at'
        f' {steps_per_epoch} steps per epoch; it must come to at least one'
        ' step.'
    )
  return steps


def make_schedule(config: Config, steps_per_epoch: int) -> optax.Schedule:
  """Maps ``config.schedule`` to an ``optax.Schedule`` of the update count.

  Args:
    config: the run's config.
    steps_per_epoch: updates per epoch (the unit of ``step_size_epochs``).

  Returns:
    The learning-rate schedule.

  Raises:
    ValueError: the schedule is unknown or its arguments are out of range.
  """
  _check_choice('schedule', config.schedule, SCHEDULES)
  step_size = _step_size(config, steps_per_epoch)
  name = config.schedule
  if name == 'fixed':
    return optax.constant_schedule(config.base_lr)
  if name in CYCLICAL:
    return optax_clr.cyclic_schedule(
        config.base_lr, config.max_lr, step_size, mode=name,
        gamma=config.gamma if name == 'exp_range' else 1.0,
    )
  if name == 'one_cycle':
    if config.base_lr <= 0:
      raise ValueError(
          f'one_cycle starts at base_lr, which must be > 0; got'
          f' base_lr={config.base_lr}.'
      )
    return optax_clr.one_cycle_schedule(
        config.max_lr, config.epochs * steps_per_epoch,
        div_factor=config.max_lr / config.base_lr,
    )
  if name == 'step_decay':
    return optax_clr.step_decay_schedule(
        config.max_lr, step_size, factor=config.decay_rate
    )
  if name == 'exponential_decay':
    return optax_clr.exponential_decay_schedule(
        config.max_lr, config.decay_rate, decay_steps=step_size
    )
  return optax_clr.inverse_time_decay_schedule(
      config.max_lr, config.decay_rate, decay_steps=step_size
  )


def _momentum_schedule(
    config: Config, steps_per_epoch: int
) -> optax.Schedule | float | None:
  """The momentum (or Adam's ``b1``): a constant, or cycled against the LR."""
  if not config.cycle_momentum:
    return config.momentum or None
  if config.schedule in CYCLICAL:
    return optax_clr.cyclic_momentum_schedule(
        config.base_momentum, config.max_momentum,
        _step_size(config, steps_per_epoch), mode=config.schedule,
        gamma=config.gamma if config.schedule == 'exp_range' else 1.0,
    )
  if config.schedule == 'one_cycle':
    return optax_clr.one_cycle_momentum_schedule(
        config.epochs * steps_per_epoch,
        base_momentum=config.base_momentum,
        max_momentum=config.max_momentum,
    )
  raise ValueError(
      'cycle_momentum needs a cyclical or one_cycle schedule, got'
      f' schedule={config.schedule!r}.'
  )


def make_optimizer(
    config: Config, steps_per_epoch: int
) -> optax.GradientTransformation:
  """SGD or Adam driven by the schedule, its hyperparameters in the state.

  ``optax.inject_hyperparams`` evaluates the schedules inside the update and
  stores the values it used in ``state.hyperparams``.

  Args:
    config: the run's config.
    steps_per_epoch: updates per epoch.

  Returns:
    The optimizer.
  """
  _check_choice('optimizer', config.optimizer, OPTIMIZERS)
  learning_rate = make_schedule(config, steps_per_epoch)
  momentum = _momentum_schedule(config, steps_per_epoch)
  if config.optimizer == 'sgd':
    return optax.inject_hyperparams(optax.sgd)(
        learning_rate=learning_rate, momentum=momentum
    )
  return optax.inject_hyperparams(optax.adam)(
      learning_rate=learning_rate, b1=momentum or 0.0
  )


def loss_fn(
    model: nnx.Module, images: jax.Array, labels: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Mean softmax cross-entropy of a batch; returns ``(loss, logits)``."""
  logits = model(images)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return loss.mean(), logits


@functools.partial(jax.jit, static_argnums=0)
def train_step(
    graphdef: nnx.GraphDef, state: nnx.State, images: jax.Array,
    labels: jax.Array,
) -> tuple[nnx.State, dict[str, jax.Array]]:
  """One update of ``(model, optimizer)`` given as ``nnx.split`` parts.

  The model runs in training mode: BatchNorm normalises with the batch's
  statistics and updates its running averages, dropout draws a fresh mask
  from the model's RNG stream (whose counter advances). Both live in
  ``state`` (``nnx.BatchStat``, ``nnx.RngState``), so the returned state
  carries them to the next step and into the checkpoint.

  Returns:
    The new state and the batch's ``loss``, ``accuracy`` and the ``lr`` the
    update used, read from the optimizer state.
  """
  model, optimizer = nnx.merge(graphdef, state)
  model.train()
  grad_fn = nnx.value_and_grad(loss_fn, has_aux=True)
  (loss, logits), grads = grad_fn(model, images, labels)
  optimizer.update(model, grads)
  metrics = {
      'loss': loss,
      'accuracy': jnp.mean(jnp.argmax(logits, axis=-1) == labels),
      'lr': optimizer.opt_state.hyperparams['learning_rate'][...],
  }
  return nnx.state((model, optimizer)), metrics


@functools.partial(jax.jit, static_argnums=0)
def eval_step(
    graphdef: nnx.GraphDef, state: nnx.State, images: jax.Array,
    labels: jax.Array, weights: jax.Array,
) -> dict[str, jax.Array]:
  """Sums of the loss and of correct predictions, weighted (0 for padding).

  The model runs in evaluation mode (BatchNorm's running statistics, no
  dropout); ``state`` is not changed.
  """
  model, _ = nnx.merge(graphdef, state)
  model.eval()
  _, logits = loss_fn(model, images, labels)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = jnp.argmax(logits, axis=-1) == labels
  return {
      'loss_sum': jnp.sum(losses * weights),
      'correct': jnp.sum(correct * weights),
  }


def evaluate(
    graphdef: nnx.GraphDef, state: nnx.State, images: np.ndarray,
    labels: np.ndarray, batch_size: int, placement: parallel.Placement,
) -> dict[str, float]:
  """Test loss and accuracy over a whole split (padded to full batches)."""
  n = len(images)
  devices = jax.device_count()
  batch_size = math.ceil(min(batch_size, n) / devices) * devices
  padded = math.ceil(n / batch_size) * batch_size
  pad = [(0, padded - n)]
  images = np.pad(images, pad + [(0, 0)] * (images.ndim - 1))
  labels = np.pad(labels, pad)
  weights = np.pad(np.ones(n, np.float32), pad)
  totals = {'loss_sum': 0.0, 'correct': 0.0}
  for start in range(0, padded, batch_size):
    batch = slice(start, start + batch_size)
    sums = eval_step(
        graphdef, state, placement.shard(images[batch]),
        placement.shard(labels[batch]), placement.shard(weights[batch]),
    )
    for key, value in jax.device_get(sums).items():
      totals[key] += float(value)
  return {'test_loss': totals['loss_sum'] / n,
          'test_accuracy': totals['correct'] / n}


def range_test_optimizer(config: Config) -> Callable[..., Any]:
  """The optimizer factory the range test sweeps: training's, same momentum.

  The rates a range test finds hold for the momentum it ran with (Smith
  2018, section 4.2, https://arxiv.org/abs/1803.09820): SGD's effective
  step is ``lr / (1 - momentum)``. With ``--cycle-momentum`` the highest
  rates are used at ``base_momentum`` (momentum falls as the rate rises), so
  the test runs at that momentum.
  """
  momentum = config.base_momentum if config.cycle_momentum else (
      config.momentum)
  if config.optimizer == 'sgd':
    return functools.partial(optax.sgd, momentum=momentum or None)
  return functools.partial(optax.adam, b1=momentum)


def range_test_batches(
    config: Config, dataset: data.Dataset
) -> tuple[np.ndarray, np.ndarray]:
  """``config.find_lr_sweeps`` batch orders of ``config.find_lr_steps`` steps.

  Shuffled epochs of the training set, as training draws them, from streams
  of their own (the training data order is not consumed).

  Returns:
    ``(images, labels)`` shaped ``[sweeps, steps, batch, ...]``.
  """
  orders = []
  for sweep in range(config.find_lr_sweeps):
    rng = np.random.default_rng([config.seed, _RANGE_TEST_STREAM, sweep])
    parts, have = [], 0
    while have < config.find_lr_steps:
      parts.append(data.epoch_batches(
          dataset.train_images, dataset.train_labels, config.batch_size, rng))
      have += len(parts[-1][1])
    orders.append(tuple(np.concatenate(arrays)[: config.find_lr_steps]
                        for arrays in zip(*parts)))
  return tuple(np.stack(arrays) for arrays in zip(*orders))


def _range_loss(
    model: nnx.Module, batch: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The training loss of a batch, with its accuracy as ``aux``."""
  images, labels = batch
  loss, logits = loss_fn(model, images, labels)
  return loss, {'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels)}


def range_test(
    config: Config, dataset: data.Dataset, model: nnx.Module
) -> optax_clr.RangeTestResult:
  """``config.find_lr_sweeps`` LR range tests of ``model``, one program.

  Each sweep trains ``model`` in training mode through
  ``optax_clr.nnx.range_test``: BatchNorm statistics update at every step and
  dropout draws a fresh mask (step ``t`` of sweep ``k`` reseeds the model's
  streams from ``fold_in(key_k, t)``). The sweeps differ in batch order and
  dropout keys only, all start from ``model``, and run as one ``jax.vmap``;
  ``model`` itself is left exactly as it was. It runs in the mode it is in:
  a freshly built model is in training mode.

  Returns:
    The result, batched over the sweeps (leading axis ``find_lr_sweeps``).
  """
  images, labels = range_test_batches(config, dataset)
  keys = jax.random.split(
      jax.random.key(config.seed), config.find_lr_sweeps)
  optimizer = range_test_optimizer(config)

  def sweep(batches, key):
    return optax_clr.nnx.range_test(
        model, optimizer, _range_loss, batches, key=key,
        start_lr=FIND_LR_START, end_lr=FIND_LR_END,
        num_steps=config.find_lr_steps, has_aux=True,
    )

  return jax.vmap(sweep)((images, labels), keys)


def find_lr_bounds(
    config: Config, dataset: data.Dataset, log: Callable[[str], None],
    workdir: str | None = None, *, model: nnx.Module | None = None,
) -> tuple[float, float]:
  """Runs the LR range test from the initial model; returns CLR bounds.

  How the test is run and read, and why:

  - the real model, in training mode, through ``optax_clr.nnx`` (see
    :func:`range_test`): BatchNorm and dropout behave as in training, so the
    rates found are the rates training will see;
  - the optimizer of the run at the momentum its highest rates meet
    (:func:`range_test_optimizer`): a rate found with another momentum
    does not transfer;
  - ``config.find_lr_sweeps`` sweeps (batch orders and dropout keys) as one
    vmapped program, read through their median by
    ``optax_clr.suggest_clr_bounds`` with its default reading: one sweep
    carries the noise of its batch order (a 32-example batch's loss varies
    by tens of percent), most of all past the loss minimum, where each sweep
    spikes at other steps. A median of 5 passes a spike only where 3 sweeps
    share it, a median of 3 where 2 do: on the digits CNN, 3 sweeps let such
    a spike read as the steepest descent (at 0.5-0.8, 50x the rates where
    the loss falls fastest) for 2 of 3 seeds, 5 sweeps for none;
  - the loss, not the batch accuracy: the accuracy of a 32-example batch
    moves in steps of 1/32 and saturates near 1 before the loss stops
    falling, a coarser signal of the same curve;
  - from ``FIND_LR_START`` to ``FIND_LR_END`` in ``config.find_lr_steps``
    steps: 6 decades, about 17 steps per decade at the default 100, from
    below any useful rate of SGD or Adam to divergence.

  The measurements behind these choices are in ``docs/find_lr.md``.

  Args:
    config: the run's config (model, optimizer, momentum, batch size, seed,
      ``find_lr_steps`` and ``find_lr_sweeps``).
    dataset: the training data.
    log: where the result is reported.
    workdir: if given, the range-test plot is saved there.
    model: the model training will start from (default: built from
      ``config``); it is not modified.

  Returns:
    ``(base_lr, max_lr)`` from ``optax_clr.suggest_clr_bounds``.
  """
  if model is None:
    model = model_lib.make_model(config.model, dataset, seed=config.seed)
  result = range_test(config, dataset, model)
  base_lr, max_lr = optax_clr.suggest_clr_bounds(result)
  log(f'Range test ({config.find_lr_sweeps} x {config.find_lr_steps} steps):'
      f' base_lr={base_lr:.4g}, max_lr={max_lr:.4g}.')
  if workdir is not None and jax.process_index() == 0:
    path = os.path.join(workdir, 'range_test.png')
    optax_clr.plot_range_test(result, path=path)
  return float(base_lr), float(max_lr)


def _resume_config(config: Config, record: dict[str, Any]) -> Config:
  """The config to continue a checkpointed run with, or ValueError.

  Compared with the checkpoint's record before Orbax reads its arrays, so a
  flag that changes the state's structure (``--optimizer``, ``--model``,
  ``--cycle-momentum``, ``--momentum 0``) is named like any other change.
  """
  saved, done = record['config'], record['epoch']
  if config.find_lr:
    # The range test ran when the run started; reuse the bounds it found.
    config = dataclasses.replace(
        config, base_lr=saved.get('base_lr', config.base_lr),
        max_lr=saved.get('max_lr', config.max_lr))
  fields = _RESUME_FIELDS
  if config.schedule == 'one_cycle':
    fields += ('epochs',)  # one cycle spans exactly the whole run
    allowed = ('Use the same flags (one_cycle spans the whole run, so'
               ' --epochs cannot change either)')
  else:
    allowed = 'Use the same flags (only --epochs may grow)'
  changed = [f'{name}: {saved.get(name)!r} -> {getattr(config, name)!r}'
             for name in fields if saved.get(name) != getattr(config, name)]
  if changed:
    raise ValueError(
        'The workdir holds a checkpoint of a different run ('
        + '; '.join(changed) + f'). {allowed}, or a new --workdir.'
    )
  if config.epochs < done:
    raise ValueError(
        f'The workdir holds a checkpoint after epoch {done}; --epochs'
        f' {config.epochs} would end before it. Pass --epochs {done} (or'
        ' more, to train on), or a new --workdir.'
    )
  return config


def _final_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
  """Summarises the last logged epoch."""
  last = records[-1]
  epoch = [r for r in records if r['epoch'] == last['epoch']]
  return {
      'epoch': last['epoch'] + 1,
      'step': last['step'] + 1,
      'lr': last['lr'],
      'train_loss': float(np.mean([r['loss'] for r in epoch])),
      'train_accuracy': float(np.mean([r['accuracy'] for r in epoch])),
      'test_loss': last['test_loss'],
      'test_accuracy': last['test_accuracy'],
  }


def train_and_evaluate(config: Config, workdir: str) -> dict[str, float]:
  """Trains (or resumes) a run in ``workdir`` and returns its final metrics.

  Args:
    config: the run's config.
    workdir: the run's directory (metrics, plots, checkpoints). Every
      process of a multi-process run must pass the same, shared, directory.

  Returns:
    ``epoch``, ``step``, ``lr``, ``train_loss`` and ``train_accuracy``
    (means over the last epoch), ``test_loss``, ``test_accuracy``,
    ``base_lr`` and ``max_lr`` (after ``--find-lr``).

  Raises:
    NonFiniteLossError: the loss became NaN or infinite.
    data.DataError: the dataset files are missing or corrupt.
    checkpointing.CheckpointError: the workdir's checkpoints are all
      damaged, or hold a state of another structure.
    checkpointing.WorkdirError: the workdir is a file, or another run holds
      it.
    metrics_log.MetricsError: the metrics file is damaged before the
      checkpoint (a ValueError).
    ValueError: a flag is out of range, or the flags do not match the
      checkpoint.
  """
  check_config(config)
  lock = checkpointing.lock_workdir(workdir)
  try:
    return _train_and_evaluate(config, workdir)
  finally:
    lock.release()


def _train_and_evaluate(config: Config, workdir: str) -> dict[str, float]:
  """:func:`train_and_evaluate` once the workdir is locked."""
  primary = jax.process_index() == 0
  log = tqdm.tqdm.write if primary else lambda message: None
  dataset = data.load_dataset(config.dataset, config.data_dir)
  n = len(dataset.train_images)
  if config.batch_size % jax.device_count() or config.batch_size > n:
    raise ValueError(
        f'--batch-size {config.batch_size} must be a multiple of the'
        f' {jax.device_count()} devices and at most the {n} training examples.'
    )
  steps_per_epoch = n // config.batch_size
  # The schedule's arguments in steps, checked before anything is written.
  _step_size(config, steps_per_epoch)
  if not config.find_lr:  # otherwise the range test picks base/max LR
    make_optimizer(config, steps_per_epoch)
  run = _Run(config, dataset, parallel.Placement(), steps_per_epoch, log,
             workdir)
  checkpointer = checkpointing.Checkpointer(
      workdir, max_to_keep=config.keep_checkpoints, log=log)
  metrics = None
  try:
    run, state, data_rng, start_epoch = _start(run, checkpointer)
    name = 'metrics.jsonl' if primary else (
        f'metrics-process{jax.process_index()}.jsonl')
    metrics = metrics_log.MetricsLog(
        os.path.join(workdir, name), keep_epochs=start_epoch)
    for epoch in range(start_epoch, run.config.epochs):
      images, labels = data.epoch_batches(
          dataset.train_images, dataset.train_labels, config.batch_size,
          data_rng)
      # The epoch's records are on disk before its checkpoint commits.
      state = _train_epoch(run, state, epoch, images, labels, metrics)
      checkpointer.save(epoch + 1, nnx.to_pure_dict(state), {
          'epoch': epoch + 1,
          'rng': data_rng.bit_generator.state,
          'config': dataclasses.asdict(run.config),
      })
  finally:
    checkpointer.close()
    if primary and metrics is not None and metrics.records:
      metrics_log.plot_metrics(metrics.records, workdir)
  final = _final_metrics(metrics.records)
  final.update(base_lr=run.config.base_lr, max_lr=run.config.max_lr)
  return final


@dataclasses.dataclass(frozen=True)
class _Run:
  """What stays fixed while a run trains."""

  config: Config
  dataset: data.Dataset
  placement: parallel.Placement
  steps_per_epoch: int
  log: Callable[[str], None]
  workdir: str = ''
  graphdef: nnx.GraphDef | None = None

  def build(self, config: Config) -> tuple['_Run', nnx.State]:
    """A fresh model and optimizer for ``config``, placed on the mesh."""
    model = model_lib.make_model(config.model, self.dataset, seed=config.seed)
    tx = make_optimizer(config, self.steps_per_epoch)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    run = dataclasses.replace(self, config=config, graphdef=graphdef)
    return run, self.placement.replicate(state)


def _start(
    run: _Run, checkpointer: checkpointing.Checkpointer
) -> tuple[_Run, nnx.State, np.random.Generator, int]:
  """Restores the newest checkpoint, or starts afresh (range test first)."""
  config = run.config
  resumed = {}

  def target(record: dict[str, Any]) -> Any:
    # The flags are checked against the record before any array is read.
    resumed['run'], resumed['state'] = run.build(
        _resume_config(config, record))
    return nnx.to_pure_dict(resumed['state'])

  restored = checkpointer.restore(target)
  data_rng = np.random.default_rng(config.seed)
  if restored is None:
    if config.find_lr:
      base_lr, max_lr = find_lr_bounds(
          config, run.dataset, run.log, run.workdir)
      config = dataclasses.replace(config, base_lr=base_lr, max_lr=max_lr)
    run, state = run.build(config)
    return run, state, data_rng, 0
  pure_state, record = restored
  run, state = resumed['run'], resumed['state']
  nnx.replace_by_pure_dict(state, pure_state)
  data_rng.bit_generator.state = record['rng']
  run.log(f'Resuming {run.workdir} after epoch {record["epoch"]}.')
  return run, state, data_rng, record['epoch']


def _train_epoch(
    run: _Run, state: nnx.State, epoch: int, images: np.ndarray,
    labels: np.ndarray, metrics: metrics_log.MetricsLog,
) -> nnx.State:
  """Trains one epoch, evaluates, logs it; returns the new state."""
  config, placement = run.config, run.placement
  step = epoch * run.steps_per_epoch
  records = []
  bar = tqdm.tqdm(
      range(run.steps_per_epoch), desc=f'epoch {epoch + 1}/{config.epochs}',
      disable=not config.progress or jax.process_index() != 0,
      dynamic_ncols=True, file=sys.stdout,
  )
  for i in bar:
    state, values = train_step(
        run.graphdef, state, placement.shard(images[i]),
        placement.shard(labels[i]))
    values = {key: float(value)
              for key, value in jax.device_get(values).items()}
    if not math.isfinite(values['loss']):
      metrics.extend(records)
      raise NonFiniteLossError(step + i, values['lr'], values['loss'],
                               workdir=run.workdir, epochs_kept=epoch)
    records.append({'step': step + i, 'epoch': epoch, **values})
    bar.set_postfix(loss=f'{values["loss"]:.4f}',
                    acc=f'{values["accuracy"]:.3f}',
                    lr=f'{values["lr"]:.3g}', refresh=False)
  bar.close()
  test = evaluate(run.graphdef, state, run.dataset.test_images,
                  run.dataset.test_labels, config.eval_batch_size, placement)
  records[-1].update(test)
  metrics.extend(records)
  if config.progress:
    run.log(f'epoch {epoch + 1}: test_loss={test["test_loss"]:.4f}'
            f' test_accuracy={test["test_accuracy"]:.4f}')
  return state


def build_parser() -> argparse.ArgumentParser:
  """The command-line flags; each maps to a :class:`Config` field."""
  defaults = Config()
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n', 1)[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  add = parser.add_argument
  add('--schedule', choices=SCHEDULES, default=defaults.schedule,
      help='learning-rate policy')
  add('--base-lr', type=float, default=defaults.base_lr,
      help='lower LR (the fixed LR; one_cycle starts here)')
  add('--max-lr', type=float, default=defaults.max_lr,
      help='upper LR (the decays start here)')
  add('--step-size-epochs', type=float, default=defaults.step_size_epochs,
      help='half a CLR cycle, in epochs (Smith: 2-10); the decay period')
  add('--gamma', type=float, default=defaults.gamma,
      help='exp_range per-step amplitude decay')
  add('--decay-rate', type=float, default=defaults.decay_rate,
      help='rate of step/exponential/inverse-time decay per period')
  add('--epochs', type=int, default=defaults.epochs,
      help='passes over the data')
  add('--batch-size', type=int, default=defaults.batch_size,
      help='global batch, split over all devices')
  add('--eval-batch-size', type=int, default=defaults.eval_batch_size,
      help='test-set batch')
  add('--optimizer', choices=OPTIMIZERS, default=defaults.optimizer,
      help='optax optimizer')
  add('--momentum', type=float, default=defaults.momentum,
      help="SGD momentum (0: none) or Adam's b1")
  add('--cycle-momentum', action='store_true',
      help='cycle momentum opposite to the LR (cyclical and one_cycle)')
  add('--base-momentum', type=float, default=defaults.base_momentum,
      help='momentum at the LR peak, with --cycle-momentum')
  add('--max-momentum', type=float, default=defaults.max_momentum,
      help='momentum at the LR troughs, with --cycle-momentum')
  add('--seed', type=int, default=defaults.seed,
      help='initialisation and data-order seed')
  add('--find-lr', action='store_true',
      help='run the LR range test first (the model itself: BatchNorm and'
      ' dropout as in training; the run\'s optimizer and momentum) and take'
      ' base/max LR from optax_clr.suggest_clr_bounds on the median loss of'
      ' --find-lr-sweeps sweeps')
  add('--find-lr-steps', type=int, default=defaults.find_lr_steps,
      help=f'steps of the range test, from {FIND_LR_START:g} to'
      f' {FIND_LR_END:g}')
  add('--find-lr-sweeps', type=int, default=defaults.find_lr_sweeps,
      help='range tests run as one program (batch orders, dropout keys),'
      ' read through their median loss')
  add('--model', choices=model_lib.MODELS, default=defaults.model,
      help='network')
  add('--dataset', choices=data.DATASETS, default=defaults.dataset,
      help='digits is bundled; the others are read from --data-dir')
  add('--data-dir', default=None,
      help='folder with the MNIST/Fashion-MNIST IDX or CIFAR-10 files')
  add('--workdir', default=None,
      help='run directory, reuse it to resume; if unset, runs/train-<time>')
  add('--keep-checkpoints', type=int, default=defaults.keep_checkpoints,
      help='newest epoch checkpoints kept')
  add('--no-progress', action='store_true', help='hide the progress bar')
  add('--coordinator', default=None,
      help='HOST:PORT of process 0, for multi-process runs')
  add('--num-processes', type=int, default=None,
      help='processes in a multi-process run')
  add('--process-id', type=int, default=None,
      help='this process, 0 .. num_processes - 1')
  compile_cache.add_flag(parser)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the trainer from the command line; returns the exit status."""
  parser = build_parser()
  args = parser.parse_args(argv)
  compile_cache.enable(args.compilation_cache)
  distributed = (args.coordinator, args.num_processes, args.process_id)
  if any(value is not None for value in distributed):
    if any(value is None for value in distributed):
      parser.error('--coordinator, --num-processes and --process-id go'
                   ' together.')
    if args.workdir is None:
      parser.error('multi-process runs need a shared --workdir.')
    if args.num_processes < 1:
      parser.error(f'--num-processes must be >= 1, got {args.num_processes}.')
    if not 0 <= args.process_id < args.num_processes:
      parser.error(f'--process-id must be in [0, {args.num_processes}), got'
                   f' {args.process_id}.')
    parallel.initialize_distributed(*distributed)
  fields = {f.name for f in dataclasses.fields(Config)}
  config = Config(progress=not args.no_progress, **{
      key: value for key, value in vars(args).items() if key in fields})
  workdir = args.workdir or os.path.join(
      'runs', time.strftime('train-%Y%m%d-%H%M%S'))
  if jax.process_index() == 0:
    print(f'workdir: {workdir}; devices: {jax.device_count()}'
          f' ({jax.devices()[0].platform}), processes: {jax.process_count()}')
  try:
    final = train_and_evaluate(config, workdir)
  except (NonFiniteLossError, data.DataError, checkpointing.CheckpointError,
          checkpointing.WorkdirError, ValueError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 1
  if jax.process_index() == 0:
    print(json.dumps(final))
  return 0


if __name__ == '__main__':
  sys.exit(main())
