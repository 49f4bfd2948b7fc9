r"""The learning-rate-free optimizers of ``optax.contrib``: the suite's baselines.

A user who wants the rate chosen for them can skip choosing it: these
optimizers need no rate (or take ``learning_rate=1.0`` as a multiplier of the
step size they estimate). Each is trained at its library defaults on every
task, for the task's budget, with the grid's seeds (initialization, data
order, dropout key: :func:`benchmarks._suggest_tasks.training`), one
:func:`optax_clr.sweep` program per optimizer, and scored like a grid point
(:func:`benchmarks._suggest_tasks.final_scores`).

* ``prodigy``, ``dadapt_adamw``, ``dog``, ``dowg``, ``cocob``: called with
  no arguments.
* ``mechanize``: wraps the task's own optimizer at rate 1.0, its documented
  use ("a learning rate schedule with base learning rate set to 1.0"),
  behind the task's warmup where it has one.
* ``schedule_free_adamw``: its default rate (0.0025), scored at
  ``optax.contrib.schedule_free_eval_params`` (the averaged ``x`` sequence,
  not the ``y`` the gradients were taken at; :func:`schedule_free_eval_model`),
  with BatchNorm statistics recomputed at those params
  (:func:`refresh_batch_stats`).

A run that ends with a non-finite test score or loss, or an optimizer whose
program fails (its error recorded), scores what a model that learned nothing
scores.
"""

from collections.abc import Callable
import time
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_clr
from benchmarks import _suggest_tasks as tasks_lib

SCHEDULE_FREE = 'contrib.schedule_free_adamw() at eval params'
MECHANIZE = 'contrib.mechanize(task optimizer at 1.0)'
# Batches run through a schedule-free model in training mode before it is
# evaluated, so that its BatchNorm statistics are those of the evaluation
# params (the tasks' BatchNorm momentum is 0.9: 0.9 ** 50 < 1 % is left of
# the statistics gathered at the training params).
REFRESH_STEPS = 50


def _mechanize(task: tasks_lib.Task) -> optax.GradientTransformation:
  """The task's optimizer at rate 1.0 (its warmup kept), under Mechanic."""
  rate = tasks_lib.with_warmup(task, optax.constant_schedule(1.0), 1.0)
  return optax.contrib.mechanize(tasks_lib.optimizer(task)(rate))


# {row name: optimizer(task) -> GradientTransformation}, at library defaults.
OPTIMIZERS: dict[str, Callable[[tasks_lib.Task],
                               optax.GradientTransformation]] = {
    'contrib.prodigy()': lambda task: optax.contrib.prodigy(),
    'contrib.dadapt_adamw()': lambda task: optax.contrib.dadapt_adamw(),
    'contrib.dog()': lambda task: optax.contrib.dog(),
    'contrib.dowg()': lambda task: optax.contrib.dowg(),
    'contrib.cocob()': lambda task: optax.contrib.cocob(),
    MECHANIZE: _mechanize,
    SCHEDULE_FREE: lambda task: optax.contrib.schedule_free_adamw(),
}


def schedule_free_eval_model(model: nnx.Module, opt_state: Any, *,
                             wrt: Any = nnx.Param) -> nnx.Module:
  """A copy of ``model`` at schedule-free's evaluation params.

  Schedule-free optimizers take gradients at one sequence of params (``y``,
  what the module holds while training) and evaluate at another (``x``):
  ``optax.contrib.schedule_free_eval_params(opt_state, params)`` computes
  ``x`` from ``y`` and the state's ``z``. It maps over ``params`` and ``z``
  together, so both must be pure trees of the same structure, and an NNX
  module is neither: its params are ``nnx.Param`` variables inside a module,
  and ``nnx.Optimizer`` keeps ``opt_state`` with every leaf wrapped in an
  ``OptVariable`` (passing them as they are fails with "pytree structure
  error: different types at key path ... Param ... OptVariable"). So:

  1. ``nnx.split(model, wrt, ...)`` takes the params out of the module (the
     ``wrt`` the optimizer was built with), the rest kept apart;
  2. ``nnx.as_pure`` strips the variable wrappers off the params and off
     ``opt_state`` (a no-op on a state that is pure already);
  3. ``schedule_free_eval_params`` gives the evaluation params;
  4. ``nnx.merge`` builds a copy of the module and ``nnx.update`` puts the
     evaluation params in it; ``model`` itself keeps ``y``, so training can
     go on from it.

  Batch statistics in the copy were gathered at ``y``; a module with
  BatchNorm needs them recomputed at ``x`` (:func:`refresh_batch_stats`)
  before its evaluation means anything.

  Args:
    model: the module being trained (at ``y``); not modified.
    opt_state: the schedule-free optimizer's state: ``nnx.Optimizer``'s
      ``opt_state``, or a pure optax state (:func:`optax_clr.sweep`'s).
    wrt: the filter of the trained variables, ``nnx.Optimizer``'s ``wrt``.

  Returns:
    A new module, equal to ``model`` but for its ``wrt`` variables, which
    hold the evaluation params.

  Examples:
    >>> import jax.numpy as jnp
    >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    >>> tx = optax.contrib.schedule_free_adamw()
    >>> optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    >>> loss = lambda m: jnp.sum(m(jnp.ones((1, 2))) ** 2)
    >>> for _ in range(3):
    ...   _ = optimizer.update(model, nnx.grad(loss)(model))
    >>> eval_model = schedule_free_eval_model(model, optimizer.opt_state)
    >>> bool(jnp.allclose(eval_model.kernel[...], model.kernel[...]))
    False
  """
  graphdef, params, rest = nnx.split(model, wrt, ...)
  eval_params = optax.contrib.schedule_free_eval_params(
      nnx.as_pure(opt_state), nnx.as_pure(params))
  eval_model = nnx.merge(graphdef, params, rest, copy=True)
  nnx.update(eval_model, eval_params)
  return eval_model


def refresh_batch_stats(stateful_loss: Callable[..., Any], params: Any,
                        model_state: Any, batches: Any, key: jax.Array) -> Any:
  """``model_state`` after the training-mode forward passes of ``batches``.

  Recomputes BatchNorm's running statistics at ``params`` (nothing is
  trained): the schedule-free authors' advice for a model with BatchNorm,
  whose statistics were gathered at the params the gradients were taken at.
  Step ``t`` reseeds the random streams from ``fold_in(key, t)``.
  """
  def body(state, inputs):
    t, batch = inputs
    return stateful_loss(params, state, batch,
                         jax.random.fold_in(key, t))[1], None

  steps = jnp.arange(jax.tree.leaves(batches)[0].shape[0])
  return jax.lax.scan(body, model_state, (steps, batches))[0]


def _has_batch_stats(graphdef: Any, params: Any, model_state: Any) -> bool:
  take = lambda tree: jax.tree.map(lambda x: x[0], tree)
  module = nnx.merge(graphdef, take(params), take(model_state))
  return bool(jax.tree.leaves(nnx.state(module, nnx.BatchStat)))


def _scorer(inputs: tasks_lib.Training, schedule_free: bool,
            num_steps: int) -> Callable[..., Any]:
  """``score(params, model_state, opt_state, batches, key) -> metrics``."""
  if not schedule_free:
    return lambda params, state, *_: inputs.evaluate(params, state)
  refresh = inputs.model_state is not None and _has_batch_stats(
      inputs.graphdef, inputs.params, inputs.model_state)

  def score(params, state, opt_state, batches, key):
    states = (params,) if state is None else (params, state)
    model = nnx.merge(inputs.graphdef, *states, copy=True)
    _, params, rest = nnx.split(
        schedule_free_eval_model(model, opt_state), nnx.Param, ...)
    if refresh:
      rest = refresh_batch_stats(
          inputs.stateful_loss, params, rest,
          batches[-REFRESH_STEPS:], jax.random.fold_in(key, num_steps))
    return inputs.evaluate(params, rest if state is not None else None)

  return score


def train_one(task: tasks_lib.Task, name: str, inputs: tasks_lib.Training,
              num_steps: int) -> dict[str, Any]:
  """One optimizer on one task, every seed in one program; its record.

  Returns:
    ``{"seed_scores", "diverged_seeds", "error", "seconds"}``:
    ``seed_scores[k]`` scored by
    :func:`benchmarks._suggest_tasks.final_scores`, in seed order.
  """
  tx = OPTIMIZERS[name](task)
  num_seeds = inputs.batches.shape[0]
  start = time.perf_counter()
  try:
    result = optax_clr.sweep(
        inputs.loss, inputs.params, lambda hp: tx, {}, inputs.batches,
        params_axis=0, batches_axis=0, model_state=inputs.model_state,
        key=inputs.keys)
    score = jax.jit(jax.vmap(_scorer(inputs, name == SCHEDULE_FREE,
                                     num_steps)))
    metrics = jax.tree.map(np.asarray, score(
        result.params, result.model_state, result.opt_state,
        inputs.batches, inputs.keys))
  except Exception as error:  # pylint: disable=broad-exception-caught
    # A baseline that cannot train is reported, not allowed to end the suite.
    message = f'{type(error).__name__}: {error}'[:500]
    print(f'  {name}: failed ({message})', flush=True)
    baseline = tasks_lib.baseline_score(task)
    return {'seed_scores': np.full(num_seeds, baseline),
            'diverged_seeds': num_seeds, 'error': message,
            'seconds': time.perf_counter() - start}
  finite = np.isfinite(metrics['score']) & np.isfinite(metrics['loss'])
  return {
      'seed_scores': tasks_lib.final_scores(
          task, metrics['score'], metrics['loss']),
      'diverged_seeds': int(num_seeds - finite.sum()),
      'error': None,
      'seconds': time.perf_counter() - start,
  }


def train(task: tasks_lib.Task, seeds, num_steps: int) -> dict[str, dict]:
  """Every optimizer of :data:`OPTIMIZERS` on ``task``: ``{name: record}``."""
  inputs = tasks_lib.training(task, seeds, num_steps)
  return {name: train_one(task, name, inputs, num_steps)
          for name in OPTIMIZERS}
