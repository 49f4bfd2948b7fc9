"""``--find-lr``: the LR range test of the real model, and the bounds it gives.

One entry point, :func:`find_lr_bounds` ``(config, dataset, log, workdir,
model=...) -> (base_lr, max_lr)``; the rest is how it runs its sweeps.
"""

from collections.abc import Callable
import functools
import os
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_clr
import optax_clr.nnx
from examples import data
from examples import model as model_lib
from examples.trainer.config import Config
from examples.trainer.steps import loss_fn

# Seeds the range test's batches apart from the training data order.
_RANGE_TEST_STREAM = 1
# The range test's span (--find-lr): from well below any useful rate of SGD
# or Adam to far past divergence; 6 decades in the default 100 steps.
FIND_LR_START = 1e-5
FIND_LR_END = 10.0


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
