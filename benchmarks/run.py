r"""Runs the benchmarks and writes ``benchmarks/results/<device>.{json,md}``.

Usage::

  python benchmarks/run.py               # all, full size
  python benchmarks/run.py eval cycles   # some, by name
  python benchmarks/run.py --quick       # a seconds-long smoke run

Benchmarks (one module each, ``benchmarks/bench_<name>.py``): ``step`` (1,
in-step overhead), ``eval`` (2, evaluation cost), ``cycles`` (3, cost vs
number of cycles), ``sweep`` (4, vmapped sweep vs sequential runs),
``range`` (5, compiled range test vs a Python loop), ``torch`` (6,
against PyTorch; skipped when torch is not installed), ``compile`` (7, the
range test's first call vs a plain jitted scan), ``loop`` (8,
``optax_clr.nnx.sweep`` vs K sequential jitted runs per model family),
``scale`` (9, peak memory with and without ``chunk_size``, the progress
bar's cost, one sweep over 1 or 2 devices and processes) and ``strategy``
(10, ``strategy="scan"`` vs ``"loop"`` vs a Python loop of one jitted step,
per model family). Studies run only
when named: ``suggest`` (``benchmarks/suggest.py``, suggested learning
rates against grid search, minutes long).

A full run merges its benchmarks into ``<device>.json`` (earlier results of
the others are kept) and rewrites ``<device>.md``, and judges each ratio
against its target ("met" or "MISSED"). A ``--quick`` run prints its numbers
without verdicts (tiny sizes and three repeats measure nothing worth
judging) and writes only where ``--out`` is given. ``benchmarks/README.md``
describes each benchmark, its targets and the committed results.
"""

import argparse
import importlib
import inspect
import json
import os
import sys
import time

if not __package__:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import _harness
from benchmarks import _report
# pylint: enable=g-import-not-at-top,wrong-import-position

BENCHMARKS = ('step', 'eval', 'cycles', 'sweep', 'range', 'compile', 'torch',
              'loop', 'scale', 'strategy')
# Run only when named (``benchmarks/<name>.py``): quality studies, not timings.
STUDIES = ('suggest',)
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def _parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('names', nargs='*', metavar='NAME',
                      help=f'benchmarks to run, of {", ".join(BENCHMARKS)}'
                      ' (default: all)')
  parser.add_argument('--quick', action='store_true',
                      help='tiny sizes, minimum repeats: a smoke run')
  parser.add_argument('--repeats', type=int, default=None,
                      help='timed repeats per measurement (>= 5)')
  parser.add_argument('--out', default=None,
                      help='results folder (default: benchmarks/results;'
                      ' none for --quick)')
  args = parser.parse_args(argv)
  unknown = [n for n in args.names if n not in BENCHMARKS + STUDIES]
  if unknown:
    parser.error(f'unknown benchmark(s) {unknown}; choose from'
                 f' {BENCHMARKS + STUDIES}')
  return args


def run_one(name: str, settings: _harness.Settings, out_dir: str | None):
  """Runs ``benchmarks/bench_<name>.py``; returns its record."""
  prefix = '' if name in STUDIES else 'bench_'
  module = importlib.import_module(f'benchmarks.{prefix}{name}')
  start = time.perf_counter()
  if 'out_dir' in inspect.signature(module.run).parameters:
    record = module.run(settings, out_dir=out_dir)
  else:
    record = module.run(settings)
  record['wall_s'] = time.perf_counter() - start
  if settings.quick:
    record = _report.unjudged(record)
  return record


def main(argv=None) -> dict:
  """Runs the benchmarks named in ``argv``; returns name -> record."""
  args = _parse(argv)
  repeats = args.repeats or (_harness.QUICK_REPEATS if args.quick else 7)
  settings = _harness.Settings(quick=args.quick, repeats=repeats)
  out_dir = args.out if args.out else (None if args.quick else RESULTS_DIR)
  environment = _harness.environment()
  print(json.dumps(environment))
  if args.quick:
    print(_report.QUICK_NOTE, flush=True)
  records = {}
  for name in args.names or BENCHMARKS:
    print(f'== {name}', flush=True)
    records[name] = run_one(name, settings, out_dir)
    print('\n'.join(_report.benchmark_markdown(name, records[name])),
          flush=True)
  if out_dir is not None:
    paths = _report.write(out_dir, environment, records)
    print('wrote', *paths)
  return records


if __name__ == '__main__':
  main()
