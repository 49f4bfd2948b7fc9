"""Every schedule takes any count dtype, floors float counts, clamps at 0.

optax passes an int32 count (int64 under ``jax_enable_x64``); users pass
Python and NumPy numbers of every kind. None of them may warn, wrap or
extrapolate.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_clr

FACTORIES = {
    'cyclic': lambda: optax_clr.cyclic_schedule(0.1, 0.5, 4, step_size_down=6),
    'triangular2': lambda: optax_clr.triangular2_schedule(0.1, 0.5, 4),
    'exp_range': lambda: optax_clr.exp_range_schedule(0.1, 0.5, 4, gamma=0.9),
    'cyclic_momentum': lambda: optax_clr.cyclic_momentum_schedule(0.8, 0.9, 4),
    'one_cycle': lambda: optax_clr.one_cycle_schedule(1.0, 20),
    'one_cycle_momentum': lambda: optax_clr.one_cycle_momentum_schedule(20),
    'step_decay': lambda: optax_clr.step_decay_schedule(1.0, 3),
    'exponential_decay': lambda: optax_clr.exponential_decay_schedule(1.0, 0.5),
    'inverse_time_decay': lambda: optax_clr.inverse_time_decay_schedule(1.0, 0.5),
    'range_test': lambda: optax_clr.range_test_schedule(1e-4, 1.0, 11),
}
COUNT_TYPES = [
    int, float, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
    np.uint32, np.uint64, np.float16, np.float32, np.float64, jnp.bfloat16,
]


@pytest.fixture(params=[False, True], ids=['x32', 'x64'])
def x64(request):
  with jax.enable_x64(request.param):
    yield request.param


@pytest.mark.parametrize('name', sorted(FACTORIES))
def test_every_count_dtype_without_a_warning(name, x64):
  schedule = FACTORIES[name]()
  expected = np.asarray([schedule(k) for k in range(8)])
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    for kind in COUNT_TYPES:
      for k in range(8):
        assert schedule(kind(k)) == expected[k], (kind, k)
        jax_kind = jax.dtypes.canonicalize_dtype(kind)
        assert schedule(jnp.asarray(k, jax_kind)) == expected[k], (kind, k)
      assert np.array_equal(schedule(np.arange(8).astype(kind)), expected)


@pytest.mark.parametrize('name', sorted(FACTORIES))
def test_float_counts_are_floored(name, x64):
  # As PyTorch's integer step would be: int(3.7) is step 3.
  schedule = FACTORIES[name]()
  for count in (0.2, 3.7, 5.999):
    assert schedule(count) == schedule(int(count))
    np.testing.assert_allclose(
        jax.jit(schedule)(jnp.float32(count)), schedule(int(count)), rtol=1e-6)


@pytest.mark.parametrize('name', sorted(FACTORIES))
def test_negative_counts_clamp_at_zero(name, x64):
  schedule = FACTORIES[name]()
  start = schedule(0)
  for count in (-1, -2, -5, -0.5, -(2**31)):
    assert schedule(count) == start, count
  assert np.all(jax.jit(schedule)(-jnp.arange(50)) == start)


@pytest.mark.parametrize('name', sorted(FACTORIES))
@pytest.mark.parametrize('count', [2**31, 2**40, np.int64(2**33 + 5),
                                   np.uint32(2**32 - 1), 3e9])
def test_concrete_count_too_large_for_int32_is_refused(name, count):
  schedule = FACTORIES[name]()
  with pytest.raises(ValueError, match='count'):
    schedule(count)


def test_wide_counts_are_exact_with_x64():
  schedule = optax_clr.triangular_schedule(0.0, 1.0, 3, step_size_down=4)
  with jax.enable_x64(True):
    for count in (np.uint32(2**32 - 1), np.int64(2**33 + 5), 2**40 + 2):
      position = int(count) % 7
      expected = position / 3 if position <= 3 else (7 - position) / 4
      assert schedule(count) == np.float32(expected), count


def test_traced_uint32_count_saturates_instead_of_wrapping():
  # Without x64 the count is int32: a traced uint32 beyond 2**31 - 1 holds
  # the value at 2**31 - 1 rather than wrapping to a negative step.
  schedule = optax_clr.exponential_decay_schedule(1.0, 0.5, decay_steps=2**30)
  top = schedule(2**31 - 1)
  values = jax.jit(schedule)(jnp.asarray([2**31, 2**32 - 1], jnp.uint32))
  assert np.all(values == top)
