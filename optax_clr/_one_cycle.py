"""One-cycle learning rate and momentum (Smith, 2018; PyTorch OneCycleLR).

One phase table, two readers: the learning rate reads the ``lr`` column and
the momentum the ``momentum`` column of the same phases.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_clr import _checks
from optax_clr import _numerics

ANNEAL_STRATEGIES = ('cos', 'linear')


class _Phase(NamedTuple):
  end_step: Any  # Float, as in PyTorch: pct_start * total_steps - 1.
  start: Any
  end: Any


def _phase_ends(
    total_steps: jax.typing.ArrayLike,
    pct_start: jax.typing.ArrayLike,
    three_phase: bool,
) -> list[Any]:
  """Returns the phases' last steps, checking their lengths when concrete.

  PyTorch divides by ``end_step - start_step``; a zero-length phase there is
  a division by zero. Here it is a ValueError at construction.
  """
  _checks.check_step_count('total_steps', total_steps)
  _checks.check_number(
      'pct_start', pct_start, lower=0.0, upper=1.0, lower_open=True,
      upper_open=True,
  )
  steps, pct = _checks.concrete(total_steps), _checks.concrete(pct_start)
  if steps is not None and pct is not None:
    warmup = np.float64(pct) * np.float64(steps)
    ends: list[Any] = [warmup - 1.0]
    if three_phase:
      ends.append(2.0 * warmup - 2.0)
    ends.append(np.float64(steps) - 1.0)
    starts = [0.0] + ends[:-1]
    if any(np.any(end <= start) for start, end in zip(starts, ends)):
      raise ValueError(
          'pct_start * total_steps leaves an empty phase (PyTorch would divide'
          f' by zero): pct_start={pct_start!r}, total_steps={total_steps!r},'
          f' three_phase={three_phase}. Need pct_start * total_steps > 1'
          + (
              ' and 2 * pct_start * total_steps < total_steps + 1.'
              if three_phase
              else ' and < total_steps.'
          )
      )
    return ends
  warmup = jnp.asarray(pct_start, jnp.float32) * jnp.asarray(
      total_steps, jnp.float32
  )
  ends = [warmup - 1.0]
  if three_phase:
    ends.append(2.0 * warmup - 2.0)
  ends.append(jnp.asarray(total_steps, jnp.float32) - 1.0)
  return ends


def _check_corners(
    max_lr: Any, div_factor: Any, final_div_factor: Any, dtype: Any
) -> None:
  """Checks, when concrete, that the initial and final rates fit ``dtype``."""
  peak, div = _checks.concrete(max_lr), _checks.concrete(div_factor)
  if peak is None or div is None:
    return
  initial = peak.astype(np.float64) / div.astype(np.float64)
  _checks.check_fits(
      'div_factor', initial, dtype, what='max_lr / div_factor'
  )
  final = _checks.concrete(final_div_factor)
  if final is not None:
    _checks.check_fits(
        'final_div_factor', initial / final.astype(np.float64), dtype,
        what='max_lr / div_factor / final_div_factor',
    )


def _anneal(strategy: str, start: Any, end: Any, pct: jax.Array) -> jax.Array:
  # PyTorch's ``end + (start - end) / 2 * (cos(pi p) + 1)`` and ``start + (end
  # - start) p`` cancel catastrophically in float32 near p = 1 (a 4e-6 final
  # rate came out 0.2% off); these equal forms land on ``end`` exactly.
  if strategy == 'cos':
    return end + (start - end) * jnp.square(jnp.cos(jnp.pi / 2 * pct))
  return start * (1.0 - pct) + end * pct


def _one_cycle(
    phases: list[_Phase],
    total_steps: jax.typing.ArrayLike,
    anneal_strategy: str,
    dtype: Any,
) -> optax.Schedule:
  """Reads a phase table at ``count``, holding the last value after it."""

  def schedule(count: jax.typing.ArrayLike) -> jax.Array:
    count = _numerics.as_count(count)
    last = _numerics.as_int(total_steps, count) - 1
    step = jnp.clip(count, 0, last).astype(dtype)
    begins = [0.0] + [phase.end_step for phase in phases[:-1]]

    def read(begin: Any, phase: _Phase) -> jax.Array:
      begin = jnp.asarray(begin, dtype)
      pct = (step - begin) / (jnp.asarray(phase.end_step, dtype) - begin)
      start = jnp.asarray(phase.start, dtype)
      return _anneal(anneal_strategy, start, jnp.asarray(phase.end, dtype), pct)

    # The first phase with ``step <= end_step`` wins, the last one otherwise
    # (PyTorch's loop); earlier phases are written last so they take priority.
    value = read(begins[-1], phases[-1])
    for begin, phase in reversed(list(zip(begins[:-1], phases[:-1]))):
      inside = step <= jnp.asarray(phase.end_step, dtype)
      value = jnp.where(inside, read(begin, phase), value)
    return value

  return schedule


def one_cycle_schedule(
    max_lr: jax.typing.ArrayLike,
    total_steps: jax.typing.ArrayLike,
    *,
    pct_start: jax.typing.ArrayLike = 0.3,
    anneal_strategy: str = 'cos',
    div_factor: jax.typing.ArrayLike = 25.0,
    final_div_factor: jax.typing.ArrayLike = 1e4,
    three_phase: bool = False,
) -> optax.Schedule:
  r"""One-cycle learning rate: warm up to ``max_lr``, then anneal far below.

  With ``initial = max_lr / div_factor``, ``minimum = initial /
  final_div_factor`` and ``w = pct_start * total_steps``, the rate anneals
  (cosine or linearly) between these corners, as PyTorch's ``OneCycleLR``:

  .. math::

    \begin{array}{lll}
      \text{two phases:} & \text{initial} \to \max \text{ over } [0, w-1],
        & \max \to \text{minimum} \text{ over } [w-1, T-1] \\
      \text{three phases:} & \text{initial} \to \max \text{ over } [0, w-1],
        & \max \to \text{initial} \text{ over } [w-1, 2w-2],
        \ \text{initial} \to \text{minimum} \text{ over } [2w-2, T-1]
    \end{array}

  with cosine annealing :math:`e + (s - e)(1 + \cos(\pi p)) / 2` or linear
  :math:`s + (e - s) p` from ``s`` to ``e`` at phase fraction ``p``.

  Equal to PyTorch step for step up to ``total_steps - 1``; after that the
  final value is held (PyTorch extrapolates, reaching a negative rate with
  linear annealing). A phase of zero length is refused with a ValueError
  (PyTorch divides by zero), and so are factors that make the initial or
  final rate overflow float32. ``max_lr``, ``div_factor`` and
  ``final_div_factor`` may be traced (a ``jax.vmap`` sweep); concrete
  arguments are checked, traced ones are not.

  Args:
    max_lr: the peak learning rate, ``> 0``.
    total_steps: the number of updates in the cycle, a whole number ``>= 1``.
    pct_start: the fraction of steps spent warming up, in ``(0, 1)``.
    anneal_strategy: ``"cos"`` or ``"linear"``.
    div_factor: ``initial = max_lr / div_factor``, ``> 0``.
    final_div_factor: ``minimum = initial / final_div_factor``, ``> 0``.
    three_phase: anneal back to ``initial`` before the final descent.

  Returns:
    schedule
      A function that maps step counts to values.

  Examples:
    >>> import optax_clr
    >>> schedule = optax_clr.one_cycle_schedule(
    ...     1.0, 10, pct_start=0.5, anneal_strategy='linear', div_factor=10.0,
    ...     final_div_factor=10.0)
    >>> [round(float(schedule(k)), 3) for k in (0, 4, 9, 20)]
    [0.1, 1.0, 0.01, 0.01]

  References:
    Smith and Topin, `Super-Convergence
    <https://arxiv.org/abs/1708.07120>`_, 2017.
  """
  _checks.check_number('max_lr', max_lr, lower=0.0, lower_open=True)
  _checks.check_number('div_factor', div_factor, lower=0.0, lower_open=True)
  _checks.check_number(
      'final_div_factor', final_div_factor, lower=0.0, lower_open=True
  )
  _checks.check_choice('anneal_strategy', anneal_strategy, ANNEAL_STRATEGIES)
  three_phase = _checks.check_bool('three_phase', three_phase)
  ends = _phase_ends(total_steps, pct_start, three_phase)
  dtype = _numerics.output_dtype(max_lr, div_factor, final_div_factor)
  _check_corners(max_lr, div_factor, final_div_factor, dtype)
  peak = jnp.asarray(max_lr, dtype)
  initial = peak / div_factor
  minimum = initial / final_div_factor
  if three_phase:
    corners = [(initial, peak), (peak, initial), (initial, minimum)]
  else:
    corners = [(initial, peak), (peak, minimum)]
  phases = [_Phase(end, *corner) for end, corner in zip(ends, corners)]
  return _one_cycle(phases, total_steps, anneal_strategy, dtype)


def one_cycle_momentum_schedule(
    total_steps: jax.typing.ArrayLike,
    *,
    base_momentum: jax.typing.ArrayLike = 0.85,
    max_momentum: jax.typing.ArrayLike = 0.95,
    pct_start: jax.typing.ArrayLike = 0.3,
    anneal_strategy: str = 'cos',
    three_phase: bool = False,
) -> optax.Schedule:
  r"""One-cycle momentum: the mirror image of :func:`one_cycle_schedule`.

  Over the same phases as the learning rate, momentum anneals
  ``max_momentum -> base_momentum`` while the rate warms up and back to
  ``max_momentum`` while it anneals; with ``three_phase`` the final phase
  holds ``max_momentum``. As in PyTorch's ``OneCycleLR(cycle_momentum=True)``,
  the final value is held after ``total_steps - 1``. Use it through
  ``optax.inject_hyperparams`` (``momentum`` of SGD or ``b1`` of Adam).
  Concrete arguments are checked; traced ones are not.

  .. math::

    m(t) = \max_m \to \text{base}_m \text{ over } [0, w-1],
      \quad \text{base}_m \to \max_m \text{ over } [w-1, T-1]

  Args:
    total_steps: the number of updates in the cycle, a whole number ``>= 1``.
    base_momentum: the momentum at the learning-rate peak, ``>= 0``.
    max_momentum: the momentum at the ends, ``>= base_momentum``.
    pct_start: the fraction of steps of the first phase, in ``(0, 1)``.
    anneal_strategy: ``"cos"`` or ``"linear"``.
    three_phase: use the three-phase table of :func:`one_cycle_schedule`.

  Returns:
    schedule
      A function that maps step counts to values.

  Examples:
    >>> import optax_clr
    >>> schedule = optax_clr.one_cycle_momentum_schedule(
    ...     10, pct_start=0.5, anneal_strategy='linear')
    >>> [round(float(schedule(k)), 3) for k in (0, 4, 9)]
    [0.95, 0.85, 0.95]

  References:
    Smith, `A disciplined approach to neural network hyper-parameters
    <https://arxiv.org/abs/1803.09820>`_, 2018.
  """
  _checks.check_number('base_momentum', base_momentum, lower=0.0)
  _checks.check_number('max_momentum', max_momentum, lower=0.0)
  _checks.check_not_below(
      'base_momentum', base_momentum, 'max_momentum', max_momentum
  )
  _checks.check_choice('anneal_strategy', anneal_strategy, ANNEAL_STRATEGIES)
  three_phase = _checks.check_bool('three_phase', three_phase)
  ends = _phase_ends(total_steps, pct_start, three_phase)
  dtype = _numerics.output_dtype(base_momentum, max_momentum)
  low = jnp.asarray(base_momentum, dtype)
  high = jnp.asarray(max_momentum, dtype)
  if three_phase:
    corners = [(high, low), (low, high), (high, high)]
  else:
    corners = [(high, low), (low, high)]
  phases = [_Phase(end, *corner) for end, corner in zip(ends, corners)]
  return _one_cycle(phases, total_steps, anneal_strategy, dtype)
