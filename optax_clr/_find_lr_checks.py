"""What :func:`optax_clr.find_lr` refuses before anything compiles.

Each check traces the user's function with abstract values only
(``jax.eval_shape``), so a wrong return type, a schedule that tests its
traced peak in Python or a key of the wrong kind is named here, with the
argument, instead of failing frames deep inside a compiled sweep.
"""

from collections.abc import Callable
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# float32 spans about 76 decades between its smallest normal number and its
# largest: a wider bracket cannot hold both of its ends.
FLOAT32_TINY = float(np.finfo(np.float32).tiny)
MAX_SPAN = math.log10(float(np.finfo(np.float32).max) / FLOAT32_TINY)


def _is_real_scalar(leaf: Any) -> bool:
  return (isinstance(leaf, jax.ShapeDtypeStruct) and leaf.shape == ()
          and jnp.issubdtype(leaf.dtype, jnp.number)
          and not jnp.issubdtype(leaf.dtype, jnp.complexfloating))


def _describe(value: Any) -> str:
  if isinstance(value, jax.ShapeDtypeStruct):
    return f'an array of shape {value.shape} and dtype {value.dtype}'
  return f'a {type(value).__name__}: {value!r}'[:200]


def check_eval(eval_fn, params, model_state, data) -> None:
  """Refuses an ``eval_fn`` that does not return one real scalar."""
  args = (params,) if model_state is None else (params, model_state)
  kwargs = {} if data is None else {'data': data}
  signature = ('eval_fn(params' + (', model_state' if model_state is not None
                                   else '')
               + (', data=data' if data is not None else '') + ')')
  try:
    # jnp.asarray: a Python number is one scalar too (the sweep converts it).
    shape = jax.eval_shape(
        lambda *a: jax.tree.map(jnp.asarray, eval_fn(*a, **kwargs)), *args)
  except TypeError as error:
    raise TypeError(f'eval_fn could not be called as {signature}: {error}'
                    ) from error
  if not _is_real_scalar(shape):
    raise ValueError(
        'eval_fn must return one real scalar (a validation loss or error'
        f' rate, lower is better), not a container: {signature} returned'
        f' {_describe(shape)}.'
    )


def check_schedule(schedule: Callable[[Any], Any]) -> None:
  """Refuses a ``schedule`` that cannot make a rate from a traced ``lr``.

  ``find_lr`` trains every candidate rate in one compiled program, so
  ``schedule`` is called with a traced ``lr``; it must return an
  ``optax.Schedule`` (or a scalar rate) whose values are real scalars.
  """
  def value_at_zero(lr):
    made = schedule(lr)
    if made is None:
      raise TypeError('schedule(lr) returned None.')
    if callable(made):
      return jnp.asarray(made(jnp.zeros((), jnp.int32)))
    return jnp.asarray(made)

  lr = jax.ShapeDtypeStruct((), jnp.float32)
  try:
    value = jax.eval_shape(value_at_zero, lr)
  except jax.errors.ConcretizationTypeError as error:
    raise TypeError(
        'schedule(lr) must accept a traced lr: find_lr trains every'
        ' candidate rate in one compiled program, and this schedule tests'
        ' its value in Python (optax.warmup_cosine_decay_schedule compares'
        ' its peak with 0, for one). Build the same shape from parts that'
        ' take a traced peak, e.g. optax.join_schedules([optax.linear_'
        'schedule(0.0, lr, warmup), optax.cosine_decay_schedule(lr, decay)],'
        f' [warmup]). The error: {str(error).splitlines()[0]}'
    ) from error
  except (TypeError, ValueError) as error:
    raise TypeError(
        'schedule(lr) must return an optax.Schedule (count -> rate) or a'
        f' scalar rate built from lr; calling it failed: {error}'
    ) from error
  if not isinstance(value, jax.ShapeDtypeStruct) or not (
      _is_real_scalar(value) and jnp.issubdtype(value.dtype, jnp.floating)):
    raise TypeError(
        'schedule(lr) must return an optax.Schedule whose values are real'
        f' floating scalars, got {_describe(value)} at count 0.'
    )


def check_params(params: Any) -> None:
  """Refuses parameter leaves that cannot be differentiated."""
  leaves = jax.tree_util.tree_leaves_with_path(params)
  if not leaves:
    raise ValueError('params must hold at least one array, got an empty'
                     f' tree: {params!r}.')
  for path, leaf in leaves:
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(
          f'params{jax.tree_util.keystr(path)} has dtype {dtype}: every'
          ' parameter must be a floating-point array (the optimizer follows'
          ' its gradient). Keep integer or boolean constants out of params'
          ' (in the loss function\'s closure or in data=).'
      )


def check_key(key: Any) -> None:
  """Refuses a ``key`` that is not one ``jax.random`` key."""
  if key is None:
    return
  if not isinstance(key, (jax.Array, np.ndarray)):
    raise TypeError(
        'key must be a jax.random key (jax.random.key(0) or'
        f' jax.random.PRNGKey(0)) or None, got {type(key).__name__}'
        f' {key!r}.'
    )
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    single = key.ndim == 0
  elif key.dtype == np.uint32:
    single = key.shape == (2,)
  else:
    raise TypeError(
        'key must be a jax.random key (jax.random.key(0) or'
        f' jax.random.PRNGKey(0)), got an array of dtype {key.dtype} and'
        f' shape {key.shape}.'
    )
  if not single:
    raise ValueError(
        'key must be one jax.random key: find_lr derives one per seed and'
        f' per range test from it; got keys of shape {key.shape}.'
    )


def max_rungs(num_steps: int, reduction: int) -> int:
  """The most rungs whose first trains a step: ``reduction^(R-1) <= B``."""
  rungs, size = 1, reduction
  while size <= num_steps:
    rungs, size = rungs + 1, size * reduction
  return rungs


def check_rungs(num_rungs: int, reduction: int, num_steps: int) -> None:
  """Refuses more rungs than the budget can give a step each."""
  most = max_rungs(num_steps, reduction)
  if num_rungs > most:
    raise ValueError(
        f'num_rungs={num_rungs} is too many for {num_steps} steps with'
        f' reduction={reduction}: the first rung trains num_steps //'
        f' reduction**(num_rungs - 1) steps, which must be at least 1, so at'
        f' most {most} rungs fit. Give more steps, fewer rungs or a smaller'
        ' reduction.'
    )


def check_span(span: float) -> None:
  """Refuses a bracket wider than float32 can represent."""
  if span > MAX_SPAN:
    raise ValueError(
        f'span must be at most {MAX_SPAN:.1f} decades (float32 holds no'
        f' wider range of positive rates), got {span!r}.'
    )


def check_candidates(candidates: np.ndarray, span: float, high: float
                     ) -> None:
  """Refuses candidates that float32 would zero or merge."""
  low = float(candidates[0])
  if low < FLOAT32_TINY:
    fits = math.log10(high / FLOAT32_TINY)
    raise ValueError(
        f'span={span!r} puts the lowest candidate at {low:.3g}, below'
        f" float32's smallest normal number {FLOAT32_TINY:.3g} (it would"
        f' train at a rate of 0 or a denormal): under the bracket\'s top'
        f' {high:.3g} at most {fits:.1f} decades fit.'
    )
  as_float32 = np.unique(candidates.astype(np.float32))
  if as_float32.size < candidates.size:
    raise ValueError(
        f'span={span!r} is too narrow for {candidates.size} candidates:'
        f' in float32 only {as_float32.size} of the rates differ. Widen'
        ' span or lower num_candidates.'
    )
