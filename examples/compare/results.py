"""The comparison's results: per-policy rows, the table, JSON and curves."""

from collections.abc import Sequence
import os
from typing import Any, NamedTuple

import numpy as np

from examples import multi_model
from examples.compare.policies import Policy
from examples.trainer.config import CYCLICAL

class Row(NamedTuple):
  """One policy's per-seed results."""

  label: str
  schedule: str
  base_lr: float
  max_lr: float
  final_accuracy: np.ndarray  # [seeds]
  iterations: np.ndarray  # [seeds]; NaN where the target was never reached.
  accuracy: np.ndarray  # [seeds, evals] test accuracy at each evaluation.
  lr: np.ndarray  # [steps] the first seed's learning rate per update.


def iterations_to_reach(
    accuracy: np.ndarray, eval_steps: np.ndarray, target: float
) -> np.ndarray:
  """Per model, the first evaluated iteration with accuracy >= ``target``.

  Args:
    accuracy: ``[models, evals]`` test accuracies.
    eval_steps: ``[evals]`` the iteration of each evaluation.
    target: the accuracy to reach.

  Returns:
    ``[models]`` float iterations, NaN where the target was never reached.
  """
  reached = accuracy >= target
  first = np.argmax(reached, axis=-1)
  return np.where(reached.any(axis=-1), eval_steps[first], np.nan)


def mean_std(values: np.ndarray) -> tuple[float, float]:
  """Mean and (population) std of the finite values; NaN if none."""
  finite = values[np.isfinite(values)]
  if not finite.size:
    return float('nan'), float('nan')
  return float(finite.mean()), float(finite.std())


def make_row(
    policy: Policy, trained: multi_model.Trained, models: slice, base_lr: float,
    max_lr: float,
) -> Row:
  """Collects the models ``models`` of ``trained`` into a :class:`Row`."""
  accuracy = np.asarray(trained.history.test_accuracy[models])
  return Row(
      label=policy.label,
      schedule=policy.schedule,
      base_lr=base_lr,
      max_lr=max_lr,
      final_accuracy=accuracy[:, -1],
      iterations=np.full(len(accuracy), np.nan),
      accuracy=accuracy,
      lr=np.asarray(trained.history.lr[models][0]),
  )


def with_iterations(
    rows: Sequence[Row], eval_steps: np.ndarray, target: float
) -> list[Row]:
  """The rows with ``iterations`` to ``target`` filled in."""
  return [
      row._replace(
          iterations=iterations_to_reach(row.accuracy, eval_steps, target)
      )
      for row in rows
  ]


def lr_text(row: Row) -> str:
  """How a row's learning rate is set, for the table."""
  if row.schedule == 'fixed':
    return f'{row.base_lr:.3g}'
  if row.schedule.endswith('decay'):
    return f'from {row.max_lr:.3g}'
  return f'{row.base_lr:.3g} to {row.max_lr:.3g}'


def format_table(rows: Sequence[Row], target: float, num_steps: int) -> str:
  """The markdown results table (mean ± std over seeds)."""
  lines = [
      f'| policy | LR | final test accuracy | iterations to {target:.4f}'
      ' | reached |',
      '|---|---|---|---|---|',
  ]
  for row in rows:
    accuracy, accuracy_std = mean_std(row.final_accuracy)
    iterations, iterations_std = mean_std(row.iterations)
    reached = int(np.isfinite(row.iterations).sum())
    steps = (
        f'{iterations:.0f} ± {iterations_std:.0f}' if reached else
        f'> {num_steps}'
    )
    lines.append(
        f'| {row.label} | {lr_text(row)} | {accuracy:.4f} ± {accuracy_std:.4f}'
        f' | {steps} | {reached}/{len(row.iterations)} |'
    )
  return '\n'.join(lines)


def rounded(values: np.ndarray) -> list[float]:
  """Values as floats with 6 significant digits (a compact JSON)."""
  return [float(f'{value:.6g}') for value in values]


def row_json(row: Row) -> dict[str, Any]:
  """A row as JSON-ready data (NaN iterations become null)."""
  accuracy, accuracy_std = mean_std(row.final_accuracy)
  iterations, iterations_std = mean_std(row.iterations)

  def number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)

  return {
      'schedule': row.schedule,
      'base_lr': row.base_lr,
      'max_lr': row.max_lr,
      'final_accuracy': [float(a) for a in row.final_accuracy],
      'final_accuracy_mean': accuracy,
      'final_accuracy_std': accuracy_std,
      'iterations_to_target': [number(i) for i in row.iterations],
      'iterations_mean': number(iterations),
      'iterations_std': number(iterations_std),
      'reached': int(np.isfinite(row.iterations).sum()),
      'test_accuracy_mean': rounded(row.accuracy.mean(axis=0)),
      'lr': rounded(row.lr),
  }


def is_cyclical(row: Row) -> bool:
  """CLR and one-cycle rows (drawn apart from the fixed rates and decays)."""
  return row.schedule in CYCLICAL or row.schedule == 'one_cycle'


def save_curves(
    rows: Sequence[Row], eval_steps: np.ndarray, target: float, path: str
) -> None:
  """Writes test accuracy (mean ± std band) and LR against iteration.

  Three panels: the baseline with the fixed rates and decays, the baseline
  with the cyclical policies, and every policy's learning rate.
  """
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  figure = Figure(figsize=(15, 4.6), layout='constrained')
  axes = figure.subplots(1, 3, sharey=False)
  groups = (
      [row for row in rows if not is_cyclical(row)],
      [rows[0]] + [row for row in rows if is_cyclical(row)],
  )
  colors = {row.label: f'C{i}' for i, row in enumerate(rows)}
  low = min(float(row.accuracy.mean(axis=0)[len(eval_steps) // 4])
            for row in rows)
  for ax, group in zip(axes, groups):
    for row in group:
      mean, std = row.accuracy.mean(axis=0), row.accuracy.std(axis=0)
      ax.plot(eval_steps, mean, color=colors[row.label], label=row.label)
      ax.fill_between(eval_steps, mean - std, mean + std,
                      color=colors[row.label], alpha=0.15)
    ax.axhline(target, color='k', lw=0.8, ls=':', label='target')
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_xlabel('iteration')
    ax.set_ylabel('test accuracy (mean ± std over seeds)')
    ax.legend(fontsize='small', loc='lower right')
    ax.grid(alpha=0.3)
  for row in rows:
    axes[2].plot(np.arange(len(row.lr)), row.lr, color=colors[row.label],
                 label=row.label)
  axes[2].set_yscale('log')
  axes[2].set_xlabel('iteration')
  axes[2].set_ylabel('learning rate')
  axes[2].grid(alpha=0.3)
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  figure.savefig(path, dpi=110)
