"""optax_clr.sweep equals K hand-written training loops; grid; bad input."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_clr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS, DIM = 10, 3


def loss_fn(params, batch):
  return jnp.sum((params['w'] - batch) ** 2) + 0.1 * jnp.sum(params['w'] ** 4)


def stateful_loss(params, state, batch, key):
  noise = 0.05 * jax.random.normal(key, batch.shape)
  target = 0.5 * (batch + noise + state)
  loss = jnp.sum((params['w'] - target) ** 2)
  return (loss, {'target': jnp.sum(target)}), 0.8 * state + 0.2 * batch


def triangular_sgd(hp):
  return optax.sgd(optax_clr.triangular_schedule(
      hp['base_lr'], hp['max_lr'], hp['step_size']), momentum=0.5)


def np_triangular(base, peak, step_size, t):
  """Smith's triangular policy in NumPy."""
  cycle = np.floor(1 + t / (2 * step_size))
  x = np.abs(t / step_size - 2 * cycle + 1)
  return base + (peak - base) * max(0.0, 1 - x)


def reference(params, hp, batches, *, state=None, key=None):
  """One model trained by hand: SGD with momentum 0.5 on the triangular CLR."""
  w = np.asarray(params['w'], np.float64)
  velocity = np.zeros_like(w)
  losses = []
  for t in range(batches.shape[0]):
    batch = np.asarray(batches[t], np.float64)
    if state is None:
      losses.append(np.sum((w - batch) ** 2) + 0.1 * np.sum(w ** 4))
      grad = 2 * (w - batch) + 0.4 * w ** 3
    else:
      noise = 0.05 * np.asarray(
          jax.random.normal(jax.random.fold_in(key, t), batch.shape))
      target = 0.5 * (batch + noise + state)
      losses.append(np.sum((w - target) ** 2))
      grad = 2 * (w - target)
      state = 0.8 * state + 0.2 * batch
    lr = np_triangular(float(hp['base_lr']), float(hp['max_lr']),
                       int(hp['step_size']), t)
    velocity = 0.5 * velocity + grad
    w = w - lr * velocity
  return np.array(losses), w, state


def data(seed):
  rng = np.random.default_rng(seed)
  return jnp.asarray(1 + 0.3 * rng.standard_normal((NUM_STEPS, DIM)),
                     jnp.float32)


HP = optax_clr.grid(base_lr=[0.01, 0.05], max_lr=[0.1, 0.3], step_size=[2, 3])


def model_hp(k):
  return {name: values[k] for name, values in HP.items()}


def test_grid_is_the_c_order_product():
  hp = optax_clr.grid(a=[1.0, 2.0], b=[10, 20, 30])
  assert hp['a'].tolist() == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
  assert hp['b'].tolist() == [10, 20, 30, 10, 20, 30]
  assert hp['b'].dtype.kind == 'i'
  assert len(HP['max_lr']) == 8


def test_shared_params_and_batches():
  params, batches = {'w': jnp.zeros(DIM)}, data(0)
  result = optax_clr.sweep(loss_fn, params, triangular_sgd, HP, batches)
  assert result.losses.shape == (8, NUM_STEPS)
  for k in range(8):
    losses, w, _ = reference(params, model_hp(k), batches)
    np.testing.assert_allclose(result.losses[k], losses, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.params['w'][k], w, rtol=1e-4, atol=1e-5)


def test_stacked_params_and_batches():
  hp = {name: values[:3] for name, values in HP.items()}
  params = {'w': jnp.asarray([[0.0] * DIM, [0.5] * DIM, [-0.5] * DIM])}
  batches = jnp.stack([data(s) for s in range(3)])
  result = optax_clr.sweep(loss_fn, params, triangular_sgd, hp, batches,
                           params_axis=0, batches_axis=0)
  for k in range(3):
    losses, w, _ = reference({'w': params['w'][k]},
                             {n: v[k] for n, v in hp.items()}, batches[k])
    np.testing.assert_allclose(result.losses[k], losses, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.params['w'][k], w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('stacked_keys', [False, True])
def test_model_state_and_key(stacked_keys):
  hp = {name: values[:2] for name, values in HP.items()}
  key = jax.random.key(5)
  keys = jax.random.split(key, 2) if stacked_keys else key
  state = jnp.full(DIM, 0.3)
  batches = data(1)
  result = optax_clr.sweep(
      stateful_loss, {'w': jnp.zeros(DIM)}, triangular_sgd, hp, batches,
      model_state=state, key=keys, has_aux=True)
  for k in range(2):
    model_key = keys[k] if stacked_keys else key
    losses, w, final_state = reference(
        {'w': jnp.zeros(DIM)}, {n: v[k] for n, v in hp.items()}, batches,
        state=np.asarray(state, np.float64), key=model_key)
    np.testing.assert_allclose(result.losses[k], losses, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.model_state[k], final_state, rtol=1e-5)
    np.testing.assert_allclose(result.params['w'][k], w, rtol=1e-4, atol=1e-5)
  assert result.aux['target'].shape == (2, NUM_STEPS)
  if stacked_keys:  # Different keys, different noise.
    assert not np.allclose(result.aux['target'][0], result.aux['target'][1])


def test_continued_in_pieces_equals_one_run_by_hand():
  """Two calls, the second from the first's states, equal the reference."""
  hp = {name: values[:2] for name, values in HP.items()}
  key, state, batches = jax.random.key(3), jnp.full(DIM, 0.3), data(2)
  first = optax_clr.sweep(
      stateful_loss, {'w': jnp.zeros(DIM)}, triangular_sgd, hp, batches[:4],
      model_state=state, key=key, has_aux=True)
  rest = optax_clr.sweep(
      stateful_loss, first.params, triangular_sgd, hp, batches[4:],
      params_axis=0, model_state=first.model_state, key=key, has_aux=True,
      opt_state=first.opt_state, first_step=4)
  for k in range(2):
    losses, w, _ = reference(
        {'w': jnp.zeros(DIM)}, {n: v[k] for n, v in hp.items()}, batches,
        state=np.asarray(state, np.float64), key=key)
    joined = np.concatenate([first.losses[k], rest.losses[k]])
    np.testing.assert_allclose(joined, losses, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rest.params['w'][k], w, rtol=1e-4, atol=1e-5)


def test_evaluations():
  params, batches = {'w': jnp.zeros(DIM)}, data(2)
  hp = {name: values[:2] for name, values in HP.items()}
  result = optax_clr.sweep(
      loss_fn, params, triangular_sgd, hp, batches,
      eval_fn=lambda p, s: {'norm': jnp.sum(p['w'] ** 2), 'none': s is None},
      eval_every=4)
  np.testing.assert_array_equal(result.eval_steps, [4, 8])
  assert result.evals['norm'].shape == (2, 2)
  for k in range(2):
    for e, steps in enumerate(result.eval_steps):
      _, w, _ = reference(params, {n: v[k] for n, v in hp.items()},
                          batches[:steps])
      np.testing.assert_allclose(result.evals['norm'][k, e], np.sum(w ** 2),
                                 rtol=1e-4)
  assert result.losses.shape == (2, NUM_STEPS)  # The 2 steps after included.


def test_new_values_do_not_retrace():
  traces = []

  def counted_loss(params, batch):
    traces.append(1)
    return loss_fn(params, batch)

  params, batches = {'w': jnp.zeros(DIM)}, data(0)
  first = optax_clr.sweep(counted_loss, params, triangular_sgd, HP, batches)
  count = len(traces)
  other = {name: values[::-1].copy() for name, values in HP.items()}
  second = optax_clr.sweep(counted_loss, params, triangular_sgd, other,
                           batches)
  assert len(traces) == count
  np.testing.assert_allclose(second.losses[::-1], first.losses, rtol=1e-6)


def test_cache_does_not_keep_closures_alive():
  import gc  # pylint: disable=g-import-not-at-top
  import weakref  # pylint: disable=g-import-not-at-top
  big = np.ones(1000, np.float32)

  def make_loss():
    captured = jnp.asarray(big)
    return lambda p, b: jnp.sum((p['w'] - b) ** 2) + 0 * captured[0]

  refs = []
  for _ in range(3):
    fn = make_loss()
    refs.append(weakref.ref(fn))
    optax_clr.sweep(fn, {'w': jnp.zeros(DIM)}, triangular_sgd, HP, data(0))
    optax_clr.range_test(fn, {'w': jnp.zeros(DIM)}, optax.sgd, data(0),
                         num_steps=NUM_STEPS)
    del fn
  gc.collect()
  assert all(ref() is None for ref in refs)


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(hyperparams={'base_lr': [0.1, 0.2], 'max_lr': [0.3],
                       'step_size': [2, 2]}), ValueError, 'same length'),
    (dict(hyperparams={'base_lr': [0.1], 'max_lr': [0.3]}), ValueError,
     "hp\\['step_size'\\]"),
    (dict(params_axis=0), ValueError, 'params_axis=0'),
    (dict(optimizer=lambda hp: 'sgd'), TypeError, 'GradientTransformation'),
    (dict(batches_axis=0), ValueError, 'batches_axis=0'),
    (dict(hyperparams=[0.1, 0.2]), TypeError, 'hyperparams'),
    (dict(params_axis=1), ValueError, 'params_axis'),
    (dict(eval_every=3), ValueError, 'eval_fn'),
    (dict(loss_fn='loss'), TypeError, 'loss_fn'),
    (dict(first_step=-1), ValueError, 'first_step'),
    (dict(opt_state={'count': jnp.zeros(3)}), ValueError,
     'opt_state needs every leaf of opt_state to have a leading axis of K=8'),
])
def test_bad_input_is_named_before_compiling(kwargs, error, match):
  traces = []

  def counted_loss(params, batch):
    traces.append(1)
    return loss_fn(params, batch)

  args = dict(loss_fn=counted_loss, params={'w': jnp.zeros((2, DIM + 1))},
              optimizer=triangular_sgd, hyperparams=HP, batches=data(0))
  if 'params_axis' in kwargs:
    args['params'] = {'w': jnp.zeros((3, DIM))}
  args.update(kwargs)
  with pytest.raises(error, match=match):
    optax_clr.sweep(args.pop('loss_fn'), args.pop('params'),
                    args.pop('optimizer'), args.pop('hyperparams'),
                    args.pop('batches'), **args)
  assert not traces


def _stacked_state(tx, params, num_models):
  state = tx.init(params)
  return jax.tree.map(lambda x: jnp.stack([x] * num_models), state)


@pytest.mark.parametrize('state, match', [
    # Adam's state for an SGD-with-momentum sweep: another structure.
    (lambda: _stacked_state(optax.adam(0.1), {'w': jnp.zeros(DIM)}, 2),
     'not a state of optimizer'),
    # The right optimizer, other params: the shapes differ.
    (lambda: _stacked_state(triangular_sgd({'base_lr': 0.1, 'max_lr': 0.3,
                                            'step_size': 2}),
                            {'w': jnp.zeros(DIM + 2)}, 2),
     r"opt_state.*has the shape \(5,\) per model.*\(3,\)"),
])
def test_opt_state_of_another_optimizer_is_refused(state, match):
  traces = []

  def counted_loss(params, batch):
    traces.append(1)
    return loss_fn(params, batch)

  with pytest.raises(ValueError, match=match):
    optax_clr.sweep(counted_loss, {'w': jnp.zeros(DIM)}, triangular_sgd,
                    {'base_lr': [0.1, 0.2], 'max_lr': [0.3, 0.3],
                     'step_size': [2, 2]}, data(0), opt_state=state(),
                    first_step=4)
  assert not traces


MULTI_DEVICE = textwrap.dedent('''
    import json, sys
    import jax, jax.numpy as jnp, numpy as np, optax
    import optax_clr
    assert jax.local_device_count() == 4, jax.local_device_count()
    sys.path.insert(0, {tests!r})
    from test_sweep_api import loss_fn, triangular_sgd, data
    hp = optax_clr.grid(base_lr=[0.01, 0.05], max_lr=[0.1, 0.2, 0.3],
                        step_size=[3])
    params = {{'w': jnp.linspace(-1, 1, 6 * 3).reshape(6, 3)}}
    result = optax_clr.sweep(loss_fn, params, triangular_sgd, hp, data(0),
                             params_axis=0)
    assert result.losses.shape == (6, 10), result.losses.shape
    print(json.dumps({{'losses': np.asarray(result.losses).tolist(),
                      'w': np.asarray(result.params['w']).tolist()}}))
''')


def test_four_devices_with_padding_equal_one_device():
  """K=6 on 4 CPU devices (padded to 8 and trimmed) equals one device."""
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=4')
  script = MULTI_DEVICE.format(tests=os.path.join(REPO, 'tests'))
  out = subprocess.run([sys.executable, '-c', script], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  four = json.loads(out.stdout.strip().splitlines()[-1])
  hp = optax_clr.grid(base_lr=[0.01, 0.05], max_lr=[0.1, 0.2, 0.3],
                      step_size=[3])
  params = {'w': jnp.linspace(-1, 1, 6 * 3).reshape(6, 3)}
  one = optax_clr.sweep(loss_fn, params, triangular_sgd, hp, data(0),
                        params_axis=0)
  np.testing.assert_allclose(four['losses'], one.losses, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(four['w'], one.params['w'], rtol=1e-6, atol=1e-7)


def test_learning_rates_recorded_from_inject_hyperparams():
  hp = {name: values[:2] for name, values in HP.items()}

  def injected(hp):
    return optax.inject_hyperparams(optax.sgd)(
        learning_rate=optax_clr.triangular_schedule(
            hp['base_lr'], hp['max_lr'], hp['step_size']), momentum=0.5)

  params, batches = {'w': jnp.zeros(DIM)}, data(0)
  result = optax_clr.sweep(loss_fn, params, injected, hp, batches)
  for k in range(2):
    expected = [np_triangular(float(hp['base_lr'][k]), float(hp['max_lr'][k]),
                              int(hp['step_size'][k]), t)
                for t in range(NUM_STEPS)]
    np.testing.assert_allclose(result.learning_rates[k], expected, rtol=1e-6)
    losses, _, _ = reference(params, {n: v[k] for n, v in hp.items()},
                             batches)
    np.testing.assert_allclose(result.losses[k], losses, rtol=1e-4, atol=1e-5)
  plain = optax_clr.sweep(loss_fn, params, triangular_sgd, hp, batches)
  assert plain.learning_rates is None


def test_shared_data_equals_materialized_batches():
  pool = data(4)  # [NUM_STEPS, DIM], indexed by the batches below.
  order = jnp.asarray(np.random.default_rng(0).permutation(NUM_STEPS),
                      jnp.int32)

  def indexed_loss(params, index, data):
    return loss_fn(params, data['pool'][index])

  params = {'w': jnp.zeros(DIM)}
  by_index = optax_clr.sweep(
      indexed_loss, params, triangular_sgd, HP, order, data={'pool': pool},
      eval_fn=lambda p, s, data: jnp.sum(data['pool']) + 0 * jnp.sum(p['w']))
  direct = optax_clr.sweep(loss_fn, params, triangular_sgd, HP, pool[order])
  np.testing.assert_allclose(by_index.losses, direct.losses, rtol=1e-6)
  np.testing.assert_allclose(by_index.evals[:, 0], float(jnp.sum(pool)),
                             rtol=1e-6)


def test_seeds_only_sweep_without_hyperparameters():
  params = {'w': jnp.asarray([[0.0] * DIM, [0.5] * DIM])}
  fixed = {name: values[0] for name, values in HP.items()}
  result = optax_clr.sweep(loss_fn, params,
                           lambda hp: triangular_sgd(fixed), {}, data(0),
                           params_axis=0)
  for k in range(2):
    losses, _, _ = reference({'w': params['w'][k]}, fixed, data(0))
    np.testing.assert_allclose(result.losses[k], losses, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match='params_axis=0 or batches_axis=0'):
    optax_clr.sweep(loss_fn, {'w': jnp.zeros(DIM)},
                    lambda hp: triangular_sgd(fixed), {}, data(0))


def test_a_bad_value_in_any_row_is_refused_with_its_model():
  hp = {name: np.array(values) for name, values in HP.items()}
  hp['max_lr'][5] = -1.0  # below base_lr, and negative
  with pytest.raises(ValueError, match=r'model 5 .*max_lr'):
    optax_clr.sweep(loss_fn, {'w': jnp.zeros(DIM)}, triangular_sgd, hp,
                    data(0))
