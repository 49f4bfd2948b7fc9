"""The learning-rate and momentum schedules and the optimizer of a config.

:func:`make_schedule` maps ``--schedule`` to an ``optax.Schedule`` of the
update count; :func:`make_optimizer` wraps SGD or Adam in
``optax.inject_hyperparams``, so the rate each update used is in its state.
"""

import optax

import optax_clr
from examples.trainer.config import check_choice
from examples.trainer.config import Config
from examples.trainer.config import CYCLICAL
from examples.trainer.config import OPTIMIZERS
from examples.trainer.config import SCHEDULES


def step_size_in_steps(config: Config, steps_per_epoch: int) -> int:
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
  check_choice('schedule', config.schedule, SCHEDULES)
  step_size = step_size_in_steps(config, steps_per_epoch)
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
        step_size_in_steps(config, steps_per_epoch), mode=config.schedule,
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
  check_choice('optimizer', config.optimizer, OPTIMIZERS)
  learning_rate = make_schedule(config, steps_per_epoch)
  momentum = _momentum_schedule(config, steps_per_epoch)
  if config.optimizer == 'sgd':
    return optax.inject_hyperparams(optax.sgd)(
        learning_rate=learning_rate, momentum=momentum
    )
  return optax.inject_hyperparams(optax.adam)(
      learning_rate=learning_rate, b1=momentum or 0.0
  )
