"""A full disk as one line: what the trainers print when a write fails.

A full disk reaches a trainer in two forms: an ``OSError`` from Python's own
writes (``ENOSPC``; ``EDQUOT`` for a quota, ``EFBIG`` for the file size
limit of ``ulimit -f``), and a ``ValueError`` from Orbax carrying
TensorStore's status (``RESOURCE_EXHAUSTED``, ``OUT_OF_RANGE`` for
``EFBIG``) with the ``os_error_code`` and the path. :func:`describe`
recognises both anywhere along the exception's causes; :func:`message` is
the line the trainers print for any error they stop on.

While an Orbax save fails, the same error is also echoed: Orbax logs each
failed writer thread's traceback, TensorStore's callbacks raise into the
event loop Orbax has already closed (unraisable ``RuntimeError: Event loop
is closed``), and asyncio logs the other writers' errors when their tasks
are collected (the tasks live as long as the error's traceback): 70 to
355 lines for one full disk. :func:`echoes_held` holds those back while a
trainer runs and reports its error: dropped when the run failed (its
one-line error says it all), let out when it did not::

  with storage_errors.echoes_held() as echoes:
    try:
      train(...)
    except OSError as error:
      echoes.drop()
      print(f'error: {storage_errors.message(error)}', file=sys.stderr)
"""

from collections.abc import Iterator
import contextlib
import errno
import gc
import logging
import os
import re
import sys
from typing import Any
import warnings

# errno: (the cause, what to do about it).
_CAUSES = {
    errno.ENOSPC: ('no space left on device (the disk is full)',
                   'Free space'),
    errno.EDQUOT: ('disk quota exceeded', 'Free space or raise the quota'),
    errno.EFBIG: ('file too large for the file size limit (ulimit -f)',
                  'Raise the limit'),
}
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")
_QUOTED_PATH = re.compile(r'"(/[^"]*)"')
_ORBAX_TMP = '.orbax-checkpoint-tmp'
# The echoes: parts of the echoing log messages, and the unraisable error.
_ECHOED_LOGS = {
    'absl': ('_SignalingThread.run() raised an exception',),  # Orbax
    'asyncio': ('exception was never retrieved',  # Task, _GatheringFuture
                'Task was destroyed but it is pending'),
}
_ECHOED_UNRAISABLE = 'Event loop is closed'
# Orbax's writers that never started, collected when the interpreter exits.
_UNAWAITED = "coroutine '.*' was never awaited"


def _chain(error: BaseException | None) -> Iterator[BaseException]:
  """``error`` and its causes (``raise ... from``) and contexts."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def _errno_and_path(error: BaseException) -> tuple[int | None, str | None]:
  """The errno of a failed write and its path, where ``error`` says them."""
  if isinstance(error, OSError):
    return error.errno, error.filename
  text = str(error)
  match = _OS_ERROR_CODE.search(text)
  if match:
    code = int(match.group(1))
  else:
    code = next((code for code in _CAUSES if os.strerror(code) in text),
                None)
  paths = _QUOTED_PATH.findall(text)
  path = paths[-1] if paths else None
  if path and _ORBAX_TMP in path:  # Orbax's staging copy: name the checkpoint
    path = path[:path.index(_ORBAX_TMP)]
  return code, path


def describe(error: BaseException) -> str | None:
  """One line for a write that failed for lack of space, or None.

  Args:
    error: what a run raised; it, its cause and its context are read.

  Returns:
    ``"Cannot write PATH: no space left on device (the disk is full). ..."``
    (with the advice to free space and resume), or None when no link of the
    chain is a full disk, a full quota or the file size limit.
  """
  for link in _chain(error):
    code, path = _errno_and_path(link)
    if code in _CAUSES:
      cause, advice = _CAUSES[code]
      where = f'Cannot write {path}' if path else 'Cannot write'
      return (f'{where}: {cause}. {advice} and run again with the same flags'
              ' and --workdir: it resumes from its last checkpoint.')
  return None


def message(error: BaseException) -> str:
  """What a trainer prints for ``error``: :func:`describe`, or its text."""
  return describe(error) or str(error)


class Echoes(logging.Filter):
  """The echoes of a failed Orbax write held back by :func:`echoes_held`."""

  def __init__(self):
    super().__init__()
    self.records: list[logging.LogRecord] = []
    self.unraisable: list[Any] = []
    self.dropped = False

  def drop(self) -> None:
    """Drops the echoes: the caller reports the error they echo."""
    self.dropped = True

  def filter(self, record: logging.LogRecord) -> bool:
    parts = _ECHOED_LOGS.get(record.name, ())
    if any(part in str(record.msg) for part in parts):
      self.records.append(record)
      return False
    return True

  def hold_unraisable(self, args: Any) -> bool:
    """Holds an unraisable error if it is an echo; whether it was."""
    if not (isinstance(args.exc_value, RuntimeError)
            and _ECHOED_UNRAISABLE in str(args.exc_value)):
      return False
    # Copied without the object, which may be being finalized.
    self.unraisable.append(type(args)((args.exc_type, args.exc_value,
                                       args.exc_traceback, args.err_msg,
                                       None)))
    return True


@contextlib.contextmanager
def echoes_held() -> Iterator[Echoes]:
  """Holds back Orbax's echoes of a failed write while the block runs.

  Report the error inside the block and call ``drop()`` there: the echoes
  come until the error and its traceback are gone, which this waits for.
  If the block raises, the echoes are dropped too; otherwise they are logged
  and reported as they would have been. After echoes were dropped they
  keep being dropped until the process ends (the failed save's writes
  left in flight end later); without any, nothing stays changed.

  Yields:
    The :class:`Echoes`.
  """
  echoes = Echoes()
  loggers = [logging.getLogger(name) for name in _ECHOED_LOGS]
  for logger in loggers:
    logger.addFilter(echoes)
  previous = sys.unraisablehook

  def hook(args):
    if not echoes.hold_unraisable(args):
      previous(args)

  sys.unraisablehook = hook
  try:
    yield echoes
  except BaseException:
    echoes.drop()
    raise
  finally:
    gc.collect()  # asyncio reports a task's error when the task is collected
    if echoes.dropped and (echoes.records or echoes.unraisable):
      # A save failed inside Orbax: TensorStore may still be ending the
      # writes it left in flight, and the interpreter collects the rest when
      # it exits. Their echoes stay dropped until then.
      warnings.filterwarnings('ignore', _UNAWAITED, RuntimeWarning)
    else:
      sys.unraisablehook = previous
      for logger in loggers:
        logger.removeFilter(echoes)
      if not echoes.dropped:
        for record in echoes.records:
          logging.getLogger(record.name).handle(record)
        for args in echoes.unraisable:
          previous(args)
