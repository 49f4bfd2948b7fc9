"""Runs an example module under a real kernel limit on the size of files.

No small file system can be mounted in the test sandbox (no root), and this
is the nearest real thing to a full disk: with ``RLIMIT_FSIZE`` set, every
write past the limit fails in the kernel with EFBIG ("File too large"), in
Python's writes and in TensorStore's alike, as a full disk fails them with
ENOSPC (the ENOSPC forms are tested in ``test_trainer_reliability.py``).
SIGXFSZ is ignored so that the write fails instead of killing the process.
"""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_RUNNER = '''
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv[0] = module = sys.argv.pop(1)
runpy.run_module(module, run_name='__main__', alter_sys=True)
'''


def run(limit: int, module: str, *args: str) -> subprocess.CompletedProcess:
  """``python -m module *args`` with files limited to ``limit`` bytes."""
  return subprocess.run(
      [sys.executable, '-c', _RUNNER, str(limit), module, *args],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, check=False)
