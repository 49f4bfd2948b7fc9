"""Argument checks shared by every schedule factory.

Each check looks at a value only when it is concrete (a Python number, a NumPy
array or a committed JAX array). A traced value (inside ``jax.jit``,
``jax.vmap`` or ``jax.grad``) cannot be inspected without forcing a host round
trip, so it passes through unchecked; every factory says so in its docstring.
"""

from collections.abc import Callable, Collection
import math
from typing import Any

import jax
import jax.core
import numpy as np

from optax_clr import _numerics


def concrete(value: Any) -> np.ndarray | None:
  """Returns ``value`` as a NumPy array, or None when it is traced."""
  if isinstance(value, jax.core.Tracer):
    return None
  return np.asarray(value)


def _numeric(name: str, value: Any) -> np.ndarray | None:
  """``value`` as int64/uint64 or float64 on the host, None when traced.

  Every integer and floating dtype is accepted, JAX's bfloat16 and float16
  included; bools, complex numbers, strings and None are not.
  """
  if isinstance(value, (list, tuple, dict, set, str, bytes)):
    raise TypeError(
        f'{name} must be a real number or an array, got {value!r} of type'
        f' {type(value).__name__}.'
    )
  array = concrete(value)
  if array is None:
    return None
  if array.dtype.kind == 'O' and _is_int(value):
    if abs(value) >= 2**1023:
      raise ValueError(f'{name}={value!r} is too large for any JAX dtype.')
    array = np.asarray(float(value))
  if array.dtype.kind in 'iu':
    return array
  if array.dtype.kind == 'b' or not jax.numpy.issubdtype(
      array.dtype, jax.numpy.floating
  ):
    raise TypeError(
        f'{name} must be a real number, got {value!r} of type'
        f' {type(value).__name__}.'
    )
  array = array.astype(np.float64)
  if not np.all(np.isfinite(array)):
    raise ValueError(f'{name} must be finite, got {value!r}.')
  return array


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def float_dtype(value: Any) -> np.dtype:
  """The float dtype a schedule computes ``value`` in (float32 unless x64)."""
  return np.dtype(jax.numpy.result_type(jax.numpy.float32, value))


def check_fits(name: str, value: Any, dtype: Any, *, what: str = '') -> None:
  """Checks that ``|value|`` is at most the largest finite ``dtype`` number.

  Args:
    name: the argument's name, quoted in the error message.
    value: a concrete number (or array); traced values are not checked.
    dtype: the float dtype the value will be computed in.
    what: the quantity checked when it is not ``name`` itself, e.g.
      ``'max_lr / div_factor'``.

  Raises:
    ValueError: ``value`` overflows ``dtype``.
  """
  array = concrete(value)
  if array is None:
    return
  largest = float(jax.numpy.finfo(dtype).max)
  with np.errstate(over='ignore', invalid='ignore'):
    magnitude = np.abs(array.astype(np.float64))
  if np.all(magnitude <= largest):
    return
  if what:
    detail = f'{name} gives {what} = {float(np.max(magnitude)):g}'
  else:
    detail = f'{name}={value!r}'
  raise ValueError(
      f'{detail}, which does not fit in {np.dtype(dtype).name} (largest'
      f' {largest:.4g}).'
  )


def check_number(
    name: str,
    value: Any,
    *,
    lower: float | None = None,
    upper: float | None = None,
    lower_open: bool = False,
    upper_open: bool = False,
) -> None:
  """Checks that a concrete ``value`` is a finite number inside a range.

  Args:
    name: the argument's name, quoted in the error message.
    value: the value to check; traced values are not checked.
    lower: the smallest allowed value, or None for no lower bound.
    upper: the largest allowed value, or None for no upper bound.
    lower_open: exclude ``lower`` itself.
    upper_open: exclude ``upper`` itself.

  Raises:
    TypeError: ``value`` is not a real number.
    ValueError: ``value`` is not finite or outside the range.
  """
  array = _numeric(name, value)
  if array is None:
    return
  dtype = float_dtype(value)
  check_fits(name, value, dtype)
  tiny = float(jax.numpy.finfo(dtype).tiny)
  if np.any((array != 0) & (np.abs(array) < tiny)):
    raise ValueError(
        f'{name}={value!r} is below {tiny:.4g}, the smallest normal'
        f' {dtype.name} number; XLA flushes such numbers to zero. Use 0 or a'
        ' larger value.'
    )
  # The bounds must hold for the value the schedule computes with too: 1e-50
  # is > 0 but rounds to 0 in float32.
  rounded = array.astype(dtype)
  too_low = lower is not None and (
      np.any(array <= lower) or np.any(rounded <= lower)
      if lower_open
      else np.any(array < lower)
  )
  too_high = upper is not None and (
      np.any(array >= upper) or np.any(rounded >= upper)
      if upper_open
      else np.any(array > upper)
  )
  if too_low or too_high:
    left = '(' if lower_open else '['
    right = ')' if upper_open else ']'
    low = '-inf' if lower is None else f'{lower:g}'
    high = 'inf' if upper is None else f'{upper:g}'
    rounding = (
        f' (it rounds to {rounded!r} in {dtype.name})'
        if np.any(rounded != array)
        else ''
    )
    raise ValueError(
        f'{name} must lie in {left}{low}, {high}{right}, got'
        f' {value!r}{rounding}.'
    )


def check_step_count(name: str, value: Any, *, minimum: int = 1) -> None:
  """Checks that a concrete ``value`` is a whole number ``>= minimum``.

  ``2000.0`` is accepted (it is whole); ``2.5`` is not, nor is a value larger
  than the count dtype holds (``2**31 - 1`` without ``jax_enable_x64``).

  Raises:
    TypeError: ``value`` is not a real number.
    ValueError: ``value`` is fractional, not finite or below ``minimum``.
  """
  if _is_int(value) and value > np.iinfo(np.int64).max:
    array = np.asarray(float(min(value, 2**1000)))  # Only its size matters.
  else:
    array = _numeric(name, value)
  if array is None:
    return
  if np.any(array != np.floor(array)):
    raise ValueError(f'{name} must be a whole number of steps, got {value!r}.')
  if np.any(array < minimum):
    raise ValueError(f'{name} must be at least {minimum}, got {value!r}.')
  dtype = _numerics.count_dtype()
  top = int(np.iinfo(dtype).max)
  if np.any(array > top):
    raise ValueError(
        f'{name}={value!r} is larger than {top}, the largest count of'
        f' {dtype.name}'
        + ('.' if dtype.itemsize == 8 else '; enable jax_enable_x64 for more.')
    )


def check_not_below(
    lower_name: str, lower: Any, upper_name: str, upper: Any
) -> None:
  """Checks ``upper >= lower`` when both are concrete."""
  low, high = concrete(lower), concrete(upper)
  if low is None or high is None:
    return
  if np.any(high < low):
    raise ValueError(
        f'{upper_name} must be >= {lower_name}, got {upper_name}={upper!r}'
        f' and {lower_name}={lower!r}.'
    )


def check_choice(name: str, value: Any, choices: Collection[str]) -> None:
  """Checks that ``value`` is one of ``choices``."""
  if not isinstance(value, str) or value not in choices:
    options = ', '.join(repr(choice) for choice in choices)
    raise ValueError(f'{name} must be one of {options}, got {value!r}.')


def check_callable(name: str, value: Any) -> Callable[..., Any]:
  """Checks that ``value`` is callable and returns it."""
  if not callable(value):
    raise TypeError(
        f'{name} must be callable, got {value!r} of type'
        f' {type(value).__name__}.'
    )
  return value


def check_bool(name: str, value: Any) -> bool:
  """Checks that ``value`` is a Python or NumPy bool."""
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f'{name} must be a bool, got {value!r}.')
  return bool(value)


def log_of(value: Any) -> Any:
  """``log(value)`` in float64 on the host when concrete, else ``jnp.log``.

  Raising a float32-rounded rate to a large power amplifies its rounding error
  (``0.99999`` rounds by 6e-8, so ``0.99999**1e5`` is off by 0.6%); taking
  the log in double precision first keeps the error at float32's own.
  """
  array = concrete(value)
  if array is None:
    return jax.numpy.log(value)
  if array.ndim:
    return np.log(array.astype(np.float64))
  return math.log(float(array))
