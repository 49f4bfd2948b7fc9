"""examples/minimal.py: the logged rate is Smith's triangular policy, the
metrics reach the host in one fetch per logging window, and the model learns."""

import jax
import numpy as np
import pytest

from examples import minimal

EPOCHS, BATCH_SIZE, LOG_EVERY = 4, 32, 20
STEPS_PER_EPOCH = 1500 // BATCH_SIZE  # 46: 1500 training images.
NUM_STEPS = EPOCHS * STEPS_PER_EPOCH
BASE_LR, MAX_LR, STEP_SIZE = 0.05, 0.2, 2 * STEPS_PER_EPOCH


def triangular(step):
  """Smith (2015), Section 3.1, in float64 NumPy."""
  cycle = np.floor(1 + step / (2 * STEP_SIZE))
  x = np.abs(step / STEP_SIZE - 2 * cycle + 1)
  return BASE_LR + (MAX_LR - BASE_LR) * np.maximum(0.0, 1 - x)


@pytest.fixture(scope='module')
def run():
  """One short run, its ``jax.device_get`` calls counted (with the leaves
  each one fetched)."""
  calls = []
  device_get = jax.device_get

  def counting(tree):
    calls.append(len(jax.tree.leaves(tree)))
    return device_get(tree)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(jax, 'device_get', counting)
    result = minimal.main(epochs=EPOCHS, batch_size=BATCH_SIZE,
                          log_every=LOG_EVERY)
  return result, calls


def test_logged_lr_is_the_triangular_policy(run):
  log = run[0]['log']
  steps = np.array([entry['step'] for entry in log])
  expected_steps = list(range(LOG_EVERY - 1, NUM_STEPS, LOG_EVERY))
  assert steps.tolist() == expected_steps + [NUM_STEPS - 1]
  lrs = np.array([entry['lr'] for entry in log])
  np.testing.assert_allclose(lrs, triangular(steps), rtol=1e-6)
  # The logged steps sample the whole cycle, not one flat stretch of it.
  assert lrs.max() - lrs.min() > 0.5 * (MAX_LR - BASE_LR)


def test_metrics_are_fetched_once_per_window(run):
  result, calls = run
  windows = len(result['log'])
  # One fetch per logging window (each holding every step's loss and rate
  # since the last one), plus the test accuracy.
  assert len(calls) == windows + 1
  assert calls[:-1] == [3 * LOG_EVERY] * (windows - 1) + [
      3 * (NUM_STEPS - (windows - 1) * LOG_EVERY)]


def test_training_learns(run):
  result = run[0]
  losses = [entry['loss'] for entry in result['log']]
  assert losses[-1] < 0.5 * losses[0]
  assert result['test_accuracy'] > 0.9  # Chance is 0.1.
