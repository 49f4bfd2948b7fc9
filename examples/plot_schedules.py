r"""Draws every learning-rate policy of optax_clr, and cyclical momentum.

Two PNGs, like the figures of Smith's papers:

* ``gallery.png``: triangular, triangular2, exp_range, one-cycle, the three
  decays (step, exponential, inverse time), the range test's ramp, cosine
  with warm restarts, warmup-stable-decay and inverse square root;
* ``gallery_momentum.png``: each cyclical momentum next to its learning rate
  (CLR with ``cyclic_momentum_schedule``, one-cycle with
  ``one_cycle_momentum_schedule``).

The curves are the library's own schedules evaluated at every step (one
``jax.vmap`` per schedule); :func:`gallery_curves` returns them so that tests
can compare them with independent formulas. Run::

  python examples/plot_schedules.py                   # runs/gallery/
  python examples/plot_schedules.py --out docs/images  # the committed ones
"""

import argparse
from collections.abc import Sequence
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_clr

# Smith's example scale: 500 steps per epoch and a half cycle of 4 epochs.
STEPS_PER_EPOCH = 500
STEP_SIZE = 4 * STEPS_PER_EPOCH
NUM_STEPS = 6 * STEP_SIZE  # Three full cycles.
BASE_LR = 0.001  # Bounds as a range test gives them: max_lr read off it,
MAX_LR = 0.006  # base_lr about a quarter of it.
EXP_RANGE_GAMMA = 0.99994  # The value used in the Keras CLR examples.
STEP_DECAY_FACTOR = 0.5  # "Halve the rate every n epochs".
STEP_DECAY_EPOCHS = 2
EXPONENTIAL_DECAY_RATE = 0.95  # "Multiply by 0.95 per epoch".
INVERSE_TIME_DECAY_RATE = 0.5  # lr0 / (1 + 0.5 * epoch).
ONE_CYCLE_PCT_START = 0.3
BASE_MOMENTUM = 0.85
MAX_MOMENTUM = 0.95
RAMP_START_LR = 1e-7  # fastai's defaults for the range test.
RAMP_END_LR = 10.0
RAMP_NUM_STEPS = 100
RESTART_FIRST_PERIOD = 3 * STEPS_PER_EPOCH  # SGDR: 1500, 3000, 6000 steps...
RESTART_PERIOD_MULT = 2
RESTART_PEAK_MULT = 0.7  # Keras m_mul: each restart peaks lower.
RESTART_MIN_LR = BASE_LR
WARMUP_STEPS = STEPS_PER_EPOCH
WSD_DECAY_STEPS = NUM_STEPS // 5  # Hägele et al.: a cooldown of ~20%.


class Line(NamedTuple):
  """One curve of a panel: a label and the schedule that draws it."""

  label: str
  schedule: optax.Schedule


class Panel(NamedTuple):
  """One subplot: a title, its curves, their length and the y scale."""

  title: str
  lines: tuple[Line, ...]
  num_steps: int
  ylabel: str = 'learning rate'
  log_y: bool = False


def lr_panels() -> tuple[Panel, ...]:
  """The learning-rate policies, one panel each (the decays share one)."""
  return (
      Panel(
          'triangular',
          (Line('triangular', optax_clr.triangular_schedule(
              BASE_LR, MAX_LR, STEP_SIZE)),),
          NUM_STEPS,
      ),
      Panel(
          'triangular2',
          (Line('triangular2', optax_clr.triangular2_schedule(
              BASE_LR, MAX_LR, STEP_SIZE)),),
          NUM_STEPS,
      ),
      Panel(
          f'exp_range (gamma={EXP_RANGE_GAMMA})',
          (Line('exp_range', optax_clr.exp_range_schedule(
              BASE_LR, MAX_LR, STEP_SIZE, gamma=EXP_RANGE_GAMMA)),),
          NUM_STEPS,
      ),
      Panel(
          'one-cycle',
          (Line('one_cycle', optax_clr.one_cycle_schedule(
              MAX_LR, NUM_STEPS, pct_start=ONE_CYCLE_PCT_START)),),
          NUM_STEPS,
      ),
      Panel(
          'decays',
          (
              Line('step_decay', optax_clr.step_decay_schedule(
                  MAX_LR, STEP_DECAY_EPOCHS * STEPS_PER_EPOCH,
                  factor=STEP_DECAY_FACTOR)),
              Line('exponential_decay', optax_clr.exponential_decay_schedule(
                  MAX_LR, EXPONENTIAL_DECAY_RATE,
                  decay_steps=STEPS_PER_EPOCH)),
              Line('inverse_time_decay', optax_clr.inverse_time_decay_schedule(
                  MAX_LR, INVERSE_TIME_DECAY_RATE,
                  decay_steps=STEPS_PER_EPOCH)),
          ),
          NUM_STEPS,
      ),
      Panel(
          'range-test ramp',
          (Line('range_test', optax_clr.range_test_schedule(
              RAMP_START_LR, RAMP_END_LR, RAMP_NUM_STEPS)),),
          RAMP_NUM_STEPS,
          log_y=True,
      ),
      Panel(
          'cosine with warm restarts',
          (
              Line('cosine_restarts', optax_clr.cosine_restarts_schedule(
                  MAX_LR, RESTART_FIRST_PERIOD,
                  period_mult=RESTART_PERIOD_MULT, min_lr=RESTART_MIN_LR)),
              Line('cosine_restarts_peak_mult',
                   optax_clr.cosine_restarts_schedule(
                       MAX_LR, STEP_SIZE, peak_mult=RESTART_PEAK_MULT,
                       min_lr=RESTART_MIN_LR)),
          ),
          NUM_STEPS,
      ),
      Panel(
          'warmup-stable-decay',
          (
              Line('wsd_1_sqrt', optax_clr.wsd_schedule(
                  MAX_LR, NUM_STEPS, WSD_DECAY_STEPS,
                  warmup_steps=WARMUP_STEPS, final_lr=BASE_LR)),
              Line('wsd_cosine', optax_clr.wsd_schedule(
                  MAX_LR, NUM_STEPS, WSD_DECAY_STEPS,
                  warmup_steps=WARMUP_STEPS, final_lr=BASE_LR,
                  decay_shape='cosine')),
          ),
          NUM_STEPS,
      ),
      Panel(
          'inverse square root',
          (Line('inverse_sqrt', optax_clr.inverse_sqrt_schedule(
              MAX_LR, WARMUP_STEPS)),),
          NUM_STEPS,
      ),
  )


def momentum_panels() -> tuple[Panel, ...]:
  """Each cyclical momentum next to the learning rate it mirrors."""
  return (
      Panel(
          'triangular CLR',
          (Line('triangular', optax_clr.triangular_schedule(
              BASE_LR, MAX_LR, STEP_SIZE)),),
          NUM_STEPS,
      ),
      Panel(
          'cyclical momentum',
          (Line('cyclic_momentum', optax_clr.cyclic_momentum_schedule(
              BASE_MOMENTUM, MAX_MOMENTUM, STEP_SIZE)),),
          NUM_STEPS,
          ylabel='momentum',
      ),
      Panel(
          'one-cycle LR',
          (Line('one_cycle', optax_clr.one_cycle_schedule(
              MAX_LR, NUM_STEPS, pct_start=ONE_CYCLE_PCT_START)),),
          NUM_STEPS,
      ),
      Panel(
          'one-cycle momentum',
          (Line('one_cycle_momentum', optax_clr.one_cycle_momentum_schedule(
              NUM_STEPS, base_momentum=BASE_MOMENTUM,
              max_momentum=MAX_MOMENTUM, pct_start=ONE_CYCLE_PCT_START)),),
          NUM_STEPS,
          ylabel='momentum',
      ),
  )


def evaluate(schedule: optax.Schedule, num_steps: int) -> np.ndarray:
  """The schedule at steps ``0 .. num_steps - 1``, one ``jax.vmap`` call."""
  steps = jnp.arange(num_steps)
  return np.asarray(jax.jit(jax.vmap(schedule))(steps))


def gallery_curves(panels: Sequence[Panel]) -> dict[str, np.ndarray]:
  """Every line of ``panels`` as ``{label: values at steps 0..n-1}``."""
  return {
      line.label: evaluate(line.schedule, panel.num_steps)
      for panel in panels
      for line in panel.lines
  }


def draw(panels: Sequence[Panel], *, columns: int):
  """Draws ``panels`` on a grid with ``columns`` columns.

  Args:
    panels: the subplots, in reading order.
    columns: subplots per row.

  Returns:
    The matplotlib ``Figure``; its axes hold one ``Line2D`` per
    :class:`Line`, with ``x`` the step and ``y`` the schedule's value.
  """
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  curves = gallery_curves(panels)
  rows = -(-len(panels) // columns)
  figure = Figure(figsize=(4.2 * columns, 3.0 * rows), layout='constrained')
  axes = figure.subplots(rows, columns, squeeze=False).ravel()
  for ax, panel in zip(axes, panels):
    steps = np.arange(panel.num_steps)
    for line in panel.lines:
      ax.plot(steps, curves[line.label], label=line.label)
    ax.set_title(panel.title)
    ax.set_xlabel('iteration')
    ax.set_ylabel(panel.ylabel)
    if panel.log_y:
      ax.set_yscale('log')
    if len(panel.lines) > 1:
      ax.legend(fontsize='small')
    ax.grid(alpha=0.3)
  for ax in axes[len(panels):]:
    ax.set_visible(False)
  return figure


def save_gallery(out_dir: str) -> dict[str, str]:
  """Writes ``gallery.png`` and ``gallery_momentum.png`` into ``out_dir``.

  Returns:
    ``{"gallery": path, "momentum": path}``.
  """
  os.makedirs(out_dir, exist_ok=True)
  paths = {
      'gallery': os.path.join(out_dir, 'gallery.png'),
      'momentum': os.path.join(out_dir, 'gallery_momentum.png'),
  }
  draw(lr_panels(), columns=3).savefig(paths['gallery'], dpi=110)
  draw(momentum_panels(), columns=2).savefig(paths['momentum'], dpi=110)
  return paths


def main(argv: Sequence[str] | None = None) -> dict[str, str]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
      '--out', default=os.path.join('runs', 'gallery'),
      help='directory for the PNGs (default: runs/gallery; the committed'
      ' ones are in docs/images)',
  )
  args = parser.parse_args(argv)
  paths = save_gallery(args.out)
  for path in paths.values():
    print(f'wrote {path}')
  return paths


if __name__ == '__main__':
  main()
