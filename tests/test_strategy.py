"""strategy="scan" and "loop" train alike, as a hand-written optax loop does.

The reference is independent of both strategies: a Python loop of
``jax.value_and_grad`` and ``optax`` updates, one model at a time. Between
the strategies, results agree to float32 rounding (the same step, compiled
in different programs), and progress bars show the same counts.
"""

import io
import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_clr
from optax_clr import _range_test
from optax_clr import _strategy
from optax_clr import _sweep
from tests import test_sweep_api as api
from tests import tiny_models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL = 1e-6  # Between strategies: float32 rounding of one step's programs.
STRATEGIES = ('scan', 'loop')
RANGE = dict(num_steps=24, start_lr=1e-3, end_lr=30.0)


def hand_loop(loss_fn, params, tx, batches, *, model_state=None, key=None,
              has_aux=False, first_step=0, opt_state=None):
  """A user's training loop: ``(losses, params, model_state, opt_state)``."""
  opt_state = tx.init(params) if opt_state is None else opt_state
  losses = []
  for t in range(len(batches)):
    kwargs = {} if key is None else {'key': jax.random.fold_in(
        key, first_step + t)}
    if model_state is None:
      objective = lambda p, b=batches[t]: (loss_fn(p, b, **kwargs), None)
    else:
      objective = lambda p, b=batches[t]: loss_fn(p, model_state, b, **kwargs)
    (output, new_state), grads = jax.value_and_grad(
        objective, has_aux=True)(params)
    losses.append(output[0] if has_aux else output)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    model_state = new_state if model_state is not None else None
  return np.asarray(losses), params, model_state, opt_state


def assert_trees_close(a, b, rtol=RTOL, atol=0.0):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):  # NNX's RNG state.
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol,
                               atol=atol)


def assert_results_equal(a, b):
  """Every field of two results, to float32 rounding."""
  for name in a._fields:
    x, y = getattr(a, name), getattr(b, name)
    if isinstance(x, str):
      assert x == y, name
    else:
      assert_trees_close(x, y, atol=1e-7)


def sweep(strategy, **kwargs):
  args = dict(loss_fn=api.loss_fn, params={'w': jnp.zeros(api.DIM)},
              optimizer=api.triangular_sgd, hyperparams=api.HP,
              batches=api.data(0))
  args.update(kwargs)
  return optax_clr.sweep(**args, strategy=strategy)


conv_loss, conv_params = tiny_models.conv_loss, tiny_models.conv_params


def conv_images(num_steps=4):
  rng = np.random.default_rng(1)
  return jnp.asarray(rng.normal(size=(num_steps, 2, 5, 5, 1)), jnp.float32)


def range_loss(w, batch):
  return jnp.mean((batch @ w - 1.0) ** 2)


def range_batches(accumulation_steps=1):
  rng = np.random.default_rng(3)
  return np.asarray(rng.normal(size=(24 * accumulation_steps, 4, 3)),
                    np.float32)


class TestSweep:

  @pytest.mark.parametrize('strategy', STRATEGIES)
  def test_equals_a_hand_written_optax_loop(self, strategy):
    result = sweep(strategy)
    batches = np.asarray(api.data(0))
    for k in range(len(api.HP['max_lr'])):
      tx = api.triangular_sgd(api.model_hp(k))
      losses, params, _, opt_state = hand_loop(
          api.loss_fn, {'w': jnp.zeros(api.DIM)}, tx, batches)
      np.testing.assert_allclose(result.losses[k], losses, rtol=1e-5)
      assert_trees_close(result.params['w'][k], params['w'], rtol=1e-5)
      assert_trees_close(jax.tree.map(lambda x, k=k: x[k], result.opt_state),
                         opt_state, rtol=1e-5, atol=1e-7)

  @pytest.mark.parametrize('kwargs', [
      {},
      {'chunk_size': 3},  # Passes of 3 models, the last one padded.
      {'eval_every': 3, 'chunk_size': 8},
      {'eval_every': 5},
  ], ids=['default', 'chunks', 'evals', 'evals_one_at_a_time'])
  def test_strategies_agree(self, kwargs):
    if 'eval_every' in kwargs:
      kwargs['eval_fn'] = lambda p, _: {'norm': jnp.sum(p['w'] ** 2),
                                        'w': p['w']}
    scan, loop = (sweep(s, **kwargs) for s in STRATEGIES)
    assert_results_equal(scan, loop)
    if 'eval_every' in kwargs:
      assert loop.evals['w'].shape == (8, 10 // kwargs['eval_every'],
                                       api.DIM)

  def test_stacked_state_keys_aux_and_data(self):
    hp = {name: values[:3] for name, values in api.HP.items()}
    params = {'w': jnp.linspace(-1, 1, 3 * api.DIM).reshape(3, api.DIM)}
    batches = jnp.stack([api.data(s) for s in range(3)])
    keys = jax.random.split(jax.random.key(5), 3)

    def loss_fn(params, state, batch, key, data):
      (loss, aux), state = api.stateful_loss(params, state, batch, key)
      return (loss * data, aux), state

    results = [sweep(s, loss_fn=loss_fn, params=params, hyperparams=hp,
                     batches=batches, params_axis=0, batches_axis=0,
                     model_state=jnp.full((3, api.DIM), 0.3), key=keys,
                     has_aux=True, data=jnp.asarray(2.0),
                     eval_fn=lambda p, s, data: jnp.sum(s) * data)
               for s in STRATEGIES]
    assert_results_equal(*results)
    assert results[1].aux['target'].shape == (3, api.NUM_STEPS)

  @pytest.mark.parametrize('first', STRATEGIES)
  def test_continuation_in_either_strategy(self, first):
    """Half in one strategy, the rest in the other: one whole run."""
    whole = sweep('scan')
    half = api.NUM_STEPS // 2
    batches = api.data(0)
    second = {'scan': 'loop', 'loop': 'scan'}[first]
    a = sweep(first, batches=batches[:half])
    b = sweep(second, batches=batches[half:], params=a.params, params_axis=0,
              opt_state=a.opt_state, first_step=half)
    np.testing.assert_allclose(np.concatenate([a.losses, b.losses], axis=1),
                               whole.losses, rtol=1e-5)
    assert_trees_close(b.params, whole.params, rtol=1e-5)
    assert_trees_close(b.opt_state, whole.opt_state, rtol=1e-5, atol=1e-7)

  def test_mesh_with_a_data_axis_and_gather(self):
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1),
                             ('models', 'data'))
    results = [sweep(s, batches=jnp.stack([api.data(0)] * 2, axis=1),
                     loss_fn=lambda p, b: jnp.mean(
                         jax.vmap(api.loss_fn, (None, 0))(p, b)),
                     mesh=mesh, gather=True) for s in STRATEGIES]
    assert_results_equal(*results)
    assert results[1].params['w'].sharding.is_fully_replicated

  @pytest.mark.parametrize('kwargs, counts', [
      # Two passes of 10 steps in blocks of 3 (see test_scale).
      ({'chunk_size': 4}, {0, 3, 6, 9, 10, 13, 16, 19, 20}),
      # Evaluations every 2 steps: interval ends crossing a multiple of 3.
      ({'chunk_size': 4, 'eval_every': 2}, {0, 4, 6, 10, 14, 16, 20}),
  ])
  def test_progress_counts_are_the_scan_s(self, kwargs, counts):
    if 'eval_every' in kwargs:
      kwargs['eval_fn'] = lambda p, _: jnp.sum(p['w'])
    shown = {}
    for strategy in STRATEGIES:
      out = io.StringIO()
      sweep(strategy, progress={'file': out, 'every': 3, 'mininterval': 0,
                                'miniters': 1}, **kwargs)
      shown[strategy] = {int(n) for n in re.findall(r'(\d+)/20',
                                                    out.getvalue())}
    assert shown['loop'] == shown['scan'] == counts, shown

  def test_auto_drives_convolutions_from_the_host_on_cpu(self, monkeypatch):
    ran = []
    run_loop = _sweep._run_loop  # pylint: disable=protected-access
    monkeypatch.setattr(_sweep, '_run_loop',
                        lambda *a: ran.append(1) or run_loop(*a))
    hp = {'lr': jnp.asarray([0.05, 0.2])}
    sgd = lambda hp: optax.sgd(hp['lr'])
    auto = optax_clr.sweep(conv_loss, conv_params(), sgd, hp, conv_images())
    assert ran  # A convolution on CPU: the loop.
    scan = optax_clr.sweep(conv_loss, conv_params(), sgd, hp, conv_images(),
                           strategy='scan')
    assert_results_equal(auto, scan)
    ran.clear()
    sweep('auto')
    assert not ran  # No convolution: the scan.


class TestRangeTest:

  @pytest.mark.parametrize('accumulation_steps', [1, 2])
  def test_strategies_agree_through_divergence(self, accumulation_steps):
    results = [optax_clr.range_test(
        range_loss, np.zeros(3, np.float32), optax.sgd,
        range_batches(accumulation_steps),
        accumulation_steps=accumulation_steps, strategy=s, **RANGE)
               for s in STRATEGIES]
    assert_results_equal(*results)
    assert int(results[1].diverged_step) < RANGE['num_steps']  # Diverged.

  @pytest.mark.parametrize('strategy', STRATEGIES)
  def test_equals_a_hand_written_optax_loop(self, strategy):
    result = optax_clr.range_test(range_loss, np.zeros(3, np.float32),
                                  optax.sgd, range_batches(),
                                  strategy=strategy, **RANGE)
    schedule = optax_clr.range_test_schedule(
        RANGE['start_lr'], RANGE['end_lr'], RANGE['num_steps'])
    losses, *_ = hand_loop(range_loss, jnp.zeros(3), optax.sgd(schedule),
                           range_batches())
    stop = int(result.diverged_step)
    np.testing.assert_allclose(result.losses[:stop + 1], losses[:stop + 1],
                               rtol=1e-5)
    assert np.all(np.isnan(result.losses[stop + 1:]))

  def test_state_key_aux_data_and_a_mesh(self):
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ('data',))

    def loss_fn(w, state, batch, key, data):
      noise = 0.01 * jax.random.normal(key, batch.shape)
      loss = jnp.mean(((batch + noise) @ w - data) ** 2 + state)
      return (loss, {'state': state}), 0.9 * state + 0.1 * loss

    results = [optax_clr.range_test(
        loss_fn, np.zeros(3, np.float32), optax.adam, range_batches(),
        model_state=jnp.asarray(0.5), key=jax.random.key(2), has_aux=True,
        data=jnp.asarray(1.0), mesh=mesh, strategy=s, **RANGE)
               for s in STRATEGIES]
    assert_results_equal(*results)

  def test_progress_counts_are_the_scan_s(self):
    shown = {}
    for strategy in STRATEGIES:
      out = io.StringIO()
      optax_clr.range_test(range_loss, np.zeros(3, np.float32), optax.sgd,
                           range_batches(), strategy=strategy,
                           progress={'file': out, 'every': 7,
                                     'mininterval': 0, 'miniters': 1},
                           **RANGE)
      shown[strategy] = {int(n) for n in re.findall(r'(\d+)/24',
                                                    out.getvalue())}
    assert shown['loop'] == shown['scan'] == {0, 7, 14, 21, 24}, shown

  def test_traced_inputs_scan_and_refuse_the_loop(self):
    def losses(w, strategy):
      return optax_clr.range_test(range_loss, w, optax.sgd, range_batches(),
                                  strategy=strategy, **RANGE).losses

    starts = jnp.zeros((2, 3))
    for strategy in ('auto', 'scan'):
      vmapped = jax.vmap(lambda w, s=strategy: losses(w, s))(starts)
      np.testing.assert_allclose(vmapped[0], losses(starts[0], 'loop'),
                                 rtol=1e-5)
    with pytest.raises(ValueError, match="strategy='loop'.*traced"):
      jax.vmap(lambda w: losses(w, 'loop'))(starts)

  def test_auto_drives_convolutions_from_the_host_on_cpu(self, monkeypatch):
    ran = []
    run_loop = _range_test._run_loop  # pylint: disable=protected-access
    monkeypatch.setattr(_range_test, '_run_loop',
                        lambda *a: ran.append(1) or run_loop(*a))
    auto = optax_clr.range_test(conv_loss, conv_params(), optax.sgd,
                                conv_images(8), num_steps=8)
    assert ran
    scan = optax_clr.range_test(conv_loss, conv_params(), optax.sgd,
                                conv_images(8), num_steps=8, strategy='scan')
    assert_results_equal(auto, scan)


class TestCompileOnce:

  @pytest.mark.parametrize('strategy', STRATEGIES)
  def test_new_hyperparameters_do_not_trace_again(self, strategy):
    traces = []

    def loss_fn(params, batch):
      traces.append(1)  # Runs when traced, never when compiled code runs.
      return api.loss_fn(params, batch)

    first = sweep(strategy, loss_fn=loss_fn)
    count = len(traces)
    hp = {name: values[::-1] for name, values in api.HP.items()}
    again = sweep(strategy, loss_fn=loss_fn, hyperparams=hp)
    assert len(traces) == count
    assert not np.allclose(again.losses, first.losses)

    def range_loss_fn(w, batch):
      traces.append(1)
      return range_loss(w, batch)

    optax_clr.range_test(range_loss_fn, np.zeros(3, np.float32), optax.sgd,
                         range_batches(), strategy=strategy, **RANGE)
    count = len(traces)
    optax_clr.range_test(range_loss_fn, np.zeros(3, np.float32), optax.sgd,
                         range_batches(), strategy=strategy,
                         **{**RANGE, 'start_lr': 1e-4, 'end_lr': 3.0})
    assert len(traces) == count


class TestRule:

  @pytest.mark.parametrize('platform, convolution, is_traced, chosen', [
      ('cpu', True, False, 'loop'),
      ('cpu', False, False, 'scan'),
      ('gpu', True, False, 'scan'),
      ('tpu', True, False, 'scan'),
      ('cpu', True, True, 'scan'),
  ])
  def test_auto_follows_the_documented_rule(self, platform, convolution,
                                            is_traced, chosen):
    assert _strategy.choose('auto', platform=platform, is_traced=is_traced,
                            convolution=lambda: convolution) == chosen

  @pytest.mark.parametrize('strategy', STRATEGIES)
  def test_forced_strategies_are_kept(self, strategy):
    assert _strategy.choose(strategy, platform='gpu', is_traced=False,
                            convolution=lambda: True) == strategy

  def test_convolutions_are_found_inside_transformations(self):
    images, params = conv_images(), conv_params()
    inner = jax.jit(jax.checkpoint(conv_loss))
    assert _strategy.convolves(jax.grad(inner), params, images[0])
    assert not _strategy.convolves(api.loss_fn, {'w': jnp.zeros(3)},
                                   jnp.zeros(3))

  @pytest.mark.parametrize('strategy', ['fast', 'Loop', None, 1])
  def test_bad_strategy_is_named(self, strategy):
    message = ("strategy must be one of 'auto', 'scan', 'loop', got"
               f' {strategy!r}')
    with pytest.raises(ValueError, match=re.escape(message)):
      sweep(strategy)
    with pytest.raises(ValueError, match=re.escape(message)):
      optax_clr.range_test(range_loss, np.zeros(3, np.float32), optax.sgd,
                           range_batches(), strategy=strategy, **RANGE)


class TestNNX:

  def test_nnx_wrappers_take_a_strategy(self):
    nnx = pytest.importorskip('flax.nnx')
    import optax_clr.nnx  # pylint: disable=g-import-not-at-top

    # SGD and no bias before the BatchNorm: Adam would scale rounding noise
    # (a bias's gradient there is only that) up to whole steps.
    model = nnx.Sequential(nnx.Conv(1, 2, (3, 3), use_bias=False,
                                    rngs=nnx.Rngs(0)),
                           nnx.BatchNorm(2, rngs=nnx.Rngs(0)),
                           nnx.Dropout(0.2, rngs=nnx.Rngs(1)))
    loss_fn = lambda m, x: jnp.mean((m(x) - 0.5) ** 2)
    images = conv_images(6)
    hp = {'lr': jnp.asarray([0.01, 0.1])}
    swept = [optax_clr.nnx.sweep(model, lambda hp: optax.sgd(hp['lr']),
                                 loss_fn, hp, images, key=jax.random.key(0),
                                 strategy=s) for s in STRATEGIES]
    assert_results_equal(*swept)
    tested = [optax_clr.nnx.range_test(model, optax.sgd, loss_fn, images,
                                       num_steps=6, key=jax.random.key(0),
                                       strategy=s) for s in STRATEGIES]
    assert_results_equal(*tested)


# 4 CPU devices: models over 2 devices x data over 2, in passes of chunks.
SCRIPT = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, {repo!r})
    import jax, numpy as np
    import optax_clr
    from tests import test_strategy as t
    assert jax.device_count() == 4, jax.device_count()
    devices = np.array(jax.devices()).reshape(2, 2)
    mesh = jax.sharding.Mesh(devices, ('models', 'data'))
    batches = np.stack([np.asarray(t.api.data(0))] * 2, axis=1)
    out = {{}}
    for strategy in t.STRATEGIES:
      for chunk_size in (None, 1):
        result = t.sweep(strategy, batches=batches, loss_fn=t.batch_loss,
                         mesh=mesh, chunk_size=chunk_size)
        out[f'{{strategy}} {{chunk_size}}'] = [
            np.asarray(result.losses).tolist(),
            np.asarray(result.params['w']).tolist()]
    print(json.dumps(out))
''')


def batch_loss(params, batch):
  return jnp.mean(jax.vmap(api.loss_fn, (None, 0))(params, batch))


def test_strategies_agree_over_four_devices(tmp_path):
  path = tmp_path / 'strategy_script.py'
  path.write_text(SCRIPT.format(repo=REPO))
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}
  done = subprocess.run([sys.executable, str(path)], env=env,
                        capture_output=True, text=True, timeout=300,
                        check=False)
  assert done.returncode == 0, done.stderr
  out = json.loads(done.stdout.strip().splitlines()[-1])
  reference = out['scan None']
  for name, (losses, w) in out.items():
    np.testing.assert_allclose(losses, reference[0], rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(w, reference[1], rtol=1e-5, err_msg=name)
