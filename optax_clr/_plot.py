"""The range test's plot; matplotlib is imported only when it is drawn."""

import os
from typing import Any

import numpy as np

from optax_clr import _suggest

_MARKERS = {'robust': 'D', 'steepest': 'o', 'valley': 's', 'minimum': 'v'}


def _figure():
  """A new figure that pyplot does not keep: nothing is left open after it."""
  try:
    from matplotlib import figure  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError(
        'plot_range_test needs matplotlib; install the extra with'
        ' `pip install "optax_clr[plot]"`.'
    ) from error
  return figure.Figure(figsize=(7.0, 4.2))


def plot_range_test(
    result: Any,
    *,
    ax: Any = None,
    path: str | os.PathLike[str] | None = None,
) -> Any:
  r"""Plots a range test's loss against the swept value, suggestions marked.

  Draws the raw and smoothed loss (for batched results from ``jax.vmap``: the
  medians, and a band from the lowest to the highest smoothed loss) up to the
  divergence, on a log axis for exponential sweeps; marks the
  :func:`optax_clr.suggest_lr` suggestions ``robust`` (the default),
  ``steepest``, ``valley`` and ``minimum``, shades the :func:`optax_clr.suggest_clr_bounds` interval
  :math:`[\text{base\_lr}, \text{max\_lr}]` and draws a dashed line where the
  sweep diverged. A suggestion the curve is too short for is left out.

  Args:
    result: a :class:`RangeTestResult`, one sweep or a batch of sweeps.
    ax: the matplotlib axes to draw on. When None, a new figure that
      pyplot does not track (so none is left open, however many are drawn):
      save it with ``path`` or ``ax.figure.savefig``, show it in a notebook
      with ``display(ax.figure)``.
    path: when given, the figure is saved there (format from the suffix).

  Returns:
    ax
      The matplotlib axes drawn on.

  Raises:
    ImportError: matplotlib is missing (the ``optax_clr[plot]`` extra).

  Examples:
    >>> import numpy as np
    >>> import optax_clr
    >>> lrs = np.geomspace(1e-4, 1.0, 41)
    >>> loss = (np.log10(lrs) + 2.0) ** 2
    >>> result = optax_clr.RangeTestResult(lrs, loss, loss, {}, 41)
    >>> ax = optax_clr.plot_range_test(result)
    >>> ax.get_xscale()
    'log'
  """
  if ax is None:
    ax = _figure().subplots()
  data = _suggest.curves(result)
  n = max(data.valid, 1)
  x = data.lrs[:n]
  if data.smoothed.shape[0] == 1:
    ax.plot(x, data.losses[0, :n], color='C0', alpha=0.3, lw=1, label='loss')
    ax.plot(x, data.median[:n], color='C0', lw=2, label='smoothed loss')
    low = high = data.median[:n]
  else:
    low = np.min(data.smoothed[:, :n], axis=0)
    high = np.max(data.smoothed[:, :n], axis=0)
    ax.plot(x, np.median(data.losses[:, :n], axis=0), color='C0', alpha=0.3,
            lw=1, label='median loss')
    ax.fill_between(
        x, low, high, color='C0', alpha=0.25,
        label=f'{data.smoothed.shape[0]} sweeps: min to max',
    )
    ax.plot(x, data.median[:n], color='C0', lw=2, label='median smoothed loss')

  if result.mode == 'exponential':
    ax.set_xscale('log')
  for method, marker in _MARKERS.items():
    try:
      lr = _suggest.suggest_lr(result, method=method)
    except ValueError:
      continue
    if result.mode == 'exponential':
      y = np.interp(np.log(lr), np.log(x), data.median[:n])
    else:
      y = np.interp(lr, x, data.median[:n])
    ax.plot(lr, y, marker, color='C1', ms=8, ls='none',
            label=f'{method}: {lr:.3g}', markeredgecolor='k')
  try:
    base_lr, max_lr = _suggest.suggest_clr_bounds(result)
  except ValueError:
    pass
  else:
    ax.axvspan(base_lr, max_lr, color='C2', alpha=0.15,
               label=f'CLR bounds: {base_lr:.3g} to {max_lr:.3g}')
  if data.diverged_lr is not None:
    ax.axvline(data.diverged_lr, color='C3', ls='--', lw=1,
               label=f'diverged at {data.diverged_lr:.3g}')

  # Keep the divergence spike from flattening the interesting part.
  finite = np.isfinite(low) & np.isfinite(high)
  if finite.any():
    raw = np.median(data.losses[:, :n], axis=0)
    lowest = float(np.min(np.minimum(low, raw)[finite]))
    best = int(np.argmin(np.where(finite, data.median[:n], np.inf)))
    top = float(np.max(high[: best + 1][finite[: best + 1]]))
    margin = 0.1 * (top - lowest) or 0.1 * abs(top) or 1.0
    ax.set_ylim(lowest - margin, top + margin)

  name = 'learning rate' if result.hyperparam == 'learning_rate' else (
      result.hyperparam)
  ax.set_xlabel(f'{name} ({result.mode} sweep)')
  ax.set_ylabel('loss')
  ax.set_title('LR range test' if name == 'learning rate' else
               f'range test of {name}')
  ax.grid(True, which='major', alpha=0.3)
  ax.legend(fontsize='small')
  if path is not None:
    ax.figure.savefig(path, dpi=120, bbox_inches='tight')
  return ax
