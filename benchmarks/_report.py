"""Results files: ``<device>.json`` (merged per benchmark) and ``<device>.md``.

A benchmark's record is a dict with ``title``, ``params``, ``timings``
(metric -> label -> :func:`benchmarks._harness.stats`), ``ratios`` (records
of :func:`benchmarks._harness.ratio`), ``checks``, ``notes``, optional
``memory`` (label -> bytes), ``tables`` (each ``{title, header, rows}``,
shown as they are), ``figures``, ``skipped`` (the reason) and
``quick`` (a smoke run: see :func:`unjudged`).
"""

import json
import os
from typing import Any

from benchmarks import _harness


def merge(path: str, environment: dict[str, Any], records: dict[str, Any]):
  """Updates the JSON file at ``path`` with ``records``; returns the whole.

  Running one benchmark keeps the others' earlier results; the environment
  of the latest run is recorded on each benchmark it produced.
  """
  data = {'environment': environment, 'benchmarks': {}}
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      data = json.load(f)
  data['environment'] = environment
  for name, record in records.items():
    data['benchmarks'][name] = dict(record, environment=environment)
  data['benchmarks'] = dict(sorted(data['benchmarks'].items()))
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(data, f, indent=1, sort_keys=False)
    f.write('\n')
  return data


QUICK_NOTE = (
    'Quick run: tiny sizes and few repeats, to check that every benchmark'
    ' runs and that the compared implementations agree. Its timings are not'
    ' judged against the targets; benchmarks/README.md gives the targets and'
    ' the results of the full run.'
)


def unjudged(record: dict[str, Any]) -> dict[str, Any]:
  """A quick run's record: marked ``quick``, no ratio judged on a target.

  The targets stay in the record (they say what a full run is judged on);
  ``met`` becomes None, and the markdown shows neither target nor verdict.
  """
  ratios = [dict(r, met=None) for r in record.get('ratios', [])]
  return dict(record, quick=True, ratios=ratios)


def _environment_line(env: dict[str, Any]) -> str:
  parts = [f"device `{env['device_kind']}` ({env['platform']})"]
  parts.append(f"{env.get('cpu_count')} host CPUs")
  for package in ('jax', 'jaxlib', 'optax', 'flax', 'torch'):
    if env.get(package):
      parts.append(f'{package} {env[package]}')
  return ', '.join(parts)


def _timing_cell(entry: dict[str, Any] | None) -> str:
  if entry is None:
    return '-'
  median = _harness.format_seconds(entry['median_s'])
  low = _harness.format_seconds(entry['min_s'])
  high = _harness.format_seconds(entry['max_s'])
  return f'{median} ({low} - {high})'


def _met_cell(met: bool | None) -> str:
  return {None: '', True: 'met', False: 'MISSED'}[met]


def benchmark_markdown(name: str, record: dict[str, Any]) -> list[str]:
  """The section of one benchmark: timings table, ratios table, notes."""
  lines = [f"### {name}: {record.get('title', '')}", '']
  if record.get('skipped'):
    return lines + [f"Skipped: {record['skipped']}", '']
  metrics = list(record.get('timings', {}))
  labels = []
  for metric in metrics:
    labels += [l for l in record['timings'][metric] if l not in labels]
  memory = record.get('memory') or {}
  if labels:
    header = ['case'] + [f'{m} median (min - max)' for m in metrics]
    if memory:
      header.append('compiled peak bytes')
    lines += ['| ' + ' | '.join(header) + ' |',
              '|' + '---|' * len(header)]
    for label in labels:
      cells = [label] + [
          _timing_cell(record['timings'][m].get(label)) for m in metrics
      ]
      if memory:
        cells.append(_harness.format_bytes(memory.get(label)))
      lines.append('| ' + ' | '.join(cells) + ' |')
    lines.append('')
  if record.get('ratios'):
    judged = not record.get('quick')  # A quick run's ratios are not judged.
    lines += ['| A / B | metric | median ratio | ratio of mins |'
              + (' target | |' if judged else ''),
              '|---|---|---|---|' + ('---|---|' if judged else '')]
    for r in record['ratios']:
      verdict = (f" {r['target'] or ''} | {_met_cell(r['met'])} |"
                 if judged else '')
      lines.append(
          f"| {r['a']} / {r['b']} | {r['metric']} | {r['ratio']:.3g}x"
          f" | {r['min_ratio']:.3g}x |" + verdict
      )
    lines.append('')
  for table in record.get('tables', []):
    lines += [f"{table['title']}:", '',
              '| ' + ' | '.join(map(str, table['header'])) + ' |',
              '|' + '---|' * len(table['header'])]
    lines += ['| ' + ' | '.join(map(str, row)) + ' |'
              for row in table['rows']]
    lines.append('')
  for figure in record.get('figures', []):
    lines += [f'![{name}]({figure})', '']
  checks = record.get('checks') or {}
  if checks:
    lines.append('Checks: ' + '; '.join(
        f'{k} = {v:.6g}' if isinstance(v, float) else f'{k} = {v}'
        for k, v in checks.items()) + '.')
    lines.append('')
  for note in record.get('notes', []):
    lines.append(f'- {note}')
  if record.get('notes'):
    lines.append('')
  return lines


def summary(data: dict[str, Any]) -> list[str]:
  """One table of every ratio that has a target, across the benchmarks.

  Quick runs' ratios are left out: they are not judged.
  """
  lines = ['| benchmark | A / B | metric | median ratio | ratio of mins'
           ' | target | |', '|---|---|---|---|---|---|---|']
  for name, record in data['benchmarks'].items():
    if record.get('quick'):
      continue
    for r in record.get('ratios', []):
      if r['target'] is not None:
        lines.append(
            f"| {name} | {r['a']} / {r['b']} | {r['metric']}"
            f" | {r['ratio']:.3g}x | {r['min_ratio']:.3g}x | {r['target']}"
            f" | {_met_cell(r['met'])} |"
        )
  return lines + ['']


def markdown(data: dict[str, Any]) -> str:
  """The whole results file as markdown."""
  records = data['benchmarks'].values()
  quick = bool(records) and all(r.get('quick') for r in records)
  lines = ['# optax_clr benchmarks', '']
  command = 'python benchmarks/run.py' + (' --quick' if quick else '')
  lines += [f'Command: `{command}`.', '']
  lines += [_environment_line(data['environment']), '']
  if quick:
    lines += [QUICK_NOTE, '']
  else:
    lines += ['## Targets', ''] + summary(data)
  lines += ['## Details', '']
  lines += [
      'Times are seconds per call: median (min - max) of interleaved'
      ' repeats after warm-up, compile timed apart. Ratios are'
      ' median(A) / median(B).',
      '',
  ]
  for name, record in data['benchmarks'].items():
    lines += benchmark_markdown(name, record)
  return '\n'.join(lines).rstrip() + '\n'


def write(out_dir: str, environment: dict[str, Any], records: dict[str, Any]):
  """Writes ``<device>.json`` and ``<device>.md`` under ``out_dir``."""
  os.makedirs(out_dir, exist_ok=True)
  slug = _harness.device_slug(environment['device_kind'])
  json_path = os.path.join(out_dir, f'{slug}.json')
  data = merge(json_path, environment, records)
  md_path = os.path.join(out_dir, f'{slug}.md')
  with open(md_path, 'w', encoding='utf-8') as f:
    f.write(markdown(data))
  return json_path, md_path


def render(json_path: str) -> str:
  """Rewrites the markdown next to ``json_path`` from it; returns its path."""
  with open(json_path, encoding='utf-8') as f:
    data = json.load(f)
  md_path = os.path.splitext(json_path)[0] + '.md'
  with open(md_path, 'w', encoding='utf-8') as f:
    f.write(markdown(data))
  return md_path
