"""Benchmark 3: cost vs the number of cycles in the evaluated range.

The same triangular CLR two ways: ours (one closed form, integer cycle
arithmetic) and ``optax.join_schedules`` over two ``linear_schedule`` pieces
per cycle, the only way to write a CLR with optax today. Both are evaluated
on the same counts, spread evenly over ``cycles`` periods of ``2 * step_size``
steps. Ours must stay flat (<= 1.1x from 1 to 10^5 cycles); the join grows
with the number of pieces, in run time and in compile time. Writes
``<device>_cycles.png``.

The same for cosine annealing with warm restarts: ours
(``cosine_restarts_schedule``, integer restart arithmetic) at 1 and 10^5
restarts against ``optax.sgdr_schedule``, which joins one cosine schedule per
period.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_clr
from benchmarks import _harness

TITLE = ('ours flat vs the same CLR built with optax.join_schedules, and'
         ' cosine restarts vs optax.sgdr_schedule')
BASE_LR, MAX_LR, STEP_SIZE = 1e-3, 1e-1, 10


def join_clr(base_lr, max_lr, step_size: int, cycles: int) -> optax.Schedule:
  """The triangular CLR as ``optax.join_schedules`` of 2 * cycles ramps."""
  pieces, boundaries = [], []
  for c in range(cycles):
    pieces += [
        optax.linear_schedule(base_lr, max_lr, step_size),
        optax.linear_schedule(max_lr, base_lr, step_size),
    ]
    boundaries += [(2 * c + 1) * step_size, (2 * c + 2) * step_size]
  return optax.join_schedules(pieces, boundaries[:-1])


def sgdr(lr, period: int, restarts: int) -> optax.Schedule:
  """Cosine restarts as ``optax.sgdr_schedule``: one schedule per period."""
  return optax.sgdr_schedule([
      dict(init_value=lr, peak_value=lr, warmup_steps=0, decay_steps=period,
           end_value=0.0)
      for _ in range(restarts)
  ])


def spread_counts(num_counts: int, cycles: int, step_size: int) -> jax.Array:
  """``num_counts`` int32 counts spread evenly over ``cycles`` periods."""
  span = 2 * step_size * cycles
  counts = (np.arange(num_counts, dtype=np.int64) * span) // num_counts
  return jnp.asarray(counts, jnp.int32)


def _label(impl: str, cycles: int) -> str:
  unit = 'restarts' if impl in ('restarts', 'sgdr') else 'cycles'
  return f'{impl} {cycles:g} {unit}'


def _plot(path: str, ours: dict, join: dict, device: str) -> None:
  """Run and compile time vs cycles, log-log, ours vs the join."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
  for ax, metric in zip(axes, ('run', 'compile')):
    for name, points, style in (
        ('optax_clr.triangular_schedule', ours, 'o-'),
        ('optax.join_schedules', join, 's--'),
    ):
      xs = sorted(points)
      ax.plot(xs, [points[x][metric] for x in xs], style, label=name)
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('cycles in the evaluated range')
    ax.set_ylabel(f'{metric} time (s, median)')
    ax.set_title(f'{metric} time ({device})')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(loc='upper left')
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run(settings: _harness.Settings, out_dir: str | None = None) -> dict:
  """Times ours and the join at each number of cycles; returns the record."""
  if settings.quick:
    num_counts, number = 2**10, 3
    ours_cycles, join_cycles = (1, 10, 10**5), (1, 10)
    sgdr_counts = (1, 10)
  else:
    num_counts, number = 2**16, 10
    ours_cycles = (1, 10, 100, 1000, 10**4, 10**5)
    join_cycles = (1, 10, 100, 1000)
    sgdr_counts = (1, 10, 100)
  restart_counts = tuple(sorted(set(sgdr_counts) | {1, 10**5}))
  ours = optax_clr.triangular_schedule(BASE_LR, MAX_LR, STEP_SIZE)
  # One restart period spans one CLR cycle, so the counts are shared.
  restarts = optax_clr.cosine_restarts_schedule(MAX_LR, 2 * STEP_SIZE)
  counts = {c: spread_counts(num_counts, c, STEP_SIZE)
            for c in set(ours_cycles) | set(restart_counts)}
  run_times, compile_times, checks, points = {}, {}, {}, {}
  # Ours at every number of cycles in one interleaved group (flatness is a
  # comparison among them); the join, whose calls are up to 10^4 times
  # longer, in another, so they do not disturb each other's samples.
  groups = (
      ('ours', {c: ours for c in ours_cycles}),
      ('join', {c: join_clr(BASE_LR, MAX_LR, STEP_SIZE, c)
                for c in join_cycles}),
      ('restarts', {c: restarts for c in restart_counts}),
      ('sgdr', {c: sgdr(MAX_LR, 2 * STEP_SIZE, c) for c in sgdr_counts}),
  )
  # Ours is cheap to call and to compile: more calls per sample and three
  # times the repeats average out the machine's noise.
  effort = {'ours': (3, 10), 'join': (1, 1), 'restarts': (3, 10),
            'sgdr': (1, 1)}
  executables = {}
  for impl, fns in groups:
    repeat_factor, number_factor = (1, 1) if settings.quick else effort[impl]
    exes, compiled = _harness.time_compiles(
        {_label(impl, c): (fn, (counts[c],)) for c, fn in fns.items()},
        repeats=settings.compile_repeats * repeat_factor)
    timed = _harness.time_interleaved(
        {_label(impl, c): (lambda e=exes[_label(impl, c)], x=counts[c]: e(x))
         for c in fns},
        repeats=settings.repeats * repeat_factor,
        number=number * number_factor)
    for c, fn in fns.items():
      lowered = jax.jit(fn).lower(counts[c]).as_text()
      checks[f'hlo_lines_{impl}_{c:g}'] = lowered.count('\n')
    executables.update(exes)
    run_times.update(timed)
    compile_times.update(compiled)
    points[impl] = {
        c: {'run': timed[_label(impl, c)]['median_s'],
            'compile': compiled[_label(impl, c)]['median_s']}
        for c in fns
    }
  for c in join_cycles:
    a = np.asarray(executables[_label('ours', c)](counts[c]))
    b = np.asarray(executables[_label('join', c)](counts[c]))
    checks[f'max_abs_diff_{c}_cycles'] = float(np.max(np.abs(a - b)))
  for c in sgdr_counts:
    a = np.asarray(jax.jit(restarts)(counts[c]))
    b = np.asarray(executables[_label('sgdr', c)](counts[c]))
    checks[f'max_abs_diff_restarts_vs_sgdr_{c}'] = float(np.max(np.abs(a - b)))

  timings = {'run': run_times, 'compile': compile_times}
  ratios = []
  first = _label('ours', ours_cycles[0])
  for metric, table in timings.items():
    for c in ours_cycles[1:]:
      ratios.append(_harness.ratio(table, _label('ours', c), first,
                                   metric=metric, target=('<=', 1.1)))
  join_first = _label('join', join_cycles[0])
  for metric, table in timings.items():
    for c in join_cycles[1:]:
      ratios.append(_harness.ratio(table, _label('join', c), join_first,
                                   metric=metric))
    last = join_cycles[-1]
    ratios.append(_harness.ratio(table, _label('join', last),
                                 _label('ours', last), metric=metric))
  for metric, table in timings.items():
    ratios.append(_harness.ratio(
        table, _label('restarts', restart_counts[-1]),
        _label('restarts', restart_counts[0]), metric=metric,
        target=('<=', 1.1)))
    for c in sgdr_counts[1:]:
      ratios.append(_harness.ratio(table, _label('sgdr', c),
                                   _label('sgdr', sgdr_counts[0]),
                                   metric=metric))
    last = sgdr_counts[-1]
    ratios.append(_harness.ratio(table, _label('sgdr', last),
                                 _label('restarts', last), metric=metric))
  figures = []
  device = _harness.environment()['device_kind']
  if out_dir is not None:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f'{_harness.device_slug(device)}_cycles.png')
    _plot(path, points['ours'], points['join'], device)
    figures.append(os.path.basename(path))
  return {
      'title': TITLE,
      'params': {'num_counts': num_counts, 'step_size': STEP_SIZE,
                 'calls_per_sample': number, 'repeats': settings.repeats,
                 'ours_cycles': list(ours_cycles),
                 'join_cycles': list(join_cycles)},
      'timings': timings,
      'ratios': ratios,
      'checks': checks,
      'points': {impl: {str(c): v for c, v in points[impl].items()}
                 for impl in ('ours', 'join')},
      'restarts_points': {impl: {str(c): v for c, v in points[impl].items()}
                          for impl in ('restarts', 'sgdr')},
      'figures': figures,
      'notes': [
          f'{num_counts} counts spread evenly over the cycles, step_size'
          f' {STEP_SIZE}; the join has 2 pieces per cycle. Ours is one and the'
          ' same program at every number of cycles (checks: hlo_lines_ours_*,'
          ' the lines of the lowered program, are equal); the join\'s'
          ' program grows linearly (hlo_lines_join_*), so differences among'
          ' ours are the machine\'s noise.',
          f'The join is measured up to {join_cycles[-1]:g} cycles only: its'
          ' compile time grows faster than linearly with the number of'
          ' pieces (tens of seconds at 1000 cycles), so 10^4 and 10^5 cycles'
          ' would take many minutes to compile.',
          f'Cosine restarts: cosine_restarts_schedule with a period of'
          f' {2 * STEP_SIZE} steps on the same counts, at'
          f' {" and ".join(f"{c:g}" for c in restart_counts)} restarts (one'
          ' program: hlo_lines_restarts_*), against optax.sgdr_schedule with'
          f' one cosine schedule per period, up to {sgdr_counts[-1]:g}'
          ' periods (hlo_lines_sgdr_* grows with them).',
      ],
  }
