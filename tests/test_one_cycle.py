"""Tests for the one-cycle learning-rate and momentum schedules."""

import math

from hypothesis import assume, given, settings, strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_clr
from tests import reference


def cos_anneal(start, end, pct):
  return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


# PyTorch's published OneCycleLR targets (max_lr=25, total_steps=10).
TORCH_LINEAR = [1, 13, 25, 21.5, 18, 14.5, 11, 7.5, 4, 0.5]
TORCH_LINEAR_MOMENTUM = [22, 11.5, 1, 4, 7, 10, 13, 16, 19, 22]
TORCH_THREE_PHASE = [1, 9, 17, 25, 17, 9, 1, 0.75, 0.5, 0.25]
TORCH_THREE_PHASE_MOMENTUM = [22, 15, 8, 1, 8, 15, 22, 22, 22, 22]
TORCH_COS = [1, 13, 25] + [cos_anneal(25, 0.5, k / 7) for k in range(1, 7)] + [0.5]
TORCH_COS_MOMENTUM = [22, 11.5, 1] + [cos_anneal(1, 22, k / 7) for k in range(1, 7)] + [22]


# Every hypothesis example evaluates this many steps: one compilation.
HYPOTHESIS_STEPS = 416


def values(schedule, num_steps):
  return np.asarray(schedule(jnp.arange(num_steps)))


class TestPublishedPyTorchValues:

  def test_linear(self):
    lr = optax_clr.one_cycle_schedule(
        25.0, 10, final_div_factor=2.0, anneal_strategy='linear'
    )
    momentum = optax_clr.one_cycle_momentum_schedule(
        10, base_momentum=1.0, max_momentum=22.0, anneal_strategy='linear'
    )
    np.testing.assert_allclose(values(lr, 10), TORCH_LINEAR, rtol=1e-5)
    np.testing.assert_allclose(
        values(momentum, 10), TORCH_LINEAR_MOMENTUM, rtol=1e-5
    )

  def test_three_phase(self):
    lr = optax_clr.one_cycle_schedule(
        25.0, 10, pct_start=0.4, anneal_strategy='linear', div_factor=25.0,
        final_div_factor=4.0, three_phase=True,
    )
    momentum = optax_clr.one_cycle_momentum_schedule(
        10, base_momentum=1.0, max_momentum=22.0, pct_start=0.4,
        anneal_strategy='linear', three_phase=True,
    )
    np.testing.assert_allclose(values(lr, 10), TORCH_THREE_PHASE, rtol=1e-5)
    np.testing.assert_allclose(
        values(momentum, 10), TORCH_THREE_PHASE_MOMENTUM, rtol=1e-5
    )

  def test_cosine(self):
    lr = optax_clr.one_cycle_schedule(25.0, 10, final_div_factor=2.0)
    momentum = optax_clr.one_cycle_momentum_schedule(
        10, base_momentum=1.0, max_momentum=22.0
    )
    np.testing.assert_allclose(values(lr, 10), TORCH_COS, rtol=1e-5)
    np.testing.assert_allclose(values(momentum, 10), TORCH_COS_MOMENTUM, rtol=1e-5)


class TestAgainstTorchAlgorithm:

  @settings(max_examples=40)
  @given(
      total_steps=st.integers(8, 400),
      pct_start=st.floats(0.05, 0.45),
      strategy=st.sampled_from(['cos', 'linear']),
      three_phase=st.booleans(),
  )
  def test_every_step(self, total_steps, pct_start, strategy, three_phase):
    # A warm-up of at most 1.5 steps is refused (tested below); just above
    # that threshold is the interesting edge, so hypothesis must not skip it.
    assume(pct_start * total_steps > 1.5)
    max_lr, div, final_div = 0.4, 25.0, 1e4
    initial = max_lr / div
    lr = optax_clr.one_cycle_schedule(
        max_lr, total_steps, pct_start=pct_start, anneal_strategy=strategy,
        three_phase=three_phase,
    )
    momentum = optax_clr.one_cycle_momentum_schedule(
        total_steps, pct_start=pct_start, anneal_strategy=strategy,
        three_phase=three_phase,
    )
    steps = range(total_steps)
    expected_lr = [
        reference.torch_one_cycle(
            t, total_steps, (initial, max_lr, initial / final_div), pct_start,
            strategy, three_phase,
        )
        for t in steps
    ]
    expected_momentum = [
        reference.torch_one_cycle(
            t, total_steps, (0.95, 0.85, 0.95), pct_start, strategy,
            three_phase,
        )
        for t in steps
    ]
    # One length for every example (compiled once), past the end of the
    # longest cycle: after step T - 1 both schedules hold their last value.
    got_lr = values(lr, HYPOTHESIS_STEPS)
    got_momentum = values(momentum, HYPOTHESIS_STEPS)
    np.testing.assert_allclose(
        got_lr[:total_steps], expected_lr, rtol=2e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        got_momentum[:total_steps], expected_momentum, rtol=1e-5
    )
    np.testing.assert_array_equal(got_lr[total_steps:], got_lr[total_steps - 1])
    np.testing.assert_array_equal(
        got_momentum[total_steps:], got_momentum[total_steps - 1]
    )

  @pytest.mark.parametrize('total_steps,pct_start', [
      (4, 0.376), (10, 0.151), (3, 0.501), (400, 0.0038),
  ])
  def test_just_above_the_refusal_threshold(self, total_steps, pct_start):
    # pct_start * total_steps barely above 1.5: a first phase of ~0.5 step.
    lr = optax_clr.one_cycle_schedule(
        0.4, total_steps, pct_start=pct_start, anneal_strategy='linear')
    expected = [
        reference.torch_one_cycle(t, total_steps, (0.016, 0.4, 1.6e-6),
                                  pct_start, 'linear')
        for t in range(total_steps)
    ]
    np.testing.assert_allclose(values(lr, total_steps), expected, rtol=2e-5,
                               atol=1e-7)


class TestBetterThanPyTorch:

  @pytest.mark.parametrize('strategy', ['cos', 'linear'])
  def test_holds_final_value_and_never_goes_negative(self, strategy):
    lr = optax_clr.one_cycle_schedule(
        1.0, 100, anneal_strategy=strategy, final_div_factor=1e4
    )
    after = np.asarray(lr(jnp.array([99, 100, 101, 1000, 2**31 - 1])))
    np.testing.assert_allclose(after, 1.0 / 25 / 1e4, rtol=1e-5)
    # PyTorch's linear formula one step past the end: negative.
    torch_next = reference.torch_one_cycle(
        101, 100, (0.04, 1.0, 4e-6), 0.3, 'linear'
    )
    assert torch_next < 0

  @pytest.mark.parametrize('three_phase', [False, True])
  @pytest.mark.parametrize('strategy', ['cos', 'linear'])
  def test_momentum_holds_its_final_value(self, strategy, three_phase):
    momentum = optax_clr.one_cycle_momentum_schedule(
        100, base_momentum=0.8, max_momentum=0.9, anneal_strategy=strategy,
        three_phase=three_phase)
    # At T - 1 the cycle is back at max_momentum; PyTorch would go on
    # annealing past it (above max_momentum, linearly).
    after = np.asarray(momentum(jnp.array([99, 100, 101, 1000, 2**31 - 1])))
    np.testing.assert_allclose(after, 0.9, rtol=1e-6)
    assert np.all(after == after[0])
    torch_next = reference.torch_one_cycle(
        150, 100, (0.9, 0.8, 0.9), 0.3, 'linear')
    assert torch_next > 0.9

  def test_peak_and_start(self):
    lr = optax_clr.one_cycle_schedule(0.8, 1000, pct_start=0.25, div_factor=8.0)
    assert float(lr(0)) == pytest.approx(0.1, rel=1e-6)
    assert float(lr(249)) == pytest.approx(0.8, rel=1e-6)
    assert float(jnp.max(lr(jnp.arange(1000)))) == pytest.approx(0.8, rel=1e-6)

  @pytest.mark.parametrize(
      'total_steps,pct_start,three_phase',
      [(10, 0.1, False), (4, 0.25, False), (10, 0.1, True), (10, 0.55, True)],
  )
  def test_empty_phase_is_refused(self, total_steps, pct_start, three_phase):
    with pytest.raises(ValueError, match='empty phase'):
      optax_clr.one_cycle_schedule(
          1.0, total_steps, pct_start=pct_start, three_phase=three_phase
      )


@pytest.mark.parametrize(
    'overrides,what',
    [(dict(max_lr=3e38, div_factor=0.5), 'max_lr / div_factor'),
     (dict(max_lr=1e30, div_factor=1e-10), 'max_lr / div_factor'),
     (dict(max_lr=1e30, div_factor=1.0, final_div_factor=1e-9),
      'max_lr / div_factor / final_div_factor')],
)
def test_corners_that_overflow_float32_are_refused(overrides, what):
  arguments = dict(max_lr=1.0, total_steps=100)
  arguments.update(overrides)
  name = 'final_div_factor' if 'final_div_factor' in overrides else 'div_factor'
  with pytest.raises(ValueError, match=f'{name} gives {what}.*float32'):
    optax_clr.one_cycle_schedule(**arguments)


class TestTransformations:

  def test_vmap_over_max_lr_and_div_factor(self):
    max_lrs = jnp.array([0.1, 1.0, 3.0])
    divs = jnp.array([10.0, 25.0, 5.0])
    sweep = jax.jit(jax.vmap(
        lambda m, d: optax_clr.one_cycle_schedule(m, 50, div_factor=d)(jnp.arange(50))
    ))
    lrs = sweep(max_lrs, divs)
    for row, (m, d) in enumerate([(0.1, 10.0), (1.0, 25.0), (3.0, 5.0)]):
      expected = [
          reference.torch_one_cycle(t, 50, (m / d, m, m / d / 1e4))
          for t in range(50)
      ]
      np.testing.assert_allclose(lrs[row], expected, rtol=2e-5)

  @pytest.mark.parametrize('three_phase', [False, True])
  def test_traced_total_steps_and_pct_start(self, three_phase):
    # Both may be traced (the phase table is then built in float32 on the
    # device); concrete values are the ones checked at construction.
    totals = np.array([20, 50, 100])
    pcts = np.array([0.3, 0.25, 0.4], np.float32)
    num_steps = 120

    def sweep(total_steps, pct_start):
      lr = optax_clr.one_cycle_schedule(
          0.4, total_steps, pct_start=pct_start, three_phase=three_phase)
      momentum = optax_clr.one_cycle_momentum_schedule(
          total_steps, pct_start=pct_start, three_phase=three_phase)
      counts = jnp.arange(num_steps)
      return lr(counts), momentum(counts)

    lrs, momenta = jax.jit(jax.vmap(sweep))(totals, pcts)
    for row, (total, pct) in enumerate(zip(totals, pcts)):
      total, pct = int(total), float(pct)
      expected_lr = [
          reference.torch_one_cycle(t, total, (0.016, 0.4, 1.6e-6), pct,
                                    'cos', three_phase)
          for t in range(total)
      ]
      expected_momentum = [
          reference.torch_one_cycle(t, total, (0.95, 0.85, 0.95), pct, 'cos',
                                    three_phase)
          for t in range(total)
      ]
      np.testing.assert_allclose(lrs[row, :total], expected_lr, rtol=2e-5,
                                 atol=1e-8)
      np.testing.assert_allclose(momenta[row, :total], expected_momentum,
                                 rtol=1e-6)
      np.testing.assert_array_equal(lrs[row, total:], lrs[row, total - 1])
      np.testing.assert_array_equal(momenta[row, total:],
                                    momenta[row, total - 1])

  def test_grad_with_respect_to_max_lr(self):
    grad = jax.grad(lambda m: optax_clr.one_cycle_schedule(m, 100)(40))(2.0)
    expected = reference.torch_one_cycle(40, 100, (1 / 25, 1.0, 1 / 25 / 1e4))
    np.testing.assert_allclose(grad, expected, rtol=1e-5)

  def test_dtype_and_shape(self):
    lr = optax_clr.one_cycle_schedule(1.0, 20)
    assert lr(3).dtype == jnp.float32 and lr(3).shape == ()
    assert lr(jnp.arange(6).reshape(3, 2)).shape == (3, 2)


@pytest.mark.parametrize(
    'overrides,error,message',
    [
        (dict(max_lr=0.0), ValueError, r'max_lr must lie in \(0, inf\]'),
        (dict(total_steps=0), ValueError, 'total_steps must be at least 1'),
        (dict(total_steps=99.5), ValueError, 'total_steps must be a whole number'),
        (dict(pct_start=0.0), ValueError, r'pct_start must lie in \(0, 1\)'),
        (dict(pct_start=1.1), ValueError, 'pct_start.*1.1'),
        (dict(anneal_strategy='CATS'), ValueError, "anneal_strategy must be one of.*'CATS'"),
        (dict(div_factor=0.0), ValueError, 'div_factor'),
        (dict(final_div_factor=-1.0), ValueError, 'final_div_factor'),
        (dict(three_phase='yes'), TypeError, 'three_phase must be a bool'),
    ],
)
def test_one_cycle_refuses_bad_arguments(overrides, error, message):
  arguments = dict(max_lr=1.0, total_steps=100)
  arguments.update(overrides)
  with pytest.raises(error, match=message):
    optax_clr.one_cycle_schedule(**arguments)


@pytest.mark.parametrize(
    'overrides,message',
    [
        (dict(base_momentum=0.99), 'max_momentum must be >= base_momentum'),
        (dict(max_momentum=float('nan')), 'max_momentum must be finite'),
        (dict(total_steps=-5), 'total_steps'),
        (dict(anneal_strategy='step'), 'anneal_strategy'),
    ],
)
def test_one_cycle_momentum_refuses_bad_arguments(overrides, message):
  arguments = dict(total_steps=100)
  arguments.update(overrides)
  with pytest.raises(ValueError, match=message):
    optax_clr.one_cycle_momentum_schedule(**arguments)
