"""Tests for the cyclical learning-rate and momentum schedules."""

import math

import chex
from hypothesis import given, settings, strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_clr
from tests import reference

# Every hypothesis example evaluates this many steps, whatever its cycle
# length (5 cycles of the longest drawn): one compilation per test.
HYPOTHESIS_STEPS = 500

# PyTorch's published test_lrscheduler targets (CyclicLR, base 1, max 5).
TORCH_TRIANGULAR = [1, 2, 3, 4, 5, 4, 3, 2, 1, 2, 3]
TORCH_TRIANGULAR_MOMENTUM = [5, 4, 3, 2, 1, 2, 3, 4, 5, 4, 3]
TORCH_TRIANGULAR2 = [
    1, 2, 3, 4, 5, 4, 3, 2, 1, 1.5, 2.0, 2.5, 3.0, 2.5, 2.0, 1.5, 1, 1.25,
    1.50, 1.75, 2.00, 1.75,
]
TORCH_TRIANGULAR2_MOMENTUM = [
    5.0, 4.0, 3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.5, 4.0, 3.5, 3.0, 3.5, 4.0,
    4.5, 5.0, 4.75, 4.5, 4.25, 4.0, 4.25,
]
TORCH_UP4_DOWN6 = [
    1.0, 2.0, 3.0, 4.0, 5.0, 13 / 3, 11 / 3, 9 / 3, 7 / 3, 5 / 3, 1.0,
]
TORCH_UP4_DOWN6_MOMENTUM = [
    5.0, 4.0, 3.0, 2.0, 1.0, 5 / 3, 7 / 3, 3.0, 11 / 3, 13 / 3, 5.0,
]
TORCH_TRIANGULAR2_UP2_DOWN6 = [
    1.0, 3.0, 5.0, 13 / 3, 11 / 3, 9 / 3, 7 / 3, 5 / 3, 1.0, 2.0, 3.0, 8 / 3,
    7 / 3, 6 / 3, 5 / 3, 4 / 3, 1.0, 3 / 2, 2.0, 11 / 6, 10 / 6, 9 / 6, 8 / 6,
    7 / 6,
]
TORCH_TRIANGULAR2_UP2_DOWN6_MOMENTUM = [
    5.0, 3.0, 1.0, 5 / 3, 7 / 3, 3.0, 11 / 3, 13 / 3, 5.0, 4.0, 3.0, 10 / 3,
    11 / 3, 4.0, 13 / 3, 14 / 3, 5.0, 4.5, 4.0, 25 / 6, 13 / 3, 4.5, 14 / 3,
    29 / 6,
]
TORCH_EXP_RANGE_XS = [0, 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25, 0, 0.25, 0.5, 0.75, 1]
TORCH_EXP_RANGE_UP2_DOWN6_XS = [
    0.0, 0.5, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0, 0.5, 1.0, 5 / 6,
    4 / 6,
]


def values(schedule, num_steps):
  return np.asarray(schedule(jnp.arange(num_steps)))


class TestPublishedPyTorchValues:
  """Step-for-step equality with PyTorch's own CyclicLR test targets."""

  def test_triangular(self):
    lr = optax_clr.triangular_schedule(1.0, 5.0, 4)
    momentum = optax_clr.cyclic_momentum_schedule(1.0, 5.0, 4)
    np.testing.assert_allclose(values(lr, 11), TORCH_TRIANGULAR, rtol=1e-6)
    np.testing.assert_allclose(
        values(momentum, 11), TORCH_TRIANGULAR_MOMENTUM, rtol=1e-6
    )

  def test_triangular2(self):
    lr = optax_clr.triangular2_schedule(1.0, 5.0, 4)
    momentum = optax_clr.cyclic_momentum_schedule(
        1.0, 5.0, 4, mode='triangular2'
    )
    np.testing.assert_allclose(values(lr, 22), TORCH_TRIANGULAR2, rtol=1e-6)
    np.testing.assert_allclose(
        values(momentum, 22), TORCH_TRIANGULAR2_MOMENTUM, rtol=1e-6
    )

  def test_exp_range(self):
    lr = optax_clr.exp_range_schedule(1.0, 5.0, 4, gamma=0.9)
    momentum = optax_clr.cyclic_momentum_schedule(
        1.0, 5.0, 4, mode='exp_range', gamma=0.9
    )
    xs = TORCH_EXP_RANGE_XS
    expected_lr = [1 + x * 4 * 0.9**i for i, x in enumerate(xs)]
    expected_momentum = [5 - x * 4 * 0.9**i for i, x in enumerate(xs)]
    np.testing.assert_allclose(values(lr, 13), expected_lr, rtol=1e-6)
    np.testing.assert_allclose(
        values(momentum, 13), expected_momentum, rtol=1e-6
    )

  def test_triangular_asymmetric(self):
    lr = optax_clr.triangular_schedule(1.0, 5.0, 4, step_size_down=6)
    momentum = optax_clr.cyclic_momentum_schedule(
        1.0, 5.0, 4, step_size_down=6
    )
    np.testing.assert_allclose(values(lr, 11), TORCH_UP4_DOWN6, rtol=1e-6)
    np.testing.assert_allclose(
        values(momentum, 11), TORCH_UP4_DOWN6_MOMENTUM, rtol=1e-6
    )

  @pytest.mark.parametrize('delta', [0.0, 2.0])
  def test_triangular2_asymmetric(self, delta):
    lr = optax_clr.triangular2_schedule(
        1.0 + delta, 5.0 + delta, 2, step_size_down=6
    )
    momentum = optax_clr.cyclic_momentum_schedule(
        1.0 + delta, 5.0 + delta, 2, step_size_down=6, mode='triangular2'
    )
    np.testing.assert_allclose(
        values(lr, 24),
        np.add(TORCH_TRIANGULAR2_UP2_DOWN6, delta),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        values(momentum, 24),
        np.add(TORCH_TRIANGULAR2_UP2_DOWN6_MOMENTUM, delta),
        rtol=1e-6,
    )

  def test_exp_range_asymmetric(self):
    lr = optax_clr.exp_range_schedule(
        1.0, 5.0, 2, gamma=0.9, step_size_down=6
    )
    xs = TORCH_EXP_RANGE_UP2_DOWN6_XS
    expected = [1 + x * 4 * 0.9**i for i, x in enumerate(xs)]
    np.testing.assert_allclose(values(lr, 13), expected, rtol=1e-6)


class TestSmithFormula:
  """Smith's ``cycle``/``x``/``scale_fn`` lines, in NumPy float64."""

  @pytest.mark.parametrize('mode', ['triangular', 'triangular2', 'exp_range'])
  @pytest.mark.parametrize('step_size', [1, 3, 2000])
  def test_matches_smith(self, mode, step_size):
    gamma = 0.9995
    schedule = optax_clr.cyclic_schedule(
        0.001, 0.006, step_size, mode=mode, gamma=gamma
    )
    steps = np.arange(0, 9 * step_size + 3)
    expected = [
        reference.smith_clr(t, 0.001, 0.006, step_size, mode, gamma)
        for t in steps
    ]
    np.testing.assert_allclose(
        schedule(jnp.asarray(steps)), expected, rtol=2e-6, atol=1e-9
    )

  @settings(max_examples=40)
  @given(
      up=st.integers(1, 50),
      down=st.integers(1, 50),
      mode=st.sampled_from(['triangular', 'triangular2', 'exp_range']),
      gamma=st.floats(0.9, 1.0),
  )
  def test_matches_torch_algorithm(self, up, down, mode, gamma):
    schedule = optax_clr.cyclic_schedule(
        0.1, 1.0, up, step_size_down=down, mode=mode, gamma=gamma
    )
    # One length for every example (at least 5 cycles of the longest): the
    # schedule's ops compile once instead of once per example.
    steps = np.arange(HYPOTHESIS_STEPS)
    expected = [
        reference.torch_cyclic_lr(t, 0.1, 1.0, up, down, mode, gamma)
        for t in steps
    ]
    np.testing.assert_allclose(
        schedule(jnp.asarray(steps)), expected, rtol=1e-5, atol=1e-7
    )


class TestProperties:

  @settings(max_examples=30)
  @given(
      # 0 or a normal float32 number (smaller ones are refused).
      base=st.just(0.0) | st.floats(1e-30, 1.0),
      span=st.just(0.0) | st.floats(1e-30, 1.0),
      up=st.integers(1, 40),
      down=st.integers(1, 40),
  )
  def test_bounds_period_and_peak(self, base, span, up, down):
    high = base + span
    schedule = optax_clr.triangular_schedule(base, high, up, step_size_down=down)
    total = up + down
    # A fixed length (compiled once): at least 6 cycles.
    lr = np.asarray(schedule(jnp.arange(HYPOTHESIS_STEPS)))
    tolerance = 1e-6 * max(1.0, high)
    assert np.all(lr >= np.float32(base) - tolerance)
    assert np.all(lr <= np.float32(high) + tolerance)
    np.testing.assert_allclose(lr[total:], lr[:-total], atol=tolerance)
    np.testing.assert_allclose(lr[up::total], np.float32(high), atol=tolerance)
    np.testing.assert_allclose(lr[::total], np.float32(base), atol=tolerance)

  @pytest.mark.parametrize('cycle', [1, 2, 5, 30])
  def test_triangular2_amplitude_halves_every_cycle(self, cycle):
    schedule = optax_clr.triangular2_schedule(0.0, 1.0, 10, step_size_down=5)
    peak = schedule((cycle - 1) * 15 + 10)
    assert float(peak) == 2.0 ** -(cycle - 1)

  def test_triangular2_never_overflows_and_settles_at_base(self):
    # PyTorch's 1 / 2.0 ** (cycle - 1) raises OverflowError past 1025 cycles.
    schedule = optax_clr.triangular2_schedule(0.25, 1.0, 2)
    peaks = jnp.array([4 * c + 2 for c in (1020, 1025, 1030, 10**6, 5 * 10**8)])
    lr = np.asarray(schedule(peaks))
    assert np.all(np.isfinite(lr))
    np.testing.assert_array_equal(lr, np.float32(0.25))
    earlier = np.asarray(schedule(jnp.array([4 * c + 2 for c in range(40)])))
    assert np.all(np.diff(earlier) <= 0)

  def test_exp_range_amplitude_decays_by_gamma_per_step(self):
    schedule = optax_clr.exp_range_schedule(0.0, 1.0, 7, gamma=0.99)
    peaks = np.arange(7, 200, 14)
    np.testing.assert_allclose(schedule(jnp.asarray(peaks)), 0.99**peaks, rtol=2e-6)

  def test_momentum_mirrors_learning_rate(self):
    kwargs = dict(step_size_down=3, mode='exp_range', gamma=0.95)
    lr = optax_clr.cyclic_schedule(0.2, 0.8, 5, **kwargs)
    momentum = optax_clr.cyclic_momentum_schedule(0.2, 0.8, 5, **kwargs)
    steps = jnp.arange(40)
    np.testing.assert_allclose(lr(steps) - 0.2, 0.8 - momentum(steps), atol=1e-6)


class TestCustomScale:

  def test_cycle_scale_mode_gets_one_based_cycle(self):
    schedule = optax_clr.cyclic_schedule(
        1.0, 5.0, 4, scale_fn=lambda c: 1.0 / c, scale_mode='cycle'
    )
    expected = [
        reference.torch_cyclic_lr(t, 1.0, 5.0, 4, scale_fn=lambda c: 1.0 / c)
        for t in range(30)
    ]
    np.testing.assert_allclose(values(schedule, 30), expected, rtol=1e-6)

  def test_iterations_scale_mode_gets_global_step(self):
    scale = lambda t: 1.0 / (1.0 + 0.1 * t)
    schedule = optax_clr.cyclic_schedule(
        1.0, 5.0, 3, step_size_down=5, scale_fn=scale,
        scale_mode='iterations',
    )
    expected = [
        reference.torch_cyclic_lr(
            t, 1.0, 5.0, 3, 5, scale_fn=scale, scale_mode='iterations'
        )
        for t in range(30)
    ]
    np.testing.assert_allclose(values(schedule, 30), expected, rtol=1e-6)

  def test_scale_fn_overrides_mode(self):
    custom = optax_clr.cyclic_schedule(
        1.0, 5.0, 4, mode='triangular2', scale_fn=lambda c: jnp.ones_like(c)
    )
    np.testing.assert_allclose(values(custom, 11), TORCH_TRIANGULAR, rtol=1e-6)

  def test_scale_fn_must_return_one_number_per_count(self):
    schedule = optax_clr.cyclic_schedule(
        0.1, 0.2, 10, scale_fn=lambda cycle: jnp.ones(3))
    with pytest.raises(ValueError, match=r'scale_fn must return one number.*\(3,\)'):
      schedule(3)
    complex_scale = optax_clr.cyclic_schedule(
        0.1, 0.2, 10, scale_fn=lambda cycle: 1j * cycle)
    with pytest.raises(TypeError, match='scale_fn must return a real number'):
      jax.jit(complex_scale)(3)
    # Elementwise over an array of counts is one number per count.
    elementwise = optax_clr.cyclic_schedule(
        0.0, 1.0, 2, scale_fn=lambda cycle: 1.0 / cycle)
    np.testing.assert_allclose(elementwise(jnp.arange(0, 12, 2)),
                               [0, 1, 0, 0.5, 0, 1 / 3], rtol=1e-6)

  def test_default_scale_mode_with_scale_fn_is_cycle(self):
    custom = optax_clr.cyclic_schedule(1.0, 5.0, 4, scale_fn=lambda c: 0.5**(c - 1))
    np.testing.assert_allclose(values(custom, 22), TORCH_TRIANGULAR2, rtol=1e-6)


class TestExactFarOut:

  @pytest.mark.parametrize('up,down', [(2000, 2000), (3, 7), (1, 1), (4097, 1)])
  def test_int32_last_step(self, up, down):
    count = jnp.asarray(2**31 - 1, jnp.int32)
    schedule = optax_clr.triangular_schedule(0.0, 1.0, up, step_size_down=down)
    _, fraction = reference.exact_triangle(2**31 - 1, up, down)
    np.testing.assert_allclose(schedule(count), fraction, rtol=1e-6, atol=1e-7)

  def test_naive_float32_formula_is_wrong_where_ours_is_exact(self):
    # The float32 ``count / step_size`` of Keras/TFA lands on the wrong point
    # of the triangle at 2**31 - 1; integer arithmetic does not.
    count, step = 2**31 - 1, 3
    naive = float(
        jnp.abs(jnp.float32(count) / step - 2 * jnp.floor(1 + jnp.float32(count) / (2 * step)) + 1)
    )
    exact = abs(count / step - 2 * math.floor(1 + count / (2 * step)) + 1)
    assert abs(naive - exact) > 0.1
    schedule = optax_clr.triangular_schedule(0.0, 1.0, step)
    np.testing.assert_allclose(schedule(jnp.int32(count)), 1 - exact, atol=1e-6)

  @pytest.mark.parametrize('count', [10**12, 10**12 + 1234, 3 * 10**12 + 999])
  def test_x64_at_ten_to_the_twelve(self, count):
    with jax.enable_x64(True):
      schedule = optax_clr.triangular2_schedule(0.1, 0.6, 2000, step_size_down=1500)
      momentum = optax_clr.cyclic_momentum_schedule(0.8, 0.9, 2000, step_size_down=1500)
      lr = schedule(jnp.asarray(count, jnp.int64))
      cycle, fraction = reference.exact_triangle(count, 2000, 1500)
      assert lr.dtype == jnp.float32
      # 2**-(cycle - 1) underflows: the exact value is base_lr.
      assert cycle > 1100
      np.testing.assert_allclose(lr, 0.1, rtol=1e-7)
      np.testing.assert_allclose(
          momentum(jnp.asarray(count, jnp.int64)), 0.9 - 0.1 * fraction,
          rtol=1e-6,
      )

  @pytest.mark.parametrize('count', [1_500_000_000, 1_000_000_000, 2**31 - 1])
  def test_cycle_longer_than_int32_does_not_wrap(self, count):
    # step_size + step_size_down = 3e9 does not fit int32.
    schedule = optax_clr.triangular_schedule(0.1, 0.2, 1_500_000_000)
    _, fraction = reference.exact_triangle(count, 1_500_000_000)
    np.testing.assert_allclose(schedule(count), 0.1 + 0.1 * fraction, rtol=1e-6)
    np.testing.assert_allclose(
        jax.jit(schedule)(jnp.int32(count)), 0.1 + 0.1 * fraction, rtol=1e-6)

  def test_exp_range_accurate_at_large_counts(self):
    gamma = 0.99999
    schedule = optax_clr.exp_range_schedule(0.0, 1.0, 50, gamma=gamma)
    for count in [10**5, 10**5 + 50, 10**6 + 50]:
      _, fraction = reference.exact_triangle(count, 50)
      expected = fraction * gamma**count
      np.testing.assert_allclose(schedule(count), expected, rtol=1e-5)
    # Raising float32(gamma) instead is off by far more than that.
    naive = float(jnp.float32(gamma) ** jnp.float32(10**5 + 50))
    assert abs(naive / gamma ** (10**5 + 50) - 1) > 1e-3


class TestTransformations:

  def test_jit_compiles_once_for_all_counts(self):
    schedule = optax_clr.triangular2_schedule(0.001, 0.006, 4)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def lr_at(count):
      return schedule(count)

    observed = [float(lr_at(jnp.int32(k))) for k in range(20)]
    np.testing.assert_allclose(observed, values(schedule, 20), rtol=1e-7)

  def test_vmap_over_counts_matches_broadcasting(self):
    schedule = optax_clr.exp_range_schedule(0.1, 1.0, 5, gamma=0.98)
    counts = jnp.arange(50)
    np.testing.assert_allclose(jax.vmap(schedule)(counts), schedule(counts), rtol=1e-7)

  @pytest.mark.parametrize('mode', ['triangular', 'triangular2', 'exp_range'])
  def test_vmap_over_hyperparameters(self, mode):
    max_lrs = jnp.array([0.5, 1.0, 2.0])
    step_sizes = jnp.array([2, 3, 5])
    gammas = jnp.array([0.9, 0.95, 1.0])
    counts = jnp.arange(40)

    def sweep(max_lr, step_size, gamma):
      schedule = optax_clr.cyclic_schedule(
          0.1, max_lr, step_size, mode=mode, gamma=gamma
      )
      return schedule(counts)

    lrs = jax.jit(jax.vmap(sweep))(max_lrs, step_sizes, gammas)
    for row, (m, s, g) in enumerate(zip([0.5, 1.0, 2.0], [2, 3, 5], [0.9, 0.95, 1.0])):
      expected = [reference.torch_cyclic_lr(t, 0.1, m, s, s, mode, g) for t in range(40)]
      np.testing.assert_allclose(lrs[row], expected, rtol=2e-6)

  def test_vmap_over_float_step_size_down(self):
    downs = jnp.array([2.0, 6.0])
    lrs = jax.vmap(
        lambda d: optax_clr.triangular_schedule(1.0, 5.0, 4, step_size_down=d)(jnp.arange(11))
    )(downs)
    np.testing.assert_allclose(lrs[1], TORCH_UP4_DOWN6, rtol=1e-6)

  def test_grad_with_respect_to_bounds_and_gamma(self):
    count, step = 13, 4
    _, fraction = reference.exact_triangle(count, step)

    def lr(base, high, gamma):
      return optax_clr.exp_range_schedule(base, high, step, gamma=gamma)(count)

    d_base, d_high, d_gamma = jax.grad(lr, argnums=(0, 1, 2))(0.1, 1.0, 0.9)
    scale = 0.9**count
    np.testing.assert_allclose(d_base, 1 - fraction * scale, rtol=1e-5)
    np.testing.assert_allclose(d_high, fraction * scale, rtol=1e-5)
    np.testing.assert_allclose(
        d_gamma, 0.9 * fraction * count * 0.9 ** (count - 1), rtol=1e-4
    )

  def test_dtype_and_shape(self):
    schedule = optax_clr.triangular_schedule(0.1, 1.0, 3)
    assert schedule(5).dtype == jnp.float32
    assert schedule(5).shape == ()
    assert schedule(jnp.arange(6).reshape(2, 3)).shape == (2, 3)
    with_arrays = optax_clr.triangular_schedule(
        np.float32(0.1), jnp.array([1.0, 2.0], jnp.float32), 3
    )
    assert with_arrays(5).shape == (2,)
    assert with_arrays(5).dtype == jnp.float32


class TestInOptax:

  def test_as_sgd_learning_rate_inside_jit(self):
    schedule = optax_clr.triangular_schedule(0.01, 0.1, 3)
    optimizer = optax.sgd(schedule)
    params = jnp.array([1.0])
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
      updates, state = optimizer.update(jnp.ones_like(params), state, params)
      return optax.apply_updates(params, updates), state

    for _ in range(10):
      params, state = step(params, state)
    expected = 1.0 - sum(reference.torch_cyclic_lr(t, 0.01, 0.1, 3) for t in range(10))
    np.testing.assert_allclose(params, [expected], rtol=1e-5)

  def test_inject_hyperparams_logs_lr_and_cycles_momentum(self):
    lr = optax_clr.triangular_schedule(0.01, 0.1, 3)
    momentum = optax_clr.cyclic_momentum_schedule(0.85, 0.95, 3)
    optimizer = optax.inject_hyperparams(optax.sgd)(
        learning_rate=lr, momentum=momentum
    )
    params = jnp.zeros(2)
    state = optimizer.init(params)
    step = jax.jit(lambda s: optimizer.update(jnp.ones(2), s, params)[1])
    for k in range(8):
      # After the (k+1)-th update the state holds the values it used.
      state = step(state)
      np.testing.assert_allclose(
          state.hyperparams['learning_rate'], reference.torch_cyclic_lr(k, 0.01, 0.1, 3), rtol=1e-6
      )
      _, fraction = reference.exact_triangle(k, 3)
      np.testing.assert_allclose(
          state.hyperparams['momentum'], 0.95 - 0.1 * fraction, rtol=1e-6
      )

  def test_adam_b1_follows_cyclic_momentum(self):
    b1 = optax_clr.cyclic_momentum_schedule(0.85, 0.95, 2, mode='triangular2')
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3, b1=b1)
    params = jnp.zeros(3)
    state = optimizer.init(params)
    seen = []
    for _ in range(9):
      _, state = optimizer.update(jnp.ones(3), state, params)
      seen.append(float(state.hyperparams['b1']))
    expected = [
        0.95 - 0.1 * f * 2.0 ** -(c - 1)
        for c, f in (reference.exact_triangle(k, 2) for k in range(9))
    ]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)


BAD_CYCLIC_ARGUMENTS = [
    (dict(step_size=0), ValueError, 'step_size must be at least 1'),
    (dict(step_size=-3), ValueError, 'step_size'),
    (dict(step_size=2.5), ValueError, 'step_size must be a whole number.*2.5'),
    (dict(step_size=float('nan')), ValueError, 'step_size must be finite'),
    (dict(step_size='10'), TypeError, 'step_size must be a real number'),
    (dict(step_size_down=0), ValueError, 'step_size_down'),
    (dict(step_size_down=1.5), ValueError, 'step_size_down'),
    (dict(base_lr=-0.1), ValueError, r'base_lr must lie in \[0, inf\].*-0.1'),
    (dict(max_lr=float('inf')), ValueError, 'max_lr must be finite'),
    (dict(base_lr=0.5, max_lr=0.1), ValueError, 'max_lr must be >= base_lr'),
    (dict(gamma=0.0), ValueError, r'gamma must lie in \(0, 1\]'),
    (dict(gamma=1.5), ValueError, 'gamma.*1.5'),
    (dict(mode='triangle'), ValueError, "mode must be one of.*'triangle'"),
    (dict(scale_fn=3.0), TypeError, 'scale_fn must be callable'),
    (dict(scale_fn=abs, scale_mode='epoch'), ValueError, 'scale_mode must be one of'),
    (dict(scale_mode='iterations'), ValueError, 'scale_mode.*no effect without scale_fn'),
    (dict(base_lr=True), TypeError, 'base_lr must be a real number'),
]


@pytest.mark.parametrize('overrides,error,message', BAD_CYCLIC_ARGUMENTS)
def test_cyclic_refuses_bad_arguments(overrides, error, message):
  arguments = dict(base_lr=0.1, max_lr=1.0, step_size=10)
  arguments.update(overrides)
  with pytest.raises(error, match=message):
    optax_clr.cyclic_schedule(**arguments)


@pytest.mark.parametrize(
    'overrides,message',
    [
        (dict(base_momentum=-0.1), 'base_momentum'),
        (dict(base_momentum=0.99), 'max_momentum must be >= base_momentum'),
        (dict(step_size=0), 'step_size'),
    ],
)
def test_momentum_refuses_bad_arguments(overrides, message):
  arguments = dict(base_momentum=0.85, max_momentum=0.95, step_size=10)
  arguments.update(overrides)
  with pytest.raises(ValueError, match=message):
    optax_clr.cyclic_momentum_schedule(**arguments)


def test_whole_float_step_size_is_accepted():
  schedule = optax_clr.triangular_schedule(1.0, 5.0, 4.0, step_size_down=6.0)
  np.testing.assert_allclose(values(schedule, 11), TORCH_UP4_DOWN6, rtol=1e-6)
