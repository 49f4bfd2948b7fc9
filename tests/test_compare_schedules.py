"""The paper-protocol comparison, shrunk: every policy, 2 seeds, 1 epoch."""

import dataclasses
import json
import os
import re

import numpy as np
import pytest

from examples import compare_schedules as cs
from examples import train

EPOCHS = 1
SEEDS = 2
BATCH_SIZE = 64
EVALS_PER_EPOCH = 2
POLICY_LABELS = [cs.BASELINE, cs.BEST_FIXED] + [
    policy.label for policy in cs.POLICIES[1:]
]


@pytest.fixture(scope='module')
def out(tmp_path_factory):
  out = tmp_path_factory.mktemp('compare')
  cs.main([
      '--epochs', str(EPOCHS), '--seeds', str(SEEDS), '--batch-size',
      str(BATCH_SIZE), '--evals-per-epoch', str(EVALS_PER_EPOCH),
      '--find-lr-steps', '40', '--out', str(out),
  ])
  return out


@pytest.fixture(scope='module')
def results(out):
  with open(out / 'results.json') as f:
    return json.load(f)


def test_writes_json_table_and_pngs(out, results):
  for name in ('curves.png', 'range_test.png'):
    assert (out / name).read_bytes()[:4] == b'\x89PNG'
  table = (out / 'results.md').read_text().strip()
  assert table == results['table']
  lines = table.splitlines()
  assert len(lines) == 2 + len(POLICY_LABELS)
  assert [line.split(' | ')[0][2:] for line in lines[2:]] == POLICY_LABELS


def _keys(tree):
  if isinstance(tree, dict):
    for key, value in tree.items():
      yield key
      yield from _keys(value)
  elif isinstance(tree, list):
    for value in tree:
      yield from _keys(value)


def test_results_carry_no_timings(results):
  # A rerun must rewrite the committed docs/compare files only where the
  # results changed: no wall-clock numbers in them.
  keys = set(_keys(results))
  assert 'lr' in keys and 'final_accuracy' in keys  # The walk sees nested keys.
  timing = re.compile(r'(^|_)(seconds?|time|wall|elapsed|duration|s)$')
  assert timing.search('wall_s') and not timing.search('inverse_time_decay')
  assert not {k for k in keys if timing.search(k.lower())}


def test_writes_under_runs_by_default():
  assert cs.parse_args([]).out == os.path.join('runs', 'compare')


def test_every_policy_has_per_seed_results(results):
  assert list(results['policies']) == POLICY_LABELS
  steps = results['num_steps']
  assert steps == EPOCHS * results['steps_per_epoch']
  evals = len(results['eval_steps'])
  assert evals == EPOCHS * EVALS_PER_EPOCH
  assert results['eval_steps'][-1] == steps
  for label, row in results['policies'].items():
    assert len(row['final_accuracy']) == SEEDS, label
    assert len(row['iterations_to_target']) == SEEDS, label
    assert len(row['test_accuracy_mean']) == evals, label
    assert len(row['lr']) == steps, label
    assert row['final_accuracy_mean'] == pytest.approx(
        np.mean(row['final_accuracy']))
  assert len(results['fixed_grid']) == len(cs.GRID_FACTORS)


def test_target_is_the_baseline_and_iterations_reach_it(results):
  baseline = results['policies'][cs.BASELINE]
  assert results['target_accuracy'] == pytest.approx(
      baseline['final_accuracy_mean'])
  # At least one baseline seed ends at or above its own mean.
  assert baseline['reached'] >= 1
  for row in results['policies'].values():
    for iterations in row['iterations_to_target']:
      assert iterations is None or iterations in results['eval_steps']


def test_logged_lr_is_the_trainers_schedule(results):
  bounds = results['bounds']
  assert 0 < bounds['base_lr'] < bounds['max_lr']
  config = train.Config(
      epochs=EPOCHS, batch_size=BATCH_SIZE, **bounds,
      step_size_epochs=train.Config().step_size_epochs,
  )
  for policy in cs.POLICIES:
    schedule = train.make_schedule(
        dataclasses.replace(config, schedule=policy.schedule),
        results['steps_per_epoch'],
    )
    want = [float(schedule(step)) for step in range(results['num_steps'])]
    np.testing.assert_allclose(
        results['policies'][policy.label]['lr'], want, rtol=1e-5,
        err_msg=policy.label,
    )


def test_best_fixed_is_the_grids_best(results):
  grid = results['fixed_grid']
  best = max(grid.values(), key=lambda row: row['final_accuracy_mean'])
  chosen = results['policies'][cs.BEST_FIXED]
  assert chosen['base_lr'] == best['base_lr']
  assert chosen['final_accuracy'] == best['final_accuracy']


def test_iterations_to_reach():
  accuracy = np.array([[0.5, 0.9, 0.8], [0.1, 0.2, 0.3], [0.95, 0.9, 0.99]])
  steps = np.array([10, 20, 30])
  got = cs.iterations_to_reach(accuracy, steps, target=0.9)
  np.testing.assert_array_equal(got, [20, np.nan, 10])


def test_mean_std_skips_unreached_seeds():
  assert cs.mean_std(np.array([10.0, np.nan, 30.0])) == (20.0, 10.0)
  assert all(np.isnan(cs.mean_std(np.array([np.nan]))))
