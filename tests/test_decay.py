"""Tests for the step, exponential and inverse-time decays."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_clr


def values(schedule, steps):
  return np.asarray(schedule(jnp.asarray(steps)))


class TestStepDecay:

  def test_seed_halves_every_n_epochs(self):
    steps_per_epoch, n = 7, 3
    schedule = optax_clr.step_decay_schedule(0.1, drop_every=n * steps_per_epoch)
    steps = np.arange(200)
    epochs = steps // steps_per_epoch
    expected = 0.1 * 0.5 ** (epochs // n)
    np.testing.assert_allclose(values(schedule, steps), expected, rtol=1e-6)

  def test_matches_torch_steplr_formula(self):
    # torch.optim.lr_scheduler.StepLR: lr0 * gamma ** (t // step_size).
    schedule = optax_clr.step_decay_schedule(0.05, 30, factor=0.1)
    steps = np.arange(0, 120)
    np.testing.assert_allclose(
        values(schedule, steps), 0.05 * 0.1 ** (steps // 30), rtol=1e-5
    )

  def test_exact_at_int32_limit(self):
    schedule = optax_clr.step_decay_schedule(1.0, 2**30, factor=0.5)
    np.testing.assert_allclose(
        schedule(jnp.int32(2**31 - 1)), 0.5, rtol=1e-7
    )
    np.testing.assert_allclose(schedule(jnp.int32(2**30 - 1)), 1.0, rtol=1e-7)

  def test_vmap_over_factor(self):
    factors = jnp.array([0.5, 0.9, 1.0])
    lrs = jax.vmap(
        lambda f: optax_clr.step_decay_schedule(1.0, 4, factor=f)(jnp.arange(20))
    )(factors)
    for row, f in enumerate([0.5, 0.9, 1.0]):
      np.testing.assert_allclose(lrs[row], f ** (np.arange(20) // 4), rtol=1e-5)


class TestExponentialDecay:

  def test_seed_multiplies_by_rate_per_epoch(self):
    schedule = optax_clr.exponential_decay_schedule(
        0.1, 0.95, decay_steps=10, staircase=True
    )
    steps = np.arange(300)
    np.testing.assert_allclose(
        values(schedule, steps), 0.1 * 0.95 ** (steps // 10), rtol=1e-5
    )

  @pytest.mark.parametrize('staircase', [False, True])
  @pytest.mark.parametrize('rate,period', [(0.5, 3), (0.96, 100), (1.5, 7)])
  def test_equals_optax_exponential_decay(self, staircase, rate, period):
    ours = optax_clr.exponential_decay_schedule(
        0.2, rate, decay_steps=period, staircase=staircase
    )
    theirs = optax.exponential_decay(0.2, period, rate, staircase=staircase)
    steps = jnp.arange(0, 10 * period)
    np.testing.assert_allclose(ours(steps), theirs(steps), rtol=2e-5)

  def test_continuous_against_numpy(self):
    schedule = optax_clr.exponential_decay_schedule(1.0, 0.5, decay_steps=4)
    steps = np.arange(50)
    np.testing.assert_allclose(
        values(schedule, steps), 0.5 ** (steps / 4), rtol=1e-6
    )

  def test_vmap_over_rate_where_optax_cannot(self):
    rates = jnp.array([0.5, 0.9, 0.99])
    lrs = jax.vmap(
        lambda r: optax_clr.exponential_decay_schedule(1.0, r, decay_steps=5)(
            jnp.arange(30)
        )
    )(rates)
    for row, r in enumerate([0.5, 0.9, 0.99]):
      np.testing.assert_allclose(lrs[row], r ** (np.arange(30) / 5), rtol=1e-5)
    with pytest.raises(jax.errors.TracerBoolConversionError):
      jax.vmap(lambda r: optax.exponential_decay(1.0, 5, r)(3))(rates)

  def test_accurate_for_rates_near_one_at_large_counts(self):
    rate, count = 0.99999, 10**6 + 3
    schedule = optax_clr.exponential_decay_schedule(1.0, rate)
    np.testing.assert_allclose(schedule(count), rate**count, rtol=1e-5)

  def test_grad_with_respect_to_rate(self):
    grad = jax.grad(
        lambda r: optax_clr.exponential_decay_schedule(2.0, r, decay_steps=2)(6)
    )(0.9)
    np.testing.assert_allclose(grad, 2.0 * 3 * 0.9**2, rtol=1e-5)


class TestInverseTimeDecay:

  @pytest.mark.parametrize('staircase', [False, True])
  def test_keras_inverse_time_decay_formula(self, staircase):
    # Keras InverseTimeDecay: lr0 / (1 + rate * t / steps), floored if
    # staircase.
    schedule = optax_clr.inverse_time_decay_schedule(
        0.1, 0.5, decay_steps=10, staircase=staircase
    )
    steps = np.arange(200)
    periods = np.floor(steps / 10) if staircase else steps / 10
    np.testing.assert_allclose(
        values(schedule, steps), 0.1 / (1 + 0.5 * periods), rtol=1e-6
    )

  def test_zero_rate_is_constant(self):
    schedule = optax_clr.inverse_time_decay_schedule(0.3, 0.0)
    np.testing.assert_allclose(values(schedule, np.arange(10)), 0.3, rtol=1e-7)

  def test_vmap_and_grad_over_rate(self):
    rates = jnp.array([0.0, 0.1, 1.0])
    lrs = jax.vmap(
        lambda r: optax_clr.inverse_time_decay_schedule(1.0, r)(jnp.arange(5))
    )(rates)
    for row, r in enumerate([0.0, 0.1, 1.0]):
      np.testing.assert_allclose(lrs[row], 1 / (1 + r * np.arange(5)), rtol=1e-6)
    grad = jax.grad(lambda r: optax_clr.inverse_time_decay_schedule(1.0, r)(4))(0.5)
    np.testing.assert_allclose(grad, -4 / (1 + 0.5 * 4) ** 2, rtol=1e-6)

  def test_exact_periods_at_int32_limit(self):
    schedule = optax_clr.inverse_time_decay_schedule(
        1.0, 1.0, decay_steps=3, staircase=True
    )
    periods = (2**31 - 1) // 3
    np.testing.assert_allclose(
        schedule(jnp.int32(2**31 - 1)), 1 / (1 + periods), rtol=1e-6
    )


class TestNoInfOrNaN:

  def test_growing_exponential_saturates_at_the_largest_float32(self):
    largest = np.finfo(np.float32).max
    schedule = optax_clr.exponential_decay_schedule(2.0, 10.0)
    values = np.asarray(schedule(jnp.arange(60)))
    expected = np.minimum(2.0 * 10.0 ** np.arange(60.0), largest)
    np.testing.assert_allclose(values, expected, rtol=1e-5)
    assert optax_clr.exponential_decay_schedule(0.0, 10.0)(100) == 0.0
    grad = jax.grad(lambda r: optax_clr.exponential_decay_schedule(2.0, r)(100))(10.0)
    assert np.isfinite(grad)

  def test_huge_inverse_time_rate_is_finite(self):
    schedule = optax_clr.inverse_time_decay_schedule(1.0, 3e38)
    assert schedule(0) == 1.0
    assert np.all(np.isfinite(schedule(jnp.arange(0, 10**9, 10**8))))


@pytest.mark.parametrize('decay', ['exponential', 'inverse_time'])
def test_grad_through_join_of_warmup_and_decay(decay):
  # optax.join_schedules evaluates the decay at count - boundary, negative
  # during warmup; clamped at 0, the unused branch stays finite and so does
  # the gradient.
  warmup_steps = 4

  def lr(count, init_lr, rate):
    if decay == 'exponential':
      after = optax_clr.exponential_decay_schedule(init_lr, rate)
    else:
      after = optax_clr.inverse_time_decay_schedule(init_lr, rate)
    warmup = optax.linear_schedule(0.0, init_lr, warmup_steps)
    return optax.join_schedules([warmup, after], [warmup_steps])(count)

  grad = jax.jit(jax.grad(lr, argnums=(1, 2)))
  init_lr, rate = 0.1, 0.5
  for count in range(12):
    d_init, d_rate = (float(g) for g in grad(count, init_lr, rate))
    t = count - warmup_steps
    if t < 0:
      expected = (count / warmup_steps, 0.0)
    elif decay == 'exponential':
      expected = (rate**t, init_lr * t * rate ** (t - 1))
    else:
      expected = (1 / (1 + rate * t), -init_lr * t / (1 + rate * t) ** 2)
    np.testing.assert_allclose((d_init, d_rate), expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(
    'factory', [
        lambda: optax_clr.step_decay_schedule(0.1, 5),
        lambda: optax_clr.exponential_decay_schedule(0.1, 0.9),
        lambda: optax_clr.inverse_time_decay_schedule(0.1, 0.9),
    ],
)
def test_jit_once_float32_and_shapes(factory):
  chex.clear_trace_counter()
  schedule = factory()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def at(count):
    return schedule(count)

  for count in range(12):
    assert at(jnp.int32(count)).dtype == jnp.float32
  assert schedule(jnp.zeros((2, 5), jnp.int32)).shape == (2, 5)


@pytest.mark.parametrize(
    'build,error,message',
    [
        (lambda: optax_clr.step_decay_schedule(0.1, 0), ValueError, 'drop_every must be at least 1'),
        (lambda: optax_clr.step_decay_schedule(0.1, 2.5), ValueError, 'drop_every must be a whole number'),
        (lambda: optax_clr.step_decay_schedule(0.1, 5, factor=0.0), ValueError, r'factor must lie in \(0, 1\]'),
        (lambda: optax_clr.step_decay_schedule(0.1, 5, factor=1.5), ValueError, 'factor.*1.5'),
        (lambda: optax_clr.step_decay_schedule(-0.1, 5), ValueError, 'init_lr'),
        (lambda: optax_clr.exponential_decay_schedule(0.1, -0.5), ValueError, 'decay_rate.*-0.5'),
        (lambda: optax_clr.exponential_decay_schedule(0.1, 0.0), ValueError, 'decay_rate'),
        (lambda: optax_clr.exponential_decay_schedule(0.1, 0.9, decay_steps=0), ValueError, 'decay_steps'),
        (lambda: optax_clr.exponential_decay_schedule(0.1, 0.9, staircase=1), TypeError, 'staircase must be a bool'),
        (lambda: optax_clr.inverse_time_decay_schedule(0.1, -1.0), ValueError, r'decay_rate must lie in \[0, inf\]'),
        (lambda: optax_clr.inverse_time_decay_schedule(0.1, float('inf')), ValueError, 'decay_rate must be finite'),
        (lambda: optax_clr.inverse_time_decay_schedule(None, 0.5), TypeError, 'init_lr must be a real number'),
    ],
)
def test_decays_refuse_bad_arguments(build, error, message):
  with pytest.raises(error, match=message):
    build()
