"""The gallery draws exactly the published formulas, and writes its PNGs."""

import math
import os

import numpy as np
import pytest

from examples import plot_schedules as ps
from tests import reference
from tests import reference_peers as peers

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _seed(mode, gamma=1.0):
  def curve(t):
    return np.array([
        reference.smith_clr(k, ps.BASE_LR, ps.MAX_LR, ps.STEP_SIZE, mode, gamma)
        for k in t
    ])

  return curve


def _one_cycle(corners):
  def curve(t):
    return np.array([
        reference.torch_one_cycle(
            k, ps.NUM_STEPS, corners, pct_start=ps.ONE_CYCLE_PCT_START
        )
        for k in t
    ])

  return curve


def _cyclic_momentum(t):
  # Smith's triangle, mirrored: max - (max - base) * max(0, 1 - x).
  cycle = np.floor(1 + t / (2 * ps.STEP_SIZE))
  x = np.abs(t / ps.STEP_SIZE - 2 * cycle + 1)
  spread = ps.MAX_MOMENTUM - ps.BASE_MOMENTUM
  return ps.MAX_MOMENTUM - spread * np.maximum(0, 1 - x)


def _step_decay(t):
  epochs = t // (ps.STEP_DECAY_EPOCHS * ps.STEPS_PER_EPOCH)
  return ps.MAX_LR * ps.STEP_DECAY_FACTOR**epochs


def _exponential_decay(t):
  return ps.MAX_LR * ps.EXPONENTIAL_DECAY_RATE ** (t / ps.STEPS_PER_EPOCH)


def _inverse_time_decay(t):
  epoch = t / ps.STEPS_PER_EPOCH
  return ps.MAX_LR / (1 + ps.INVERSE_TIME_DECAY_RATE * epoch)


def _ramp(t):
  ratio = ps.RAMP_END_LR / ps.RAMP_START_LR
  return ps.RAMP_START_LR * ratio ** (t / (ps.RAMP_NUM_STEPS - 1))


def _restarts(first_period, period_mult, peak_mult):
  def curve(t):
    return np.array([
        peers.exact_restarts_lr(int(k), ps.MAX_LR, first_period, period_mult,
                                peak_mult, ps.RESTART_MIN_LR)
        for k in t
    ])

  return curve


def _wsd(decay_shape):
  def curve(t):
    return np.array([
        peers.wsd_lr(int(k), ps.MAX_LR, ps.NUM_STEPS, ps.WSD_DECAY_STEPS,
                     ps.WARMUP_STEPS, 0.0, ps.BASE_LR,
                     decay_shape=decay_shape)
        for k in t
    ])

  return curve


def _inverse_sqrt(t):
  return ps.MAX_LR * np.array(
      [peers.hf_inverse_sqrt_factor(int(k), ps.WARMUP_STEPS) for k in t])


_INITIAL = ps.MAX_LR / 25.0  # one_cycle_schedule's default div_factor...
FORMULAS = {
    'triangular': _seed('triangular'),
    'triangular2': _seed('triangular2'),
    'exp_range': _seed('exp_range', ps.EXP_RANGE_GAMMA),
    # ...and final_div_factor 1e4.
    'one_cycle': _one_cycle((_INITIAL, ps.MAX_LR, _INITIAL / 1e4)),
    'one_cycle_momentum': _one_cycle(
        (ps.MAX_MOMENTUM, ps.BASE_MOMENTUM, ps.MAX_MOMENTUM)
    ),
    'cyclic_momentum': _cyclic_momentum,
    'step_decay': _step_decay,
    'exponential_decay': _exponential_decay,
    'inverse_time_decay': _inverse_time_decay,
    'range_test': _ramp,
    'cosine_restarts': _restarts(ps.RESTART_FIRST_PERIOD,
                                 ps.RESTART_PERIOD_MULT, 1.0),
    'cosine_restarts_peak_mult': _restarts(ps.STEP_SIZE, 1,
                                           ps.RESTART_PEAK_MULT),
    'wsd_1_sqrt': _wsd('1-sqrt'),
    'wsd_cosine': _wsd('cosine'),
    'inverse_sqrt': _inverse_sqrt,
}


def _plotted_lines(figure):
  """``{label: (x, y)}`` read back from the figure's axes."""
  lines = {}
  for ax in figure.axes:
    for line in ax.get_lines():
      x, y = np.asarray(line.get_xydata()).T
      lines[line.get_label()] = (x, y)
  return lines


@pytest.mark.parametrize(
    'panels, columns',
    [
        pytest.param(ps.lr_panels, 3, id='gallery'),
        pytest.param(ps.momentum_panels, 2, id='momentum'),
    ],
)
def test_plotted_curves_equal_the_formulas(panels, columns):
  panels = panels()
  lines = _plotted_lines(ps.draw(panels, columns=columns))
  expected = {line.label for panel in panels for line in panel.lines}
  assert set(lines) == expected
  for label, (x, y) in lines.items():
    np.testing.assert_array_equal(x, np.arange(len(x)))
    want = FORMULAS[label](x)
    np.testing.assert_allclose(y, want, rtol=2e-5, atol=1e-9, err_msg=label)


def test_gallery_shows_every_policy():
  labels = {line.label for panel in ps.lr_panels() for line in panel.lines}
  assert labels == {
      'triangular', 'triangular2', 'exp_range', 'one_cycle', 'step_decay',
      'exponential_decay', 'inverse_time_decay', 'range_test',
      'cosine_restarts', 'cosine_restarts_peak_mult', 'wsd_1_sqrt',
      'wsd_cosine', 'inverse_sqrt',
  }


def test_curves_cover_the_cycles():
  curves = ps.gallery_curves(ps.lr_panels())
  assert len(curves['triangular']) == ps.NUM_STEPS
  assert math.isclose(curves['triangular'].max(), ps.MAX_LR, rel_tol=1e-6)
  assert curves['range_test'][-1] == pytest.approx(ps.RAMP_END_LR)


def test_main_writes_under_runs_by_default(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  paths = ps.main([])
  assert sorted(os.path.relpath(p) for p in paths.values()) == [
      os.path.join('runs', 'gallery', 'gallery.png'),
      os.path.join('runs', 'gallery', 'gallery_momentum.png'),
  ]
  assert os.listdir(tmp_path) == ['runs']


def test_main_writes_both_pngs(tmp_path):
  paths = ps.main(['--out', str(tmp_path / 'images')])
  assert set(paths) == {'gallery', 'momentum'}
  for path in paths.values():
    with open(path, 'rb') as f:
      assert f.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
