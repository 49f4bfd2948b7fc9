"""The training loop: :func:`train_and_evaluate` and one epoch of it.

Each epoch trains on its shuffled batches through :func:`steps.train_step`,
evaluates on the test split, logs every step to ``metrics.jsonl``, then
commits its checkpoint; the plots are drawn when the run ends, also when it
fails, but then quietly: the run's own error (a full disk, say) is the one
reported.
"""

from collections.abc import Callable
import dataclasses
import math
import os
import sys
from typing import Any

from flax import nnx
import jax
import numpy as np
import tqdm

from examples import checkpointing
from examples import data
from examples import metrics_log
from examples import parallel
from examples.trainer import resume
from examples.trainer import steps
from examples.trainer.config import check_config
from examples.trainer.config import Config
from examples.trainer.schedules import make_optimizer
from examples.trainer.schedules import step_size_in_steps


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or infinite."""

  def __init__(self, step: int, lr: float, loss: float, *, workdir: str,
               epochs_kept: int):
    kept = (f'its checkpoint after epoch {epochs_kept}' if epochs_kept
            else 'no checkpoint (the first epoch did not finish)')
    super().__init__(
        f'Non-finite training loss {loss} at step {step} (learning rate'
        f' {lr:.6g}); stopping. {workdir} keeps {kept}, but it resumes only'
        ' with the same flags, which repeat the same steps and stop here'
        ' again. Start a new run with a new --workdir and a lower'
        ' --max-lr/--base-lr (or --find-lr).'
    )
    self.step = step
    self.lr = lr

def _final_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
  """Summarises the last logged epoch."""
  last = records[-1]
  epoch = [r for r in records if r['epoch'] == last['epoch']]
  return {
      'epoch': last['epoch'] + 1,
      'step': last['step'] + 1,
      'lr': last['lr'],
      'train_loss': float(np.mean([r['loss'] for r in epoch])),
      'train_accuracy': float(np.mean([r['accuracy'] for r in epoch])),
      'test_loss': last['test_loss'],
      'test_accuracy': last['test_accuracy'],
  }


def train_and_evaluate(config: Config, workdir: str) -> dict[str, float]:
  """Trains (or resumes) a run in ``workdir`` and returns its final metrics.

  Args:
    config: the run's config.
    workdir: the run's directory (metrics, plots, checkpoints). Every
      process of a multi-process run must pass the same, shared, directory.

  Returns:
    ``epoch``, ``step``, ``lr``, ``train_loss`` and ``train_accuracy``
    (means over the last epoch), ``test_loss``, ``test_accuracy``,
    ``base_lr`` and ``max_lr`` (after ``--find-lr``).

  Raises:
    NonFiniteLossError: the loss became NaN or infinite.
    data.DataError: the dataset files are missing or corrupt.
    checkpointing.CheckpointError: the workdir's checkpoints are all
      damaged, or hold a state of another structure.
    checkpointing.WorkdirError: the workdir is a file, or another run holds
      it.
    metrics_log.MetricsError: the metrics file is damaged before the
      checkpoint (a ValueError).
    ValueError: a flag is out of range, or the flags do not match the
      checkpoint.
  """
  check_config(config)
  lock = checkpointing.lock_workdir(workdir)
  try:
    return _train_and_evaluate(config, workdir)
  finally:
    lock.release()


def _train_and_evaluate(config: Config, workdir: str) -> dict[str, float]:
  """:func:`train_and_evaluate` once the workdir is locked."""
  primary = jax.process_index() == 0
  log = tqdm.tqdm.write if primary else lambda message: None
  dataset = data.load_dataset(config.dataset, config.data_dir)
  n = len(dataset.train_images)
  if config.batch_size % jax.device_count() or config.batch_size > n:
    raise ValueError(
        f'--batch-size {config.batch_size} must be a multiple of the'
        f' {jax.device_count()} devices and at most the {n} training examples.'
    )
  steps_per_epoch = n // config.batch_size
  # The schedule's arguments in steps, checked before anything is written.
  step_size_in_steps(config, steps_per_epoch)
  if not config.find_lr:  # otherwise the range test picks base/max LR
    make_optimizer(config, steps_per_epoch)
  run = resume.Run(config, dataset, parallel.Placement(), steps_per_epoch,
                   log, workdir)
  checkpointer = checkpointing.Checkpointer(
      workdir, max_to_keep=config.keep_checkpoints, log=log)
  metrics = None
  try:
    run, state, data_rng, start_epoch = resume.start(run, checkpointer)
    name = 'metrics.jsonl' if primary else (
        f'metrics-process{jax.process_index()}.jsonl')
    metrics = metrics_log.MetricsLog(
        os.path.join(workdir, name), keep_epochs=start_epoch)
    for epoch in range(start_epoch, run.config.epochs):
      images, labels = data.epoch_batches(
          dataset.train_images, dataset.train_labels, config.batch_size,
          data_rng)
      # The epoch's records are on disk before its checkpoint commits.
      state = _train_epoch(run, state, epoch, images, labels, metrics)
      checkpointer.save(epoch + 1, nnx.to_pure_dict(state), {
          'epoch': epoch + 1,
          'rng': data_rng.bit_generator.state,
          'config': dataclasses.asdict(run.config),
      })
  except BaseException:
    _end(checkpointer, metrics, workdir, log, failed=True)
    raise
  _end(checkpointer, metrics, workdir, log, failed=False)
  final = _final_metrics(metrics.records)
  final.update(base_lr=run.config.base_lr, max_lr=run.config.max_lr)
  return final


def _end(
    checkpointer: checkpointing.Checkpointer,
    metrics: metrics_log.MetricsLog | None, workdir: str,
    log: Callable[[str], None], *, failed: bool,
) -> None:
  """Closes the checkpointer and plots the records logged so far.

  After a failure (``failed``) an error here is logged, not raised: it must
  not mask the run's own (on a full disk, plotting fails too).
  """
  steps = [checkpointer.close]
  if jax.process_index() == 0 and metrics is not None and metrics.records:
    steps.append(lambda: metrics_log.plot_metrics(metrics.records, workdir))
  for step in steps:
    if not failed:
      step()
      continue
    try:
      step()
    except Exception as error:  # pylint: disable=broad-exception-caught
      log(f'After the run failed, cleaning up failed too: {error}')


def _train_epoch(
    run: resume.Run, state: nnx.State, epoch: int, images: np.ndarray,
    labels: np.ndarray, metrics: metrics_log.MetricsLog,
) -> nnx.State:
  """Trains one epoch, evaluates, logs it; returns the new state."""
  config, placement = run.config, run.placement
  step = epoch * run.steps_per_epoch
  records = []
  bar = tqdm.tqdm(
      range(run.steps_per_epoch), desc=f'epoch {epoch + 1}/{config.epochs}',
      disable=not config.progress or jax.process_index() != 0,
      dynamic_ncols=True, file=sys.stdout,
  )
  for i in bar:
    state, values = steps.train_step(
        run.graphdef, state, placement.shard(images[i]),
        placement.shard(labels[i]))
    values = {key: float(value)
              for key, value in jax.device_get(values).items()}
    if not math.isfinite(values['loss']):
      metrics.extend(records)
      raise NonFiniteLossError(step + i, values['lr'], values['loss'],
                               workdir=run.workdir, epochs_kept=epoch)
    records.append({'step': step + i, 'epoch': epoch, **values})
    bar.set_postfix(loss=f'{values["loss"]:.4f}',
                    acc=f'{values["accuracy"]:.3f}',
                    lr=f'{values["lr"]:.3g}', refresh=False)
  bar.close()
  test = steps.evaluate(
      run.graphdef, state, run.dataset.test_images, run.dataset.test_labels,
      config.eval_batch_size, placement)
  records[-1].update(test)
  metrics.extend(records)
  if config.progress:
    run.log(f'epoch {epoch + 1}: test_loss={test["test_loss"]:.4f}'
            f' test_accuracy={test["test_accuracy"]:.4f}')
  return state

