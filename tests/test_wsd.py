"""Tests for the warmup-stable-decay schedule."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_clr
from tests import reference_peers as peers

SHAPES = ('linear', 'cosine', '1-sqrt')


def values(schedule, num_steps):
  return np.asarray(schedule(jnp.arange(num_steps)))


class TestTransformers:

  @pytest.mark.parametrize('warmup_shape,decay_shape',
                           list(itertools.product(SHAPES, SHAPES)))
  @pytest.mark.parametrize('ratio', [0.0, 0.1])
  def test_equals_get_wsd_schedule(self, warmup_shape, decay_shape, ratio):
    peak, warmup, decay, total = 0.3, 7, 12, 40
    schedule = optax_clr.wsd_schedule(
        peak, total, decay, warmup_steps=warmup, init_lr=ratio * peak,
        final_lr=ratio * peak, warmup_shape=warmup_shape,
        decay_shape=decay_shape,
    )
    expected = [
        peak * peers.hf_wsd_factor(t, warmup, decay, total, warmup_shape,
                                   decay_shape, ratio)
        for t in range(total + 10)
    ]
    np.testing.assert_allclose(values(schedule, total + 10), expected,
                               rtol=2e-6, atol=1e-8)

  @pytest.mark.parametrize('warmup,decay,total', [
      (0, 5, 20), (5, 0, 20), (5, 15, 20), (0, 20, 20), (0, 0, 3), (1, 1, 2),
  ])
  def test_degenerate_phases(self, warmup, decay, total):
    schedule = optax_clr.wsd_schedule(1.0, total, decay, warmup_steps=warmup,
                                      decay_shape='cosine')
    expected = [peers.hf_wsd_factor(t, warmup, decay, total)
                for t in range(total + 5)]
    np.testing.assert_allclose(values(schedule, total + 5), expected,
                               atol=1e-7)


class TestFormula:

  @pytest.mark.parametrize('warmup_shape,decay_shape',
                           list(itertools.product(SHAPES, SHAPES)))
  def test_separate_start_and_end_rates(self, warmup_shape, decay_shape):
    args = dict(peak=2.0, total=50, decay=10, warmup=8, init=0.5, final=0.05,
                warmup_shape=warmup_shape, decay_shape=decay_shape)
    schedule = optax_clr.wsd_schedule(
        2.0, 50, 10, warmup_steps=8, init_lr=0.5, final_lr=0.05,
        warmup_shape=warmup_shape, decay_shape=decay_shape,
    )
    steps = range(-3, 60)
    expected = [peers.wsd_lr(t, **args) for t in steps]
    np.testing.assert_allclose(schedule(jnp.asarray(list(steps))), expected,
                               rtol=2e-6)

  def test_holds_final_value_exactly_and_defaults_to_1_sqrt(self):
    schedule = optax_clr.wsd_schedule(1.0, 100, 20, warmup_steps=10,
                                      final_lr=0.0)
    np.testing.assert_array_equal(schedule(jnp.array([100, 101, 10**6])), 0.0)
    np.testing.assert_allclose(schedule(85), 1 - np.sqrt(5 / 20), rtol=1e-6)
    np.testing.assert_array_equal(schedule(jnp.arange(10, 80)), 1.0)


class TestExactFarOut:

  def test_int32_last_steps(self):
    total = 2**31 - 1
    decay = 2**30 + 3
    schedule = optax_clr.wsd_schedule(1.0, total, decay, warmup_steps=1000,
                                      final_lr=0.1, decay_shape='linear')
    for count in (total - 1, total - 2**20, total - decay):
      expected = peers.wsd_lr(count, 1.0, total, decay, 1000, 0.0, 0.1,
                              decay_shape='linear')
      np.testing.assert_allclose(schedule(jnp.int32(count)), expected,
                                 rtol=1e-6)
    assert float(schedule(jnp.int32(total))) == np.float32(0.1)

  def test_x64_ten_to_the_twelve(self):
    with jax.enable_x64(True):
      total, decay = 2 * 10**12, 10**12 + 7
      schedule = optax_clr.wsd_schedule(1.0, total, decay,
                                        warmup_steps=10**9, init_lr=0.01)
      for count in (10**12, 10**12 + 12345, 3 * 10**8, total - 1):
        lr = schedule(jnp.asarray(count, jnp.int64))
        assert lr.dtype == jnp.float32
        expected = peers.wsd_lr(count, 1.0, total, decay, 10**9, 0.01)
        np.testing.assert_allclose(lr, expected, rtol=1e-6, atol=1e-9)


class TestTransformations:

  def test_jit_compiles_once_for_all_counts(self):
    schedule = optax_clr.wsd_schedule(0.5, 30, 10, warmup_steps=5)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def wsd_lr_at(count):
      return schedule(count)

    observed = [float(wsd_lr_at(jnp.int32(k))) for k in range(35)]
    expected = [peers.wsd_lr(k, 0.5, 30, 10, 5) for k in range(35)]
    np.testing.assert_allclose(observed, expected, rtol=1e-6)

  def test_vmap_over_step_counts_and_rates(self):
    decays = jnp.array([0, 4, 10, 20])
    warmups = jnp.array([3, 0, 5, 2])
    totals = jnp.array([25, 20, 30, 22])
    peaks = jnp.array([1.0, 0.5, 2.0, 0.1])
    inits = jnp.array([0.0, 0.1, 0.2, 0.05])
    finals = jnp.array([0.01, 0.0, 0.5, 0.02])
    counts = jnp.arange(-2, 35)

    def sweep(peak, total, decay, warmup, init, final):
      return optax_clr.wsd_schedule(
          peak, total, decay, warmup_steps=warmup, init_lr=init,
          final_lr=final, warmup_shape='cosine',
      )(counts)

    rows = list(zip(peaks.tolist(), totals.tolist(), decays.tolist(),
                    warmups.tolist(), inits.tolist(), finals.tolist()))
    for dtype in (jnp.int32, jnp.float32):
      lrs = jax.jit(jax.vmap(sweep))(
          peaks, totals.astype(dtype), decays.astype(dtype),
          warmups.astype(dtype), inits, finals,
      )
      for row, (p, t, d, w, i, f) in enumerate(rows):
        expected = [peers.wsd_lr(int(c), p, t, d, w, i, f, 'cosine')
                    for c in counts]
        np.testing.assert_allclose(lrs[row], expected, rtol=2e-6, atol=1e-8)

  @pytest.mark.parametrize('count,phase', [(2, 'warmup'), (10, 'stable'),
                                           (23, 'decay'), (40, 'after')])
  def test_grad_with_respect_to_the_rates(self, count, phase):
    warmup, decay, total = 5, 10, 30

    def lr(peak, init, final):
      return optax_clr.wsd_schedule(
          peak, total, decay, warmup_steps=warmup, init_lr=init,
          final_lr=final, decay_shape='linear',
      )(count)

    grads = np.asarray(jax.grad(lr, argnums=(0, 1, 2))(1.0, 0.1, 0.01))
    if phase == 'warmup':
      expected = [count / warmup, 1 - count / warmup, 0.0]
    elif phase == 'stable':
      expected = [1.0, 0.0, 0.0]
    elif phase == 'decay':
      x = (count - (total - decay)) / decay
      expected = [1 - x, 0.0, x]
    else:
      expected = [0.0, 0.0, 1.0]
    np.testing.assert_allclose(grads, expected, rtol=1e-6, atol=1e-7)
    assert np.all(np.isfinite(grads))

  def test_dtypes(self):
    schedule = optax_clr.wsd_schedule(0.1, 10, 3)
    assert schedule(5).dtype == jnp.float32
    assert schedule(jnp.arange(6).reshape(2, 3)).shape == (2, 3)
    with jax.enable_x64(True):
      assert schedule(jnp.int64(5)).dtype == jnp.float32
      wide = optax_clr.wsd_schedule(jnp.float64(0.1), 10, 3)
      assert wide(jnp.int64(5)).dtype == jnp.float64


BAD_ARGUMENTS = [
    (dict(warmup_steps=10, decay_steps=95), 'warmup_steps \\+ decay_steps'),
    (dict(decay_steps=101), 'warmup_steps \\+ decay_steps must be <='),
    (dict(warmup_shape='exp'), "warmup_shape must be one of.*'exp'"),
    (dict(decay_shape='sqrt'), "decay_shape must be one of.*'sqrt'"),
    (dict(peak_lr=-1.0), 'peak_lr must lie in'),
    (dict(init_lr=-0.1), 'init_lr must lie in'),
    (dict(final_lr=float('nan')), 'final_lr must be finite'),
    (dict(total_steps=0, decay_steps=0), 'total_steps must be at least 1'),
    (dict(decay_steps=-1), 'decay_steps must be at least 0'),
    (dict(warmup_steps=2.5), 'warmup_steps must be a whole number'),
]


@pytest.mark.parametrize('overrides,message', BAD_ARGUMENTS)
def test_refuses_bad_arguments(overrides, message):
  arguments = dict(peak_lr=1.0, total_steps=100, decay_steps=20)
  arguments.update(overrides)
  with pytest.raises(ValueError, match=message):
    optax_clr.wsd_schedule(**arguments)
