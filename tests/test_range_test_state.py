"""range_test with model_state and key equals a hand-written loop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_clr

NUM_STEPS = 12
START_LR, END_LR = 1e-3, 1.0
DIM = 3


def loss_fn(params, state, batch, key):
  """A loss whose state is a running mean of the batches, with noise.

  The state enters the loss (like BatchNorm's statistics) and the key adds
  noise (like dropout), so a wrong threading of either changes the losses.
  """
  noise = 0.1 * jax.random.normal(key, params.shape)
  centre = 0.5 * (batch + state['mean'])
  loss = jnp.sum((params + noise - centre) ** 2)
  new_state = {'mean': 0.9 * state['mean'] + 0.1 * batch,
               'count': state['count'] + 1}
  return (loss, {'centre': jnp.sum(centre)}), new_state


def batches():
  return 1.0 + 0.2 * jnp.sin(jnp.arange(NUM_STEPS * DIM, dtype=jnp.float32)
                              ).reshape(NUM_STEPS, DIM)


def init_state():
  return {'mean': jnp.zeros(DIM), 'count': jnp.zeros([], jnp.int32)}


def flat_loss(params, state, batch, key):
  """``loss_fn`` as ``(loss, (aux, new_state))`` for ``jax.value_and_grad``."""
  (loss, aux), new_state = loss_fn(params, state, batch, key)
  return loss, (aux, new_state)


def reference(params, state, key, batches, momentum=0.0):
  """The documented semantics, step by step in Python (no divergence)."""
  lrs = START_LR * (END_LR / START_LR) ** (np.arange(NUM_STEPS) / (NUM_STEPS - 1))
  velocity = jnp.zeros_like(params)
  losses, centres = [], []
  for t in range(NUM_STEPS):
    step_key = jax.random.fold_in(key, t)
    grad_fn = jax.value_and_grad(flat_loss, has_aux=True)
    (loss, (aux, new_state)), grads = grad_fn(params, state, batches[t],
                                              step_key)
    losses.append(float(loss))
    centres.append(float(aux['centre']))
    velocity = momentum * velocity + grads
    params = params - lrs[t] * velocity
    state = new_state
  return np.array(losses), np.array(centres), state


def run(params, state, key, data, **kwargs):
  return optax_clr.range_test(
      loss_fn, params, optax.sgd, data, start_lr=START_LR, end_lr=END_LR,
      num_steps=NUM_STEPS, divergence_threshold=None, has_aux=True,
      model_state=state, key=key, **kwargs)


@pytest.mark.parametrize('path', ['stacked', 'iterable'])
def test_equals_hand_written_loop(path):
  params, key = jnp.zeros(DIM), jax.random.key(7)
  data = batches() if path == 'stacked' else list(batches())
  result = run(params, init_state(), key, data)
  losses, centres, _ = reference(params, init_state(), key, batches())
  np.testing.assert_allclose(result.losses, losses, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(result.aux['centre'], centres, rtol=2e-5)


def test_state_and_key_change_the_result():
  params, key = jnp.zeros(DIM), jax.random.key(7)
  base = run(params, init_state(), key, batches())
  other_key = run(params, init_state(), jax.random.key(8), batches())
  other_state = run(params, {'mean': jnp.ones(DIM),
                             'count': jnp.zeros([], jnp.int32)},
                    key, batches())
  assert not np.allclose(base.losses, other_key.losses)
  assert not np.allclose(base.losses, other_state.losses)
  again = run(params, init_state(), key, batches())
  np.testing.assert_array_equal(base.losses, again.losses)


@pytest.mark.parametrize('path', ['stacked', 'iterable'])
def test_vmap_over_params_and_keys(path):
  params = jnp.stack([jnp.zeros(DIM), 0.5 * jnp.ones(DIM)])
  keys = jax.random.split(jax.random.key(3), 2)
  data = batches() if path == 'stacked' else list(batches())
  result = jax.vmap(lambda p, k: run(p, init_state(), k, data))(params, keys)
  for i in range(2):
    losses, _, _ = reference(params[i], init_state(), keys[i], batches())
    np.testing.assert_allclose(result.losses[i], losses, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize('hyperparam', ['learning_rate', 'momentum'])
def test_every_hyperparam(hyperparam):
  params, key = jnp.zeros(DIM), jax.random.key(1)
  if hyperparam == 'learning_rate':
    result = run(params, init_state(), key, batches())
    losses, _, _ = reference(params, init_state(), key, batches())
  else:  # Sweep momentum with a fixed rate.
    optimizer = functools.partial(optax.sgd, learning_rate=0.05)
    result = optax_clr.range_test(
        loss_fn, params, optimizer, batches(), start_lr=0.0, end_lr=0.9,
        num_steps=NUM_STEPS, mode='linear', divergence_threshold=None,
        has_aux=True, model_state=init_state(), key=key,
        hyperparam='momentum')
    momenta = np.linspace(0.0, 0.9, NUM_STEPS)
    state, p, velocity, losses = init_state(), params, jnp.zeros(DIM), []
    for t in range(NUM_STEPS):
      grad_fn = jax.value_and_grad(flat_loss, has_aux=True)
      (loss, (_, state)), grads = grad_fn(p, state, batches()[t],
                                           jax.random.fold_in(key, t))
      losses.append(float(loss))
      velocity = momenta[t] * velocity + grads
      p = p - 0.05 * velocity
    losses = np.array(losses)
  np.testing.assert_allclose(result.losses, losses, rtol=2e-5, atol=1e-6)


def test_state_frozen_after_divergence():
  """Once diverged, the state stops counting steps (aux reports it)."""

  def loss_with_state(params, state, batch):
    loss = jnp.sum((params - batch) ** 2)
    return (loss, {'count': state}), state + 1

  num_steps = 40
  result = optax_clr.range_test(
      loss_with_state, jnp.zeros(DIM), optax.sgd, jnp.ones((num_steps, DIM)),
      start_lr=1e-2, end_lr=100.0, num_steps=num_steps, has_aux=True,
      model_state=jnp.zeros([], jnp.int32))
  step = int(result.diverged_step)
  assert 0 < step < num_steps
  counts = np.asarray(result.aux['count'])
  np.testing.assert_array_equal(counts[:step + 1], np.arange(step + 1))
  np.testing.assert_array_equal(counts[step + 1:], 0)  # Integer fill.
  assert np.all(np.isnan(np.asarray(result.losses)[step + 1:]))


def test_without_state_or_key_unchanged():
  loss = lambda w, b: jnp.sum((w - b) ** 2)
  result = optax_clr.range_test(
      loss, jnp.zeros(DIM), optax.sgd, batches(), start_lr=START_LR,
      end_lr=END_LR, num_steps=NUM_STEPS, divergence_threshold=None)
  params, losses = np.zeros(DIM), []
  lrs = START_LR * (END_LR / START_LR) ** (np.arange(NUM_STEPS) / (NUM_STEPS - 1))
  for t, batch in enumerate(np.asarray(batches())):
    losses.append(np.sum((params - batch) ** 2))
    params = params - lrs[t] * 2 * (params - batch)
  np.testing.assert_allclose(result.losses, losses, rtol=1e-5)


def test_wrong_return_structure_named():
  bad = lambda params, state, batch: jnp.sum(params)  # forgot the state
  with pytest.raises(TypeError, match='new_model_state'):
    optax_clr.range_test(bad, jnp.zeros(DIM), optax.sgd, batches(),
                         num_steps=NUM_STEPS, model_state=jnp.zeros([]))


def test_optimizer_must_return_a_transformation():
  with pytest.raises(TypeError, match='optimizer must return'):
    optax_clr.range_test(lambda w, b: jnp.sum(w), jnp.zeros(DIM),
                         lambda lr: (lr, 'not a transformation'), batches(),
                         num_steps=NUM_STEPS)


def test_python_scalars_in_aux():
  loss = lambda w, b: (jnp.sum((w - b) ** 2), {'accuracy': 0.5, 'n': 3})
  result = optax_clr.range_test(
      loss, jnp.zeros(DIM), optax.sgd, batches(), num_steps=NUM_STEPS,
      start_lr=1e-3, end_lr=0.1, has_aux=True)
  np.testing.assert_array_equal(result.aux['accuracy'], 0.5)
  np.testing.assert_array_equal(result.aux['n'], 3)


def test_vmapped_nan_first_loss_names_the_sweep():
  loss = lambda w, b: jnp.sum((w - b) ** 2)
  params = jnp.stack([jnp.zeros(DIM), jnp.full(DIM, jnp.nan), jnp.zeros(DIM)])
  result = jax.vmap(lambda p: optax_clr.range_test(
      loss, p, optax.sgd, batches(), num_steps=NUM_STEPS))(params)
  with pytest.raises(ValueError, match=r'sweep\(s\) 1 of 3'):
    optax_clr.suggest_lr(result)
