"""Two trainer processes under JAX's multi-controller runtime (gloo on CPU)."""

import os
import socket
import subprocess
import sys

from examples import metrics_log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'examples', 'train.py')
NUM_PROCESSES = 2
TIMEOUT_S = 300


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_agree(tmp_path):
  workdir = tmp_path / 'run'
  env = {
      **os.environ,
      'JAX_PLATFORMS': 'cpu',
      'XLA_FLAGS': '--xla_force_host_platform_device_count=2',
  }
  coordinator = f'127.0.0.1:{_free_port()}'
  processes = [
      subprocess.Popen(
          [sys.executable, SCRIPT, '--workdir', str(workdir), '--epochs', '1',
           '--no-progress', '--coordinator', coordinator, '--num-processes',
           str(NUM_PROCESSES), '--process-id', str(i)],
          cwd=tmp_path, env=env, stdout=subprocess.PIPE,
          stderr=subprocess.PIPE, text=True,
      )
      for i in range(NUM_PROCESSES)
  ]
  try:
    outputs = [p.communicate(timeout=TIMEOUT_S) for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
  for p, (_, stderr) in zip(processes, outputs):
    assert p.returncode == 0, stderr
  assert 'devices: 4 (cpu), processes: 2' in outputs[0][0]

  first = metrics_log.read_metrics(workdir / 'metrics.jsonl')
  second = metrics_log.read_metrics(workdir / 'metrics-process1.jsonl')
  assert len(first) == 1437 // 32
  assert [r['lr'] for r in first] == [r['lr'] for r in second]
  assert [r['loss'] for r in first] == [r['loss'] for r in second]
  assert first[-1]['test_accuracy'] == second[-1]['test_accuracy']
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['1']
