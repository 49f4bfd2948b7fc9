"""The example trainer under crashes, kills, concurrent use and bad flags.

Each test reproduces a failure a user can cause (a kill during a write, a
second trainer on the same workdir, a flag out of range, a resume with other
flags, a full disk) on short real runs of the bundled digits.
"""

import dataclasses
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from examples import checkpointing
from tests import file_size_limit
from examples import metrics_log
from examples import storage_errors
from examples import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 1437 digits in batches of 256: 5 steps per epoch.
STEPS_PER_EPOCH = 5
CONFIG = train.Config(epochs=2, batch_size=256, progress=False)
FLAGS = ('--batch-size', '256', '--no-progress')


class _Killed(BaseException):
  """Stands for a SIGKILL: nothing in the trainer catches it."""


def _metrics_path(workdir):
  return os.path.join(workdir, 'metrics.jsonl')


def _read_bytes(path):
  with open(path, 'rb') as f:
    return f.read()


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted two-epoch run: its workdir and final metrics."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  return workdir, train.train_and_evaluate(CONFIG, workdir)


@pytest.fixture
def copy(reference, tmp_path):
  """A private copy of the reference workdir."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference[0], workdir)
  return workdir


def _after_one_epoch(tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(dataclasses.replace(CONFIG, epochs=1), workdir)
  return workdir


def _assert_same_run(workdir, reference, final):
  reference_dir, reference_final = reference
  assert final == reference_final
  assert _read_bytes(_metrics_path(workdir)) == _read_bytes(
      _metrics_path(reference_dir))


# 1: metrics.jsonl survives a crash during an append.


def test_truncated_last_metrics_line_is_dropped(reference, tmp_path):
  workdir = _after_one_epoch(tmp_path)
  # A kill while epoch 2 was appended: one whole record, then a cut one.
  whole = json.dumps({'step': 5, 'epoch': 1, 'lr': 1.0, 'loss': 9.0,
                      'accuracy': 0.0})
  with open(_metrics_path(workdir), 'a') as f:
    f.write(whole + '\n' + whole[:17])

  final = train.train_and_evaluate(CONFIG, workdir)

  _assert_same_run(workdir, reference, final)


def test_damaged_metrics_line_before_the_checkpoint_is_an_error(copy):
  path = _metrics_path(copy)
  with open(path) as f:
    lines = f.readlines()
  lines[2] = lines[2][:20] + '\n'
  with open(path, 'w') as f:
    f.writelines(lines)
  before = _read_bytes(path)

  with pytest.raises(ValueError) as info:
    train.train_and_evaluate(dataclasses.replace(CONFIG, epochs=3), copy)

  assert f'{path}, line 3' in str(info.value)
  assert _read_bytes(path) == before


def test_metrics_missing_a_checkpointed_epoch_is_an_error(copy):
  path = _metrics_path(copy)
  with open(path) as f:
    lines = f.readlines()
  with open(path, 'w') as f:
    f.writelines(lines[:STEPS_PER_EPOCH + 2])

  with pytest.raises(ValueError, match='after epoch 2') as info:
    train.train_and_evaluate(dataclasses.replace(CONFIG, epochs=3), copy)

  assert path in str(info.value)


def test_metrics_are_on_disk_line_by_line(reference):
  # Every record is one whole line: the file ends with a newline and each
  # line is a JSON object (what a reader killed mid-run relies on).
  payload = _read_bytes(_metrics_path(reference[0]))
  assert payload.endswith(b'\n')
  for line in payload.splitlines():
    assert isinstance(json.loads(line), dict)


# 2: one trainer per workdir.

_HOLD_LOCK = '''
import sys
from examples import checkpointing
lock = checkpointing.WorkdirLock(sys.argv[1])
lock.acquire()
print('locked', flush=True)
sys.stdin.read()
'''


def test_second_trainer_on_a_workdir_stops_at_once(tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  holder = subprocess.Popen(
      [sys.executable, '-c', _HOLD_LOCK, workdir], cwd=REPO,
      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  try:
    assert holder.stdout.readline().strip() == 'locked'

    status = train.main(['--workdir', workdir, '--epochs', '1', *FLAGS])

    assert status == 1
    stderr = capsys.readouterr().err
    assert workdir in stderr
    assert f'pid {holder.pid}' in stderr and socket.gethostname() in stderr
    assert sorted(os.listdir(workdir)) == [checkpointing.LOCK_FILE]

    # A holder killed with SIGKILL leaves the file but not the lock.
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert train.main(['--workdir', workdir, '--epochs', '1', *FLAGS]) == 0
  finally:
    if holder.poll() is None:
      holder.kill()
      holder.wait(timeout=60)
    holder.stdout.close()
    holder.stdin.close()


def test_the_lock_is_released_when_a_run_fails(tmp_path):
  workdir = str(tmp_path / 'run')
  lock = checkpointing.WorkdirLock(workdir)
  lock.acquire()
  with pytest.raises(checkpointing.WorkdirError, match='already in use'):
    train.train_and_evaluate(CONFIG, workdir)
  lock.release()
  with pytest.raises(ValueError, match='--eval-batch-size'):
    train.train_and_evaluate(
        dataclasses.replace(CONFIG, eval_batch_size=0), workdir)
  lock.acquire()
  lock.release()


# 3: flags out of range are refused before any training.

_BAD_FLAGS = [
    (['--eval-batch-size', '-5'], '--eval-batch-size'),
    (['--eval-batch-size', '0'], '--eval-batch-size'),
    (['--step-size-epochs', '0'], '--step-size-epochs'),
    (['--step-size-epochs', '-1'], '--step-size-epochs'),
    (['--step-size-epochs', '0.01'], '--step-size-epochs'),
    (['--batch-size', '0'], '--batch-size'),
    (['--batch-size', '-32'], '--batch-size'),
    (['--batch-size', '5000'], '--batch-size'),
    (['--keep-checkpoints', '0'], '--keep-checkpoints'),
    (['--momentum', '1'], '--momentum'),
    (['--momentum', '-0.1'], '--momentum'),
    (['--momentum', 'nan'], '--momentum'),
    (['--epochs', '0'], '--epochs'),
    (['--epochs', '-2'], '--epochs'),
    (['--base-lr', '-0.01'], '--base-lr'),
    (['--base-lr', 'inf'], '--base-lr'),
    (['--max-lr', 'nan'], '--max-lr'),
    (['--max-lr', '0.001'], '--max-lr'),
    (['--schedule', 'exp_range', '--gamma', '0'], '--gamma'),
    (['--schedule', 'exp_range', '--gamma', '1.5'], '--gamma'),
    (['--schedule', 'step_decay', '--decay-rate', '0'], '--decay-rate'),
    (['--schedule', 'step_decay', '--decay-rate', '2'], '--decay-rate'),
    (['--schedule', 'inverse_time_decay', '--decay-rate', '-1'],
     '--decay-rate'),
    (['--cycle-momentum', '--base-momentum', '-0.5'], '--base-momentum'),
    (['--cycle-momentum', '--max-momentum', '1'], '--max-momentum'),
    (['--cycle-momentum', '--base-momentum', '0.9', '--max-momentum', '0.8'],
     '--base-momentum'),
    (['--seed', '-1'], '--seed'),
    (['--find-lr', '--find-lr-steps', '1'], '--find-lr-steps'),
]


@pytest.mark.parametrize(
    'flags,name', _BAD_FLAGS, ids=[' '.join(f) for f, _ in _BAD_FLAGS])
def test_bad_flag_is_refused_before_training(tmp_path, capsys, flags, name):
  workdir = tmp_path / 'run'

  status = train.main(['--workdir', str(workdir), '--epochs', '1', *FLAGS,
                       *flags])

  assert status == 1
  stderr = capsys.readouterr().err
  assert name in stderr, stderr
  assert not (workdir / 'metrics.jsonl').exists()
  assert not (workdir / 'checkpoints').exists()


@pytest.mark.parametrize('flags,name', [
    (['--num-processes', '0', '--process-id', '0'], '--num-processes'),
    (['--num-processes', '2', '--process-id', '2'], '--process-id'),
    (['--num-processes', '2', '--process-id', '-1'], '--process-id'),
])
def test_bad_process_flags(tmp_path, capsys, flags, name):
  with pytest.raises(SystemExit):
    train.main(['--workdir', str(tmp_path), '--coordinator', '127.0.0.1:1',
                *flags])
  assert name in capsys.readouterr().err


# 4: a resume with other flags is refused by name, before Orbax reads.


@pytest.mark.parametrize('change', [
    {'optimizer': 'adam'}, {'model': 'mlp'}, {'cycle_momentum': True},
    {'momentum': 0.0}, {'seed': 1}, {'batch_size': 128},
])
def test_resume_with_another_structure_names_the_change(copy, change):
  changed = dataclasses.replace(CONFIG, **change)
  with pytest.raises(ValueError, match='different run') as info:
    train.train_and_evaluate(changed, copy)
  message = str(info.value)
  (name, value), = change.items()
  assert f'{name}: {getattr(CONFIG, name)!r} -> {value!r}' in message
  assert len(message) < 400, message


def test_one_cycle_resume_does_not_offer_more_epochs(tmp_path):
  config = dataclasses.replace(CONFIG, schedule='one_cycle', epochs=1)
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  with pytest.raises(ValueError, match=r'epochs: 1 -> 2') as info:
    train.train_and_evaluate(dataclasses.replace(config, epochs=2), workdir)
  assert 'may grow' not in str(info.value)
  assert 'one_cycle' in str(info.value)


def test_fewer_epochs_than_trained_is_refused(copy):
  with pytest.raises(ValueError, match='--epochs 1') as info:
    train.train_and_evaluate(dataclasses.replace(CONFIG, epochs=1), copy)
  assert 'after epoch 2' in str(info.value)


def test_checkpoint_of_another_structure_is_a_short_error(tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), log=print)
  try:
    checkpointer.save(1, {'w': np.zeros(3, np.float32)}, {'epoch': 1})
    with pytest.raises(checkpointing.CheckpointError) as info:
      checkpointer.restore(lambda record: {'v': np.zeros(2, np.float32)})
  finally:
    checkpointer.close()
  message = str(info.value)
  assert os.path.join(str(tmp_path), 'checkpoints', '1') in message
  assert len(message) < 600, message


# 5: a kill inside the save never leaves an unresumable workdir.


def _kill_after_orbax(monkeypatch):
  """Kills the run when the digest would be computed, Orbax having written."""

  def killed(directory):
    raise _Killed(directory)

  monkeypatch.setattr(checkpointing, 'file_digests', killed)


def test_kill_before_the_first_digest_resumes(reference, tmp_path,
                                              monkeypatch, capsys):
  workdir = str(tmp_path / 'run')
  with monkeypatch.context() as patch:
    _kill_after_orbax(patch)
    with pytest.raises(_Killed):
      train.train_and_evaluate(CONFIG, workdir)

  final = train.train_and_evaluate(CONFIG, workdir)

  _assert_same_run(workdir, reference, final)
  assert 'Resuming' not in capsys.readouterr().out


def test_kill_before_a_later_digest_resumes(reference, tmp_path,
                                            monkeypatch, capsys):
  workdir = _after_one_epoch(tmp_path)
  with monkeypatch.context() as patch:
    _kill_after_orbax(patch)
    with pytest.raises(_Killed):
      train.train_and_evaluate(CONFIG, workdir)

  final = train.train_and_evaluate(CONFIG, workdir)

  _assert_same_run(workdir, reference, final)
  assert 'after epoch 1' in capsys.readouterr().out


def test_every_listed_checkpoint_has_its_digest(reference):
  directory = os.path.join(reference[0], 'checkpoints')
  steps = [name for name in os.listdir(directory) if name.isdigit()]
  assert sorted(steps) == ['1', '2']
  for step in steps:
    checkpointing.check_digests(os.path.join(directory, step))


# 7: messages instead of tracebacks, and advice that works.


def test_non_finite_loss_says_how_to_go_on(tmp_path, capsys):
  workdir = str(tmp_path / 'diverged')
  args = ['--schedule', 'exponential_decay', '--max-lr', '0.01',
          '--decay-rate', '1e6', '--step-size-epochs', '1', '--batch-size',
          '512', '--epochs', '6', '--no-progress']
  assert train.main(['--workdir', workdir, *args]) == 1
  stderr = capsys.readouterr().err
  assert 'Non-finite training loss' in stderr
  assert workdir in stderr and 'new --workdir' in stderr

  # The same workdir refuses other rates by name...
  lower = [*args, '--max-lr', '1e-4', '--decay-rate', '0.5']
  assert train.main(['--workdir', workdir, *lower]) == 1
  assert 'max_lr: 0.01 -> 0.0001' in capsys.readouterr().err
  # ...and a new one trains with them, as the message says.
  assert train.main(['--workdir', str(tmp_path / 'new'), *lower]) == 0


def test_workdir_that_is_a_file(tmp_path, capsys):
  path = tmp_path / 'run'
  path.write_text('not a directory')

  status = train.main(['--workdir', str(path), '--epochs', '1', *FLAGS])

  assert status == 1
  stderr = capsys.readouterr().err
  assert str(path) in stderr and 'not a directory' in stderr
  assert path.read_text() == 'not a directory'


@pytest.mark.parametrize('inside', ['metrics.jsonl', 'checkpoints'])
def test_a_file_where_a_directory_belongs(tmp_path, capsys, inside):
  workdir = tmp_path / 'run'
  (workdir / inside).parent.mkdir(parents=True, exist_ok=True)
  if inside == 'metrics.jsonl':
    (workdir / inside).mkdir()  # a directory where the file belongs
  else:
    (workdir / inside).write_text('not a directory')

  status = train.main(['--workdir', str(workdir), '--epochs', '1', *FLAGS])

  assert status == 1
  assert str(workdir / inside) in capsys.readouterr().err


@pytest.mark.parametrize('payload', ['5', 'null', '["state"]', '"x"',
                                     '{"state": 5}', '{"'])
def test_digest_of_the_wrong_type_is_damage(tmp_path, payload):
  (tmp_path / 'state').write_bytes(b'arrays')
  (tmp_path / checkpointing.DIGEST_FILE).write_text(payload)
  with pytest.raises(ValueError, match=checkpointing.DIGEST_FILE):
    checkpointing.check_digests(str(tmp_path))


def test_checkpoint_with_a_digest_of_the_wrong_type_falls_back(
    copy, reference, capsys):
  digest = os.path.join(copy, 'checkpoints', '2', checkpointing.DIGEST_FILE)
  with open(digest, 'w') as f:
    f.write('5')

  final = train.train_and_evaluate(CONFIG, copy)

  output = capsys.readouterr().out
  assert 'checkpoints/2 is damaged' in output and 'after epoch 1' in output
  _assert_same_run(copy, reference, final)


# 8: a full disk is one line naming it, and leaves nothing partial behind.



_run_with_file_size_limit = file_size_limit.run


def _files(directory):
  return sorted(os.path.relpath(os.path.join(folder, name), directory)
                for folder, _, names in os.walk(directory) for name in names)


def test_full_disk_during_the_checkpoint_is_one_line(tmp_path):
  # 16 KiB: epoch 1's metrics fit; the checkpoint's arrays (500 KB) do not,
  # and neither does loss.png (28 KB), which used to be plotted after the
  # failure, cut short, and its error reported instead of Orbax's.
  workdir = str(tmp_path / 'run')

  result = _run_with_file_size_limit(
      16 * 1024, 'examples.train', '--workdir', workdir, '--epochs', '1',
      *FLAGS)

  assert result.returncode == 1, result.stderr
  assert result.stderr.count('\n') == 1, result.stderr
  assert result.stderr.startswith(
      f'error: Cannot write {workdir}/checkpoints/staging-1: file too large')
  assert 'same flags and --workdir' in result.stderr
  # Nothing partial: no plot, no temporary file, no staged checkpoint.
  assert _files(workdir) == ['metrics.jsonl', checkpointing.LOCK_FILE]
  assert len(metrics_log.read_metrics(_metrics_path(workdir))) == (
      STEPS_PER_EPOCH)


def _disk_full_after(monkeypatch, path, room):
  """``os.write`` to ``path`` fails with ENOSPC after ``room`` more bytes.

  The trainer appends its metrics with ``os.write``, the lowest-level write
  there is in Python: the disk fills during an append (a short write, then
  ENOSPC), as a real one does; writes to other files go through.
  """
  write = os.write

  def full(fd, data):
    nonlocal room
    if os.readlink(f'/proc/self/fd/{fd}') != path:
      return write(fd, data)
    if room <= 0:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    written = write(fd, bytes(data[:room]))
    room -= written
    return written

  monkeypatch.setattr(os, 'write', full)


def test_full_disk_while_appending_metrics(reference, tmp_path, monkeypatch,
                                           capsys):
  workdir = str(tmp_path / 'run')
  path = _metrics_path(workdir)
  with open(_metrics_path(reference[0]), 'rb') as f:
    epoch_one = b''.join(f.readlines()[:STEPS_PER_EPOCH])
  with monkeypatch.context() as patch:
    # Epoch 1 fits and 100 bytes of epoch 2's records.
    _disk_full_after(patch, path, len(epoch_one) + 100)

    status = train.main(['--workdir', workdir, '--epochs', '2', *FLAGS])

  assert status == 1
  stderr = capsys.readouterr().err
  assert stderr == (
      f'error: Cannot write {path}: no space left on device (the disk is'
      ' full). Free space and run again with the same flags and --workdir:'
      ' it resumes from its last checkpoint.\n')
  assert _read_bytes(path) == epoch_one  # the cut line is gone
  # Freed space: the same command resumes and ends as the uninterrupted run.
  _assert_same_run(workdir, reference, train.train_and_evaluate(CONFIG,
                                                                workdir))


_ORBAX_FULL_DISK = (
    'RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at local file'
    ' "/w/checkpoints/staging-3.orbax-checkpoint-tmp/state.orbax-checkpoint-'
    'tmp/ocdbt.process_0/": Failed writing: "/w/checkpoints/staging-3.orbax-'
    'checkpoint-tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/d/0a1b": Failed'
    " to write 308161 bytes to file 14: No space left on device"
    " [os_error_code='28']")


def test_full_disk_errors_are_recognised():
  # Orbax's error (the form of the EFBIG one the test above gets for real).
  message = storage_errors.describe(ValueError(_ORBAX_FULL_DISK))
  assert message.startswith('Cannot write /w/checkpoints/staging-3: no space'
                            ' left on device (the disk is full).')
  # Anywhere along the chain, e.g. wrapped in a trainer's error.
  try:
    try:
      raise OSError(errno.ENOSPC, 'No space left on device', '/w/x.json')
    except OSError as error:
      raise checkpointing.CheckpointError('cannot save') from error
  except checkpointing.CheckpointError as error:
    assert storage_errors.message(error).startswith(
        'Cannot write /w/x.json: no space left')
  assert 'quota' in storage_errors.describe(OSError(errno.EDQUOT, 'quota'))
  assert storage_errors.describe(ValueError('NOT_FOUND: /w/x')) is None
  assert storage_errors.message(ValueError('other')) == 'other'


def test_metrics_log_writes_non_finite_values_as_null(tmp_path):
  path = str(tmp_path / 'metrics.jsonl')
  log = metrics_log.MetricsLog(path, keep_epochs=0)
  log.extend([{'step': 0, 'epoch': 0, 'loss': float('nan'),
               'lr': float('inf'), 'accuracy': 0.5}])

  def refuse(constant):
    raise ValueError(f'not JSON: {constant}')

  with open(path) as f:
    record = json.loads(f.read(), parse_constant=refuse)
  assert record == {'step': 0, 'epoch': 0, 'loss': None, 'lr': None,
                    'accuracy': 0.5}


# 9: a record that names another epoch than its directory is damage.


def test_record_naming_another_epoch_falls_back(copy, reference, capsys):
  directory = os.path.join(copy, 'checkpoints', '2')
  path = os.path.join(directory, 'record', 'metadata')
  with open(path) as f:
    record = json.load(f)
  assert record['epoch'] == 2
  record['epoch'] = 1  # resumed as epoch 1, epoch 2 would be trained twice
  with open(path, 'w') as f:
    json.dump(record, f)
  with open(os.path.join(directory, checkpointing.DIGEST_FILE), 'w') as f:
    json.dump(checkpointing.file_digests(directory), f)  # looks intact
  checkpointing.check_digests(directory)

  final = train.train_and_evaluate(CONFIG, copy)

  output = capsys.readouterr().out
  assert 'checkpoints/2 is damaged (its record names epoch 1, not 2)' in (
      output)
  assert 'after epoch 1' in output
  _assert_same_run(copy, reference, final)
  moved, = os.listdir(os.path.join(copy, checkpointing.CORRUPT_SUBDIR))
  assert moved.startswith('2-')
