"""Tests for the range test's suggestions and CLR bounds, on known curves."""

import numpy as np
import pytest

import optax_clr

NUM_STEPS = 101
LRS = np.geomspace(1e-5, 1.0, NUM_STEPS)  # log10(lr) = -5 + 0.05 t
LOG = np.log10(LRS)


def result_of(loss, *, lrs=LRS, diverged_step=NUM_STEPS, aux=None,
              mode='exponential'):
  loss = np.asarray(loss, np.float64)
  return optax_clr.RangeTestResult(
      lrs=lrs, losses=loss, smoothed_losses=loss,
      aux={} if aux is None else aux, diverged_step=diverged_step, mode=mode)


def steep_curve():
  """Falls fastest against log lr at lr = 1e-2 (t = 60), symmetric there."""
  return 2.0 - np.tanh(2.0 * (LOG + 2.0))


def suggest(loss, method, **kwargs):
  return optax_clr.suggest_lr(result_of(loss, **kwargs), method=method)


class TestSteepest:

  def test_steepest_point_of_a_tanh(self):
    assert suggest(steep_curve(), 'steepest') == pytest.approx(1e-2, rel=1e-9)

  def test_skips_the_first_and_last_few_points(self):
    loss = steep_curve()
    loss[0] += 100.0  # a cliff between the first two points
    loss[-1] -= 100.0  # and one at the very end
    assert suggest(loss, 'steepest') == pytest.approx(1e-2, rel=1e-9)

  def test_slope_is_against_log_lr_not_lr(self):
    # One decade of loss per decade of lr, then three past lr = 1e-2. Against
    # log lr the late part is steeper; against lr itself the first points
    # would win (d/dlr = d/dlog(lr) / lr), the regression Lightning had.
    loss = np.where(LOG < -2.0, -LOG, 2.0 - 3.0 * (LOG + 2.0))
    assert 1e-2 < suggest(loss, 'steepest') < 1.0
    slope_vs_lr = np.gradient(loss, LRS)
    assert np.argmin(slope_vs_lr[5:-5]) + 5 < 60


class TestValley:

  def test_middle_of_the_longest_descent(self):
    loss = np.full(NUM_STEPS, 5.0)
    loss[3:9] = [4.9, 4.8, 4.7, 4.6, 4.5, 4.4]  # a short descent (t 2 to 8)
    loss[20:61] = np.linspace(5.0, 1.0, 41)  # the long one, t 20 to 60
    loss[61:] = np.linspace(1.5, 9.0, NUM_STEPS - 61)
    assert suggest(loss, 'valley') == pytest.approx(LRS[40], rel=1e-9)

  def test_a_curve_that_only_rises(self):
    loss = np.linspace(1.0, 2.0, NUM_STEPS)
    assert suggest(loss, 'valley') == pytest.approx(LRS[0], rel=1e-9)


class TestMinimum:

  def test_a_tenth_of_the_lowest_point(self):
    loss = (LOG + 1.0) ** 2  # lowest at lr = 0.1
    assert suggest(loss, 'minimum') == pytest.approx(1e-2, rel=1e-9)


class TestTails:

  @pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
  @pytest.mark.parametrize('method', ['steepest', 'minimum', 'valley'])
  def test_non_finite_tail_is_skipped(self, bad, method):
    loss = steep_curve() + 4 * np.maximum(LOG + 2.0, 0.0) ** 2  # lowest ~0.016
    lowest = int(np.argmin(loss))
    assert 50 < lowest < 71
    expected = {'steepest': 1e-2, 'minimum': LRS[lowest] / 10,
                'valley': None}[method]
    clean = suggest(loss[:71], method, lrs=LRS[:71], diverged_step=71)
    loss[71:] = bad
    got = suggest(loss, method)
    assert got == pytest.approx(clean, rel=1e-9)
    if expected is not None:
      assert got == pytest.approx(expected, rel=0.15)

  def test_points_after_the_divergence_are_ignored(self):
    loss = -LOG  # still falling at the end
    assert suggest(loss, 'minimum') == pytest.approx(LRS[-1] / 10)
    assert suggest(loss, 'minimum', diverged_step=70) == pytest.approx(
        LRS[70] / 10)

  def test_too_few_points(self):
    loss = steep_curve()
    loss[6:] = np.nan
    with pytest.raises(ValueError, match="method='steepest'.*finite points"):
      suggest(loss, 'steepest')
    loss[:] = np.nan
    with pytest.raises(ValueError, match="method='minimum'"):
      suggest(loss, 'minimum')


class TestBatched:

  @pytest.mark.parametrize('method', ['steepest', 'valley', 'minimum'])
  def test_reads_the_median_curve(self, method):
    loss = steep_curve() + (LOG + 2.0) ** 2 / 10
    stacked = np.stack([loss - 1.0, loss, loss + 2.0, loss * 3 + 7, loss - 5])
    batched = optax_clr.RangeTestResult(
        lrs=np.broadcast_to(LRS, stacked.shape), losses=stacked,
        smoothed_losses=stacked, aux={},
        diverged_step=np.full(5, NUM_STEPS))
    assert optax_clr.suggest_lr(batched, method=method) == pytest.approx(
        suggest(loss, method), rel=1e-9)

  def test_cut_at_the_earliest_divergence(self):
    loss = -LOG
    stacked = np.stack([loss, loss, loss + 1])
    stacked[1, 51:] = np.nan
    batched = optax_clr.RangeTestResult(
        lrs=np.broadcast_to(LRS, stacked.shape), losses=stacked,
        smoothed_losses=stacked, aux={},
        diverged_step=np.array([NUM_STEPS, 50, NUM_STEPS]))
    assert optax_clr.suggest_lr(batched, method='minimum') == pytest.approx(
        LRS[50] / 10)
    assert optax_clr.suggest_clr_bounds(batched)[1] <= LRS[50]

  def test_different_sweeps_are_refused(self):
    loss = np.stack([steep_curve()] * 2)
    lrs = np.stack([LRS, 2 * LRS])
    batched = optax_clr.RangeTestResult(lrs, loss, loss, {}, np.array([9, 9]))
    with pytest.raises(ValueError, match='different swept values'):
      optax_clr.suggest_lr(batched)


def falls_then_flat(turn_log10, noise=0.0, seed=0):
  """Falls linearly in log lr to 0 at 10**turn_log10, then flat (+ noise)."""
  loss = np.maximum(turn_log10 - LOG, 0.0)
  return loss + noise * np.random.default_rng(seed).normal(size=NUM_STEPS)


class TestClrBounds:

  def test_where_the_loss_stops_decreasing(self):
    base_lr, max_lr = optax_clr.suggest_clr_bounds(
        result_of(falls_then_flat(-2.0)))
    # Within the centred mean's 2 steps (a factor 10**0.1) of the turn.
    assert 10**-2.1 <= max_lr <= 10**-1.9
    assert base_lr == pytest.approx(max_lr / 4, rel=1e-12)

  @pytest.mark.parametrize('seed', range(5))
  def test_noisy_plateau(self, seed):
    loss = falls_then_flat(-2.0, noise=0.05, seed=seed)
    _, max_lr = optax_clr.suggest_clr_bounds(result_of(loss))
    assert 10**-2.3 <= max_lr <= 10**-1.7  # the plateau's noise is ignored

  def test_seed_ratio_three(self):
    base_lr, max_lr = optax_clr.suggest_clr_bounds(
        result_of(falls_then_flat(-3.0)), ratio=3)
    assert base_lr == pytest.approx(max_lr / 3, rel=1e-12)

  def test_accuracy_stops_rising(self):
    # The seed's figure: accuracy rises until lr = 0.005, then turns down.
    turn = np.log10(0.005)
    accuracy = np.where(LOG < turn, 0.9 - 0.2 * (turn - LOG),
                        0.9 - 2.0 * (LOG - turn))
    loss = -LOG  # the loss would say "keep going"
    result = result_of(loss, aux={'accuracy': accuracy})
    _, max_lr = optax_clr.suggest_clr_bounds(result, metric='accuracy')
    # 95% of the rise is made 0.135 decades before the peak; the centred
    # mean moves that a little earlier still; never past the turn.
    assert 0.005 / 10**0.35 <= max_lr <= 0.005
    assert optax_clr.suggest_clr_bounds(result)[1] > 0.1

  def test_never_above_the_divergence(self):
    loss = -LOG  # still improving when the sweep diverged at t = 70
    _, max_lr = optax_clr.suggest_clr_bounds(
        result_of(loss, diverged_step=70))
    assert max_lr <= LRS[70]
    loss[71:] = np.nan
    _, max_lr = optax_clr.suggest_clr_bounds(
        result_of(loss, diverged_step=70))
    assert max_lr <= LRS[70]

  def test_errors(self):
    result = result_of(steep_curve())
    with pytest.raises(ValueError, match='metric'):
      optax_clr.suggest_clr_bounds(result, metric='f1')
    with pytest.raises(ValueError, match='ratio'):
      optax_clr.suggest_clr_bounds(result, ratio=0.5)
    with pytest.raises(ValueError, match="aux\\['accuracy'\\]"):
      optax_clr.suggest_clr_bounds(result, metric='accuracy')
    with pytest.raises(TypeError, match='result'):
      optax_clr.suggest_clr_bounds(steep_curve())


def test_unknown_method():
  with pytest.raises(ValueError, match="method must be one of.*'fastest'"):
    optax_clr.suggest_lr(result_of(steep_curve()), method='fastest')
