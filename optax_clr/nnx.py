"""Range tests and sweeps of Flax NNX modules.

A module's ``nnx.Param`` variables are trained; everything else it holds
(``nnx.BatchStat`` batch statistics, ``nnx.Rngs`` keys and counters, other
variables) is threaded through as model state, so BatchNorm statistics update
and dropout draws afresh at every step, as in training. The user's module is
never modified: it is split into pure state once, and every step works on
copies merged inside the compiled program.

Needs Flax (``pip install 'optax_clr[flax]'``); importing this module without
it raises an ImportError saying so.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast
import weakref

import jax
import optax

try:
  from flax import nnx as _nnx  # pylint: disable=g-import-not-at-top
except ImportError as error:  # pragma: no cover - tested in a subprocess
  raise ImportError(
      "optax_clr.nnx needs Flax: pip install 'optax_clr[flax]'."
  ) from error

from optax_clr import _cache
from optax_clr import _checks
from optax_clr import _find_lr
from optax_clr import _range_test
from optax_clr import _sweep

__all__ = ('find_lr', 'range_test', 'split_loss', 'sweep', 'merge')


def _stream_tags(module: _nnx.Module, graphdef: Any) -> tuple[str, ...]:
  """The module's random stream names, found once per graph."""
  if graphdef in _TAGS:
    return _TAGS[graphdef]
  tags = {
      stream.key.tag
      for _, stream in _nnx.graph.iter_graph(module)
      if isinstance(stream, _nnx.RngStream)
  }
  if len(_TAGS) > 64:  # Bounded: graphs of modules long gone.
    _TAGS.clear()
  _TAGS[graphdef] = tuple(sorted(tags))
  return _TAGS[graphdef]


_TAGS: dict[Any, tuple[str, ...]] = {}


def _check_module(name: str, module: Any) -> None:
  if not isinstance(module, _nnx.Module):
    raise TypeError(
        f'{name} must be a flax.nnx.Module, got {type(module).__name__}.'
    )


def split_loss(
    model: _nnx.Module,
    loss_fn: Callable[..., Any],
) -> tuple[Callable[..., Any], Any, Any]:
  """Turns ``loss_fn(model, batch)`` into a pure loss of (params, state).

  Args:
    model: an ``nnx.Module``; it is not modified.
    loss_fn: ``loss_fn(model, batch) -> loss`` (or ``(loss, aux)``); it may
      update the module's batch statistics and draw from its ``nnx.Rngs``.

  Returns:
    ``(pure_loss_fn, params, model_state)``: ``pure_loss_fn(params,
    model_state, batch, key=None)`` returns ``(loss_fn's output,
    new_model_state)``, the calling convention of
    :func:`optax_clr.range_test` and :func:`optax_clr.sweep` with
    ``model_state``. With ``key``, every random stream of the module is
    reseeded from it before the call (``nnx.reseed``), so results depend on
    ``key`` alone.

  Raises:
    TypeError: ``model`` is not an ``nnx.Module`` or ``loss_fn`` is not
      callable.
  """
  _check_module('model', model)
  loss_fn = _checks.check_callable('loss_fn', loss_fn)
  graphdef, params, model_state = _nnx.split(model, _nnx.Param, ...)
  static = (graphdef, _stream_tags(model, graphdef))
  # One pure function per (loss_fn, graph), so that the compiled range test
  # or sweep of a second call is found in their caches.
  pure_loss_fn = _PURE.get(
      (loss_fn,), ('loss', static), lambda refs: _pure_loss(refs[0], *static)
  )
  return pure_loss_fn, params, model_state


_PURE = _cache.ProgramCache()


# The graph of each pure loss function (weakly keyed: dropped with it).
_PURE_GRAPHS: 'weakref.WeakKeyDictionary[Any, Any]' = weakref.WeakKeyDictionary()


def _pure_loss(loss_ref, graphdef, tags):
  def pure_loss_fn(params, model_state, batch, key=None):
    module = _nnx.merge(graphdef, params, model_state, copy=True)
    if key is not None and tags:
      keys = jax.random.split(key, len(tags))
      _nnx.reseed(module, **dict(zip(tags, keys)))
    output = loss_ref()(module, batch)
    _, _, new_state = _nnx.split(module, _nnx.Param, ...)
    return output, new_state

  _PURE_GRAPHS[pure_loss_fn] = graphdef
  return pure_loss_fn


def _pure_eval(eval_ref, graphdef):
  def pure_eval_fn(params, model_state):
    return eval_ref()(_nnx.merge(graphdef, params, model_state, copy=True))

  return pure_eval_fn


def range_test(
    model: _nnx.Module,
    optimizer: Callable[..., optax.GradientTransformation],
    loss_fn: Callable[..., Any],
    batches: Any,
    **range_test_kwargs: Any,
) -> _range_test.RangeTestResult:
  """The LR range test of an NNX module, leaving the module as it was.

  Splits ``model`` into its ``nnx.Param`` variables (swept) and the rest
  (batch statistics, RNG state: threaded through the sweep as
  ``model_state``) and runs :func:`optax_clr.range_test`. Batch statistics
  update and dropout masks change at every step, as in training; afterwards
  ``model`` is bitwise as before (parameters, batch statistics and RNG
  counters). The module runs in the mode it is in: a freshly built module is
  in training mode; call ``model.train()`` first if it is not.

  Args:
    model: an ``nnx.Module`` with any mix of ``nnx.Param``,
      ``nnx.BatchStat`` and ``nnx.Rngs`` (dropout).
    optimizer: an optax optimizer factory, as in
      :func:`optax_clr.range_test` (``optax.adamw``, say).
    loss_fn: ``loss_fn(model, batch) -> loss`` (or ``(loss, aux)`` with
      ``has_aux=True``).
    batches: as in :func:`optax_clr.range_test`.
    **range_test_kwargs: any keyword of :func:`optax_clr.range_test`
      (``start_lr``, ``num_steps``, ``key``, ``mesh`` for a data-parallel
      test, ``progress``, ``strategy``...). ``strategy="auto"`` drives a
      convolutional module's steps from Python on CPU, where a scanned
      convolution runs many times slower. With ``key``, the module's
      random streams are reseeded from ``jax.random.fold_in(key, t)`` at
      step ``t``; without it, they continue from the module's own state.

  Returns:
    result
      A :class:`optax_clr.RangeTestResult`.

  Raises:
    TypeError: ``model`` is not an ``nnx.Module``, or passing
      ``model_state`` (the module's own state is used).
    ValueError: as :func:`optax_clr.range_test`.

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from flax import nnx
    >>> import optax_clr.nnx
    >>> model = nnx.Sequential(
    ...     nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.BatchNorm(8, rngs=nnx.Rngs(0)),
    ...     nnx.Dropout(0.1, rngs=nnx.Rngs(1)), nnx.Linear(8, 1, rngs=nnx.Rngs(0)))
    >>> x = jnp.linspace(-1, 1, 30 * 16 * 4).reshape(30, 16, 4)
    >>> loss_fn = lambda m, x: jnp.mean((m(x) - x.sum(-1, keepdims=True)) ** 2)
    >>> result = optax_clr.nnx.range_test(
    ...     model, optax.sgd, loss_fn, x, start_lr=1e-4, end_lr=1.0, num_steps=30)
    >>> result.losses.shape
    (30,)
  """
  _check_module('model', model)
  if 'model_state' in range_test_kwargs:
    raise TypeError(
        'optax_clr.nnx.range_test takes the model state from model; do not'
        ' pass model_state.'
    )
  pure_loss_fn, params, model_state = split_loss(model, loss_fn)
  return _range_test.range_test(
      pure_loss_fn, params, optimizer, batches, model_state=model_state,
      **range_test_kwargs,
  )


def find_lr(
    model: _nnx.Module,
    optimizer: Callable[..., optax.GradientTransformation],
    loss_fn: Callable[..., Any],
    batches: Any,
    eval_fn: Callable[..., Any],
    **find_lr_kwargs: Any,
) -> _find_lr.FindLRResult:
  """:func:`optax_clr.find_lr` for an NNX module, leaving the module as it was.

  The module is split as in :func:`range_test`: its ``nnx.Param`` variables
  are trained, everything else (batch statistics, RNG state) is threaded
  through every range test and every candidate's run as model state, so
  BatchNorm statistics update and dropout draws afresh at every step.
  Afterwards ``model`` is bitwise as before.

  Args:
    model: an ``nnx.Module`` in training mode.
    optimizer: a factory of the learning rate (``optax.adamw``, say).
    loss_fn: ``loss_fn(model, batch) -> loss`` (or ``(loss, aux)`` with
      ``has_aux=True``).
    batches: a pytree with a leading axis of the budget's steps.
    eval_fn: ``eval_fn(model) -> scalar``, lower is better, on a copy of a
      trained module (call ``model.eval()`` inside it for inference mode).
    **find_lr_kwargs: any keyword of :func:`optax_clr.find_lr` but
      ``model_state`` and ``data`` (``key``, ``num_candidates``,
      ``schedule``...). With ``key``, the module's random streams are
      reseeded from the step's key, as in :func:`range_test`.

  Returns:
    result
      A :class:`optax_clr.FindLRResult`; its ``params`` and ``model_state``
      are NNX states: ``nnx.merge(nnx.graphdef(model), result.params,
      result.model_state)`` is the chosen rate's trained module.

  Raises:
    TypeError: ``model`` is not an ``nnx.Module``, or ``model_state`` or
      ``data`` passed.
    ValueError: as :func:`optax_clr.find_lr`.

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from flax import nnx
    >>> import optax_clr.nnx
    >>> model = nnx.Sequential(nnx.Linear(4, 16, rngs=nnx.Rngs(0)), nnx.relu,
    ...                        nnx.Linear(16, 1, rngs=nnx.Rngs(1)))
    >>> x = jax.random.normal(jax.random.key(0), (80, 16, 4))
    >>> target = lambda x: jnp.sin(x).sum(-1, keepdims=True)
    >>> loss_fn = lambda m, x: jnp.mean((m(x) - target(x)) ** 2)
    >>> eval_fn = lambda m: loss_fn(m, x[-1])  # a held-out batch
    >>> result = optax_clr.nnx.find_lr(
    ...     model, optax.adam, loss_fn, x[:-1], eval_fn)
    >>> result.candidates.shape, result.scores.shape  # within 1.5 runs
    ((4,), (2, 4))
  """
  _check_module('model', model)
  for name in ('model_state', 'data'):
    if name in find_lr_kwargs:
      raise TypeError(
          f'optax_clr.nnx.find_lr takes no {name}: the module holds its'
          ' state, and loss_fn(model, batch) reads its own data.'
      )
  eval_fn = _checks.check_callable('eval_fn', eval_fn)
  pure_loss_fn, params, model_state = split_loss(model, loss_fn)
  graphdef = _nnx.graphdef(model)
  pure_eval_fn = _PURE.get(
      (eval_fn,), ('eval', graphdef),
      lambda refs: _pure_eval(refs[0], graphdef),
  )
  return _find_lr.find_lr(
      pure_loss_fn, params, optimizer, batches, pure_eval_fn,
      model_state=model_state, **find_lr_kwargs,
  )


def _stack(trees: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *leaves: jax.numpy.stack(leaves), *trees)


def sweep(
    model: _nnx.Module | Sequence[_nnx.Module],
    optimizer: Callable[[dict[str, jax.Array]], optax.GradientTransformation],
    loss_fn: Callable[..., Any],
    hyperparams: Mapping[str, Any],
    batches: Any,
    *,
    eval_fn: Callable[..., Any] | None = None,
    **sweep_kwargs: Any,
) -> _sweep.SweepResult:
  """Trains K copies of an NNX module, compiled once (:func:`optax_clr.sweep`).

  Args:
    model: one ``nnx.Module`` (every model starts from it) or a sequence of
      K modules of one structure (one initialization per seed, say; stacked
      as ``params_axis=0``). Not modified.
    optimizer: ``optimizer(hp) -> optax.GradientTransformation``.
    loss_fn: ``loss_fn(model, batch) -> loss`` (or ``(loss, aux)`` with
      ``has_aux=True``).
    hyperparams: ``{name: K values}``, see :func:`optax_clr.grid`.
    batches: as in :func:`optax_clr.sweep`.
    eval_fn: ``eval_fn(model) -> metrics`` on a copy of each trained module,
      every ``eval_every`` updates (call ``model.eval()`` inside it for
      inference mode), or None.
    **sweep_kwargs: ``batches_axis``, ``key``, ``has_aux``, ``eval_every``,
      ``mesh``, ``chunk_size``, ``gather``, ``progress``, ``strategy`` (see
      :func:`optax_clr.sweep`). On CPU a device's models run one at a time
      unless ``chunk_size`` says otherwise (vmapped convolutions and
      attention run slower there than a loop of single models), and
      ``strategy="auto"`` calls a convolutional module's step from Python
      rather than scanning it (a scanned convolution runs many times slower
      there).

  Returns:
    result
      A :class:`optax_clr.SweepResult`; ``params`` and ``model_state`` are
      NNX states with a leading K axis: :func:`merge` rebuilds model k.

  Raises:
    TypeError: ``model`` is not a module or a sequence of modules, or
      ``params_axis``/``model_state`` passed (they come from ``model``).
  """
  for name in ('params_axis', 'model_state'):
    if name in sweep_kwargs:
      raise TypeError(
          f'optax_clr.nnx.sweep takes {name} from model; do not pass it.'
      )
  # One module (an nnx.List is a module and a sequence) or K of them.
  several = isinstance(model, Sequence) and not isinstance(model, _nnx.Module)
  models = list(cast(Sequence[_nnx.Module], model)) if several else [
      cast(_nnx.Module, model)]
  for i, module in enumerate(models):
    _check_module(f'model[{i}]' if several else 'model', module)
  pure_loss_fn, params, model_state = split_loss(models[0], loss_fn)
  graphdef = _PURE_GRAPHS[pure_loss_fn]
  params_axis = None
  if several:
    states = [_nnx.split(m, _nnx.Param, ...)[1:] for m in models]
    params = _stack([p for p, _ in states])
    model_state = _stack([s for _, s in states])
    params_axis = 0
  pure_eval_fn = None
  if eval_fn is not None:
    eval_fn = _checks.check_callable('eval_fn', eval_fn)
    pure_eval_fn = _PURE.get(
        (eval_fn,), ('eval', graphdef),
        lambda refs: _pure_eval(refs[0], graphdef),
    )

  return _sweep.sweep(
      pure_loss_fn, params, optimizer, hyperparams, batches,
      params_axis=params_axis, model_state=model_state, eval_fn=pure_eval_fn,
      **sweep_kwargs,
  )


def merge(
    model: _nnx.Module, result: _sweep.SweepResult, index: int
) -> _nnx.Module:
  """Model ``index`` of a sweep's result, as a new module like ``model``."""
  _check_module('model', model)
  take = lambda tree: jax.tree.map(lambda x: x[index], tree)
  return _nnx.merge(
      _nnx.graphdef(model), take(result.params), take(result.model_state)
  )
