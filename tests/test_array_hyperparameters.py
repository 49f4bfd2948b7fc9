"""Concrete NumPy arrays of hyperparameters: every element is checked.

A sweep may build one schedule from arrays of hyperparameters (broadcast
against the count). Each element is checked, not just the first, and the
error names the argument. The bad element is never the first one here.
"""

import numpy as np
import pytest

import optax_clr


def a(*values):
  return np.array(values)


BAD = [
    ('base_lr', lambda: optax_clr.triangular_schedule(a(0.1, -0.1, 0.2), 1.0,
                                                      4)),
    ('max_lr', lambda: optax_clr.triangular_schedule(0.1, a(0.5, 0.05), 4)),
    ('step_size', lambda: optax_clr.triangular_schedule(0.1, 0.5, a(4, 0, 2))),
    ('step_size_down', lambda: optax_clr.triangular2_schedule(
        0.1, 0.5, 4, step_size_down=a(3, 2.5))),
    ('gamma', lambda: optax_clr.exp_range_schedule(0.1, 0.5, 4,
                                                   gamma=a(0.99, 1.5))),
    ('max_momentum', lambda: optax_clr.cyclic_momentum_schedule(
        0.8, a(0.9, 0.7), 4)),
    ('max_lr', lambda: optax_clr.one_cycle_schedule(a(1.0, 0.0), 100)),
    ('pct_start', lambda: optax_clr.one_cycle_schedule(
        1.0, 100, pct_start=a(0.3, 1.0))),
    ('total_steps', lambda: optax_clr.one_cycle_momentum_schedule(a(100, -1))),
    ('div_factor', lambda: optax_clr.one_cycle_schedule(
        1.0, 100, div_factor=a(25.0, np.inf))),
    ('drop_every', lambda: optax_clr.step_decay_schedule(1.0, a(3, 0))),
    ('factor', lambda: optax_clr.step_decay_schedule(1.0, 3,
                                                     factor=a(0.5, -0.5))),
    ('decay_rate', lambda: optax_clr.exponential_decay_schedule(
        1.0, a(0.5, -0.1))),
    ('decay_steps', lambda: optax_clr.inverse_time_decay_schedule(
        1.0, 0.5, decay_steps=a(1, 0))),
    ('init_lr', lambda: optax_clr.inverse_time_decay_schedule(
        a(1.0, np.nan), 0.5)),
    ('start_lr', lambda: optax_clr.range_test_schedule(a(1e-4, 0.0), 1.0, 11)),
    ('end_lr', lambda: optax_clr.range_test_schedule(1e-4, a(1.0, 1e-5), 11)),
    ('max_lr', lambda: optax_clr.triangular_schedule(
        0.1, np.array([[0.5, 0.6], [0.7, -1.0]]), 4)),  # a 2-D grid
]


@pytest.mark.parametrize('name,build', BAD,
                         ids=[f'{name}-{i}' for i, (name, _) in enumerate(BAD)])
def test_one_bad_element_is_refused_by_name(name, build):
  with pytest.raises(ValueError, match=rf'\b{name}\b') as info:
    build()
  assert 'array(' in str(info.value)  # the value received is shown


def test_good_arrays_give_one_schedule_per_element():
  base, peak, step = a(0.1, 0.2, 0.0), a(0.5, 0.6, 1.0), a(4, 8, 2)
  schedule = optax_clr.triangular_schedule(base, peak, step)
  for count in range(20):
    position = count % (2 * step)
    rise = np.where(position <= step, position, 2 * step - position) / step
    np.testing.assert_allclose(schedule(count), base + (peak - base) * rise,
                               rtol=1e-6, atol=1e-7)
