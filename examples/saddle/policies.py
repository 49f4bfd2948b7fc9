"""The learning-rate policies of the saddle-point experiment, under a budget.

Every policy is built with ``optax_clr`` and is linear in its peak rate, so
:func:`budget_schedules` can give all of them the same peak or the same mean.
"""

from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

import optax_clr

POLICIES = (
    'fixed',
    'step_decay',
    'exponential_decay',
    'inverse_time_decay',
    'triangular',
    'triangular2',
    'exp_range',
)
BUDGETS = ('peak', 'mean')


def policy_schedule(
    policy: str,
    peak_lr: float,
    *,
    steps: int,
    decay_to: float = 0.01,
    cycles: int = 5,
    base_fraction: float = 0.25,
) -> optax.Schedule:
  r"""Builds one policy with ``optax_clr`` so that its largest rate is ``peak_lr``.

  With ``T = steps`` and ``d = decay_to``:

  .. math::

    \begin{aligned}
    \text{fixed:}\quad & \eta_t = \eta \\
    \text{step\_decay:}\quad & \eta_t = \eta\, 2^{-\lfloor t / n \rfloor},
      \; n = \lceil T / \log_2(1/d) \rceil \\
    \text{exponential\_decay:}\quad & \eta_t = \eta\, d^{t/T} \\
    \text{inverse\_time\_decay:}\quad & \eta_t = \eta / (1 + (1/d - 1)\, t/T)
      \\
    \text{triangular, triangular2, exp\_range:}\quad & \text{CLR from }
      b\eta \text{ to } \eta,\; \text{step\_size} = T / (2\,\text{cycles}),
      \; \gamma = d^{1/T}
    \end{aligned}

  Every policy is linear in ``peak_lr``, which lets :func:`budget_schedules`
  rescale a shape to a given mean.

  Args:
    policy: one of :data:`POLICIES`.
    peak_lr: the fixed rate, the decays' initial rate, the cycles' ``max_lr``.
    steps: the length of the run, ``T``.
    decay_to: the fraction of the initial rate the decays (and exp_range's
      amplitude) reach at step ``T``.
    cycles: the number of CLR cycles in the run.
    base_fraction: ``base_lr / max_lr`` for the cycles, ``b``.

  Returns:
    schedule
      A function that maps step counts to values.

  Raises:
    ValueError: ``policy`` is unknown.
  """
  step_size = max(1, steps // (2 * cycles))
  if policy == 'fixed':
    return lambda count: jnp.full(jnp.shape(count), peak_lr, jnp.float32)
  if policy == 'step_decay':
    drop_every = max(1, int(np.ceil(steps / np.log2(1.0 / decay_to))))
    return optax_clr.step_decay_schedule(peak_lr, drop_every, factor=0.5)
  if policy == 'exponential_decay':
    return optax_clr.exponential_decay_schedule(
        peak_lr, decay_to, decay_steps=steps
    )
  if policy == 'inverse_time_decay':
    return optax_clr.inverse_time_decay_schedule(
        peak_lr, 1.0 / decay_to - 1.0, decay_steps=steps
    )
  base_lr = base_fraction * peak_lr
  if policy == 'triangular':
    return optax_clr.triangular_schedule(base_lr, peak_lr, step_size)
  if policy == 'triangular2':
    return optax_clr.triangular2_schedule(base_lr, peak_lr, step_size)
  if policy == 'exp_range':
    gamma = float(decay_to ** (1.0 / steps))
    return optax_clr.exp_range_schedule(
        base_lr, peak_lr, step_size, gamma=gamma
    )
  raise ValueError(f'policy must be one of {POLICIES}, got {policy!r}.')


def mean_rate(schedule: optax.Schedule, steps: int) -> float:
  """The mean of ``schedule(t)`` over ``t = 0, ..., steps - 1``."""
  return float(np.mean(np.asarray(schedule(jnp.arange(steps)), np.float64)))


def shifted(schedule: optax.Schedule, offset: int) -> optax.Schedule:
  """``count -> schedule(count + offset)``: the run starts ``offset`` late."""
  if offset == 0:
    return schedule
  return lambda count: schedule(jnp.asarray(count) + offset)


def budget_schedules(
    budget: str,
    *,
    lr: float,
    mean_lr: float,
    steps: int,
    saddle_at: int = 0,
    **shape: Any,
) -> list[optax.Schedule]:
  r"""One schedule per policy in :data:`POLICIES`, under one budget.

  The shapes span a training run of ``T = saddle_at + steps`` steps, of
  which the simulation sees the last ``steps``: the saddle is met
  ``saddle_at`` steps into training. ``budget="peak"`` gives every policy the
  peak rate ``lr``; ``budget="mean"`` rescales each shape ``s`` to

  .. math::

    \eta_t = \text{mean\_lr} \cdot s(t) \Big/ \tfrac{1}{T}
      \textstyle\sum_{u<T} s(u)

  so that all policies spend the same cumulative rate over training.

  Args:
    budget: ``"peak"`` or ``"mean"``.
    lr: the common peak rate of the ``"peak"`` budget.
    mean_lr: the common mean rate of the ``"mean"`` budget.
    steps: the steps simulated from the saddle on.
    saddle_at: the training step at which the run is at the saddle.
    **shape: ``decay_to``, ``cycles``, ``base_fraction`` of
      :func:`policy_schedule`.

  Returns:
    The schedules, in the order of :data:`POLICIES`, shifted so that count 0
    is training step ``saddle_at``.

  Raises:
    ValueError: ``budget`` is unknown.
  """
  if budget not in BUDGETS:
    raise ValueError(f'budget must be one of {BUDGETS}, got {budget!r}.')
  total = saddle_at + steps
  schedules = []
  for policy in POLICIES:
    peak = lr
    if budget == 'mean':
      unit = policy_schedule(policy, 1.0, steps=total, **shape)
      peak = mean_lr / mean_rate(unit, total)
    schedule = policy_schedule(policy, peak, steps=total, **shape)
    schedules.append(shifted(schedule, saddle_at))
  return schedules
