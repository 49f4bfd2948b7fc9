"""Step 1 of Smith's protocol: the LR range test and the CLR bounds it gives.

The comparison reproduces the paper, whose bounds come from one reading of
the range test (Smith 2015, section 3.3), so it keeps that reading:
``config.find_lr_sweeps`` range tests of the initial model through
``optax_clr.nnx.range_test``, read by ``optax_clr.suggest_clr_bounds``. (The
trainer's ``--find-lr`` goes further and verifies its rate with
``optax_clr.nnx.find_lr``; see ``docs/find_lr.md``.) The committed
``docs/compare`` results were made with this code, as it ran in the trainer
before ``--find-lr`` moved to ``find_lr``.
"""

from collections.abc import Callable
import os

import jax
import numpy as np

import optax_clr
import optax_clr.nnx
from examples import data
from examples import model as model_lib
from examples.trainer import find_lr
from examples.trainer.config import Config

# Seeds the range test's batches apart from the training data order.
_RANGE_TEST_STREAM = 1


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


def range_test_bounds(
    config: Config, dataset: data.Dataset, log: Callable[[str], None],
    workdir: str | None = None,
) -> tuple[float, float]:
  """Smith's bounds: ``suggest_clr_bounds`` of the median of the range tests.

  The sweeps run the initial model in training mode (BatchNorm statistics
  update, fresh dropout; step ``t`` of sweep ``k`` reseeds the streams from
  ``fold_in(key_k, t)``), with the run's optimizer at the momentum its peak
  rates meet, from ``find_lr.FIND_LR_START`` to ``find_lr.FIND_LR_END``,
  as one ``jax.vmap``.

  Args:
    config: the run's config (model, optimizer, momentum, batch size, seed,
      ``find_lr_steps`` and ``find_lr_sweeps``).
    dataset: the training data.
    log: where the bounds are reported.
    workdir: if given, the range-test plot is saved there.

  Returns:
    ``(base_lr, max_lr)`` from ``optax_clr.suggest_clr_bounds``.
  """
  model = model_lib.make_model(config.model, dataset, seed=config.seed)
  images, labels = range_test_batches(config, dataset)
  keys = jax.random.split(
      jax.random.key(config.seed), config.find_lr_sweeps)
  optimizer = find_lr.find_lr_optimizer(config)

  def sweep(batches, key):
    return optax_clr.nnx.range_test(
        model, optimizer, find_lr.train_loss, batches, key=key,
        start_lr=find_lr.FIND_LR_START, end_lr=find_lr.FIND_LR_END,
        num_steps=config.find_lr_steps, has_aux=True,
    )

  result = jax.vmap(sweep)((images, labels), keys)
  base_lr, max_lr = optax_clr.suggest_clr_bounds(result)
  log(f'Range test ({config.find_lr_sweeps} x {config.find_lr_steps} steps):'
      f' base_lr={base_lr:.4g}, max_lr={max_lr:.4g}.')
  if workdir is not None and jax.process_index() == 0:
    optax_clr.plot_range_test(result, path=os.path.join(workdir,
                                                        'range_test.png'))
  return float(base_lr), float(max_lr)
