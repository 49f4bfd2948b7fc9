"""The example trainer under crashes, kills, concurrent use and bad flags.

Each test reproduces a failure a user can cause (a kill during a write, a
second trainer on the same workdir, a flag out of range, a resume with other
flags) on short real runs of the bundled digits.
"""

import dataclasses
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
from examples import metrics_log
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
