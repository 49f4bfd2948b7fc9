"""The trainer's command line: one flag per :class:`Config` field."""

import argparse
from collections.abc import Sequence
import dataclasses
import os
import sys
import time

import jax

from examples import checkpointing
from examples import compile_cache
from examples import data
from examples import metrics_log
from examples import model as model_lib
from examples import parallel
from examples import storage_errors
from examples.trainer.config import Config
from examples.trainer.config import OPTIMIZERS
from examples.trainer.config import SCHEDULES
from examples.trainer.find_lr import FIND_LR_END
from examples.trainer.find_lr import FIND_LR_START
from examples.trainer.loop import NonFiniteLossError
from examples.trainer.loop import train_and_evaluate

DESCRIPTION = 'Trains a Flax NNX classifier with a cyclical learning rate.'


def build_parser() -> argparse.ArgumentParser:
  """The command-line flags; each maps to a :class:`Config` field."""
  defaults = Config()
  parser = argparse.ArgumentParser(
      description=DESCRIPTION,
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  add = parser.add_argument
  add('--schedule', choices=SCHEDULES, default=defaults.schedule,
      help='learning-rate policy')
  add('--base-lr', type=float, default=defaults.base_lr,
      help='lower LR (the fixed LR; one_cycle starts here)')
  add('--max-lr', type=float, default=defaults.max_lr,
      help='upper LR (the decays start here)')
  add('--step-size-epochs', type=float, default=defaults.step_size_epochs,
      help='half a CLR cycle, in epochs (Smith: 2-10); the decay period')
  add('--gamma', type=float, default=defaults.gamma,
      help='exp_range per-step amplitude decay')
  add('--decay-rate', type=float, default=defaults.decay_rate,
      help='rate of step/exponential/inverse-time decay per period')
  add('--epochs', type=int, default=defaults.epochs,
      help='passes over the data')
  add('--batch-size', type=int, default=defaults.batch_size,
      help='global batch, split over all devices')
  add('--eval-batch-size', type=int, default=defaults.eval_batch_size,
      help='test-set batch')
  add('--optimizer', choices=OPTIMIZERS, default=defaults.optimizer,
      help='optax optimizer')
  add('--momentum', type=float, default=defaults.momentum,
      help="SGD momentum (0: none) or Adam's b1")
  add('--cycle-momentum', action='store_true',
      help='cycle momentum opposite to the LR (cyclical and one_cycle)')
  add('--base-momentum', type=float, default=defaults.base_momentum,
      help='momentum at the LR peak, with --cycle-momentum')
  add('--max-momentum', type=float, default=defaults.max_momentum,
      help='momentum at the LR troughs, with --cycle-momentum')
  add('--seed', type=int, default=defaults.seed,
      help='initialisation and data-order seed')
  add('--find-lr', action='store_true',
      help='choose the rate with optax_clr.nnx.find_lr first (range tests,'
      ' then candidates trained for this run\'s budget on the training set'
      ' less a 20%% validation split, scored on that split) and train a'
      ' triangular CLR between its clr_bounds')
  add('--find-lr-steps', type=int, default=defaults.find_lr_steps,
      help=f'steps of each of find_lr\'s range tests, from'
      f' {FIND_LR_START:g} to {FIND_LR_END:g}')
  add('--find-lr-sweeps', type=int, default=defaults.find_lr_sweeps,
      help='find_lr\'s range tests (batch orders, dropout keys), run as'
      ' one program and read through their median loss')
  add('--model', choices=model_lib.MODELS, default=defaults.model,
      help='network')
  add('--dataset', choices=data.DATASETS, default=defaults.dataset,
      help='digits is bundled; the others are read from --data-dir')
  add('--data-dir', default=None,
      help='folder with the MNIST/Fashion-MNIST IDX or CIFAR-10 files')
  add('--workdir', default=None,
      help='run directory, reuse it to resume; if unset, runs/train-<time>')
  add('--keep-checkpoints', type=int, default=defaults.keep_checkpoints,
      help='newest epoch checkpoints kept')
  add('--no-progress', action='store_true', help='hide the progress bar')
  add('--coordinator', default=None,
      help='HOST:PORT of process 0, for multi-process runs')
  add('--num-processes', type=int, default=None,
      help='processes in a multi-process run')
  add('--process-id', type=int, default=None,
      help='this process, 0 .. num_processes - 1')
  compile_cache.add_flag(parser)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the trainer from the command line; returns the exit status."""
  parser = build_parser()
  args = parser.parse_args(argv)
  compile_cache.enable(args.compilation_cache)
  distributed = (args.coordinator, args.num_processes, args.process_id)
  if any(value is not None for value in distributed):
    if any(value is None for value in distributed):
      parser.error('--coordinator, --num-processes and --process-id go'
                   ' together.')
    if args.workdir is None:
      parser.error('multi-process runs need a shared --workdir.')
    if args.num_processes < 1:
      parser.error(f'--num-processes must be >= 1, got {args.num_processes}.')
    if not 0 <= args.process_id < args.num_processes:
      parser.error(f'--process-id must be in [0, {args.num_processes}), got'
                   f' {args.process_id}.')
    parallel.initialize_distributed(*distributed)
  fields = {f.name for f in dataclasses.fields(Config)}
  config = Config(progress=not args.no_progress, **{
      key: value for key, value in vars(args).items() if key in fields})
  workdir = args.workdir or os.path.join(
      'runs', time.strftime('train-%Y%m%d-%H%M%S'))
  if jax.process_index() == 0:
    print(f'workdir: {workdir}; devices: {jax.device_count()}'
          f' ({jax.devices()[0].platform}), processes: {jax.process_count()}')
  # Orbax's echoes of a failed write would bury the one-line error.
  with storage_errors.echoes_held() as echoes:
    try:
      final = train_and_evaluate(config, workdir)
    except (NonFiniteLossError, data.DataError, checkpointing.CheckpointError,
            checkpointing.WorkdirError, ValueError, OSError) as error:
      # A full disk (OSError, or Orbax's ValueError) is one line naming it.
      echoes.drop()
      print(f'error: {storage_errors.message(error)}', file=sys.stderr)
      return 1
  if jax.process_index() == 0:
    print(metrics_log.dumps(final))
  return 0

