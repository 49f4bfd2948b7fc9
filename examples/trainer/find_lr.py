"""``--find-lr``: the run's learning rate chosen by ``optax_clr.nnx.find_lr``.

One entry point, :func:`find_lr_bounds` ``(config, dataset, log, workdir,
model=...) -> (base_lr, max_lr)``; the rest is what it hands to
``optax_clr.nnx.find_lr``: the run's optimizer, its budget of batches and a
validation split carved out of the training rows.
"""

from collections.abc import Callable
import functools
import json
import os
import sys
import time
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

# Seed streams of their own, apart from the training data order.
_BATCH_STREAM = 1
_VALIDATION_STREAM = 2
# The fraction of the training rows held out for find_lr's eval_fn.
VALIDATION_FRACTION = 0.2
# The range tests' span: from well below any useful rate of SGD or Adam to
# far past divergence; 6 decades in the default 100 steps.
FIND_LR_START = 1e-5
FIND_LR_END = 10.0


def find_lr_optimizer(config: Config) -> Callable[..., Any]:
  """The optimizer factory ``find_lr`` trains with: the run's, same momentum.

  The rates found hold for the momentum they were found with (Smith 2018,
  section 4.2, https://arxiv.org/abs/1803.09820): SGD's effective step is
  ``lr / (1 - momentum)``. With ``--cycle-momentum`` the highest rates are
  used at ``base_momentum`` (momentum falls as the rate rises), so that is
  the momentum here.
  """
  momentum = config.base_momentum if config.cycle_momentum else (
      config.momentum)
  if config.optimizer == 'sgd':
    return functools.partial(optax.sgd, momentum=momentum or None)
  return functools.partial(optax.adam, b1=momentum)


def validation_split(
    config: Config, dataset: data.Dataset
) -> tuple[np.ndarray, np.ndarray]:
  """``(fit_rows, validation_rows)``: the training rows, 20 % held out.

  A random ``VALIDATION_FRACTION`` of the training rows (seeded by
  ``config.seed``), sorted. The test split is never among them.
  """
  n = len(dataset.train_labels)
  rng = np.random.default_rng([config.seed, _VALIDATION_STREAM])
  order = rng.permutation(n)
  held = max(1, round(VALIDATION_FRACTION * n))
  return np.sort(order[held:]), np.sort(order[:held])


def find_lr_batches(
    config: Config, dataset: data.Dataset, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """The budget the rate is chosen for: ``config.epochs`` epochs of ``rows``.

  Shuffled epochs of those training rows, as training draws them, from a
  stream of their own (the training data order is not consumed).

  Returns:
    ``(images, labels)`` shaped ``[epochs * (len(rows) // batch), batch,
    ...]``.

  Raises:
    ValueError: ``--batch-size`` is larger than the rows ``find_lr`` trains
      on.
  """
  if config.batch_size > len(rows):
    raise ValueError(
        f'--batch-size {config.batch_size} is larger than the {len(rows)}'
        f' training examples --find-lr trains on (the training set less its'
        f' {VALIDATION_FRACTION:.0%} validation split).')
  rng = np.random.default_rng([config.seed, _BATCH_STREAM])
  images, labels = dataset.train_images[rows], dataset.train_labels[rows]
  epochs = [data.epoch_batches(images, labels, config.batch_size, rng)
            for _ in range(config.epochs)]
  return tuple(np.concatenate(arrays) for arrays in zip(*epochs))


def train_loss(
    model: nnx.Module, batch: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The training loss of a batch, with its accuracy as ``aux``."""
  images, labels = batch
  loss, logits = loss_fn(model, images, labels)
  return loss, {'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels)}


def validation_loss(
    dataset: data.Dataset, rows: np.ndarray
) -> Callable[[nnx.Module], jax.Array]:
  """``eval_fn(model)``: the mean cross-entropy on ``rows``, inference mode."""
  images = jnp.asarray(dataset.train_images[rows])
  labels = jnp.asarray(dataset.train_labels[rows])

  def eval_fn(model: nnx.Module) -> jax.Array:
    model.eval()
    loss, _ = loss_fn(model, images, labels)
    return loss

  return eval_fn


def _record(result: optax_clr.FindLRResult, seconds: float) -> dict[str, Any]:
  """The JSON-ready summary of a ``find_lr`` result."""
  # JSON has neither NaN (not trained at that rung) nor +inf (diverged).
  scores = [[None if np.isnan(s) else float(s) if np.isfinite(s) else 'inf'
             for s in rung] for rung in result.scores]
  return {
      'learning_rate': result.learning_rate,
      'clr_bounds': [float(b) for b in result.clr_bounds],
      'candidates': [float(c) for c in result.candidates],
      'scores': scores,
      'rung_steps': [int(s) for s in result.rung_steps],
      'bracket': [float(b) for b in result.bracket],
      'suggestion': result.suggestion,
      'cost_steps': result.cost_steps,
      'seconds': seconds,
  }


def find_lr_bounds(
    config: Config, dataset: data.Dataset, log: Callable[[str], None],
    workdir: str | None = None, *, model: nnx.Module | None = None,
) -> tuple[float, float]:
  """Chooses the run's rate with ``optax_clr.nnx.find_lr``; returns CLR bounds.

  What ``find_lr`` is given:

  - the real model, in training mode: BatchNorm statistics update and
    dropout draws afresh at every step of every range test and candidate
    (``key`` seeded by ``config.seed``); ``model`` is left as it was;
  - the run's optimizer at the momentum its highest rates meet
    (:func:`find_lr_optimizer`);
  - the run's budget, ``config.epochs`` shuffled epochs of the training rows
    less a validation split (:func:`validation_split`,
    :func:`find_lr_batches`);
  - ``eval_fn``: the cross-entropy on that validation split, in inference
    mode. The test split is never seen;
  - ``config.find_lr_sweeps`` range tests of ``config.find_lr_steps`` steps
    from ``FIND_LR_START`` to ``FIND_LR_END``; the rest are ``find_lr``'s
    defaults (8 candidates, 2 seeds each, 3 rungs of successive halving).

  The bounds are ``result.clr_bounds``: a triangular schedule between half
  and twice the verified rate. The run then trains on the whole training
  set. The measurements are in ``docs/find_lr.md``.

  Args:
    config: the run's config (model, optimizer, momentum, batch size,
      epochs, seed, ``find_lr_steps`` and ``find_lr_sweeps``).
    dataset: the training data.
    log: where the result is reported.
    workdir: if given, the range tests' plot (``range_test.png``) and the
      result (``find_lr.json``: rate, bounds, candidates, scores, cost) are
      saved there.
    model: the model training will start from (default: built from
      ``config``); it is not modified.

  Returns:
    ``(base_lr, max_lr)``, ``FindLRResult.clr_bounds``.

  Raises:
    ValueError: ``--batch-size`` larger than the rows trained on, or as
      ``optax_clr.find_lr`` (every candidate diverging, say).
  """
  if model is None:
    model = model_lib.make_model(config.model, dataset, seed=config.seed)
  fit, validation = validation_split(config, dataset)
  batches = find_lr_batches(config, dataset, fit)
  start = time.perf_counter()
  result = optax_clr.nnx.find_lr(
      model, find_lr_optimizer(config), train_loss, batches,
      validation_loss(dataset, validation), key=jax.random.key(config.seed),
      has_aux=True, num_range_tests=config.find_lr_sweeps,
      range_test_steps=config.find_lr_steps, start_lr=FIND_LR_START,
      end_lr=FIND_LR_END, seed=config.seed,
      max_cost=None,  # the thorough search measured in docs/find_lr.md
      # The library's bars (range tests, then each rung), in a terminal.
      progress=(config.progress and sys.stderr.isatty()
                and jax.process_index() == 0),
  )
  seconds = time.perf_counter() - start
  base_lr, max_lr = (float(b) for b in result.clr_bounds)
  log(f'find_lr ({len(fit)} training rows, {len(validation)} validation;'
      f' {len(batches[1])} steps): lr={result.learning_rate:.4g},'
      f' base_lr={base_lr:.4g}, max_lr={max_lr:.4g}; cost'
      f' {result.cost_steps} optimizer steps, {seconds:.1f} s.')
  log('  candidates: ' + ', '.join(f'{c:.3g}' for c in result.candidates))
  for rung, steps in enumerate(result.rung_steps):
    log(f'  validation loss after {steps} steps: ' + ', '.join(
        '-' if np.isnan(s) else f'{s:.4f}' for s in result.scores[rung]))
  if workdir is not None and jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    optax_clr.plot_range_test(
        result.range_test, path=os.path.join(workdir, 'range_test.png'))
    with open(os.path.join(workdir, 'find_lr.json'), 'w') as f:
      json.dump(_record(result, seconds), f, indent=1)
  return base_lr, max_lr
