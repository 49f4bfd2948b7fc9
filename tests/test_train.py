"""Tests of the example trainer on shrunken runs of the bundled digits."""

import dataclasses
import json
import os
import re
import shutil

import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import optax_clr
from examples import checkpointing
from examples import metrics_log
from examples import train

# The digits split has 1437 training images: 44 batches of 32.
STEPS_PER_EPOCH = 44
EPOCHS = 2
CONFIG = train.Config(epochs=EPOCHS, progress=False)
_ULP = 2 * np.finfo(np.float32).eps


def _read(workdir):
  return metrics_log.read_metrics(os.path.join(workdir, 'metrics.jsonl'))


def _saved_state(workdir, epoch):
  """The raw arrays of a checkpoint, without any target structure."""
  path = os.path.join(workdir, 'checkpoints', str(epoch), 'state')
  return ocp.StandardCheckpointer().restore(path)


def _corrupt(workdir, epoch):
  """Truncates every array file of a checkpoint, as a failing disk would."""
  root = os.path.join(workdir, 'checkpoints', str(epoch), 'state')
  for folder, _, files in os.walk(root):
    if os.path.basename(folder) == 'd':
      for name in files:
        path = os.path.join(folder, name)
        with open(path, 'rb') as f:
          payload = f.read()
        with open(path, 'wb') as f:
          f.write(payload[: len(payload) // 2])


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  final = train.train_and_evaluate(CONFIG, workdir)
  return workdir, final


def test_main_job_defaults():
  config = train.Config()
  assert (config.dataset, config.model, config.schedule, config.optimizer) == (
      'digits', 'cnn', 'triangular', 'sgd')


def test_loss_falls(uninterrupted):
  workdir, final = uninterrupted
  records = _read(workdir)
  first = np.mean([r['loss'] for r in records if r['epoch'] == 0])
  last = np.mean([r['loss'] for r in records if r['epoch'] == EPOCHS - 1])
  ends = [r for r in records if 'test_loss' in r]
  assert last < 0.5 * first
  # Epoch 2 ends at the cycle's peak rate, where the BatchNorm CNN's test
  # loss is noisy from epoch to epoch; against the untrained model's loss
  # (the first step's) it has fallen.
  assert ends[-1]['test_loss'] < 0.25 * records[0]['loss']
  assert final['test_accuracy'] > 0.8
  assert final['test_accuracy'] == ends[-1]['test_accuracy']


def test_logged_lr_is_the_schedule(uninterrupted):
  workdir, final = uninterrupted
  records = _read(workdir)
  schedule = optax_clr.triangular_schedule(
      CONFIG.base_lr, CONFIG.max_lr, step_size=2 * STEPS_PER_EPOCH)
  steps = np.arange(EPOCHS * STEPS_PER_EPOCH)
  np.testing.assert_array_equal([r['step'] for r in records], steps)
  np.testing.assert_array_equal([r['epoch'] for r in records],
                                steps // STEPS_PER_EPOCH)
  # Inside the compiled step XLA may fuse the formula differently (1 ulp).
  np.testing.assert_allclose([r['lr'] for r in records], schedule(steps),
                             rtol=_ULP)
  assert final['lr'] == records[-1]['lr']


def test_outputs(uninterrupted):
  workdir, final = uninterrupted
  records = _read(workdir)
  assert set(records[0]) == {'step', 'epoch', 'lr', 'loss', 'accuracy'}
  ends = [r['step'] for r in records if 'test_accuracy' in r]
  assert ends == [STEPS_PER_EPOCH * (e + 1) - 1 for e in range(EPOCHS)]
  for name in ('loss', 'accuracy', 'lr', 'training'):
    assert os.path.getsize(os.path.join(workdir, f'{name}.png')) > 0
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['1', '2']
  assert final['epoch'] == EPOCHS
  assert final['step'] == EPOCHS * STEPS_PER_EPOCH


def test_resume_reproduces_the_uninterrupted_run(uninterrupted, tmp_path):
  reference, reference_final = uninterrupted
  workdir = str(tmp_path)
  train.train_and_evaluate(dataclasses.replace(CONFIG, epochs=1), workdir)
  # A kill during epoch 2 leaves logged steps and a partial checkpoint.
  with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
    f.write(json.dumps({'step': 44, 'epoch': 1, 'lr': 1.0, 'loss': 9.0,
                        'accuracy': 0.0}) + '\n')
  partial = os.path.join(workdir, 'checkpoints', '2.orbax-checkpoint-tmp-1')
  os.makedirs(partial)
  with open(os.path.join(partial, 'junk'), 'w') as f:
    f.write('half written')

  final = train.train_and_evaluate(CONFIG, workdir)

  assert final == reference_final
  with open(os.path.join(workdir, 'metrics.jsonl')) as f, open(
      os.path.join(reference, 'metrics.jsonl')) as g:
    assert f.read() == g.read()
  resumed, expected = _saved_state(workdir, 2), _saved_state(reference, 2)
  for got, want in zip(_leaves(resumed), _leaves(expected), strict=True):
    np.testing.assert_array_equal(got, want)


def _leaves(tree):
  """The leaves of a state; PRNG keys (dropout's stream) as their key data."""
  import jax  # pylint: disable=g-import-not-at-top
  return [jax.random.key_data(leaf)
          if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf
          for leaf in jax.tree.leaves(tree)]


def _copy(workdir, tmp_path):
  """A private copy of a shared run: what a test does to it stays there."""
  copy = str(tmp_path / 'run')
  shutil.copytree(workdir, copy)
  return copy


def test_resume_refuses_a_different_run(uninterrupted, tmp_path):
  reference, _ = uninterrupted
  workdir = _copy(reference, tmp_path)
  changed = dataclasses.replace(CONFIG, max_lr=0.2)
  with pytest.raises(ValueError, match=r'max_lr: 0\.1 -> 0\.2'):
    train.train_and_evaluate(changed, workdir)
  assert _read(workdir) == _read(reference)


def test_finished_run_returns_its_metrics(uninterrupted, tmp_path):
  reference, final = uninterrupted
  workdir = _copy(reference, tmp_path)
  assert train.train_and_evaluate(CONFIG, workdir) == final
  assert _read(workdir) == _read(reference)


def _flip_a_byte(workdir, epoch):
  path = os.path.join(workdir, 'checkpoints', str(epoch), 'record', 'metadata')
  with open(path, 'r+b') as f:
    first = f.read(1)
    f.seek(0)
    f.write(bytes([first[0] ^ 1]))


def _drop_digest(workdir, epoch):
  # A kill between Orbax's rename and the digest leaves no digest.
  os.remove(os.path.join(workdir, 'checkpoints', str(epoch),
                         checkpointing.DIGEST_FILE))


@pytest.mark.parametrize('damage', [_corrupt, _flip_a_byte, _drop_digest])
def test_damaged_checkpoint_falls_back_to_the_previous_one(
    uninterrupted, tmp_path, capsys, damage):
  reference, reference_final = uninterrupted
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  damage(workdir, 2)

  final = train.train_and_evaluate(CONFIG, workdir)

  output = capsys.readouterr().out
  assert 'checkpoints/2 is damaged' in output
  assert 'Resuming' in output and 'after epoch 1' in output
  assert final == reference_final
  assert _read(workdir) == _read(reference)
  moved = os.listdir(os.path.join(workdir, checkpointing.CORRUPT_SUBDIR))
  assert len(moved) == 1 and moved[0].startswith('2-')


def test_all_checkpoints_corrupt_stops(uninterrupted, tmp_path, capsys):
  reference, _ = uninterrupted
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  for epoch in (1, 2):
    _corrupt(workdir, epoch)

  status = train.main(['--workdir', workdir, '--epochs', '3', '--no-progress'])

  assert status == 1
  stderr = capsys.readouterr().err
  assert 'No complete checkpoint in' in stderr
  assert 'refusing to start from scratch' in stderr
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['1', '2']
  assert _read(workdir) == _read(reference)


def test_non_finite_loss_stops_and_keeps_the_checkpoint(tmp_path, capsys):
  # The rate grows 1e6x per epoch of 2 steps: finite first, then divergent
  # (BatchNorm keeps the CNN's loss finite up to rates near 1e20).
  workdir = str(tmp_path / 'run')
  args = ['--workdir', workdir, '--schedule', 'exponential_decay',
          '--max-lr', '0.01', '--decay-rate', '1e6', '--step-size-epochs',
          '1', '--batch-size', '512', '--epochs', '8']

  status = train.main([*args, '--no-progress'])

  assert status == 1
  stderr = capsys.readouterr().err
  match = re.search(r'Non-finite training loss \S+ at step (\d+) \(learning'
                    r' rate ([\d.e+-]+)\)', stderr)
  assert match, stderr
  step, lr = int(match.group(1)), float(match.group(2))
  steps_per_epoch = 1437 // 512
  schedule = optax_clr.exponential_decay_schedule(
      0.01, 1e6, decay_steps=steps_per_epoch)
  assert lr == pytest.approx(float(schedule(step)), rel=1e-5)
  good_epochs = step // steps_per_epoch
  assert good_epochs >= 1
  checkpoints = os.listdir(os.path.join(workdir, 'checkpoints'))
  assert max(int(name) for name in checkpoints) == good_epochs
  assert [r['step'] for r in _read(workdir)] == list(range(step))


def test_cli_mlp_adam(tmp_path, capsys):
  args = ['--workdir', str(tmp_path), '--epochs', '1', '--model', 'mlp',
          '--optimizer', 'adam', '--schedule', 'one_cycle', '--base-lr',
          '1e-4', '--max-lr', '3e-3', '--cycle-momentum', '--no-progress']
  assert train.main(args) == 0
  final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert final['epoch'] == 1
  records = _read(str(tmp_path))
  assert records[0]['lr'] == pytest.approx(1e-4)
  assert max(r['lr'] for r in records) == pytest.approx(3e-3, rel=1e-3)


STEPS = 10


@pytest.mark.parametrize('name,expected', [
    ('fixed', optax.constant_schedule(0.01)),
    ('triangular', optax_clr.triangular_schedule(0.01, 0.1, 20)),
    ('triangular2', optax_clr.triangular2_schedule(0.01, 0.1, 20)),
    ('exp_range', optax_clr.exp_range_schedule(0.01, 0.1, 20, gamma=0.995)),
    ('one_cycle', optax_clr.one_cycle_schedule(0.1, 80, div_factor=10.0)),
    ('step_decay', optax_clr.step_decay_schedule(0.1, 20, factor=0.5)),
    ('exponential_decay',
     optax_clr.exponential_decay_schedule(0.1, 0.5, decay_steps=20)),
    ('inverse_time_decay',
     optax_clr.inverse_time_decay_schedule(0.1, 0.5, decay_steps=20)),
])
def test_make_schedule(name, expected):
  schedule = train.make_schedule(train.Config(schedule=name), STEPS)
  counts = np.arange(0, 8 * STEPS + 5)
  np.testing.assert_array_equal(schedule(counts), expected(counts))


@pytest.mark.parametrize('optimizer,key', [('sgd', 'momentum'), ('adam', 'b1')])
def test_cyclic_momentum_is_read_from_the_state(optimizer, key):
  config = train.Config(optimizer=optimizer, cycle_momentum=True)
  tx = train.make_optimizer(config, STEPS)
  lr = train.make_schedule(config, STEPS)
  momentum = optax_clr.cyclic_momentum_schedule(0.85, 0.95, 2 * STEPS)
  params = {'w': np.ones(3, np.float32)}
  state = tx.init(params)
  for count in range(3 * STEPS):
    _, state = tx.update(params, state, params)
    np.testing.assert_allclose(state.hyperparams['learning_rate'], lr(count),
                               rtol=_ULP)
    np.testing.assert_allclose(state.hyperparams[key], momentum(count),
                               rtol=_ULP)


def test_cycle_momentum_needs_a_cycle():
  config = train.Config(schedule='step_decay', cycle_momentum=True)
  with pytest.raises(ValueError, match="schedule='step_decay'"):
    train.make_optimizer(config, STEPS)


def test_one_cycle_needs_a_positive_base_lr():
  config = train.Config(schedule='one_cycle', base_lr=0.0)
  with pytest.raises(ValueError, match='base_lr=0.0'):
    train.make_schedule(config, STEPS)


def test_unknown_schedule():
  with pytest.raises(ValueError, match="'cosine'"):
    train.make_schedule(train.Config(schedule='cosine'), STEPS)
