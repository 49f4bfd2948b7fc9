"""Sweeps and range tests over meshes, processes, chunks; progress bars.

The references are independent of the path under test: hand-written
training loops (``test_sweep_api.reference``) and one-device runs in this
process, against which 1 process x 4 forced CPU devices and 2 processes x 2
devices (JAX's multi-controller runtime, gloo collectives on 127.0.0.1) are
compared.
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
from optax_clr import _progress
from optax_clr import _sweep
from tests import test_find_lr as find
from tests import tiny_models
from tests import test_multiprocess
from tests import test_sweep_api as api

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 300
NUM_MODELS, BATCH, STEPS = 6, 4, 8
HP6 = optax_clr.grid(base_lr=[0.01, 0.05], max_lr=[0.1, 0.2, 0.3],
                     step_size=[3])


def batch_loss(params, batch):
  """The mean of test_sweep_api's loss over a batch ``[BATCH, DIM]``."""
  return jnp.mean(jax.vmap(lambda b: api.loss_fn(params, b))(batch))


def stacked_params():
  return {'w': jnp.linspace(-1, 1, NUM_MODELS * api.DIM).reshape(
      NUM_MODELS, api.DIM)}


def batches():
  rng = np.random.default_rng(7)
  return np.asarray(1 + 0.3 * rng.standard_normal((STEPS, BATCH, api.DIM)),
                    np.float32)


def range_loss(w, batch):
  return jnp.mean((batch @ w - 1.0) ** 2)


def range_batches(accumulation_steps=1):
  rng = np.random.default_rng(3)
  return np.asarray(rng.normal(size=(40 * accumulation_steps, BATCH, 3)),
                    np.float32)


RANGE = dict(num_steps=40, start_lr=1e-3, end_lr=3.0)

# Run as 1 process x 4 devices or 2 processes x 2 devices: argv is
# coordinator, num_processes, process_id. Prints one JSON line per process.
SCRIPT = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, {repo!r})  # This checkout's optax_clr and tests.
    coordinator, num_processes, process_id = sys.argv[1:4]
    import jax
    if int(num_processes) > 1:
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
      jax.distributed.initialize(coordinator, int(num_processes),
                                 int(process_id))
    import numpy as np, optax
    from jax.experimental import multihost_utils
    import optax_clr
    from tests import test_scale as t
    from tests import test_sweep_api as api
    assert jax.device_count() == 4, jax.device_count()
    out = {{}}

    def record(name, result):
      gathered = multihost_utils.process_allgather(result.params['w'],
                                                   tiled=True)
      out[name] = {{'losses': np.asarray(result.losses).tolist(),
                    'w': np.asarray(gathered).tolist()}}

    default = optax_clr.sweep(t.batch_loss, t.stacked_params(),
                              api.triangular_sgd, t.HP6, t.batches(),
                              params_axis=0)
    record('default', default)
    shards = default.params['w'].addressable_shards
    out['own_models'] = sorted({{
        k for s in shards
        for k in range(t.NUM_MODELS)[s.index[0]]}})
    # Data across processes, models across the devices of each process.
    devices = np.array(jax.devices()).reshape(2, 2).T
    mesh = jax.sharding.Mesh(devices, ('models', 'data'))
    record('models_x_data', optax_clr.sweep(
        t.batch_loss, t.stacked_params(), api.triangular_sgd, t.HP6,
        t.batches(), params_axis=0, mesh=mesh))
    record('chunks', optax_clr.sweep(
        t.batch_loss, t.stacked_params(), api.triangular_sgd, t.HP6,
        t.batches(), params_axis=0, chunk_size=2))
    data_mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
    test = optax_clr.range_test(t.range_loss, np.zeros(3, np.float32),
                                optax.sgd, t.range_batches(), mesh=data_mesh,
                                **t.RANGE)
    out['range_losses'] = np.asarray(test.losses).tolist()
    out['range_diverged'] = int(test.diverged_step)
    accumulated = optax_clr.range_test(
        t.range_loss, np.zeros(3, np.float32), optax.sgd,
        t.range_batches(2), mesh=data_mesh, accumulation_steps=2, **t.RANGE)
    out['accumulated_losses'] = np.asarray(accumulated.losses).tolist()
    out['accumulated_diverged'] = int(accumulated.diverged_step)
    from tests import test_find_lr as f
    chosen = optax_clr.find_lr(f.loss_fn, np.zeros(f.DIM, np.float32),
                               optax.sgd, f.BATCHES, f.eval_fn)
    out['find_lr'] = {{'scores': chosen.scores.tolist(),
                       'learning_rate': chosen.learning_rate}}
    print(json.dumps(out))
''')


def _env(devices):
  return {**os.environ, 'JAX_PLATFORMS': 'cpu',
          'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'}


def _script_path(tmp_path):
  path = tmp_path / 'scale_script.py'
  path.write_text(SCRIPT.format(repo=REPO))
  return path


def _run_processes(tmp_path, num_processes, devices):
  """Runs SCRIPT as processes of JAX's runtime; their parsed outputs.

  A coordinator port taken between choosing and binding it makes process 0
  fail at once; the run is retried on another port.
  """
  script = _script_path(tmp_path)
  for attempt in range(test_multiprocess.ATTEMPTS):
    coordinator = f'127.0.0.1:{test_multiprocess._free_port()}'  # pylint: disable=protected-access
    logs = [(tmp_path / f'{attempt}-{i}.out', tmp_path / f'{attempt}-{i}.err')
            for i in range(num_processes)]
    processes = []
    for i, (out, err) in enumerate(logs):
      with open(out, 'w') as stdout, open(err, 'w') as stderr:
        processes.append(subprocess.Popen(
            [sys.executable, str(script), coordinator, str(num_processes),
             str(i)], cwd=REPO, env=_env(devices), stdout=stdout,
            stderr=stderr))
    test_multiprocess._wait(processes, logs)  # pylint: disable=protected-access
    first_error = logs[0][1].read_text()
    if processes[0].returncode and any(
        m in first_error for m in test_multiprocess.PORT_TAKEN):
      continue
    for p, (_, err) in zip(processes, logs):
      assert p.returncode == 0, err.read_text()[-3000:]
    return [json.loads(out.read_text().strip().splitlines()[-1])
            for out, _ in logs]
  pytest.fail('the coordinator port was taken '
              f'{test_multiprocess.ATTEMPTS} times in a row')


@pytest.fixture(scope='module')
def one_device():
  """The reference: this process, one device."""
  assert jax.device_count() == 1
  sweep = optax_clr.sweep(batch_loss, stacked_params(), api.triangular_sgd,
                          HP6, batches(), params_axis=0)
  test = optax_clr.range_test(range_loss, np.zeros(3, np.float32), optax.sgd,
                              range_batches(), **RANGE)
  accumulated = optax_clr.range_test(
      range_loss, np.zeros(3, np.float32), optax.sgd, range_batches(2),
      accumulation_steps=2, **RANGE)
  chosen = optax_clr.find_lr(find.loss_fn, np.zeros(find.DIM, np.float32),
                             optax.sgd, find.BATCHES, find.eval_fn)
  return sweep, test, accumulated, chosen


def _assert_equal_to_one_device(out, one_device):
  sweep, test, accumulated, chosen = one_device
  for name in ('default', 'models_x_data', 'chunks'):
    np.testing.assert_allclose(out[name]['losses'], sweep.losses, rtol=1e-5,
                               atol=1e-6, err_msg=name)
    np.testing.assert_allclose(out[name]['w'], sweep.params['w'], rtol=1e-5,
                               atol=1e-6, err_msg=name)
  assert out['range_diverged'] == int(test.diverged_step)
  live = slice(0, int(test.diverged_step))
  np.testing.assert_allclose(np.asarray(out['range_losses'])[live],
                             test.losses[live], rtol=1e-5)
  # Microbatches split over the data axis too.
  assert out['accumulated_diverged'] == int(accumulated.diverged_step)
  live = slice(0, int(accumulated.diverged_step))
  np.testing.assert_allclose(np.asarray(out['accumulated_losses'])[live],
                             accumulated.losses[live], rtol=1e-5)
  # find_lr's candidates sharded over every device of every process.
  np.testing.assert_allclose(out['find_lr']['scores'], chosen.scores,
                             rtol=1e-5)
  assert out['find_lr']['learning_rate'] == chosen.learning_rate


def test_two_processes_equal_one_device(tmp_path, one_device):
  outputs = _run_processes(tmp_path, 2, 2)
  for out in outputs:  # Every process receives every model's records.
    _assert_equal_to_one_device(out, one_device)
  # Each process holds, and so trained, only the models of its devices.
  own = [set(out['own_models']) for out in outputs]
  assert own[0] and own[1] and not own[0] & own[1], own
  assert own[0] | own[1] == set(range(NUM_MODELS))


def test_four_devices_equal_one_device(tmp_path, one_device):
  (out,) = _run_processes(tmp_path, 1, 4)
  _assert_equal_to_one_device(out, one_device)
  assert out['own_models'] == list(range(NUM_MODELS))


@pytest.mark.parametrize('chunk_size', [1, 2, 3, 5])
def test_chunks_equal_hand_written_loops(chunk_size):
  params = {'w': jnp.zeros(api.DIM)}
  result = optax_clr.sweep(api.loss_fn, params, api.triangular_sgd, api.HP,
                           api.data(0), chunk_size=chunk_size)
  assert result.losses.shape == (8, api.NUM_STEPS)
  for k in range(8):
    losses, w, _ = api.reference(params, api.model_hp(k), api.data(0))
    np.testing.assert_allclose(result.losses[k], losses, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(result.params['w'][k], w, rtol=1e-4,
                               atol=1e-5)


_conv_loss = tiny_models.conv_loss


def test_cpu_runs_a_device_s_models_one_at_a_time_by_default():
  rng = np.random.default_rng(0)
  conv_params = tiny_models.conv_params()
  images = jnp.asarray(rng.normal(size=(3, 4, 6, 6, 1)), jnp.float32)
  sgd = lambda hp: optax.sgd(hp['lr'])
  cpu = jax.sharding.Mesh(np.asarray(jax.devices('cpu')[:1]), ('models',))
  assert _sweep._auto_chunk_size(cpu) == 1  # pylint: disable=protected-access
  # Chosen automatically (one model at a time on CPU) or all side by side:
  # the same training.
  hp = {'lr': jnp.asarray([0.05, 0.1, 0.2])}
  auto = optax_clr.sweep(_conv_loss, conv_params, sgd, hp, images)
  side_by_side = optax_clr.sweep(_conv_loss, conv_params, sgd, hp, images,
                                 chunk_size=3)
  np.testing.assert_allclose(auto.losses, side_by_side.losses, rtol=1e-5)
  # A pass per model: the bar counts K = 3 passes of num_steps = 3 steps.
  out = io.StringIO()
  optax_clr.sweep(_conv_loss, conv_params, sgd, hp, images,
                  progress={'file': out, 'mininterval': 0, 'miniters': 1})
  assert '9/9' in out.getvalue(), out.getvalue()


def test_progress_bar_counts_every_step_and_changes_nothing():
  params = {'w': jnp.zeros(api.DIM)}
  plain = optax_clr.sweep(api.loss_fn, params, api.triangular_sgd, api.HP,
                          api.data(0), chunk_size=4)
  out = io.StringIO()
  shown = optax_clr.sweep(api.loss_fn, params, api.triangular_sgd, api.HP,
                          api.data(0), chunk_size=4,
                          progress={'file': out, 'every': 3, 'desc': 'hp',
                                    'mininterval': 0, 'miniters': 1})
  # The callback changes fusion, not the arithmetic: float noise.
  np.testing.assert_allclose(shown.losses, plain.losses, rtol=1e-6)
  text = out.getvalue()
  # Two passes of 10 steps, each in blocks of 3 steps and 1 more: updates
  # after each block (3, 6, 9; 13, 16, 19) and at each pass's end (10, 20).
  shown_counts = {int(n) for n in re.findall(r'(\d+)/20', text)}
  assert 'hp' in text, text
  assert shown_counts == {0, 3, 6, 9, 10, 13, 16, 19, 20}, text
  test_out = io.StringIO()
  optax_clr.range_test(range_loss, np.zeros(3, np.float32), optax.sgd,
                       range_batches(),
                       progress={'file': test_out, 'every': 7,
                                 'mininterval': 0, 'miniters': 1},
                       **RANGE)
  # 40 steps, an update every 7 steps and at the last one.
  test_counts = {int(n) for n in re.findall(r'(\d+)/40', test_out.getvalue())}
  assert test_counts == {0, 7, 14, 21, 28, 35, 40}, test_out.getvalue()


def test_progress_with_evaluations_between_blocks():
  """Evaluations every 2 steps, updates every 3: by the documented rule."""
  params = {'w': jnp.zeros(api.DIM)}
  eval_fn = lambda p, _: {'norm': jnp.sum(p['w'] ** 2)}
  plain = optax_clr.sweep(api.loss_fn, params, api.triangular_sgd, api.HP,
                          api.data(0), eval_fn=eval_fn, eval_every=2,
                          chunk_size=4)
  out = io.StringIO()
  shown = optax_clr.sweep(api.loss_fn, params, api.triangular_sgd, api.HP,
                          api.data(0), eval_fn=eval_fn, eval_every=2,
                          chunk_size=4,
                          progress={'file': out, 'every': 3,
                                    'mininterval': 0, 'miniters': 1})
  np.testing.assert_allclose(shown.evals['norm'], plain.evals['norm'],
                             rtol=1e-6)
  # Two passes of 10 steps in intervals of 2: no whole block of 3 fits, and
  # an interval's end is told when it crosses a multiple of 3 (steps 4 and
  # 6 of each pass, not 2 or 8); each pass's end (10) is told after it.
  counts = {int(n) for n in re.findall(r'(\d+)/20', out.getvalue())}
  assert counts == {0, 4, 6, 10, 14, 16, 20}, out.getvalue()


def test_a_channel_serves_one_call_at_a_time():
  """A second call while one holds the channel runs without updates."""
  channel = _progress.Channel(steps_per_pass=8)
  with channel.attach(5, (3, 6)) as first:
    with channel.attach(7, (3, 6)) as second:
      assert (first, second) == (5, 0)
  with channel.attach(7, (3, 6)) as again:  # Released: the next call has it.
    assert again == 7
  with channel.attach(0, (3, 6)) as none:  # No bar (another process).
    assert none == 0


def test_progress_without_tqdm_names_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, 'tqdm', None)  # import tqdm raises.
  with pytest.raises(ImportError, match=r"optax_clr\[progress\]"):
    optax_clr.sweep(api.loss_fn, {'w': jnp.zeros(api.DIM)},
                    api.triangular_sgd, api.HP, api.data(0), progress=True)
  with pytest.raises(ImportError, match=r"optax_clr\[progress\]"):
    optax_clr.range_test(range_loss, np.zeros(3, np.float32), optax.sgd,
                         range_batches(), progress=True, **RANGE)


def _one_device_mesh(*names):
  return jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(
      (1,) * len(names)), names)


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(mesh=_one_device_mesh('data')), ValueError, "'models' axis"),
    (dict(mesh=_one_device_mesh('models', 'x')), ValueError, 'axis names'),
    (dict(mesh='models'), TypeError, 'mesh'),
    (dict(chunk_size=0), ValueError, 'chunk_size'),
    (dict(chunk_size=1.5), ValueError, 'chunk_size'),
    (dict(chunk_size=True), ValueError, 'chunk_size'),
    (dict(progress='yes'), TypeError, 'progress'),
    (dict(progress=0), ValueError, 'progress'),
    (dict(progress={'every': 0}), ValueError, 'every'),
    (dict(gather=1), TypeError, 'gather'),
])
def test_bad_input_is_named_before_compiling(kwargs, error, match):
  traces = []

  def counted_loss(params, batch):
    traces.append(1)
    return api.loss_fn(params, batch)

  with pytest.raises(error, match=match):
    optax_clr.sweep(counted_loss, {'w': jnp.zeros(api.DIM)},
                    api.triangular_sgd, api.HP, api.data(0), **kwargs)
  assert not traces


def test_range_test_mesh_needs_a_data_axis():
  with pytest.raises(ValueError, match="'data' axis"):
    optax_clr.range_test(range_loss, np.zeros(3, np.float32), optax.sgd,
                         range_batches(), mesh=_one_device_mesh('models'),
                         **RANGE)


# A data axis of 4 devices that does not divide a batch of 6, refused by
# name before anything is traced, in sweep and in range_test.
INDIVISIBLE = textwrap.dedent('''
    import sys
    import jax, numpy as np, optax
    import optax_clr
    sys.path.insert(0, {repo!r})
    from tests import test_scale as t
    from tests import test_sweep_api as api
    traces = []
    def counted(params, batch):
      traces.append(1)
      return t.batch_loss(params, batch)
    devices = np.array(jax.devices()).reshape(2, 2)
    mesh = jax.sharding.Mesh(devices, ('models', 'data'))
    batches = np.ones((t.STEPS, 3, api.DIM), np.float32)
    for call in (
        lambda: optax_clr.sweep(counted, t.stacked_params(),
                                api.triangular_sgd, t.HP6, batches,
                                params_axis=0, mesh=mesh),
        lambda: optax_clr.range_test(
            counted, {{'w': np.zeros(api.DIM, np.float32)}}, optax.sgd,
            np.ones((40, 6, api.DIM), np.float32),
            mesh=jax.sharding.Mesh(np.array(jax.devices()), ('data',)),
            **t.RANGE)):
      try:
        call()
      except ValueError as error:
        assert "'data' axis of size" in str(error), error
      else:
        raise AssertionError('an indivisible batch was accepted')
    assert not traces
    print('ok')
''')


def test_data_axis_that_does_not_divide_the_batch_is_refused():
  out = subprocess.run(
      [sys.executable, '-c', INDIVISIBLE.format(repo=REPO)], cwd=REPO,
      env=_env(4), capture_output=True, text=True, timeout=TIMEOUT_S)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == 'ok'


def test_scale_out_example_runs_on_two_processes():
  out = subprocess.run(
      [sys.executable, '-m', 'examples.scale_out'], cwd=REPO,
      capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  # Each process trained only its half of the 8 models.
  for process, models in ((0, '[0, 1, 2, 3]'), (1, '[4, 5, 6, 7]')):
    line = f'process {process}: 4 devices in all; its 2 trained the models'
    assert f'{line} {models}' in out.stdout, out.stdout
  assert 'largest relative gap to one device' in out.stdout
