r"""Saddle-point escape under every learning-rate policy, measured.

Smith 2015, §1 (https://arxiv.org/abs/1506.01186), after Dauphin et al.
(2014), argues that saddle points, not local minima, make training hard, and
that a cyclical learning rate, which periodically grows, traverses
saddle-point plateaus faster than a decaying one. This script puts the claim
to a test on a two-dimensional objective with one strict saddle and two
lower basins:

.. math::

  f(x, y) = x^2 - y^2 + \tfrac{1}{2} y^4, \qquad
  \nabla f(x, y) = (2x,\; -2y + 2y^3).

The saddle is ``(0, 0)`` with ``f = 0`` and Hessian ``diag(2, -2)``; the
minima are ``(0, +-1)`` with ``f = -1/2`` and Hessian ``diag(2, 4)``. Every
run starts near the saddle at ``(0.2, 0)``, on its stable manifold (the ``x``
axis): without noise gradient descent slides into the saddle and stays
there. The optimizer is gradient descent on a noisy gradient (a stand-in for
SGD),

.. math::

  \theta_{t+1} = \theta_t - \eta_t \left(\nabla f(\theta_t)
    + \sigma \xi_t\right), \qquad \xi_t \sim \mathcal{N}(0, I_2),

with ``eta_t = schedule(t)``. A run has *escaped* at the first step where
``f < escape_loss`` (default ``-0.25``, half way down to a minimum).

Near the saddle the coordinates decouple and ``y`` obeys
``y_{t+1} = (1 + 2 eta_t) y_t - eta_t sigma xi_t``: the noise seeds a
deviation of about ``sigma sqrt(eta) / 2`` and the instability multiplies it
by ``exp(2 sum_t eta_t)``. To first order, escape is therefore decided by the
cumulative learning rate ``sum_t eta_t`` (the gradient-flow time), and only
logarithmically by the noise and by how the rate is spread over the steps.
That is why the tables report the mean rate, and the sum of the rates up to
the median escape, next to the escape statistics.

Seven policies, all built with ``optax_clr``: fixed, step decay, exponential
decay, inverse-time decay, and triangular, triangular2 and exp_range CLR.
Their shapes span a training run of ``T = saddle_at + steps`` steps, of
which the last ``steps`` are simulated (the run reaches the start point
``saddle_at`` steps into training): the decays fall to ``--decay-to`` of
their initial rate at step ``T``, the cycles have ``--cycles`` periods in
``T`` with ``base_lr = --base-fraction * max_lr`` (the usual "a quarter of
``max_lr``"), and exp_range's amplitude falls to ``--decay-to`` at ``T``.
Two budgets make the policies comparable:

* ``peak``: every policy's largest rate is ``--lr`` (the fixed rate, the
  decays' initial rate, the cycles' ``max_lr``). This is how schedules are
  usually compared in practice: one rate read off a range test, used as the
  initial rate of a decay or the peak of a cycle.
* ``mean``: every shape is rescaled so that its mean rate over the ``T``
  training steps is ``--mean-lr``. This equalises the cumulative rate, the quantity that
  governs escape, and so asks whether the *shape* matters on its own.

All policies, budgets and seeds run as one ``jax.jit``-compiled program:
``jax.vmap`` over policies and seeds, ``jax.lax.scan`` over steps. Seed ``s``
draws the same noise under every policy (common random numbers). Run::

  python examples/saddle_point.py --out docs/saddle_point

to write ``summary.md`` (one row per policy), ``table.md`` (one row per
scenario and policy), ``results.json``, ``trajectories.png`` and
``loss_lr.png`` under ``--out``. By default two scenarios are run: the saddle
is met at the start of training (``--saddle-at 0``, the decays' most
favourable case) and 1000 steps into it (the usual case: the rate has
already decayed when the saddle is met). :func:`simulate` is the core that
tests call on a few seeds and steps.

The code lives in ``examples/saddle/``: the policies and budgets in
``policies.py``, the objective and the compiled simulation in
``simulation.py``, the tables and figures in ``report.py``; this file holds
the command line and re-exports their names.
"""

import argparse
from collections.abc import Sequence
import os
import sys
from typing import Any

if not __package__:
  # Run as a script: make ``examples`` importable from the repository root.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from examples.saddle.policies import budget_schedules
from examples.saddle.policies import BUDGETS
from examples.saddle.policies import mean_rate
from examples.saddle.policies import POLICIES
from examples.saddle.policies import policy_schedule
from examples.saddle.policies import shifted
from examples.saddle.report import markdown_table
from examples.saddle.report import plot_loss_lr
from examples.saddle.report import plot_trajectories
from examples.saddle.report import scenario_label
from examples.saddle.report import summary_table
from examples.saddle.report import write_outputs
from examples.saddle.simulation import gradient
from examples.saddle.simulation import MIN_VALUE
from examples.saddle.simulation import MINIMA
from examples.saddle.simulation import objective
from examples.saddle.simulation import SADDLE
from examples.saddle.simulation import simulate
from examples.saddle.simulation import Simulation
from examples.saddle.simulation import STABLE_LR
from examples.saddle.simulation import START
from examples.saddle.simulation import summarize
# pylint: enable=g-import-not-at-top,wrong-import-position

__all__ = (
    'BUDGETS',
    'MINIMA',
    'MIN_VALUE',
    'POLICIES',
    'SADDLE',
    'STABLE_LR',
    'START',
    'Simulation',
    'budget_schedules',
    'gradient',
    'main',
    'markdown_table',
    'mean_rate',
    'objective',
    'parse_args',
    'plot_loss_lr',
    'plot_trajectories',
    'policy_schedule',
    'run_experiment',
    'shifted',
    'simulate',
    'summarize',
    'summary_table',
    'write_outputs',
)


def run_experiment(
    args: argparse.Namespace,
) -> tuple[Simulation, list[str], list[dict[str, Any]]]:
  """Simulates every (saddle_at, budget, policy) in one compiled program.

  Args:
    args: the options of :func:`parse_args`.

  Returns:
    The :class:`Simulation`, the scenario labels (one per group of
    ``len(POLICIES)`` schedules) and one summary dict per schedule.
  """
  shape = dict(
      decay_to=args.decay_to, cycles=args.cycles,
      base_fraction=args.base_fraction,
  )
  schedules, scenarios, rows = [], [], []
  for saddle_at in args.saddle_at:
    for budget in BUDGETS:
      schedules += budget_schedules(
          budget, lr=args.lr, mean_lr=args.mean_lr, steps=args.steps,
          saddle_at=saddle_at, **shape,
      )
      labels = [{'saddle_at': saddle_at, 'budget': budget, 'policy': policy}
                for policy in POLICIES]
      scenarios.append(scenario_label(labels[0]))
      rows += labels
  sim = simulate(
      schedules, steps=args.steps, seeds=args.seeds, noise=args.noise,
      start=args.start, escape_loss=args.escape_loss, key=args.key,
  )
  rows = [{**row, **summarize(sim, index)} for index, row in enumerate(rows)]
  return sim, scenarios, rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """The command-line options; the defaults produced ``docs/saddle_point``."""
  parser = argparse.ArgumentParser(
      description='Saddle-point escape under every learning-rate policy.'
  )
  parser.add_argument('--out', default='runs/saddle_point',
                      help='output folder ("" writes nothing)')
  parser.add_argument('--steps', type=int, default=1000,
                      help='steps simulated from the start point')
  parser.add_argument('--seeds', type=int, default=128,
                      help='runs per policy and scenario')
  parser.add_argument('--noise', type=float, default=0.01,
                      help='gradient-noise scale sigma')
  parser.add_argument('--lr', type=float, default=0.01,
                      help='common peak rate of the "peak" budget')
  parser.add_argument('--mean-lr', type=float, default=0.005,
                      help='common mean rate of the "mean" budget')
  parser.add_argument('--saddle-at', type=int, nargs='+', default=[0, 1000],
                      help='training steps at which the run is at the start'
                      ' point; the schedules span saddle_at + steps')
  parser.add_argument('--decay-to', type=float, default=0.01,
                      help='final / initial rate of the decays')
  parser.add_argument('--cycles', type=int, default=5,
                      help='CLR cycles over the training run')
  parser.add_argument('--base-fraction', type=float, default=0.25,
                      help='base_lr / max_lr of the cycles')
  parser.add_argument('--start', type=float, nargs=2, default=list(START),
                      help='initial (x, y)')
  parser.add_argument('--escape-loss', type=float, default=-0.25,
                      help='a run has escaped once f falls below this')
  parser.add_argument('--key', type=int, default=0, help='PRNG seed')
  parser.add_argument('--plot-seeds', type=int, default=8,
                      help='runs drawn per panel of trajectories.png')
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Runs the experiment, writes ``--out`` and prints the summary table."""
  args = parse_args(argv)
  sim, scenarios, rows = run_experiment(args)
  unstable = sorted({row['policy'] for row in rows
                     if row['peak_lr'] >= STABLE_LR})
  if unstable:
    print(f'note: peak rate >= {STABLE_LR} (unstable at the minima) for'
          f' {", ".join(unstable)}', file=sys.stderr)
  if args.out:
    print(write_outputs(args, sim, scenarios, rows))
  return rows


if __name__ == '__main__':
  main()
