"""The LM trainer's run and its checks.

:class:`Config` holds every flag of ``python -m examples.lm.train`` with the
comparison's defaults; :func:`check_config` refuses one that cannot train,
naming the flag and the value, before anything is loaded or written (the
checks are :mod:`examples.flag_checks`, shared with the digits trainer).
The one check that needs the corpus, ``--context`` against the text's
length, follows in :func:`examples.lm.train.train_and_evaluate`.
"""

import dataclasses

from examples.flag_checks import check_choice
from examples.flag_checks import check_real
from examples.flag_checks import check_whole
from examples.flag_checks import flag
from examples.lm import model as model_lib
from examples.lm import schedules

# Whole-number flags that must be at least 1.
_POSITIVE_COUNTS = ('steps', 'batch_size', 'context', 'd_model', 'num_layers',
                    'num_heads', 'eval_windows', 'log_every',
                    'checkpoint_every')


@dataclasses.dataclass(frozen=True)
class Config:
  """A run; the defaults are the comparison's (``docs/report_lm.md``).

  Attributes:
    schedule: a family of :data:`schedules.FAMILIES`.
    decay_shape: wsd's cooldown shape.
    decay_fraction: wsd's cooldown over ``steps``.
    peak_lr: the schedule's peak rate.
    steps: the planned updates.
    warmup_steps: the warmup of constant, cosine, wsd, inverse_sqrt.
    batch_size: windows per update.
    context: bytes of context per window.
    d_model: the model's width.
    num_layers: transformer blocks.
    num_heads: attention heads.
    weight_decay: AdamW's decay of the matrices.
    seed: the initialization and the data order.
    eval_windows: validation windows (spread evenly over the held-out files).
    log_every: updates per log window.
    checkpoint_every: updates between checkpoints (and at the end).
  """

  schedule: str = 'wsd'
  decay_shape: str = '1-sqrt'
  decay_fraction: float = 0.2
  peak_lr: float = 0.006
  steps: int = 300
  warmup_steps: int = 30
  batch_size: int = 16
  context: int = 64
  d_model: int = 64
  num_layers: int = 2
  num_heads: int = 4
  weight_decay: float = 0.1
  seed: int = 0
  eval_windows: int = 256
  log_every: int = 50
  checkpoint_every: int = 100

  def model_config(self) -> model_lib.ModelConfig:
    return model_lib.ModelConfig(
        context=self.context, d_model=self.d_model,
        num_layers=self.num_layers, num_heads=self.num_heads)

  def schedule_config(self) -> schedules.ScheduleConfig:
    return schedules.ScheduleConfig(
        self.schedule, self.steps, self.warmup_steps, self.decay_fraction,
        self.decay_shape)


# A smoke test: seconds of training (CI), most of its time compiling.
QUICK = dict(steps=60, warmup_steps=6, batch_size=8, context=32, d_model=32,
             num_layers=1, num_heads=2, eval_windows=32, log_every=10,
             checkpoint_every=30, peak_lr=0.01)


def check_config(config: Config) -> None:
  """Refuses a run that cannot train, naming the flag and the value.

  Every numeric field is checked, including those the schedule does not
  use: counts are whole numbers (``--warmup-steps`` in ``[0, --steps)``),
  rates finite; ``--d-model`` must split into ``--num-heads`` heads and
  wsd's warmup and cooldown must fit in ``--steps``.

  Args:
    config: the run.

  Raises:
    ValueError: a field is out of range; the message names its flag.
  """
  check_choice(flag('schedule'), config.schedule, schedules.FAMILIES)
  check_choice(flag('decay_shape'), config.decay_shape,
               schedules.DECAY_SHAPES)
  for name in _POSITIVE_COUNTS:
    check_whole(config, name, 1)
  check_whole(config, 'warmup_steps', 0, config.steps)
  check_whole(config, 'seed', 0, 2**63)
  check_real(config, 'peak_lr', 0.0, low_open=True)
  check_real(config, 'decay_fraction', 0.0, 1.0, high_open=False)
  check_real(config, 'weight_decay', 0.0)
  if config.d_model % config.num_heads:
    raise ValueError(f'--d-model ({config.d_model}) must be a multiple of'
                     f' --num-heads ({config.num_heads}).')
  cooldown = round(config.decay_fraction * config.steps)
  if config.schedule == 'wsd' and config.warmup_steps + cooldown > (
      config.steps):
    raise ValueError(
        f'--warmup-steps ({config.warmup_steps}) and the cooldown'
        f' (--decay-fraction {config.decay_fraction} of --steps'
        f' {config.steps}: {cooldown} steps) must fit in --steps.')
