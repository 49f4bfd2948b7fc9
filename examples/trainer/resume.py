"""Starting a run: afresh (after the range test), or from its checkpoint.

:class:`Run` holds what stays fixed while a run trains and builds its model
and optimizer; :func:`start` restores the newest checkpoint of the workdir,
after checking the flags against it, or builds a fresh state.
"""

from collections.abc import Callable
import dataclasses
from typing import Any

from flax import nnx
import numpy as np

from examples import checkpointing
from examples import data
from examples import model as model_lib
from examples import parallel
from examples.trainer import find_lr
from examples.trainer.config import Config
from examples.trainer.schedules import make_optimizer

# Fields that must match a checkpoint to resume from it (``epochs`` may grow
# unless the schedule's length depends on it).
RESUME_FIELDS = (
    'dataset', 'model', 'schedule', 'base_lr', 'max_lr', 'step_size_epochs',
    'gamma', 'decay_rate', 'batch_size', 'optimizer', 'momentum',
    'cycle_momentum', 'base_momentum', 'max_momentum', 'seed',
)



def resume_config(config: Config, record: dict[str, Any]) -> Config:
  """The config to continue a checkpointed run with, or ValueError.

  Compared with the checkpoint's record before Orbax reads its arrays, so a
  flag that changes the state's structure (``--optimizer``, ``--model``,
  ``--cycle-momentum``, ``--momentum 0``) is named like any other change.
  """
  saved, done = record['config'], record['epoch']
  if config.find_lr:
    # The range test ran when the run started; reuse the bounds it found.
    config = dataclasses.replace(
        config, base_lr=saved.get('base_lr', config.base_lr),
        max_lr=saved.get('max_lr', config.max_lr))
  fields = RESUME_FIELDS
  if config.schedule == 'one_cycle':
    fields += ('epochs',)  # one cycle spans exactly the whole run
    allowed = ('Use the same flags (one_cycle spans the whole run, so'
               ' --epochs cannot change either)')
  else:
    allowed = 'Use the same flags (only --epochs may grow)'
  changed = [f'{name}: {saved.get(name)!r} -> {getattr(config, name)!r}'
             for name in fields if saved.get(name) != getattr(config, name)]
  if changed:
    raise ValueError(
        'The workdir holds a checkpoint of a different run ('
        + '; '.join(changed) + f'). {allowed}, or a new --workdir.'
    )
  if config.epochs < done:
    raise ValueError(
        f'The workdir holds a checkpoint after epoch {done}; --epochs'
        f' {config.epochs} would end before it. Pass --epochs {done} (or'
        ' more, to train on), or a new --workdir.'
    )
  return config



@dataclasses.dataclass(frozen=True)
class Run:
  """What stays fixed while a run trains."""

  config: Config
  dataset: data.Dataset
  placement: parallel.Placement
  steps_per_epoch: int
  log: Callable[[str], None]
  workdir: str = ''
  graphdef: nnx.GraphDef | None = None

  def build(self, config: Config) -> tuple['Run', nnx.State]:
    """A fresh model and optimizer for ``config``, placed on the mesh."""
    model = model_lib.make_model(config.model, self.dataset, seed=config.seed)
    tx = make_optimizer(config, self.steps_per_epoch)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    run = dataclasses.replace(self, config=config, graphdef=graphdef)
    return run, self.placement.replicate(state)


def start(
    run: Run, checkpointer: checkpointing.Checkpointer
) -> tuple[Run, nnx.State, np.random.Generator, int]:
  """Restores the newest checkpoint, or starts afresh (range test first)."""
  config = run.config
  resumed = {}

  def target(record: dict[str, Any]) -> Any:
    # The flags are checked against the record before any array is read.
    resumed['run'], resumed['state'] = run.build(
        resume_config(config, record))
    return nnx.to_pure_dict(resumed['state'])

  # A checkpoint whose record names another epoch than its directory is
  # damaged (it would be resumed as that epoch): an older one is used.
  restored = checkpointer.restore(target, step_key='epoch')
  data_rng = np.random.default_rng(config.seed)
  if restored is None:
    if config.find_lr:
      base_lr, max_lr = find_lr.find_lr_bounds(
          config, run.dataset, run.log, run.workdir)
      config = dataclasses.replace(config, base_lr=base_lr, max_lr=max_lr)
    run, state = run.build(config)
    return run, state, data_rng, 0
  pure_state, record = restored
  run, state = resumed['run'], resumed['state']
  nnx.replace_by_pure_dict(state, pure_state)
  data_rng.bit_generator.state = record['rng']
  run.log(f'Resuming {run.workdir} after epoch {record["epoch"]}.')
  return run, state, data_rng, record['epoch']

