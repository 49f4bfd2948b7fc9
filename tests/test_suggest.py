"""Tests for the range test's suggestions and CLR bounds, on known curves.

Expected values come from the curves' construction (the steepest point of a
tanh, the lowest point of a parabola) and from an independent NumPy
reference of each documented formula (explicit loops, no shared code).
"""

import numpy as np
import pytest

import optax_clr

NUM_STEPS = 101
LRS = np.geomspace(1e-5, 1.0, NUM_STEPS)  # log10(lr) = -5 + 0.05 t
LOG = np.log10(LRS)
K = 4  # the centred mean's half width: max(1, 101 // 25)
SKIP = 6  # steepest skips max(101 // 20, K + 2) points at each end


def result_of(loss, *, lrs=LRS, diverged_step=NUM_STEPS, aux=None,
              mode='exponential', smoothed=None):
  loss = np.asarray(loss, np.float64)
  return optax_clr.RangeTestResult(
      lrs=lrs, losses=loss, smoothed_losses=loss if smoothed is None
      else smoothed, aux={} if aux is None else aux,
      diverged_step=diverged_step, mode=mode)


def steep_curve():
  """Falls fastest against log lr at lr = 1e-2 (t = 60), symmetric there."""
  return 2.0 - np.tanh(2.0 * (LOG + 2.0))


def bowl():
  """Falls, lowest at lr = 0.1 (t = 80), rises: a range test's shape."""
  return 1.0 + (LOG + 1.0) ** 2 / 4


def suggest(loss, method, **kwargs):
  return optax_clr.suggest_lr(result_of(loss, **kwargs), method=method)


# --- the independent reference ---------------------------------------------


def reference_curve(losses, diverged_step=NUM_STEPS):
  """Median over rows, finite prefix up to the divergence, centred mean."""
  losses = np.atleast_2d(np.asarray(losses, np.float64))
  raw = np.array([np.median(losses[:, t]) for t in range(losses.shape[1])])
  n = min(diverged_step + 1, raw.size)
  for t in range(n):
    if not np.isfinite(raw[t]):
      n = t
      break
  raw = raw[:n]
  filtered = np.empty(n)
  for t in range(n):
    window = raw[max(0, t - K): t + K + 1]
    filtered[t] = sum(window) / len(window)
  return filtered


def reference(losses, method, diverged_step=NUM_STEPS):
  c = reference_curve(losses, diverged_step)
  n = c.size
  if method == 'minimum':
    return LRS[min(range(n), key=lambda t: (c[t], t))] / 10
  if method in ('default', 'robust'):  # the geometric mean, in logs
    log_lr = (np.log(reference(losses, 'steepest', diverged_step))
              + np.log(10 * reference(losses, 'minimum', diverged_step) / 2))
    return np.exp(log_lr / 2)
  if method == 'steepest':
    x = np.log(LRS[:n])
    slopes = []
    for t in range(n):
      if t == 0:
        slopes.append((c[1] - c[0]) / (x[1] - x[0]))
      elif t == n - 1:
        slopes.append((c[t] - c[t - 1]) / (x[t] - x[t - 1]))
      else:  # numpy.gradient's second-order formula on uneven spacing
        h0, h1 = x[t] - x[t - 1], x[t + 1] - x[t]
        slopes.append((h0**2 * c[t + 1] - h1**2 * c[t - 1]
                       + (h1**2 - h0**2) * c[t]) / (h0 * h1 * (h0 + h1)))
    lowest = min(range(n), key=lambda t: (c[t], t))
    last = max(SKIP, min(lowest, n - SKIP - 1))  # descent up to the lowest
    best = min(range(SKIP, last + 1), key=lambda t: (slopes[t], t))
    return LRS[best]
  assert method == 'valley'
  best_a, best_len = 0, 0
  for a in range(n):
    b = a
    while b + 1 < n and c[b + 1] < c[b]:
      b += 1
    if b - a > best_len:
      best_a, best_len = a, b - a
  return LRS[best_a + best_len // 2]


def noisy(curve, scale, seed):
  return curve + scale * np.random.default_rng(seed).normal(size=NUM_STEPS)


METHODS = ['robust', 'steepest', 'valley', 'minimum']


class TestKnownAnswers:

  def test_steepest_point_of_a_tanh(self):
    assert suggest(steep_curve(), 'steepest') == pytest.approx(1e-2, rel=1e-9)

  def test_steepest_descent_is_before_the_lowest_point(self):
    # A gentle descent centred at 1e-3 to the lowest point near 1e-2, then a
    # rise with a spike at 0.1 whose recovery is far steeper than the
    # descent: the recovery is noise past the minimum, not the descent.
    loss = 2.0 - 0.5 * np.tanh(2.0 * (LOG + 3.0))
    loss[60:] = loss[60] + 0.02 * (np.arange(NUM_STEPS - 60))
    loss[78:81] += 3.0  # the spike, t = 78..80
    lowest = int(np.argmin(reference_curve(loss)))
    assert lowest < 70
    got = suggest(loss, 'steepest')
    assert got == pytest.approx(reference(loss, 'steepest'), rel=1e-9)
    assert got == pytest.approx(1e-3, rel=0.15)
    assert got <= LRS[lowest]

  def test_minimum_is_a_tenth_of_the_lowest_point(self):
    assert suggest(bowl(), 'minimum') == pytest.approx(1e-2, rel=1e-9)

  def test_default_between_steepest_and_half_the_lowest_point(self):
    # A tanh drop centred at 1e-4 (steepest there), then a bowl lowest at
    # 0.1 (t = 80): sqrt(1e-4 * 0.1 / 2).
    loss = bowl() + 5.0 * (1 - np.tanh(2.0 * (LOG + 4.0)))
    assert suggest(loss, 'steepest') == pytest.approx(1e-4, rel=1e-9)
    assert suggest(loss, 'minimum') == pytest.approx(1e-2, rel=1e-9)
    assert optax_clr.suggest_lr(result_of(loss)) == pytest.approx(
        np.sqrt(1e-4 * 0.1 / 2), rel=1e-9)
    assert suggest(loss, 'robust') == optax_clr.suggest_lr(result_of(loss))

  def test_valley_middle_of_the_longest_descent(self):
    loss = np.full(NUM_STEPS, 5.0)
    loss[20:61] = np.linspace(5.0, 1.0, 41)  # the long descent, t 20 to 60
    loss[61:] = np.linspace(1.5, 9.0, NUM_STEPS - 61)
    got = suggest(loss, 'valley')
    assert got == pytest.approx(reference(loss, 'valley'), rel=1e-9)
    # The centred mean falls from t = 17 to just before the jump at 61.
    assert LRS[36] <= got <= LRS[40]

  def test_skips_the_first_and_last_few_points(self):
    loss = steep_curve()
    loss[0] += 100.0  # a cliff at the very start
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


class TestNoLag:
  """The raw loss is read, not the lagging moving average."""

  @staticmethod
  def ema(loss, beta=0.98):
    average, out = 0.0, []
    for t, value in enumerate(loss):
      average = beta * average + (1 - beta) * value
      out.append(average / (1 - beta ** (t + 1)))
    return np.array(out)

  @pytest.mark.parametrize('method', METHODS + ['default'])
  def test_lagging_smoothed_losses_are_ignored(self, method):
    loss = bowl() + 5.0 * (1 - np.tanh(2.0 * (LOG + 3.0)))
    smoothed = self.ema(loss)
    kwargs = {} if method == 'default' else {'method': method}
    got = optax_clr.suggest_lr(result_of(loss, smoothed=smoothed), **kwargs)
    assert got == pytest.approx(reference(loss, method), rel=1e-9)
    # The moving average puts the same answer at a higher rate.
    lagging = reference(smoothed, method)
    assert lagging > 2 * got


class TestAgainstReference:

  @pytest.mark.parametrize('seed', range(4))
  @pytest.mark.parametrize('method', METHODS + ['default'])
  def test_noisy_curves(self, method, seed):
    loss = noisy(bowl() + np.tanh(-2 * (LOG + 2.5)), 0.05, seed)
    kwargs = {} if method == 'default' else {'method': method}
    got = optax_clr.suggest_lr(result_of(loss), **kwargs)
    assert got == pytest.approx(reference(loss, method), rel=1e-9)

  @pytest.mark.parametrize('method', METHODS + ['default'])
  def test_batched_reads_the_median_of_raw_losses(self, method):
    rows = np.stack([noisy(bowl(), 0.2, s) for s in range(5)])
    batched = optax_clr.RangeTestResult(
        lrs=np.broadcast_to(LRS, rows.shape), losses=rows,
        smoothed_losses=rows + 5.0, aux={},
        diverged_step=np.full(5, NUM_STEPS))
    kwargs = {} if method == 'default' else {'method': method}
    got = optax_clr.suggest_lr(batched, **kwargs)
    assert got == pytest.approx(reference(rows, method), rel=1e-9)

  @pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
  @pytest.mark.parametrize('method', METHODS + ['default'])
  def test_non_finite_tail_is_cut(self, bad, method):
    loss = noisy(bowl(), 0.02, 1)
    loss[85:] = bad
    kwargs = {} if method == 'default' else {'method': method}
    got = optax_clr.suggest_lr(result_of(loss), **kwargs)
    assert got == pytest.approx(reference(loss, method), rel=1e-9)
    finite = loss.copy()
    finite[85:] = 1e6  # past the divergence: never read
    clean = optax_clr.suggest_lr(result_of(finite, diverged_step=84),
                                 **kwargs)
    assert got == pytest.approx(clean, rel=1e-9)

  def test_points_after_the_divergence_are_ignored(self):
    loss = bowl()
    assert suggest(loss, 'minimum', diverged_step=60) == pytest.approx(
        reference(loss, 'minimum', diverged_step=60))
    assert suggest(loss, 'minimum', diverged_step=60) <= LRS[60] / 10

  def test_cut_at_the_earliest_divergence_of_a_batch(self):
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


class TestRefusals:

  @pytest.mark.parametrize('method', METHODS + ['default'])
  def test_flat_curve(self, method):
    kwargs = {} if method == 'default' else {'method': method}
    with pytest.raises(ValueError, match='never improved'):
      optax_clr.suggest_lr(result_of(np.full(NUM_STEPS, 2.3)), **kwargs)

  @pytest.mark.parametrize('seed', range(3))
  def test_noisy_flat_curve(self, seed):
    with pytest.raises(ValueError, match='never improved'):
      optax_clr.suggest_lr(result_of(noisy(np.full(NUM_STEPS, 2.3), 0.3,
                                           seed)))

  def test_rising_curve(self):
    with pytest.raises(ValueError, match='never improved'):
      suggest(np.linspace(1.0, 2.0, NUM_STEPS), 'valley')
    with pytest.raises(ValueError, match='never improved'):
      optax_clr.suggest_clr_bounds(result_of(np.linspace(1.0, 2.0,
                                                         NUM_STEPS)))

  @pytest.mark.parametrize('seed', range(3))
  def test_a_noisy_but_real_descent_is_read(self, seed):
    loss = noisy(bowl(), 0.3, seed)  # noise larger than most of the drop
    loss += 2.0 * np.tanh(-2 * (LOG + 3))  # a drop of about 4
    assert 1e-6 < optax_clr.suggest_lr(result_of(loss)) < 1.0

  def test_too_few_points(self):
    loss = steep_curve()
    loss[6:] = np.nan
    with pytest.raises(ValueError, match="method='steepest'.*finite points"):
      suggest(loss, 'steepest')
    loss[:] = np.nan
    with pytest.raises(ValueError, match="method='minimum'"):
      suggest(loss, 'minimum')

  def test_different_sweeps_are_refused(self):
    loss = np.stack([steep_curve()] * 2)
    lrs = np.stack([LRS, 2 * LRS])
    batched = optax_clr.RangeTestResult(lrs, loss, loss, {}, np.array([9, 9]))
    with pytest.raises(ValueError, match='different swept values'):
      optax_clr.suggest_lr(batched)

  def test_unknown_method(self):
    with pytest.raises(ValueError, match="method must be one of.*'fastest'"):
      optax_clr.suggest_lr(result_of(steep_curve()), method='fastest')



def reference_bounds(losses, ratio=4.0, diverged_step=NUM_STEPS):
  """Twice the default suggestion, capped at the divergence; / ratio."""
  max_lr = 2 * reference(losses, 'robust', diverged_step)
  if diverged_step < NUM_STEPS:
    max_lr = min(max_lr, LRS[diverged_step])
  return max_lr / ratio, max_lr


class TestClrBounds:

  def test_twice_and_half_the_default_suggestion(self):
    loss = bowl() + 5.0 * (1 - np.tanh(2.0 * (LOG + 4.0)))
    base_lr, max_lr = optax_clr.suggest_clr_bounds(result_of(loss))
    assert max_lr == pytest.approx(2 * np.sqrt(1e-4 * 0.1 / 2), rel=1e-9)
    assert base_lr == pytest.approx(max_lr / 4, rel=1e-12)

  @pytest.mark.parametrize('seed', range(5))
  def test_noisy_curves_against_the_reference(self, seed):
    loss = noisy(bowl() + np.tanh(-2 * (LOG + 2.5)), 0.05, seed)
    bounds = optax_clr.suggest_clr_bounds(result_of(loss))
    assert bounds == pytest.approx(reference_bounds(loss), rel=1e-9)

  def test_ratio(self):
    loss = bowl() + 5.0 * (1 - np.tanh(2.0 * (LOG + 4.0)))
    base_lr, max_lr = optax_clr.suggest_clr_bounds(result_of(loss), ratio=3)
    assert base_lr == pytest.approx(max_lr / 3, rel=1e-12)

  def test_batched_reads_the_median_of_raw_losses(self):
    rows = np.stack([noisy(bowl(), 0.2, s) for s in range(5)])
    batched = optax_clr.RangeTestResult(
        lrs=np.broadcast_to(LRS, rows.shape), losses=rows,
        smoothed_losses=rows[:, ::-1], aux={},
        diverged_step=np.full(5, NUM_STEPS))
    assert optax_clr.suggest_clr_bounds(batched) == pytest.approx(
        reference_bounds(rows), rel=1e-9)

  def test_never_above_the_divergence(self):
    # Falls steeply at 1e-2 and diverges just after: twice the suggestion
    # would be past the divergence at t = 62.
    loss = 3.0 - np.tanh(4.0 * (LOG + 2.0))
    loss[63:] = np.nan
    base_lr, max_lr = optax_clr.suggest_clr_bounds(
        result_of(loss, diverged_step=62))
    assert 2 * optax_clr.suggest_lr(result_of(loss, diverged_step=62)) > (
        LRS[62])
    assert max_lr == LRS[62]
    assert (base_lr, max_lr) == pytest.approx(
        reference_bounds(loss, diverged_step=62), rel=1e-9)

  def test_a_flat_loss_is_refused(self):
    with pytest.raises(ValueError, match='never improved'):
      optax_clr.suggest_clr_bounds(result_of(np.full(NUM_STEPS, 1.0)))

  def test_accuracy_stops_rising(self):
    # Accuracy rises until lr = 0.005, then turns down.
    turn = np.log10(0.005)
    accuracy = np.where(LOG < turn, 0.9 - 0.2 * (turn - LOG),
                        0.9 - 2.0 * (LOG - turn))
    loss = -LOG  # the loss would say "keep going"
    result = result_of(loss, aux={'accuracy': accuracy})
    base_lr, max_lr = optax_clr.suggest_clr_bounds(result, metric='accuracy')
    # The reference: the first point of the centred mean within 5 % of its
    # whole rise.
    c = reference_curve(accuracy)
    first = next(t for t in range(c.size)
                 if c[t] >= max(c) - 0.05 * (max(c) - c[0]))
    assert max_lr == pytest.approx(LRS[first], rel=1e-12)
    assert base_lr == pytest.approx(max_lr / 4, rel=1e-12)
    # 95% of the rise is made 0.135 decades before the peak; the centred
    # mean moves that a little earlier still; never past the turn.
    assert 0.005 / 10**0.45 <= max_lr <= 0.005

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
