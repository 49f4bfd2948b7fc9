"""The suggestion benchmark: its quick mode end to end, and the peers' rules.

The quick suite (two small tasks, few rates) checks that grid, range tests
and every rule run as one program per task and that the record is
consistent: grid-best = the best grid score, regrets = grid-best minus the
rule's score, the least-squares grid agrees with the closed-form optimum.
The peers' rules are checked on synthetic curves with known answers. The
rate-free baselines (``optax.contrib``'s Prodigy, D-Adapt AdamW, DoG, DoWG,
COCOB, Mechanic, schedule-free AdamW) have a row on every task, each seed's
score equal to a plain optax loop of that optimizer on the same batches.
"""

import json
import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_clr.nnx
from benchmarks import _harness
from benchmarks import _suggest_peers as peers
from benchmarks import _suggest_rate_free as rate_free
from benchmarks import _suggest_tasks as tasks_lib
from benchmarks import suggest

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
LRS = np.geomspace(1e-7, 10.0, 100)


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
  out = tmp_path_factory.mktemp('suggest')
  record = suggest.run(_harness.Settings(quick=True, repeats=1),
                       out_dir=str(out))
  return out, record


def test_quick_runs_the_quick_tasks_and_writes_files(quick):
  out, record = quick
  assert [t['task'] for t in record['tasks']] == list(tasks_lib.QUICK_TASKS)
  with open(out / suggest.FIGURE, 'rb') as f:
    assert f.read(8) == PNG_SIGNATURE
  with open(out / 'suggest_suite.json', encoding='utf-8') as f:
    assert json.load(f)['tasks'][0]['task'] == record['tasks'][0]['task']
  assert set(record['summary']) == {'dev', 'held-out', 'all'}


def test_every_rule_is_trained_and_scored(quick):
  for task in quick[1]['tasks']:
    assert len(task['grid_lrs']) == suggest.QUICK_RATES
    assert len(task['grid_seed_scores'][0]) == suggest.QUICK_SEEDS
    for name in (suggest.DEFAULT, suggest.DEFAULT_ONE, suggest.CLR,
                 *peers.PEER_RULES):
      row = task['rules'][name]
      assert row['lr'] is not None, (task['task'], name)
      assert row['lr'] > 0 and np.isfinite(row['score'])
      assert row['log10_distance'] == pytest.approx(
          abs(np.log10(row['lr'] / task['best_lr'])))
    assert task['rules'][suggest.CLR]['base_lr'] < (
        task['rules'][suggest.CLR]['lr'])


def test_grid_best_and_regrets_are_consistent(quick):
  for task in quick[1]['tasks']:
    grid = np.asarray(task['grid_scores'])
    seeds = np.asarray(task['grid_seed_scores'])
    np.testing.assert_allclose(grid, seeds.mean(1), rtol=1e-12)
    accuracy = task['metric'] == 'accuracy'
    best = grid.max() if accuracy else grid.min()
    assert task['best_score'] == best
    assert task['best_lr'] == task['grid_lrs'][int(np.argmax(
        grid if accuracy else -grid))]
    for row in task['rules'].values():
      expected = (best - row['score'] if accuracy
                  else 100 * (row['score'] / best - 1))
      assert row['regret'] == pytest.approx(expected, abs=1e-9)


def test_least_squares_grid_finds_the_closed_form_optimum(quick):
  task = next(t for t in quick[1]['tasks'] if t['task'].startswith('lsq'))
  known = task['known_optimal_lr']
  assert known is not None
  # The grid is coarse (QUICK_RATES over 4 decades): within one spacing.
  spacing = np.log10(task['grid_lrs'][1] / task['grid_lrs'][0])
  assert abs(np.log10(task['best_lr'] / known)) <= spacing


def test_summary_worst_and_mean(quick):
  record = quick[1]
  table = record['summary']['all'][suggest.DEFAULT]
  regrets = [t['rules'][suggest.DEFAULT]['regret']
             / suggest.GOAL[t['metric']] for t in record['tasks']]
  assert table['worst_normalized'] == pytest.approx(max(regrets))
  assert table['mean_normalized'] == pytest.approx(np.mean(regrets))


def test_closed_form_optimum_by_brute_force():
  # Gradient descent on a 2-D quadratic, run step by step in NumPy.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(50, 2)) * np.sqrt(tasks_lib.LSQ_EIGENVALUES[[0, -1]])
  y = x @ np.array([1.0, -2.0])
  eigen = tasks_lib.LSQ_EIGENVALUES
  try:
    tasks_lib.LSQ_EIGENVALUES = eigen[[0, -1]]
    star = tasks_lib._lsq_w_star  # pylint: disable=protected-access
    tasks_lib._lsq_w_star = lambda: np.array([1.0, -2.0])  # pylint: disable=protected-access
    got = tasks_lib.lsq_optimal_lr(x, y, np.zeros(2), 20)
  finally:
    tasks_lib.LSQ_EIGENVALUES = eigen
    tasks_lib._lsq_w_star = star  # pylint: disable=protected-access

  def risk(eta):
    w = np.zeros(2)
    for _ in range(20):
      w = w - eta * 2 * x.T @ (x @ w - y) / len(y)
    d = w - np.array([1.0, -2.0])
    return d @ (eigen[[0, -1]] * d)

  etas = np.geomspace(1e-3, got * 1.5, 400)
  assert risk(got) <= min(risk(e) for e in etas) * (1 + 1e-6)


# --- the peers' rules, on curves with known answers -------------------------


def step_curve(at=50, low=1.0, high=2.0):
  return np.where(np.arange(LRS.size) < at, high, low).astype(float)


def test_torch_lr_finder_steepest_index_of_its_smoothed_curve():
  # s_t = 0.05 L_t + 0.95 s_{t-1}: after the step at t = 50 it falls by
  # 0.05, 0.0475, ...; numpy.gradient over the index is lowest at t = 50.
  assert peers.torch_lr_finder(LRS, step_curve()) == LRS[50]


def test_torch_lr_finder_stops_at_five_times_best():
  loss = step_curve(low=0.1)
  loss[70:] = 1e3  # the smoothed loss passes 5 x 0.1 at t = 70
  # Without the stop, the later cliff would be the steepest point.
  assert peers.torch_lr_finder(LRS, loss) == LRS[50]
  loss[70:] = np.nan  # a NaN tail ends the curve the same way
  assert peers.torch_lr_finder(LRS, loss) == LRS[50]


def ema(loss, offset=1):
  out, average = [], 0.0
  for t, value in enumerate(loss):
    average = 0.98 * average + 0.02 * value
    out.append(average / (1 - 0.98 ** (t + offset)))
  return np.array(out)


def test_fastai_minimum_reads_its_bias_corrected_average():
  loss = 1.0 + (np.log10(LRS) + 2.0) ** 2 / 10  # raw lowest at lr = 1e-2
  smoothed = ema(loss)
  lowest = 10 + int(np.argmin(smoothed[10:-5]))
  assert lowest > int(np.argmin(loss))  # the average lags
  assert peers.fastai_minimum(LRS, loss) == pytest.approx(LRS[lowest] / 10)


def test_fastai_steep_is_the_left_end_of_the_steepest_forward_slope():
  loss = step_curve()
  # The bias-corrected average is flat at 2 before t = 50 and falls most
  # between t = 49 and 50: the forward slope at index 49 (of the full
  # curve) is the left end.
  assert peers.fastai_steep(LRS, loss) == LRS[49]


def test_fastai_valley_on_a_single_descent():
  # Strictly falling raw loss to t = 60, then rising fast: the average falls
  # until it turns at some t*; the trimmed curve [10:-5] falls on
  # [10, t*], whose longest decreasing subsequence is that run.
  loss = np.concatenate([np.linspace(3.0, 1.0, 61), np.linspace(1.5, 2.0,
                                                                39)])
  smoothed = ema(loss)[10:-5]
  turn = int(np.argmin(smoothed))
  assert np.all(np.diff(smoothed[: turn + 1]) < 0)
  sections = (turn - (-1)) / 3  # fastai's max_start = max_end - length
  expected = -1 + int(sections) + int(sections / 2)
  assert peers.fastai_valley(LRS, loss) == LRS[10 + expected]


def test_lightning_off_by_one_and_raw_lr_gradient():
  loss = np.full(LRS.size, 2.0)
  smoothed = ema(loss, offset=2)
  assert smoothed[0] == pytest.approx(2.0 * 0.02 / (1 - 0.98**2))
  # A drop of 1 between t = 80 and 81; against the raw lr, the gradient of
  # the rising off-by-one curve before it is tiny: the drop wins.
  loss[81:] = 1.0
  got = peers.lightning(LRS, loss)
  curve = ema(loss, offset=2)[10:-1]
  expected = 10 + int(np.argmin(np.gradient(curve, LRS[10:-1])))
  assert got == LRS[expected]
  assert 80 <= expected <= 82


def test_legacy_steepest_reads_the_lagging_average():
  loss = 2.0 - np.tanh(2.0 * (np.log10(LRS) + 3.0))  # steepest at 1e-3
  # 1e-3 lies between two swept rates: one of them.
  assert 10**-3.1 < peers.legacy_steepest(LRS, loss, LRS.size) < 10**-2.9
  assert peers.legacy_steepest(LRS, ema(loss), LRS.size) > 3e-3


def test_report_markdown_names_both_halves(quick):
  text = suggest.markdown(quick[1])
  assert '### dev tasks' in text and '### all tasks' in text
  for task in quick[1]['tasks']:
    assert f"#### {task['task']}" in text
  assert os.path.basename(suggest.FIGURE) == 'suggest_suite.png'


# --- the rate-free baselines -------------------------------------------------


def test_every_rate_free_baseline_has_a_row_per_task(quick):
  record = quick[1]
  assert record['params']['rate_free'] == list(rate_free.OPTIMIZERS)
  assert len(rate_free.OPTIMIZERS) == 7
  for task in record['tasks']:
    for name in rate_free.OPTIMIZERS:
      row = task['rules'][name]
      assert row['rate_free'] and row['error'] is None, (task['task'], name)
      assert row['lr'] is None and row['log10_distance'] is None
      assert len(row['seed_scores']) == suggest.QUICK_SEEDS
      assert row['score'] == pytest.approx(np.mean(row['seed_scores']))
      assert 0 <= row['diverged_seeds'] <= suggest.QUICK_SEEDS
  for half in ('dev', 'all'):
    for name in rate_free.OPTIMIZERS:
      assert name in record['summary'][half]
  goals = record['find_lr_goals']['dev']
  assert set(goals['rate_free_worst_normalized']) == set(rate_free.OPTIMIZERS)


def hand_optimizer(task, name):
  """Each baseline built anew, as its documentation says to call it."""
  task_optimizer = {'adam': optax.adam, 'sgd': optax.sgd}[task.optimizer]
  return {
      'contrib.prodigy()': optax.contrib.prodigy,
      'contrib.dadapt_adamw()': optax.contrib.dadapt_adamw,
      'contrib.dog()': optax.contrib.dog,
      'contrib.dowg()': optax.contrib.dowg,
      'contrib.cocob()': optax.contrib.cocob,
      rate_free.MECHANIZE: lambda: optax.contrib.mechanize(
          task_optimizer(1.0)),
      rate_free.SCHEDULE_FREE: optax.contrib.schedule_free_adamw,
  }[name]()


def hand_trained_score(task, name, seed, num_steps):
  """Seed ``seed``'s test score from a plain optax loop, one jitted step."""
  model = tasks_lib.make_model(task, seed)
  graphdef, params = nnx.split(model)  # The quick tasks' models: params only.
  loss_fn, eval_fn = tasks_lib.loss_and_eval(task)
  tx = hand_optimizer(task, name)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, idx):
    grads = jax.grad(lambda p: loss_fn(nnx.merge(graphdef, p), idx))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  for idx in tasks_lib.batches(task, seed, num_steps):
    params, opt_state = step(params, opt_state, jnp.asarray(idx))
  if name == rate_free.SCHEDULE_FREE:
    params = optax.contrib.schedule_free_eval_params(opt_state, params)
  metrics = eval_fn(nnx.merge(graphdef, params))
  score, loss = float(metrics['score']), float(metrics['loss'])
  baseline = tasks_lib.baseline_score(task)
  if not (np.isfinite(score) and np.isfinite(loss)):
    score = baseline  # Diverged: what a model that learned nothing scores.
  if tasks_lib.load(task.data).classes:
    return score
  return min(-score, -baseline)  # MSE, no worse than predicting the mean.


@pytest.mark.parametrize('task_name', tasks_lib.QUICK_TASKS)
@pytest.mark.parametrize('name', list(rate_free.OPTIMIZERS))
def test_rate_free_score_equals_a_hand_written_loop(quick, task_name, name):
  record = next(t for t in quick[1]['tasks'] if t['task'] == task_name)
  task = next(t for t in tasks_lib.TASKS if t.name == task_name)
  expected = hand_trained_score(task, name, 0, record['num_steps'])
  got = record['rules'][name]['seed_scores'][0]
  if record['metric'] == 'accuracy':
    assert got == pytest.approx(expected, abs=1e-5)
  else:
    assert got == pytest.approx(expected, rel=1e-5)


def test_a_failing_or_diverging_baseline_scores_the_baseline(monkeypatch):
  task = next(t for t in tasks_lib.TASKS if t.name == 'lsq-linear-sgd-full')

  def broken(_):
    raise ValueError('no init')

  monkeypatch.setitem(rate_free.OPTIMIZERS, 'nan',
                      lambda _: optax.scale(float('nan')))
  monkeypatch.setitem(rate_free.OPTIMIZERS, 'broken', lambda _: (
      optax.GradientTransformation(broken, broken)))
  inputs = tasks_lib.training(task, (0, 1), 3)
  baseline = tasks_lib.baseline_score(task)
  nan = rate_free.train_one(task, 'nan', inputs, 3)
  assert nan['diverged_seeds'] == 2 and nan['error'] is None
  np.testing.assert_array_equal(nan['seed_scores'], [baseline, baseline])
  failed = rate_free.train_one(task, 'broken', inputs, 3)
  assert failed['diverged_seeds'] == 2 and 'no init' in failed['error']
  np.testing.assert_array_equal(failed['seed_scores'], [baseline, baseline])


def test_schedule_free_eval_model_unwraps_an_nnx_optimizer():
  # nnx.Optimizer keeps opt_state as OptVariables, the module its Params;
  # the helper's eval params equal optax's on a plain loop's pure trees.
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  tx = optax.contrib.schedule_free_adamw(0.1)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  # The plain loop's own copy: a split shares the module's variables.
  graphdef, params = nnx.split(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
  opt_state = tx.init(params)
  x = jnp.arange(12.0).reshape(4, 3) / 10
  loss = lambda m: jnp.mean((m(x) - 1.0) ** 2)
  for _ in range(3):
    optimizer.update(model, nnx.grad(loss)(model))
    grads = jax.grad(lambda p: loss(nnx.merge(graphdef, p)))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
  with pytest.raises(ValueError, match='pytree structure'):
    optax.contrib.schedule_free_eval_params(
        optimizer.opt_state, nnx.state(model, nnx.Param))
  got = rate_free.schedule_free_eval_model(model, optimizer.opt_state)
  want = optax.contrib.schedule_free_eval_params(opt_state, params)
  np.testing.assert_allclose(got.kernel[...], want['kernel'][...], rtol=1e-6)
  np.testing.assert_allclose(got.bias[...], want['bias'][...], rtol=1e-6)
  # The training module keeps the params its gradients are taken at.
  np.testing.assert_allclose(model.kernel[...], params['kernel'][...],
                             rtol=1e-6)
  assert not np.allclose(got.kernel[...], model.kernel[...])


class _Normed(nnx.Module):

  def __init__(self, rngs):
    self.linear = nnx.Linear(3, 4, rngs=rngs)
    self.norm = nnx.BatchNorm(4, momentum=0.9, rngs=rngs)

  def __call__(self, x):
    return self.norm(self.linear(x))


def test_refresh_batch_stats_equals_training_mode_passes():
  model = _Normed(nnx.Rngs(0))
  data = jnp.asarray(np.random.default_rng(0).normal(size=(5, 8, 3)),
                     jnp.float32)
  loss_fn = lambda m, batch: jnp.mean(m(batch) ** 2)
  stateful_loss, params, state = optax_clr.nnx.split_loss(model, loss_fn)
  got = rate_free.refresh_batch_stats(stateful_loss, params, state, data,
                                      jax.random.key(0))
  for batch in data:  # Nothing trained: only the running statistics move.
    model(batch)
  norm = model.norm
  np.testing.assert_allclose(got['norm']['mean'][...], norm.mean[...],
                             rtol=1e-5)
  np.testing.assert_allclose(got['norm']['var'][...], norm.var[...],
                             rtol=1e-5)
  assert not np.allclose(norm.mean[...], 0.0)  # They started at 0 and 1.
  assert not np.allclose(norm.var[...], 1.0)
