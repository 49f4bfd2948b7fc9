"""Tests for cosine annealing with warm restarts."""

import math

import chex
from hypothesis import given, settings, strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_clr
from tests import reference_peers as peers


def values(schedule, num_steps):
  return np.asarray(schedule(jnp.arange(num_steps)))


class TestPeers:

  @pytest.mark.parametrize(
      'first_period,period_mult,min_lr',
      [(1, 1, 0.0), (3, 1, 0.1), (10, 1, 0.0), (1, 2, 0.0), (2, 3, 0.05),
       (5, 2, 0.2), (4, 4, 0.0)],
  )
  def test_torch_recurrence(self, first_period, period_mult, min_lr):
    schedule = optax_clr.cosine_restarts_schedule(
        1.0, first_period, period_mult=period_mult, min_lr=min_lr
    )
    expected = peers.torch_warm_restarts(
        300, 1.0, first_period, period_mult, min_lr
    )
    np.testing.assert_allclose(values(schedule, 300), expected, atol=1e-6)

  @pytest.mark.parametrize('first_period,period_mult', [(1, 1), (3, 2), (7, 3)])
  def test_torch_itself(self, first_period, period_mult):
    torch = pytest.importorskip('torch')
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.5)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=first_period, T_mult=period_mult, eta_min=0.01
    )
    seen = []
    for _ in range(120):
      seen.append(optimizer.param_groups[0]['lr'])
      optimizer.step()
      scheduler.step()
    schedule = optax_clr.cosine_restarts_schedule(
        0.5, first_period, period_mult=period_mult, min_lr=0.01
    )
    np.testing.assert_allclose(values(schedule, 120), seen, atol=1e-7)

  @pytest.mark.parametrize(
      't_mul,m_mul,alpha', [(1, 1.0, 0.0), (1, 0.5, 0.1), (2, 1.0, 0.0),
                            (2, 0.8, 0.2), (4, 0.9, 0.0)],
  )
  def test_keras_algorithm(self, t_mul, m_mul, alpha):
    init, first = 0.3, 8
    schedule = optax_clr.cosine_restarts_schedule(
        init, first, period_mult=t_mul, peak_mult=m_mul, min_lr=alpha * init
    )
    steps = np.arange(500)
    expected = [
        peers.keras_cosine_decay_restarts(t, init, first, float(t_mul), m_mul,
                                          alpha)
        for t in steps
    ]
    np.testing.assert_allclose(
        schedule(jnp.asarray(steps)), expected, rtol=2e-6, atol=1e-7
    )

  def test_keras_float_log_misplaces_a_restart_ours_does_not(self):
    # Keras finds the restart with a float log; at 10**6 periods of 1 step
    # and t_mul=10 its log10 lands below the integer and the restart is late.
    count = 111111  # 1 + 10 + ... + 10**5: where period 6 starts.
    keras = peers.keras_cosine_decay_restarts(count, 1.0, 1, 10.0, 0.5)
    exact = peers.exact_restarts_lr(count, 1.0, 1, 10, 0.5)
    schedule = optax_clr.cosine_restarts_schedule(
        1.0, 1, period_mult=10, peak_mult=0.5
    )
    assert exact == 0.5**6
    assert abs(keras - exact) > 1e-3
    np.testing.assert_allclose(schedule(count), exact, rtol=1e-6)


class TestProperties:

  @pytest.mark.parametrize('period_mult', [1, 2, 3])
  def test_each_period_starts_at_its_peak_and_ends_near_the_floor(
      self, period_mult
  ):
    schedule = optax_clr.cosine_restarts_schedule(
        2.0, 5, period_mult=period_mult, peak_mult=0.5, min_lr=0.5
    )
    start, length = 0, 5
    for index in range(5):
      peak = 0.5 + 1.5 * 0.5**index
      np.testing.assert_allclose(schedule(start), peak, rtol=1e-6)
      last = schedule(start + length - 1)
      assert 0.5 <= float(last) < peak
      start, length = start + length, length * period_mult

  def test_negative_counts_read_as_zero(self):
    schedule = optax_clr.cosine_restarts_schedule(1.0, 3, period_mult=2)
    np.testing.assert_array_equal(schedule(jnp.array([-1, -100, 0])), 1.0)

  def test_zero_peak_mult_leaves_one_period(self):
    schedule = optax_clr.cosine_restarts_schedule(1.0, 4, peak_mult=0.0,
                                                  min_lr=0.1)
    lrs = values(schedule, 12)
    np.testing.assert_allclose(lrs[4:], 0.1, rtol=1e-7)
    assert lrs[0] == 1.0

  @settings(deadline=None, max_examples=60, derandomize=True)
  @given(
      first_period=st.integers(1, 40),
      period_mult=st.sampled_from([1, 2, 3]),
      counts=st.lists(st.integers(0, 10**6), min_size=1, max_size=16),
  )
  def test_matches_exact_integer_reference(self, first_period, period_mult,
                                           counts):
    padded = np.zeros(16, np.int32)
    padded[:len(counts)] = counts
    lrs = _compiled(period_mult)(jnp.int32(first_period), jnp.asarray(padded))
    expected = [
        peers.exact_restarts_lr(c, 1.0, first_period, period_mult, 0.9, 0.1)
        for c in counts
    ]
    np.testing.assert_allclose(lrs[:len(counts)], expected, atol=2e-6)


_COMPILED = {}


def _compiled(period_mult):
  """One compiled sweep per ``period_mult`` (it fixes the program)."""
  if period_mult not in _COMPILED:

    @jax.jit
    def lrs(first_period, counts):
      return optax_clr.cosine_restarts_schedule(
          1.0, first_period, period_mult=period_mult, peak_mult=0.9,
          min_lr=0.1,
      )(counts)

    _COMPILED[period_mult] = lrs
  return _COMPILED[period_mult]


class TestExactFarOut:

  def test_restart_falls_exactly_on_int32_max(self):
    schedule = optax_clr.cosine_restarts_schedule(1.0, 1, period_mult=2,
                                                  min_lr=0.25)
    top = jnp.int32(2**31 - 1)
    assert float(schedule(top)) == 1.0
    # One step earlier: the last step of a 2**30-step period.
    expected = peers.exact_restarts_lr(2**31 - 2, 1.0, 1, 2, 1.0, 0.25)
    np.testing.assert_allclose(schedule(top - 1), expected, rtol=1e-6)

  @pytest.mark.parametrize(
      'first_period,period_mult', [(3, 2), (1000, 3), (7, 1), (2**30, 2),
                                   (1, 2**20), (12345, 1)],
  )
  def test_int32_last_step(self, first_period, period_mult):
    schedule = optax_clr.cosine_restarts_schedule(
        1.0, first_period, period_mult=period_mult, peak_mult=0.99
    )
    count = 2**31 - 1
    expected = peers.exact_restarts_lr(count, 1.0, first_period, period_mult,
                                       0.99)
    np.testing.assert_allclose(schedule(jnp.int32(count)), expected,
                               rtol=2e-5, atol=1e-7)

  @pytest.mark.parametrize('count', [10**12, 10**12 + 12345, 2**40 - 1,
                                     2**62])
  @pytest.mark.parametrize('first_period,period_mult', [(1, 2), (1000, 3),
                                                        (4096, 1)])
  def test_x64_far_out(self, count, first_period, period_mult):
    with jax.enable_x64(True):
      schedule = optax_clr.cosine_restarts_schedule(
          1.0, first_period, period_mult=period_mult, min_lr=0.1
      )
      lr = schedule(jnp.asarray(count, jnp.int64))
      assert lr.dtype == jnp.float32
      expected = peers.exact_restarts_lr(count, 1.0, first_period,
                                         period_mult, 1.0, 0.1)
      np.testing.assert_allclose(lr, expected, rtol=1e-5)

  def test_x64_restart_exactly_on_int64_max(self):
    with jax.enable_x64(True):
      schedule = optax_clr.cosine_restarts_schedule(1.0, 1, period_mult=2)
      assert float(schedule(jnp.int64(2**63 - 1))) == 1.0
      assert float(schedule(jnp.int64(2**62 - 1))) == 1.0


class TestTransformations:

  def test_jit_compiles_once_for_all_counts(self):
    schedule = optax_clr.cosine_restarts_schedule(0.1, 3, period_mult=2)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def restarts_lr_at(count):
      return schedule(count)

    observed = [float(restarts_lr_at(jnp.int32(k))) for k in range(30)]
    np.testing.assert_allclose(
        observed, peers.torch_warm_restarts(30, 0.1, 3, 2), atol=1e-7
    )

  def test_vmap_over_every_float_hyperparameter_and_the_period(self):
    inits = jnp.array([1.0, 0.5, 2.0])
    periods = jnp.array([2, 3, 5])
    float_periods = periods.astype(jnp.float32)
    peaks = jnp.array([1.0, 0.7, 0.5])
    floors = jnp.array([0.0, 0.1, 0.3])
    counts = jnp.arange(60)

    def sweep(init, period, peak, floor):
      return optax_clr.cosine_restarts_schedule(
          init, period, period_mult=2, peak_mult=peak, min_lr=floor
      )(counts)

    for p in (periods, float_periods):
      lrs = jax.jit(jax.vmap(sweep))(inits, p, peaks, floors)
      for row in range(3):
        expected = [
            peers.exact_restarts_lr(int(c), float(inits[row]),
                                    int(periods[row]), 2, float(peaks[row]),
                                    float(floors[row]))
            for c in counts
        ]
        np.testing.assert_allclose(lrs[row], expected, rtol=2e-6, atol=1e-7)

  def test_vmap_over_counts_matches_broadcasting(self):
    schedule = optax_clr.cosine_restarts_schedule(0.1, 4, period_mult=3)
    counts = jnp.arange(200)
    np.testing.assert_allclose(jax.vmap(schedule)(counts), schedule(counts),
                               rtol=1e-7)

  def test_grad_with_respect_to_the_rates(self):
    count, period = 11, 4  # Period 1 (length 8), position 7.
    index, position, length = peers.exact_restart(count, period, 2)
    wave = (1 + math.cos(math.pi * position / length)) / 2

    def lr(init, floor, peak):
      return optax_clr.cosine_restarts_schedule(
          init, period, period_mult=2, peak_mult=peak, min_lr=floor
      )(count)

    d_init, d_floor, d_peak = jax.grad(lr, argnums=(0, 1, 2))(1.0, 0.1, 0.8)
    scale = 0.8**index
    np.testing.assert_allclose(d_init, scale * wave, rtol=1e-5)
    np.testing.assert_allclose(d_floor, 1 - scale * wave, rtol=1e-5)
    np.testing.assert_allclose(
        d_peak, 0.9 * index * 0.8 ** (index - 1) * wave, rtol=1e-5
    )

  def test_dtypes(self):
    schedule = optax_clr.cosine_restarts_schedule(0.1, 3, period_mult=2)
    assert schedule(5).dtype == jnp.float32
    assert schedule(jnp.arange(6).reshape(2, 3)).shape == (2, 3)
    arrays = optax_clr.cosine_restarts_schedule(
        np.float32(1.0), 3, min_lr=jnp.array([0.0, 0.5], jnp.float32)
    )
    assert arrays(5).shape == (2,) and arrays(5).dtype == jnp.float32
    with jax.enable_x64(True):
      assert schedule(jnp.int64(5)).dtype == jnp.float32
      wide = optax_clr.cosine_restarts_schedule(jnp.float64(0.1), 3)
      assert wide(jnp.int64(5)).dtype == jnp.float64

  @pytest.mark.parametrize('dtype', ['int8', 'uint8', 'int16', 'uint16',
                                     'int32', 'uint32'])
  def test_count_dtypes(self, dtype):
    schedule = optax_clr.cosine_restarts_schedule(1.0, 3, period_mult=2)
    counts = np.arange(100).astype(dtype)
    np.testing.assert_allclose(
        schedule(counts), peers.torch_warm_restarts(100, 1.0, 3, 2), atol=1e-6
    )


BAD_ARGUMENTS = [
    (dict(first_period=0), ValueError, 'first_period must be at least 1'),
    (dict(first_period=2.5), ValueError, 'first_period must be a whole'),
    (dict(period_mult=0), ValueError, r'period_mult must lie in \[1, inf\]'),
    (dict(period_mult=1.5), ValueError, 'period_mult must be a whole number'),
    (dict(period_mult='2'), TypeError, 'period_mult must be a real number'),
    (dict(min_lr=0.5, init_lr=0.1), ValueError, 'init_lr must be >= min_lr'),
    (dict(init_lr=-0.1), ValueError, 'init_lr must lie in'),
    (dict(init_lr=float('nan')), ValueError, 'init_lr must be finite'),
    (dict(min_lr=float('inf')), ValueError, 'min_lr must be finite'),
    (dict(peak_mult=-0.5), ValueError, 'peak_mult must lie in'),
]


@pytest.mark.parametrize('overrides,error,message', BAD_ARGUMENTS)
def test_refuses_bad_arguments(overrides, error, message):
  arguments = dict(init_lr=0.5, first_period=10)
  arguments.update(overrides)
  with pytest.raises(error, match=message):
    optax_clr.cosine_restarts_schedule(**arguments)


def test_traced_period_mult_is_refused():
  with pytest.raises(TypeError, match='period_mult must be a concrete whole number'):
    jax.jit(lambda m: optax_clr.cosine_restarts_schedule(
        1.0, 3, period_mult=m)(0))(2)


NEW_SCHEDULES = [
    ('restarts', lambda lr: optax_clr.cosine_restarts_schedule(
        lr, 3, period_mult=2, peak_mult=lr, min_lr=lr / 4)),
    ('wsd', lambda lr: optax_clr.wsd_schedule(
        lr, 20, 5, warmup_steps=3, init_lr=lr / 4, final_lr=lr / 8)),
    ('inverse_sqrt', lambda lr: optax_clr.inverse_sqrt_schedule(
        lr, 4, timescale=lr * 8, init_lr=lr / 4)),
]


@pytest.mark.parametrize('name,build', NEW_SCHEDULES, ids=lambda x: x
                         if isinstance(x, str) else '')
@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16, np.float32])
def test_every_float_dtype_is_a_hyperparameter(name, build, dtype):
  del name
  reference = build(0.5)
  schedule = build(jnp.asarray(0.5, dtype))  # 0.5 is exact in every dtype.
  counts = jnp.arange(30)
  assert schedule(counts).dtype == jnp.float32
  np.testing.assert_allclose(schedule(counts), reference(counts), rtol=1e-6)


@pytest.mark.parametrize('name,build', NEW_SCHEDULES, ids=lambda x: x
                         if isinstance(x, str) else '')
@pytest.mark.parametrize('dtype', ['int8', 'uint8', 'int16', 'uint32',
                                   'int64', 'float16', 'float32', 'float64'])
def test_every_count_dtype_without_a_warning(name, build, dtype):
  del name
  schedule = build(0.5)
  counts = np.arange(0, 100, 3)
  # pytest turns warnings into errors: a dtype warning fails here.
  np.testing.assert_allclose(schedule(counts.astype(dtype)), schedule(counts),
                             rtol=1e-7)
  np.testing.assert_allclose(schedule(jnp.asarray(counts.astype(dtype))),
                             schedule(counts), rtol=1e-7)
