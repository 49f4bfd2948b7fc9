"""Tests for the inverse square root schedule."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_clr
from tests import reference_peers as peers


def values(schedule, num_steps):
  return np.asarray(schedule(jnp.arange(num_steps)))


class TestPeers:

  @pytest.mark.parametrize('warmup,timescale', [
      (0, None), (1, None), (4, None), (100, None), (10, 3), (0, 50),
      (7, 1000),
  ])
  def test_equals_get_inverse_sqrt_schedule(self, warmup, timescale):
    schedule = optax_clr.inverse_sqrt_schedule(
        0.01, warmup, timescale=timescale
    )
    expected = [0.01 * peers.hf_inverse_sqrt_factor(t, warmup, timescale)
                for t in range(400)]
    np.testing.assert_allclose(values(schedule, 400), expected, rtol=2e-6)

  @pytest.mark.parametrize('d_model,warmup', [(512, 4000), (64, 100)])
  def test_is_the_transformer_rule(self, d_model, warmup):
    # Vaswani et al.: d**-0.5 * min(s**-0.5, s * warmup**-1.5) at step s.
    peak = d_model**-0.5 * warmup**-0.5
    schedule = optax_clr.inverse_sqrt_schedule(peak, warmup)
    steps = np.arange(1, 5 * warmup, 7)
    expected = d_model**-0.5 * np.minimum(steps**-0.5, steps * warmup**-1.5)
    np.testing.assert_allclose(schedule(jnp.asarray(steps)), expected,
                               rtol=2e-6)

  def test_warmup_from_init_lr(self):
    schedule = optax_clr.inverse_sqrt_schedule(1.0, 8, init_lr=0.2)
    expected = [0.2 + 0.8 * t / 8 for t in range(8)] + [1.0]
    np.testing.assert_allclose(values(schedule, 9), expected, rtol=1e-6)
    assert float(schedule(-5)) == np.float32(0.2)


class TestExactFarOut:

  def test_int32_last_step(self):
    schedule = optax_clr.inverse_sqrt_schedule(1.0, 4000, timescale=100)
    count = 2**31 - 1
    expected = 1 / math.sqrt((count - 4000 + 100) / 100)
    np.testing.assert_allclose(schedule(jnp.int32(count)), expected,
                               rtol=1e-6)

  @pytest.mark.parametrize('count', [10**12, 10**12 + 1, 3 * 10**12])
  def test_x64_ten_to_the_twelve(self, count):
    with jax.enable_x64(True):
      schedule = optax_clr.inverse_sqrt_schedule(1.0, 10**11 + 3,
                                                 timescale=10**6)
      lr = schedule(jnp.asarray(count, jnp.int64))
      assert lr.dtype == jnp.float32
      expected = 1 / math.sqrt((count - 10**11 - 3 + 10**6) / 10**6)
      np.testing.assert_allclose(lr, expected, rtol=1e-6)
      assert float(schedule(jnp.int64(10**11))) == pytest.approx(
          10**11 / (10**11 + 3), rel=1e-6)


class TestTransformations:

  def test_jit_compiles_once_for_all_counts(self):
    schedule = optax_clr.inverse_sqrt_schedule(0.1, 5)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def inverse_sqrt_lr_at(count):
      return schedule(count)

    observed = [float(inverse_sqrt_lr_at(jnp.int32(k))) for k in range(20)]
    expected = [0.1 * peers.hf_inverse_sqrt_factor(k, 5) for k in range(20)]
    np.testing.assert_allclose(observed, expected, rtol=1e-6)

  def test_vmap_over_every_argument(self):
    peaks = jnp.array([1.0, 0.5, 0.1, 2.0])
    warmups = jnp.array([0, 3, 10, 1])
    timescales = jnp.array([5.0, 3.0, 20.0, 1.0])
    inits = jnp.array([0.0, 0.1, 0.05, 0.5])
    counts = jnp.arange(-1, 60)

    def sweep(peak, warmup, timescale, init):
      return optax_clr.inverse_sqrt_schedule(
          peak, warmup, timescale=timescale, init_lr=init
      )(counts)

    def default_timescale(peak, warmup):
      return optax_clr.inverse_sqrt_schedule(peak, warmup)(counts)

    for dtype in (jnp.int32, jnp.float32):
      lrs = jax.jit(jax.vmap(sweep))(peaks, warmups.astype(dtype), timescales,
                                     inits)
      defaults = jax.jit(jax.vmap(default_timescale))(
          peaks, warmups.astype(dtype))
      for row in range(4):
        p, w = float(peaks[row]), int(warmups[row])
        tau, i = float(timescales[row]), float(inits[row])
        expected = [
            i + (p - i) * max(c, 0) / w if max(c, 0) < w
            else p / math.sqrt((max(c, 0) - w + tau) / tau)
            for c in counts.tolist()
        ]
        np.testing.assert_allclose(lrs[row], expected, rtol=2e-6)
        expected = [p * peers.hf_inverse_sqrt_factor(max(c, 0), w)
                    for c in counts.tolist()]
        np.testing.assert_allclose(defaults[row], expected, rtol=2e-6)

  def test_grad_with_respect_to_the_rates(self):
    def lr(peak, init, count):
      return optax_clr.inverse_sqrt_schedule(peak, 10, init_lr=init)(count)

    d_peak, d_init = jax.grad(lr, argnums=(0, 1))(1.0, 0.1, 4)
    np.testing.assert_allclose([d_peak, d_init], [0.4, 0.6], rtol=1e-6)
    d_peak, d_init = jax.grad(lr, argnums=(0, 1))(1.0, 0.1, 30)
    np.testing.assert_allclose([d_peak, d_init], [math.sqrt(10 / 30), 0.0],
                               rtol=1e-6)

  def test_dtypes(self):
    schedule = optax_clr.inverse_sqrt_schedule(0.1, 3)
    assert schedule(5).dtype == jnp.float32
    assert schedule(jnp.arange(6).reshape(2, 3)).shape == (2, 3)
    with jax.enable_x64(True):
      assert schedule(jnp.int64(5)).dtype == jnp.float32
      wide = optax_clr.inverse_sqrt_schedule(jnp.float64(0.1), 3)
      assert wide(jnp.int64(5)).dtype == jnp.float64


BAD_ARGUMENTS = [
    (dict(peak_lr=-0.1), 'peak_lr must lie in'),
    (dict(peak_lr=float('inf')), 'peak_lr must be finite'),
    (dict(init_lr=-1.0), 'init_lr must lie in'),
    (dict(warmup_steps=-1), 'warmup_steps must be at least 0'),
    (dict(warmup_steps=2.5), 'warmup_steps must be a whole number'),
    (dict(timescale=0.5), r'timescale must lie in \[1, inf\]'),
    (dict(timescale=0), 'timescale'),
    (dict(timescale=float('nan')), 'timescale must be finite'),
]


@pytest.mark.parametrize('overrides,message', BAD_ARGUMENTS)
def test_refuses_bad_arguments(overrides, message):
  arguments = dict(peak_lr=1.0, warmup_steps=100)
  arguments.update(overrides)
  with pytest.raises(ValueError, match=message):
    optax_clr.inverse_sqrt_schedule(**arguments)
