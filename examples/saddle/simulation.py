r"""Noisy gradient descent near a strict saddle, every schedule and seed at once.

The objective ``f(x, y) = x^2 - y^2 + y^4 / 2`` has a saddle at the origin
and minima at ``(0, +-1)``; :func:`simulate` runs every schedule on every
noise draw as one compiled program, :func:`summarize` reads one schedule's
escape statistics on the host.
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

SADDLE = (0.0, 0.0)
MINIMA = ((0.0, 1.0), (0.0, -1.0))
MIN_VALUE = -0.5
START = (0.2, 0.0)
# Gradient descent is stable at the minima (curvatures 2 and 4) for eta < 0.5.
STABLE_LR = 0.5


def objective(params: jax.typing.ArrayLike) -> jax.Array:
  r"""The test function, on the last axis of ``params``.

  .. math::

    f(x, y) = x^2 - y^2 + \tfrac{1}{2} y^4

  Args:
    params: an array whose last axis holds ``(x, y)``.

  Returns:
    The value of ``f`` with the last axis reduced.
  """
  params = jnp.asarray(params)
  x, y = params[..., 0], params[..., 1]
  return x**2 - y**2 + 0.5 * y**4


def gradient(params: jax.typing.ArrayLike) -> jax.Array:
  r"""The exact gradient of :func:`objective`, by ``jax.grad``.

  .. math::

    \nabla f(x, y) = (2x,\; -2y + 2y^3)

  Args:
    params: a ``(2,)`` array ``(x, y)``.

  Returns:
    The ``(2,)`` gradient.
  """
  return jax.grad(objective)(jnp.asarray(params, jnp.float32))


class Simulation(NamedTuple):
  """What :func:`simulate` returns; ``P`` schedules, ``S`` seeds, ``T`` steps.

  Attributes:
    lrs: ``(P, T)``, the rate of update ``t``: ``schedule(t)``.
    paths: ``(P, S, T + 1, 2)``, the iterates ``theta_0 ... theta_T``.
    losses: ``(P, S, T + 1)``, ``f`` at each iterate.
    escaped: ``(P, S)`` bool, whether ``f < escape_loss`` at some iterate.
    escape_step: ``(P, S)`` int, the first ``t`` with ``f(theta_t) <
      escape_loss``, or ``-1`` if none.
  """

  lrs: jax.Array
  paths: jax.Array
  losses: jax.Array
  escaped: jax.Array
  escape_step: jax.Array


def _run(
    lrs: jax.Array,
    key: jax.Array,
    start: jax.Array,
    noise: jax.Array,
) -> jax.Array:
  """One run: noisy gradient descent with the rates ``lrs``; ``(T + 1, 2)``."""

  def step(params, inputs):
    lr, step_key = inputs
    xi = jax.random.normal(step_key, (2,), params.dtype)
    params = params - lr * (gradient(params) + noise * xi)
    return params, params

  keys = jax.random.split(key, lrs.shape[0])
  _, path = jax.lax.scan(step, start, (lrs, keys))
  return jnp.concatenate([start[None], path])


def simulate(
    schedules: Sequence[optax.Schedule],
    *,
    steps: int,
    seeds: int,
    noise: float,
    start: Sequence[float] = START,
    escape_loss: float = -0.25,
    key: int = 0,
) -> Simulation:
  r"""Runs every schedule on ``seeds`` noise draws, in one compiled program.

  .. math::

    \theta_0 = \text{start}, \quad
    \theta_{t+1} = \theta_t - \text{schedule}(t)
      \left(\nabla f(\theta_t) + \text{noise} \cdot \xi_{s,t}\right)

  for ``t < steps``, with the same ``xi_{s, t}`` for every schedule.
  ``jax.vmap`` maps over schedules and seeds and ``jax.lax.scan`` over steps
  inside one ``jax.jit``.

  Args:
    schedules: the learning-rate schedules, ``P`` of them.
    steps: updates per run, ``T``.
    seeds: runs per schedule, ``S``.
    noise: the gradient-noise scale ``sigma``, ``>= 0``.
    start: the initial ``(x, y)``.
    escape_loss: a run has escaped once ``f < escape_loss``.
    key: the PRNG seed.

  Returns:
    A :class:`Simulation`.
  """
  schedules = tuple(schedules)

  @jax.jit
  def program(base_key, start, noise):
    counts = jnp.arange(steps)
    lrs = jnp.stack([jnp.asarray(s(counts), jnp.float32) for s in schedules])
    run_keys = jax.random.split(base_key, seeds)
    over_seeds = jax.vmap(_run, in_axes=(None, 0, None, None))
    over_both = jax.vmap(over_seeds, in_axes=(0, None, None, None))
    paths = over_both(lrs, run_keys, start, noise)
    losses = objective(paths)
    below = losses < escape_loss
    escaped = jnp.any(below, axis=-1)
    escape_step = jnp.where(escaped, jnp.argmax(below, axis=-1), -1)
    return Simulation(lrs, paths, losses, escaped, escape_step)

  return program(
      jax.random.key(key),
      jnp.asarray(start, jnp.float32),
      jnp.asarray(noise, jnp.float32),
  )


def summarize(sim: Simulation, index: int) -> dict[str, Any]:
  """Host-side statistics of schedule ``index`` of ``sim``.

  The median and quartiles of the escape step count the runs that never
  escaped as infinitely late, so they are ``None`` when at most half (a
  quarter, three quarters) of the runs escaped.

  Args:
    sim: a :class:`Simulation`.
    index: which schedule.

  Returns:
    A JSON-ready dict of rates, escape statistics and final losses.
  """
  lrs = np.asarray(sim.lrs[index], np.float64)
  escaped = np.asarray(sim.escaped[index])
  step = np.asarray(sim.escape_step[index], np.float64)
  step = np.where(escaped, step, np.inf)
  final = np.asarray(sim.losses[index, :, -1], np.float64)
  finite = np.isfinite(final)
  q25, q50, q75 = np.percentile(step, [25, 50, 75], method='lower')
  fraction = float(np.mean(escaped))

  def steps_or_none(value):
    return int(value) if np.isfinite(value) else None

  return {
      'peak_lr': float(lrs.max()),
      'mean_lr': float(lrs.mean()),
      'final_lr': float(lrs[-1]),
      'cumulative_lr': float(lrs.sum()),
      'runs': int(escaped.size),
      'escaped_fraction': fraction,
      'escaped_stderr': float(np.sqrt(fraction * (1 - fraction) / escaped.size)),
      'median_escape_step': steps_or_none(q50),
      'cumulative_lr_to_median_escape': (
          float(lrs[: int(q50)].sum()) if np.isfinite(q50) else None
      ),
      'escape_step_q25': steps_or_none(q25),
      'escape_step_q75': steps_or_none(q75),
      'final_loss_mean': float(np.mean(final[finite])) if finite.any() else None,
      'final_loss_std': float(np.std(final[finite])) if finite.any() else None,
      'diverged_fraction': float(np.mean(~finite)),
  }
