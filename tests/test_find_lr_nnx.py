"""The example CNN's BatchNorm and dropout, in training and in --find-lr."""

import dataclasses
import functools
import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_clr
import optax_clr.nnx
from examples import data
from examples import metrics_log
from examples import model as model_lib
from examples import train
from examples.trainer import find_lr
from examples.trainer import steps

BATCH = 32


@functools.lru_cache(maxsize=1)
def _digits():
  return data.load_dataset('digits')


def _leaves(tree):
  """Host copies of a state's leaves, PRNG keys as their key data."""
  def host(leaf):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    return np.asarray(leaf)
  return [host(leaf) for leaf in jax.tree.leaves(tree)]


def _assert_same(a, b):
  for x, y in zip(_leaves(a), _leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def test_cnn_has_batch_norm_and_dropout():
  cnn = model_lib.make_model('cnn', _digits(), seed=0)
  stats = nnx.state(cnn, nnx.BatchStat)
  assert {path[-1] for path, _ in nnx.to_flat_state(stats)} == {'mean', 'var'}
  assert len(jax.tree.leaves(stats)) == 4  # two BatchNorms
  dropouts = [m for _, m in nnx.iter_graph(cnn) if isinstance(m, nnx.Dropout)]
  assert len(dropouts) == 1 and dropouts[0].rate > 0
  assert jax.tree.leaves(nnx.state(cnn, nnx.RngState))
  mlp = model_lib.make_model('mlp', _digits(), seed=0)
  assert not jax.tree.leaves(nnx.state(mlp, nnx.Not(nnx.Param)))


def _train_state(seed=0):
  config = train.Config(seed=seed)
  model = model_lib.make_model('cnn', _digits(), seed=seed)
  tx = train.make_optimizer(config, steps_per_epoch=44)
  return nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))


def test_train_step_updates_batch_stats_and_draws_dropout():
  graphdef, state = _train_state()
  images = jnp.asarray(_digits().train_images[:BATCH])
  labels = jnp.asarray(_digits().train_labels[:BATCH])
  new_state, metrics = train.train_step(graphdef, state, images, labels)

  (model, _) = nnx.merge(graphdef, state)
  (new_model, _) = nnx.merge(graphdef, new_state)
  old_mean = np.asarray(model.norm1.mean[...])
  new_mean = np.asarray(new_model.norm1.mean[...])
  np.testing.assert_array_equal(old_mean, 0.0)
  # One step of the running mean: momentum 0.9 of the old, 0.1 of the
  # batch mean of the first convolution's output (an independent NumPy
  # reference of the convolution: its kernel, SAME padding, no bias).
  kernel = np.asarray(model.conv1.kernel[...])
  x = np.pad(np.asarray(images), ((0, 0), (1, 1), (1, 1), (0, 0)))
  conv = sum(
      np.einsum('bhwc,cf->bhwf', x[:, i:i + 8, j:j + 8], kernel[i, j])
      for i in range(3) for j in range(3))
  np.testing.assert_allclose(new_mean, 0.1 * conv.mean((0, 1, 2)),
                             rtol=1e-4, atol=1e-6)
  assert int(new_model.dropout.rngs.count[...]) == int(
      model.dropout.rngs.count[...]) + 1
  assert np.isfinite(float(metrics['loss']))

  # Same state but another dropout draw: another training loss.
  (model, opt) = nnx.merge(graphdef, state)
  model.dropout.rngs.count[...] += 1
  _, other = train.train_step(graphdef, nnx.state((model, opt)), images,
                              labels)
  assert float(other['loss']) != float(metrics['loss'])


def test_eval_step_uses_running_stats_without_dropout():
  graphdef, state = _train_state()
  images = jnp.asarray(_digits().test_images[:100])
  labels = jnp.asarray(_digits().test_labels[:100])
  weights = jnp.ones(100)
  first = train.eval_step(graphdef, state, images, labels, weights)

  (model, opt) = nnx.merge(graphdef, state)
  model.dropout.rngs.count[...] += 7  # another dropout draw: no effect
  again = train.eval_step(graphdef, nnx.state((model, opt)), images, labels,
                          weights)
  assert float(again['loss_sum']) == float(first['loss_sum'])
  model.norm2.var[...] = model.norm2.var[...] * 4.0  # running stats: used
  moved = train.eval_step(graphdef, nnx.state((model, opt)), images, labels,
                          weights)
  assert float(moved['loss_sum']) != float(first['loss_sum'])


def test_find_lr_runs_through_nnx_and_leaves_the_model(monkeypatch, tmp_path):
  """--find-lr sweeps the real model; training starts from its init."""
  config = train.Config(epochs=1, find_lr=True, find_lr_steps=20,
                        find_lr_sweeps=2, progress=False)
  calls, first_states = [], []
  real_range_test = optax_clr.nnx.range_test

  def spy_range_test(model, optimizer, loss_fn, batches, **kwargs):
    before = nnx.to_pure_dict(nnx.state(model))

    def loss_and_stats(module, batch):
      loss, aux = loss_fn(module, batch)
      # The running mean after this step's batch, seen inside the sweep.
      return loss, {**aux, 'mean': jnp.mean(module.norm1.mean[...])}

    result = real_range_test(model, optimizer, loss_and_stats, batches,
                             **kwargs)
    calls.append((before, nnx.to_pure_dict(nnx.state(model)), kwargs))
    return result

  real_sweeps = find_lr.range_test
  results = []

  def spy_sweeps(*args):
    results.append(real_sweeps(*args))  # batched over the sweeps
    return results[-1]

  real_train_step = steps.train_step

  def spy_train_step(graphdef, state, *args):
    if not first_states:
      first_states.append(nnx.to_pure_dict(state)[0])  # the model's part
    return real_train_step(graphdef, state, *args)

  monkeypatch.setattr(optax_clr.nnx, 'range_test', spy_range_test)
  monkeypatch.setattr(steps, 'train_step', spy_train_step)
  monkeypatch.setattr(find_lr, 'range_test', spy_sweeps)
  final = train.train_and_evaluate(config, str(tmp_path))

  assert len(calls) == 1
  before, after, kwargs = calls[0]
  (result,) = results
  _assert_same(before, after)  # the user's module is bitwise unchanged
  assert 'key' in kwargs and kwargs['num_steps'] == 20
  means = np.asarray(result.aux['mean'])
  assert means.shape == (2, 20)
  # Threaded, the running mean grows from 0.1 of a batch mean towards the
  # batch mean (momentum 0.9); frozen, every step would read 0.1 of one.
  growth = np.abs(means[:, 10]) / np.abs(means[:, 0])
  assert np.all(growth > 3.0), growth
  # Training starts from the initial model, not from the swept one.
  fresh = model_lib.make_model('cnn', _digits(), seed=config.seed)
  _assert_same(nnx.to_pure_dict(nnx.state(fresh)), first_states[0])
  # The run trains between the bounds found, and keeps them on resume.
  assert final['max_lr'] == pytest.approx(4 * final['base_lr'])
  assert (final['base_lr'], final['max_lr']) != (train.Config.base_lr,
                                                 train.Config.max_lr)
  steps_per_epoch = len(_digits().train_images) // BATCH
  schedule = optax_clr.triangular_schedule(
      final['base_lr'], final['max_lr'], step_size=2 * steps_per_epoch)
  records = metrics_log.read_metrics(str(tmp_path / 'metrics.jsonl'))
  np.testing.assert_allclose([r['lr'] for r in records],
                             schedule(np.array([r['step'] for r in records])),
                             rtol=2 * np.finfo(np.float32).eps)
  assert os.path.getsize(tmp_path / 'range_test.png') > 0
  assert train.train_and_evaluate(config, str(tmp_path)) == final
  assert len(results) == 1  # no second range test


def test_find_lr_sweeps_flag_is_checked():
  config = dataclasses.replace(train.Config(), find_lr_sweeps=0)
  with pytest.raises(ValueError, match='--find-lr-sweeps'):
    train.check_config(config)
