"""The vmapped K-model sweep equals K separate trainer runs; the CLI works."""

import os
import subprocess
import sys
import textwrap

from flax import nnx
import jax
import numpy as np
import pytest

import optax_clr
from examples import data
from examples import model as model_lib
from examples import multi_model
from examples import sweep
from examples import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOMENTUM = 0.9
NUM_STEPS = 12
EVAL_EVERY = 6
BATCH_SIZE = 16
# Two models that differ in every swept hyperparameter and in the seed.
HPARAMS = {'base_lr': [0.01, 0.05], 'max_lr': [0.05, 0.2], 'step_size': [3, 5]}
SEEDS = [0, 1]


@pytest.fixture(scope='module')
def dataset():
  return data.load_dataset('digits')


@pytest.fixture(scope='module')
def program(dataset):
  return multi_model.prepare(
      dataset,
      model_name='mlp',
      optimizer_fn=multi_model.sgd_with(sweep.triangular_fn, MOMENTUM),
      hparams=HPARAMS,
      seeds=SEEDS,
      num_steps=NUM_STEPS,
      batch_size=BATCH_SIZE,
      eval_every=EVAL_EVERY,
  )


@pytest.fixture(scope='module')
def batched(program):
  return program.run()


def _model_hparams(k):
  return {name: values[k] for name, values in HPARAMS.items()}


def _trainer_run(dataset, k, order):
  """Model ``k`` trained by the trainer's own jitted ``train.train_step``."""
  module = model_lib.make_model('mlp', dataset, seed=SEEDS[k])
  tx = multi_model.sgd_with(sweep.triangular_fn, MOMENTUM)(_model_hparams(k))
  optimizer = nnx.Optimizer(module, tx, wrt=nnx.Param)
  graphdef, state = nnx.split((module, optimizer))
  lrs, losses = [], []
  for indices in order.reshape(-1, BATCH_SIZE):
    state, metrics = train.train_step(
        graphdef, state, dataset.train_images[indices],
        dataset.train_labels[indices],
    )
    lrs.append(float(metrics['lr']))
    losses.append(float(metrics['loss']))
  module, _ = nnx.merge(graphdef, state)
  return nnx.to_pure_dict(nnx.state(module, nnx.Param)), lrs, losses


def _close(actual, expected):
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('k', [0, 1])
def test_vmapped_models_equal_separate_trainer_runs(dataset, program,
                                                    batched, k):
  state, history = batched
  order = np.asarray(program.orders[k])
  params, lrs, losses = _trainer_run(dataset, k, order)
  jax.tree.map(_close, nnx.to_pure_dict(multi_model.unstack(state.params, k)),
               params)
  _close(history.lr[k], lrs)
  _close(history.loss[k], losses)


@pytest.mark.parametrize('k', [0, 1])
def test_vmapped_models_equal_single_model_program(program, batched, k):
  state, history = batched
  single_state, single_history = program.run(slice(k, k + 1))
  jax.tree.map(_close, multi_model.unstack(state, k),
               multi_model.unstack(single_state, 0))
  jax.tree.map(_close, multi_model.unstack(history, k),
               multi_model.unstack(single_history, 0))


def test_evaluation_is_the_trainers(dataset, program, batched):
  """Test accuracy at the end equals ``train.evaluate`` on the final model."""
  state, history = batched
  module = model_lib.make_model('mlp', dataset, seed=SEEDS[0])
  graphdef, _, _ = nnx.split(module, nnx.Param, ...)
  final = nnx.merge(graphdef, multi_model.unstack(state.params, 0),
                    multi_model.unstack(state.rest, 0))
  final.eval()
  _, logits = train.loss_fn(final, dataset.test_images, dataset.test_labels)
  accuracy = np.mean(np.argmax(logits, -1) == dataset.test_labels)
  _close(history.test_accuracy[0, -1], accuracy)


def test_logged_lr_is_each_models_schedule(batched):
  _, history = batched
  assert history.lr.shape == (len(SEEDS), NUM_STEPS)
  assert history.test_accuracy.shape == (len(SEEDS), NUM_STEPS // EVAL_EVERY)
  for k in range(len(SEEDS)):
    hp = _model_hparams(k)
    schedule = optax_clr.triangular_schedule(
        hp['base_lr'], hp['max_lr'], hp['step_size']
    )
    _close(history.lr[k], [schedule(step) for step in range(NUM_STEPS)])


def test_batch_order_is_the_trainers_data_order(dataset):
  images, labels = dataset.train_images, dataset.train_labels
  per_epoch = len(labels) // BATCH_SIZE
  order = multi_model.batch_order(len(labels), BATCH_SIZE, per_epoch + 3, seed=7)
  assert order.shape == (per_epoch + 3, BATCH_SIZE)
  rng = np.random.default_rng(7)
  for epoch in range(2):
    _, want = data.epoch_batches(images, labels, BATCH_SIZE, rng)
    got = labels[order[epoch * per_epoch:(epoch + 1) * per_epoch]]
    np.testing.assert_array_equal(got, want[:len(got)])


def test_prepare_refuses_a_misaligned_eval(dataset):
  with pytest.raises(ValueError, match='eval_every'):
    multi_model.prepare(
        dataset, model_name='mlp',
        optimizer_fn=multi_model.sgd_with(sweep.triangular_fn, MOMENTUM),
        hparams=HPARAMS, seeds=SEEDS, num_steps=10, batch_size=BATCH_SIZE,
        eval_every=4,
    )


def test_heatmap_goes_under_runs_by_default():
  assert sweep.parse_args([]).heatmap == os.path.join(
      'runs', 'sweep_heatmap.png')


def test_main_prints_table_heatmap_and_speedup(tmp_path, capsys):
  heatmap = tmp_path / 'heatmap.png'
  result = sweep.main([
      '--model', 'mlp', '--max-lrs', '0.05,0.1', '--step-size-epochs', '1,2',
      '--seeds', '0,1', '--epochs', '1', '--batch-size', '64', '--repeats',
      '1', '--timing-steps', '5', '--heatmap', str(heatmap),
  ])
  assert heatmap.read_bytes()[:4] == b'\x89PNG'
  assert result['accuracy'].shape == (2 * 2 * 2,)
  assert np.all((result['accuracy'] >= 0) & (result['accuracy'] <= 1))
  rows = result['table'].splitlines()
  assert len(rows) == 2 + 2  # header, rule, one row per max_lr
  assert rows[2].startswith('| 0.05 |') and ' ± ' in rows[2]
  for timing in (result['timing'], result['step_timing']):
    assert timing.num_models == 8
    assert timing.vmapped_seconds > 0 and timing.sequential_seconds > 0
  out = capsys.readouterr().out
  assert out.count('speedup') == 2 and result['table'] in out


def test_models_are_sharded_over_devices():
  script = textwrap.dedent("""
      import numpy as np, jax
      from examples import data, multi_model, sweep
      assert jax.device_count() == 2
      program = multi_model.prepare(
          data.load_dataset('digits'), model_name='mlp',
          optimizer_fn=multi_model.sgd_with(sweep.triangular_fn, 0.9),
          hparams={'base_lr': [0.01, 0.05], 'max_lr': [0.05, 0.2],
                   'step_size': [3, 5]},
          seeds=[0, 1], num_steps=4, batch_size=16, eval_every=2)
      state, history = program.run()
      leaf = jax.tree.leaves(state.params)[0]
      assert len(leaf.sharding.device_set) == 2, leaf.sharding
      for k in range(2):
        _, single = program.run(slice(k, k + 1))
        np.testing.assert_allclose(history.loss[k], single.loss[0], rtol=1e-5)
      print('ok')
  """)
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  completed = subprocess.run(
      [sys.executable, '-W', 'error', '-c', script], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=300, check=False,
  )
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert completed.stdout.strip().endswith('ok')
