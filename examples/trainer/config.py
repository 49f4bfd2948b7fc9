"""The trainer's hyperparameters and their checks.

:class:`Config` holds every flag of ``examples/train.py`` with the main job's
defaults; :func:`check_config` refuses one that cannot train, naming the flag,
before any work. Checks that need the dataset (the batch size against the
examples and devices, the step size in steps) come later, in
:mod:`examples.trainer.loop`.
"""

import dataclasses
import math

from examples import data
from examples import model as model_lib
# check_choice and flag are re-exported: the trainer's modules and
# examples/train.py import them from here.
from examples.flag_checks import check_choice
from examples.flag_checks import check_real
from examples.flag_checks import check_whole
from examples.flag_checks import flag

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
    find_lr: choose the rate first with ``optax_clr.nnx.find_lr`` (for this
      run's budget, scored on a validation split of the training rows) and
      take ``base_lr`` and ``max_lr`` from its ``clr_bounds``.
    find_lr_steps: the steps of each of ``find_lr``'s range tests.
    find_lr_sweeps: ``find_lr``'s range tests (batch orders and dropout
      keys), run together and read through their median.
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
  check_choice(flag('dataset'), config.dataset, data.DATASETS)
  check_choice(flag('model'), config.model, model_lib.MODELS)
  check_choice(flag('schedule'), config.schedule, SCHEDULES)
  check_choice(flag('optimizer'), config.optimizer, OPTIMIZERS)
  for name in ('epochs', 'batch_size', 'eval_batch_size', 'keep_checkpoints'):
    check_whole(config, name, 1, math.inf)
  check_whole(config, 'find_lr_steps', 2, math.inf)
  check_whole(config, 'find_lr_sweeps', 1, math.inf)
  check_whole(config, 'seed', 0, 2**63)
  check_real(config, 'base_lr', 0.0)
  check_real(config, 'max_lr', 0.0)
  check_real(config, 'step_size_epochs', 0.0, low_open=True)
  check_real(config, 'gamma', 0.0, 1.0, low_open=True, high_open=False)
  if config.schedule == 'step_decay':  # the factor per period
    check_real(config, 'decay_rate', 0.0, 1.0, low_open=True,
               high_open=False)
  elif config.schedule == 'exponential_decay':  # may grow: > 1 is allowed
    check_real(config, 'decay_rate', 0.0, low_open=True)
  else:
    check_real(config, 'decay_rate', 0.0)
  for name in ('momentum', 'base_momentum', 'max_momentum'):
    check_real(config, name, 0.0, 1.0)
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

