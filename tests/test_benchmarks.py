"""Smoke tests of the benchmarks: each runs ``--quick`` and is well formed.

Timings are never asserted (they measure the machine, not the code); what
is asserted is the shape of the results, that every ratio is the ratio of
the medians it names, that a quick run judges none of them, and that
compared implementations compute the same values.
"""

import contextlib
import io
import json
import math
import os
import pathlib
import re
import sys

import pytest

from benchmarks import _harness
from benchmarks import _report
from benchmarks import bench_scale
from benchmarks import bench_torch
from benchmarks import run as run_lib

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
ENVIRONMENT_KEYS = ('device_kind', 'platform', 'jax', 'jaxlib', 'optax',
                    'flax')
STAT_KEYS = ('median_s', 'min_s', 'max_s', 'repeats', 'samples_s')
ROOT = pathlib.Path(__file__).resolve().parent.parent
# benchmarks/README.md's "Compared implementations agree" figures,
# max |ours - theirs|, as written there.
CLAIMS = {'cycles': '7e-9', 'sweep': '5e-7', 'torch': '7e-7', 'range': '1e-6'}
VERDICT = re.compile(r'\b(met|missed)\b', re.IGNORECASE)


def _bound(claim):
  """The largest value a claim written to one significant digit rounds from.

  "to 7e-7" holds for a difference of 7.15e-7, not for 7.6e-7.
  """
  value = float(claim)
  return value + 0.5 * 10 ** math.floor(math.log10(value))


def _has_torch() -> bool:
  try:
    import torch  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
  """Every benchmark's ``--quick`` run, written to a temporary folder.

  Returns the folder, the records, the JSON and markdown written, and what
  the run printed.
  """
  out = tmp_path_factory.mktemp('results')
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    records = run_lib.main(['--quick', '--out', str(out)])
  slug = _harness.device_slug(_harness.environment()['device_kind'])
  with open(out / f'{slug}.json', encoding='utf-8') as f:
    data = json.load(f)
  markdown = (out / f'{slug}.md').read_text(encoding='utf-8')
  return out, records, data, markdown, printed.getvalue()


def _ran(records, name):
  record = records[name]
  if record.get('skipped'):
    pytest.skip(record['skipped'])
  return record


def test_every_benchmark_is_recorded(quick):
  _, records, data, markdown, printed = quick
  assert tuple(records) == run_lib.BENCHMARKS
  assert set(data['benchmarks']) == set(run_lib.BENCHMARKS)
  for key in ENVIRONMENT_KEYS:
    assert data['environment'][key], key
  assert _report.QUICK_NOTE in markdown and _report.QUICK_NOTE in printed
  for name in run_lib.BENCHMARKS:
    assert f'### {name}:' in printed
    assert f'### {name}:' in markdown
    assert data['benchmarks'][name]['environment'] == data['environment']


@pytest.mark.parametrize('name', run_lib.BENCHMARKS)
def test_timings_are_positive_and_ordered(quick, name):
  record = _ran(quick[1], name)
  assert record['timings']
  for metric, table in record['timings'].items():
    assert table, metric
    for label, entry in table.items():
      assert set(STAT_KEYS) <= set(entry), (metric, label)
      samples = entry['samples_s']
      assert len(samples) == entry['repeats'] >= 1
      assert all(math.isfinite(s) and s > 0 for s in samples), (metric, label)
      assert entry['min_s'] <= entry['median_s'] <= entry['max_s']
      assert entry['min_s'] == min(samples)
      assert entry['max_s'] == max(samples)


def test_quick_run_gives_no_verdicts(quick):
  _, records, data, markdown, printed = quick
  assert '## Targets' not in markdown
  assert not VERDICT.findall(markdown)
  assert not VERDICT.findall(printed)
  judged = [r for record in records.values() for r in record.get('ratios', [])
            if r['met'] is not None]
  assert not judged
  assert all(record['quick'] for record in data['benchmarks'].values())
  # Some ratios do have targets: a full run would judge them.
  assert any(r['target'] for record in records.values()
             for r in record.get('ratios', []))


def test_full_run_gives_verdicts():
  table = {'a': _harness.stats([2.0]), 'b': _harness.stats([1.0])}
  record = {'title': 't', 'timings': {'run': table}, 'ratios': [
      _harness.ratio(table, 'a', 'b', target=('<=', 1.5)),
      _harness.ratio(table, 'a', 'b', target=('>=', 1.5))]}
  full = '\n'.join(_report.benchmark_markdown('x', record))
  assert 'MISSED' in full and '| met |' in full
  data = {'environment': {'device_kind': 'cpu', 'platform': 'cpu'},
          'benchmarks': {'x': record}}
  text = _report.markdown(data)
  assert '## Targets' in text and 'MISSED' in text
  assert _report.QUICK_NOTE not in text
  quick = _report.unjudged(record)
  assert [r['met'] for r in record['ratios']] == [False, True]  # Unchanged.
  assert [r['target'] for r in quick['ratios']] == ['<= 1.5', '>= 1.5']
  data['benchmarks']['x'] = quick
  for text in ('\n'.join(_report.benchmark_markdown('x', quick)),
               _report.markdown(data)):
    assert not VERDICT.findall(text) and '<= 1.5' not in text
    assert '2x' in text  # The ratio itself is shown.


@pytest.mark.parametrize('name', run_lib.BENCHMARKS)
def test_ratios_are_ratios_of_the_medians(quick, name):
  record = _ran(quick[1], name)
  assert record['ratios']
  for r in record['ratios']:
    table = record['timings'][r['metric']]
    assert r['a_median_s'] == table[r['a']]['median_s']
    assert r['b_median_s'] == table[r['b']]['median_s']
    assert r['ratio'] == pytest.approx(r['a_median_s'] / r['b_median_s'])
    assert r['min_ratio'] == pytest.approx(
        table[r['a']]['min_s'] / table[r['b']]['min_s'])
    assert math.isfinite(r['ratio']) and r['ratio'] > 0
    assert r['met'] is None  # A quick run judges nothing.


def test_eval_ours_triangular2_matches_the_naive_formula(quick):
  checks = _ran(quick[1], 'eval')['checks']
  assert checks['triangular2_vs_naive_max_rel_diff'] < 1e-4


def test_cycles_ours_matches_join_schedules(quick):
  record = _ran(quick[1], 'cycles')
  diffs = {k: v for k, v in record['checks'].items() if 'cycles' in k}
  assert len(diffs) == len(record['params']['join_cycles'])
  assert max(diffs.values()) <= _bound(CLAIMS['cycles'])
  assert set(record['points']) == {'ours', 'join'}
  params, checks = record['params'], record['checks']
  ours = {checks[f'hlo_lines_ours_{c:g}'] for c in params['ours_cycles']}
  assert len(ours) == 1  # One program whatever the number of cycles.
  join = [checks[f'hlo_lines_join_{c:g}'] for c in params['join_cycles']]
  assert join == sorted(join) and join[0] < join[-1]


def test_cycles_writes_the_figure(quick):
  out, records = quick[:2]
  figures = _ran(records, 'cycles')['figures']
  assert figures
  for figure in figures:
    with open(os.path.join(out, figure), 'rb') as f:
      assert f.read(8) == PNG_SIGNATURE


def test_sweep_vmapped_equals_sequential(quick):
  record = _ran(quick[1], 'sweep')
  assert record['checks']
  assert max(record['checks'].values()) <= _bound(CLAIMS['sweep'])
  assert all(isinstance(v, int) and v > 0 for v in record['memory'].values())


def test_range_compiled_equals_loop_and_seeds(quick):
  checks = _ran(quick[1], 'range')['checks']
  # The two programs fuse differently: float32 rounding, not more.
  assert checks['compiled_vs_loop_losses_max_abs_diff'] <= _bound(
      CLAIMS['range'])
  assert checks['seeds_vmapped_vs_sequential_losses_max_abs_diff'] < 1e-5
  assert checks['compiled_diverged_step'] == checks['loop_diverged_step']


def test_loop_sweep_equals_sequential_runs_per_family(quick):
  record = _ran(quick[1], 'loop')
  checks = record['checks']
  assert {label.split()[0] for label in checks} == {'mlp', 'cnn',
                                                     'transformer'}
  assert max(checks.values()) < 1e-5
  for family, size in record['params']['sizes'].items():
    for k in size['ks']:  # Steady state and first call, apart.
      assert f'{family} K={k} sweep' in record['timings']['run']
      assert f'{family} K={k} sweep' in record['timings']['first call']


def test_scale_chunks_bars_and_processes_change_nothing(quick):
  _, records, _, markdown, _ = quick
  record = _ran(records, 'scale')
  checks = record['checks']
  chunks = [v for k, v in checks.items() if 'chunk_size' in k]
  assert len(chunks) == len(record['params']['memory']['ks'])
  assert max(chunks) < 1e-5
  assert checks['sweep_progress_vs_none_losses_max_abs_diff'] == 0.0
  assert checks['range_test_progress_vs_none_losses_max_abs_diff'] == 0.0
  assert checks['bar_output_chars'] > 0  # The bars were drawn.
  processes = [v for k, v in checks.items() if 'process' in k]
  assert len(processes) == 2 and max(processes) < 1e-5
  assert set(record['timings']['launch']) == set(bench_scale.PROCESS_CONFIGS)
  (table,) = record['tables']
  assert [row[0] for row in table['rows']] == record['params']['memory']['ks']
  assert all(cell > 0 for row in table['rows'] for cell in row[1:5:2])
  assert '| ' + ' | '.join(table['header']) + ' |' in markdown


def test_torch_agrees_with_ours(quick):
  record = quick[1]['torch']
  if not _has_torch():
    assert 'torch is not installed' in record['skipped']
    return
  checks = record['checks']
  assert checks['sweep_losses_max_abs_diff'] <= _bound(CLAIMS['torch'])
  if 'finder_lrs_max_rel_diff' in checks:
    assert checks['finder_lrs_max_rel_diff'] < 1e-5


def test_readme_states_the_tested_agreement():
  readme = (ROOT / 'benchmarks' / 'README.md').read_text(encoding='utf-8')
  sentence = ' '.join(
      readme.split('Compared implementations agree:')[1].split('.\n')[0]
      .split())
  assert f'`join_schedules` CLR to {CLAIMS["cycles"]},' in sentence
  assert f'sweeps to {CLAIMS["sweep"]},' in sentence
  assert f'range tests to {CLAIMS["range"]},' in sentence
  assert f'torch and ours to {CLAIMS["torch"]} ' in sentence


def test_readme_counts_the_committed_verdicts():
  """benchmarks/README.md's tally of targets met and missed is cpu.json's."""
  readme = (ROOT / 'benchmarks' / 'README.md').read_text(encoding='utf-8')
  total, met, missed = map(int, re.search(
      r'Of the (\d+) ratios with a target, (\d+) are met and (\d+) missed',
      readme).groups())
  with open(ROOT / 'benchmarks' / 'results' / 'cpu.json',
            encoding='utf-8') as f:
    benchmarks = json.load(f)['benchmarks']
  verdicts = [r['met'] for record in benchmarks.values()
              for r in record.get('ratios', []) if r['target'] is not None]
  assert (total, met, missed) == (
      len(verdicts), verdicts.count(True), verdicts.count(False))


def test_committed_results_bear_out_the_claims():
  """The full-size CPU run benchmarks/README.md quotes, as committed."""
  with open(ROOT / 'benchmarks' / 'results' / 'cpu.json',
            encoding='utf-8') as f:
    benchmarks = json.load(f)['benchmarks']
  cycles = benchmarks['cycles']['checks']
  diffs = [v for k, v in cycles.items() if k.startswith('max_abs_diff_')]
  assert diffs and max(diffs) <= _bound(CLAIMS['cycles'])
  assert max(benchmarks['sweep']['checks'].values()) <= _bound(
      CLAIMS['sweep'])
  assert benchmarks['range']['checks'][
      'compiled_vs_loop_losses_max_abs_diff'] <= _bound(CLAIMS['range'])
  if 'checks' in benchmarks['torch']:
    assert benchmarks['torch']['checks']['sweep_losses_max_abs_diff'] <= (
        _bound(CLAIMS['torch']))


def test_torch_is_skipped_cleanly_without_torch(monkeypatch):
  monkeypatch.setitem(sys.modules, 'torch', None)  # import torch raises.
  record = bench_torch.run(_harness.Settings(quick=True, repeats=3))
  assert record['skipped'] == bench_torch.SKIP_MESSAGE
  assert '[compare]' in record['skipped']
  lines = _report.benchmark_markdown('torch', record)
  assert any(line.startswith('Skipped: torch is not installed') for line in
             lines)


def test_ratio_targets():
  table = {'a': _harness.stats([2.0, 3.0]), 'b': _harness.stats([1.0])}
  assert _harness.ratio(table, 'a', 'b', target=('<=', 1.5))['met'] is False
  assert _harness.ratio(table, 'a', 'b', target=('>=', 1.5))['met'] is True
  assert _harness.ratio(table, 'a', 'b')['met'] is None
  with pytest.raises(ValueError, match='target op'):
    _harness.ratio(table, 'a', 'b', target=('<', 1.0))


def test_full_runs_need_five_repeats():
  with pytest.raises(ValueError, match='repeats must be >= 5'):
    _harness.Settings(repeats=4)
  assert _harness.Settings(quick=True, repeats=1).compile_repeats == 1


def test_device_slug():
  assert _harness.device_slug('cpu') == 'cpu'
  assert _harness.device_slug('NVIDIA H100 80GB HBM3') == (
      'nvidia-h100-80gb-hbm3')


def test_merge_keeps_other_benchmarks(tmp_path):
  path = tmp_path / 'cpu.json'
  env = {'device_kind': 'cpu', 'platform': 'cpu'}
  _report.merge(str(path), env, {'eval': {'title': 'first'}})
  data = _report.merge(str(path), env, {'cycles': {'title': 'second'}})
  assert set(data['benchmarks']) == {'eval', 'cycles'}
  assert data['benchmarks']['eval']['title'] == 'first'


def test_unknown_benchmark_is_an_error(capsys):
  with pytest.raises(SystemExit):
    run_lib.main(['no_such_benchmark'])
  assert 'unknown benchmark' in capsys.readouterr().err


def test_cycles_restarts_flat_and_equal_to_sgdr(quick):
  record = _ran(quick[1], 'cycles')
  checks, points = record['checks'], record['restarts_points']
  assert set(points) == {'restarts', 'sgdr'}
  diffs = [v for k, v in checks.items() if k.startswith(
      'max_abs_diff_restarts_vs_sgdr_')]
  assert len(diffs) == len(points['sgdr']) and max(diffs) < 1e-6
  ours = {checks[f'hlo_lines_restarts_{c}'] for c in points['restarts']}
  assert len(ours) == 1  # One program at 1 and at 10^5 restarts.
  sgdr = [checks[f'hlo_lines_sgdr_{c}'] for c in points['sgdr']]
  assert sgdr == sorted(sgdr) and sgdr[0] < sgdr[-1]
  assert '100000' in points['restarts']
