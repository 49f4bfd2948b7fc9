"""Inverse square root decay after a linear warmup (Vaswani et al., 2017)."""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_clr import _checks
from optax_clr import _numerics
from optax_clr import _wsd

DEFAULT_TIMESCALE = 10_000  # transformers' default when there is no warmup.


def _timescale(timescale: Any, warmup_steps: Any) -> Any:
  """``timescale``, or the warmup length (10000 when that is 0)."""
  if timescale is not None:
    return timescale
  warmup = _checks.concrete(warmup_steps)
  if warmup is not None and warmup.ndim == 0:
    return int(warmup) if warmup else DEFAULT_TIMESCALE
  warmup = jnp.asarray(warmup_steps)
  return jnp.where(warmup > 0, warmup, DEFAULT_TIMESCALE)


def inverse_sqrt_schedule(
    peak_lr: jax.typing.ArrayLike,
    warmup_steps: jax.typing.ArrayLike,
    *,
    timescale: jax.typing.ArrayLike | None = None,
    init_lr: jax.typing.ArrayLike = 0.0,
) -> optax.Schedule:
  r"""Linear warmup to ``peak_lr``, then decay as one over the square root.

  With ``W = warmup_steps`` and ``tau = timescale``:

  .. math::

    \text{lr}(t) = \begin{cases}
      \text{init\_lr} + (\text{peak\_lr} - \text{init\_lr}) \cdot t / W
        & t < W \\
      \text{peak\_lr} \, / \sqrt{(t - W + \tau) / \tau} & t \ge W
    \end{cases}

  ``timescale`` defaults to ``warmup_steps`` (10000 when that is 0), which is
  the Transformer's :math:`d^{-1/2} \min(t^{-1/2}, t \, W^{-3/2})` up to the
  constant and the 0-based count. Equal to transformers'
  ``get_inverse_sqrt_schedule(num_warmup_steps=W, timescale=tau)`` times
  ``peak_lr`` (with ``init_lr=0``).

  The integer ``t - W`` is formed before any float, so the value stays
  accurate at ``2**31 - 1`` (and at ``10**12`` with ``jax_enable_x64``).
  Every argument may be traced (``jax.grad`` with respect to the rates, a
  ``jax.vmap`` sweep over any of them); concrete arguments are checked here,
  traced ones are not. Negative counts read as 0.

  Args:
    peak_lr: the rate at the end of the warmup, ``>= 0``.
    warmup_steps: the length of the warmup, a whole number ``>= 0``.
    timescale: how many steps past the warmup the rate takes to fall by
      :math:`\sqrt{2}`; a number ``>= 1``, or None for the default.
    init_lr: the rate at step 0, ``>= 0``.

  Returns:
    schedule
      A function that maps step counts to values.

  Raises:
    ValueError: a concrete argument is out of range or not whole.
    TypeError: a numeric argument is not a number.

  Examples:
    >>> import optax_clr
    >>> schedule = optax_clr.inverse_sqrt_schedule(1.0, warmup_steps=4)
    >>> [round(float(schedule(k)), 4) for k in (0, 2, 4, 8, 16, 40)]
    [0.0, 0.5, 1.0, 0.7071, 0.5, 0.3162]

  References:
    Vaswani et al., `Attention Is All You Need
    <https://arxiv.org/abs/1706.03762>`_, 2017.
  """
  _checks.check_number('peak_lr', peak_lr, lower=0.0)
  _checks.check_number('init_lr', init_lr, lower=0.0)
  _checks.check_step_count('warmup_steps', warmup_steps, minimum=0)
  if timescale is not None:
    _checks.check_number('timescale', timescale, lower=1.0)
  dtype = _numerics.output_dtype(peak_lr, init_lr)
  scale = _timescale(timescale, warmup_steps)

  def schedule(count: jax.typing.ArrayLike) -> jax.Array:
    count = jnp.maximum(_numerics.as_count(count), 0)
    warmup = _wsd.steps_like(warmup_steps, count)
    tau = jnp.asarray(scale, dtype)
    # Exact integers before the first float.
    past = jnp.where(count > warmup, count - warmup, 0)
    decayed = jnp.asarray(peak_lr, dtype) * jax.lax.rsqrt(
        (past.astype(dtype) + tau) / tau
    )
    fraction = jnp.minimum(count, warmup).astype(dtype) / jnp.maximum(
        warmup, 1
    ).astype(dtype)
    low = jnp.asarray(init_lr, dtype)
    rising = low + (jnp.asarray(peak_lr, dtype) - low) * fraction
    return jnp.where(count < warmup, rising, decayed)

  return schedule
