"""Every schedule factory against random, hostile hyperparameters.

For each public factory, hypothesis perturbs a random subset of its numeric
arguments with finite, non-finite, huge, tiny, negative, wrong-dtype
(bfloat16, float16, int, bool, complex) and wrong-type (str, None, arrays
with one bad element) values. The outcome must be one of:

* a ValueError or TypeError whose message names a perturbed argument, or
* a schedule whose values on a fixed set of counts are finite, inside the
  factory's documented bounds and, where a NumPy float64 reference of the
  formula is written below, equal to it to float32 accuracy.

Never a silent inf or NaN, never another exception. Each factory's schedule
is evaluated by one compiled function taking the hyperparameters as traced
arguments and a fixed-length count array, so it compiles once per test (and
once per value of an argument that must be concrete), not once per example;
the concretely built schedule is evaluated eagerly on the same counts.

Add a factory by adding an ``Entry`` to ``REGISTRY``;
``test_registry_covers_every_public_factory`` fails until it is there.
"""

from collections.abc import Callable
import dataclasses
import math
from typing import Any

from hypothesis import given, strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_clr

# Negative counts, the first steps, far out, and the int32 limit.
COUNTS = np.asarray(
    [-(2**31), -7, -1, *range(0, 24), 31, 32, 33, 99, 100, 101, 999, 1000,
     12345, 2**20, 2**24 + 1, 2**30, 2**31 - 2, 2**31 - 1],
    np.int32,
)
F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).tiny)
BF16 = jnp.bfloat16


@dataclasses.dataclass(frozen=True)
class Entry:
  """A factory, its valid defaults and what its arguments are."""

  build: Callable[..., Any]
  defaults: dict[str, Any]
  floats: tuple[str, ...]  # Real-valued hyperparameters.
  steps: tuple[str, ...] = ()  # Whole step counts.
  static: tuple[str, ...] = ()  # Must be concrete: not traced when evaluated.
  # May also be a concrete sequence (one entry per cycle), then kept static.
  sequences: tuple[str, ...] = ()
  bounds: Callable[[dict[str, float]], tuple[float, float]] = None
  # Returns None where no reference is written for those arguments.
  reference: Callable[[dict[str, Any], np.ndarray], np.ndarray | None] | None = None


def _clamped(t):
  return np.maximum(np.asarray(t, np.int64), 0)


def _cyclic_reference(mode):
  def reference(h, t):
    t = _clamped(t)
    up = int(h['step_size'])
    down = up if h.get('step_size_down') is None else int(h['step_size_down'])
    cycle, position = np.divmod(t, up + down)
    rising = position <= up
    fraction = np.where(rising, position / up, (up + down - position) / down)
    if mode == 'triangular2':
      scale = 2.0 ** -np.minimum(cycle, 1100).astype(np.float64)
    elif mode == 'exp_range':
      scale = np.exp(t * math.log(h['gamma']))
    else:
      scale = 1.0
    amplitude = fraction * scale
    if 'base_momentum' in h:
      high, low = h['max_momentum'], h['base_momentum']
      return high - (high - low) * amplitude
    return h['base_lr'] + (h['max_lr'] - h['base_lr']) * amplitude
  return reference


def _exponential_reference(h, t, rate='decay_rate', steps='decay_steps',
                           init='init_lr', staircase=False):
  periods = _clamped(t) / int(h[steps])
  if staircase:
    periods = np.floor(periods)
  with np.errstate(over='ignore'):
    value = h[init] * np.exp(periods * math.log(h[rate]))
  return np.minimum(value, F32_MAX)


def _inverse_time_reference(h, t):
  return h['init_lr'] / (1 + h['decay_rate'] * _clamped(t) / int(h['decay_steps']))


def _ramp_reference(h, t):
  last = int(h['num_steps']) - 1
  r = np.minimum(_clamped(t), last) / last
  log_start, log_end = math.log(h['start_lr']), math.log(h['end_lr'])
  return np.exp(log_start + r * (log_end - log_start))


def _restarts_reference(h, t):
  period = int(h['first_period'])
  index, position = np.divmod(_clamped(t), period)
  with np.errstate(over='ignore', divide='ignore'):
    scale = np.where(index == 0, 1.0, h['peak_mult'] ** index.astype(float))
  amplitude = (h['init_lr'] - h['min_lr']) * np.cos(np.pi / 2 * position / period) ** 2
  with np.errstate(over='ignore', invalid='ignore'):
    value = np.where(amplitude == 0, h['min_lr'], h['min_lr'] + amplitude * scale)
  return np.minimum(value, F32_MAX)


def _wsd_reference(h, t):
  t = _clamped(t)
  total, decay, warmup = (int(h[k]) for k in ('total_steps', 'decay_steps', 'warmup_steps'))
  peak, init, final = h['peak_lr'], h['init_lr'], h['final_lr']
  rising = init + (peak - init) * np.minimum(t, warmup) / max(warmup, 1)
  cool = np.clip(t - (total - decay), 0, decay) / max(decay, 1)
  falling = final + (peak - final) * (1 - np.sqrt(cool))
  value = np.where(t < total - decay, peak, falling)
  value = np.where(t >= total, final, value)
  return np.where(t < warmup, rising, value)


def _cooldown_reference(h, t):
  # The base is the constant COOLDOWN_BASE.
  t = _clamped(t)
  start, decay, final = int(h['start_step']), int(h['decay_steps']), h['final_lr']
  progress = np.clip(t - start, 0, decay) / max(decay, 1)
  value = np.where(t - start >= decay, final,
                   final + (COOLDOWN_BASE - final) * (1 - np.sqrt(progress)))
  return np.where(t < start, COOLDOWN_BASE, value)


def _wsd_restarts_reference(h, t):
  if isinstance(h['cycle_steps'], tuple):
    return None  # Per-cycle tables: tests/test_wsd_restarts.py checks them.
  length, decay = int(h['cycle_steps']), int(h['decay_steps'])
  warmup, rewarmup = int(h['warmup_steps']), int(h['rewarmup_steps'])
  peak, init, final = h['peak_lr'], h['init_lr'], h['final_lr']
  index, position = np.divmod(_clamped(t), length)
  ramp = np.where(index == 0, warmup, rewarmup)
  low = np.where(index == 0, init, final)
  rising = low + (peak - low) * np.minimum(position, ramp) / np.maximum(ramp, 1)
  cool = np.clip(position - (length - decay), 0, decay) / max(decay, 1)
  falling = final + (peak - final) * (1 - np.sqrt(cool))
  value = np.where(position < length - decay, peak, falling)
  return np.where(position < ramp, rising, value)


def _inverse_sqrt_reference(h, t):
  t = _clamped(t)
  warmup = int(h['warmup_steps'])
  tau = h.get('timescale')
  tau = (warmup or 10_000) if tau is None else tau
  rising = h['init_lr'] + (h['peak_lr'] - h['init_lr']) * np.minimum(t, warmup) / max(warmup, 1)
  decayed = h['peak_lr'] * np.sqrt(tau / (np.maximum(t - warmup, 0) + tau))
  return np.where(t < warmup, rising, decayed)


def _one_cycle_bounds(h):
  initial = h['max_lr'] / h['div_factor']
  corners = (initial, h['max_lr'], initial / h['final_div_factor'])
  return min(corners), max(corners)


def _span(*names):
  return lambda h: (min(h[n] for n in names), max(h[n] for n in names))


COOLDOWN_BASE = 0.5


def _cooldown(start_step, decay_steps, final_lr):
  """``cooldown_schedule`` of a constant base: its numeric arguments only."""
  return optax_clr.cooldown_schedule(
      lambda count: jnp.full(jnp.shape(count), COOLDOWN_BASE, jnp.float32),
      start_step, decay_steps, final_lr=final_lr)


def _decay_bounds(rate):
  return lambda h: (0.0, h['init_lr'] if h[rate] <= 1 else F32_MAX)


REGISTRY = {
    'cyclic_schedule': Entry(
        optax_clr.cyclic_schedule,
        dict(base_lr=0.1, max_lr=0.5, step_size=4, step_size_down=None, gamma=1.0),
        ('base_lr', 'max_lr', 'gamma'), ('step_size', 'step_size_down'),
        bounds=_span('base_lr', 'max_lr'), reference=_cyclic_reference('triangular')),
    'triangular_schedule': Entry(
        optax_clr.triangular_schedule,
        dict(base_lr=0.1, max_lr=0.5, step_size=4, step_size_down=6),
        ('base_lr', 'max_lr'), ('step_size', 'step_size_down'),
        bounds=_span('base_lr', 'max_lr'), reference=_cyclic_reference('triangular')),
    'triangular2_schedule': Entry(
        optax_clr.triangular2_schedule,
        dict(base_lr=0.1, max_lr=0.5, step_size=4, step_size_down=None),
        ('base_lr', 'max_lr'), ('step_size', 'step_size_down'),
        bounds=_span('base_lr', 'max_lr'), reference=_cyclic_reference('triangular2')),
    'exp_range_schedule': Entry(
        optax_clr.exp_range_schedule,
        dict(base_lr=0.1, max_lr=0.5, step_size=4, gamma=0.99),
        ('base_lr', 'max_lr', 'gamma'), ('step_size',),
        bounds=_span('base_lr', 'max_lr'), reference=_cyclic_reference('exp_range')),
    'cyclic_momentum_schedule': Entry(
        optax_clr.cyclic_momentum_schedule,
        dict(base_momentum=0.8, max_momentum=0.9, step_size=4, step_size_down=None),
        ('base_momentum', 'max_momentum'), ('step_size', 'step_size_down'),
        bounds=_span('base_momentum', 'max_momentum'),
        reference=_cyclic_reference('triangular')),
    'one_cycle_schedule': Entry(
        optax_clr.one_cycle_schedule,
        dict(max_lr=1.0, total_steps=100, pct_start=0.3, div_factor=25.0,
             final_div_factor=1e4),
        ('max_lr', 'pct_start', 'div_factor', 'final_div_factor'), ('total_steps',),
        bounds=_one_cycle_bounds),
    'one_cycle_momentum_schedule': Entry(
        optax_clr.one_cycle_momentum_schedule,
        dict(total_steps=100, base_momentum=0.85, max_momentum=0.95, pct_start=0.3),
        ('base_momentum', 'max_momentum', 'pct_start'), ('total_steps',),
        bounds=_span('base_momentum', 'max_momentum')),
    'step_decay_schedule': Entry(
        optax_clr.step_decay_schedule,
        dict(init_lr=1.0, drop_every=3, factor=0.5),
        ('init_lr', 'factor'), ('drop_every',), bounds=_decay_bounds('factor'),
        reference=lambda h, t: _exponential_reference(
            h, t, rate='factor', steps='drop_every', staircase=True)),
    'exponential_decay_schedule': Entry(
        optax_clr.exponential_decay_schedule,
        dict(init_lr=1.0, decay_rate=0.5, decay_steps=1),
        ('init_lr', 'decay_rate'), ('decay_steps',),
        bounds=_decay_bounds('decay_rate'), reference=_exponential_reference),
    'inverse_time_decay_schedule': Entry(
        optax_clr.inverse_time_decay_schedule,
        dict(init_lr=1.0, decay_rate=0.5, decay_steps=1),
        ('init_lr', 'decay_rate'), ('decay_steps',),
        bounds=lambda h: (0.0, h['init_lr']), reference=_inverse_time_reference),
    'range_test_schedule': Entry(
        optax_clr.range_test_schedule,
        dict(start_lr=1e-4, end_lr=1.0, num_steps=11),
        ('start_lr', 'end_lr'), ('num_steps',), static=('num_steps',),
        bounds=_span('start_lr', 'end_lr'), reference=_ramp_reference),
}
if hasattr(optax_clr, 'cosine_restarts_schedule'):
  REGISTRY['cosine_restarts_schedule'] = Entry(
      optax_clr.cosine_restarts_schedule,
      dict(init_lr=1.0, first_period=10, peak_mult=0.5, min_lr=0.0),
      ('init_lr', 'peak_mult', 'min_lr'), ('first_period',),
      bounds=lambda h: (h['min_lr'], h['init_lr'] if h['peak_mult'] <= 1 else F32_MAX),
      reference=_restarts_reference)
if hasattr(optax_clr, 'wsd_schedule'):
  REGISTRY['wsd_schedule'] = Entry(
      optax_clr.wsd_schedule,
      dict(peak_lr=1.0, total_steps=100, decay_steps=20, warmup_steps=10,
           init_lr=0.0, final_lr=0.0),
      ('peak_lr', 'init_lr', 'final_lr'), ('total_steps', 'decay_steps', 'warmup_steps'),
      bounds=_span('peak_lr', 'init_lr', 'final_lr'), reference=_wsd_reference)
if hasattr(optax_clr, 'inverse_sqrt_schedule'):
  REGISTRY['inverse_sqrt_schedule'] = Entry(
      optax_clr.inverse_sqrt_schedule,
      dict(peak_lr=1.0, warmup_steps=10, timescale=None, init_lr=0.0),
      ('peak_lr', 'init_lr', 'timescale'), ('warmup_steps',),
      bounds=lambda h: (0.0, max(h['peak_lr'], h['init_lr'])),
      reference=_inverse_sqrt_reference)

if hasattr(optax_clr, 'cooldown_schedule'):
  REGISTRY['cooldown_schedule'] = Entry(
      _cooldown, dict(start_step=30, decay_steps=20, final_lr=0.01),
      ('final_lr',), ('start_step', 'decay_steps'),
      bounds=lambda h: (min(h['final_lr'], COOLDOWN_BASE),
                        max(h['final_lr'], COOLDOWN_BASE)),
      reference=_cooldown_reference)
if hasattr(optax_clr, 'wsd_restarts_schedule'):
  REGISTRY['wsd_restarts_schedule'] = Entry(
      optax_clr.wsd_restarts_schedule,
      dict(peak_lr=1.0, cycle_steps=20, decay_steps=5, warmup_steps=4,
           rewarmup_steps=2, init_lr=0.0, final_lr=0.1),
      ('peak_lr', 'init_lr', 'final_lr'),
      ('cycle_steps', 'decay_steps', 'warmup_steps', 'rewarmup_steps'),
      sequences=('cycle_steps', 'decay_steps'),
      bounds=_span('peak_lr', 'init_lr', 'final_lr'),
      reference=_wsd_restarts_reference)


def _is_listed(entry, name, value):
  return name in entry.sequences and value is not None and np.ndim(value) > 0


def test_registry_covers_every_public_factory():
  public = {name for name in optax_clr.__all__ if name.endswith('_schedule')}
  assert public == set(REGISTRY)


# Hostile values: drawn for any argument, float or step count.
SPECIAL = [
    0.0, -0.0, 1e-45, 1e-39, F32_TINY, 1.0, 2.0, 3.4e38, F32_MAX, 3.5e38, 1e39,
    1e308, -1e-30, -1.0, -3.0, 2**31 - 1, 2**31, 2**32, 2**63, 2**64, 10**400,
    float('nan'), float('inf'), -float('inf'),
]
WRONG = [
    True, False, 1 + 2j, np.complex64(1), '0.1', b'1', None, [0.1], (1, 2),
    {'lr': 0.1}, np.asarray([0.1, np.nan]), np.asarray([1.0, np.inf]),
    np.asarray([0.1, 'x']), np.asarray([0.1, None], dtype=object),
    np.asarray([True, False]),
]
REAL = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(1e-6, 10.0),
    st.integers(-10, 2000),
    st.integers(-(2**70), 2**70),
)


def _retype(value, dtype):
  """``value`` in ``dtype``, overflowing or wrapping as NumPy casts do."""
  with np.errstate(over='ignore', invalid='ignore'):
    return np.asarray(value).astype(dtype)


VALUES = st.one_of(
    REAL,
    st.sampled_from(SPECIAL),
    st.sampled_from(WRONG),
    st.builds(_retype, st.floats(-1e5, 1e5) | st.sampled_from(SPECIAL[:11]),
              st.sampled_from([BF16, np.float16, np.float32, np.float64])),
    st.builds(_retype, st.integers(-1000, 1000),
              st.sampled_from([np.int8, np.int32, np.int64, np.uint8, np.uint32])),
    st.builds(_retype, st.integers(0, 2**64 - 1), st.sampled_from([np.uint64])),
)


def _as_float(value):
  return float(np.asarray(value).astype(np.float64))


def _traced_arguments(entry, arguments):
  """The arguments as float32 / int32 arrays, None and static ones as given."""
  traced = {}
  for name, value in arguments.items():
    if value is None or name in entry.static or _is_listed(entry, name, value):
      continue
    dtype = np.int32 if name in entry.steps else np.float32
    traced[name] = np.asarray(np.asarray(value).astype(np.float64), dtype)
  return traced


_EVALUATORS = {}


def _evaluator(name):
  """One jitted ``(traced arguments, static arguments) -> values`` per factory."""
  if name not in _EVALUATORS:
    entry = REGISTRY[name]

    def evaluate(traced, static):
      return entry.build(**traced, **dict(static))(jnp.asarray(COUNTS))

    _EVALUATORS[name] = jax.jit(evaluate, static_argnums=1)
  return _EVALUATORS[name]


def _check_values(name, values, hyper):
  entry = REGISTRY[name]
  values = np.asarray(values, np.float64)
  assert values.shape == COUNTS.shape
  assert np.all(np.isfinite(values)), (name, hyper, values)
  low, high = entry.bounds(hyper)
  high = min(high, F32_MAX)
  slack = 1e-6 * max(abs(low), abs(high)) + F32_TINY
  assert np.all(values >= low - slack), (name, hyper, values.min(), low)
  assert np.all(values <= high + slack), (name, hyper, values.max(), high)
  expected = None
  if entry.reference is not None:
    with np.errstate(under='ignore'):
      expected = entry.reference(hyper, COUNTS)
  if expected is not None:
    scale = max(abs(v) for k, v in hyper.items()
                if k in entry.floats and v is not None)
    np.testing.assert_allclose(
        values, expected, rtol=1e-4, atol=1e-6 * scale + 2 * F32_TINY,
        err_msg=f'{name} {hyper}')


@pytest.mark.parametrize('name', sorted(REGISTRY))
@given(data=st.data())
def test_hostile_hyperparameters(name, data):
  entry = REGISTRY[name]
  numeric = entry.floats + entry.steps
  chosen = data.draw(
      st.lists(st.sampled_from(numeric), min_size=1, max_size=len(numeric),
               unique=True), label='perturbed')
  arguments = dict(entry.defaults)
  for argument in chosen:
    arguments[argument] = data.draw(VALUES, label=argument)
  try:
    schedule = entry.build(**arguments)
  except (ValueError, TypeError) as error:
    named = [argument for argument in chosen if argument in str(error)]
    assert named, f'{type(error).__name__} names none of {chosen}: {error}'
    return
  hyper = {k: (None if v is None else
               tuple(_as_float(x) for x in v) if _is_listed(entry, k, v) else
               _as_float(v)) for k, v in arguments.items()}
  _check_values(name, schedule(COUNTS), hyper)
  static = tuple(sorted(
      [(k, int(arguments[k])) for k in entry.static]
      + [(k, tuple(int(x) for x in v)) for k, v in arguments.items()
         if _is_listed(entry, k, v)]))
  compiled = _evaluator(name)(_traced_arguments(entry, arguments), static)
  _check_values(name, compiled, hyper)


@pytest.mark.parametrize('name', sorted(REGISTRY))
def test_compiles_once_for_all_examples(name):
  # Every example of test_hostile_hyperparameters reuses one compiled
  # evaluator (per value of a static argument) and one count shape.
  entry = REGISTRY[name]
  evaluate = _evaluator(name)
  before = evaluate._cache_size()  # pylint: disable=protected-access
  for scale in (1.0, 2.0, 3.0):
    arguments = {k: (v * scale if k in entry.floats and v else v)
                 for k, v in entry.defaults.items()}
    static = tuple(sorted((k, int(arguments[k])) for k in entry.static))
    evaluate(_traced_arguments(entry, arguments), static)
  assert evaluate._cache_size() <= before + 1  # pylint: disable=protected-access
