"""The comparison's numbers, checks, tables and figure (host side, NumPy).

Every bits-per-byte value is on the fixed validation windows; "mean ± std"
is over seeds (``ddof=1``); a paired difference pairs runs of one seed (same
initialization and data order). A difference is called "within noise" when
its mean is within two standard errors of the paired differences.
"""

import json
import os
from typing import Any

import jax
import numpy as np
import optax


def _stats(values) -> dict[str, Any]:
  values = np.asarray(values, np.float64)
  std = float(values.std(ddof=1)) if values.size > 1 else 0.0
  return {'mean': float(values.mean()), 'std': std,
          'seeds': [float(v) for v in values]}


def _paired(a, b) -> dict[str, Any]:
  """``a - b`` by seed: mean, std, and whether it is within 2 std errors.

  Pairs the seeds both have (the first ones: the cooldown runs may use
  fewer seeds than the sweep).
  """
  n = min(len(a['seeds']), len(b['seeds']))
  d = np.asarray(a['seeds'][:n]) - np.asarray(b['seeds'][:n])
  std = float(d.std(ddof=1)) if d.size > 1 else 0.0
  return {'mean': float(d.mean()), 'std': std,
          'within_noise': bool(abs(d.mean()) <= 2 * std / np.sqrt(d.size))}


def collect(setup, rows, sweep, suggested: float) -> dict[str, Any]:
  """Per schedule and peak: final validation bits per byte over seeds."""
  evals = np.asarray(jax.device_get(sweep.evals), np.float64)  # [K, evals]
  steps = np.asarray(sweep.eval_steps).tolist()
  half = steps.index(setup.config.steps // 2)
  groups: dict[tuple[str, str], dict[float, list[float]]] = {}
  for k, row in enumerate(rows):
    at = half if row.role == 'short' else -1
    per_peak = groups.setdefault((row.role, row.spec.name), {})
    per_peak.setdefault(row.peak, []).append(evals[k, at])
  out = {'setup': _setup(setup), 'suggested_lr': suggested,
         'eval_steps': steps, 'versions': _versions()}
  for role in ('grid', 'short', 'suggested'):
    table = {}
    for (r, name), per_peak in groups.items():
      if r != role:
        continue
      peaks = {p: _stats(v) for p, v in per_peak.items()}
      best = min(peaks, key=lambda p: peaks[p]['mean'])
      table[name] = {'best_peak': float(best), **peaks[best],
                     'by_peak': {f'{p:g}': s['mean'] for p, s in peaks.items()},
                     'at_peak': {f'{p:g}': s for p, s in peaks.items()}}
    out[{'grid': 'schedules'}.get(role, role)] = table
  for name, entry in out['suggested'].items():
    entry['regret'] = entry['mean'] - out['schedules'][name]['mean']
  return out


def add_checks(results: dict[str, Any]) -> None:
  """The Hägele et al. checks, as paired differences (bits per byte)."""
  grid, short, cd = results['schedules'], results['short'], results['cooldown']
  cosine = grid['cosine']
  checks = {'wsd 1-sqrt 20% - cosine': _paired(grid['wsd 1-sqrt 20%'], cosine)}
  for fraction in sorted({n.rsplit(' ', 1)[1] for n in grid if 'wsd' in n}):
    a, b = f'wsd 1-sqrt {fraction}', f'wsd linear {fraction}'
    checks[f'{a} - {b}'] = _paired(grid[a], grid[b])
  peak = f'{cd["peak"]:g}'
  for name, planned, cos in (('half', short['wsd 1-sqrt 20%'], short['cosine']),
                             ('full', grid['wsd 1-sqrt 20%'], cosine)):
    if name not in cd:  # --quick runs no cooldown.
      continue
    cooled = _stats(cd[name])
    cd[f'{name}_stats'] = cooled
    same = planned['at_peak'][peak]  # Planned for this length, same peak.
    checks[f'cooldown from checkpoint ({name}) - planned wsd'] = _paired(
        cooled, same)
    checks[f'cooldown from checkpoint ({name}) - planned cosine'] = _paired(
        cooled, cos)
  results['checks'] = checks


def _setup(setup) -> dict[str, Any]:
  c = setup.config
  return {'config': {k: getattr(c, k) for k in c.__dataclass_fields__},
          'peaks': list(setup.peaks), 'short_peaks': list(setup.short_peaks),
          'seeds': list(setup.seeds),
          'range_test': {'sweeps': setup.range_sweeps,
                         'steps': setup.range_steps,
                         'start_lr': setup.range_start,
                         'end_lr': setup.range_end}}


def _versions() -> dict[str, str]:
  import platform  # pylint: disable=g-import-not-at-top
  return {'jax': jax.__version__, 'optax': optax.__version__,
          'numpy': np.__version__, 'python': platform.python_version()}


def _best(entry: dict[str, Any], peaks: list[float]) -> str:
  """The best peak, marked when it is an end of the grid."""
  edge = entry['best_peak'] in (min(peaks), max(peaks))
  return f'{entry["best_peak"]:g}' + (' (edge)' if edge else '')


def _table(title: str, table: dict[str, Any], peaks: list[float]
           ) -> list[str]:
  keys = [f'{p:g}' for p in peaks]
  lines = [f'| {title} | best peak | val bits/byte (mean ± std) | '
           + ' | '.join(f'at {p}' for p in keys) + ' |',
           '|---|---|---|' + '---|' * len(keys)]
  for name, e in sorted(table.items(), key=lambda kv: kv[1]['mean']):
    lines.append(f'| {name} | {_best(e, peaks)} | {e["mean"]:.4f} ± '
                 f'{e["std"]:.4f} | ' + ' | '.join(
                     f'{e["by_peak"][p]:.4f}' for p in keys) + ' |')
  return lines


def markdown(results: dict[str, Any]) -> str:
  """The tables of ``results.md``."""
  peaks = results['setup']['peaks']
  half = results['setup']['config']['steps'] // 2
  lines = _table('schedule', results['schedules'], peaks)
  lines += ['', '"(edge)": the best peak is the lowest or highest of the'
            ' grid, so the schedule\'s best rate may lie outside it.', '']
  lines += _table(f'planned for {half} steps', results['short'],
                  results['setup'].get('short_peaks', peaks))
  lines += ['', f'`suggest_lr` (median of the range tests):'
            f' {results["suggested_lr"]:.4g}', '',
            '| schedule at the suggested rate | val bits/byte | regret |',
            '|---|---|---|']
  for name, e in results['suggested'].items():
    lines.append(f'| {name} | {e["mean"]:.4f} ± {e["std"]:.4f} |'
                 f' {e["regret"]:+.4f} |')
  if 'checks' in results:
    lines += ['', '| check (paired by seed) | difference (bits/byte) |'
              ' within noise |', '|---|---|---|']
    for name, c in results['checks'].items():
      lines.append(f'| {name} | {c["mean"]:+.4f} ± {c["std"]:.4f} |'
                   f' {"yes" if c["within_noise"] else "no"} |')
  return '\n'.join(lines) + '\n'


def curves(rows, sweep, results) -> dict[str, dict[str, list[float]]]:
  """Each schedule at its best peak: the mean training loss (bits) per step,
  its rate per step and the mean validation bits per byte per evaluation."""
  losses = np.asarray(sweep.losses, np.float64) / np.log(2.0)
  lrs = np.asarray(sweep.learning_rates, np.float64)
  evals = np.asarray(sweep.evals, np.float64)
  out = {}
  for name, entry in results['schedules'].items():
    ks = [k for k, r in enumerate(rows) if r.role == 'grid'
          and r.spec.name == name and r.peak == entry['best_peak']]
    rounded = lambda x: [float(f'{v:.5g}') for v in x]
    out[name] = {'loss': rounded(losses[ks].mean(0)), 'lr': rounded(lrs[ks[0]]),
                 'val_bpb': rounded(evals[ks].mean(0))}
  return out


def plot(results, path: str, *, window: int = 20) -> None:
  """Rate, training loss (trailing ``window``-step mean) and validation."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
  styles = {'linear': ':', 'cosine': '--', '1-sqrt': '-'}
  colors = {'10%': 'tab:green', '20%': 'tab:red', '40%': 'tab:purple'}
  others = iter(['tab:blue', 'tab:orange', 'tab:brown', 'tab:gray'])
  lows = []
  for name, curve in results['curves'].items():
    parts = name.split()
    wsd = parts[0] == 'wsd'
    kw = dict(ls=styles[parts[1]] if wsd else '-', lw=1.2 if wsd else 2.0,
              color=colors[parts[2]] if wsd else next(others), label=name)
    loss = np.asarray(curve['loss'])
    mean = np.convolve(loss, np.ones(window) / window, mode='valid')
    steps = np.arange(window - 1, len(loss))
    axes[0].plot(curve['lr'], **kw)
    axes[1].plot(steps, mean, **kw)
    axes[2].plot(results['eval_steps'], curve['val_bpb'], marker='o', ms=3,
                 **kw)
    lows.append(mean.min())
  total = len(loss)
  axes[0].set(xlabel='step', ylabel='learning rate',
              title='each schedule at its best peak')
  axes[1].set(xlabel='step', xlim=(total // 3, total),
              ylim=(min(lows) - 0.05, min(lows) + 0.5),
              ylabel=f'training loss, bits/byte ({window}-step mean)',
              title='training loss, mean over seeds')
  axes[2].set(xlabel='step', ylabel='validation bits/byte',
              title='validation, mean over seeds',
              ylim=(min(min(c['val_bpb']) for c in results['curves'].values())
                    - 0.05, None))
  axes[2].set_ylim(top=axes[2].get_ylim()[0] + 1.0)
  axes[0].legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write(results, sweep, rows, out: str) -> None:
  """``results.json``, ``results.md`` and ``curves.png`` in ``out``."""
  results['curves'] = curves(rows, sweep, results)
  with open(os.path.join(out, 'results.json'), 'w') as f:
    json.dump(results, f, indent=1, sort_keys=True)
  with open(os.path.join(out, 'results.md'), 'w') as f:
    f.write(markdown(results))
  plot(results, os.path.join(out, 'curves.png'))

