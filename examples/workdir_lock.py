"""One run per workdir: an exclusive ``flock`` on ``<workdir>/trainer.lock``.

:func:`lock_workdir` takes it on the primary process and tells the others
whether it got it, so a second run started on the same workdir stops with
:class:`WorkdirError`, naming the holder.
"""

import fcntl
import json
import os
import socket
import time

import jax
from jax.experimental import multihost_utils
import numpy as np

LOCK_FILE = 'trainer.lock'


class WorkdirError(RuntimeError):
  """The workdir cannot be used: not a directory, or in use by another run."""


class WorkdirLock:
  """An exclusive ``flock`` on ``<workdir>/trainer.lock``: one run at a time.

  The kernel releases the lock when its holder exits, however it exits (a
  crash or ``kill -9`` included), so a lock left by a dead run never blocks
  the next one and no stale-lock guessing is needed. The file records the
  holder's pid, host and start time for the message a second run prints.
  """

  def __init__(self, workdir: str):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, LOCK_FILE)
    self._fd: int | None = None

  def acquire(self) -> None:
    """Creates the workdir if needed and locks it, or WorkdirError at once."""
    if os.path.exists(self.workdir) and not os.path.isdir(self.workdir):
      raise WorkdirError(
          f'--workdir {self.workdir} is not a directory (it is a file): pass'
          ' a directory, new or of an earlier run of this trainer.'
      )
    try:
      os.makedirs(self.workdir, exist_ok=True)
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
      raise WorkdirError(
          f'Cannot use --workdir {self.workdir}: {error}.') from error
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
      holder = _describe_holder(fd)
      os.close(fd)
      if isinstance(error, BlockingIOError):
        raise WorkdirError(
            f'--workdir {self.workdir} is already in use by another trainer'
            f' ({holder}, holding {self.path}). Wait for it to finish, or'
            ' pass another --workdir.'
        ) from None
      raise WorkdirError(
          f'Cannot lock {self.path} ({error}); the workdir must be on a'
          ' file system with flock.') from error
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({
        'pid': os.getpid(), 'host': socket.gethostname(),
        'started': time.strftime('%Y-%m-%d %H:%M:%S %z'),
    }).encode(), 0)
    self._fd = fd

  def release(self) -> None:
    """Unlocks (also done by the kernel if the process dies first)."""
    if self._fd is not None:
      os.ftruncate(self._fd, 0)
      os.close(self._fd)
      self._fd = None


def _describe_holder(fd: int) -> str:
  try:
    holder = json.loads(os.pread(fd, 4096, 0))
    return (f'pid {holder["pid"]} on host {holder["host"]}, started'
            f' {holder["started"]}')
  except (OSError, ValueError, TypeError, KeyError):
    return 'a run that has not yet recorded its pid'


def lock_workdir(workdir: str) -> WorkdirLock:
  """Creates and locks ``workdir`` for this run; all processes call it.

  Only process 0 takes the lock: the processes of one multi-process run
  share the workdir by design. The others learn whether it succeeded.

  Args:
    workdir: the run's directory.

  Returns:
    The lock; call ``release()`` when the run ends.

  Raises:
    WorkdirError: the workdir is a file, cannot be created, or another run
      holds it (the message names the holder).
  """
  lock = WorkdirLock(workdir)
  error = None
  if jax.process_index() == 0:
    try:
      lock.acquire()
    except WorkdirError as caught:
      error = caught
  if jax.process_count() > 1:
    failed = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
    if int(failed) and error is None:
      error = WorkdirError(
          f'Process 0 could not lock --workdir {lock.workdir}; see its'
          ' message.')
  if error is not None:
    raise error
  return lock
