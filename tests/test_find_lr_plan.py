"""find_lr's plan: every option mix costs what is counted, within max_cost."""

import itertools
import math

import numpy as np
import pytest

from optax_clr import _find_lr_plan


def cost_by_hand(num_steps, num_candidates, num_seeds, num_rungs, reduction,
                 num_range_tests, range_test_steps):
  """Successive halving's updates, counted step by step for every model."""
  alive, done, total = num_candidates, 0, num_range_tests * range_test_steps
  for rung in range(num_rungs):
    end = num_steps // reduction ** (num_rungs - 1 - rung)
    total += alive * num_seeds * (end - done)
    done = end
    alive = -(-alive // reduction)
  return total


OPTIONS = ('num_candidates', 'num_seeds', 'num_rungs', 'reduction',
           'num_range_tests', 'range_test_steps')


def test_thorough_defaults():
  plan = _find_lr_plan.resolve(64, None, **dict.fromkeys(OPTIONS))
  assert plan == _find_lr_plan.Plan(8, 2, 3, 2, 3, 100)
  # 2 x (8 x 16 + 4 x 16 + 2 x 32) + 3 x 100: 8 B + 300.
  assert _find_lr_plan.cost(plan, 64) == 8 * 64 + 300


@pytest.mark.parametrize('num_steps', [27, 60, 64, 200, 300, 1000, 4800])
def test_default_budget_fits_one_and_a_half_runs(num_steps):
  plan = _find_lr_plan.resolve(num_steps, 1.5, **dict.fromkeys(OPTIONS))
  spent = _find_lr_plan.cost(plan, num_steps)
  assert spent == cost_by_hand(num_steps, *plan)
  assert spent <= 1.5 * num_steps
  assert plan.num_candidates >= 2
  # The finalist trains the whole budget.
  assert _find_lr_plan.rung_steps(num_steps, plan.num_rungs,
                                  plan.reduction)[-1] == num_steps


def test_a_budget_too_short_for_a_range_test_and_two_candidates_is_refused():
  # 10 range-test steps + 2 x 2 + 14 more updates > 1.5 x 16.
  with pytest.raises(ValueError, match='max_cost=1.5 allows 24 updates.*'
                     'needs 28'):
    _find_lr_plan.resolve(16, 1.5, **dict.fromkeys(OPTIONS))


def test_default_budget_at_1_5_is_four_candidates_to_an_eighth():
  plan = _find_lr_plan.resolve(800, 1.5, **dict.fromkeys(OPTIONS))
  assert plan == _find_lr_plan.Plan(4, 1, 2, 8, 1, 100)
  assert _find_lr_plan.cost(plan, 800) == 100 + 4 * 100 + 700


@pytest.mark.parametrize('max_cost', [1.0, 1.5, 2.0, 4.0, 9.0])
@pytest.mark.parametrize('fixed', [
    {}, {'num_seeds': 2}, {'num_rungs': 1}, {'reduction': 2},
    {'num_candidates': 3}, {'range_test_steps': 5, 'num_range_tests': 2},
    {'num_rungs': 3, 'reduction': 3},
])
def test_every_option_mix_within_max_cost_or_refused(max_cost, fixed):
  num_steps = 240
  given = {**dict.fromkeys(OPTIONS), **fixed}
  try:
    plan = _find_lr_plan.resolve(num_steps, max_cost, **given)
  except ValueError as error:
    assert f'max_cost={max_cost!r}' in str(error)
    smallest = {**{'num_candidates': 2, 'num_seeds': 1, 'num_range_tests': 1,
                   'range_test_steps': 30, 'num_rungs': 2, 'reduction': 8},
                **fixed}
    assert cost_by_hand(num_steps, *(smallest[name] for name in OPTIONS)
                        ) > max_cost * num_steps
    return
  for name, value in fixed.items():
    assert getattr(plan, name) == value
  assert cost_by_hand(num_steps, *plan) <= max_cost * num_steps
  assert _find_lr_plan.cost(plan, num_steps) == cost_by_hand(num_steps, *plan)


def test_a_given_search_over_max_cost_is_refused_naming_it():
  with pytest.raises(ValueError, match=r'max_cost=1.5 allows 96 updates.*'
                     r'needs 812'):
    _find_lr_plan.resolve(64, 1.5, **{**dict.fromkeys(OPTIONS),
                                      **_find_lr_plan.THOROUGH})


def test_huge_rung_counts_are_refused_without_big_integers():
  with pytest.raises(ValueError, match='num_rungs=1000000 is too many'):
    _find_lr_plan.resolve(64, None, **{**dict.fromkeys(OPTIONS),
                                       'num_rungs': 10**6})
  assert _find_lr_plan.resolve(64, None, **{
      **dict.fromkeys(OPTIONS), 'num_rungs': 7}).num_rungs == 7
  assert math.floor(math.log2(64)) + 1 == 7


def test_budgeted_range_test_is_an_eighth_of_the_budget_within_10_to_100():
  steps = [_find_lr_plan.resolve(b, 1.5, **dict.fromkeys(OPTIONS)
                                 ).range_test_steps
           for b in (40, 200, 2000)]
  assert steps == [10, 25, 100]


def test_all_option_mixes_count_like_the_loop_by_hand():
  for mix in itertools.product((2, 5), (1, 3), (1, 2, 3), (2, 4), (1, 2),
                               (7,)):
    plan = _find_lr_plan.Plan(*mix)
    assert _find_lr_plan.cost(plan, 100) == cost_by_hand(100, *mix)
