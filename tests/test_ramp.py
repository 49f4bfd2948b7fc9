"""Tests for the range test's ramp."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_clr


class TestRangeTestSchedule:

  def test_exponential_against_formula_and_exact_end(self):
    schedule = optax_clr.range_test_schedule(1e-7, 10.0, 100)
    steps = np.arange(120)
    expected = 1e-7 * (10.0 / 1e-7) ** (np.minimum(steps, 99) / 99)
    lrs = np.asarray(schedule(jnp.asarray(steps)))
    np.testing.assert_allclose(lrs, expected, rtol=2e-5)
    assert lrs[0] == np.float32(1e-7)
    assert np.all(lrs[99:] == np.float32(10.0))
    assert np.all(np.diff(lrs[:100]) > 0)

  def test_linear_against_formula(self):
    schedule = optax_clr.range_test_schedule(0.0, 0.02, 41, mode='linear')
    steps = np.arange(50)
    expected = 0.02 * np.minimum(steps, 40) / 40
    np.testing.assert_allclose(schedule(jnp.asarray(steps)), expected, atol=1e-9)
    assert float(schedule(40)) == np.float32(0.02)

  def test_vmap_over_bounds(self):
    starts = jnp.array([1e-5, 1e-3])
    ends = jnp.array([1.0, 10.0])
    lrs = jax.vmap(
        lambda s, e: optax_clr.range_test_schedule(s, e, 11)(jnp.arange(11))
    )(starts, ends)
    for row, (s, e) in enumerate([(1e-5, 1.0), (1e-3, 10.0)]):
      np.testing.assert_allclose(lrs[row], s * (e / s) ** (np.arange(11) / 10), rtol=1e-5)

  @pytest.mark.parametrize('start,end', [(1e-30, 1e30), (2e-38, 1.0), (1e-3, 3e38)])
  def test_extreme_ranges_are_finite_and_right(self, start, end):
    # The ratio end / start overflows float32 here; the ramp is computed in
    # log space instead.
    schedule = optax_clr.range_test_schedule(start, end, 11)
    steps = np.arange(11)
    expected = np.exp(np.log(start) + steps / 10 * (np.log(end) - np.log(start)))
    lrs = np.asarray(schedule(jnp.asarray(steps)))
    assert np.all(np.isfinite(lrs))
    # XLA flushes results below float32's smallest normal number to 0.
    tiny = np.finfo(np.float32).tiny
    np.testing.assert_allclose(lrs, expected.astype(np.float32), rtol=2e-5, atol=tiny)
    assert lrs[0] == np.float32(start) and lrs[-1] == np.float32(end)

  def test_subnormal_start_is_refused(self):
    # 1e-45 is not a normal float32 number: XLA flushes it to zero.
    with pytest.raises(ValueError, match='start_lr=1e-45 is below 1.175e-38'):
      optax_clr.range_test_schedule(1e-45, 1.0, 11)

  def test_symmetric_range_is_one_in_the_middle(self):
    np.testing.assert_allclose(
        optax_clr.range_test_schedule(1e-30, 1e30, 11)(5), 1.0, rtol=1e-6)

  @pytest.mark.parametrize(
      'arguments,message',
      [
          (dict(start_lr=1e-3, end_lr=1.0, num_steps=1), 'num_steps must be at least 2'),
          (dict(start_lr=1e-3, end_lr=1.0, num_steps=10.5), 'num_steps must be a whole number'),
          (dict(start_lr=0.0, end_lr=1.0, num_steps=10), r'start_lr must lie in \(0, inf\]'),
          (dict(start_lr=1.0, end_lr=1.0, num_steps=10), 'end_lr must be > start_lr'),
          (dict(start_lr=2.0, end_lr=1.0, num_steps=10, mode='linear'), 'end_lr must be > start_lr'),
          (dict(start_lr=-1.0, end_lr=1.0, num_steps=10, mode='linear'), 'start_lr'),
          (dict(start_lr=1e-3, end_lr=1.0, num_steps=10, mode='log'), "mode must be one of.*'log'"),
      ],
  )
  def test_refuses_bad_arguments(self, arguments, message):
    with pytest.raises(ValueError, match=message):
      optax_clr.range_test_schedule(**arguments)
