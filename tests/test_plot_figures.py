"""plot_range_test leaves no figure open in pyplot (a loop of plots leaks none)."""

import matplotlib

matplotlib.use('Agg')

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import optax_clr  # noqa: E402


def result():
  lrs = np.geomspace(1e-4, 1.0, 41)
  loss = (np.log10(lrs) + 2.0) ** 2
  return optax_clr.RangeTestResult(lrs, loss, loss, {}, 41)


def test_figures_it_creates_are_not_left_open(tmp_path):
  plt.close('all')
  for k in range(3):
    ax = optax_clr.plot_range_test(result(), path=tmp_path / f'{k}.png')
    assert (tmp_path / f'{k}.png').read_bytes()[:4] == b'\x89PNG'
  assert plt.get_fignums() == []
  # The returned axes still draw and save.
  ax.figure.savefig(tmp_path / 'again.png')
  assert (tmp_path / 'again.png').stat().st_size > 0


def test_a_figure_it_was_given_stays_open():
  plt.close('all')
  figure, given = plt.subplots()
  try:
    assert optax_clr.plot_range_test(result(), ax=given) is given
    assert plt.get_fignums() == [figure.number]
  finally:
    plt.close(figure)
