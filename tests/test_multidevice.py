"""The trainer sharded over 4 CPU devices reproduces the 1-device run."""

import os
import subprocess
import sys

import numpy as np

from examples import metrics_log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'examples', 'train.py')


def _train(workdir, devices):
  env = {
      **os.environ,
      'JAX_PLATFORMS': 'cpu',
      'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}',
  }
  result = subprocess.run(
      [sys.executable, SCRIPT, '--workdir', str(workdir), '--epochs', '1',
       '--no-progress'],
      cwd=workdir.parent, env=env, capture_output=True, text=True,
      timeout=300, check=False,
  )
  assert result.returncode == 0, result.stderr
  assert f'devices: {devices} (cpu)' in result.stdout
  return metrics_log.read_metrics(os.path.join(workdir, 'metrics.jsonl'))


def test_four_devices_match_one(tmp_path):
  single = _train(tmp_path / 'one', 1)
  sharded = _train(tmp_path / 'four', 4)
  assert [r['step'] for r in sharded] == [r['step'] for r in single]
  # The schedule does not depend on the devices at all.
  assert [r['lr'] for r in sharded] == [r['lr'] for r in single]
  # The batch mean (and BatchNorm's batch statistics) are reduced across
  # devices in another order: float noise, and the same dropout masks. With
  # BatchNorm and dropout, training amplifies that noise (it doubles every
  # few steps, as a 1e-7 change of the initial weights does on one device),
  # so the runs agree to float noise over the first steps (BatchNorm on a
  # per-device batch of 8 would differ by percents at step 0) and to within
  # a few test examples at the end.
  early = slice(0, 12)
  for key in ('loss', 'accuracy'):
    np.testing.assert_allclose([r[key] for r in sharded[early]],
                               [r[key] for r in single[early]], rtol=1e-4,
                               atol=1e-5)
  np.testing.assert_allclose(sharded[-1]['test_loss'],
                             single[-1]['test_loss'], rtol=5e-2)
  np.testing.assert_allclose(sharded[-1]['test_accuracy'],
                             single[-1]['test_accuracy'], atol=2 / 360)


_CHECK_SHARDINGS = '''
import jax, numpy as np
from examples import data, parallel, train
from examples.trainer import resume
dataset = data.load_dataset()
run = resume.Run(train.Config(), dataset, parallel.Placement(), 1, print)
run, state = run.build(run.config)
images, labels = data.epoch_batches(
    dataset.train_images, dataset.train_labels, 32, np.random.default_rng(0))
batch = run.placement.shard(images[0])
state, _ = train.train_step(
    run.graphdef, state, batch, run.placement.shard(labels[0]))
assert jax.device_count() == 4
assert batch.sharding.spec == jax.P('data'), batch.sharding
assert len(batch.addressable_shards) == 4
assert batch.addressable_shards[0].data.shape[0] == 8
for leaf in jax.tree.leaves(state):
  assert leaf.sharding.is_fully_replicated, leaf.sharding
# A global batch the 4 devices cannot split evenly is refused up front,
# naming the batch size and the device count; nothing is trained.
import os, tempfile
workdir = tempfile.mkdtemp()
try:
  train.train_and_evaluate(train.Config(batch_size=30, progress=False),
                           workdir)
except ValueError as error:
  message = str(error)
  assert 'batch' in message and '30' in message, message
  assert '4 devices' in message, message
else:
  raise AssertionError('batch_size=30 on 4 devices was accepted')
assert not os.path.exists(os.path.join(workdir, 'metrics.jsonl'))
assert not os.path.exists(os.path.join(workdir, 'checkpoints', '1'))
print('ok')
'''


def test_batch_sharded_state_replicated():
  result = subprocess.run(
      [sys.executable, '-c', _CHECK_SHARDINGS], cwd=REPO,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu',
           'XLA_FLAGS': '--xla_force_host_platform_device_count=4'},
      capture_output=True, text=True, timeout=300, check=False,
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == 'ok'
