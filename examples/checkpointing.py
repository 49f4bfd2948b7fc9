"""Epoch checkpoints with Orbax: save atomically, restore the newest intact.

A checkpoint holds a training state pytree (parameters and optimizer state,
hence the schedule's position) and a JSON record (the completed epoch count,
the data-order RNG state and the run's config). Orbax writes each one into a
temporary directory and renames it when complete, so a run killed while
saving leaves the previous checkpoints intact and never lists the partial
one.

Orbax does not checksum the arrays, so after each save the primary process
writes ``sha256.json``, the digest of every file, into the checkpoint. A
checkpoint is *complete* when that digest exists and every file matches it;
this catches truncated or flipped bytes before Orbax reads them (a failed
read there leaves TensorStore callbacks firing into a closed event loop).

On restore the newest complete checkpoint is used. Damaged ones are moved
aside (never deleted) into ``<workdir>/corrupt_checkpoints/`` with a message;
if none is complete, :class:`CheckpointError` stops the run rather than
silently starting from scratch.
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

CHECKPOINT_SUBDIR = 'checkpoints'
CORRUPT_SUBDIR = 'corrupt_checkpoints'
DIGEST_FILE = 'sha256.json'
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
  actual = file_digests(directory)
  for name in sorted(set(expected) | set(actual)):
    if name not in actual:
      raise ValueError(f'{name} is missing')
    if name not in expected:
      raise ValueError(f'{name} is not in {DIGEST_FILE}')
    if actual[name] != expected[name]:
      raise ValueError(f'{name} does not match its SHA-256')


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
      max_to_keep: the number of newest checkpoints kept; older ones are
        deleted after each save. Keep at least 2 so that a damaged newest
        checkpoint has a fallback.
      log: where messages go.
    """
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, CHECKPOINT_SUBDIR)
    self._log = log
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True,
            # The digest needs the files on disk before training goes on.
            enable_async_checkpointing=False,
        ),
    )

  def save(self, epoch: int, state: Any, record: Mapping[str, Any]) -> None:
    """Saves the state after ``epoch`` completed epochs, then its digest."""
    self._manager.save(
        epoch,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            record=ocp.args.JsonSave(dict(record)),
        ),
    )
    self._manager.wait_until_finished()
    if jax.process_index() == 0:
      step_dir = os.path.join(self.directory, str(epoch))
      digests = file_digests(step_dir)
      tmp = os.path.join(step_dir, DIGEST_FILE + '.tmp')
      with open(tmp, 'w') as f:
        json.dump(digests, f, indent=0, sort_keys=True)
      os.replace(tmp, os.path.join(step_dir, DIGEST_FILE))
    self._sync('optax_clr_checkpoint_digest')

  def restore(self, target: Any) -> tuple[Any, dict[str, Any]] | None:
    """Restores the newest complete checkpoint.

    Args:
      target: a state pytree with the structure, dtypes and shardings to
        restore into.

    Returns:
      ``(state, record)``, or None when the directory holds no checkpoint.

    Raises:
      CheckpointError: there are checkpoints but none is complete.
    """
    self._manager.reload()
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      leftovers = sorted(os.listdir(self.directory))
      if leftovers:
        self._log(
            f'No complete checkpoint in {self.directory} (only partial'
            f' writes: {", ".join(leftovers)}); starting from scratch.'
        )
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
      restored = self._manager.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(target),
              record=ocp.args.JsonRestore(),
          ),
      )
      if errors:
        self._set_aside(steps[: steps.index(step)])
      return restored.state, dict(restored.record)
    raise CheckpointError(
        f'No complete checkpoint in {self.directory}; refusing to start from'
        ' scratch over them. Move the directory aside (or pass a new'
        ' --workdir) to start afresh. Problems:\n  ' + '\n  '.join(errors)
    )

  def _set_aside(self, steps: list[int]) -> None:
    """Moves damaged checkpoints out of the manager's directory."""
    if jax.process_index() == 0:
      stamp = time.strftime('%Y%m%d-%H%M%S')
      for step in steps:
        source = os.path.join(self.directory, str(step))
        destination = os.path.join(
            self.workdir, CORRUPT_SUBDIR, f'{step}-{stamp}'
        )
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        shutil.move(source, destination)
        self._log(f'Moved the damaged checkpoint to {destination}.')
    self._sync('optax_clr_set_aside_checkpoints')
    self._manager.reload()

  def _sync(self, name: str) -> None:
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(name)

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()
