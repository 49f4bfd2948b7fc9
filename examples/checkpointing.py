"""Epoch checkpoints with Orbax, committed atomically with their digest.

A checkpoint holds a training state pytree (parameters and optimizer state,
hence the schedule's position) and a JSON record (the completed epoch count,
the data-order RNG state and the run's config).

Orbax does not checksum the arrays, so each checkpoint carries
``sha256.json``, the digest of every file in it. A save is committed in three
steps: Orbax writes the checkpoint into ``checkpoints/staging-<epoch>`` (its
own temporary directory, renamed when complete), the primary process writes
the digest into it, and renames it to ``checkpoints/<epoch>``. Only that
last rename makes a checkpoint visible, so a kill at any point of a save
leaves the previous checkpoints as they were and no listed checkpoint
without its digest; the partial write is removed on the next start (at
once when the save fails with an error, a full disk say). The digest is
checked before Orbax reads a checkpoint: this catches truncated or
flipped bytes (a failed read inside Orbax leaves TensorStore callbacks firing
into a closed event loop).

On restore the newest intact checkpoint is used; with ``step_key``, one
whose record names another step than its directory counts as damaged too.
Damaged ones are moved aside (never deleted) into
``<workdir>/corrupt_checkpoints/`` with a message; if none is intact,
:class:`CheckpointError` stops the run rather than silently starting from
scratch.

``examples/workdir_lock.py`` keeps a second run out of a workdir in use;
its names are re-exported here.
"""

from collections.abc import Callable, Mapping
import hashlib
import json
import os
import shutil
import time
from typing import Any

import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from examples.workdir_lock import LOCK_FILE  # pylint: disable=unused-import
from examples.workdir_lock import lock_workdir  # pylint: disable=unused-import
from examples.workdir_lock import WorkdirError  # pylint: disable=unused-import
from examples.workdir_lock import WorkdirLock  # pylint: disable=unused-import

CHECKPOINT_SUBDIR = 'checkpoints'
CORRUPT_SUBDIR = 'corrupt_checkpoints'
DIGEST_FILE = 'sha256.json'
_STAGING_PREFIX = 'staging-'
_DELETING_PREFIX = 'deleting-'
_ORBAX_TMP = '.orbax-checkpoint-tmp'
_HASH_CHUNK_BYTES = 1 << 20


class CheckpointError(RuntimeError):
  """No checkpoint in a non-empty checkpoint directory could be restored."""


def file_digests(directory: str) -> dict[str, str]:
  """The SHA-256 of every file under ``directory`` except the digest file."""
  digests = {}
  for folder, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(folder, name)
      relative = os.path.relpath(path, directory)
      if relative == DIGEST_FILE:
        continue
      sha = hashlib.sha256()
      with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK_BYTES), b''):
          sha.update(chunk)
      digests[relative] = sha.hexdigest()
  return digests


def check_digests(directory: str) -> None:
  """Raises ValueError naming the first file that differs from the digest."""
  path = os.path.join(directory, DIGEST_FILE)
  try:
    with open(path) as f:
      expected = json.load(f)
  except (OSError, ValueError) as error:
    raise ValueError(f'cannot read {path} ({error})') from error
  if not isinstance(expected, dict) or not all(
      isinstance(value, str) for value in expected.values()):
    raise ValueError(
        f'{path} is not a table of file digests (it holds'
        f' {type(expected).__name__} {str(expected)[:60]})'
    )
  actual = file_digests(directory)
  for name in sorted(set(expected) | set(actual)):
    if name not in actual:
      raise ValueError(f'{name} is missing')
    if name not in expected:
      raise ValueError(f'{name} is not in {DIGEST_FILE}')
    if actual[name] != expected[name]:
      raise ValueError(f'{name} does not match its SHA-256')


def _fsync_directory(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _write_digests(directory: str) -> None:
  """Writes ``sha256.json`` of ``directory``'s files and syncs it to disk."""
  digests = file_digests(directory)
  with open(os.path.join(directory, DIGEST_FILE), 'w') as f:
    json.dump(digests, f, indent=0, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())


class Checkpointer:
  """Saves and restores ``(state, record)`` pairs keyed by completed epochs."""

  def __init__(
      self,
      workdir: str,
      *,
      max_to_keep: int = 3,
      log: Callable[[str], None] = print,
  ):
    """Opens (and creates) ``<workdir>/checkpoints``.

    Args:
      workdir: the run's directory.
      max_to_keep: the number of newest checkpoints kept, at least 1; older
        ones are deleted after each save. Keep at least 2 so that a damaged
        newest checkpoint has a fallback.
      log: where messages go.

    Raises:
      ValueError: ``max_to_keep`` is below 1.
    """
    if isinstance(max_to_keep, bool) or not (
        isinstance(max_to_keep, int) and max_to_keep >= 1):
      raise ValueError(f'max_to_keep must be >= 1, got {max_to_keep!r}.')
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, CHECKPOINT_SUBDIR)
    self._max_to_keep = max_to_keep
    self._log = log
    if self._primary:
      try:
        os.makedirs(self.directory, exist_ok=True)
      except OSError as error:
        raise CheckpointError(
            f'Cannot use {self.directory} for checkpoints: {error}.'
        ) from error
    self._sync('optax_clr_checkpoint_directory')
    self._orbax = ocp.Checkpointer(ocp.CompositeCheckpointHandler())

  @property
  def _primary(self) -> bool:
    return jax.process_index() == 0

  def steps(self) -> list[int]:
    """The committed checkpoints' epochs, oldest first."""
    return sorted(
        int(name) for name in os.listdir(self.directory)
        if name.isdigit() and os.path.isdir(os.path.join(self.directory, name))
    )

  def save(self, epoch: int, state: Any, record: Mapping[str, Any]) -> None:
    """Saves the state after ``epoch`` completed epochs and commits it.

    Args:
      epoch: the completed epochs: the checkpoint's name.
      state: the training state pytree.
      record: JSON-serialisable facts saved with it.
    """
    staging = os.path.join(self.directory, f'{_STAGING_PREFIX}{epoch}')
    if self._primary and os.path.exists(staging):
      shutil.rmtree(staging)  # a save of this epoch that was interrupted
    self._sync('optax_clr_checkpoint_staging')
    try:
      self._orbax.save(staging, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          record=ocp.args.JsonSave(dict(record)),
      ))
      if self._primary:
        _write_digests(staging)
    except Exception:
      # A failed write (a full disk): leave nothing partial behind. A kill
      # (no exception) leaves it to the next start.
      self._remove_staging(staging)
      raise
    if self._primary:
      final = os.path.join(self.directory, str(epoch))
      if os.path.exists(final):
        self._set_aside([epoch], sync=False)
      os.rename(staging, final)  # the commit
      _fsync_directory(self.directory)
      self._delete(self.steps()[: -self._max_to_keep])
    self._sync('optax_clr_checkpoint_commit')

  def restore(
      self, make_target: Callable[[dict[str, Any]], Any], *,
      step_key: str | None = None,
  ) -> tuple[Any, dict[str, Any]] | None:
    """Restores the newest intact checkpoint.

    Args:
      make_target: called with the checkpoint's record before its state is
        read; returns a state pytree with the structure, dtypes and
        shardings to restore into. It may raise (a config that does not
        match the record): the error propagates and nothing is changed.
      step_key: the record's entry that must equal the checkpoint's name
        (the step or epoch it was saved as); a checkpoint whose record
        names another is damaged like one whose digest differs.

    Returns:
      ``(state, record)``, or None when the directory holds no checkpoint.

    Raises:
      CheckpointError: there are checkpoints but none is intact, or the
        newest intact one holds a state of another structure than the
        target's.
    """
    self._remove_partial_writes()
    steps = sorted(self.steps(), reverse=True)
    if not steps:
      return None
    errors = []
    for step in steps:
      path = os.path.join(self.directory, str(step))
      try:
        check_digests(path)
      except ValueError as error:
        errors.append(f'{path}: {error}')
        self._log(f'Checkpoint {path} is damaged or incomplete ({error});'
                  ' trying an older one.')
        continue
      record = dict(self._orbax.restore(
          path, args=ocp.args.Composite(record=ocp.args.JsonRestore())
      ).record)
      if step_key is not None and record.get(step_key) != step:
        error = (f'its record names {step_key} {record.get(step_key)!r},'
                 f' not {step}')
        errors.append(f'{path}: {error}')
        self._log(f'Checkpoint {path} is damaged ({error}); trying an older'
                  ' one.')
        continue
      target = make_target(record)
      try:
        restored = self._orbax.restore(path, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))
      except (ValueError, KeyError, TypeError) as error:
        reason = str(error).strip().split('\n', 1)[0][:200]
        raise CheckpointError(
            f'{path} holds a training state of another structure than this'
            f' code builds for the same flags ({reason}). Resume it with the'
            ' version of the trainer that wrote it, or pass a new --workdir.'
        ) from error
      if errors:
        self._set_aside(steps[: steps.index(step)])
      return restored.state, record
    raise CheckpointError(
        f'No complete checkpoint in {self.directory}; refusing to start from'
        ' scratch over them. Move the directory aside (or pass a new'
        ' --workdir) to start afresh. Problems:\n  ' + '\n  '.join(errors)
    )

  def _remove_partial_writes(self) -> None:
    """Removes what a save or a deletion cut short left behind."""
    if self._primary:
      partial = sorted(
          name for name in os.listdir(self.directory)
          if name.startswith((_STAGING_PREFIX, _DELETING_PREFIX))
          or _ORBAX_TMP in name
      )
      for name in partial:
        path = os.path.join(self.directory, name)
        if os.path.isdir(path):
          shutil.rmtree(path)
        else:
          os.remove(path)
      if partial:
        self._log(f'Removed partial writes of an interrupted save from'
                  f' {self.directory}: {", ".join(partial)}.')
    self._sync('optax_clr_remove_partial_writes')

  def _remove_staging(self, staging: str) -> None:
    """Removes a failed save's staging directory and Orbax's copy of it.

    Orbax raises on the first failed write while TensorStore may still be
    finishing others into the directory: it is removed until it stays away
    (two looks in a row, a second at most).
    """
    if not self._primary:
      return
    base = os.path.basename(staging)
    deadline = time.monotonic() + 1.0
    quiet = 0
    while quiet < 2 and time.monotonic() < deadline:
      names = [name for name in os.listdir(self.directory)
               if name == base or name.startswith(base + '.')]
      for name in names:
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
      quiet = 0 if names else quiet + 1
      time.sleep(0.05)

  def _delete(self, steps: list[int]) -> None:
    """Deletes old checkpoints: renamed out of the listing first."""
    for step in steps:
      doomed = os.path.join(self.directory, f'{_DELETING_PREFIX}{step}')
      os.rename(os.path.join(self.directory, str(step)), doomed)
      shutil.rmtree(doomed)

  def _set_aside(self, steps: list[int], *, sync: bool = True) -> None:
    """Moves damaged checkpoints out of the checkpoint directory."""
    if self._primary:
      stamp = time.strftime('%Y%m%d-%H%M%S')
      for step in steps:
        source = os.path.join(self.directory, str(step))
        destination = os.path.join(
            self.workdir, CORRUPT_SUBDIR, f'{step}-{stamp}'
        )
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        shutil.move(source, destination)
        self._log(f'Moved the damaged checkpoint to {destination}.')
    if sync:
      self._sync('optax_clr_set_aside_checkpoints')

  def _sync(self, name: str) -> None:
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(name)

  def close(self) -> None:
    """Releases Orbax's resources."""
    self._orbax.close()
