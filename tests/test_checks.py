"""Hyperparameter checks: every float dtype in, nothing that overflows out."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_clr

FLOAT_DTYPES = [jnp.bfloat16, np.float16, np.float32, np.float64]


@pytest.mark.parametrize('dtype', FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    'wrap',
    [np.asarray,
     lambda v, d: jnp.asarray(v, jax.dtypes.canonicalize_dtype(d))],
    ids=['numpy', 'jax'],
)
def test_every_float_dtype_is_a_hyperparameter(dtype, wrap):
  base, peak = (float(np.asarray(v, dtype)) for v in (0.1, 0.5))
  schedule = optax_clr.triangular_schedule(
      wrap(0.1, dtype), wrap(0.5, dtype), wrap(4.0, dtype))
  value = schedule(2)
  assert value.dtype == jnp.float32
  np.testing.assert_allclose(value, base + (peak - base) * 0.5, rtol=1e-6)
  rate = float(np.asarray(0.5, dtype))
  decay = optax_clr.exponential_decay_schedule(wrap(1.0, dtype), wrap(0.5, dtype))
  np.testing.assert_allclose(decay(3), rate**3, rtol=1e-6)
  cycle = optax_clr.one_cycle_schedule(wrap(1.0, dtype), 100,
                                       div_factor=wrap(25.0, dtype))
  np.testing.assert_allclose(cycle(0), 1.0 / 25.0, rtol=1e-6)


@pytest.mark.parametrize(
    'build,name',
    [
        (lambda: optax_clr.triangular_schedule(0.0, 1e39, 10), 'max_lr'),
        (lambda: optax_clr.triangular_schedule(0.0, np.float64(-1e39), 10), 'max_lr'),
        (lambda: optax_clr.inverse_time_decay_schedule(1.0, 1e39), 'decay_rate'),
        (lambda: optax_clr.exponential_decay_schedule(10**40, 0.5), 'init_lr'),
        (lambda: optax_clr.one_cycle_schedule(1e39, 100), 'max_lr'),
        (lambda: optax_clr.cyclic_momentum_schedule(0.0, 2**200, 10), 'max_momentum'),
        (lambda: optax_clr.range_test_schedule(1e-3, 1e40, 10), 'end_lr'),
    ],
)
def test_values_that_overflow_float32_are_refused_by_name(build, name):
  with pytest.raises(ValueError, match=f'{name}.*does not fit in float32'):
    build()


def test_float64_values_fit_with_x64():
  with jax.enable_x64(True):
    schedule = optax_clr.triangular_schedule(0.0, jnp.float64(1e39), 10)
    assert schedule(10) == 1e39


@pytest.mark.parametrize(
    'build,name',
    [
        (lambda: optax_clr.triangular_schedule(0.1, 0.2, 2**31), 'step_size'),
        (lambda: optax_clr.triangular_schedule(0.1, 0.2, 5, step_size_down=2**31), 'step_size_down'),
        (lambda: optax_clr.triangular_schedule(0.1, 0.2, 2**64), 'step_size'),
        (lambda: optax_clr.triangular_schedule(0.1, 0.2, 3e9), 'step_size'),
        (lambda: optax_clr.triangular_schedule(0.1, 0.2, np.int64(2**32 + 4)), 'step_size'),
        (lambda: optax_clr.triangular_schedule(0.1, 0.2, np.uint32(3_000_000_000)), 'step_size'),
        (lambda: optax_clr.step_decay_schedule(0.1, 2**31), 'drop_every'),
        (lambda: optax_clr.exponential_decay_schedule(0.1, 0.5, decay_steps=2**40), 'decay_steps'),
        (lambda: optax_clr.one_cycle_schedule(0.1, 2**31), 'total_steps'),
        (lambda: optax_clr.range_test_schedule(1e-3, 1.0, np.uint64(2**33)), 'num_steps'),
    ],
)
def test_step_counts_beyond_int32_are_refused_by_name(build, name):
  with pytest.raises(ValueError, match=f'{name}=.*larger than 2147483647'):
    build()


def test_step_counts_beyond_int32_work_with_x64():
  with jax.enable_x64(True):
    schedule = optax_clr.triangular_schedule(0.0, 1.0, 2**31, step_size_down=2**33)
    assert schedule(2**31) == 1.0
    assert schedule(2**31 + 2**32) == 0.5


@pytest.mark.parametrize(
    'value,error',
    [(True, TypeError), (1 + 2j, TypeError), ('0.1', TypeError), (None, TypeError),
     (np.asarray([0.1, np.nan]), ValueError), (np.asarray([0.1, 'x']), TypeError),
     (10**400, ValueError)],
    ids=repr,
)
def test_bad_values_are_named(value, error):
  with pytest.raises(error, match='base_lr'):
    optax_clr.triangular_schedule(value, 1.0, 10)


@pytest.mark.parametrize('value', [1e-39, 1e-45, -1e-40, np.float64(1e-300),
                                   np.asarray([0.1, 1e-40])], ids=repr)
def test_subnormal_float32_values_are_refused(value):
  # XLA flushes them to zero: a rate of 1e-45 would silently act as 0.
  with pytest.raises(ValueError, match='base_lr=.*smallest normal float32'):
    optax_clr.triangular_schedule(value, 1.0, 10)
  assert optax_clr.triangular_schedule(0.0, 1.0, 10)(5) == 0.5
