r"""How good is a suggested learning rate? Every rule against grid search.

For each task of :mod:`benchmarks._suggest_tasks` (``python
benchmarks/run.py suggest``; ``--quick`` runs two small tasks):

1. ``NUM_RANGE_TESTS`` range tests (:func:`optax_clr.range_test` with its
   defaults: 1e-7 to 10 in 100 steps), one per seed (initialization, batch
   order, dropout key), run as one ``jax.vmap``-ed program.
2. Every rule's suggestion: ours (:func:`optax_clr.suggest_lr` methods on the
   median of the range tests and, for the default, on the first one alone;
   :func:`optax_clr.suggest_clr_bounds` read as a triangular schedule), the
   peers' rules (:mod:`benchmarks._suggest_peers`) and optax_clr 0.1's
   rules on the first range test's recorded curve.
3. ONE :func:`optax_clr.nnx.sweep` program trains the grid (``NUM_RATES``
   log-spaced fixed rates) and every suggestion, each for ``NUM_SEEDS``
   seeds (the same seeds for all: init, data order, dropout), for the task's
   budget, and scores each on the task's held-out split. A fixed rate is a
   triangular schedule with ``base_lr == max_lr``, so grid, suggestions and
   CLR bounds share the program.
4. The learning-rate-free optimizers of ``optax.contrib`` at their defaults
   (:mod:`benchmarks._suggest_rate_free`: Prodigy, D-Adapt AdamW, DoG,
   DoWG, COCOB, Mechanic on the task's optimizer, schedule-free AdamW scored
   at its evaluation params), one program each, on the same seeds, budget
   and test split: the baselines a rate-choosing rule has to beat.

The grid-best rate has the best mean score over the seeds. A rule's regret is
grid-best score minus its score: accuracy points for classification, and for
regression the relative excess of the test MSE, ``100 (mse / best_mse - 1)``
percent. A run that diverged scores what a model that learned nothing scores
(majority class, or predicting the mean). Rules are compared on the
development half of the tasks and reported separately on the held-out half.
"""

import functools
import json
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_clr
import optax_clr.nnx
from benchmarks import _harness
from benchmarks import _suggest_peers as peers
from benchmarks import _suggest_rate_free as rate_free
from benchmarks import _suggest_tasks as tasks_lib
from optax_clr import _suggest

TITLE = 'suggested learning rates vs the grid-best fixed rate'
NUM_RATES, NUM_SEEDS, NUM_RANGE_TESTS = 21, 3, 5
QUICK_RATES, QUICK_SEEDS, QUICK_RANGE_TESTS = 8, 2, 3
RANGE_STEPS = 100
# Regret goals, in the units of each kind of task.
GOAL = {'accuracy': 1.0, 'mse': 2.0, 'bpb': 2.0}
# find_lr's goals: worst regret at most this, on both halves.
FIND_LR_GOAL = {'accuracy': 0.5, 'mse': 1.0, 'bpb': 1.0}
# find_lr's cost goal: at most this fraction of the grid's training steps.
FIND_LR_COST_GOAL = 0.2
# Excess-over-best metrics (lower is better), reported in percent.
RELATIVE = ('mse', 'bpb')
FIGURE = 'suggest_suite.png'
DEFAULT = 'suggest_lr() (median of range tests)'
DEFAULT_ONE = 'suggest_lr() (one range test)'
CLR = 'suggest_clr_bounds() + triangular'
# find_lr's thorough search (no cost bound, about 8 runs).
FIND_LR = 'find_lr(max_cost=None)'
FIND_LR_CLR = 'find_lr(max_cost=None) clr_bounds + triangular'
THOROUGH_OPTIONS = {'max_cost': None}
# find_lr's default: AlgoPerf's self-tuning budget, range tests included.
FIND_LR_BUDGET = 'find_lr() (max_cost=1.5)'
BUDGET_OPTIONS = {}
TORCH_LR_FINDER = 'torch-lr-finder'
# The quick suite's find_lr: fewer candidates and rungs, one seed.
QUICK_FIND_LR = {'num_candidates': 4, 'num_seeds': 1, 'num_rungs': 2,
                 'num_range_tests': 2, 'max_cost': None}


def _ours(result, first):
  """Our rules: ``{name: (base_lr, max_lr)}``, fixed rates have base = max."""
  rules = {}

  def add(name, fn):
    try:
      with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        value = fn()
    except ValueError as error:
      print(f'  {name}: no suggestion ({error})', flush=True)
      rules[name] = None
      return
    rules[name] = value if isinstance(value, tuple) else (value, value)

  add(DEFAULT, lambda: optax_clr.suggest_lr(result))
  add(DEFAULT_ONE, lambda: optax_clr.suggest_lr(first))
  for method in _suggest.SUGGEST_METHODS:
    add(f'suggest_lr({method!r})',
        lambda m=method: optax_clr.suggest_lr(result, method=m))
  add(CLR, lambda: optax_clr.suggest_clr_bounds(result))
  return rules, add


def _nolag(result, half_width=4):
  """Median raw loss over the sweeps, centred mean: ``(lrs, curve, n)``."""
  data = _suggest.curves(result)
  raw = np.median(data.losses, axis=0)
  bad = np.flatnonzero(~np.isfinite(raw[:data.valid]))
  valid = int(bad[0]) if bad.size else data.valid
  return data.lrs, _suggest.centered_mean(raw[:valid], half_width), valid


def _candidates(result, add):
  """Rules considered for the defaults, chosen on the dev tasks.

  ``cand`` fixed rates read the same no-lag curve as the library; ``cand
  CLR`` bounds put ``max_lr`` at the default suggestion, with ``base_lr =
  max_lr / 4`` (the default, ``suggest_clr_bounds()``, puts it at twice).
  """
  def at_min(c):
    lrs, curve, _ = _nolag(result)
    return float(lrs[int(np.argmin(curve))]) / c

  steep = lambda: optax_clr.suggest_lr(result, method='steepest')
  for c in (3, 7):
    add(f'cand min/{c}', functools.partial(at_min, c))
  add('cand geo(steep, min/3)', lambda: float(np.sqrt(steep() * at_min(3))))
  add('cand CLR max = 1 x default, ratio 4',
      lambda: (optax_clr.suggest_lr(result) / 4, optax_clr.suggest_lr(result)))


def _peer_rules(first, add):
  lrs = np.asarray(first.lrs, np.float64)
  losses = np.asarray(first.losses, np.float64)
  for name, rule in peers.PEER_RULES.items():
    add(name, lambda r=rule: r(lrs, losses))
  valid = min(int(first.diverged_step) + 1, lrs.size)
  add('optax_clr 0.1 steepest (EMA)', lambda: peers.legacy_steepest(
      lrs, np.asarray(first.smoothed_losses), valid))
  add('optax_clr 0.1 CLR bounds', lambda: peers.legacy_clr_bounds(
      lrs, losses, valid, lrs.size))


def range_tests(task, seeds):
  """``(batched result, first result)``: one vmapped program of range tests."""
  loss_fn, _ = tasks_lib.loss_and_eval(task)
  models = [tasks_lib.make_model(task, s) for s in seeds]
  pure_loss, _, _ = optax_clr.nnx.split_loss(models[0], loss_fn)
  _, params, state = tasks_lib.stack_states(models)
  batches = jnp.asarray(np.stack(
      [tasks_lib.batches(task, s, RANGE_STEPS) for s in seeds]))
  keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
  make = tasks_lib.optimizer(task)

  def one(params, state, batches, key):
    return optax_clr.range_test(
        pure_loss, params, make, batches, num_steps=RANGE_STEPS,
        model_state=state, key=key)

  result = jax.vmap(one)(params, state, batches, keys)
  result = jax.tree.map(np.asarray, result)
  first = jax.tree.map(lambda x: x[0], result)
  return result, first


def train(task, rows, seeds, num_steps):
  """Trains every ``(base_lr, max_lr)`` row for every seed in one program.

  Returns:
    ``scores[row, seed]`` on the held-out split, diverged runs set to the
    score of a model that learned nothing
    (:func:`benchmarks._suggest_tasks.final_scores`).
  """
  order = [(r, s) for r in range(len(rows)) for s in seeds]
  hp = {
      'base_lr': np.array([rows[r][0] for r, _ in order], np.float32),
      'max_lr': np.array([rows[r][1] for r, _ in order], np.float32),
  }
  inputs = tasks_lib.training(task, [s for _, s in order], num_steps)
  make = tasks_lib.optimizer(task)
  step_size = max(1, num_steps // 4)  # two triangular cycles

  def optimizer(h):
    return make(tasks_lib.with_warmup(task, optax_clr.triangular_schedule(
        h['base_lr'], h['max_lr'], step_size), h['max_lr']))

  result = optax_clr.sweep(
      inputs.loss, inputs.params, optimizer, hp, inputs.batches,
      params_axis=0, batches_axis=0, model_state=inputs.model_state,
      key=inputs.keys, eval_fn=inputs.evaluate)
  scores = tasks_lib.final_scores(task, result.evals['score'][:, -1],
                                  result.evals['loss'][:, -1])
  return scores.reshape(len(rows), len(seeds))


def find_lr(task, num_steps, options):
  """``(lr, clr_bounds, record)``: :func:`optax_clr.nnx.find_lr` as a user runs it.

  On seed 0's model, trained on the training split less a validation split
  (20 %, :func:`benchmarks._suggest_tasks.validation_split`) for the task's
  budget and scored by the training objective on the validation split. The
  test split is never seen.
  """
  loss_fn, _ = tasks_lib.loss_and_eval(task)
  fit, validation = tasks_lib.validation_split(task)
  model = tasks_lib.make_model(task, 0)
  batches = jnp.asarray(tasks_lib.batches(task, 0, num_steps, rows=fit))
  schedule = None
  if task.warmup_steps:
    schedule = lambda lr: tasks_lib.with_warmup(
        task, optax.constant_schedule(lr), lr)
  start = time.perf_counter()
  result = optax_clr.nnx.find_lr(
      model, tasks_lib.optimizer(task), loss_fn, batches,
      tasks_lib.validation_loss(task, validation), key=jax.random.key(0),
      schedule=schedule, **options)
  seconds = time.perf_counter() - start
  record = {
      'candidates': result.candidates.tolist(),
      'scores': np.where(np.isnan(result.scores), None,
                         result.scores).tolist(),
      'rung_steps': result.rung_steps.tolist(),
      'bracket': list(result.bracket),
      'cost_steps': result.cost_steps,
      'seconds': seconds,
  }
  return result.learning_rate, result.clr_bounds, record


def regret(best, score, classes):
  """Grid-best minus ``score``: points of accuracy, or % of excess MSE."""
  if classes:
    return float(best - score)
  return float(100.0 * (score / best - 1.0)) if best else 0.0


def run_task(task, *, num_rates, seeds, range_seeds, num_steps, quick=False):
  """One task: range tests, suggestions, one training program; a record."""
  start = time.perf_counter()
  result, first = range_tests(task, range_seeds)
  range_s = time.perf_counter() - start
  rules, add = _ours(result, first)
  found = find_lr(task, num_steps,
                  QUICK_FIND_LR if quick else THOROUGH_OPTIONS)
  rules[FIND_LR] = (found[0], found[0])
  rules[FIND_LR_CLR] = found[1]
  budgeted = find_lr(task, num_steps, BUDGET_OPTIONS)
  rules[FIND_LR_BUDGET] = (budgeted[0], budgeted[0])
  _candidates(result, add)
  _peer_rules(first, add)
  grid = np.logspace(*task.grid, num_rates)
  named = [name for name, bounds in rules.items() if bounds is not None]
  rows = [(lr, lr) for lr in grid] + [rules[name] for name in named]
  start = time.perf_counter()
  scores = train(task, rows, seeds, num_steps)
  train_s = time.perf_counter() - start
  start = time.perf_counter()
  baselines = rate_free.train(task, seeds, num_steps)
  rate_free_s = time.perf_counter() - start
  classes = tasks_lib.load(task.data).classes
  grid_cost = num_rates * len(seeds) * num_steps
  for search in (found, budgeted):
    search[2]['cost_fraction'] = search[2]['cost_steps'] / grid_cost
    search[2]['cost_budgets'] = search[2]['cost_steps'] / num_steps
  mean = scores.mean(1)
  # Regression scores are -MSE; regrets are computed on the MSE itself.
  values = mean if classes else -mean
  grid_values = values[:num_rates]
  best_index = int(np.argmax(mean[:num_rates]))
  best_lr, best = float(grid[best_index]), float(grid_values[best_index])
  baseline = tasks_lib.baseline_score(task)
  worst_value = baseline if classes else -baseline
  record_rules = {}
  for name, bounds in rules.items():
    if bounds is None:
      record_rules[name] = {
          'lr': None, 'base_lr': None, 'score': None,
          'regret': regret(best, worst_value, classes), 'log10_distance': None}
      continue
    value = float(values[num_rates + named.index(name)])
    record_rules[name] = {
        'lr': float(bounds[1]), 'base_lr': float(bounds[0]), 'score': value,
        'regret': regret(best, value, classes),
        'log10_distance': float(abs(np.log10(bounds[1] / best_lr))),
    }
  for name, baseline in baselines.items():
    # Scored like the grid: the mean over the seeds, MSE for regression.
    seed_values = baseline['seed_scores'] * (1 if classes else -1)
    value = float(np.mean(seed_values))
    record_rules[name] = {
        'lr': None, 'base_lr': None, 'score': value,
        'regret': regret(best, value, classes), 'log10_distance': None,
        'rate_free': True, 'seed_scores': seed_values.tolist(),
        'diverged_seeds': baseline['diverged_seeds'],
        'error': baseline['error'], 'seconds': baseline['seconds'],
    }
  valid = int(np.min(result.diverged_step))
  return {
      'task': task.name, 'half': task.half,
      'metric': tasks_lib.metric(task),
      'optimizer': task.optimizer, 'model': task.model,
      'batch_size': task.batch_size, 'num_steps': num_steps,
      'grid_lrs': grid.tolist(), 'grid_scores': grid_values.tolist(),
      'grid_seed_scores': (scores[:num_rates] if classes
                           else -scores[:num_rates]).tolist(),
      'best_lr': best_lr, 'best_score': best,
      'known_optimal_lr': tasks_lib.known_optimal_lr(task, seeds, num_steps),
      'baseline_score': worst_value,
      'rules': record_rules,
      'range_lrs': np.asarray(first.lrs).tolist(),
      'range_median_loss': np.median(np.asarray(result.losses), 0).tolist(),
      'range_valid': valid,
      'range_s': range_s, 'train_s': train_s, 'rate_free_s': rate_free_s,
      'find_lr': found[2],
      'find_lr_budget': budgeted[2],
      'num_models': len(rows) * len(seeds),
      'num_rate_free_models': len(baselines) * len(seeds),
  }


def summarize(records, half=None):
  """``{rule: {"worst", "mean", "worst_normalized"}}`` over the tasks.

  Normalized regret divides each task's regret by its goal (1 point of
  accuracy, 2 % of MSE), so both kinds of task share one worst case.
  """
  chosen = [r for r in records if half is None or r['half'] == half]
  names = list(chosen[0]['rules']) if chosen else []
  table = {}
  for name in names:
    regrets = np.array([r['rules'][name]['regret'] for r in chosen])
    normalized = np.array([
        r['rules'][name]['regret'] / GOAL[r['metric']] for r in chosen])
    distances = [r['rules'][name]['log10_distance'] for r in chosen]
    distances = [d for d in distances if d is not None]
    table[name] = {
        'worst_normalized': float(normalized.max()),
        'mean_normalized': float(normalized.mean()),
        'worst_accuracy': _max(regrets, chosen, 'accuracy'),
        'mean_accuracy': _mean(regrets, chosen, 'accuracy'),
        'worst_mse': _max(regrets, chosen, RELATIVE),
        'mean_mse': _mean(regrets, chosen, RELATIVE),
        'mean_log10_distance': float(np.mean(distances)) if distances else None,
    }
  return table


def _select(regrets, chosen, metric):
  metrics = (metric,) if isinstance(metric, str) else metric
  return regrets[[r['metric'] in metrics for r in chosen]]


def _max(regrets, chosen, metric):
  values = _select(regrets, chosen, metric)
  return float(values.max()) if values.size else None


def _mean(regrets, chosen, metric):
  values = _select(regrets, chosen, metric)
  return float(values.mean()) if values.size else None


def _cell(value, digits=2):
  return '-' if value is None else f'{value:.{digits}f}'


def summary_markdown(table):
  lines = [
      '| rule | worst acc. regret (pts) | mean acc. regret (pts) |'
      ' worst MSE, bpb regret (%) | mean MSE, bpb regret (%) | worst / goal |'
      ' mean / goal | mean abs log10(lr / best) |',
      '|---|---|---|---|---|---|---|---|',
  ]
  order = sorted(table, key=lambda n: (table[n]['worst_normalized'],
                                       table[n]['mean_normalized']))
  for name in order:
    row = table[name]
    lines.append(
        f"| {name} | {_cell(row['worst_accuracy'])}"
        f" | {_cell(row['mean_accuracy'])} | {_cell(row['worst_mse'])}"
        f" | {_cell(row['mean_mse'])} | {_cell(row['worst_normalized'])}"
        f" | {_cell(row['mean_normalized'])}"
        f" | {_cell(row['mean_log10_distance'])} |")
  return lines


def task_markdown(record):
  unit = 'pts' if record['metric'] == 'accuracy' else '%'
  known = record['known_optimal_lr']
  head = (f"#### {record['task']} ({record['half']}): grid-best lr"
          f" {record['best_lr']:.3g}, score {record['best_score']:.4g}"
          + (f'; closed-form optimum {known:.3g}' if known else ''))
  lines = [head, '', f'| rule | lr (max_lr) | abs log10(lr / best) |'
           f' regret ({unit}) |', '|---|---|---|---|']
  for name, row in record['rules'].items():
    if row.get('rate_free'):
      lr = 'rate-free' + (f", {row['diverged_seeds']} of"
                          f" {len(row['seed_scores'])} seeds diverged"
                          if row['diverged_seeds'] else '') + (
                              ', failed' if row['error'] else '')
      lines.append(f'| {name} | {lr} | - | {_cell(row["regret"])} |')
      continue
    lr = '-' if row['lr'] is None else (
        f"{row['lr']:.3g}" if row['base_lr'] == row['lr']
        else f"{row['base_lr']:.3g} - {row['lr']:.3g}")
    lines.append(f"| {name} | {lr} | {_cell(row['log10_distance'])}"
                 f" | {_cell(row['regret'])} |")
  for label, key in (('find_lr(max_cost=None)', 'find_lr'),
                     ('find_lr() (max_cost=1.5)', 'find_lr_budget')):
    found = record.get(key)
    if found:
      lines += ['', f"{label}: candidates {found['bracket'][0]:.3g} to"
                f" {found['bracket'][1]:.3g}, {found['cost_steps']} steps"
                f" ({100 * found['cost_fraction']:.1f} % of the grid's,"
                f" {found['cost_budgets']:.2f} budgets), {found['seconds']:.1f}"
                ' s.']
  return lines + ['']


def figure(records, path):
  """Each task's grid curve with every rule's pick marked."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  cols = 4
  rows = -(-len(records) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows),
                           squeeze=False)
  names = list(records[0]['rules'])
  cmap = plt.get_cmap('tab20')
  markers = 'ov^<>sPXD*hpd'
  for ax, record in zip(axes.flat, records):
    ax.semilogx(record['grid_lrs'], record['grid_scores'], 'k-', lw=1.2)
    ax.axvline(record['best_lr'], color='k', ls=':', lw=0.8)
    for i, name in enumerate(names):
      row = record['rules'][name]
      if row.get('rate_free'):  # No rate: a level, not a point.
        ax.axhline(row['score'], color=cmap(i % 20), ls='--', lw=0.8,
                   label=name, alpha=0.85)
        continue
      if row['lr'] is None:
        continue
      ax.semilogx([row['lr']], [row['score']], markers[i % len(markers)],
                  color=cmap(i % 20), ms=6, label=name, alpha=0.85)
    ax.set_title(f"{record['task']} ({record['half']})", fontsize=8)
    ax.set_ylabel({'accuracy': 'test accuracy (%)', 'mse': 'test MSE',
                   'bpb': 'test bits per byte (negated)'}[record['metric']])
    if record['metric'] == 'mse':
      ax.set_yscale('log')
    ax.tick_params(labelsize=7)
  for ax in list(axes.flat)[len(records):]:
    ax.axis('off')
  handles, labels = axes.flat[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc='lower center', ncol=4, fontsize=7,
             frameon=False)
  fig.tight_layout(rect=(0, 0.09 if rows > 1 else 0.2, 1, 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run(settings: _harness.Settings, out_dir: str | None = None,
        names=None) -> dict:
  """Runs the suite (two small tasks with ``settings.quick``); the record."""
  quick = settings.quick
  chosen = [t for t in tasks_lib.TASKS
            if (names is None and (not quick or t.name in tasks_lib.QUICK_TASKS))
            or (names is not None and t.name in names)]
  num_rates = QUICK_RATES if quick else NUM_RATES
  seeds = tuple(range(QUICK_SEEDS if quick else NUM_SEEDS))
  range_seeds = tuple(range(QUICK_RANGE_TESTS if quick else NUM_RANGE_TESTS))
  records = []
  for task in chosen:
    num_steps = task.num_steps // 3 if quick else task.num_steps
    start = time.perf_counter()
    record = run_task(task, num_rates=num_rates, seeds=seeds,
                      range_seeds=range_seeds, num_steps=num_steps,
                      quick=quick)
    record['wall_s'] = time.perf_counter() - start
    print(f"{task.name}: {record['wall_s']:.1f} s, best lr"
          f" {record['best_lr']:.3g}; default regret"
          f" {record['rules'][DEFAULT]['regret']:.2f}", flush=True)
    records.append(record)
  tables = {half: summarize(records, half)
            for half in (tasks_lib.DEV, tasks_lib.HELD_OUT)}
  tables['all'] = summarize(records)
  goals = {half: find_lr_goals(records, half)
           for half in (tasks_lib.DEV, tasks_lib.HELD_OUT)}
  goals.update({f'{half}, default max_cost=1.5': find_lr_goals(
      records, half, name=FIND_LR_BUDGET, search='find_lr_budget')
                for half in (tasks_lib.DEV, tasks_lib.HELD_OUT)})
  notes = []
  for half in (tasks_lib.DEV, tasks_lib.HELD_OUT):
    if tables[half]:
      notes.append(f'{half} tasks: ' + ', '.join(
          r['task'] for r in records if r['half'] == half))
  figures = []
  if out_dir is not None:
    os.makedirs(out_dir, exist_ok=True)
    figure(records, os.path.join(out_dir, FIGURE))
    figures.append(FIGURE)
    with open(os.path.join(out_dir, 'suggest_suite.json'), 'w',
              encoding='utf-8') as f:
      json.dump({'tasks': records, 'summary': tables,
                 'find_lr_goals': goals}, f, indent=1)
  record = {
      'title': TITLE,
      'params': {'num_rates': num_rates, 'seeds': list(seeds),
                 'range_seeds': list(range_seeds),
                 'rate_free': list(rate_free.OPTIMIZERS),
                 'range_steps': RANGE_STEPS,
                 'tasks': [t.name for t in chosen]},
      'tasks': records,
      'summary': tables,
      'find_lr_goals': goals,
      'figures': figures,
      'notes': notes,
  }
  print(markdown(record), flush=True)
  return record


def find_lr_goals(records, half, name=FIND_LR, search='find_lr'):
  """find_lr against its goals on one half: regret, peers, cost.

  Regret goals: at most 0.5 accuracy points, 1 % excess MSE or bits per
  byte; normalized by them, ``find_lr``'s worst case must be at most 1 and
  below every peer rule's worst case; its cost at most 20 % of the grid's
  training steps on every task. Against the rate-free optimizers (issue
  33): its worst case below every one's worst case, and on no task more
  than one goal (0.5 points, 1 %) behind the task's best rate-free one.
  """
  chosen = [r for r in records if r['half'] == half]
  if not chosen:
    return {}
  def worst(name):
    return max(r['rules'][name]['regret'] / FIND_LR_GOAL[r['metric']]
               for r in chosen)
  peers_worst = {peer: worst(peer) for peer in peers.PEER_RULES}
  ours = worst(name)
  rate_free_worst = {other: worst(other) for other in rate_free.OPTIMIZERS}
  behind = max(
      (r['rules'][name]['regret']
       - min(r['rules'][n]['regret'] for n in rate_free.OPTIMIZERS))
      / FIND_LR_GOAL[r['metric']] for r in chosen)
  cost = max(r[search]['cost_fraction'] for r in chosen)
  budgets = max(r[search]['cost_budgets'] for r in chosen)
  default = worst(DEFAULT)
  return {
      'find_lr_worst_normalized': ours,
      'regret_met': ours <= 1.0,
      'peers_worst_normalized': peers_worst,
      'beats_every_peer': all(ours < v for v in peers_worst.values()),
      'max_cost_fraction': cost,
      'max_cost_budgets': budgets,
      'cost_met': cost <= FIND_LR_COST_GOAL,
      'suggest_lr_worst_normalized': default,
      'suggest_lr_not_worse_than_torch_lr_finder':
          default <= peers_worst[TORCH_LR_FINDER],
      'rate_free_worst_normalized': rate_free_worst,
      'beats_every_rate_free': all(ours < v for v in rate_free_worst.values()),
      'behind_best_rate_free_normalized': behind,
      'near_best_rate_free': behind <= 1.0,
  }


def goals_markdown(goals):
  lines = ['| half | find_lr worst / goal | best peer worst / goal |'
           ' beats every peer | max cost (% of grid, budgets) | suggest_lr() worst /'
           ' goal | torch-lr-finder worst / goal | best rate-free worst / goal'
           ' | beats every rate-free | most behind the best rate-free / goal |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for half, g in goals.items():
    if not g:
      continue
    verdict = lambda ok: 'met' if ok else 'MISSED'
    best_peer = min(g['peers_worst_normalized'].values())
    lines.append(
        f"| {half} | {g['find_lr_worst_normalized']:.2f}"
        f" ({verdict(g['regret_met'])}) | {best_peer:.2f}"
        f" | {verdict(g['beats_every_peer'])}"
        f" | {100 * g['max_cost_fraction']:.1f}, {g['max_cost_budgets']:.2f} B"
        f" ({verdict(g['cost_met'])}) | {g['suggest_lr_worst_normalized']:.2f}"
        f" | {g['peers_worst_normalized'][TORCH_LR_FINDER]:.2f}"
        f" | {min(g['rate_free_worst_normalized'].values()):.2f}"
        f" | {verdict(g['beats_every_rate_free'])}"
        f" | {g['behind_best_rate_free_normalized']:.2f}"
        f" ({verdict(g['near_best_rate_free'])}) |")
  return lines


def markdown(record):
  """The report's tables: per half, then per task."""
  lines = []
  if record.get('find_lr_goals'):
    lines += ['### find_lr against its goals (regret / goal: 0.5 points,'
              ' 1 % excess)', ''] + goals_markdown(record['find_lr_goals']) + ['']
  for half in (tasks_lib.DEV, tasks_lib.HELD_OUT, 'all'):
    if record['summary'].get(half):
      lines += [f'### {half} tasks', ''] + summary_markdown(
          record['summary'][half]) + ['']
  for task in record['tasks']:
    lines += task_markdown(task)
  return '\n'.join(lines)


if __name__ == '__main__':
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=TITLE)
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--out', default=None)
  parser.add_argument('--tasks', nargs='*', default=None)
  args = parser.parse_args()
  run(_harness.Settings(quick=args.quick, repeats=3 if args.quick else 7),
      out_dir=args.out, names=args.tasks)
