"""Tests for examples/saddle_point.py: objective, simulation, statistics."""

import json

import jax
import numpy as np
import pytest

from examples import saddle_point
import optax_clr


def _numpy_objective(x, y):
  return x**2 - y**2 + 0.5 * y**4


def _numpy_gradient(x, y):
  return np.stack([2.0 * x, -2.0 * y + 2.0 * y**3], axis=-1)


def _numpy_hessian(x, y):
  return np.array([[2.0, 0.0], [0.0, -2.0 + 6.0 * y**2]])


def _constant(lr):
  return saddle_point.policy_schedule('fixed', lr, steps=1)


class TestObjective:

  def test_value_matches_numpy(self):
    points = np.random.default_rng(0).uniform(-2, 2, size=(50, 2))
    got = np.asarray(saddle_point.objective(points.astype(np.float32)))
    want = _numpy_objective(points[:, 0], points[:, 1])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

  def test_gradient_matches_numpy(self):
    points = np.random.default_rng(1).uniform(-2, 2, size=(50, 2))
    got = np.asarray(jax.vmap(saddle_point.gradient)(points))
    want = _numpy_gradient(points[:, 0], points[:, 1])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

  def test_saddle_is_strict(self):
    point = np.asarray(saddle_point.SADDLE)
    np.testing.assert_array_equal(saddle_point.gradient(point), [0.0, 0.0])
    hessian = np.asarray(jax.hessian(saddle_point.objective)(point))
    np.testing.assert_allclose(hessian, _numpy_hessian(*point), atol=1e-6)
    eigenvalues = np.linalg.eigvalsh(hessian)
    assert eigenvalues[0] < 0 < eigenvalues[1]
    assert float(saddle_point.objective(point)) == 0.0

  @pytest.mark.parametrize('minimum', saddle_point.MINIMA)
  def test_minima(self, minimum):
    point = np.asarray(minimum, np.float32)
    np.testing.assert_allclose(saddle_point.gradient(point), [0, 0], atol=1e-6)
    hessian = np.asarray(jax.hessian(saddle_point.objective)(point))
    np.testing.assert_allclose(hessian, _numpy_hessian(*point), atol=1e-5)
    assert np.all(np.linalg.eigvalsh(hessian) > 0)
    value = float(saddle_point.objective(point))
    assert value == pytest.approx(saddle_point.MIN_VALUE)

  def test_minima_are_the_lowest_points(self):
    grid = np.linspace(-2, 2, 401)
    xx, yy = np.meshgrid(grid, grid)
    values = _numpy_objective(xx, yy)
    assert values.min() == pytest.approx(saddle_point.MIN_VALUE)
    lowest = np.argwhere(np.isclose(values, values.min()))
    found = {(round(float(grid[j]), 6), round(float(grid[i]), 6))
             for i, j in lowest}
    assert found == {(0.0, 1.0), (0.0, -1.0)}


class TestSimulate:

  def test_shapes_and_logged_lr(self):
    schedules = [_constant(0.1), optax_clr.triangular2_schedule(0.01, 0.1, 2)]
    sim = saddle_point.simulate(schedules, steps=5, seeds=3, noise=0.01)
    assert sim.lrs.shape == (2, 5)
    assert sim.paths.shape == (2, 3, 6, 2)
    assert sim.losses.shape == (2, 3, 6)
    assert sim.escaped.shape == (2, 3)
    assert sim.escaped.dtype == bool
    assert sim.escape_step.shape == (2, 3)
    np.testing.assert_array_equal(sim.paths[:, :, 0], np.broadcast_to(
        np.float32(saddle_point.START), (2, 3, 2)))
    for lrs, schedule in zip(sim.lrs, schedules):
      np.testing.assert_allclose(lrs, schedule(np.arange(5)), rtol=1e-6)

  def test_noiseless_run_matches_numpy_gradient_descent(self):
    schedule = optax_clr.exp_range_schedule(0.02, 0.2, 5, gamma=0.99)
    start = (0.7, 0.3)
    sim = saddle_point.simulate(
        [schedule], steps=40, seeds=2, noise=0.0, start=start
    )
    theta = np.array(start, np.float64)
    want = [theta]
    for t in range(40):
      theta = theta - float(schedule(t)) * _numpy_gradient(*theta)
      want.append(theta)
    for seed in range(2):
      np.testing.assert_allclose(sim.paths[0, seed], want, atol=1e-5)

  def test_zero_noise_at_the_saddle_does_not_move(self):
    schedules = [_constant(0.4), optax_clr.triangular_schedule(0.01, 0.4, 7)]
    sim = saddle_point.simulate(
        schedules, steps=300, seeds=4, noise=0.0, start=saddle_point.SADDLE
    )
    np.testing.assert_array_equal(sim.paths, 0.0)
    assert not np.any(sim.escaped)
    np.testing.assert_array_equal(sim.escape_step, -1)

  def test_large_fixed_lr_escapes_and_tiny_does_not(self):
    sim = saddle_point.simulate(
        [_constant(0.1), _constant(1e-4)], steps=300, seeds=16, noise=0.01,
        start=saddle_point.SADDLE,
    )
    assert np.all(sim.escaped[0])
    assert not np.any(sim.escaped[1])
    final = np.asarray(sim.losses[:, :, -1])
    np.testing.assert_allclose(final[0], saddle_point.MIN_VALUE, atol=1e-3)
    assert np.all(np.abs(final[1]) < 1e-3)
    # escape_step is the first step below the level.
    losses = np.asarray(sim.losses[0])
    for seed, step in enumerate(np.asarray(sim.escape_step[0])):
      assert losses[seed, step] < -0.25 <= losses[seed, :step].min()
    np.testing.assert_array_equal(sim.escape_step[1], -1)

  def test_seed_draws_the_same_noise_under_every_schedule(self):
    sim = saddle_point.simulate(
        [_constant(0.05), _constant(0.05)], steps=30, seeds=3, noise=0.1
    )
    np.testing.assert_array_equal(sim.paths[0], sim.paths[1])
    assert not np.allclose(sim.paths[0, 0], sim.paths[0, 1])


class TestBudgets:

  @pytest.mark.parametrize('saddle_at', [0, 50])
  def test_peak_budget(self, saddle_at):
    schedules = saddle_point.budget_schedules(
        'peak', lr=0.02, mean_lr=0.005, steps=200, saddle_at=saddle_at
    )
    assert len(schedules) == len(saddle_point.POLICIES)
    training = 200 + saddle_at
    for policy, schedule in zip(saddle_point.POLICIES, schedules):
      rates = np.asarray(schedule(np.arange(-saddle_at, 200)))
      assert rates.shape == (training,)
      if policy == 'exp_range':  # its amplitude decays before the first peak
        assert rates.max() < 0.02
      else:
        assert rates.max() == pytest.approx(0.02, rel=1e-6), policy

  def test_mean_budget(self):
    schedules = saddle_point.budget_schedules(
        'mean', lr=0.02, mean_lr=0.005, steps=200
    )
    for policy, schedule in zip(saddle_point.POLICIES, schedules):
      mean = saddle_point.mean_rate(schedule, 200)
      assert mean == pytest.approx(0.005, rel=1e-5), policy

  def test_decays_reach_decay_to(self):
    for policy in ('exponential_decay', 'inverse_time_decay'):
      schedule = saddle_point.policy_schedule(
          policy, 1.0, steps=100, decay_to=0.01
      )
      assert float(schedule(100)) == pytest.approx(0.01, rel=1e-5), policy

  def test_unknown_names(self):
    with pytest.raises(ValueError, match='policy'):
      saddle_point.policy_schedule('cosine', 0.1, steps=10)
    with pytest.raises(ValueError, match='budget'):
      saddle_point.budget_schedules('total', lr=0.1, mean_lr=0.1, steps=10)


class TestSummary:

  def _sim(self, escaped, escape_step):
    escaped = np.asarray([escaped])
    losses = np.where(escaped, -0.5, 0.0)[..., None].astype(np.float32)
    return saddle_point.Simulation(
        lrs=np.full((1, 4), 0.1, np.float32),
        paths=np.zeros((1, escaped.shape[1], 5, 2), np.float32),
        losses=np.repeat(losses, 5, axis=-1),
        escaped=escaped,
        escape_step=np.asarray([escape_step]),
    )

  def test_statistics(self):
    sim = self._sim([True, True, True, False], [3, 1, 2, -1])
    row = saddle_point.summarize(sim, 0)
    assert row['escaped_fraction'] == 0.75
    assert row['median_escape_step'] == 2
    assert row['escape_step_q25'] == 1
    assert row['escape_step_q75'] == 3
    assert row['final_loss_mean'] == pytest.approx(-0.375)
    assert row['cumulative_lr'] == pytest.approx(0.4)
    assert row['diverged_fraction'] == 0.0

  def test_median_is_censored_when_most_runs_are_stuck(self):
    sim = self._sim([True, False, False, False], [2, -1, -1, -1])
    row = saddle_point.summarize(sim, 0)
    assert row['median_escape_step'] is None
    table = saddle_point.markdown_table(
        [{'saddle_at': 0, 'budget': 'peak', 'policy': 'fixed', **row}],
        steps=4,
    )
    assert '> 4' in table


def test_main_writes_every_output(tmp_path):
  rows = saddle_point.main([
      '--out', str(tmp_path), '--steps', '60', '--seeds', '4',
      '--saddle-at', '30', '--plot-seeds', '2',
  ])
  assert len(rows) == len(saddle_point.BUDGETS) * len(saddle_point.POLICIES)
  assert {row['saddle_at'] for row in rows} == {30}
  for name in ('table.md', 'summary.md', 'results.json', 'trajectories.png',
               'loss_lr.png'):
    assert (tmp_path / name).stat().st_size > 0, name
  record = json.loads((tmp_path / 'results.json').read_text())
  assert record['rows'] == json.loads(json.dumps(rows))
  assert record['config']['seeds'] == 4
