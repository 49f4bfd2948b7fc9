r"""How much :func:`optax_clr.find_lr` trains: its plan, and what it costs.

A plan is the range tests (``num_range_tests`` of ``range_test_steps``
updates) and the successive halving: rung :math:`r` trains
:math:`n_r` candidates for ``num_seeds`` seeds up to :math:`b_r` updates,
survivors continuing. Its cost, every optimizer update of every model, is

.. math::

  C = T \cdot m + s \sum_r n_r\, (b_r - b_{r-1}), \quad b_{-1} = 0,

in units of the budget :math:`B` that ``batches`` holds when divided by
:math:`B`. Options left as None are filled either with the thorough search's
values or, under ``max_cost``, with the largest search that fits it.
"""

import math
from typing import NamedTuple

import numpy as np

from optax_clr import _checks
from optax_clr import _find_lr_checks

# The thorough search: 8 candidates x 2 seeds halved over 3 rungs, after
# three 100-step range tests (about 8 B + 300 updates).
THOROUGH = dict(num_candidates=8, num_seeds=2, num_rungs=3, reduction=2,
                num_range_tests=3, range_test_steps=100)
# Under a cost bound: one range test of an eighth of the budget (10 to 100
# steps), then one seed of each candidate to B / 8, the best continued to B:
# with 4 candidates, 1/8 + 4/8 + 7/8 = 1.5 budgets.
BUDGETED = dict(num_seeds=1, num_rungs=2, reduction=8, num_range_tests=1)
MAX_CANDIDATES = 8
RANGE_TEST_FRACTION, MIN_RANGE_TEST_STEPS = 8, 10


class Plan(NamedTuple):
  """The search :func:`optax_clr.find_lr` runs."""

  num_candidates: int
  num_seeds: int
  num_rungs: int
  reduction: int
  num_range_tests: int
  range_test_steps: int


def rung_steps(num_steps: int, num_rungs: int, reduction: int) -> np.ndarray:
  """The updates done when each rung is scored: ``num_steps / reduction^i``."""
  return np.array([
      num_steps // reduction ** (num_rungs - 1 - r) for r in range(num_rungs)
  ])


def survivors(num_candidates: int, num_rungs: int, reduction: int) -> list[int]:
  """How many candidates each rung trains: ``ceil(n / reduction)`` each."""
  counts = [num_candidates]
  for _ in range(num_rungs - 1):
    counts.append(math.ceil(counts[-1] / reduction))
  return counts


def cost(plan: Plan, num_steps: int) -> int:
  """Every update of every model the plan trains, range tests included."""
  steps = rung_steps(num_steps, plan.num_rungs, plan.reduction)
  added = np.diff(steps, prepend=0)
  counts = survivors(plan.num_candidates, plan.num_rungs, plan.reduction)
  trained = plan.num_seeds * int(np.dot(counts, added))
  return plan.num_range_tests * plan.range_test_steps + trained


def _check_given(given: dict) -> dict:
  minimum = dict(num_candidates=2, num_seeds=1, num_rungs=1, reduction=2,
                 num_range_tests=1, range_test_steps=2)
  for name, value in given.items():
    if value is not None:
      _checks.check_step_count(name, value, minimum=minimum[name])
  return {name: None if value is None else int(value)
          for name, value in given.items()}


def resolve(num_steps: int, max_cost: float | None, **given) -> Plan:
  """The plan: ``given`` options, the rest filled to fit ``max_cost``.

  Args:
    num_steps: :math:`B`, the updates ``batches`` holds.
    max_cost: the bound on :math:`C / B`, or None for no bound.
    **given: the six options of :class:`Plan`, each an int or None.

  Returns:
    The plan, checked against the budget's rungs and ``max_cost``.

  Raises:
    ValueError: an option below its minimum, more rungs than ``num_steps``
      can give a step each, or a plan (given or the smallest the defaults
      allow) that costs more than ``max_cost``.
  """
  given = _check_given(given)
  if max_cost is None:
    filled = {name: THOROUGH[name] if value is None else value
              for name, value in given.items()}
    _find_lr_checks.check_rungs(filled['num_rungs'], filled['reduction'],
                                num_steps)
    return Plan(**filled)

  def pick(name: str, default: int) -> int:
    value = given[name]
    return default if value is None else value

  reduction = pick('reduction', BUDGETED['reduction'])
  num_rungs = pick('num_rungs', min(BUDGETED['num_rungs'], _find_lr_checks
                                    .max_rungs(num_steps, reduction)))
  _find_lr_checks.check_rungs(num_rungs, reduction, num_steps)
  filled = dict(
      num_seeds=pick('num_seeds', BUDGETED['num_seeds']),
      num_rungs=num_rungs, reduction=reduction,
      num_range_tests=pick('num_range_tests', BUDGETED['num_range_tests']),
      range_test_steps=pick('range_test_steps', int(np.clip(
          num_steps // RANGE_TEST_FRACTION, MIN_RANGE_TEST_STEPS, 100))))
  bound = max_cost * num_steps
  fitting = [n for n in range(2, MAX_CANDIDATES + 1)
             if cost(Plan(num_candidates=n, **filled), num_steps) <= bound]
  filled['num_candidates'] = pick('num_candidates',
                                  fitting[-1] if fitting else 2)
  plan = Plan(**filled)
  spent = cost(plan, num_steps)
  if spent > bound:
    raise ValueError(
        f'max_cost={max_cost!r} allows {bound:.0f} updates ({max_cost!r} x'
        f' the {num_steps} steps of batches), but this search needs {spent}:'
        f' {plan.num_range_tests} range tests of {plan.range_test_steps}'
        f' steps and {plan.num_candidates} candidates x {plan.num_seeds}'
        f' seeds over {plan.num_rungs} rungs (reduction {plan.reduction}).'
        ' Raise max_cost, or lower those options.'
    )
  return plan
