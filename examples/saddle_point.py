r"""Saddle-point escape under every learning-rate policy, measured.

The seed argues that a decaying learning rate can get stuck at a saddle point
while a cyclical one periodically grows large enough to leave it. This script
puts the claim to a test on a two-dimensional objective with one strict
saddle and two lower basins:

.. math::

  f(x, y) = x^2 - y^2 + \tfrac{1}{2} y^4, \qquad
  \nabla f(x, y) = (2x,\; -2y + 2y^3).

The saddle is ``(0, 0)`` with ``f = 0`` and Hessian ``diag(2, -2)``; the
minima are ``(0, +-1)`` with ``f = -1/2`` and Hessian ``diag(2, 4)``. Every
run starts near the saddle at ``(0.2, 0)``, on its stable manifold (the ``x``
axis): without noise gradient descent slides into the saddle and stays
there. The optimizer is gradient descent on a noisy gradient (a stand-in for
SGD),

.. math::

  \theta_{t+1} = \theta_t - \eta_t \left(\nabla f(\theta_t)
    + \sigma \xi_t\right), \qquad \xi_t \sim \mathcal{N}(0, I_2),

with ``eta_t = schedule(t)``. A run has *escaped* at the first step where
``f < escape_loss`` (default ``-0.25``, half way down to a minimum).

Near the saddle the coordinates decouple and ``y`` obeys
``y_{t+1} = (1 + 2 eta_t) y_t - eta_t sigma xi_t``: the noise seeds a
deviation of about ``sigma sqrt(eta) / 2`` and the instability multiplies it
by ``exp(2 sum_t eta_t)``. To first order, escape is therefore decided by the
cumulative learning rate ``sum_t eta_t`` (the gradient-flow time), and only
logarithmically by the noise and by how the rate is spread over the steps.
That is why the tables report the mean rate, and the sum of the rates up to
the median escape, next to the escape statistics.

Seven policies, all built with ``optax_clr``: fixed, step decay, exponential
decay, inverse-time decay, and triangular, triangular2 and exp_range CLR.
Their shapes span a training run of ``T = saddle_at + steps`` steps, of
which the last ``steps`` are simulated (the run reaches the start point
``saddle_at`` steps into training): the decays fall to ``--decay-to`` of
their initial rate at step ``T``, the cycles have ``--cycles`` periods in
``T`` with ``base_lr = --base-fraction * max_lr`` (the usual "a quarter of
``max_lr``"), and exp_range's amplitude falls to ``--decay-to`` at ``T``.
Two budgets make the policies comparable:

* ``peak``: every policy's largest rate is ``--lr`` (the fixed rate, the
  decays' initial rate, the cycles' ``max_lr``). This is how schedules are
  usually compared in practice: one rate read off a range test, used as the
  initial rate of a decay or the peak of a cycle.
* ``mean``: every shape is rescaled so that its mean rate over the ``T``
  training steps is ``--mean-lr``. This equalises the cumulative rate, the quantity that
  governs escape, and so asks whether the *shape* matters on its own.

All policies, budgets and seeds run as one ``jax.jit``-compiled program:
``jax.vmap`` over policies and seeds, ``jax.lax.scan`` over steps. Seed ``s``
draws the same noise under every policy (common random numbers). Run::

  python examples/saddle_point.py --out docs/saddle_point

to write ``summary.md`` (one row per policy), ``table.md`` (one row per
scenario and policy), ``results.json``, ``trajectories.png`` and
``loss_lr.png`` under ``--out``. By default two scenarios are run: the saddle
is met at the start of training (``--saddle-at 0``, the decays' most
favourable case) and 1000 steps into it (the usual case: the rate has
already decayed when the saddle is met). :func:`simulate` is the core that
tests call on a few seeds and steps.
"""

import argparse
from collections.abc import Sequence
import json
import os
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_clr

POLICIES = (
    'fixed',
    'step_decay',
    'exponential_decay',
    'inverse_time_decay',
    'triangular',
    'triangular2',
    'exp_range',
)
BUDGETS = ('peak', 'mean')
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


def policy_schedule(
    policy: str,
    peak_lr: float,
    *,
    steps: int,
    decay_to: float = 0.01,
    cycles: int = 5,
    base_fraction: float = 0.25,
) -> optax.Schedule:
  r"""Builds one policy with ``optax_clr`` so that its largest rate is ``peak_lr``.

  With ``T = steps`` and ``d = decay_to``:

  .. math::

    \begin{aligned}
    \text{fixed:}\quad & \eta_t = \eta \\
    \text{step\_decay:}\quad & \eta_t = \eta\, 2^{-\lfloor t / n \rfloor},
      \; n = \lceil T / \log_2(1/d) \rceil \\
    \text{exponential\_decay:}\quad & \eta_t = \eta\, d^{t/T} \\
    \text{inverse\_time\_decay:}\quad & \eta_t = \eta / (1 + (1/d - 1)\, t/T)
      \\
    \text{triangular, triangular2, exp\_range:}\quad & \text{CLR from }
      b\eta \text{ to } \eta,\; \text{step\_size} = T / (2\,\text{cycles}),
      \; \gamma = d^{1/T}
    \end{aligned}

  Every policy is linear in ``peak_lr``, which lets :func:`budget_schedules`
  rescale a shape to a given mean.

  Args:
    policy: one of :data:`POLICIES`.
    peak_lr: the fixed rate, the decays' initial rate, the cycles' ``max_lr``.
    steps: the length of the run, ``T``.
    decay_to: the fraction of the initial rate the decays (and exp_range's
      amplitude) reach at step ``T``.
    cycles: the number of CLR cycles in the run.
    base_fraction: ``base_lr / max_lr`` for the cycles, ``b``.

  Returns:
    schedule
      A function that maps step counts to values.

  Raises:
    ValueError: ``policy`` is unknown.
  """
  step_size = max(1, steps // (2 * cycles))
  if policy == 'fixed':
    return lambda count: jnp.full(jnp.shape(count), peak_lr, jnp.float32)
  if policy == 'step_decay':
    drop_every = max(1, int(np.ceil(steps / np.log2(1.0 / decay_to))))
    return optax_clr.step_decay_schedule(peak_lr, drop_every, factor=0.5)
  if policy == 'exponential_decay':
    return optax_clr.exponential_decay_schedule(
        peak_lr, decay_to, decay_steps=steps
    )
  if policy == 'inverse_time_decay':
    return optax_clr.inverse_time_decay_schedule(
        peak_lr, 1.0 / decay_to - 1.0, decay_steps=steps
    )
  base_lr = base_fraction * peak_lr
  if policy == 'triangular':
    return optax_clr.triangular_schedule(base_lr, peak_lr, step_size)
  if policy == 'triangular2':
    return optax_clr.triangular2_schedule(base_lr, peak_lr, step_size)
  if policy == 'exp_range':
    gamma = float(decay_to ** (1.0 / steps))
    return optax_clr.exp_range_schedule(
        base_lr, peak_lr, step_size, gamma=gamma
    )
  raise ValueError(f'policy must be one of {POLICIES}, got {policy!r}.')


def mean_rate(schedule: optax.Schedule, steps: int) -> float:
  """The mean of ``schedule(t)`` over ``t = 0, ..., steps - 1``."""
  return float(np.mean(np.asarray(schedule(jnp.arange(steps)), np.float64)))


def shifted(schedule: optax.Schedule, offset: int) -> optax.Schedule:
  """``count -> schedule(count + offset)``: the run starts ``offset`` late."""
  if offset == 0:
    return schedule
  return lambda count: schedule(jnp.asarray(count) + offset)


def budget_schedules(
    budget: str,
    *,
    lr: float,
    mean_lr: float,
    steps: int,
    saddle_at: int = 0,
    **shape: Any,
) -> list[optax.Schedule]:
  r"""One schedule per policy in :data:`POLICIES`, under one budget.

  The shapes span a training run of ``T = saddle_at + steps`` steps, of
  which the simulation sees the last ``steps``: the saddle is met
  ``saddle_at`` steps into training. ``budget="peak"`` gives every policy the
  peak rate ``lr``; ``budget="mean"`` rescales each shape ``s`` to

  .. math::

    \eta_t = \text{mean\_lr} \cdot s(t) \Big/ \tfrac{1}{T}
      \textstyle\sum_{u<T} s(u)

  so that all policies spend the same cumulative rate over training.

  Args:
    budget: ``"peak"`` or ``"mean"``.
    lr: the common peak rate of the ``"peak"`` budget.
    mean_lr: the common mean rate of the ``"mean"`` budget.
    steps: the steps simulated from the saddle on.
    saddle_at: the training step at which the run is at the saddle.
    **shape: ``decay_to``, ``cycles``, ``base_fraction`` of
      :func:`policy_schedule`.

  Returns:
    The schedules, in the order of :data:`POLICIES`, shifted so that count 0
    is training step ``saddle_at``.

  Raises:
    ValueError: ``budget`` is unknown.
  """
  if budget not in BUDGETS:
    raise ValueError(f'budget must be one of {BUDGETS}, got {budget!r}.')
  total = saddle_at + steps
  schedules = []
  for policy in POLICIES:
    peak = lr
    if budget == 'mean':
      unit = policy_schedule(policy, 1.0, steps=total, **shape)
      peak = mean_lr / mean_rate(unit, total)
    schedule = policy_schedule(policy, peak, steps=total, **shape)
    schedules.append(shifted(schedule, saddle_at))
  return schedules


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


def _scenario(row: dict[str, Any]) -> str:
  return f"saddle at {row['saddle_at']}, {row['budget']} budget"


def _show_step(value: int | None, steps: int) -> str:
  return f'> {steps}' if value is None else str(value)


def markdown_table(rows: Sequence[dict[str, Any]], *, steps: int) -> str:
  """The full results as a markdown table, one row per scenario and policy."""
  lines = [
      '| saddle at | budget | policy | peak LR | mean LR | escaped |'
      ' median steps to escape [IQR] | sum of LR to median escape |'
      ' final loss (mean ± std) |',
      '|---:|---|---|---:|---:|---:|---:|---:|---:|',
  ]
  for row in rows:
    median = _show_step(row['median_escape_step'], steps)
    low = _show_step(row['escape_step_q25'], steps)
    high = _show_step(row['escape_step_q75'], steps)
    spent = row['cumulative_lr_to_median_escape']
    spent = '-' if spent is None else f'{spent:.2f}'
    if row['diverged_fraction'] > 0:
      loss = f"{row['diverged_fraction']:.0%} diverged"
    else:
      loss = f"{row['final_loss_mean']:.3f} ± {row['final_loss_std']:.3f}"
    lines.append(
        f"| {row['saddle_at']} | {row['budget']} | {row['policy']} |"
        f" {row['peak_lr']:.4f} | {row['mean_lr']:.4f} |"
        f" {row['escaped_fraction']:.0%} ± {row['escaped_stderr']:.0%} |"
        f" {median} [{low}, {high}] | {spent} | {loss} |"
    )
  return '\n'.join(lines) + '\n'


def summary_table(rows: Sequence[dict[str, Any]], *, steps: int) -> str:
  """A compact table: one row per policy, one column per scenario.

  Each cell is ``escaped fraction / median steps to escape (mean LR)``.
  """
  scenarios = list(dict.fromkeys(_scenario(row) for row in rows))
  cells = {(_scenario(row), row['policy']): row for row in rows}
  lines = [
      '| policy | ' + ' | '.join(scenarios) + ' |',
      '|---|' + '---:|' * len(scenarios),
  ]
  for policy in POLICIES:
    shown = []
    for scenario in scenarios:
      row = cells[(scenario, policy)]
      median = _show_step(row['median_escape_step'], steps)
      shown.append(
          f"{row['escaped_fraction']:.0%} / {median}"
          f" ({row['mean_lr']:.4f})"
      )
    lines.append(f'| {policy} | ' + ' | '.join(shown) + ' |')
  return '\n'.join(lines) + '\n'


def _pyplot():
  """matplotlib's pyplot on the Agg backend, imported only when plotting."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top

  return pyplot


def plot_trajectories(
    sim: Simulation,
    scenarios: Sequence[str],
    path: str,
    *,
    shown: int = 8,
) -> None:
  """Draws ``shown`` runs per schedule over the contours of ``f``.

  One row per scenario, one column per policy; escaped runs are blue.
  """
  plt = _pyplot()
  grid = np.linspace(-1.5, 1.5, 241)
  xx, yy = np.meshgrid(grid, grid)
  ff = np.asarray(objective(np.stack([xx, yy], axis=-1)))
  columns = len(POLICIES)
  fig, axes = plt.subplots(
      len(scenarios), columns, figsize=(2.0 * columns, 2.2 * len(scenarios)),
      squeeze=False, sharex=True, sharey=True,
  )
  paths = np.asarray(sim.paths)
  escaped = np.asarray(sim.escaped)
  for index, ax in enumerate(axes.flat):
    scenario, policy = scenarios[index // columns], POLICIES[index % columns]
    ax.contour(xx, yy, ff, levels=np.linspace(-0.45, 2.0, 12), cmap='Greys',
               linewidths=0.5)
    for seed in range(min(shown, paths.shape[1])):
      color = 'tab:blue' if escaped[index, seed] else 'tab:red'
      ax.plot(paths[index, seed, :, 0], paths[index, seed, :, 1], color=color,
              linewidth=0.8, alpha=0.8)
    ax.plot(*SADDLE, 'kx', markersize=6)
    ax.plot(*np.transpose(MINIMA), 'k*', markersize=6)
    ax.set_title(f'{policy}: {escaped[index].mean():.0%}', fontsize=8)
    ax.set_aspect('equal')
    ax.tick_params(labelsize=6)
    if index % columns == 0:
      ax.set_ylabel(scenario.replace(', ', '\n'), fontsize=8)
  start = ', '.join(f'{v:g}' for v in paths[0, 0, 0])
  fig.suptitle(
      f'Noisy gradient descent on x² - y² + y⁴/2 from ({start}): blue escaped,'
      ' red stuck (x saddle, * minima); titles: fraction of all runs escaped',
      fontsize=9,
  )
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_loss_lr(
    sim: Simulation,
    scenarios: Sequence[str],
    path: str,
    *,
    escape_loss: float,
) -> None:
  """Draws the rate and the median loss (with its IQR band) against step."""
  plt = _pyplot()
  lrs = np.asarray(sim.lrs)
  losses = np.asarray(sim.losses, np.float64)
  fig, axes = plt.subplots(
      2, len(scenarios), figsize=(4.2 * len(scenarios), 6.0), squeeze=False,
      sharex=True,
  )
  colors = plt.get_cmap('tab10').colors
  t = np.arange(losses.shape[-1])
  for column, scenario in enumerate(scenarios):
    lr_ax, loss_ax = axes[0, column], axes[1, column]
    for p, policy in enumerate(POLICIES):
      index = column * len(POLICIES) + p
      color = colors[p % len(colors)]
      lr_ax.plot(lrs[index], color=color, linewidth=1.0, label=policy)
      q25, q50, q75 = np.nanpercentile(losses[index], [25, 50, 75], axis=0)
      loss_ax.plot(t, q50, color=color, linewidth=1.0)
      loss_ax.fill_between(t, q25, q75, color=color, alpha=0.15, linewidth=0)
    lr_ax.set_title(scenario, fontsize=9)
    lr_ax.set_yscale('log')
    loss_ax.axhline(escape_loss, color='k', linestyle=':', linewidth=0.8)
    loss_ax.set_ylim(MIN_VALUE - 0.05, 0.1)
    loss_ax.set_xlabel('step of the simulation')
  axes[0, 0].set_ylabel('learning rate')
  axes[1, 0].set_ylabel('loss: median and IQR band')
  axes[0, 0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def run_experiment(
    args: argparse.Namespace,
) -> tuple[Simulation, list[str], list[dict[str, Any]]]:
  """Simulates every (saddle_at, budget, policy) in one compiled program.

  Args:
    args: the options of :func:`parse_args`.

  Returns:
    The :class:`Simulation`, the scenario labels (one per group of
    ``len(POLICIES)`` schedules) and one summary dict per schedule.
  """
  shape = dict(
      decay_to=args.decay_to, cycles=args.cycles,
      base_fraction=args.base_fraction,
  )
  schedules, scenarios, rows = [], [], []
  for saddle_at in args.saddle_at:
    for budget in BUDGETS:
      schedules += budget_schedules(
          budget, lr=args.lr, mean_lr=args.mean_lr, steps=args.steps,
          saddle_at=saddle_at, **shape,
      )
      labels = [{'saddle_at': saddle_at, 'budget': budget, 'policy': policy}
                for policy in POLICIES]
      scenarios.append(_scenario(labels[0]))
      rows += labels
  sim = simulate(
      schedules, steps=args.steps, seeds=args.seeds, noise=args.noise,
      start=args.start, escape_loss=args.escape_loss, key=args.key,
  )
  rows = [{**row, **summarize(sim, index)} for index, row in enumerate(rows)]
  return sim, scenarios, rows


def write_outputs(
    args: argparse.Namespace,
    sim: Simulation,
    scenarios: Sequence[str],
    rows: Sequence[dict[str, Any]],
) -> str:
  """Writes the tables, ``results.json`` and two PNGs under ``args.out``.

  Returns:
    The summary table.
  """
  os.makedirs(args.out, exist_ok=True)
  summary = summary_table(rows, steps=args.steps)
  with open(os.path.join(args.out, 'table.md'), 'w') as f:
    f.write(markdown_table(rows, steps=args.steps))
  with open(os.path.join(args.out, 'summary.md'), 'w') as f:
    f.write(summary)
  record = {
      'objective': 'f(x, y) = x^2 - y^2 + y^4 / 2',
      'escape': f'first step t with f(theta_t) < {args.escape_loss}',
      'config': {k: v for k, v in vars(args).items() if k != 'out'},
      'versions': {
          'python': sys.version.split()[0], 'jax': jax.__version__,
          'optax': optax.__version__, 'numpy': np.__version__,
          'backend': jax.default_backend(),
      },
      'rows': list(rows),
  }
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump(record, f, indent=2)
    f.write('\n')
  plot_trajectories(sim, scenarios, os.path.join(args.out, 'trajectories.png'),
                    shown=args.plot_seeds)
  plot_loss_lr(sim, scenarios, os.path.join(args.out, 'loss_lr.png'),
               escape_loss=args.escape_loss)
  return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """The command-line options; the defaults produced ``docs/saddle_point``."""
  parser = argparse.ArgumentParser(
      description='Saddle-point escape under every learning-rate policy.'
  )
  parser.add_argument('--out', default='runs/saddle_point',
                      help='output folder ("" writes nothing)')
  parser.add_argument('--steps', type=int, default=1000,
                      help='steps simulated from the start point')
  parser.add_argument('--seeds', type=int, default=128,
                      help='runs per policy and scenario')
  parser.add_argument('--noise', type=float, default=0.01,
                      help='gradient-noise scale sigma')
  parser.add_argument('--lr', type=float, default=0.01,
                      help='common peak rate of the "peak" budget')
  parser.add_argument('--mean-lr', type=float, default=0.005,
                      help='common mean rate of the "mean" budget')
  parser.add_argument('--saddle-at', type=int, nargs='+', default=[0, 1000],
                      help='training steps at which the run is at the start'
                      ' point; the schedules span saddle_at + steps')
  parser.add_argument('--decay-to', type=float, default=0.01,
                      help='final / initial rate of the decays')
  parser.add_argument('--cycles', type=int, default=5,
                      help='CLR cycles over the training run')
  parser.add_argument('--base-fraction', type=float, default=0.25,
                      help='base_lr / max_lr of the cycles')
  parser.add_argument('--start', type=float, nargs=2, default=list(START),
                      help='initial (x, y)')
  parser.add_argument('--escape-loss', type=float, default=-0.25,
                      help='a run has escaped once f falls below this')
  parser.add_argument('--key', type=int, default=0, help='PRNG seed')
  parser.add_argument('--plot-seeds', type=int, default=8,
                      help='runs drawn per panel of trajectories.png')
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Runs the experiment, writes ``--out`` and prints the summary table."""
  args = parse_args(argv)
  sim, scenarios, rows = run_experiment(args)
  unstable = sorted({row['policy'] for row in rows
                     if row['peak_lr'] >= STABLE_LR})
  if unstable:
    print(f'note: peak rate >= {STABLE_LR} (unstable at the minima) for'
          f' {", ".join(unstable)}', file=sys.stderr)
  if args.out:
    print(write_outputs(args, sim, scenarios, rows))
  return rows


if __name__ == '__main__':
  main()
