"""The saddle-point experiment's tables, figures and ``results.json``."""

import argparse
from collections.abc import Sequence
import json
import os
import sys
from typing import Any

import jax
import numpy as np
import optax

from examples.saddle.policies import POLICIES
from examples.saddle.simulation import MIN_VALUE
from examples.saddle.simulation import MINIMA
from examples.saddle.simulation import objective
from examples.saddle.simulation import SADDLE
from examples.saddle.simulation import Simulation


def scenario_label(row: dict[str, Any]) -> str:
  return f"saddle at {row['saddle_at']}, {row['budget']} budget"


def _show_step(value: int | None, steps: int) -> str:
  return f'> {steps}' if value is None else str(value)


def markdown_table(rows: Sequence[dict[str, Any]], *, steps: int) -> str:
  """The full results as a markdown table, one row per scenario and policy."""
  lines = [
      '| saddle at | budget | policy | peak LR | mean LR | escaped |'
      ' median steps to escape [IQR] | sum of LR to median escape |'
      ' final loss (mean ± std) |',
      '|---:|---|---|---:|---:|---:|---:|---:|---:|',
  ]
  for row in rows:
    median = _show_step(row['median_escape_step'], steps)
    low = _show_step(row['escape_step_q25'], steps)
    high = _show_step(row['escape_step_q75'], steps)
    spent = row['cumulative_lr_to_median_escape']
    spent = '-' if spent is None else f'{spent:.2f}'
    if row['diverged_fraction'] > 0:
      loss = f"{row['diverged_fraction']:.0%} diverged"
    else:
      loss = f"{row['final_loss_mean']:.3f} ± {row['final_loss_std']:.3f}"
    lines.append(
        f"| {row['saddle_at']} | {row['budget']} | {row['policy']} |"
        f" {row['peak_lr']:.4f} | {row['mean_lr']:.4f} |"
        f" {row['escaped_fraction']:.0%} ± {row['escaped_stderr']:.0%} |"
        f" {median} [{low}, {high}] | {spent} | {loss} |"
    )
  return '\n'.join(lines) + '\n'


def summary_table(rows: Sequence[dict[str, Any]], *, steps: int) -> str:
  """A compact table: one row per policy, one column per scenario.

  Each cell is ``escaped fraction / median steps to escape (mean LR)``.
  """
  scenarios = list(dict.fromkeys(scenario_label(row) for row in rows))
  cells = {(scenario_label(row), row['policy']): row for row in rows}
  lines = [
      '| policy | ' + ' | '.join(scenarios) + ' |',
      '|---|' + '---:|' * len(scenarios),
  ]
  for policy in POLICIES:
    shown = []
    for scenario in scenarios:
      row = cells[(scenario, policy)]
      median = _show_step(row['median_escape_step'], steps)
      shown.append(
          f"{row['escaped_fraction']:.0%} / {median}"
          f" ({row['mean_lr']:.4f})"
      )
    lines.append(f'| {policy} | ' + ' | '.join(shown) + ' |')
  return '\n'.join(lines) + '\n'


def _pyplot():
  """matplotlib's pyplot on the Agg backend, imported only when plotting."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top

  return pyplot


def plot_trajectories(
    sim: Simulation,
    scenarios: Sequence[str],
    path: str,
    *,
    shown: int = 8,
) -> None:
  """Draws ``shown`` runs per schedule over the contours of ``f``.

  One row per scenario, one column per policy; escaped runs are blue.
  """
  plt = _pyplot()
  grid = np.linspace(-1.5, 1.5, 241)
  xx, yy = np.meshgrid(grid, grid)
  ff = np.asarray(objective(np.stack([xx, yy], axis=-1)))
  columns = len(POLICIES)
  fig, axes = plt.subplots(
      len(scenarios), columns, figsize=(2.0 * columns, 2.2 * len(scenarios)),
      squeeze=False, sharex=True, sharey=True,
  )
  paths = np.asarray(sim.paths)
  escaped = np.asarray(sim.escaped)
  for index, ax in enumerate(axes.flat):
    scenario, policy = scenarios[index // columns], POLICIES[index % columns]
    ax.contour(xx, yy, ff, levels=np.linspace(-0.45, 2.0, 12), cmap='Greys',
               linewidths=0.5)
    for seed in range(min(shown, paths.shape[1])):
      color = 'tab:blue' if escaped[index, seed] else 'tab:red'
      ax.plot(paths[index, seed, :, 0], paths[index, seed, :, 1], color=color,
              linewidth=0.8, alpha=0.8)
    ax.plot(*SADDLE, 'kx', markersize=6)
    ax.plot(*np.transpose(MINIMA), 'k*', markersize=6)
    ax.set_title(f'{policy}: {escaped[index].mean():.0%}', fontsize=8)
    ax.set_aspect('equal')
    ax.tick_params(labelsize=6)
    if index % columns == 0:
      ax.set_ylabel(scenario.replace(', ', '\n'), fontsize=8)
  start = ', '.join(f'{v:g}' for v in paths[0, 0, 0])
  fig.suptitle(
      f'Noisy gradient descent on x² - y² + y⁴/2 from ({start}): blue escaped,'
      ' red stuck (x saddle, * minima); titles: fraction of all runs escaped',
      fontsize=9,
  )
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_loss_lr(
    sim: Simulation,
    scenarios: Sequence[str],
    path: str,
    *,
    escape_loss: float,
) -> None:
  """Draws the rate and the median loss (with its IQR band) against step."""
  plt = _pyplot()
  lrs = np.asarray(sim.lrs)
  losses = np.asarray(sim.losses, np.float64)
  fig, axes = plt.subplots(
      2, len(scenarios), figsize=(4.2 * len(scenarios), 6.0), squeeze=False,
      sharex=True,
  )
  colors = plt.get_cmap('tab10').colors
  t = np.arange(losses.shape[-1])
  for column, scenario in enumerate(scenarios):
    lr_ax, loss_ax = axes[0, column], axes[1, column]
    for p, policy in enumerate(POLICIES):
      index = column * len(POLICIES) + p
      color = colors[p % len(colors)]
      lr_ax.plot(lrs[index], color=color, linewidth=1.0, label=policy)
      q25, q50, q75 = np.nanpercentile(losses[index], [25, 50, 75], axis=0)
      loss_ax.plot(t, q50, color=color, linewidth=1.0)
      loss_ax.fill_between(t, q25, q75, color=color, alpha=0.15, linewidth=0)
    lr_ax.set_title(scenario, fontsize=9)
    lr_ax.set_yscale('log')
    loss_ax.axhline(escape_loss, color='k', linestyle=':', linewidth=0.8)
    loss_ax.set_ylim(MIN_VALUE - 0.05, 0.1)
    loss_ax.set_xlabel('step of the simulation')
  axes[0, 0].set_ylabel('learning rate')
  axes[1, 0].set_ylabel('loss: median and IQR band')
  axes[0, 0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_outputs(
    args: argparse.Namespace,
    sim: Simulation,
    scenarios: Sequence[str],
    rows: Sequence[dict[str, Any]],
) -> str:
  """Writes the tables, ``results.json`` and two PNGs under ``args.out``.

  Returns:
    The summary table.
  """
  os.makedirs(args.out, exist_ok=True)
  summary = summary_table(rows, steps=args.steps)
  with open(os.path.join(args.out, 'table.md'), 'w') as f:
    f.write(markdown_table(rows, steps=args.steps))
  with open(os.path.join(args.out, 'summary.md'), 'w') as f:
    f.write(summary)
  record = {
      'objective': 'f(x, y) = x^2 - y^2 + y^4 / 2',
      'escape': f'first step t with f(theta_t) < {args.escape_loss}',
      'config': {k: v for k, v in vars(args).items() if k != 'out'},
      'versions': {
          'python': sys.version.split()[0], 'jax': jax.__version__,
          'optax': optax.__version__, 'numpy': np.__version__,
          'backend': jax.default_backend(),
      },
      'rows': list(rows),
  }
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump(record, f, indent=2)
    f.write('\n')
  plot_trajectories(sim, scenarios, os.path.join(args.out, 'trajectories.png'),
                    shown=args.plot_seeds)
  plot_loss_lr(sim, scenarios, os.path.join(args.out, 'loss_lr.png'),
               escape_loss=args.escape_loss)
  return summary
