"""Output dtypes of every schedule, with and without ``jax_enable_x64``.

float32 for Python or float32 hyperparameters, whatever the count's dtype
and whether x64 is on: Python scalars are weak and never widen. float64 only
when a hyperparameter is an explicit float64 array and x64 is on.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_clr

# name -> a factory of the schedule from a cast applied to every float
# hyperparameter (``float``, ``np.float32`` or ``np.float64``).
FACTORIES = {
    'cosine_restarts_schedule': lambda f: optax_clr.cosine_restarts_schedule(
        f(1.0), 5, peak_mult=f(0.5), min_lr=f(0.01)),
    'cooldown_schedule': lambda f: optax_clr.cooldown_schedule(
        optax_clr.triangular_schedule(f(0.1), f(0.5), 4), 10, 5,
        final_lr=f(0.01)),
    'cyclic_momentum_schedule': lambda f: optax_clr.cyclic_momentum_schedule(
        f(0.8), f(0.9), 4),
    'cyclic_schedule': lambda f: optax_clr.cyclic_schedule(
        f(0.1), f(0.5), 4, step_size_down=6),
    'exp_range_schedule': lambda f: optax_clr.exp_range_schedule(
        f(0.1), f(0.5), 4, gamma=f(0.9)),
    'exponential_decay_schedule': lambda f: (
        optax_clr.exponential_decay_schedule(f(1.0), f(0.5), decay_steps=3)),
    'inverse_sqrt_schedule': lambda f: optax_clr.inverse_sqrt_schedule(
        f(1.0), 4, init_lr=f(0.1)),
    'inverse_time_decay_schedule': lambda f: (
        optax_clr.inverse_time_decay_schedule(f(1.0), f(0.5), decay_steps=3)),
    'one_cycle_momentum_schedule': lambda f: (
        optax_clr.one_cycle_momentum_schedule(
            20, base_momentum=f(0.85), max_momentum=f(0.95))),
    'one_cycle_schedule': lambda f: optax_clr.one_cycle_schedule(
        f(1.0), 20, div_factor=f(25.0), final_div_factor=f(1e4)),
    'range_test_schedule': lambda f: optax_clr.range_test_schedule(
        f(1e-4), f(1.0), 11),
    'step_decay_schedule': lambda f: optax_clr.step_decay_schedule(
        f(1.0), 3, factor=f(0.5)),
    'triangular2_schedule': lambda f: optax_clr.triangular2_schedule(
        f(0.1), f(0.5), 4),
    'triangular_schedule': lambda f: optax_clr.triangular_schedule(
        f(0.1), f(0.5), 4),
    'wsd_schedule': lambda f: optax_clr.wsd_schedule(
        f(1.0), 20, 5, warmup_steps=3, final_lr=f(0.01)),
    'wsd_restarts_schedule': lambda f: optax_clr.wsd_restarts_schedule(
        f(1.0), [6, 5], [2, 2], warmup_steps=2, rewarmup_steps=2,
        final_lr=f(0.1)),
}
COUNTS = [np.int64(7), np.arange(24).reshape(4, 6)]

def test_every_public_schedule_is_covered():
  public = {name for name in optax_clr.__all__ if name.endswith('_schedule')}
  assert public <= set(FACTORIES), sorted(public - set(FACTORIES))


def _factory(name):
  if not hasattr(optax_clr, name):
    pytest.skip(f'optax_clr.{name} does not exist here')
  return FACTORIES[name]


@pytest.mark.parametrize('x64', [False, True], ids=['x32', 'x64'])
@pytest.mark.parametrize('name', sorted(FACTORIES))
def test_float32_unless_a_float64_hyperparameter_under_x64(name, x64):
  factory = _factory(name)
  with jax.enable_x64(x64):
    for cast in (float, np.float32):
      schedule = factory(cast)
      for count in COUNTS:
        value = schedule(count)
        assert value.dtype == jnp.float32, (cast, count, value.dtype)
        assert value.shape == np.shape(count)
    assert jax.jit(schedule)(jnp.arange(8)).dtype == jnp.float32
    wide = factory(np.float64)
    expected = jnp.float64 if x64 else jnp.float32
    for count in COUNTS:
      assert wide(count).dtype == expected, (count, wide(count).dtype)
    assert jax.jit(wide)(jnp.arange(8)).dtype == expected
    # The same values, to float32 precision.
    np.testing.assert_allclose(wide(COUNTS[1]), schedule(COUNTS[1]),
                               rtol=1e-5, atol=1e-12)
