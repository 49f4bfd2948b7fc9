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
