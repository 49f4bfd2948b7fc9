"""Tests for the range test's plot (matplotlib, Agg backend)."""

import ast
import os
import pathlib
import subprocess
import sys
import textwrap

import matplotlib

matplotlib.use('Agg')

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import optax_clr  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
NUM_STEPS = 81
LRS = np.geomspace(1e-6, 10.0, NUM_STEPS)


@pytest.fixture(autouse=True)
def close_figures():
  yield
  plt.close('all')


def curve(shift=0.0):
  """Falls from 3 to 0.5 around lr = 1e-2, blows up past lr = 1."""
  log = np.log10(LRS)
  return 1.75 - 1.25 * np.tanh(log + 2.0) + np.maximum(log, 0.0) ** 2 * 50 + (
      shift)


def single(mode='exponential', lrs=LRS, diverged_step=75, hyperparam=None):
  loss = curve()
  loss[diverged_step + 1 :] = np.nan
  extra = {} if hyperparam is None else {'hyperparam': hyperparam}
  return optax_clr.RangeTestResult(lrs, loss, loss, {}, diverged_step,
                                   mode=mode, **extra)


def legend_texts(ax):
  return ' | '.join(text.get_text() for text in ax.get_legend().get_texts())


def test_single_sweep_marks_suggestions_bounds_and_divergence():
  result = single()
  ax = optax_clr.plot_range_test(result)
  assert ax.get_xscale() == 'log'
  labels = legend_texts(ax)
  for method in ('steepest', 'valley', 'minimum'):
    lr = optax_clr.suggest_lr(result, method=method)
    assert f'{method}: {lr:.3g}' in labels
  base_lr, max_lr = optax_clr.suggest_clr_bounds(result)
  assert f'CLR bounds: {base_lr:.3g} to {max_lr:.3g}' in labels
  assert f'diverged at {LRS[75]:.3g}' in labels
  assert ax.get_xlabel().startswith('learning rate')
  # The divergence spike does not set the y range.
  assert ax.get_ylim()[1] < 4.0


def marker(ax, method):
  """The Line2D of a suggestion's marker, or None."""
  found = [line for line in ax.get_lines()
           if line.get_label().startswith(f'{method}:')]
  assert len(found) <= 1
  return found[0] if found else None


def x_extent(patch):
  """The data-x interval an axvspan covers (Rectangle or Polygon)."""
  vertices = patch.get_patch_transform().transform(patch.get_path().vertices)
  return vertices[:, 0].min(), vertices[:, 0].max()


def wiggly(diverged_step=75):
  """Raw losses off the smoothed curve, so the two can be told apart."""
  smoothed = curve()
  raw = smoothed + 0.3 * np.sin(np.arange(NUM_STEPS))
  raw[diverged_step + 1 :] = smoothed[diverged_step + 1 :] = np.nan
  return optax_clr.RangeTestResult(LRS, raw, smoothed, {}, diverged_step)


def test_markers_sit_on_the_smoothed_curve_at_the_suggestions():
  result = wiggly()
  ax = optax_clr.plot_range_test(result)
  n = 76  # up to and including the divergence
  xs = []
  for method in ('steepest', 'valley', 'minimum'):
    lr = optax_clr.suggest_lr(result, method=method)
    line = marker(ax, method)
    np.testing.assert_array_equal(line.get_xdata(), [lr])
    # On the smoothed curve, interpolated in log(lr) (a log axis).
    expected_y = np.interp(np.log(lr), np.log(LRS[:n]), curve()[:n])
    np.testing.assert_allclose(line.get_ydata(), [expected_y], rtol=1e-12)
    assert line.get_linestyle() == 'None' and line.get_marker() != 'None'
    xs.append(lr)
  assert len(set(xs)) == 3  # three different places on this curve


def test_clr_bounds_are_shaded_and_the_divergence_is_a_line():
  result = wiggly()
  ax = optax_clr.plot_range_test(result)
  base_lr, max_lr = optax_clr.suggest_clr_bounds(result)
  spans = [p for p in ax.patches if p.get_label().startswith('CLR bounds')]
  assert len(spans) == 1
  low, high = x_extent(spans[0])
  assert low == pytest.approx(base_lr, rel=1e-12)
  assert high == pytest.approx(max_lr, rel=1e-12)
  assert max_lr == pytest.approx(4 * base_lr)
  diverged = [line for line in ax.get_lines()
              if line.get_label().startswith('diverged at')]
  assert len(diverged) == 1
  np.testing.assert_array_equal(diverged[0].get_xdata(), [LRS[75], LRS[75]])
  assert diverged[0].get_linestyle() == '--'


def test_no_divergence_no_line():
  ax = optax_clr.plot_range_test(wiggly(diverged_step=NUM_STEPS))
  assert not [line for line in ax.get_lines()
              if line.get_label().startswith('diverged')]


@pytest.mark.parametrize('diverged_step,shown', [
    (4, ('valley', 'minimum')),  # steepest needs 2 * 4 + 1 = 9 points
    (0, ('minimum',)),  # one point: only the minimum
])
def test_a_suggestion_the_curve_is_too_short_for_is_left_out(
    diverged_step, shown):
  result = wiggly(diverged_step)
  ax = optax_clr.plot_range_test(result)
  for method in ('steepest', 'valley', 'minimum'):
    if method in shown:
      lr = optax_clr.suggest_lr(result, method=method)
      np.testing.assert_array_equal(marker(ax, method).get_xdata(), [lr])
    else:
      with pytest.raises(ValueError, match='needs at least'):
        optax_clr.suggest_lr(result, method=method)
      assert marker(ax, method) is None
      assert method not in legend_texts(ax)
  # The loss bounds surround the default suggestion, which needs the slope.
  with pytest.raises(ValueError, match='needs at least'):
    optax_clr.suggest_clr_bounds(result)
  assert 'CLR bounds' not in legend_texts(ax)


def test_linear_sweep_has_a_linear_axis_and_the_hyperparam_name():
  lrs = np.linspace(0.8, 0.99, NUM_STEPS)
  ax = optax_clr.plot_range_test(
      single(mode='linear', lrs=lrs, hyperparam='momentum'))
  assert ax.get_xscale() == 'linear'
  assert 'momentum' in ax.get_xlabel()


def test_batched_result_draws_a_band_around_the_median():
  stacked = np.stack([curve(-0.2), curve(), curve(0.3)])
  stacked[:, 76:] = np.nan
  result = optax_clr.RangeTestResult(
      np.broadcast_to(LRS, stacked.shape), stacked, stacked, {},
      np.array([75, 75, 75]))
  ax = optax_clr.plot_range_test(result)
  assert '3 sweeps: min to max' in legend_texts(ax)
  band = ax.collections[0].get_paths()[0].vertices
  assert band[:, 1].min() == pytest.approx(np.nanmin(stacked[0]), rel=1e-6)
  median_line = [line for line in ax.get_lines()
                 if line.get_label() == 'median smoothed loss'][0]
  np.testing.assert_allclose(median_line.get_ydata(), curve()[:76])
  # The markers sit on the median, not on one of the sweeps.
  for method in ('steepest', 'valley', 'minimum'):
    lr = optax_clr.suggest_lr(result, method=method)
    line = marker(ax, method)
    np.testing.assert_array_equal(line.get_xdata(), [lr])
    expected_y = np.interp(np.log(lr), np.log(LRS[:76]), curve()[:76])
    np.testing.assert_allclose(line.get_ydata(), [expected_y], rtol=1e-12)


def test_draws_on_the_given_axes_and_saves(tmp_path):
  _, given = plt.subplots()
  path = tmp_path / 'range_test.png'
  ax = optax_clr.plot_range_test(single(), ax=given, path=path)
  assert ax is given
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_without_matplotlib_suggestions_work_and_plot_says_which_extra():
  script = textwrap.dedent('''
      import sys
      sys.modules['matplotlib'] = None  # as if it were not installed
      import numpy as np
      import optax_clr
      lrs = np.geomspace(1e-4, 1.0, 41)
      loss = (np.log10(lrs) + 2.0) ** 2
      result = optax_clr.RangeTestResult(lrs, loss, loss, {}, 41)
      print(optax_clr.suggest_lr(result, method='minimum'))
      print(optax_clr.suggest_clr_bounds(result))
      try:
        optax_clr.plot_range_test(result)
      except ImportError as error:
        print('ImportError:', error)
  ''')
  out = subprocess.run(
      [sys.executable, '-c', script], cwd=ROOT, capture_output=True,
      text=True, check=True, env=dict(os.environ, JAX_PLATFORMS='cpu'),
  ).stdout.splitlines()
  assert float(out[0]) == pytest.approx(1e-3)
  # The loss (log10(lr) + 2)^2, 41 steps: the centred mean (3 steps) is
  # lowest at lr = 1e-2 and steepest at the first point after the 3 skipped,
  # lr = 10**-3.7; the bounds are twice and half their geometric mean with
  # half the lowest rate: max_lr = 2 sqrt(10**-3.7 * 10**-2 / 2).
  base_lr, max_lr = ast.literal_eval(out[1])
  assert max_lr == pytest.approx(2 * np.sqrt(10**-5.7 / 2), rel=1e-9)
  assert base_lr == pytest.approx(max_lr / 4, rel=1e-9)
  assert out[2].startswith('ImportError:') and 'optax_clr[plot]' in out[2]
