"""Tests for current_learning_rate and for resuming a schedule from Orbax."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_clr
from tests import reference


def clr(t):
  """The float64 reference of the schedule below."""
  return float(reference.smith_clr(t, 0.01, 0.05, 3))


SCHEDULE = optax_clr.triangular_schedule(0.01, 0.05, step_size=3)


def rates_over(tx, num_updates, read):
  params = {'w': jnp.zeros(3)}
  state = tx.init(params)
  rates = [float(read(state))]
  for _ in range(num_updates):
    _, state = tx.update({'w': jnp.ones(3)}, state, params)
    rates.append(float(read(state)))
  return rates


# After k updates: the rate update k used, schedule(max(k - 1, 0)).
EXPECTED = [clr(max(k - 1, 0)) for k in range(12)]


class TestReadsTheRate:

  def test_injected_rate(self):
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=SCHEDULE)
    rates = rates_over(tx, 11, optax_clr.current_learning_rate)
    np.testing.assert_allclose(rates, EXPECTED, rtol=1e-6)

  @pytest.mark.parametrize('build', [
      optax.adam, optax.sgd, functools.partial(optax.adamw, weight_decay=0.1),
      lambda lr: optax.chain(optax.clip_by_global_norm(1.0), optax.lion(lr)),
  ], ids=['adam', 'sgd', 'adamw', 'chain'])
  def test_schedule_count(self, build):
    tx = build(SCHEDULE)
    rates = rates_over(
        tx, 11, lambda s: optax_clr.current_learning_rate(s, SCHEDULE))
    np.testing.assert_allclose(rates, EXPECTED, rtol=1e-6)

  def test_injected_state_read_through_the_schedule(self):
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=SCHEDULE)
    rates = rates_over(
        tx, 11, lambda s: optax_clr.current_learning_rate(s, SCHEDULE))
    np.testing.assert_allclose(rates, EXPECTED, rtol=1e-6)

  def test_multi_steps_counts_optimizer_steps(self):
    tx = optax.MultiSteps(optax.adam(SCHEDULE), every_k_schedule=3)
    rates = rates_over(
        tx, 12, lambda s: optax_clr.current_learning_rate(s, SCHEDULE))
    # Every 3 microbatches the inner count advances once.
    expected = [clr(max(k // 3 - 1, 0)) for k in range(13)]
    np.testing.assert_allclose(rates, expected, rtol=1e-6)

  def test_inside_jit(self):
    tx = optax.sgd(SCHEDULE)
    params = jnp.zeros(2)

    @jax.jit
    def step(state):
      _, state = tx.update(jnp.ones(2), state, params)
      return state, optax_clr.current_learning_rate(state, SCHEDULE)

    state = tx.init(params)
    logged = []
    for _ in range(8):
      state, lr = step(state)
      logged.append(float(lr))
    np.testing.assert_allclose(logged, EXPECTED[1:9], rtol=1e-6)

  def test_one_group_of_a_multi_transform(self):
    head = optax.inject_hyperparams(optax.sgd)(
        learning_rate=lambda t: 10 * SCHEDULE(t))
    body = optax.inject_hyperparams(optax.sgd)(learning_rate=SCHEDULE)
    tx = optax.multi_transform({'head': head, 'body': body},
                               {'a': 'head', 'b': 'body'})
    params = {'a': jnp.zeros(2), 'b': jnp.zeros(2)}
    state = tx.init(params)
    for _ in range(4):
      _, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    with pytest.raises(ValueError, match='opt_state holds 2 injected'):
      optax_clr.current_learning_rate(state)
    head_lr = optax_clr.current_learning_rate(state.inner_states['head'])
    np.testing.assert_allclose(head_lr, 10 * clr(3), rtol=1e-6)


class TestInjectedRateIsTheTruth:
  """An injected rate is what the update used: it wins over ``schedule``."""

  def step_size(self, tx, state, params):
    """The rate an sgd update really applied: -update / gradient (= 1)."""
    updates, state = tx.update(jnp.ones(2), state, params)
    return -float(updates[0]), state

  def test_rate_set_by_hand(self):
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.3)
    params = jnp.zeros(2)
    state = tx.init(params)
    for _ in range(3):
      _, state = self.step_size(tx, state, params)
    state.hyperparams['learning_rate'] = jnp.asarray(0.5)
    used, state = self.step_size(tx, state, params)
    np.testing.assert_allclose(used, 0.5, rtol=1e-6)
    for schedule in (None, SCHEDULE):
      np.testing.assert_allclose(
          optax_clr.current_learning_rate(state, schedule), 0.5, rtol=1e-6)

  def test_schedule_that_differs_from_the_injected_one(self):
    tx = optax.inject_hyperparams(optax.sgd)(
        learning_rate=lambda t: 2 * SCHEDULE(t))
    params = jnp.zeros(2)
    state = tx.init(params)
    for k in range(1, 8):
      used, state = self.step_size(tx, state, params)
      np.testing.assert_allclose(used, 2 * clr(k - 1), rtol=1e-6)
      np.testing.assert_allclose(
          optax_clr.current_learning_rate(state, SCHEDULE), 2 * clr(k - 1),
          rtol=1e-6)

  def test_schedule_is_not_called(self):
    def schedule(count):
      raise AssertionError(f'called with {count}')

    tx = optax.inject_hyperparams(optax.adam)(learning_rate=SCHEDULE)
    state = tx.init(jnp.zeros(2))
    np.testing.assert_allclose(
        optax_clr.current_learning_rate(state, schedule), clr(0), rtol=1e-6)

  def test_inside_jit(self):
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.3)
    params = jnp.zeros(2)

    @jax.jit
    def read(state):
      return optax_clr.current_learning_rate(state, SCHEDULE)

    state = tx.init(params)
    state.hyperparams['learning_rate'] = jnp.asarray(0.5)
    _, state = tx.update(jnp.ones(2), state, params)
    np.testing.assert_allclose(read(state), 0.5, rtol=1e-6)

  def test_injected_rate_beside_a_schedule_count_is_ambiguous(self):
    tx = optax.multi_transform(
        {'a': optax.inject_hyperparams(optax.sgd)(learning_rate=0.3),
         'b': optax.adam(SCHEDULE)},
        {'x': 'a', 'y': 'b'})
    state = tx.init({'x': jnp.zeros(1), 'y': jnp.zeros(1)})
    for schedule in (None, SCHEDULE):
      with pytest.raises(
          ValueError,
          match=r"injected learning rate, at opt_state.inner_states\['a'\].*"
          r"count of a learning-rate schedule, at "
          r"opt_state.inner_states\['b'\]"):
        optax_clr.current_learning_rate(state, schedule)
    np.testing.assert_allclose(
        optax_clr.current_learning_rate(state.inner_states['b'], SCHEDULE),
        clr(0), rtol=1e-6)


def _assert_reads_rate(state, expected, injected):
  """``current_learning_rate`` of ``state`` with the schedule, and without:
  the injected rate, or an error asking for the schedule."""
  np.testing.assert_allclose(
      optax_clr.current_learning_rate(state, SCHEDULE), expected, rtol=1e-6)
  if injected:
    np.testing.assert_allclose(optax_clr.current_learning_rate(state),
                               expected, rtol=1e-6)
  else:
    with pytest.raises(ValueError, match='pass that schedule'):
      optax_clr.current_learning_rate(state)


class TestNnx:

  def test_nnx_optimizer(self):
    nnx = pytest.importorskip('flax.nnx')
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    x = jnp.ones((4, 3))

    def loss_fn(model):
      return jnp.mean(model(x) ** 2)

    for tx, schedule in (
        (optax.inject_hyperparams(optax.adam)(learning_rate=SCHEDULE), None),
        (optax.adam(SCHEDULE), SCHEDULE),
    ):
      optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
      rates = [float(optax_clr.current_learning_rate(optimizer, schedule))]
      for _ in range(6):
        optimizer.update(model, nnx.grad(loss_fn)(model))
        rates.append(
            float(optax_clr.current_learning_rate(optimizer, schedule)))
      np.testing.assert_allclose(rates, EXPECTED[:7], rtol=1e-6)


  @pytest.mark.parametrize('injected', [True, False],
                           ids=['inject_hyperparams', 'adam_schedule'])
  def test_nnx_state_of_the_optimizer(self, injected):
    nnx = pytest.importorskip('flax.nnx')
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    x = jnp.ones((4, 3))
    tx = (optax.inject_hyperparams(optax.adam)(learning_rate=SCHEDULE)
          if injected else optax.adam(SCHEDULE))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer):
      optimizer.update(model, nnx.grad(
          lambda model: jnp.mean(model(x) ** 2))(model))
      return optax_clr.current_learning_rate(nnx.state(optimizer), SCHEDULE)

    logged = [train_step(model, optimizer) for _ in range(6)]
    np.testing.assert_allclose(logged, EXPECTED[1:7], rtol=1e-6)
    state = nnx.state(optimizer)
    for form in (state, state['opt_state']):
      _assert_reads_rate(form, EXPECTED[6], injected)


class TestOrbaxWithoutTarget:
  """A checkpoint restored without a target: plain dicts and lists."""

  @pytest.mark.parametrize('checkpointer', ['standard', 'pytree'])
  @pytest.mark.parametrize('build', [
      lambda: optax.inject_hyperparams(optax.adam)(learning_rate=SCHEDULE),
      lambda: optax.adam(SCHEDULE),
      lambda: optax.MultiSteps(optax.sgd(SCHEDULE, momentum=0.9), 1),
      # Its b1 schedule's {'count': ...} is no learning rate's.
      lambda: optax.inject_hyperparams(
          lambda b1: optax.adam(SCHEDULE, b1=b1))(b1=lambda t: 0.9),
  ], ids=['inject_hyperparams', 'adam_schedule', 'multi_steps',
          'scheduled_b1'])
  def test_restored_state(self, build, checkpointer, tmp_path):
    ocp = pytest.importorskip('orbax.checkpoint')
    tx = build()
    params = {'w': jnp.zeros(3)}
    state = tx.init(params)
    for _ in range(5):
      _, state = tx.update({'w': jnp.ones(3)}, state, params)
    saver = (ocp.StandardCheckpointer() if checkpointer == 'standard'
             else ocp.PyTreeCheckpointer())
    saver.save(tmp_path / 'ckpt', {'params': params, 'opt_state': state})
    if hasattr(saver, 'wait_until_finished'):  # PyTreeCheckpointer is sync.
      saver.wait_until_finished()
    restored = saver.restore(tmp_path / 'ckpt')
    saver.close()
    assert isinstance(restored['opt_state'], (dict, list))
    for form in (restored, restored['opt_state']):
      np.testing.assert_allclose(
          optax_clr.current_learning_rate(form, SCHEDULE), EXPECTED[5],
          rtol=1e-6)

  def test_restored_rate_set_by_hand(self, tmp_path):
    ocp = pytest.importorskip('orbax.checkpoint')
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.3)
    state = tx.init(jnp.zeros(2))
    state.hyperparams['learning_rate'] = jnp.asarray(0.5)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / 'ckpt', {'opt_state': state})
    checkpointer.wait_until_finished()
    restored = checkpointer.restore(tmp_path / 'ckpt')
    checkpointer.close()
    for schedule in (None, SCHEDULE):
      np.testing.assert_allclose(
          optax_clr.current_learning_rate(restored, schedule), 0.5,
          rtol=1e-6)

  @pytest.mark.parametrize('injected', [True, False],
                           ids=['inject_hyperparams', 'adam_schedule'])
  def test_restored_nnx_state(self, injected, tmp_path):
    nnx = pytest.importorskip('flax.nnx')
    ocp = pytest.importorskip('orbax.checkpoint')
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    tx = (optax.inject_hyperparams(optax.adam)(learning_rate=SCHEDULE)
          if injected else optax.adam(SCHEDULE))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    for _ in range(4):
      optimizer.update(model, nnx.grad(
          lambda model: jnp.mean(model(jnp.ones((4, 3))) ** 2))(model))
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / 'ckpt', nnx.state(optimizer))
    checkpointer.wait_until_finished()
    # Variables come back as {'value': array}, tuple positions as '0', '1'.
    restored = checkpointer.restore(tmp_path / 'ckpt')
    checkpointer.close()
    _assert_reads_rate(restored, EXPECTED[4], injected)

  def test_no_rate_says_what_was_searched_and_what_to_pass(self, tmp_path):
    ocp = pytest.importorskip('orbax.checkpoint')
    state = optax.adam(0.1).init(jnp.zeros(2))
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / 'ckpt', {'opt_state': state})
    checkpointer.wait_until_finished()
    restored = checkpointer.restore(tmp_path / 'ckpt')
    checkpointer.close()
    with pytest.raises(ValueError, match=(
        r"got a list with no such entry \(a plain or nnx.State state is"
        r" searched for a 'hyperparams' mapping.*restore it with one"
        r" \(tx.init\(params\) as the abstract tree\)")):
      optax_clr.current_learning_rate(restored, SCHEDULE)
    with pytest.raises(ValueError, match='holds no learning rate.*got a list'):
      optax_clr.current_learning_rate(restored)


class TestRefuses:

  def test_no_rate(self):
    state = optax.sgd(0.1).init(jnp.zeros(2))
    with pytest.raises(ValueError, match='holds no learning rate'):
      optax_clr.current_learning_rate(state)
    with pytest.raises(ValueError, match='holds no count of a learning-rate'):
      optax_clr.current_learning_rate(state, SCHEDULE)

  def test_a_count_without_its_schedule(self):
    state = optax.adam(SCHEDULE).init(jnp.zeros(2))
    with pytest.raises(ValueError, match='pass that schedule'):
      optax_clr.current_learning_rate(state)

  def test_several_counts(self):
    tx = optax.multi_transform(
        {'a': optax.sgd(SCHEDULE), 'b': optax.adam(SCHEDULE)},
        {'x': 'a', 'y': 'b'})
    state = tx.init({'x': jnp.zeros(1), 'y': jnp.zeros(1)})
    with pytest.raises(ValueError, match=r"holds 2 schedule counts, at "
                       r"opt_state.inner_states\['a'\]"):
      optax_clr.current_learning_rate(state, SCHEDULE)

  def test_schedule_not_callable(self):
    state = optax.sgd(SCHEDULE).init(jnp.zeros(2))
    with pytest.raises(TypeError, match='schedule must be callable, got 0.1'):
      optax_clr.current_learning_rate(state, 0.1)


class TestResumeFromOrbax:
  """A restored checkpoint continues the schedule step for step."""

  @pytest.mark.parametrize('name', ['cooldown', 'wsd_restarts', 'one_cycle'])
  def test_restored_state_continues_the_schedule(self, name, tmp_path):
    ocp = pytest.importorskip('orbax.checkpoint')
    schedule = {
        'cooldown': optax_clr.cooldown_schedule(SCHEDULE, 9, 6),
        'wsd_restarts': optax_clr.wsd_restarts_schedule(
            0.05, [7, 8], [3, 3], warmup_steps=2, rewarmup_steps=2),
        'one_cycle': optax_clr.one_cycle_schedule(0.05, 16),
    }[name]
    tx = optax.adamw(schedule, weight_decay=0.01)
    target = jnp.arange(4.0)

    @jax.jit
    def train_step(params, opt_state):
      grads = jax.grad(lambda p: jnp.sum((p - target) ** 2))(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      return params, opt_state, optax_clr.current_learning_rate(
          opt_state, schedule)

    def run(params, opt_state, steps):
      logged = []
      for _ in range(steps):
        params, opt_state, lr = train_step(params, opt_state)
        logged.append(float(lr))
      return params, opt_state, logged

    params = jnp.zeros(4)
    full_params, _, full_rates = run(params, tx.init(params), 16)
    # Jitted and eager float32 may differ in the last bits.
    np.testing.assert_allclose(
        full_rates, [float(schedule(k)) for k in range(16)], rtol=1e-5)

    half_params, half_state, first = run(params, tx.init(params), 7)
    checkpointer = ocp.StandardCheckpointer()
    path = tmp_path / 'step_7'
    checkpointer.save(path, {'params': half_params, 'opt_state': half_state})
    checkpointer.wait_until_finished()
    fresh = jnp.zeros(4)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                            {'params': fresh, 'opt_state': tx.init(fresh)})
    restored = checkpointer.restore(path, abstract)
    checkpointer.close()
    np.testing.assert_allclose(
        optax_clr.current_learning_rate(restored['opt_state'], schedule),
        first[-1], rtol=1e-6)
    end_params, _, rest = run(restored['params'], restored['opt_state'], 9)
    assert first + rest == full_rates
    np.testing.assert_array_equal(end_params, full_params)
