"""Dtype and integer helpers shared by the schedules."""

from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np


def count_dtype() -> jnp.dtype:
  """The integer dtype of counts: int32, or int64 with ``jax_enable_x64``."""
  return jnp.dtype(jax.dtypes.canonicalize_dtype(np.int64))


def _largest_float_below(dtype: Any, bound: int) -> float:
  """The largest value of the float ``dtype`` that is ``<= bound``."""
  value = np.asarray(bound, dtype)
  if int(value) > bound:
    value = np.nextafter(value, np.asarray(0, dtype))
  return float(value)


def _host_count(count: Any, dtype: jnp.dtype) -> np.ndarray:
  """Floors and clamps a Python or NumPy count on the host, exactly."""
  top = int(jnp.iinfo(dtype).max)
  host = np.asarray(count)
  if host.dtype.kind == 'O' and isinstance(count, int):
    host = np.asarray(max(count, -1), np.float64 if count > top else np.int64)
  if host.dtype.kind == 'b':
    host = host.astype(np.int64)
  elif host.dtype.kind not in 'iu':
    if not jnp.issubdtype(host.dtype, jnp.floating):
      raise TypeError(
          f'count must be a real number, got {count!r} of type'
          f' {type(count).__name__}.'
      )
    host = np.floor(host.astype(np.float64))
    if np.any(np.isnan(host)):
      raise ValueError(f'count must be a number, got {count!r}.')
  if np.any(host > top):
    raise ValueError(
        f'count={count!r} is larger than {top}, the largest count of'
        f' {dtype.name}'
        + ('.' if dtype.itemsize == 8 else '; enable jax_enable_x64 for more.')
    )
  return np.maximum(host, 0).astype(dtype)


def as_count(count: jax.typing.ArrayLike) -> jax.Array:
  """Returns ``count`` as a non-negative integer array of :func:`count_dtype`.

  optax hands schedules an int32 count (int64 with ``jax_enable_x64``); the
  integer dtype keeps cycle arithmetic exact at ``2**31 - 1``. Any other
  count is accepted without a warning: float counts are floored (step 3.7
  is step 3, as PyTorch's integer step would be) and negative counts are
  clamped at 0. A Python or NumPy count too large for the count dtype is a
  ValueError naming ``count``; a JAX array count (traced or not) saturates at
  the dtype's largest value instead, and a NaN one is step 0.
  """
  dtype = count_dtype()
  if not isinstance(count, (jax.Array, jax.core.Tracer)):
    return jnp.asarray(_host_count(count, dtype))
  top = jnp.iinfo(dtype).max
  if jnp.issubdtype(count.dtype, jnp.integer):
    if jnp.iinfo(count.dtype).max > top:
      count = jnp.minimum(count, jnp.asarray(top, count.dtype))
    return jnp.maximum(count.astype(dtype), 0)
  if count.dtype == jnp.bool_:
    return count.astype(dtype)
  wide = jnp.promote_types(count.dtype, jnp.float32)
  floored = jnp.floor(count.astype(wide))
  safe = jnp.clip(floored, 0, _largest_float_below(wide, top))
  # NaN fails both comparisons and lands on 0 through the clip's where.
  safe = jnp.where(floored > 0, safe, 0)
  return jnp.where(floored >= top, top, safe.astype(dtype)).astype(dtype)


def as_int(value: Any, like: jax.Array) -> jax.Array:
  """Returns a (possibly traced) step size in the integer dtype of ``like``.

  A traced float step size (a sweep over ``jnp.array([100., 200.])``) is
  rounded to the nearest integer; concrete ones were checked to be whole and
  to fit the count dtype. Traced ones are clipped into ``[1, max]`` so that
  no unchecked value can divide by zero or wrap.
  """
  value = jnp.asarray(value)
  top = jnp.iinfo(like.dtype).max
  if jnp.issubdtype(value.dtype, jnp.integer):
    if jnp.iinfo(value.dtype).max > top:
      value = jnp.minimum(value, jnp.asarray(top, value.dtype))
    return jnp.maximum(value.astype(like.dtype), 1)
  wide = jnp.promote_types(value.dtype, jnp.float32)
  value = jnp.round(value.astype(wide))
  return jnp.clip(value, 1, _largest_float_below(wide, top)).astype(like.dtype)


def output_dtype(*values: Any) -> jnp.dtype:
  """float32 for Python floats and float32 inputs; wider only when asked.

  Python scalars are weakly typed, so they never widen the result, even with
  ``jax_enable_x64``; an explicit float64 array does (under x64).
  """
  return jnp.result_type(jnp.float32, *values)


def exp_of_product(integer: jax.Array, log_base: Any, dtype: Any) -> jax.Array:
  """``base ** integer`` as ``exp(integer * log(base))`` in ``dtype``."""
  return jnp.exp(integer.astype(dtype) * jnp.asarray(log_base, dtype))


def inverse_power_of_two(exponent: jax.Array, dtype: Any) -> jax.Array:
  """Exactly ``2.0 ** -exponent`` for integers ``exponent >= 0``, in ``dtype``.

  Written straight into the float's exponent bits: exact (``jnp.exp2`` is off
  by a few ulp at ``-29``), cheaper than a transcendental, and it can never
  overflow. Past the smallest normal number the result is exactly 0.
  """
  dtype = jnp.dtype(dtype)
  if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
    return inverse_power_of_two(exponent, jnp.float32).astype(dtype)
  info = jnp.finfo(dtype)
  bits_dtype = jnp.int32 if dtype == jnp.float32 else jnp.int64
  bias = info.maxexp - 1
  biased = bias - jnp.clip(exponent, 0, bias).astype(bits_dtype)
  return jax.lax.bitcast_convert_type(biased << info.nmant, dtype)
