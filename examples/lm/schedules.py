"""The learning-rate schedules the LM trainer and the comparison train with.

One :class:`ScheduleConfig` names a family and its settings; the peak rate
and the cooldown fraction may be traced, so :func:`traced_schedule` builds
every family inside one ``optax_clr.sweep`` program and picks each model's
by an integer index (every family is computed and one selected: a few
scalar operations per step).

The families, with ``P`` the peak, ``T`` the steps, ``W`` the warmup:

- ``constant``: linear warmup to ``P``, then ``P`` for ever;
- ``cosine``: optax's ``warmup_cosine_decay_schedule`` (built from its
  traceable parts), to ``P / 10`` at ``T`` (Hägele et al. 2024's
  convention);
- ``wsd``: ``optax_clr.wsd_schedule``, warmup, ``P``, a cooldown to 0 over
  the last ``decay_fraction * T`` steps, of shape ``decay_shape``;
- ``inverse_sqrt``: ``optax_clr.inverse_sqrt_schedule``, warmup then
  ``P / sqrt(t / W)``;
- ``one_cycle``: ``optax_clr.one_cycle_schedule`` over ``T`` (its own
  30 % warmup from ``P / 25``, cosine annealing to ``P / 25e4``);
- ``triangular``: Smith's triangular CLR between ``P / 10`` and ``P``, two
  cycles over ``T`` (no warmup: it starts low).
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

import optax_clr

FAMILIES = ('constant', 'cosine', 'wsd', 'inverse_sqrt', 'one_cycle',
            'triangular')
DECAY_SHAPES = ('linear', 'cosine', '1-sqrt')
COSINE_FINAL = 0.1  # The cosine schedule ends at this fraction of the peak.
CLR_DIVISOR = 10.0  # triangular's base rate is the peak over this.


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
  """A schedule family and its settings.

  Attributes:
    family: one of :data:`FAMILIES`.
    total_steps: the planned length ``T``.
    warmup_steps: the linear warmup ``W`` (constant, cosine, wsd,
      inverse_sqrt).
    decay_fraction: wsd's cooldown over ``T``.
    decay_shape: wsd's cooldown shape, one of :data:`DECAY_SHAPES`.
  """

  family: str = 'wsd'
  total_steps: int = 600
  warmup_steps: int = 50
  decay_fraction: float = 0.2
  decay_shape: str = '1-sqrt'

  @property
  def name(self) -> str:
    """A label: ``wsd 1-sqrt 20%``, ``cosine``..."""
    if self.family != 'wsd':
      return self.family
    return f'wsd {self.decay_shape} {round(100 * self.decay_fraction)}%'


def cooldown(peak_lr, config: ScheduleConfig, start_step: int
             ) -> optax.Schedule:
  """A constant-rate run's schedule with a cooldown from ``start_step`` on.

  Equal to the ``constant`` family before ``start_step``; from there a
  ``decay_shape`` cooldown to 0 that ends at ``config.total_steps``. The one
  place to switch to ``optax_clr.cooldown_schedule(constant, start_step,
  decay_steps, shape=...)`` once the library has it.
  """
  return optax_clr.wsd_schedule(
      peak_lr, config.total_steps, config.total_steps - start_step,
      warmup_steps=config.warmup_steps, decay_shape=config.decay_shape)


def make_schedule(peak_lr, config: ScheduleConfig) -> optax.Schedule:
  """The schedule of ``config`` peaking at ``peak_lr`` (may be traced).

  ``config.decay_fraction`` may be traced too (a sweep over cooldowns).

  Raises:
    ValueError: an unknown family or shape, or phases that do not fit.
  """
  if config.family not in FAMILIES:
    raise ValueError(
        f'schedule must be one of {FAMILIES}, got {config.family!r}.')
  if config.decay_shape not in DECAY_SHAPES:
    raise ValueError(f'decay_shape must be one of {DECAY_SHAPES}, got'
                     f' {config.decay_shape!r}.')
  total, warmup = config.total_steps, config.warmup_steps
  if config.family == 'constant':
    return optax_clr.wsd_schedule(peak_lr, total, 0, warmup_steps=warmup,
                                  final_lr=peak_lr)
  if config.family == 'cosine':
    # optax.warmup_cosine_decay_schedule tests its peak with an ``if``, so
    # it cannot be traced; the same schedule from its traceable parts:
    return optax.join_schedules([
        optax.linear_schedule(0.0, peak_lr, warmup),
        optax.cosine_decay_schedule(peak_lr, total - warmup,
                                    alpha=COSINE_FINAL),
    ], [warmup])
  if config.family == 'wsd':
    fraction = config.decay_fraction
    decay = (jnp.round(fraction * total).astype(jnp.int32)
             if isinstance(fraction, jax.Array) else round(fraction * total))
    return optax_clr.wsd_schedule(peak_lr, total, decay, warmup_steps=warmup,
                                  decay_shape=config.decay_shape)
  if config.family == 'inverse_sqrt':
    return optax_clr.inverse_sqrt_schedule(peak_lr, warmup)
  if config.family == 'one_cycle':
    return optax_clr.one_cycle_schedule(peak_lr, total)
  return optax_clr.triangular_schedule(peak_lr / CLR_DIVISOR, peak_lr,
                                       step_size=max(1, total // 4))


def traced_schedule(branches: tuple[ScheduleConfig, ...], index, peak_lr,
                    decay_fraction) -> optax.Schedule:
  """Schedule ``branches[index]`` with traced ``index``, peak and cooldown.

  Every branch sees ``decay_fraction`` (only wsd branches read it); all
  are evaluated and ``index`` selects one, as ``lax.switch`` under ``vmap``.
  """

  def schedule(count):
    values = [
        make_schedule(peak_lr, dataclasses.replace(
            config, decay_fraction=decay_fraction))(count)
        for config in branches
    ]
    return jnp.stack(values)[index]

  return schedule
