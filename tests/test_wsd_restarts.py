"""Tests for warmup-stable-decay cycles with rewarmups."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_clr
from tests import reference

SHAPES = ('linear', 'cosine', '1-sqrt')


def values(schedule, counts):
  return np.asarray(schedule(jnp.asarray(counts)))


class TestAgainstNumPy:

  @pytest.mark.parametrize('warmup_shape,decay_shape',
                           list(itertools.product(SHAPES, SHAPES)))
  def test_listed_cycles(self, warmup_shape, decay_shape):
    lengths, decays = [20, 13, 30, 7], [5, 4, 10, 3]
    schedule = optax_clr.wsd_restarts_schedule(
        0.8, lengths, decays, warmup_steps=6, rewarmup_steps=3, init_lr=0.05,
        final_lr=0.02, warmup_shape=warmup_shape, decay_shape=decay_shape)
    counts = range(-2, sum(lengths) + 6)
    expected = [reference.wsd_cycles_lr(
        t, 0.8, lengths, decays, 6, 3, 0.05, 0.02, warmup_shape, decay_shape)
                for t in counts]
    np.testing.assert_allclose(values(schedule, list(counts)), expected,
                               rtol=2e-6, atol=1e-8)

  @pytest.mark.parametrize('rewarmup', [0, 1, 4])
  def test_repeated_cycle(self, rewarmup):
    schedule = optax_clr.wsd_restarts_schedule(
        1.0, 12, 4, warmup_steps=3, rewarmup_steps=rewarmup, final_lr=0.1,
        decay_shape='cosine')
    expected = [reference.wsd_cycles_lr(t, 1.0, [12], [4], 3, rewarmup, 0.0,
                                        0.1, decay_shape='cosine', repeat=True)
                for t in range(100)]
    np.testing.assert_allclose(values(schedule, np.arange(100)), expected,
                               rtol=2e-6, atol=1e-8)

  def test_one_decay_for_every_listed_cycle(self):
    schedule = optax_clr.wsd_restarts_schedule(1.0, [10, 8, 9], 3,
                                               warmup_steps=2)
    expected = [reference.wsd_cycles_lr(t, 1.0, [10, 8, 9], [3, 3, 3], 2)
                for t in range(32)]
    np.testing.assert_allclose(values(schedule, np.arange(32)), expected,
                               rtol=2e-6, atol=1e-8)


class TestEquivalences:

  @pytest.mark.parametrize('shape', SHAPES)
  def test_one_cycle_is_wsd(self, shape):
    schedule = optax_clr.wsd_restarts_schedule(
        0.5, [40], [12], warmup_steps=5, init_lr=0.01, final_lr=0.03,
        warmup_shape=shape, decay_shape=shape)
    wsd = optax_clr.wsd_schedule(0.5, 40, 12, warmup_steps=5, init_lr=0.01,
                                 final_lr=0.03, warmup_shape=shape,
                                 decay_shape=shape)
    counts = np.arange(60)
    np.testing.assert_allclose(values(schedule, counts), values(wsd, counts),
                               rtol=1e-6, atol=1e-9)

  def test_every_cycle_after_the_first_is_a_rewarmed_wsd(self):
    lengths, decays = [15, 11, 20], [4, 5, 6]
    schedule = optax_clr.wsd_restarts_schedule(
        1.0, lengths, decays, warmup_steps=5, rewarmup_steps=3, final_lr=0.1)
    start = 0
    for i, (length, decay) in enumerate(zip(lengths, decays)):
      wsd = optax_clr.wsd_schedule(
          1.0, length, decay, warmup_steps=5 if i == 0 else 3,
          init_lr=0.0 if i == 0 else 0.1, final_lr=0.1)
      np.testing.assert_allclose(
          values(schedule, start + np.arange(length)),
          values(wsd, np.arange(length)), rtol=1e-6, atol=1e-9)
      start += length

  def test_wsd_s_no_rewarmup_against_a_join(self):
    # WSD-S: the peak again right after every cooldown.
    schedule = optax_clr.wsd_restarts_schedule(1.0, [10, 10], [4, 4])
    join = optax.join_schedules(
        [optax_clr.wsd_schedule(1.0, 10, 4)] * 2
        + [optax.constant_schedule(0.0)], [10, 20])
    counts = np.arange(25)
    np.testing.assert_allclose(values(schedule, counts),
                               [float(join(c)) for c in counts], atol=1e-7)


class TestExactFarOut:

  def test_int32_repeated_cycles(self):
    length = 2**20 + 7
    schedule = optax_clr.wsd_restarts_schedule(
        1.0, length, 2**18, warmup_steps=100, rewarmup_steps=2**10,
        final_lr=0.01, decay_shape='linear')
    top = 2**31 - 1
    for count in (top, top - 1, top - 2**17, (top // length) * length,
                  (top // length) * length - 1):
      expected = reference.wsd_cycles_lr(count, 1.0, [length], [2**18], 100,
                                         2**10, 0.0, 0.01, 'linear', 'linear',
                                         repeat=True)
      np.testing.assert_allclose(schedule(jnp.int32(count)), expected,
                                 rtol=1e-6)

  def test_int32_listed_cycles_up_to_the_top(self):
    lengths = [2**30, 2**30 - 1]  # adds up to 2**31 - 1
    schedule = optax_clr.wsd_restarts_schedule(
        1.0, lengths, [2**28, 2**29], rewarmup_steps=2**20, final_lr=0.1,
        decay_shape='linear')
    for count in (2**30 - 1, 2**30, 2**30 + 5, 2**31 - 2, 2**31 - 1):
      expected = reference.wsd_cycles_lr(count, 1.0, lengths, [2**28, 2**29],
                                         0, 2**20, 0.0, 0.1, 'linear',
                                         'linear')
      np.testing.assert_allclose(schedule(jnp.int32(count)), expected,
                                 rtol=1e-6)

  def test_x64_ten_to_the_twelve(self):
    with jax.enable_x64(True):
      lengths, decays = [10**12, 10**12 + 3], [10**11, 2 * 10**11]
      schedule = optax_clr.wsd_restarts_schedule(
          1.0, lengths, decays, warmup_steps=10**6, rewarmup_steps=10**9)
      for count in (10**12 - 1, 10**12, 10**12 + 12345, 2 * 10**12 - 5,
                    2 * 10**12 + 3):
        lr = schedule(jnp.asarray(count, jnp.int64))
        assert lr.dtype == jnp.float32
        expected = reference.wsd_cycles_lr(count, 1.0, lengths, decays,
                                           10**6, 10**9)
        np.testing.assert_allclose(lr, expected, rtol=1e-6, atol=1e-9)


class TestTransformations:

  def test_vmap_over_lengths_and_rates(self):
    lengths = jnp.array([10, 16, 25])
    decays = jnp.array([3, 0, 10])
    peaks = jnp.array([1.0, 0.3, 0.5])
    counts = jnp.arange(80)

    def curve(length, decay, peak):
      return optax_clr.wsd_restarts_schedule(
          peak, length, decay, warmup_steps=2, rewarmup_steps=2,
          final_lr=0.01)(counts)

    for dtype in (jnp.int32, jnp.float32):
      curves = jax.jit(jax.vmap(curve))(lengths.astype(dtype),
                                        decays.astype(dtype), peaks)
      for row, (n, d, p) in enumerate(zip(lengths.tolist(), decays.tolist(),
                                          peaks.tolist())):
        expected = [reference.wsd_cycles_lr(int(c), p, [n], [d], 2, 2, 0.0,
                                            0.01, repeat=True) for c in counts]
        np.testing.assert_allclose(curves[row], expected, rtol=2e-6,
                                   atol=1e-8)

  def test_jit_compiles_once(self):
    schedule = optax_clr.wsd_restarts_schedule(1.0, [8, 9, 10], [2, 3, 4],
                                               warmup_steps=2,
                                               rewarmup_steps=1)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def lr_at(count):
      return schedule(count)

    observed = [float(lr_at(jnp.int32(k))) for k in range(30)]
    expected = [reference.wsd_cycles_lr(k, 1.0, [8, 9, 10], [2, 3, 4], 2, 1)
                for k in range(30)]
    np.testing.assert_allclose(observed, expected, rtol=2e-6, atol=1e-8)

  def test_grad_with_respect_to_the_rates(self):
    def lr(peak, final, count):
      return optax_clr.wsd_restarts_schedule(
          peak, [10, 10], [4, 4], rewarmup_steps=2, final_lr=final,
          decay_shape='linear')(count)

    for count, expected in ((5, (1.0, 0.0)), (8, (0.5, 0.5)),
                            (11, (0.5, 0.5)), (25, (0.0, 1.0))):
      grads = jax.grad(lr, argnums=(0, 1))(1.0, 0.1, count)
      np.testing.assert_allclose(grads, expected, rtol=1e-6, atol=1e-7)


BAD_ARGUMENTS = [
    (dict(cycle_steps=0), ValueError, 'cycle_steps must be at least 1'),
    (dict(cycle_steps=[10, 0]), ValueError,
     r'cycle_steps\[1\] must be at least 1'),
    (dict(cycle_steps=[]), ValueError, 'cycle_steps must hold at least one'),
    (dict(cycle_steps=[10, 2.5]), ValueError,
     r'cycle_steps\[1\] must be a whole number'),
    (dict(cycle_steps=[10, 10], decay_steps=[2]), ValueError,
     'decay_steps must list one cooldown per cycle, got 1 for 2'),
    (dict(decay_steps=[2, 2]), TypeError,
     'decay_steps may be a sequence only with a sequence of cycle_steps'),
    (dict(warmup_steps=8), ValueError,
     'warmup_steps \\+ decay_steps must be <= the length of cycle 0'),
    (dict(cycle_steps=[20, 6], rewarmup_steps=3), ValueError,
     'rewarmup_steps \\+ decay_steps must be <= the length of cycle 1'),
    (dict(cycle_steps=[2**30, 2**30]), ValueError,
     'cycle_steps adds up to 2147483648 steps'),
    (dict(decay_steps=-1), ValueError, 'decay_steps must be at least 0'),
    (dict(peak_lr=-1.0), ValueError, 'peak_lr must lie in'),
    (dict(final_lr=float('nan')), ValueError, 'final_lr must be finite'),
    (dict(decay_shape='exp'), ValueError, "decay_shape must be one of.*'exp'"),
    (dict(warmup_shape='sqrt'), ValueError, "warmup_shape must be one of"),
    (dict(cycle_steps='10'), TypeError, 'cycle_steps must be a real number'),
]


@pytest.mark.parametrize('overrides,error,message', BAD_ARGUMENTS)
def test_refuses_bad_arguments(overrides, error, message):
  arguments = dict(peak_lr=1.0, cycle_steps=10, decay_steps=4)
  arguments.update(overrides)
  with pytest.raises(error, match=message):
    optax_clr.wsd_restarts_schedule(**arguments)


def test_refuses_a_traced_sequence():
  def build(lengths):
    return optax_clr.wsd_restarts_schedule(1.0, list(lengths), 2)(3)

  with pytest.raises(TypeError, match=r'cycle_steps as a sequence must be'):
    jax.jit(build)(jnp.array([10, 10]))
