"""The policies of the comparison, and one policy trained over every seed.

Each policy is a schedule of the trainer (``examples.trainer.schedules``); a
policy's seeds (and the fixed-rate grid's rates) train as one vmapped
program through ``examples.multi_model``.
"""

from collections.abc import Sequence
import dataclasses
from typing import NamedTuple

import optax

from examples import data
from examples import multi_model
from examples.trainer.config import Config
from examples.trainer.schedules import make_optimizer

BASELINE = 'fixed (base_lr)'
BEST_FIXED = 'best fixed (grid)'
# The fixed-rate grid, as multiples of the range test's max_lr.
GRID_FACTORS = (0.125, 0.25, 0.5, 1.0, 2.0)


class Policy(NamedTuple):
  """A row of the comparison: a label and the trainer's schedule name."""

  label: str
  schedule: str


POLICIES = (
    Policy(BASELINE, 'fixed'),
    Policy('step_decay', 'step_decay'),
    Policy('exponential_decay', 'exponential_decay'),
    Policy('inverse_time_decay', 'inverse_time_decay'),
    Policy('triangular', 'triangular'),
    Policy('triangular2', 'triangular2'),
    Policy('exp_range', 'exp_range'),
    Policy('one_cycle', 'one_cycle'),
)


def optimizer_fn(
    config: Config, steps_per_epoch: int
) -> multi_model.OptimizerFn:
  """The trainer's optimizer, with any ``config`` fields from ``hparams``.

  Inside the vmapped run the ``hparams`` are traced scalars; only the fixed
  rate's ``base_lr`` is traced here (``optax.constant_schedule`` takes it as
  is), the other policies' settings are shared by all seeds and stay concrete.
  """

  def build(hparams: multi_model.Hyperparams) -> optax.GradientTransformation:
    return make_optimizer(
        dataclasses.replace(config, **hparams), steps_per_epoch
    )

  return build


def train_policy(
    config: Config, dataset: data.Dataset, *, seeds: Sequence[int],
    steps_per_epoch: int, eval_every: int,
    fixed_lrs: Sequence[float] | None = None,
) -> multi_model.Trained:
  """Trains one schedule for every seed (and fixed rate) as ONE program.

  Args:
    config: the trainer config; ``schedule`` picks the policy.
    dataset: the data.
    seeds: the seeds.
    steps_per_epoch: updates per epoch.
    eval_every: updates between test evaluations.
    fixed_lrs: for the fixed-rate grid, the rates: every rate runs with every
      seed, ``base_lr`` traced per model.

  Returns:
    The :class:`multi_model.Trained` result, models ordered rate-major.
  """
  hparams = {}
  if fixed_lrs is not None:
    hparams['base_lr'] = [lr for lr in fixed_lrs for _ in seeds]
    seeds = [seed for _ in fixed_lrs for seed in seeds]
  return multi_model.train_models(
      dataset=dataset,
      model_name=config.model,
      optimizer_fn=optimizer_fn(config, steps_per_epoch),
      hparams=hparams,
      seeds=seeds,
      num_steps=config.epochs * steps_per_epoch,
      batch_size=config.batch_size,
      eval_every=eval_every,
  )
