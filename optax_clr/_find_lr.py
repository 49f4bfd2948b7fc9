r"""A learning rate chosen by measurement: range tests, then a verified sweep.

:func:`find_lr` reads a bracket off a few range tests, trains log-spaced
candidates in that bracket as compiled :func:`optax_clr.sweep` programs and
spends most of the budget on the finalists (successive halving). The rate
with the best validation score at the full budget wins.
"""

from collections.abc import Callable
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_clr import _cache
from optax_clr import _checks
from optax_clr import _find_lr_checks
from optax_clr import _find_lr_plan
from optax_clr import _mesh
from optax_clr import _progress
from optax_clr import _range_test
from optax_clr import _strategy
from optax_clr import _suggest
from optax_clr import _sweep

# suggest_clr_bounds' placement, applied to the verified rate: a triangular
# schedule between half and twice it.
CLR_MAX_FACTOR = _suggest.CLR_MAX_FACTOR
CLR_RATIO = 4.0
rung_steps = _find_lr_plan.rung_steps
survivors = _find_lr_plan.survivors


class FindLRResult(NamedTuple):
  r"""What :func:`find_lr` measured, and the rate it chose.

  Attributes:
    learning_rate: the chosen rate, a Python float: the candidate with the
      lowest mean validation score at the last rung.
    candidates: ``[num_candidates]``, the rates tried, increasing.
    scores: ``[num_rungs, num_candidates]``, the mean over seeds of
      ``eval_fn`` after each rung's steps; NaN where a candidate was no
      longer trained, ``+inf`` where any of its seeds diverged.
    seed_scores: ``[num_rungs, num_candidates, num_seeds]``, the same per
      seed.
    rung_steps: ``[num_rungs]``, the updates each rung's survivors have had
      when scored; the last is the whole budget.
    range_test: the :class:`optax_clr.RangeTestResult` of the range tests,
      batched along a leading ``num_range_tests`` axis.
    bracket: ``(low, high)``, the rates the candidates span.
    suggestion: :func:`optax_clr.suggest_lr` of the range tests, the
      bracket's centre before it is capped; NaN where their curve fell
      too little above its scatter to read (the bracket then ends at the
      rate of its lowest loss).
    clr_bounds: ``(base_lr, max_lr)`` for
      :func:`optax_clr.triangular_schedule`, centred on the chosen rate:
      ``max_lr = 2 lr``, ``base_lr = max_lr / 4``.
    cost_steps: every optimizer step trained, range tests included, summed
      over all models.
    params: the parameters of the chosen rate's first seed after the whole
      budget (the data order of ``batches`` as given, ``key`` as given).
    model_state: its model state (None without one).
    opt_state: its optimizer state, ``optimizer(learning_rate).init(params)``
      (with ``schedule``: ``optimizer(schedule(learning_rate))``) advanced
      by the whole budget, so training can go on or be checkpointed from
      it; an ``optax.MultiSteps`` state with ``accumulation_steps > 1``.
  """

  learning_rate: float
  candidates: np.ndarray
  scores: np.ndarray
  seed_scores: np.ndarray
  rung_steps: np.ndarray
  range_test: Any
  bracket: tuple[float, float]
  suggestion: float
  clr_bounds: tuple[float, float]
  cost_steps: int
  params: Any = None
  model_state: Any = None
  opt_state: Any = None


def _sweep_optimizer(optimizer_ref, schedule_ref, accumulation_steps):
  # The user's callables are reached through their refs at each call, never
  # held: the entry is dropped with them.
  def sweep_optimizer(hp):
    lr = hp['learning_rate']
    if schedule_ref is not None:
      lr = schedule_ref()(lr)
    tx = optimizer_ref()(lr)
    if accumulation_steps == 1:
      return tx
    # One update per accumulation_steps microbatches, the schedule's count
    # advancing once per update: the range test's accumulation, as a sweep.
    return optax.MultiSteps(tx, accumulation_steps).gradient_transformation()

  return sweep_optimizer


def _sweep_eval(eval_ref, stateful):
  def sweep_eval(params, model_state, **data):
    if stateful:
      return jnp.asarray(eval_ref()(params, model_state, **data))
    return jnp.asarray(eval_ref()(params, **data))

  return sweep_eval


# One wrapper per user callable, held weakly, so that a second find_lr call
# with the same functions finds its compiled sweeps in the sweep's cache.
_WRAPPERS = _cache.ProgramCache()


def _wrapped(optimizer, schedule, eval_fn, stateful, accumulation_steps):
  sweep_optimizer = _WRAPPERS.get(
      (optimizer,) if schedule is None else (optimizer, schedule),
      ('optimizer', schedule is None, accumulation_steps),
      lambda refs: _sweep_optimizer(
          refs[0], refs[1] if schedule else None, accumulation_steps),
  )
  sweep_eval = _WRAPPERS.get(
      (eval_fn,), ('eval', stateful),
      lambda refs: _sweep_eval(refs[0], stateful),
  )
  return sweep_optimizer, sweep_eval


def _orders(num_steps, length, count, rng, *, identity_first):
  """``count`` orders of ``length`` step indices into ``num_steps`` steps."""
  orders = []
  for i in range(count):
    if identity_first and i == 0:
      orders.append(np.arange(length) % num_steps)
      continue
    repeats = math.ceil(length / num_steps)
    order = np.concatenate([rng.permutation(num_steps) for _ in range(repeats)])
    orders.append(order[:length])
  return np.stack(orders)


def _take(tree, index):
  """``tree[index]`` on every leaf (host arrays and typed keys too)."""
  return jax.tree.map(lambda x: jnp.asarray(x)[index], tree)


def _merge_axes(tree, axis):
  """Axes ``axis`` and ``axis + 1`` of every leaf made one."""
  return jax.tree.map(
      lambda x: x.reshape(*x.shape[:axis], -1, *x.shape[axis + 2:]), tree)


def _with_desc(progress, desc):
  """A ``progress=`` setting with its bar named ``desc``."""
  if progress is False:
    return False
  if progress is True:
    return {'desc': desc}
  if isinstance(progress, dict):
    return {'desc': desc, **progress}
  return {'desc': desc, 'every': progress}


def _bracket(result, span):
  """``(low, high, suggestion)``: the candidates' range, read off the tests.

  A curve that fell, but not clearly above its scatter (a short or noisy
  test), gives no suggestion (NaN): the bracket then ends at its lowest
  loss, and training the candidates decides. A curve that never fell by
  1 % is refused.
  """
  data = _suggest.curves(result)
  _, filtered, valid = _suggest.loss_curve(data)
  try:
    suggestion = _suggest.suggest_lr(result)
  except ValueError as error:
    drop = filtered[0] - np.min(filtered[:valid])
    if not drop > _suggest.FLAT_TOLERANCE * abs(filtered[0]):
      raise ValueError(
          f'find_lr could not read a bracket off the range tests: {error}'
      ) from error
    suggestion = math.nan
  lowest = float(data.lrs[int(np.argmin(filtered[:valid]))])
  high = lowest if math.isnan(suggestion) else min(
      suggestion * 10 ** (span / 2), lowest)
  if data.diverged_lr is not None:
    high = min(high, data.diverged_lr)
  return high / 10**span, high, suggestion


def _scores(evals, losses, num_candidates, num_seeds):
  """Per (candidate, seed) scores, ``+inf`` for a diverged or NaN run; and
  whether each run's training losses stayed finite."""
  evals = np.asarray(evals, np.float64).reshape(num_candidates, num_seeds, -1)
  final = evals[..., -1]
  finite_run = np.all(
      np.isfinite(np.asarray(losses, np.float64)), axis=-1
  ).reshape(num_candidates, num_seeds)
  return np.where(np.isfinite(final) & finite_run, final, np.inf), finite_run


def _all_diverged(rung, first, last, rates, finite_run, tests,
                  range_test_steps):
  """The error for a rung none of whose candidates has a finite score."""
  span = f'rates {rates[0]:.3g} to {rates[-1]:.3g}'
  if np.all(finite_run):
    return ValueError(
        f'eval_fn returned a non-finite score for every candidate ({span})'
        f' after {last} steps, while every training loss was finite: check'
        ' eval_fn (a NaN or inf from the validation data or the metric).'
    )
  if rung > 0:
    return ValueError(
        f'every candidate still trained ({span}) diverged between step'
        f' {first} and step {last}, after finite scores at step {first}:'
        ' these rates hold for a short run only. A schedule whose rate grows'
        ' past what the model takes (schedule=), or a bracket too high:'
        ' check schedule, or lower end_lr or span.'
    )
  diverged = int(np.max(np.asarray(tests.diverged_step)))
  diverged_lr = _suggest.curves(tests).diverged_lr
  return ValueError(
      f'every candidate diverged: {span}, read off range tests that diverged'
      f' at step {diverged} of {range_test_steps}'
      + (f' (lr {diverged_lr:.3g})' if diverged_lr is not None else '')
      + '. Check the model and loss at small rates, or lower start_lr.'
  )


def _check_separable(mean, rates):
  """Refuses first-rung scores that are all equal: nothing was measured."""
  finite = mean[np.isfinite(mean)]
  if finite.size >= 2 and np.all(finite == finite[0]):
    raise ValueError(
        f'find_lr cannot tell the candidates apart: every one of the'
        f' {finite.size} rates from {rates[0]:.3g} to {rates[-1]:.3g} scored'
        f' exactly {finite[0]:.6g}. The score does not depend on the rate:'
        ' eval_fn may ignore the parameters, or the optimizer (or schedule)'
        ' may ignore the learning rate it is given.'
    )


def find_lr(
    loss_fn: Callable[..., Any],
    params: Any,
    optimizer: Callable[..., optax.GradientTransformation],
    batches: Any,
    eval_fn: Callable[..., Any],
    *,
    model_state: Any = None,
    key: jax.Array | None = None,
    has_aux: bool = False,
    data: Any = None,
    schedule: Callable[[Any], optax.Schedule] | None = None,
    num_candidates: int | None = None,
    num_seeds: int | None = None,
    num_rungs: int | None = None,
    reduction: int | None = None,
    span: float = 2.0,
    num_range_tests: int | None = None,
    range_test_steps: int | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    seed: int = 0,
    max_cost: float | None = 1.5,
    accumulation_steps: int = 1,
    mesh: jax.sharding.Mesh | None = None,
    strategy: str = 'auto',
    progress: Any = False,
) -> FindLRResult:
  r"""Chooses a learning rate by training the likely ones and scoring them.

  1. **Range tests.** ``num_range_tests`` LR range tests
     (:func:`optax_clr.range_test` from ``start_lr`` to ``end_lr`` in
     ``range_test_steps`` steps, each on its own order of ``batches``' steps
     and its own key) run one after another, each compiled once.
  2. **Bracket.** With :math:`s` the default suggestion of
     :func:`optax_clr.suggest_lr` (read off the median of the tests),
     :math:`m` the rate at the tests' lowest loss and :math:`d` the rate
     where they diverged, and :math:`w` = ``span`` decades,

     .. math::

       \text{high} = \min(s \cdot 10^{w/2},\ m,\ d), \quad
       \text{low} = \text{high} \cdot 10^{-w}, \quad
       \text{lr}_i = \text{low} \cdot 10^{w\, i / (n - 1)},
       \ i = 0 \ldots n - 1

     for :math:`n` = ``num_candidates``. Where the tests' curve fell too
     little above its scatter for a suggestion (a short test of a noisy
     optimizer), :math:`\text{high} = \min(m, d)`; a curve that never
     fell by 1 % is refused.
  3. **Successive halving.** Rung :math:`r = 0 \ldots R - 1` trains
     :math:`n_r` candidates, :math:`n_0 = n`,
     :math:`n_{r+1} = \lceil n_r / \eta \rceil`, each for ``num_seeds``
     seeds (data orders and keys; seed 0 is ``batches`` in its order and
     ``key`` itself), up to :math:`b_r = \lfloor B / \eta^{R - 1 - r}
     \rfloor` updates of the :math:`B` that ``batches`` holds, as ONE
     :func:`optax_clr.sweep` program per rung. A survivor continues from its
     parameters and optimizer state (``sweep(..., opt_state=)``), so the
     finalists' runs equal uninterrupted runs of the whole budget. After
     each rung every run is scored with ``eval_fn``; a candidate's score is
     the mean over its seeds, ``+inf`` if any seed diverged (a non-finite
     loss or score), and the :math:`n_{r+1}` best go on.
  4. The candidate with the best score at the last rung is the rate (of
     equal scores, the smaller rate).

  Nothing is chosen silently from runs that say nothing: a rung whose every
  candidate diverged is an error (naming ``eval_fn`` when only the scores
  were non-finite), and so is a first rung whose candidates all score the
  same (an ``eval_fn``, optimizer or schedule that ignores the rate).

  **Cost.** Every update of every model counts, range tests included:
  :math:`C = T m + s \sum_r n_r (b_r - b_{r-1})` for :math:`T` range tests
  of :math:`m` steps and :math:`s` seeds (``result.cost_steps``). By default
  (``max_cost=1.5``, the self-tuning budget of the AlgoPerf benchmark) the
  options left as None are filled with the largest search with
  :math:`C \le 1.5 B`: one range test of :math:`B / 8` steps (10 to 100),
  then one seed of up to 8 candidates to :math:`B / 8`, the best continued
  to :math:`B` (4 candidates: :math:`B/8 + 4 B/8 + 7 B/8 = 1.5 B`). With
  ``max_cost=None`` they take the thorough search's values (8 candidates,
  2 seeds, 3 rungs, :math:`\eta = 2`, three 100-step range tests:
  :math:`8 B + 300` updates). Measured on the 15 tasks of
  ``docs/suggestion_quality.md`` (5 to choose, 10 held out), the default's
  worst regret was below the thorough search's on both halves, its mean
  regret a little above. The winner's run is the training run:
  ``result.params``, ``model_state`` and ``opt_state`` are its state after
  the whole budget, equal to an uninterrupted run at
  the chosen rate. In wall time: on the example trainer's CNN (digits, a
  352-step run of 13 s on 2 CPU cores) the thorough search took 29 s
  (``docs/find_lr.md``).

  Hyperparameters that are not concrete (traced under ``jit`` or ``vmap``)
  are not checked: ``find_lr`` is a host-side driver, call it outside
  ``jit``.

  Args:
    loss_fn: the training loss, with the conventions of
      :func:`optax_clr.range_test` (``loss_fn(params, batch)``,
      ``loss_fn(params, model_state, batch)`` returning ``(loss,
      new_model_state)`` with ``model_state``, ``(loss, aux)`` with
      ``has_aux``, the keyword ``key=`` with ``key`` and ``data=`` with
      ``data``).
    params: the initial parameters, shared by every run.
    optimizer: a factory of the learning rate, as for
      :func:`optax_clr.range_test`: ``optax.adam``,
      ``functools.partial(optax.sgd, momentum=0.9)``.
    batches: a pytree of arrays with a leading axis of :math:`B` steps: the
      budget the rate is chosen for. The range tests and the candidates
      draw from it.
    eval_fn: ``eval_fn(params)`` (``eval_fn(params, model_state)`` with
      ``model_state``; plus ``data=`` with ``data``) returning a real scalar,
      lower is better: a validation loss or error rate on data held out from
      training.
    model_state: a pytree threaded through training (batch statistics), or
      None.
    key: a ``jax.random`` key for dropout, or None. Seed :math:`j > 0`
      trains with ``jax.random.fold_in(key, j)``; the range tests with keys
      split from ``jax.random.fold_in(key, num_seeds)``.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    data: arrays shared by every step, passed as ``data=`` (see
      :func:`optax_clr.sweep`); index ``batches`` into it to keep the
      per-seed copies of ``batches`` small.
    schedule: None to train each candidate at the fixed rate, or
      ``schedule(lr) -> optax.Schedule`` (a warmup and decay to a peak
      ``lr``, say) to choose the peak of that schedule. The range test
      ramps the rate itself either way. ``lr`` is traced (every candidate
      trains in one program), so the factory must not test it in Python:
      ``optax.warmup_cosine_decay_schedule`` does, and is refused with the
      ``optax.join_schedules`` form that does not.
    num_candidates: :math:`n \ge 2`, the rates of the first rung.
    num_seeds: ``>= 1`` runs per candidate.
    num_rungs: :math:`R \ge 1`; 1 trains every candidate for the whole
      budget.
    reduction: :math:`\eta \ge 2`, the survivors' fraction per rung.
    span: :math:`w > 0`, the bracket's width in decades.
    num_range_tests: ``>= 1`` range tests read through their median.
    range_test_steps: the steps of each range test, ``>= 2`` (drawn with
      repetition when ``batches`` holds fewer).
    start_lr: the range tests' first rate.
    end_lr: the range tests' last rate.
    seed: seeds the data orders (NumPy's ``default_rng``).
    max_cost: the bound on the whole cost in budgets, :math:`C \le`
      ``max_cost`` :math:`\cdot B` (``>= 1``; the self-tuning track of the
      AlgoPerf benchmark grants 1.5): the options left as None are filled
      with the largest search that fits, and a search that cannot fit is
      refused before anything trains. None: no bound, the thorough search.
    accumulation_steps: :math:`A \ge 1` microbatches per optimizer step:
      ``batches`` then holds :math:`B \cdot A` microbatches, the range tests
      run with ``accumulation_steps=A`` and the candidates' optimizers are
      wrapped in ``optax.MultiSteps(tx, A)``, so the rate (and a schedule's
      count) moves once per update. Steps, rungs and ``cost_steps`` count
      updates; each is :math:`A` forward and backward passes.
    mesh: where the candidates' sweeps run: as ``mesh`` of
      :func:`optax_clr.sweep` (None: every device of every process). The
      range tests, a few hundred steps, run on each process's default
      device.
    strategy: as for :func:`optax_clr.sweep`, for the range tests and every
      rung: ``"auto"`` (a host loop of one compiled step for a convolution
      on CPU, one scanned program otherwise), ``"scan"`` or ``"loop"``.
    progress: as for :func:`optax_clr.sweep`: a bar for each range test and
      one per rung (needs tqdm, the ``progress`` extra).

  Returns:
    result
      A :class:`FindLRResult`; ``result.learning_rate`` is the rate.

  Raises:
    ValueError: a bad option, named (``num_rungs`` beyond what ``batches``
      holds, ``span`` beyond float32's range); ``eval_fn`` not returning one
      real scalar; a single ``key`` expected; a mesh without a ``models``
      axis; a budget too short for the rungs. Also, after training: range
      tests whose loss never improves; a ``span`` whose candidates float32
      would zero or merge; every candidate of a rung diverging (with the
      range tests' divergence point at the first rung); candidates that all
      score the same.
    TypeError: a callable argument that is not callable, an optimizer that
      does not return an ``optax.GradientTransformation``, a ``schedule``
      that cannot take a traced rate or returns no schedule, a parameter
      leaf that is not floating point, a ``key`` that is not a
      ``jax.random`` key.

  Examples:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import optax
    >>> import optax_clr
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(240, 16, 4)).astype(np.float32)
    >>> w_true = np.arange(1.0, 5.0, dtype=np.float32)
    >>> batches = {'x': x[:200], 'y': x[:200] @ w_true}
    >>> loss_fn = lambda w, b: jnp.mean((b['x'] @ w - b['y']) ** 2)
    >>> eval_fn = lambda w: jnp.mean((x[200:] @ w - x[200:] @ w_true) ** 2)
    >>> result = optax_clr.find_lr(
    ...     loss_fn, jnp.zeros(4), optax.sgd, batches, eval_fn)
    >>> bool(result.bracket[0] <= result.learning_rate <= result.bracket[1])
    True
    >>> result.scores.shape, result.cost_steps  # 25 + 4 x 25 + 175 = 1.5 B
    ((2, 4), 300)
    >>> thorough = optax_clr.find_lr(
    ...     loss_fn, jnp.zeros(4), optax.sgd, batches, eval_fn, max_cost=None)
    >>> thorough.scores.shape, thorough.cost_steps  # 3 x 100 + 8 x 200
    ((3, 8), 1900)

  References:
    Smith, `Cyclical Learning Rates for Training Neural Networks
    <https://arxiv.org/abs/1506.01186>`_, 2015, section 3.3.

    Jamieson and Talwalkar, `Non-stochastic Best Arm Identification and
    Hyperparameter Optimization <https://arxiv.org/abs/1502.07943>`_, 2016
    (successive halving).
  """
  loss_fn = _checks.check_callable('loss_fn', loss_fn)
  optimizer = _checks.check_callable('optimizer', optimizer)
  eval_fn = _checks.check_callable('eval_fn', eval_fn)
  if schedule is not None:
    schedule = _checks.check_callable('schedule', schedule)
  has_aux = _checks.check_bool('has_aux', has_aux)
  _checks.check_number('span', span, lower=0.0, lower_open=True)
  _find_lr_checks.check_span(float(span))
  if max_cost is not None:
    _checks.check_number('max_cost', max_cost, lower=1.0)
    max_cost = float(max_cost)
  _checks.check_step_count('seed', seed, minimum=0)
  _checks.check_step_count('accumulation_steps', accumulation_steps)
  accumulation_steps = int(accumulation_steps)
  _progress.check(progress)
  strategy = _strategy.check(strategy)
  num_steps = _sweep._num_steps(batches, None)  # pylint: disable=protected-access
  if num_steps % accumulation_steps:
    raise ValueError(
        f'batches holds {num_steps} microbatches, not a multiple of'
        f' accumulation_steps={accumulation_steps}.'
    )
  num_steps //= accumulation_steps
  plan = _find_lr_plan.resolve(
      num_steps, max_cost, num_candidates=num_candidates,
      num_seeds=num_seeds, num_rungs=num_rungs, reduction=reduction,
      num_range_tests=num_range_tests, range_test_steps=range_test_steps)
  num_candidates, num_seeds = plan.num_candidates, plan.num_seeds
  num_rungs, reduction = plan.num_rungs, plan.reduction
  num_range_tests, range_test_steps = (plan.num_range_tests,
                                       plan.range_test_steps)
  microbatches = lambda tree, axis: tree
  if accumulation_steps > 1:
    # From here on a step is an update, its microbatches along axis 1.
    batches = jax.tree.map(
        lambda x: jnp.asarray(x).reshape(
            num_steps, accumulation_steps, *x.shape[1:]), batches)
    microbatches = _merge_axes
  # The plan gave the first rung a step, so each rung adds at least one.
  steps = rung_steps(num_steps, num_rungs, reduction)
  stateful = model_state is not None
  _find_lr_checks.check_params(params)
  _find_lr_checks.check_key(key)
  _find_lr_checks.check_eval(eval_fn, params, model_state, data)
  if schedule is not None:
    _find_lr_checks.check_schedule(schedule)
  if mesh is not None:
    _mesh.check(mesh, axes=(_mesh.MODEL_AXIS, _mesh.DATA_AXIS),
                required=_mesh.MODEL_AXIS, caller='find_lr')
  sweep_optimizer, sweep_eval = _wrapped(optimizer, schedule, eval_fn,
                                         stateful, accumulation_steps)
  tx = sweep_optimizer({'learning_rate': np.float32(start_lr)})
  if not isinstance(tx, optax.GradientTransformation):
    raise TypeError(
        'optimizer must return an optax.GradientTransformation, got'
        f' {type(tx).__name__}.'
    )
  rng = np.random.default_rng(seed)

  # 1. Range tests, one after another: concrete inputs, so each runs as its
  # strategy says (a host loop for a convolution on CPU), one compile.
  test_orders = _orders(num_steps, range_test_steps, num_range_tests, rng,
                        identity_first=False)
  test_keys = None
  if key is not None:
    test_keys = jax.random.split(jax.random.fold_in(key, num_seeds),
                                 num_range_tests)
  def one_test(i):
    return _range_test.range_test(
        loss_fn, params, optimizer,
        microbatches(_take(batches, test_orders[i]), 0),
        start_lr=start_lr, end_lr=end_lr, num_steps=range_test_steps,
        has_aux=has_aux, model_state=model_state,
        key=None if test_keys is None else test_keys[i], data=data,
        accumulation_steps=accumulation_steps, strategy=strategy,
        progress=_with_desc(progress, 'find_lr: range test'
                            f' {i + 1} of {num_range_tests}'),
    )
  tests = jax.tree.map(lambda *x: jnp.stack(x),
                       *[one_test(i) for i in range(num_range_tests)])
  _range_test._check_first_loss(tests.losses)  # pylint: disable=protected-access
  low, high, suggestion = _bracket(tests, float(span))
  candidates = np.geomspace(low, high, num_candidates)
  _find_lr_checks.check_candidates(candidates, float(span), high)
  cost = num_range_tests * range_test_steps

  # 2. Successive halving, one sweep per rung.
  seed_orders = _orders(num_steps, num_steps, num_seeds, rng,
                        identity_first=True)
  seed_batches = _take(batches, jnp.asarray(seed_orders))
  seed_keys = None
  if key is not None:
    seed_keys = jnp.stack(
        [key] + [jax.random.fold_in(key, j) for j in range(1, num_seeds)])
  counts = survivors(num_candidates, num_rungs, reduction)
  scores = np.full((num_rungs, num_candidates), np.nan)
  seed_scores = np.full((num_rungs, num_candidates, num_seeds), np.nan)
  alive = np.arange(num_candidates)
  previous = result = None
  for rung in range(num_rungs):
    first = 0 if rung == 0 else int(steps[rung - 1])
    models = np.repeat(alive, num_seeds)  # candidate-major, seed-minor
    seeds = np.tile(np.arange(num_seeds), alive.size)
    rows = jnp.asarray(seeds)
    hyperparams = {'learning_rate': candidates[models].astype(np.float32)}
    window = jax.tree.map(lambda x: x[:, first:int(steps[rung])],
                          seed_batches)
    continued: dict[str, Any] = {}
    if previous is not None:
      continued = dict(
          params_axis=0, opt_state=previous.opt_state,
          first_step=first * accumulation_steps,
          model_state=previous.model_state,
      )
    result = _sweep.sweep(
        loss_fn, params if previous is None else previous.params,
        sweep_optimizer, hyperparams, microbatches(_take(window, rows), 1),
        batches_axis=0,
        key=None if seed_keys is None else _take(seed_keys, rows),
        has_aux=has_aux, eval_fn=sweep_eval, data=data, mesh=mesh,
        strategy=strategy,
        progress=_with_desc(progress, f'find_lr: rung {rung + 1} of'
                            f' {num_rungs}'),
        **({'model_state': model_state} if previous is None else continued),
    )
    cost += models.size * (int(steps[rung]) - first)
    run_scores, finite_run = _scores(result.evals, result.losses, alive.size,
                                     num_seeds)
    seed_scores[rung, alive] = run_scores
    mean = np.where(np.all(np.isfinite(run_scores), axis=1),
                    run_scores.mean(axis=1), np.inf)
    scores[rung, alive] = mean
    if not np.any(np.isfinite(mean)):
      raise _all_diverged(rung, first, int(steps[rung]), candidates[alive],
                          finite_run, tests, range_test_steps)
    if rung == 0:
      _check_separable(mean, candidates)
    if rung + 1 < num_rungs:
      keep = np.argsort(mean, kind='stable')[:counts[rung + 1]]
      keep = np.sort(keep)
      index = jnp.asarray(
          (keep[:, None] * num_seeds + np.arange(num_seeds)).reshape(-1))
      previous = result._replace(
          params=_take(result.params, index),
          opt_state=_take(result.opt_state, index),
          model_state=_take(result.model_state, index),
      )
      alive = alive[keep]

  # Every rung has a finite score (checked above), so the best of the last
  # rung is a finalist trained for the whole budget.
  final = np.where(np.isnan(scores[-1]), np.inf, scores[-1])
  best = int(np.argmin(final))
  learning_rate = float(candidates[best])
  winner = int(np.flatnonzero(alive == best)[0] * num_seeds)
  take_winner = lambda tree: (
      None if tree is None else jax.tree.map(lambda x: x[winner], tree))
  assert result is not None  # num_rungs >= 1 was checked.
  max_lr = CLR_MAX_FACTOR * learning_rate
  return FindLRResult(
      learning_rate=learning_rate,
      candidates=candidates,
      scores=scores,
      seed_scores=seed_scores,
      rung_steps=steps,
      range_test=tests,
      bracket=(float(low), float(high)),
      suggestion=float(suggestion),
      clr_bounds=(max_lr / CLR_RATIO, max_lr),
      cost_steps=int(cost),
      params=take_winner(result.params),
      model_state=take_winner(result.model_state),
      opt_state=take_winner(result.opt_state),
  )
