"""optax_clr.nnx: range tests and sweeps of NNX modules with BatchNorm and
dropout, against hand-written NNX training loops."""

import os
import subprocess
import sys

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_clr
import optax_clr.nnx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS, BATCH, FEATURES = 16, 8, 4


class Net(nnx.Module):
  """Linear, BatchNorm, ReLU, Dropout, Linear: the state a real CNN has."""

  def __init__(self, seed: int):
    rngs = nnx.Rngs(params=seed, dropout=seed + 100)
    self.hidden = nnx.Linear(FEATURES, 16, rngs=rngs)
    self.norm = nnx.BatchNorm(16, rngs=rngs)
    self.dropout = nnx.Dropout(0.25, rngs=rngs)
    self.out = nnx.Linear(16, 1, rngs=rngs)

  def __call__(self, x):
    return self.out(self.dropout(nnx.relu(self.norm(self.hidden(x)))))


def loss_fn(model, batch):
  x, y = batch
  loss = jnp.mean((model(x)[:, 0] - y) ** 2)
  return loss, {'bn_mean': jnp.sum(model.norm.mean[...])}


def make_batches(seed=0, steps=NUM_STEPS):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((steps, BATCH, FEATURES)).astype(np.float32)
  y = (x @ np.array([1.0, -2.0, 0.5, 1.5], np.float32)).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(y)


def snapshot(model):
  """Every leaf of the module's state as NumPy (keys as their raw data)."""
  leaves = jax.tree.leaves(nnx.state(model))
  return [np.asarray(jax.random.key_data(x)
                     if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                     else x) for x in leaves]


def hand_range_test(model, batches, lrs):
  """An eager NNX loop on a copy: plain SGD at ``lrs[t]``, dropout live."""
  model = nnx.clone(model)
  losses, means = [], []
  for t, lr in enumerate(lrs):
    batch = jax.tree.map(lambda x, t=t: x[t], batches)
    (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(
        model, batch)
    losses.append(float(loss))
    means.append(float(aux['bn_mean']))
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda p, g, lr=lr: p - lr * g, params,
                                   grads))
  return np.array(losses), np.array(means)


def run(model, batches, **kwargs):
  settings = dict(start_lr=1e-3, end_lr=0.1, num_steps=NUM_STEPS,
                  has_aux=True, divergence_threshold=None)
  settings.update(kwargs)
  return optax_clr.nnx.range_test(model, optax.sgd, loss_fn, batches,
                                  **settings)


def test_range_test_equals_hand_written_nnx_loop_and_leaves_model_alone():
  model = Net(0)
  before = snapshot(model)
  batches = make_batches()
  result = run(model, batches)
  after = snapshot(model)
  assert all(np.array_equal(a, b) for a, b in zip(before, after))
  losses, means = hand_range_test(model, batches, np.asarray(result.lrs))
  np.testing.assert_allclose(result.losses, losses, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(result.aux['bn_mean'], means, rtol=1e-4,
                             atol=1e-6)
  # The batch statistics move inside the sweep.
  assert len(np.unique(np.asarray(result.aux['bn_mean']))) == NUM_STEPS


def test_dropout_draws_afresh_and_keys_reproduce():
  model, batches = Net(1), make_batches(1)
  same_batch = jax.tree.map(lambda x: jnp.repeat(x[:1], NUM_STEPS, 0),
                            batches)
  # At a rate too small to move the weights, only dropout and the batch
  # statistics change the loss on a repeated batch.
  flat = run(model, same_batch, start_lr=1e-12, end_lr=1e-11)
  assert len(np.unique(np.asarray(flat.losses))) > NUM_STEPS // 2
  first = run(model, batches, key=jax.random.key(4))
  again = run(model, batches, key=jax.random.key(4))
  other = run(model, batches, key=jax.random.key(5))
  np.testing.assert_array_equal(first.losses, again.losses)
  assert not np.allclose(first.losses, other.losses)


def test_range_test_diverges_at_a_huge_rate():
  result = run(Net(2), make_batches(2, 40), start_lr=1e-3, end_lr=1e4,
               num_steps=40, divergence_threshold=4.0)
  assert int(result.diverged_step) < 40


def test_sweep_of_modules_equals_hand_written_loops():
  models = [Net(3), Net(4)]
  batches = make_batches(3)
  hp = {'lr': jnp.asarray([0.01, 0.05])}
  result = optax_clr.nnx.sweep(
      models, lambda hp: optax.sgd(hp['lr']), loss_fn, hp, batches,
      has_aux=True, eval_fn=lambda m: jnp.sum(m.out.kernel[...]),
      eval_every=NUM_STEPS)
  for k, model in enumerate(models):
    lrs = np.full(NUM_STEPS, float(hp['lr'][k]))
    losses, _ = hand_range_test(model, batches, lrs)
    np.testing.assert_allclose(result.losses[k], losses, rtol=1e-4,
                               atol=1e-6)
    trained = optax_clr.nnx.merge(model, result, k)
    np.testing.assert_allclose(result.evals[k, 0],
                               jnp.sum(trained.out.kernel[...]), rtol=1e-6)


def test_bad_input():
  with pytest.raises(TypeError, match='model must be a flax.nnx.Module'):
    optax_clr.nnx.range_test(lambda x: x, optax.sgd, loss_fn, make_batches())
  with pytest.raises(TypeError, match='model_state'):
    run(Net(0), make_batches(), model_state={})


def test_import_without_flax_names_the_extra():
  script = ('import sys; sys.modules["flax"] = None\n'
            'import optax_clr\n'
            'optax_clr.triangular_schedule(0.1, 1.0, 4)(1)\n'
            'try:\n'
            '  optax_clr.nnx\n'
            'except ImportError as error:\n'
            '  print(error)\n')
  out = subprocess.run([sys.executable, '-c', script], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "optax_clr[flax]" in out.stdout
