"""The with/without --find-lr table, from a record written by hand."""

import json

from examples import find_lr_report


def _found(lr, cost, seconds):
  return {'learning_rate': lr, 'clr_bounds': [lr / 2, 2 * lr],
          'cost_steps': cost, 'seconds': seconds}


RESULTS = {
    'seeds': [0, 1],
    'train_steps': 352,
    'runs': {
        'default': {'0': {'test_accuracy': 0.975, 'wall_s': 30.0},
                    '1': {'test_accuracy': 0.9625, 'wall_s': 34.0}},
        'find_lr': {
            '0': {'test_accuracy': 0.98, 'wall_s': 330.0,
                  'find_lr': _found(0.02, 3520, 290.0)},
            '1': {'test_accuracy': 0.99, 'wall_s': 364.0,
                  'find_lr': _found(0.04, 1760, 300.0)},
        },
    },
}


def test_table_rows_are_the_records_numbers():
  lines = find_lr_report.table(RESULTS).splitlines()
  assert lines[0] == '| run | seed 0 | seed 1 | mean |'
  assert lines[1] == '|---|---|---|---|'
  rows = {line.split(' | ')[0][2:]: line.split(' | ')[1:] for line in lines[2:]}
  assert rows['test accuracy (%), default bounds 0.01-0.1'] == [
      '97.50', '96.25', '96.88 |']
  assert rows['test accuracy (%), `--find-lr`'] == ['98.00', '99.00',
                                                    '98.50 |']
  assert rows['`find_lr` rate'] == ['0.02', '0.04', ' |']
  assert rows['CLR bounds (base-max)'] == ['0.01-0.04', '0.02-0.08', ' |']
  assert rows['extra optimizer steps (x the 352 of training)'] == [
      '3520 (10.0x)', '1760 (5.0x)', '2640 |']
  assert rows['`find_lr` time (s)'] == ['290', '300', '295 |']
  # 330 - 30 and 364 - 34.
  assert rows['extra wall time of the run (s)'] == ['300', '330', '315 |']
  assert rows['wall time without `--find-lr` (s)'] == ['30', '34', '32 |']


def test_merge_joins_the_seeds_of_two_records(tmp_path):
  parts = []
  for seed in ('0', '1'):
    part = dict(RESULTS, seeds=[int(seed)], epochs=8, command=f'seed {seed}',
                runs={name: {seed: runs[seed]}
                      for name, runs in RESULTS['runs'].items()})
    parts.append(tmp_path / f'{seed}.json')
    parts[-1].write_text(json.dumps(part))
  out = tmp_path / 'out'
  assert find_lr_report.main(
      ['--merge', *map(str, parts), '--out', str(out)]) == 0
  merged = json.loads((out / 'results.json').read_text())
  assert merged['seeds'] == [0, 1]
  assert merged['runs'] == RESULTS['runs']
  assert merged['parts'] == ['seed 0', 'seed 1']
  assert (out / 'table.md').read_text() == find_lr_report.table(
      RESULTS) + '\n'
