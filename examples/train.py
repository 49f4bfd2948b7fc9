r"""Trains a Flax NNX classifier with a cyclical learning rate.

The main job: ``python examples/train.py`` trains a small CNN on
scikit-learn's bundled 8x8 digits with a triangular CLR (no download). The
schedule lives inside the one compiled ``train_step``; the learning rate
logged with every step is read back from the ``optax.inject_hyperparams``
state, so it is the rate the update used.

Each run writes into its workdir: ``metrics.jsonl``, ``loss.png``,
``accuracy.png``, ``lr.png``, ``training.png`` and an Orbax checkpoint per
epoch. Running again with the same ``--workdir`` and a larger ``--epochs``
resumes and reproduces the uninterrupted run. The batch is sharded over all
devices (``jax.sharding``); ``--coordinator/--num-processes/--process-id``
run one process per host under JAX's multi-controller runtime::

  python examples/train.py
  python examples/train.py --find-lr --schedule triangular2 --epochs 12
  python examples/train.py --dataset mnist --data-dir ~/data/mnist

The code lives in ``examples/trainer/``, one concern a module: the flags
and their checks in ``config.py``, the schedules and optimizer in
``schedules.py``, the jitted ``train_step`` and ``eval_step`` in
``steps.py``, the range test in ``find_lr.py``, checkpoint and resume in
``resume.py``, the loop (``train_and_evaluate``) in ``loop.py`` and the
command line in ``main.py``. This module re-exports their public names.
"""

import os
import sys

if not __package__:
  # Run as a script: make ``examples`` importable from the repository root.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from examples.trainer.config import check_config
from examples.trainer.config import Config
from examples.trainer.config import CYCLICAL
from examples.trainer.config import flag
from examples.trainer.config import OPTIMIZERS
from examples.trainer.config import SCHEDULES
from examples.trainer.find_lr import FIND_LR_END
from examples.trainer.find_lr import FIND_LR_START
from examples.trainer.find_lr import find_lr_bounds
from examples.trainer.loop import NonFiniteLossError
from examples.trainer.loop import train_and_evaluate
from examples.trainer.main import build_parser
from examples.trainer.main import main
from examples.trainer.schedules import make_optimizer
from examples.trainer.schedules import make_schedule
from examples.trainer.steps import eval_step
from examples.trainer.steps import evaluate
from examples.trainer.steps import loss_fn
from examples.trainer.steps import train_step
# pylint: enable=g-import-not-at-top,wrong-import-position

__all__ = (
    'CYCLICAL',
    'Config',
    'FIND_LR_END',
    'FIND_LR_START',
    'NonFiniteLossError',
    'OPTIMIZERS',
    'SCHEDULES',
    'build_parser',
    'check_config',
    'eval_step',
    'evaluate',
    'find_lr_bounds',
    'flag',
    'loss_fn',
    'main',
    'make_optimizer',
    'make_schedule',
    'train_and_evaluate',
    'train_step',
)

if __name__ == '__main__':
  sys.exit(main())
