"""The example CNN's BatchNorm and dropout, in training and in --find-lr."""

import dataclasses
import functools
import json
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


# A cheaper search than the trainer's (find_lr's defaults), run in its place.
_SMALL = {'num_candidates': 4, 'num_seeds': 1, 'num_rungs': 2}


def _rows_of(images, reference):
  """For each image, the rows of ``reference`` holding exactly it."""
  where = {}
  for row, image in enumerate(reference):
    where.setdefault(image.tobytes(), set()).add(row)
  return [where.get(image.tobytes(), set()) for image in images]


def test_find_lr_uses_nnx_find_lr_on_a_validation_split(monkeypatch,
                                                         tmp_path):
  """--find-lr runs optax_clr.nnx.find_lr; training takes its clr_bounds."""
  config = train.Config(epochs=1, find_lr=True, find_lr_steps=20,
                        find_lr_sweeps=2, progress=False)
  dataset = _digits()
  calls, first_states = [], []
  real_find_lr = optax_clr.nnx.find_lr

  def spy_find_lr(model, optimizer, loss_fn, batches, eval_fn, **kwargs):
    before = nnx.to_pure_dict(nnx.state(model))
    score = float(eval_fn(nnx.clone(model)))
    result = real_find_lr(model, optimizer, loss_fn, batches, eval_fn,
                          **{**kwargs, **_SMALL})
    calls.append({'before': before, 'after': nnx.to_pure_dict(
        nnx.state(model)), 'batches': batches, 'score': score,
                  'kwargs': kwargs, 'result': result})
    return result

  real_train_step = steps.train_step

  def spy_train_step(graphdef, state, *args):
    if not first_states:
      first_states.append(nnx.to_pure_dict(state)[0])  # the model's part
    return real_train_step(graphdef, state, *args)

  monkeypatch.setattr(optax_clr.nnx, 'find_lr', spy_find_lr)
  monkeypatch.setattr(steps, 'train_step', spy_train_step)
  final = train.train_and_evaluate(config, str(tmp_path))

  (call,) = calls
  _assert_same(call['before'], call['after'])  # the module is unchanged
  kwargs, result = call['kwargs'], call['result']
  assert kwargs['num_range_tests'] == 2 and kwargs['range_test_steps'] == 20
  assert kwargs['has_aux'] and 'key' in kwargs
  assert not set(_SMALL) & set(kwargs)  # the trainer keeps the defaults

  # The validation split: 20 % of the training rows, the rest trained on.
  fit, validation = find_lr.validation_split(config, dataset)
  n = len(dataset.train_labels)
  assert len(validation) == round(0.2 * n) and len(fit) + len(validation) == n
  assert not set(fit.tolist()) & set(validation.tolist())
  # The budget: one epoch (config.epochs) of batches of the fit rows only.
  images, labels = call['batches']
  assert images.shape == (len(fit) // BATCH, BATCH, 8, 8, 1)
  flat = np.asarray(images).reshape(-1, 8, 8, 1)
  for rows, label in zip(_rows_of(flat, dataset.train_images),
                         np.asarray(labels).reshape(-1)):
    assert rows & set(fit.tolist()), 'a batch row outside the fit rows'
    assert label in dataset.train_labels[sorted(rows)]
  # eval_fn: the cross-entropy of the untrained model on the validation
  # rows, in inference mode, against a NumPy log-softmax.
  model = model_lib.make_model('cnn', dataset, seed=config.seed)
  model.eval()
  logits = np.asarray(model(jnp.asarray(dataset.train_images[validation])),
                      np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  want = -np.mean(log_p[np.arange(len(validation)),
                        dataset.train_labels[validation]])
  assert call['score'] == pytest.approx(want, rel=1e-5)

  # The rate: the candidate with the lowest last-rung score; the bounds:
  # half and twice it (a ratio of 4), as docs/api.rst states.
  last = np.where(np.isnan(result.scores[-1]), np.inf, result.scores[-1])
  rate = float(result.candidates[int(np.argmin(last))])
  assert final['max_lr'] == pytest.approx(2 * rate, rel=1e-12)
  assert final['base_lr'] == pytest.approx(rate / 2, rel=1e-12)
  # Cost: the range tests, then 4 candidates for num_steps // 2 steps and
  # the best 2 for the rest (one seed each).
  num_steps = len(fit) // BATCH
  assert result.cost_steps == 2 * 20 + 4 * (num_steps // 2) + 2 * (
      num_steps - num_steps // 2)
  with open(tmp_path / 'find_lr.json') as f:
    saved = json.load(f)
  assert saved['learning_rate'] == rate
  assert saved['clr_bounds'] == [final['base_lr'], final['max_lr']]
  assert saved['cost_steps'] == result.cost_steps
  assert saved['candidates'] == result.candidates.tolist()
  assert os.path.getsize(tmp_path / 'range_test.png') > 0

  # Training starts from the initial model and on the whole training set,
  # between the bounds found; it keeps them on resume.
  fresh = model_lib.make_model('cnn', dataset, seed=config.seed)
  _assert_same(nnx.to_pure_dict(nnx.state(fresh)), first_states[0])
  steps_per_epoch = n // BATCH
  schedule = optax_clr.triangular_schedule(
      final['base_lr'], final['max_lr'], step_size=2 * steps_per_epoch)
  records = metrics_log.read_metrics(str(tmp_path / 'metrics.jsonl'))
  assert len(records) == steps_per_epoch
  np.testing.assert_allclose([r['lr'] for r in records],
                             schedule(np.array([r['step'] for r in records])),
                             rtol=2 * np.finfo(np.float32).eps)
  assert train.train_and_evaluate(config, str(tmp_path)) == final
  assert len(calls) == 1  # no second search


def test_find_lr_refuses_a_batch_larger_than_its_rows(tmp_path):
  # 1437 training rows, 1150 after the validation split.
  config = train.Config(epochs=1, find_lr=True, batch_size=1200,
                        progress=False)
  with pytest.raises(ValueError, match='--batch-size 1200 .* 1150'):
    train.train_and_evaluate(config, str(tmp_path))


def test_find_lr_sweeps_flag_is_checked():
  config = dataclasses.replace(train.Config(), find_lr_sweeps=0)
  with pytest.raises(ValueError, match='--find-lr-sweeps'):
    train.check_config(config)
