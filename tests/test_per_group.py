"""The per-group recipe of docs/per_group.md, against hand-written updates."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_clr

K1, K2 = jax.random.split(jax.random.key(0))
PARAMS = {
    'backbone': {'dense': {'kernel': jax.random.normal(K1, (4, 16)) / 2,
                           'bias': jnp.zeros(16)},
                 'norm': {'scale': jnp.ones(16)}},
    'head': {'kernel': jax.random.normal(K2, (16, 2)) / 4,
             'bias': jnp.zeros(2)},
}
RNG = np.random.default_rng(0)
X = RNG.normal(size=(30, 64, 4)).astype(np.float32)
BATCHES = {'x': X, 'y': np.stack([X.sum(-1), X[..., 0]], -1)}


def labels(params):
  return {group: jax.tree.map(lambda _, g=group: g, subtree)
          for group, subtree in params.items()}


def decay_mask(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


def per_group(schedule, head_mult=10.0, weight_decay=1e-4):
  def group(mult):
    return optax.adamw(lambda t: mult * schedule(t),
                       weight_decay=weight_decay, mask=decay_mask)
  return optax.multi_transform(
      {'backbone': group(1.0), 'head': group(head_mult)}, labels)


def loss_fn(params, batch):
  h = jax.nn.relu(batch['x'] @ params['backbone']['dense']['kernel']
                  + params['backbone']['dense']['bias'])
  h = h * params['backbone']['norm']['scale']
  out = h @ params['head']['kernel'] + params['head']['bias']
  return jnp.mean((out - batch['y']) ** 2)


def schedule(t):
  """A short warmup then constant, written out: 1e-3 * min(1, (t+1)/5)."""
  return 1e-3 * jnp.minimum(1.0, (t + 1) / 5)


def train(tx, params, num_steps):
  state = tx.init(params)
  losses = []
  for t in range(num_steps):
    batch = jax.tree.map(lambda x, t=t: x[t], BATCHES)
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    losses.append(float(loss))
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return np.asarray(losses), params


def test_first_update_has_the_group_rates_and_decay_mask():
  grads = jax.grad(loss_fn)(PARAMS, jax.tree.map(lambda x: x[0], BATCHES))
  tx = per_group(schedule, head_mult=10.0, weight_decay=0.1)
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  lr0, eps = 1e-3 * 1 / 5, 1e-8
  # Adam's first step is g / (|g| + eps); decoupled decay on matrices only.
  for path, update in jax.tree_util.tree_flatten_with_path(updates)[0]:
    group = path[0].key
    g = np.asarray(_at(grads, path), np.float64)
    p = np.asarray(_at(PARAMS, path), np.float64)
    decay = 0.1 * p if p.ndim > 1 else 0.0
    mult = 10.0 if group == 'head' else 1.0
    expected = -mult * lr0 * (g / (np.abs(g) + eps) + decay)
    np.testing.assert_allclose(update, expected, rtol=2e-5, atol=1e-9,
                               err_msg=jax.tree_util.keystr(path))


def _at(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


def test_sweep_over_the_multiplier_equals_separate_loops():
  mults = [1.0, 3.0, 10.0]
  result = optax_clr.sweep(
      loss_fn, PARAMS, lambda hp: per_group(schedule, hp['head_mult']),
      optax_clr.grid(head_mult=mults), BATCHES)
  for row, mult in enumerate(mults):
    losses, _ = train(per_group(schedule, mult), PARAMS, 30)
    np.testing.assert_allclose(result.losses[row], losses, rtol=2e-5)
  # The multiplier matters: a faster head fits this data faster.
  assert float(result.losses[2, -1]) < float(result.losses[0, -1])


def test_range_test_ramps_one_group_only():
  def ramp_head(ramp):
    return optax.multi_transform(
        {'backbone': optax.adam(1e-3), 'head': optax.adam(ramp)}, labels)

  result = optax_clr.range_test(loss_fn, PARAMS, ramp_head, BATCHES,
                                start_lr=1e-5, end_lr=0.1, num_steps=30,
                                divergence_threshold=None)
  ramp = lambda t: 1e-5 * (0.1 / 1e-5) ** (jnp.minimum(t, 29) / 29)
  by_hand = optax.multi_transform(
      {'backbone': optax.adam(1e-3), 'head': optax.adam(ramp)}, labels)
  losses, _ = train(by_hand, PARAMS, 30)
  np.testing.assert_allclose(result.losses, losses, rtol=2e-5)
  # Ramping everything is another curve: the backbone really stayed fixed.
  everything, _ = train(optax.adam(ramp), PARAMS, 30)
  assert not np.allclose(everything, losses, rtol=1e-3)


def test_current_learning_rate_of_each_group():
  def group(mult):
    return optax.inject_hyperparams(optax.adamw)(
        learning_rate=lambda t: mult * schedule(t), weight_decay=1e-4)

  tx = optax.multi_transform({'backbone': group(1.0), 'head': group(10.0)},
                             labels)
  _, state = train_state(tx, 3)
  np.testing.assert_allclose(
      optax_clr.current_learning_rate(state.inner_states['head']),
      10 * 1e-3 * 3 / 5, rtol=1e-6)
  np.testing.assert_allclose(
      optax_clr.current_learning_rate(state.inner_states['backbone']),
      1e-3 * 3 / 5, rtol=1e-6)
  with pytest.raises(ValueError, match=r"holds 2 injected learning rates"):
    optax_clr.current_learning_rate(state)


def train_state(tx, num_steps):
  params, state = PARAMS, tx.init(PARAMS)
  for t in range(num_steps):
    grads = jax.grad(loss_fn)(params, jax.tree.map(lambda x, t=t: x[t],
                                                   BATCHES))
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, state
