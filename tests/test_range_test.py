"""Tests for the compiled LR range test."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_clr

NUM_STEPS = 100
START_LR, END_LR = 1e-4, 10.0
N, D = 32, 5


def _design():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(N, D)) * np.linspace(0.5, 2.0, D)
  w_star = rng.normal(size=D)
  return x.astype(np.float32), w_star


X, W_STAR = _design()
# Every batch has the same design X (only the targets are noisy), so every
# step's Hessian is H = X^T X / N and plain SGD diverges iff lr > 2 / λmax(H).
LAMBDA_MAX = float(np.linalg.eigvalsh(X.astype(np.float64).T @ X / N).max())
CRITICAL_LR = 2.0 / LAMBDA_MAX
SEEDS = 4


def least_squares(w, y):
  return 0.5 * jnp.mean((X @ w - y) ** 2)


def noisy_targets(seed, num_steps=NUM_STEPS):
  rng = np.random.default_rng(100 + seed)
  noise = 0.5 * rng.normal(size=(num_steps, N))
  return (X @ W_STAR + noise).astype(np.float32)


def sweep(targets, **kwargs):
  return optax_clr.range_test(
      least_squares, jnp.zeros(D), optax.sgd, targets, start_lr=START_LR,
      end_lr=END_LR, num_steps=NUM_STEPS, **kwargs,
  )


@pytest.fixture(scope='module')
def targets():
  return np.stack([noisy_targets(seed) for seed in range(SEEDS)])


@pytest.fixture(scope='module')
def batched(targets):
  """SEEDS sweeps as one vmapped program."""
  return jax.vmap(sweep)(jnp.asarray(targets))


def numpy_ema(losses, beta):
  """The bias-corrected EMA, one step at a time in float64 (fastai's)."""
  out, average = [], 0.0
  for t, loss in enumerate(np.asarray(losses, np.float64)):
    average = beta * average + (1 - beta) * loss
    out.append(average / (1 - beta ** (t + 1)))
  return np.array(out)


def numpy_diverged_step(losses, beta, tau):
  """The documented rule, written out on the NumPy EMA."""
  smoothed = numpy_ema(losses, beta)
  best = np.inf
  for t, (loss, s) in enumerate(zip(losses, smoothed)):
    best = min(best, s)
    scale = max(abs(smoothed[0]), smoothed[0] - best, 1e-8)
    if not np.isfinite(loss) or (tau is not None and s - best > tau * scale):
      return t
  return len(losses)


class TestLeastSquaresDivergence:
  """SGD on least squares: the analytic divergence rate is 2 / λmax."""

  def test_every_seed_diverges_between_critical_and_four_times(self, batched):
    steps = np.asarray(batched.diverged_step)
    assert steps.shape == (SEEDS,)
    assert np.all(steps < NUM_STEPS)
    diverged_lrs = np.asarray(batched.lrs)[np.arange(SEEDS), steps]
    assert np.all(diverged_lrs >= CRITICAL_LR), diverged_lrs / CRITICAL_LR
    assert np.all(diverged_lrs <= 4 * CRITICAL_LR), diverged_lrs / CRITICAL_LR

  @pytest.mark.parametrize('method', ['steepest', 'valley', 'minimum'])
  def test_suggestions_lie_below_critical(self, batched, method):
    for seed in range(SEEDS):
      one = jax.tree.map(lambda x, s=seed: x[s], batched)
      assert 0 < optax_clr.suggest_lr(one, method=method) < CRITICAL_LR
    assert 0 < optax_clr.suggest_lr(batched, method=method) < CRITICAL_LR

  def test_clr_max_lr_not_above_divergence(self, batched):
    for seed in range(SEEDS):
      one = jax.tree.map(lambda x, s=seed: x[s], batched)
      base_lr, max_lr = optax_clr.suggest_clr_bounds(one)
      diverged_lr = float(one.lrs[one.diverged_step])
      assert 0 < base_lr < max_lr <= diverged_lr
      assert base_lr == pytest.approx(max_lr / 4)
    _, max_lr = optax_clr.suggest_clr_bounds(batched)
    first = int(np.min(batched.diverged_step))
    assert max_lr <= float(batched.lrs[0, first])

  def test_losses_follow_numpy_gradient_descent(self, targets, batched):
    """Update t uses lrs[t]; losses[t] is taken before it."""
    lrs = np.geomspace(START_LR, END_LR, NUM_STEPS)
    np.testing.assert_allclose(batched.lrs[0], lrs, rtol=1e-5)
    x = X.astype(np.float64)
    stop = int(batched.diverged_step[0])
    w, expected = np.zeros(D), []
    for t in range(stop + 1):
      residual = x @ w - targets[0, t]
      expected.append(0.5 * np.mean(residual**2))
      w = w - lrs[t] * x.T @ residual / N
    np.testing.assert_allclose(batched.losses[0, : stop + 1], expected,
                               rtol=2e-3)

  def test_ema_and_rule_against_numpy(self, batched):
    for seed in range(SEEDS):
      losses = np.asarray(batched.losses[seed])
      stop = int(batched.diverged_step[seed])
      np.testing.assert_allclose(
          batched.smoothed_losses[seed, : stop + 1],
          numpy_ema(losses[: stop + 1], 0.98), rtol=1e-5,
      )
      assert numpy_diverged_step(losses[: stop + 1], 0.98, 4.0) == stop

  def test_records_after_divergence_are_nan(self, batched):
    for seed in range(SEEDS):
      stop = int(batched.diverged_step[seed])
      assert np.all(np.isfinite(batched.losses[seed, : stop + 1]))
      assert np.all(np.isnan(batched.losses[seed, stop + 1 :]))
      assert np.all(np.isnan(batched.smoothed_losses[seed, stop + 1 :]))

  def test_vmapped_equals_per_seed(self, targets, batched):
    for seed in (0, SEEDS - 1):
      single = sweep(targets[seed])
      assert int(single.diverged_step) == int(batched.diverged_step[seed])
      np.testing.assert_allclose(single.losses, batched.losses[seed],
                                 rtol=1e-5, equal_nan=True)
      np.testing.assert_allclose(single.smoothed_losses,
                                 batched.smoothed_losses[seed], rtol=1e-5,
                                 equal_nan=True)
      np.testing.assert_array_equal(single.lrs, batched.lrs[seed])

  def test_vmap_over_initial_params(self, targets):
    inits = np.stack([np.zeros(D), W_STAR + 1.0, -W_STAR]).astype(np.float32)
    results = jax.vmap(
        lambda w: optax_clr.range_test(
            least_squares, w, optax.sgd, targets[0], start_lr=START_LR,
            end_lr=END_LR, num_steps=NUM_STEPS)
    )(inits)
    for row, init in enumerate(inits):
      single = optax_clr.range_test(
          least_squares, init, optax.sgd, targets[0], start_lr=START_LR,
          end_lr=END_LR, num_steps=NUM_STEPS)
      assert int(single.diverged_step) == int(results.diverged_step[row])
      np.testing.assert_allclose(single.losses, results.losses[row],
                                 rtol=1e-5, equal_nan=True)

  def test_iterable_equals_array_path_and_stops_early(self, targets, batched):
    consumed = []

    def batches():
      for t in range(NUM_STEPS):
        consumed.append(t)
        yield targets[1, t]

    from_iterator = sweep(batches())
    from_list = sweep(list(targets[1]))
    stop = int(batched.diverged_step[1])
    assert len(consumed) == stop + 1 < NUM_STEPS
    for result in (from_iterator, from_list):
      assert int(result.diverged_step) == stop
      np.testing.assert_allclose(result.losses, batched.losses[1],
                                 rtol=1e-5, equal_nan=True)
      np.testing.assert_allclose(result.smoothed_losses,
                                 batched.smoothed_losses[1], rtol=1e-5,
                                 equal_nan=True)
      np.testing.assert_array_equal(result.lrs, batched.lrs[1])

  def test_iterable_under_vmap_equals_stacked(self, targets):
    # Under vmap the iterable path cannot stop early (divergence is traced):
    # it runs every step, masking the updates after divergence as the scan
    # does, and gives the stacked path's result. A short sweep: each step is
    # a dispatch.
    short = lambda y: optax_clr.range_test(
        least_squares, jnp.zeros(D), optax.sgd, y, start_lr=START_LR,
        end_lr=END_LR, num_steps=30)
    ys = jnp.asarray(targets[:, :30])
    stacked = jax.vmap(short)(ys)
    from_lists = jax.vmap(lambda y: short(list(y)))(ys)
    assert np.all(np.asarray(stacked.diverged_step) < 29)
    np.testing.assert_array_equal(from_lists.diverged_step,
                                  stacked.diverged_step)
    np.testing.assert_allclose(from_lists.losses, stacked.losses, rtol=1e-5,
                               equal_nan=True)
    np.testing.assert_allclose(from_lists.smoothed_losses,
                               stacked.smoothed_losses, rtol=1e-5,
                               equal_nan=True)
    np.testing.assert_array_equal(from_lists.lrs, stacked.lrs)

  def test_threshold_none_runs_until_non_finite(self, targets, batched):
    result = sweep(targets[0], divergence_threshold=None)
    stop = int(result.diverged_step)
    assert stop > int(batched.diverged_step[0])
    if stop < NUM_STEPS:  # float32 overflowed: a non-finite loss ends it
      assert not np.isfinite(result.losses[stop])
      assert np.all(np.isfinite(result.losses[:stop]))

  def test_jit_of_the_whole_test(self, targets, batched):
    result = jax.jit(sweep)(targets[2])
    assert int(result.diverged_step) == int(batched.diverged_step[2])
    np.testing.assert_allclose(result.losses, batched.losses[2], rtol=1e-5,
                               equal_nan=True)


class TestPurity:

  def test_params_and_optimizer_untouched(self):
    params = {'w': np.zeros(D, np.float32), 'b': np.ones((), np.float32)}
    before = jax.tree.map(np.copy, params)
    loss_fn = lambda p, y: least_squares(p['w'], y - p['b'])
    optimizer = functools.partial(optax.sgd, momentum=0.9)
    run = lambda: optax_clr.range_test(
        loss_fn, params, optimizer, noisy_targets(0, 30), start_lr=1e-3,
        end_lr=1.0, num_steps=30)
    first, second = run(), run()
    jax.tree.map(np.testing.assert_array_equal, params, before)
    np.testing.assert_array_equal(first.losses, second.losses)
    assert first.losses[0] == pytest.approx(
        float(loss_fn(before, noisy_targets(0, 30)[0])), rel=1e-6)


class _Unhashable:
  """A callable that defines __eq__ and so has no __hash__."""

  def __init__(self, fn):
    self.fn = fn

  def __eq__(self, other):
    return isinstance(other, _Unhashable) and other.fn is self.fn

  def __call__(self, *args, **kwargs):
    return self.fn(*args, **kwargs)


class TestUnhashableCallables:
  """jax.jit's static arguments must be hashable; these are not."""

  def test_objects_are_unhashable(self):
    with pytest.raises(TypeError, match='unhashable'):
      hash(_Unhashable(least_squares))

  @pytest.mark.parametrize('stacked', [True, False])
  @pytest.mark.parametrize('which', ['loss_fn', 'optimizer', 'both'])
  def test_same_result_as_hashable(self, targets, batched, which, stacked):
    loss_fn, optimizer = least_squares, optax.sgd
    if which in ('loss_fn', 'both'):
      loss_fn = _Unhashable(least_squares)
    if which in ('optimizer', 'both'):
      optimizer = _Unhashable(optax.sgd)
    batches = targets[0] if stacked else list(targets[0])
    result = optax_clr.range_test(
        loss_fn, jnp.zeros(D), optimizer, batches, start_lr=START_LR,
        end_lr=END_LR, num_steps=NUM_STEPS)
    assert int(result.diverged_step) == int(batched.diverged_step[0])
    np.testing.assert_allclose(result.losses, batched.losses[0], rtol=1e-5,
                               equal_nan=True)
    np.testing.assert_allclose(result.smoothed_losses,
                               batched.smoothed_losses[0], rtol=1e-5,
                               equal_nan=True)

  def test_two_unhashable_losses_are_not_confused(self, targets):
    # Equal-looking but different callables: no stale compiled program.
    doubled = _Unhashable(lambda w, y: 2.0 * least_squares(w, y))
    plain = _Unhashable(least_squares)
    run = lambda fn: optax_clr.range_test(
        fn, jnp.zeros(D), optax.sgd, targets[0, :10], start_lr=1e-4,
        end_lr=1e-3, num_steps=10)
    first, second = run(plain), run(doubled)
    np.testing.assert_allclose(second.losses[0], 2.0 * first.losses[0],
                               rtol=1e-6)


class TestNegativeLosses:
  """fastai's "4x the best loss" stops at once here; the rise rule does not."""

  @pytest.mark.parametrize('offset', [-4.0, -10.0, -100.0])
  def test_shifted_loss_diverges_after_critical(self, offset):
    # offset -4 crosses zero (the loss starts near 8 and falls to ~0.1);
    # the others are negative throughout.
    shifted = lambda w, y: least_squares(w, y) + offset
    result = optax_clr.range_test(
        shifted, jnp.zeros(D), optax.sgd, noisy_targets(0), start_lr=START_LR,
        end_lr=END_LR, num_steps=NUM_STEPS)
    losses = np.asarray(result.losses)
    smoothed = np.asarray(result.smoothed_losses)
    stop = int(result.diverged_step)
    assert np.nanmin(smoothed) < 0
    assert stop < NUM_STEPS
    assert CRITICAL_LR <= float(result.lrs[stop]) <= 4 * CRITICAL_LR
    assert numpy_diverged_step(losses[: stop + 1], 0.98, 4.0) == stop
    for method in ('steepest', 'valley', 'minimum'):
      assert optax_clr.suggest_lr(result, method=method) < CRITICAL_LR
    assert optax_clr.suggest_clr_bounds(result)[1] < CRITICAL_LR
    if smoothed[0] < 0:
      fastai_stop = next(
          t for t in range(stop + 1)
          if smoothed[t] > 4 * np.min(smoothed[: t + 1]))
      assert fastai_stop == 0  # what the rise rule avoids


def heavy_ball_losses(lr, momenta, targets):
  """optax.sgd with momentum (trace: t = g + m t; w -= lr t), float64."""
  x = X.astype(np.float64)
  w, trace, losses = np.zeros(D), np.zeros(D), []
  for momentum, y in zip(momenta, targets):
    residual = x @ w - y
    losses.append(0.5 * np.mean(residual**2))
    trace = x.T @ residual / N + momentum * trace
    w = w - lr * trace
  return np.array(losses)


def adam_losses(lr, b1, weight_decay, targets, init, b2=0.999, eps=1e-8):
  """optax.adam(w) in float64 with per-step ``b1`` and ``weight_decay``.

  As optax.inject_hyperparams feeds them: update ``t`` (0-based) uses
  ``b1[t]`` for the moment and for the bias correction ``1 - b1[t]**(t+1)``,
  and adds ``weight_decay[t] * w`` (decoupled, AdamW) before scaling by -lr.
  """
  num_steps = len(targets)
  b1 = np.broadcast_to(np.asarray(b1, np.float64), (num_steps,))
  weight_decay = np.broadcast_to(np.asarray(weight_decay, np.float64),
                                 (num_steps,))
  x = X.astype(np.float64)
  w = np.asarray(init, np.float64).copy()
  m, v, losses = np.zeros(D), np.zeros(D), []
  for t, y in enumerate(targets):
    residual = x @ w - y
    losses.append(0.5 * np.mean(residual**2))
    g = x.T @ residual / N
    m = b1[t] * m + (1 - b1[t]) * g
    v = b2 * v + (1 - b2) * g**2
    m_hat = m / (1 - b1[t] ** (t + 1))
    v_hat = v / (1 - b2 ** (t + 1))
    w = w - lr * (m_hat / (np.sqrt(v_hat) + eps) + weight_decay[t] * w)
  return np.array(losses)


class TestHyperparamSweeps:

  def test_momentum_sweep_keeps_the_learning_rate(self):
    num_steps, lr = 40, 0.05
    targets = noisy_targets(2, num_steps)
    result = optax_clr.range_test(
        least_squares, jnp.zeros(D), functools.partial(optax.sgd,
                                                       learning_rate=lr),
        targets, start_lr=0.5, end_lr=0.95, num_steps=num_steps,
        mode='linear', hyperparam='momentum')
    momenta = np.linspace(0.5, 0.95, num_steps)
    np.testing.assert_allclose(result.lrs, momenta, rtol=1e-6)
    assert result.hyperparam == 'momentum'
    assert int(result.diverged_step) == num_steps
    np.testing.assert_allclose(
        result.losses, heavy_ball_losses(lr, momenta, targets), rtol=1e-4)
    # A swept LR instead would not match: the reference tells them apart.
    assert not np.allclose(
        result.losses, heavy_ball_losses(2 * lr, momenta, targets), rtol=1e-2)

  def test_weight_decay_sweep(self):
    num_steps, lr = 20, 0.05
    targets = noisy_targets(3, num_steps)
    init = np.ones(D, np.float32)
    result = optax_clr.range_test(
        least_squares, jnp.asarray(init),
        functools.partial(optax.adamw, learning_rate=lr), targets,
        start_lr=1e-3, end_lr=1.0, num_steps=num_steps,
        hyperparam='weight_decay')
    decays = np.geomspace(1e-3, 1.0, num_steps)
    np.testing.assert_allclose(result.lrs, decays, rtol=1e-5)
    assert result.hyperparam == 'weight_decay'
    assert int(result.diverged_step) == num_steps
    np.testing.assert_allclose(
        result.losses, adam_losses(lr, 0.9, decays, targets, init),
        rtol=1e-5)
    # Had the sweep left optax.adamw's weight decay alone (fixed at its
    # default, or at the ramp's start), the losses would differ.
    for fixed in (1e-4, 1e-3):
      assert not np.allclose(
          result.losses, adam_losses(lr, 0.9, fixed, targets, init),
          rtol=1e-3), fixed

  def test_b1_sweep_of_adam(self):
    num_steps, lr = 40, 0.05
    targets = noisy_targets(4, num_steps)
    result = optax_clr.range_test(
        least_squares, jnp.zeros(D),
        functools.partial(optax.adam, learning_rate=lr), targets,
        start_lr=0.5, end_lr=0.99, num_steps=num_steps, mode='linear',
        hyperparam='b1')
    b1s = np.linspace(0.5, 0.99, num_steps)
    np.testing.assert_allclose(result.lrs, b1s, rtol=1e-6)
    assert result.hyperparam == 'b1'
    assert int(result.diverged_step) == num_steps
    expected = adam_losses(lr, b1s, 0.0, targets, np.zeros(D))
    np.testing.assert_allclose(result.losses, expected, rtol=1e-5)
    # Adam's default b1 = 0.9 throughout gives other losses.
    assert not np.allclose(
        result.losses, adam_losses(lr, 0.9, 0.0, targets, np.zeros(D)),
        rtol=1e-3)

  def test_factory_without_the_hyperparam(self):
    with pytest.raises(ValueError, match="hyperparam='momentum'"):
      optax_clr.range_test(least_squares, jnp.zeros(D), optax.adam,
                           noisy_targets(0, 5), num_steps=5,
                           hyperparam='momentum')

  def test_factory_must_name_the_hyperparam(self):
    # optax.inject_hyperparams binds by name; **kwargs cannot carry it.
    def factory(learning_rate=0.05, **kwargs):
      return optax.sgd(learning_rate, **kwargs)

    with pytest.raises(ValueError, match="hyperparam='momentum'.*'kwargs'"):
      optax_clr.range_test(least_squares, jnp.zeros(D), factory,
                           noisy_targets(2, 5), start_lr=0.5, end_lr=0.95,
                           num_steps=5, mode='linear', hyperparam='momentum')

  def test_unbound_learning_rate_is_explained(self):
    with pytest.raises(TypeError, match='learning_rate'):
      optax_clr.range_test(least_squares, jnp.zeros(D), optax.sgd,
                           noisy_targets(0, 5), start_lr=0.1, end_lr=0.9,
                           num_steps=5, hyperparam='momentum')


class TestAuxAndResult:

  def test_aux_is_stacked_and_masked(self):
    def loss_fn(w, y):
      loss = least_squares(w, y)
      return loss, {'accuracy': jnp.exp(-loss), 'count': jnp.int32(3)}

    result = optax_clr.range_test(
        loss_fn, jnp.zeros(D), optax.sgd, noisy_targets(0), start_lr=START_LR,
        end_lr=END_LR, num_steps=NUM_STEPS, has_aux=True)
    stop = int(result.diverged_step)
    assert stop < NUM_STEPS
    np.testing.assert_allclose(result.aux['accuracy'][: stop + 1],
                               np.exp(-np.asarray(result.losses[: stop + 1])),
                               rtol=1e-5)
    assert np.all(np.isnan(result.aux['accuracy'][stop + 1 :]))
    assert result.aux['count'].dtype == jnp.int32
    assert np.all(result.aux['count'][: stop + 1] == 3)
    assert np.all(result.aux['count'][stop + 1 :] == 0)

  def test_result_is_a_pytree_with_static_metadata(self):
    result = optax_clr.range_test(
        least_squares, jnp.zeros(D), optax.sgd, noisy_targets(0, 10),
        start_lr=0.0, end_lr=0.1, num_steps=10, mode='linear')
    assert isinstance(result, optax_clr.RangeTestResult)
    assert result.aux == {}
    assert len(jax.tree.leaves(result)) == 4
    doubled = jax.tree.map(lambda x: 2 * x, result)
    assert (doubled.mode, doubled.hyperparam) == ('linear', 'learning_rate')
    np.testing.assert_allclose(result.lrs, np.linspace(0.0, 0.1, 10),
                               atol=1e-8)


class TestBadInput:

  @pytest.mark.parametrize('kwargs,error,match', [
      (dict(num_steps=1), ValueError, 'num_steps'),
      (dict(num_steps=2.5), ValueError, 'num_steps'),
      (dict(start_lr=1.0, end_lr=1.0), ValueError, 'end_lr'),
      (dict(start_lr=2.0, end_lr=1.0), ValueError, 'end_lr'),
      (dict(start_lr=0.0), ValueError, 'start_lr'),
      (dict(start_lr=-1.0, mode='linear'), ValueError, 'start_lr'),
      (dict(mode='cubic'), ValueError, 'mode'),
      (dict(smoothing=1.0), ValueError, 'smoothing'),
      (dict(smoothing=-0.1), ValueError, 'smoothing'),
      (dict(divergence_threshold=0.0), ValueError, 'divergence_threshold'),
      (dict(has_aux=1), TypeError, 'has_aux'),
      (dict(hyperparam='not a name'), ValueError, 'hyperparam'),
      (dict(hyperparam='b1'), ValueError, "hyperparam='b1'"),
  ])
  def test_bad_arguments(self, kwargs, error, match):
    kwargs = dict(dict(num_steps=8), **kwargs)
    steps = kwargs['num_steps'] if kwargs['num_steps'] >= 2 else 8
    with pytest.raises(error, match=match):
      optax_clr.range_test(least_squares, jnp.zeros(D), optax.sgd,
                           noisy_targets(0, int(steps)), **kwargs)

  def test_leading_axis_not_num_steps(self):
    with pytest.raises(ValueError, match=r"num_steps=8.*batches\[1\]"):
      optax_clr.range_test(
          lambda w, b: least_squares(w, b[0]), jnp.zeros(D), optax.sgd,
          (noisy_targets(0, 8), np.zeros(7)), num_steps=8)

  def test_not_callable(self):
    with pytest.raises(TypeError, match='loss_fn'):
      optax_clr.range_test(0.5, jnp.zeros(D), optax.sgd, noisy_targets(0, 8),
                           num_steps=8)
    with pytest.raises(TypeError, match='optimizer'):
      optax_clr.range_test(least_squares, jnp.zeros(D), optax.sgd(0.1),
                           noisy_targets(0, 8), num_steps=8)

  @pytest.mark.parametrize('stacked', [True, False])
  def test_non_finite_first_loss(self, stacked):
    params = jnp.full(D, jnp.nan)
    batches = noisy_targets(0, 8)
    with pytest.raises(ValueError, match='loss_fn.*non-finite.*first step'):
      optax_clr.range_test(least_squares, params, optax.sgd,
                           batches if stacked else list(batches), num_steps=8)

  def test_iterable_too_short(self):
    with pytest.raises(ValueError, match='batches ran out after 5.*num_steps'):
      optax_clr.range_test(least_squares, jnp.zeros(D), optax.sgd,
                           iter(noisy_targets(0, 5)), start_lr=1e-4,
                           end_lr=1e-3, num_steps=8)

  def test_non_scalar_loss(self):
    with pytest.raises(TypeError, match='scalar'):
      optax_clr.range_test(lambda w, y: X @ w - y, jnp.zeros(D), optax.sgd,
                           noisy_targets(0, 8), num_steps=8)


def test_digits_example(tmp_path):
  from examples import find_lr

  path = tmp_path / 'digits.png'
  found = find_lr.find_lr(num_steps=60, batch_size=32, sweeps=2,
                          start_lr=1e-3, out=str(path))
  assert path.read_bytes()[:4] == b'\x89PNG'
  result = found['result']
  assert result.losses.shape == (2, 60)
  assert found['diverged_lr'] is not None
  base_lr, max_lr = found['clr_bounds']
  assert 0 < base_lr < max_lr <= found['diverged_lr']
  for method in ('steepest', 'valley', 'minimum'):
    assert 1e-3 <= found[method] < found['diverged_lr']
  # Up to max_lr the loss fell: the median smoothed loss there is lower.
  at_max = int(np.argmin(np.abs(np.asarray(result.lrs[0]) - max_lr)))
  median = np.median(np.asarray(result.smoothed_losses), axis=0)
  assert median[at_max] < median[0]
