"""Dtype and integer helpers shared by the schedules."""

from typing import Any

import jax
import jax.numpy as jnp


def as_count(count: jax.typing.ArrayLike) -> jax.Array:
  """Returns ``count`` as an integer array; whole floats are floored.

  optax hands schedules an int32 count (int64 with ``jax_enable_x64``); the
  integer dtype is kept so cycle arithmetic stays exact at ``2**31 - 1``.
  """
  count = jnp.asarray(count)
  if jnp.issubdtype(count.dtype, jnp.integer):
    return count
  return jnp.floor(count).astype(jnp.int_)


def as_int(value: Any, like: jax.Array) -> jax.Array:
  """Returns a (possibly traced) step size in the integer dtype of ``like``.

  A traced float step size (a sweep over ``jnp.array([100., 200.])``) is
  rounded to the nearest integer; concrete ones were checked to be whole.
  """
  value = jnp.asarray(value)
  if not jnp.issubdtype(value.dtype, jnp.integer):
    return jnp.round(value).astype(like.dtype)
  return value.astype(jnp.promote_types(like.dtype, value.dtype))


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
