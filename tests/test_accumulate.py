"""range_test(..., accumulation_steps=A) against loops with optax.MultiSteps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_clr

N, A = 12, 3


def ramp(start, end, num_steps):
  """The exponential ramp, written out: start * (end / start)**(t / (n-1))."""
  return lambda t: start * (end / start) ** (
      jnp.minimum(t, num_steps - 1) / (num_steps - 1))


def loss_fn(w, batch):
  return jnp.mean((batch['x'] @ w - batch['y']) ** 2)


def data(num_batches, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(num_batches, 8, 4)).astype(np.float32)
  y = x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32)
  return {'x': x, 'y': y + 0.1 * rng.normal(size=y.shape).astype(np.float32)}


def multisteps_loop(loss_fn, params, batches, optimizer, start, end,
                    num_steps, every, smoothing=0.98, threshold=None):
  """A training loop with optax.MultiSteps; the range test's rule by hand.

  Returns the mean loss of every optimizer step (before its update), the
  diverged step and the parameters; stops updating at divergence.
  """
  tx = optax.MultiSteps(optimizer(ramp(start, end, num_steps)),
                        every_k_schedule=every)
  state = tx.init(params)
  losses, average, first, best, diverged = [], 0.0, None, np.inf, num_steps
  for t in range(num_steps):
    step_losses = []
    micro_params = params
    for j in range(every):
      batch = jax.tree.map(lambda x, i=t * every + j: x[i], batches)
      loss, grads = jax.value_and_grad(loss_fn)(micro_params, batch)
      step_losses.append(float(loss))
      updates, state = tx.update(grads, state, micro_params)
      micro_params = optax.apply_updates(micro_params, updates)
    loss = float(np.mean(step_losses))
    losses.append(loss)
    average = smoothing * average + (1 - smoothing) * loss
    smoothed = average / (1 - smoothing ** (t + 1))
    first = smoothed if first is None else first
    best = min(best, smoothed)
    scale = max(abs(first), first - best, 1e-8)
    bad = not np.isfinite(loss) or (
        threshold is not None and smoothed - best > threshold * scale)
    if bad:
      diverged = t
      break
    params = micro_params
  return np.asarray(losses), diverged, params


class TestAgainstMultiSteps:

  @pytest.mark.parametrize('optimizer', [optax.sgd, optax.adam],
                           ids=['sgd', 'adam'])
  def test_losses_and_rates(self, optimizer):
    batches = data(N * A)
    w = jnp.zeros(4)
    result = optax_clr.range_test(loss_fn, w, optimizer, batches,
                                  start_lr=1e-3, end_lr=0.05, num_steps=N,
                                  accumulation_steps=A,
                                  divergence_threshold=None)
    losses, diverged, _ = multisteps_loop(loss_fn, w, batches, optimizer,
                                          1e-3, 0.05, N, A)
    assert diverged == N == int(result.diverged_step)
    np.testing.assert_allclose(result.losses, losses, rtol=2e-5)
    np.testing.assert_allclose(result.lrs, ramp(1e-3, 0.05, N)(np.arange(N)),
                               rtol=1e-5)

  def test_divergence_found_at_the_same_step(self):
    batches = data(40 * 2)
    result = optax_clr.range_test(loss_fn, jnp.zeros(4), optax.sgd, batches,
                                  start_lr=1e-3, end_lr=20.0, num_steps=40,
                                  accumulation_steps=2)
    losses, diverged, _ = multisteps_loop(loss_fn, jnp.zeros(4), batches,
                                          optax.sgd, 1e-3, 20.0, 40, 2,
                                          threshold=4.0)
    assert int(result.diverged_step) == diverged < 40
    np.testing.assert_allclose(result.losses[:diverged + 1], losses,
                               rtol=2e-5)
    assert np.all(np.isnan(result.losses[diverged + 1:]))

  def test_iterable_equals_stacked(self):
    batches = data(N * A)
    kwargs = dict(start_lr=1e-3, end_lr=0.1, num_steps=N, accumulation_steps=A)
    stacked = optax_clr.range_test(loss_fn, jnp.zeros(4), optax.adam, batches,
                                   **kwargs)
    listed = [jax.tree.map(lambda x, i=i: x[i], batches) for i in range(N * A)]
    fed = optax_clr.range_test(loss_fn, jnp.zeros(4), optax.adam,
                               iter(listed), **kwargs)
    np.testing.assert_allclose(fed.losses, stacked.losses, rtol=1e-6)

  def test_model_state_key_and_aux_per_microbatch(self):
    # A running mean of the inputs (BatchNorm-like), noise from the key,
    # and an aux averaged over the microbatches.
    def stateful_loss(w, mean, batch, key):
      noise = 0.01 * jax.random.normal(key, batch['x'].shape)
      x = batch['x'] + noise - mean
      loss = jnp.mean((x @ w - batch['y']) ** 2)
      new_mean = 0.9 * mean + 0.1 * jnp.mean(batch['x'], axis=0)
      return (loss, {'half': loss / 2}), new_mean

    batches = data(N * A)
    key = jax.random.key(3)
    result = optax_clr.range_test(
        stateful_loss, jnp.zeros(4), optax.sgd, batches, start_lr=1e-3,
        end_lr=0.05, num_steps=N, accumulation_steps=A, has_aux=True,
        model_state=jnp.zeros(4), key=key, divergence_threshold=None)

    tx = optax.MultiSteps(optax.sgd(ramp(1e-3, 0.05, N)), every_k_schedule=A)
    w, mean, state = jnp.zeros(4), jnp.zeros(4), None
    state = tx.init(w)
    losses, halves = [], []
    for t in range(N):
      step_losses = []
      for j in range(A):
        batch = jax.tree.map(lambda x, i=t * A + j: x[i], batches)
        micro_key = jax.random.fold_in(key, t * A + j)
        objective = lambda w, batch=batch, mean=mean, k=micro_key: (
            lambda out: (out[0][0], (out[0][1], out[1])))(
                stateful_loss(w, mean, batch, k))
        (loss, (aux, new_mean)), grads = jax.value_and_grad(
            objective, has_aux=True)(w)
        step_losses.append(float(loss))
        halves.append(float(aux['half']))
        updates, state = tx.update(grads, state, w)
        w, mean = optax.apply_updates(w, updates), new_mean
      losses.append(np.mean(step_losses))
    np.testing.assert_allclose(result.losses, losses, rtol=2e-5)
    np.testing.assert_allclose(result.aux['half'],
                               np.reshape(halves, (N, A)).mean(1), rtol=2e-5)

  def test_nnx_module_against_an_nnx_optimizer_with_multi_steps(self):
    nnx = pytest.importorskip('flax.nnx')
    batches = data(N * A)

    def nnx_loss(model, batch):
      return jnp.mean((model(batch['x'])[..., 0] - batch['y']) ** 2)

    model = nnx.Linear(4, 1, rngs=nnx.Rngs(0))
    result = optax_clr.nnx.range_test(
        model, optax.adam, nnx_loss, batches, start_lr=1e-3, end_lr=0.05,
        num_steps=N, accumulation_steps=A, divergence_threshold=None)

    copy = nnx.clone(model)
    optimizer = nnx.Optimizer(copy, optax.MultiSteps(
        optax.adam(ramp(1e-3, 0.05, N)), every_k_schedule=A), wrt=nnx.Param)
    losses = []
    for t in range(N):
      step_losses = []
      for j in range(A):
        batch = jax.tree.map(lambda x, i=t * A + j: x[i], batches)
        loss, grads = nnx.value_and_grad(nnx_loss)(copy, batch)
        step_losses.append(float(loss))
        optimizer.update(copy, grads)
      losses.append(np.mean(step_losses))
    np.testing.assert_allclose(result.losses, losses, rtol=2e-5)


class TestRefuses:

  @pytest.mark.parametrize('value,error,message', [
      (0, ValueError, 'accumulation_steps must be at least 1, got 0'),
      (1.5, ValueError, 'accumulation_steps must be a whole number'),
      ('2', TypeError, 'accumulation_steps must be a real number'),
  ])
  def test_bad_accumulation_steps(self, value, error, message):
    with pytest.raises(error, match=message):
      optax_clr.range_test(loss_fn, jnp.zeros(4), optax.sgd, data(N),
                           num_steps=N, accumulation_steps=value)

  def test_batches_of_num_steps_only(self):
    with pytest.raises(ValueError, match=r'leading axis of length num_steps'
                       r' \* accumulation_steps = 12 \* 3 = 36'):
      optax_clr.range_test(loss_fn, jnp.zeros(4), optax.sgd, data(N),
                           num_steps=N, accumulation_steps=3)

  def test_iterable_runs_out(self):
    listed = [jax.tree.map(lambda x, i=i: x[i], data(N)) for i in range(N)]
    with pytest.raises(ValueError, match='batches ran out after 12 batches;'
                       '.*times accumulation_steps=3'):
      optax_clr.range_test(loss_fn, jnp.zeros(4), optax.sgd, listed,
                           num_steps=N, accumulation_steps=3)
