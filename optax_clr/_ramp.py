"""The LR range test's ramp: a rate that grows every step."""

import jax
import jax.numpy as jnp
import optax

from optax_clr import _checks
from optax_clr import _numerics

RAMP_MODES = ('exponential', 'linear')


def range_test_schedule(
    start_lr: jax.typing.ArrayLike,
    end_lr: jax.typing.ArrayLike,
    num_steps: int,
    *,
    mode: str = 'exponential',
) -> optax.Schedule:
  r"""The range test's ramp from ``start_lr`` to ``end_lr`` in ``num_steps``.

  With :math:`r = \min(\max(t, 0), n - 1) / (n - 1)`:

  .. math::

    \text{lr}(t) = \begin{cases}
      \text{start} \cdot (\text{end} / \text{start})^{r} & \text{exponential}
      \\
      \text{start} + (\text{end} - \text{start}) \cdot r & \text{linear}
    \end{cases}

  Step 0 is ``start_lr``; step ``num_steps - 1`` is ``end_lr`` exactly (as
  torch-lr-finder; fastai stops one step short) and the rate holds there
  after. The exponential ramp is computed in log space, so it stays finite
  and right when ``end_lr / start_lr`` overflows float32 (``1e-30`` to
  ``1e30`` is 1.0 half way). ``start_lr`` and ``end_lr`` may be traced; ``num_steps`` must be
  concrete. Concrete arguments are checked, traced ones are not.

  Args:
    start_lr: the first rate; ``> 0`` for the exponential ramp, ``>= 0`` for
      the linear one.
    end_lr: the last rate, ``> start_lr``.
    num_steps: the number of steps of the ramp, a whole number ``>= 2``.
    mode: ``"exponential"`` (even steps in log space; Smith's and fastai's
      default) or ``"linear"`` (Smith's original test).

  Returns:
    schedule
      A function that maps step counts to values.

  Examples:
    >>> import optax_clr
    >>> schedule = optax_clr.range_test_schedule(1e-4, 1.0, num_steps=5)
    >>> [float(f'{float(schedule(k)):.3g}') for k in range(6)]
    [0.0001, 0.001, 0.01, 0.1, 1.0, 1.0]

  References:
    Smith, `Cyclical Learning Rates for Training Neural Networks
    <https://arxiv.org/abs/1506.01186>`_, 2015, section 3.3.
  """
  _checks.check_choice('mode', mode, RAMP_MODES)
  _checks.check_step_count('num_steps', num_steps, minimum=2)
  if mode == 'exponential':
    _checks.check_number('start_lr', start_lr, lower=0.0, lower_open=True)
  else:
    _checks.check_number('start_lr', start_lr, lower=0.0)
  _checks.check_number('end_lr', end_lr, lower=0.0, lower_open=True)
  low, high = _checks.concrete(start_lr), _checks.concrete(end_lr)
  if low is not None and high is not None and (high <= low).any():
    raise ValueError(
        f'end_lr must be > start_lr, got end_lr={end_lr!r} and'
        f' start_lr={start_lr!r}.'
    )
  dtype = _numerics.output_dtype(start_lr, end_lr)
  last = int(num_steps) - 1
  log_start = log_span = 0.0
  if mode == 'exponential':
    # In log space: end / start overflows float32 for wide ranges (1e-30 to
    # 1e30), and logs of concrete bounds are taken in float64.
    log_start = _checks.log_of(start_lr)
    log_span = _checks.log_of(end_lr) - log_start

  def schedule(count: jax.typing.ArrayLike) -> jax.Array:
    count = jnp.minimum(_numerics.as_count(count), last)
    fraction = count.astype(dtype) / last
    start = jnp.asarray(start_lr, dtype)
    end = jnp.asarray(end_lr, dtype)
    if mode == 'exponential':
      exponent = jnp.asarray(log_start, dtype) + fraction * jnp.asarray(
          log_span, dtype
      )
      value = jnp.where(count == 0, start, jnp.exp(exponent))
    else:
      value = start + (end - start) * fraction
    return jnp.where(count == last, end, value)

  return schedule
