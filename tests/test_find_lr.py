"""find_lr: the choice against successive halving written by hand."""

import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_clr

STEPS, BATCH, DIM = 64, 16, 4
RNG = np.random.default_rng(0)
X = RNG.normal(size=(STEPS + 8, BATCH, DIM)).astype(np.float32) * np.linspace(
    0.5, 1.5, DIM).astype(np.float32)
W_TRUE = np.arange(1.0, 1.0 + DIM, dtype=np.float32)
Y = (X @ W_TRUE + 0.5 * RNG.normal(size=X.shape[:2])).astype(np.float32)
BATCHES = {'x': X[:STEPS], 'y': Y[:STEPS]}
X_VAL, Y_VAL = X[STEPS:].reshape(-1, DIM), Y[STEPS:].reshape(-1)
# The thorough search (no cost bound), whose stages these tests take apart;
# the tests of max_cost pass their own.
find_lr = functools.partial(optax_clr.find_lr, max_cost=None)


def loss_fn(w, batch):
  return jnp.mean((batch['x'] @ w - batch['y']) ** 2)


def eval_fn(w):
  return jnp.mean((X_VAL @ w - Y_VAL) ** 2)


def sgd_by_hand(lr, steps, w=None):
  """Plain gradient descent on the batches in order, in float64."""
  w = np.zeros(DIM) if w is None else w
  for t in steps:
    x, y = X[t].astype(np.float64), Y[t].astype(np.float64)
    w = w - lr * 2.0 / BATCH * x.T @ (x @ w - y)
  return w


def val_mse(w):
  return float(np.mean((X_VAL @ w - Y_VAL) ** 2))


@functools.lru_cache(maxsize=None)
def one_seed():
  return find_lr(loss_fn, jnp.zeros(DIM), optax.sgd, BATCHES,
                           eval_fn, num_seeds=1)


def test_successive_halving_equals_a_loop_by_hand():
  _assert_halving_by_hand(one_seed())


def _assert_halving_by_hand(result):
  rungs = [STEPS // 4, STEPS // 2, STEPS]
  assert result.rung_steps.tolist() == rungs
  alive = list(range(8))
  weights = {i: np.zeros(DIM) for i in alive}
  done = 0
  expected = np.full((3, 8), np.nan)
  for rung, (end, keep) in enumerate(zip(rungs, (4, 2, None))):
    for i in alive:
      weights[i] = sgd_by_hand(result.candidates[i], range(done, end),
                               weights[i])
      expected[rung, i] = val_mse(weights[i])
    done = end
    if keep:
      alive = sorted(sorted(alive, key=lambda i: expected[rung, i])[:keep])
  np.testing.assert_allclose(result.scores, expected, rtol=2e-3)
  best = int(np.nanargmin(expected[-1]))
  assert result.learning_rate == pytest.approx(result.candidates[best])
  # The winner's parameters are one uninterrupted run of the whole budget.
  np.testing.assert_allclose(
      result.params, sgd_by_hand(result.learning_rate, range(STEPS)),
      rtol=1e-3)


def _halves(batches):
  """Each step's batch as two microbatches of half its rows, in order."""
  return {k: v.reshape(v.shape[0] * 2, v.shape[1] // 2, *v.shape[2:])
          for k, v in batches.items()}


def test_accumulation_steps_update_once_per_two_microbatches():
  # Two microbatches of 8 rows average to the gradient of the 16-row batch:
  # the same updates as the loop by hand on whole batches.
  result = find_lr(loss_fn, jnp.zeros(DIM), optax.sgd,
                             _halves(BATCHES), eval_fn, num_seeds=1,
                             accumulation_steps=2)
  assert result.range_test.losses.shape == (3, 100)
  assert result.cost_steps == one_seed().cost_steps  # updates, not batches
  _assert_halving_by_hand(result)


def test_accumulation_steps_move_a_schedule_once_per_update():
  warmup = lambda lr: optax.linear_schedule(0.0, lr, STEPS // 8)
  result = find_lr(loss_fn, jnp.zeros(DIM), optax.sgd,
                             _halves(BATCHES), eval_fn, schedule=warmup,
                             num_seeds=1, num_rungs=1, accumulation_steps=2)
  for i, lr in enumerate(result.candidates[:3]):
    w = np.zeros(DIM)
    for t in range(STEPS):
      w = sgd_by_hand(lr * min(t / (STEPS // 8), 1.0), [t], w)
    assert result.scores[0, i] == pytest.approx(val_mse(w), rel=2e-3)


def test_progress_bars_name_each_stage_and_change_nothing():
  pytest.importorskip('tqdm')
  out = io.StringIO()
  result = find_lr(loss_fn, jnp.zeros(DIM), optax.sgd, BATCHES,
                             eval_fn, num_seeds=1,
                             progress={'file': out, 'every': 8})
  text = out.getvalue()
  for stage in ('find_lr: range test 1 of 3', 'find_lr: range test 3 of 3',
                'find_lr: rung 1 of 3',
                'find_lr: rung 3 of 3'):
    assert stage in text, text
  np.testing.assert_array_equal(result.scores, one_seed().scores)


def test_bracket_is_read_off_the_range_tests():
  result = one_seed()
  tests = result.range_test
  assert tests.losses.shape == (3, 100)
  suggestion = optax_clr.suggest_lr(tests)
  assert result.suggestion == pytest.approx(suggestion)
  lowest = optax_clr.suggest_lr(tests, method='minimum') * 10
  high = min(suggestion * 10, lowest)
  low, top = result.bracket
  assert top == pytest.approx(high, rel=1e-6)
  assert low == pytest.approx(high / 100, rel=1e-6)
  np.testing.assert_allclose(result.candidates, np.geomspace(low, top, 8),
                             rtol=1e-6)
  base, peak = result.clr_bounds
  assert peak == pytest.approx(2 * result.learning_rate)
  assert base == pytest.approx(peak / 4)


def test_cost_counts_every_step():
  result = find_lr(loss_fn, jnp.zeros(DIM), optax.sgd, BATCHES,
                             eval_fn, num_seeds=3, num_candidates=6,
                             num_range_tests=2, range_test_steps=40)
  # 6 x 16 steps, 3 x 16 more, 2 x 32 more; 3 seeds; 2 range tests of 40.
  assert result.cost_steps == 3 * (6 * 16 + 3 * 16 + 2 * 32) + 2 * 40
  assert result.scores.shape == (3, 6)
  assert np.isfinite(result.scores[0]).all()
  assert np.isfinite(result.scores[1]).sum() == 3
  assert np.isfinite(result.scores[2]).sum() == 2


def test_seeds_are_independent_and_seed_zero_is_the_given_order():
  two = find_lr(loss_fn, jnp.zeros(DIM), optax.sgd, BATCHES,
                          eval_fn, num_seeds=2, num_rungs=1)
  assert two.seed_scores.shape == (1, 8, 2)
  np.testing.assert_allclose(two.scores[0], two.seed_scores[0].mean(-1))
  # Seed 1 trains on another order of the same steps: other scores.
  assert not np.allclose(two.seed_scores[0, :, 0], two.seed_scores[0, :, 1],
                         rtol=1e-4)
  for i, lr in enumerate(two.candidates):
    assert two.seed_scores[0, i, 0] == pytest.approx(
        val_mse(sgd_by_hand(lr, range(STEPS))), rel=2e-3)


def test_dropout_keys_differ_per_seed():
  def noisy_loss(w, batch, key):
    keep = jax.random.bernoulli(key, 0.8, batch['y'].shape)
    return jnp.mean(keep * (batch['x'] @ w - batch['y']) ** 2) / 0.8

  same_order = {'x': np.repeat(X[:1], STEPS, 0), 'y': np.repeat(Y[:1], STEPS, 0)}
  result = find_lr(noisy_loss, jnp.zeros(DIM), optax.sgd,
                             same_order, eval_fn, key=jax.random.key(0),
                             num_rungs=1)
  # Every step's batch is the same, so only the keys tell the seeds apart.
  assert not np.allclose(result.seed_scores[0, :, 0],
                         result.seed_scores[0, :, 1], rtol=1e-5)


def test_non_finite_runs_score_inf_and_are_never_chosen():
  plain = one_seed()
  fitted = plain.scores[0] < np.median(plain.scores[0])  # the better half
  threshold = float(np.median(plain.scores[0]))

  def fragile_eval(w):  # NaN where the plain score is below the median
    mse = eval_fn(w)
    return jnp.where(mse < threshold, jnp.nan, mse)

  result = find_lr(loss_fn, jnp.zeros(DIM), optax.sgd, BATCHES,
                             fragile_eval, num_seeds=1, num_rungs=1)
  np.testing.assert_allclose(result.candidates, plain.candidates)
  assert np.all(np.isposinf(result.scores[0][fitted]))
  assert not np.isnan(result.scores).any()
  assert not fitted[np.flatnonzero(result.candidates
                                   == result.learning_rate)[0]]


def _blows_up_after(step):
  """A schedule factory whose rate jumps a million-fold after ``step``."""
  return lambda lr: optax.piecewise_constant_schedule(lr, {step: 1e6})


def test_every_candidate_diverging_is_refused_with_the_range_tests():
  with pytest.raises(ValueError, match='every candidate diverged.*step'):
    find_lr(loss_fn, jnp.zeros(DIM), optax.sgd, BATCHES, eval_fn,
                      schedule=_blows_up_after(4), num_rungs=1)


def test_non_finite_scores_with_finite_training_name_eval_fn():
  with pytest.raises(ValueError, match='eval_fn returned a non-finite score'
                     '.*every training loss was finite'):
    find_lr(loss_fn, jnp.zeros(DIM), optax.sgd, BATCHES,
                      lambda w: jnp.nan * jnp.sum(w), num_rungs=1)


def test_finalists_diverging_by_the_last_rung_are_refused():
  # Rungs score at steps 16 and 32 and 64: finite until the rate jumps at 40.
  with pytest.raises(ValueError, match='diverged between step 32 and step 64'):
    find_lr(loss_fn, jnp.zeros(DIM), optax.sgd, BATCHES, eval_fn,
                      schedule=_blows_up_after(40), num_seeds=1)


@pytest.mark.parametrize('kwargs', [
    dict(schedule=lambda lr: optax.constant_schedule(0.01)),
    dict(optimizer=lambda lr: optax.sgd(0.01)),
    dict(eval_fn=lambda w: 0.25),
], ids=['constant-schedule', 'optimizer-ignores-rate', 'constant-eval'])
def test_candidates_that_cannot_be_told_apart_are_refused(kwargs):
  args = dict(optimizer=optax.sgd, eval_fn=eval_fn)
  args.update(kwargs)
  with pytest.raises(ValueError, match='cannot tell the candidates apart'):
    find_lr(loss_fn, jnp.zeros(DIM), args.pop('optimizer'),
                      BATCHES, args.pop('eval_fn'), num_seeds=1, **args)


def test_a_tie_at_the_last_rung_goes_to_the_smaller_rate():
  plain = one_seed()
  floor = float(np.median(plain.scores[0]))  # the better half all score this
  coarse = lambda w: jnp.maximum(eval_fn(w), floor)
  result = find_lr(loss_fn, jnp.zeros(DIM), optax.sgd, BATCHES,
                             coarse, num_seeds=1)
  last = result.scores[-1]
  tied = np.flatnonzero(last == np.nanmin(last))
  assert np.nanmin(last) == pytest.approx(floor)
  assert tied.size >= 2
  assert result.learning_rate == result.candidates[tied[0]]


@pytest.mark.parametrize('span, match', [
    (50.0, 'below float32.s smallest normal'),
    (1e-9, 'too narrow'),
])
def test_span_that_float32_cannot_hold_is_refused(span, match):
  with pytest.raises(ValueError, match=f'span={span!r}.*{match}'):
    find_lr(loss_fn, jnp.zeros(DIM), optax.sgd, BATCHES, eval_fn,
                      span=span, num_seeds=1, num_rungs=1)


def test_flat_curves_are_refused():
  flat = lambda w, batch: 1.0 + 0.0 * jnp.sum(w) * jnp.sum(batch['x'])
  with pytest.raises(ValueError, match='never improved'):
    find_lr(flat, jnp.zeros(DIM), optax.sgd, BATCHES, eval_fn)


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(eval_fn=lambda w: w), ValueError, 'eval_fn must return one real'),
    (dict(eval_fn=lambda w, s: w[0]), TypeError, 'eval_fn'),
    (dict(eval_fn='val'), TypeError, 'eval_fn'),
    (dict(loss_fn=None), TypeError, 'loss_fn'),
    (dict(optimizer=lambda lr: 'sgd'), TypeError, 'GradientTransformation'),
    (dict(batches={'x': X[:3], 'y': Y[:3]}), ValueError,
     'num_rungs=3 is too many for 3 steps'),
    (dict(batches={'x': X[:8], 'y': Y[:9]}), ValueError, 'leading'),
    (dict(num_candidates=1), ValueError, 'num_candidates'),
    (dict(num_seeds=0), ValueError, 'num_seeds'),
    (dict(num_rungs=0), ValueError, 'num_rungs'),
    (dict(reduction=1), ValueError, 'reduction'),
    (dict(span=0.0), ValueError, 'span'),
    (dict(num_range_tests=0), ValueError, 'num_range_tests'),
    (dict(range_test_steps=1), ValueError, 'range_test_steps'),
    (dict(start_lr=-1.0), ValueError, 'start_lr'),
    (dict(schedule=3), TypeError, 'schedule'),
    (dict(accumulation_steps=0), ValueError, 'accumulation_steps'),
    (dict(accumulation_steps=3), ValueError,
     'not a multiple of accumulation_steps=3'),
    (dict(progress='yes'), TypeError, 'progress'),
    (dict(eval_fn=lambda w: {'mse': eval_fn(w)}), ValueError,
     'not a container.*dict'),
    (dict(schedule=lambda lr: 'warmup'), TypeError, 'schedule'),
    (dict(schedule=lambda lr: None), TypeError, 'schedule.*None'),
    (dict(schedule=lambda lr: optax.constant_schedule(jnp.ones(3) * lr)),
     TypeError, 'schedule.*shape \\(3,\\)'),
    (dict(schedule=lambda lr: optax.warmup_cosine_decay_schedule(
        0.0, lr, 8, STEPS)), TypeError, 'schedule\\(lr\\) must accept a traced'),
    (dict(params=jnp.zeros(DIM, jnp.int32)), TypeError,
     'params has dtype int32'),
    (dict(key=0), TypeError, 'key must be a jax.random key.*int 0'),
    (dict(key=1.5), TypeError, 'key must be a jax.random key.*float'),
    (dict(key=jax.random.split(jax.random.key(0), 3)), ValueError,
     'key must be one jax.random key.*shape \\(3,\\)'),
    (dict(num_rungs=10**6), ValueError, 'num_rungs=1000000 is too many.*at'
     ' most 7 rungs'),
    (dict(span=100.0), ValueError, 'span must be at most 76.5'),
    (dict(max_cost=0.5), ValueError, 'max_cost'),
    (dict(max_cost='1.5'), TypeError, 'max_cost'),
    (dict(mesh=jax.sharding.Mesh(np.array(jax.devices()[:1]), ('x',))),
     ValueError, "find_lr needs mesh to have a 'models' axis"),
])
def test_bad_input_is_named_before_compiling(kwargs, error, match):
  traces = []

  def counted_loss(w, batch):
    traces.append(1)
    return loss_fn(w, batch)

  args = dict(loss_fn=counted_loss, params=jnp.zeros(DIM),
              optimizer=optax.sgd, batches=BATCHES, eval_fn=eval_fn)
  args.update(kwargs)
  with pytest.raises(error, match=match):
    find_lr(args.pop('loss_fn'), args.pop('params'),
                      args.pop('optimizer'), args.pop('batches'),
                      args.pop('eval_fn'), **args)
  assert not traces


def test_schedule_chooses_the_peak_of_a_warmup():
  warmup = lambda lr: optax.linear_schedule(0.0, lr, STEPS // 8)
  result = find_lr(loss_fn, jnp.zeros(DIM), optax.sgd, BATCHES,
                             eval_fn, schedule=warmup, num_seeds=1,
                             num_rungs=1)
  for i, lr in enumerate(result.candidates[:3]):
    w = np.zeros(DIM)
    for t in range(STEPS):
      w = sgd_by_hand(lr * min(t / (STEPS // 8), 1.0), [t], w)
    assert result.scores[0, i] == pytest.approx(val_mse(w), rel=2e-3)


def momentum_by_hand(lr, steps, momentum=0.9):
  """SGD with momentum (optax.sgd's trace) on the batches in order, float64."""
  w, trace = np.zeros(DIM), np.zeros(DIM)
  for t in steps:
    x, y = X[t].astype(np.float64), Y[t].astype(np.float64)
    trace = 2.0 / BATCH * x.T @ (x @ w - y) + momentum * trace
    w = w - lr * trace
  return w, trace


def test_max_cost_bounds_the_search_and_returns_the_trained_run():
  momentum = functools.partial(optax.sgd, momentum=0.9)
  result = find_lr(loss_fn, jnp.zeros(DIM), momentum, BATCHES,
                             eval_fn, max_cost=1.5)
  # One range test of 10 steps, 3 candidates to STEPS // 8, one to STEPS.
  assert result.cost_steps == 10 + 3 * 8 + (STEPS - 8) <= 1.5 * STEPS
  assert result.rung_steps.tolist() == [8, STEPS]
  assert result.candidates.shape == (3,)
  assert np.isfinite(result.scores[1]).sum() == 1
  w, trace = momentum_by_hand(result.learning_rate, range(STEPS))
  np.testing.assert_allclose(result.params, w, rtol=1e-3)
  np.testing.assert_allclose(result.opt_state[0].trace, trace, rtol=1e-3,
                             atol=1e-5)


def test_max_cost_refuses_a_search_that_cannot_fit_before_training():
  traces = []

  def counted_loss(w, batch):
    traces.append(1)
    return loss_fn(w, batch)

  with pytest.raises(ValueError, match='max_cost=1.5 allows 96 updates'):
    find_lr(counted_loss, jnp.zeros(DIM), optax.sgd, BATCHES,
                      eval_fn, max_cost=1.5, num_seeds=2)
  assert not traces


def test_both_strategies_choose_the_same_rate_from_the_same_scores():
  runs = {strategy: find_lr(
      loss_fn, jnp.zeros(DIM), optax.sgd, BATCHES, eval_fn, num_seeds=1,
      num_rungs=2, strategy=strategy) for strategy in ('scan', 'loop')}
  np.testing.assert_allclose(runs['loop'].scores, runs['scan'].scores,
                             rtol=1e-5)
  np.testing.assert_allclose(runs['loop'].range_test.losses,
                             runs['scan'].range_test.losses, rtol=1e-5)
  assert runs['loop'].learning_rate == runs['scan'].learning_rate
  np.testing.assert_allclose(runs['loop'].params, runs['scan'].params,
                             rtol=1e-5)


def test_a_range_test_too_noisy_for_a_suggestion_still_brackets():
  momentum = functools.partial(optax.sgd, momentum=0.9)
  # 12 steps of momentum SGD: the loss halves, but suggest_lr reads that as
  # within the curve's scatter and refuses to suggest.
  tests = optax_clr.range_test(loss_fn, jnp.zeros(DIM), momentum,
                               {k: v[:12] for k, v in BATCHES.items()},
                               num_steps=12)
  with pytest.raises(ValueError, match='within its noise'):
    optax_clr.suggest_lr(tests)
  result = find_lr(loss_fn, jnp.zeros(DIM), momentum, BATCHES,
                             eval_fn, num_seeds=1, num_range_tests=1,
                             range_test_steps=12)
  assert np.isnan(result.suggestion)
  # The bracket ends at a rate the range test swept, two decades wide.
  swept = np.asarray(result.range_test.lrs[0], np.float64)
  assert np.min(np.abs(swept / result.bracket[1] - 1)) < 1e-6
  assert result.bracket[0] == pytest.approx(result.bracket[1] / 100)
  assert np.isfinite(result.scores[-1]).any()


def test_the_default_search_fits_one_and_a_half_runs():
  result = optax_clr.find_lr(loss_fn, jnp.zeros(DIM), optax.sgd, BATCHES,
                             eval_fn)
  assert result.cost_steps == 10 + 3 * 8 + (STEPS - 8) <= 1.5 * STEPS
  np.testing.assert_allclose(
      result.params, sgd_by_hand(result.learning_rate, range(STEPS)),
      rtol=1e-3)
