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
    value = jnp.round(value)
  dtype = jnp.promote_types(like.dtype, value.dtype)
  return value.astype(dtype)


def output_dtype(*values: Any) -> jnp.dtype:
  """float32 for Python floats and float32 inputs; wider only when asked.

  Python scalars are weakly typed, so they never widen the result, even with
  ``jax_enable_x64``; an explicit float64 array does (under x64).
  """
  return jnp.result_type(jnp.float32, *values)


def exp_of_product(integer: jax.Array, log_base: Any, dtype: Any) -> jax.Array:
  """``base ** integer`` as ``exp(integer * log(base))`` in ``dtype``."""
  return jnp.exp(integer.astype(dtype) * jnp.asarray(log_base, dtype))
