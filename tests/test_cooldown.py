"""Tests for the cooldown of any schedule from any step."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_clr
from tests import reference

SHAPES = ('linear', 'cosine', '1-sqrt')


def numpy_cosine(init, decay_steps):
  """optax.cosine_decay_schedule's formula, in float64."""
  return lambda t: init * (1 + math.cos(math.pi * min(t, decay_steps)
                                        / decay_steps)) / 2


def numpy_clr(base_lr, max_lr, step_size):
  return lambda t: float(reference.smith_clr(t, base_lr, max_lr, step_size))


class TestAgainstNumPy:

  @pytest.mark.parametrize('shape', SHAPES)
  @pytest.mark.parametrize('final_lr', [0.0, 0.01])
  def test_cosine_base(self, shape, final_lr):
    base = optax.cosine_decay_schedule(0.5, decay_steps=80)
    schedule = optax_clr.cooldown_schedule(base, 30, 17, shape=shape,
                                           final_lr=final_lr)
    steps = range(-2, 70)
    expected = [reference.cooldown_lr(t, numpy_cosine(0.5, 80), 30, 17, shape,
                                      final_lr) for t in steps]
    np.testing.assert_allclose(schedule(jnp.asarray(list(steps))), expected,
                               rtol=2e-6, atol=1e-8)

  @pytest.mark.parametrize('shape', SHAPES)
  @pytest.mark.parametrize('start', [0, 7, 10, 13, 20])
  def test_clr_base_from_any_point_of_the_cycle(self, shape, start):
    base = optax_clr.triangular_schedule(0.1, 0.6, step_size=5)
    schedule = optax_clr.cooldown_schedule(base, start, 9, shape=shape,
                                           final_lr=0.02)
    expected = [reference.cooldown_lr(t, numpy_clr(0.1, 0.6, 5), start, 9,
                                      shape, 0.02) for t in range(40)]
    np.testing.assert_allclose(schedule(jnp.arange(40)), expected, rtol=2e-6,
                               atol=1e-8)

  def test_zero_decay_steps_drops_at_start(self):
    base = optax.constant_schedule(1.0)
    schedule = optax_clr.cooldown_schedule(base, 5, 0, final_lr=0.1)
    np.testing.assert_allclose(schedule(jnp.arange(8)),
                               [1.0] * 5 + [0.1] * 3, rtol=1e-7)


class TestEqualsWsd:

  @pytest.mark.parametrize('shape', SHAPES)
  @pytest.mark.parametrize('start,decay', [(0, 10), (12, 8), (20, 0), (3, 1)])
  def test_constant_base(self, shape, start, decay):
    schedule = optax_clr.cooldown_schedule(
        optax.constant_schedule(0.3), start, decay, shape=shape,
        final_lr=0.03)
    wsd = optax_clr.wsd_schedule(0.3, start + decay, decay, final_lr=0.03,
                                 decay_shape=shape)
    counts = jnp.arange(start + decay + 5)
    np.testing.assert_allclose(schedule(counts), wsd(counts), rtol=1e-6,
                               atol=1e-9)


class TestTraced:

  def test_vmap_over_start_and_length(self):
    base = optax_clr.triangular_schedule(0.1, 0.6, step_size=5)
    starts = jnp.array([0, 4, 11, 25])
    decays = jnp.array([5, 0, 9, 30])
    counts = jnp.arange(-1, 60)

    def curve(start, decay):
      return optax_clr.cooldown_schedule(base, start, decay, shape='cosine',
                                         final_lr=0.01)(counts)

    for dtype in (jnp.int32, jnp.float32):
      curves = jax.jit(jax.vmap(curve))(starts.astype(dtype),
                                        decays.astype(dtype))
      for row, (s, d) in enumerate(zip(starts.tolist(), decays.tolist())):
        expected = [reference.cooldown_lr(int(c), numpy_clr(0.1, 0.6, 5), s,
                                          d, 'cosine', 0.01) for c in counts]
        np.testing.assert_allclose(curves[row], expected, rtol=2e-6,
                                   atol=1e-8)

  def test_start_decided_at_resume_time_compiles_once(self):
    base = optax.cosine_decay_schedule(1.0, 100)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def lr_at(count, start):
      return optax_clr.cooldown_schedule(base, start, 10)(count)

    for start in (20, 40, 60):
      observed = [float(lr_at(jnp.int32(k), jnp.int32(start)))
                  for k in range(start - 2, start + 12, 3)]
      expected = [reference.cooldown_lr(k, numpy_cosine(1.0, 100), start, 10)
                  for k in range(start - 2, start + 12, 3)]
      np.testing.assert_allclose(observed, expected, rtol=2e-6, atol=1e-8)

  def test_grad_through_the_base_and_final_lr(self):
    def lr(peak, final, count):
      base = optax.constant_schedule(peak)
      return optax_clr.cooldown_schedule(base, 10, 10, shape='linear',
                                         final_lr=final)(count)

    for count, expected in ((5, (1.0, 0.0)), (14, (0.6, 0.4)),
                            (25, (0.0, 1.0))):
      grads = jax.grad(lr, argnums=(0, 1))(1.0, 0.1, count)
      np.testing.assert_allclose(grads, expected, rtol=1e-6, atol=1e-7)

  def test_float32_output(self):
    schedule = optax_clr.cooldown_schedule(optax.constant_schedule(0.1), 3, 4)
    assert schedule(5).dtype == jnp.float32
    assert schedule(jnp.arange(6).reshape(2, 3)).shape == (2, 3)
    with jax.enable_x64(True):
      assert schedule(jnp.int64(5)).dtype == jnp.float32


class TestExactFarOut:

  def test_int32_last_steps(self):
    top = 2**31 - 1
    start, decay = top - 2**20, 2**20 - 5
    base = optax_clr.triangular_schedule(0.1, 0.6, step_size=2**29)
    schedule = optax_clr.cooldown_schedule(base, start, decay, shape='linear',
                                           final_lr=0.001)
    exact = lambda t: reference.exact_triangle(t, 2**29)[1] * 0.5 + 0.1
    for count in (start - 1, start, start + 12345, top - 6, top - 5, top):
      expected = reference.cooldown_lr(count, exact, start, decay, 'linear',
                                       0.001)
      np.testing.assert_allclose(schedule(jnp.int32(count)), expected,
                                 rtol=1e-6)
    # start + decay = 2**31 - 6 fits; a start at the top with any decay too.
    late = optax_clr.cooldown_schedule(base, top, 2**30)
    np.testing.assert_allclose(late(jnp.int32(top)), exact(top), rtol=1e-6)

  def test_x64_ten_to_the_twelve(self):
    with jax.enable_x64(True):
      start, decay = 10**12, 10**11 + 3
      base = optax.constant_schedule(1.0)
      schedule = optax_clr.cooldown_schedule(base, start, decay)
      for count in (start - 1, start, start + 1, start + 12345, start + decay):
        lr = schedule(jnp.asarray(count, jnp.int64))
        assert lr.dtype == jnp.float32
        expected = reference.cooldown_lr(count, lambda t: 1.0, start, decay)
        np.testing.assert_allclose(lr, expected, rtol=1e-6, atol=1e-9)


BAD_ARGUMENTS = [
    (dict(start_step=-1), ValueError, 'start_step must be at least 0'),
    (dict(start_step=2.5), ValueError, 'start_step must be a whole number'),
    (dict(decay_steps=-3), ValueError, 'decay_steps must be at least 0'),
    (dict(shape='exp'), ValueError, "shape must be one of.*'exp'"),
    (dict(final_lr=-0.1), ValueError, 'final_lr must lie in'),
    (dict(final_lr=float('inf')), ValueError, 'final_lr must be finite'),
    (dict(schedule=0.1), TypeError, 'schedule must be callable, got 0.1'),
    (dict(start_step='10'), TypeError, 'start_step must be a real number'),
]


@pytest.mark.parametrize('overrides,error,message', BAD_ARGUMENTS)
def test_refuses_bad_arguments(overrides, error, message):
  arguments = dict(schedule=optax.constant_schedule(0.1), start_step=10,
                   decay_steps=5)
  arguments.update(overrides)
  with pytest.raises(error, match=message):
    optax_clr.cooldown_schedule(**arguments)


class TestNanSteps:
  """A concrete NaN step count is refused; a traced one gives NaN rates."""

  @pytest.mark.parametrize('name', ['start_step', 'decay_steps'])
  @pytest.mark.parametrize('nan', [float('nan'), np.float32('nan'),
                                   jnp.float32(jnp.nan)],
                           ids=['python', 'numpy', 'jax'])
  def test_concrete_nan_raises_naming_the_argument(self, name, nan):
    arguments = dict(start_step=10, decay_steps=5)
    arguments[name] = nan
    with pytest.raises(ValueError, match=f'{name} must be finite, got .*nan'):
      optax_clr.cooldown_schedule(optax.constant_schedule(0.1), **arguments)

  def test_traced_nan_start_step_under_jit(self):
    base = optax_clr.triangular_schedule(0.1, 0.6, step_size=5)
    counts = jnp.arange(0, 30)

    @jax.jit
    def curve(start):
      return optax_clr.cooldown_schedule(base, start, 6, shape='linear')(
          counts)

    nan_curve = curve(jnp.float32(jnp.nan))
    assert nan_curve.dtype == jnp.float32
    # Not a cooldown from step 0 (whose first value is base(0) = 0.1).
    np.testing.assert_array_equal(nan_curve, np.full(30, np.nan))
    # The same compiled function still serves a real start.
    expected = [reference.cooldown_lr(t, numpy_clr(0.1, 0.6, 5), 12, 6,
                                      'linear') for t in range(30)]
    np.testing.assert_allclose(curve(jnp.float32(12.0)), expected, rtol=2e-6,
                               atol=1e-8)

  def test_traced_nan_under_vmap_spoils_only_its_row(self):
    base = optax.cosine_decay_schedule(0.5, decay_steps=80)
    starts = jnp.array([5.0, jnp.nan, 20.0, 9.0])
    decays = jnp.array([10.0, 10.0, jnp.nan, 0.0])
    counts = jnp.arange(40)

    def curve(start, decay):
      return optax_clr.cooldown_schedule(base, start, decay,
                                         final_lr=0.01)(counts)

    curves = np.asarray(jax.vmap(curve)(starts, decays))
    assert curves.dtype == np.float32
    np.testing.assert_array_equal(curves[1], np.full(40, np.nan))
    np.testing.assert_array_equal(curves[2], np.full(40, np.nan))
    for row, (start, decay) in ((0, (5, 10)), (3, (9, 0))):
      expected = [reference.cooldown_lr(t, numpy_cosine(0.5, 80), start,
                                        decay, final=0.01) for t in range(40)]
      np.testing.assert_allclose(curves[row], expected, rtol=2e-6,
                                 atol=1e-8)

  def test_traced_nan_final_lr_from_the_start_step_on(self):
    base = optax.constant_schedule(0.3)
    lr = jax.jit(lambda final: optax_clr.cooldown_schedule(
        base, 4, 3, final_lr=final)(jnp.arange(9)))
    np.testing.assert_array_equal(lr(jnp.float32(jnp.nan)),
                                  np.array([0.3] * 4 + [np.nan] * 5,
                                           np.float32))
