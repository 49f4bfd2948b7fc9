"""Two trainer processes under JAX's multi-controller runtime (gloo on CPU).

Two processes of two CPU devices each make the same 4-device mesh as one
process with four devices: same global batch, same shards. So the 2-process
run must reproduce the 1-process run up to the order of the cross-process
reduction, and a process that fed the wrong slice of the global batch would
not: its loss differs from the first step on. Training amplifies reduction
noise (BatchNorm, dropout: it doubles every few steps), so the runs are
compared to float noise over the first steps and to a few test examples at
the end. A resumed 2-process run must equal the uninterrupted one bitwise.
"""

import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from examples import metrics_log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'examples', 'train.py')
NUM_PROCESSES = 2
TIMEOUT_S = 300
STEPS_PER_EPOCH = 1437 // 32
# Float noise of a reduction in another order over the first steps, far
# below what a wrong slice of the batch changes.
EARLY = 12
RTOL, ATOL = 1e-5, 1e-6
# What process 0 prints when its coordinator port was taken in the meantime.
PORT_TAKEN = ('Failed to add port', 'Failed to start RPC server')
ATTEMPTS = 4


def _env(devices):
  return {
      **os.environ,
      'JAX_PLATFORMS': 'cpu',  # bitwise resume is asserted on CPU
      'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}',
  }


def _free_port():
  """A port free on every interface (the coordinator binds all of them)."""
  with socket.socket() as s:
    s.bind(('', 0))
    return s.getsockname()[1]


def _wait(processes, logs):
  try:
    for p in processes:
      p.wait(timeout=TIMEOUT_S)
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
        p.wait()
  return [(out.read_text(), err.read_text()) for out, err in logs]


def _train_processes(workdir, epochs):
  """Runs the trainer as 2 processes of 2 devices; returns their outputs.

  The port comes from binding port 0 and is free when chosen, but another
  program may take it before process 0's coordinator binds it: under
  ``pytest -n``, another worker's processes, or a second test session on
  the same machine. Process 0 then fails at once with a bind error, and the
  run is retried on a new port (process 1 is stopped: it may be waiting on,
  or connected to, the other program's server).
  """
  logs_dir = workdir.parent / f'{workdir.name}-logs'
  logs_dir.mkdir(exist_ok=True)
  for attempt in range(ATTEMPTS):
    coordinator = f'127.0.0.1:{_free_port()}'
    logs = [(logs_dir / f'{attempt}-{i}.out', logs_dir / f'{attempt}-{i}.err')
            for i in range(NUM_PROCESSES)]
    processes = []
    for i, (out, err) in enumerate(logs):
      with open(out, 'w') as stdout, open(err, 'w') as stderr:
        processes.append(subprocess.Popen(
            [sys.executable, SCRIPT, '--workdir', str(workdir), '--epochs',
             str(epochs), '--no-progress', '--coordinator', coordinator,
             '--num-processes', str(NUM_PROCESSES), '--process-id', str(i)],
            cwd=workdir.parent, env=_env(2), stdout=stdout, stderr=stderr,
        ))
    try:
      processes[0].wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
      pass
    first_error = logs[0][1].read_text()
    if processes[0].returncode and any(m in first_error for m in PORT_TAKEN):
      for p in processes[1:]:
        p.kill()
        p.wait()
      continue
    outputs = _wait(processes, logs)
    for p, (_, stderr) in zip(processes, outputs):
      assert p.returncode == 0, stderr
    return outputs
  pytest.fail(f'the coordinator port was taken {ATTEMPTS} times in a row')


def _train_one_process(workdir, epochs, devices):
  result = subprocess.run(
      [sys.executable, SCRIPT, '--workdir', str(workdir), '--epochs',
       str(epochs), '--no-progress'],
      cwd=workdir.parent, env=_env(devices), capture_output=True, text=True,
      timeout=TIMEOUT_S, check=False,
  )
  assert result.returncode == 0, result.stderr
  assert f'devices: {devices} (cpu), processes: 1' in result.stdout
  return result.stdout


def _metrics(workdir, process=0):
  name = 'metrics.jsonl' if process == 0 else f'metrics-process{process}.jsonl'
  return metrics_log.read_metrics(workdir / name)


def _assert_same_start(got, want):
  """Two logs of one training: float noise early, a few examples at the end."""
  assert [r['step'] for r in got] == [r['step'] for r in want]
  assert [r['epoch'] for r in got] == [r['epoch'] for r in want]
  assert [r['lr'] for r in got] == [r['lr'] for r in want]
  for key in ('loss', 'accuracy'):
    np.testing.assert_allclose([r[key] for r in got[:EARLY]],
                               [r[key] for r in want[:EARLY]], rtol=RTOL,
                               atol=ATOL, err_msg=key)
  np.testing.assert_allclose(got[-1]['test_loss'], want[-1]['test_loss'],
                             rtol=5e-2)
  np.testing.assert_allclose(got[-1]['test_accuracy'],
                             want[-1]['test_accuracy'], atol=2 / 360)


def _checkpoint_leaves(workdir, epoch):
  """A checkpoint's arrays as NumPy, whatever devices saved them."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = workdir / 'checkpoints' / str(epoch) / 'state'
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(path)
  tree = getattr(getattr(metadata, 'item_metadata', None), 'tree', metadata)
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                          tree)
  restored = checkpointer.restore(
      path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
  return jax.tree.leaves(restored)


@pytest.fixture(scope='module')
def one_process(tmp_path_factory):
  """The reference: one process, 4 devices, 1 epoch."""
  workdir = tmp_path_factory.mktemp('one-process') / 'run'
  _train_one_process(workdir, epochs=1, devices=4)
  return _metrics(workdir)


@pytest.fixture(scope='module')
def two_processes(tmp_path_factory):
  """2 processes x 2 devices, 2 epochs; the workdir is not to be modified."""
  workdir = tmp_path_factory.mktemp('two-processes') / 'run'
  outputs = _train_processes(workdir, epochs=2)
  return workdir, outputs


def test_two_processes_agree_with_each_other(two_processes):
  workdir, outputs = two_processes
  assert 'devices: 4 (cpu), processes: 2' in outputs[0][0]
  first, second = _metrics(workdir), _metrics(workdir, 1)
  assert len(first) == 2 * STEPS_PER_EPOCH
  assert [r['lr'] for r in first] == [r['lr'] for r in second]
  assert [r['loss'] for r in first] == [r['loss'] for r in second]
  assert first[-1]['test_accuracy'] == second[-1]['test_accuracy']
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['1', '2']


def test_two_processes_reproduce_one_process(two_processes, one_process):
  workdir, _ = two_processes
  _assert_same_start(_metrics(workdir)[:STEPS_PER_EPOCH], one_process)


def test_two_processes_resume_bitwise(two_processes, tmp_path):
  uninterrupted, _ = two_processes
  workdir = tmp_path / 'run'
  shutil.copytree(uninterrupted, workdir)
  # Killed before epoch 2's checkpoint was committed: its steps are logged,
  # its checkpoint is not there.
  shutil.rmtree(workdir / 'checkpoints' / '2')

  outputs = _train_processes(workdir, epochs=2)

  assert 'Resuming' in outputs[0][0] and 'after epoch 1' in outputs[0][0]
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['1', '2']
  for name in ('metrics.jsonl', 'metrics-process1.jsonl'):
    assert (workdir / name).read_text() == (uninterrupted / name).read_text()
  for got, want in zip(_checkpoint_leaves(workdir, 2),
                       _checkpoint_leaves(uninterrupted, 2), strict=True):
    np.testing.assert_array_equal(got, want)
