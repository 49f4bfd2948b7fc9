"""Reading a range test: suggested rates and CLR bounds (NumPy, host side).

Nothing here traces or compiles: a :class:`RangeTestResult` (one sweep, or a
batch of sweeps from ``jax.vmap``) is turned into NumPy arrays and read.
"""

from typing import Any, NamedTuple

import numpy as np

from optax_clr import _checks

SUGGEST_METHODS = ('steepest', 'valley', 'minimum')
BOUND_METRICS = ('loss', 'accuracy')
# suggest_clr_bounds: max_lr is the first step within this fraction of the
# total improvement from the best value.
TOLERANCE = 0.05


class Curves(NamedTuple):
  """A result as host arrays, batched sweeps flattened to rows."""

  lrs: np.ndarray  # (num_steps,)
  losses: np.ndarray  # (sweeps, num_steps)
  smoothed: np.ndarray  # (sweeps, num_steps)
  median: np.ndarray  # (num_steps,): the median smoothed loss
  valid: int  # the length of the finite prefix, up to the divergence
  diverged_lr: float | None  # the earliest swept value that diverged


def centered_mean(values: np.ndarray, half_width: int) -> np.ndarray:
  """The mean of ``values[t - k : t + k + 1]``, truncated at the ends."""
  kernel = np.ones(2 * half_width + 1)
  sums = np.convolve(values, kernel, mode='same')
  counts = np.convolve(np.ones_like(values), kernel, mode='same')
  return sums / counts


def curves(result: Any) -> Curves:
  """Host copies of ``result``'s curves and the length of the usable part.

  The usable part ends at the earliest divergence among the sweeps
  (inclusive) and before the first non-finite value of the median smoothed
  loss, so suggestions never read a NaN/inf tail.

  Raises:
    TypeError: ``result`` is not a range-test result.
    ValueError: batched sweeps with different swept values.
  """
  for field in ('lrs', 'losses', 'smoothed_losses', 'diverged_step'):
    if not hasattr(result, field):
      raise TypeError(
          f'result must be a RangeTestResult, got {type(result).__name__}'
          f' without {field!r}.'
      )
  lrs = np.asarray(result.lrs, np.float64)
  num_steps = lrs.shape[-1]
  lrs = lrs.reshape(-1, num_steps)
  if not np.allclose(lrs, lrs[:1], rtol=1e-6, atol=0.0):
    raise ValueError(
        'result holds batched sweeps over different swept values (lrs); read'
        ' them one at a time.'
    )
  lrs = lrs[0]
  losses = np.asarray(result.losses, np.float64).reshape(-1, num_steps)
  smoothed = np.asarray(result.smoothed_losses, np.float64).reshape(
      -1, num_steps
  )
  # Under jax.vmap, range_test cannot stop at a bad first loss; say which.
  # (A single sweep with a bad first loss was refused by range_test.)
  broken = np.flatnonzero(~np.isfinite(losses[:, 0]))
  if broken.size and losses.shape[0] > 1:
    which = ', '.join(str(i) for i in broken[:10])
    raise ValueError(
        f'sweep(s) {which} of {losses.shape[0]} (flattened batch index) had'
        ' a non-finite loss at the first step, before any update: their'
        ' params or first batch are broken, not the learning rate.'
    )
  median = np.median(smoothed, axis=0)  # NaN wherever any sweep is NaN.
  diverged_step = int(np.min(np.asarray(result.diverged_step)))
  valid = min(diverged_step + 1, num_steps)
  bad = np.flatnonzero(~np.isfinite(median[:valid]))
  if bad.size:
    valid = int(bad[0])
  diverged_lr = float(lrs[diverged_step]) if diverged_step < num_steps else None
  return Curves(lrs, losses, smoothed, median, valid, diverged_lr)


def _too_short(name: str, valid: int, needed: int) -> ValueError:
  return ValueError(
      f'{name} needs at least {needed} finite points before the divergence,'
      f' the result has {valid}: sweep with more steps or a lower start_lr.'
  )


def _steepest(lrs, loss, valid, num_steps):
  skip = max(1, num_steps // 20)
  positive = np.flatnonzero(lrs[:valid] > 0)
  first = int(positive[0]) if positive.size else valid
  if valid - first < 2 * skip + 1:
    raise _too_short("method='steepest'", valid - first, 2 * skip + 1)
  x = np.log(lrs[first:valid])
  slope = np.gradient(loss[first:valid], x)
  return first + skip + int(np.argmin(slope[skip:-skip]))


def _valley(loss, valid):
  if valid < 2:
    raise _too_short("method='valley'", valid, 2)
  falling = np.diff(loss[:valid]) < 0
  best_start, best_length, start = 0, 0, 0
  for i, down in enumerate(falling):
    if not down:
      start = i + 1
    elif i + 1 - start > best_length:
      best_start, best_length = start, i + 1 - start
  return best_start + best_length // 2


def suggest_lr(result: Any, *, method: str = 'steepest') -> float:
  r"""A learning rate read off a range test's smoothed loss :math:`s`.

  With :math:`x_t = \log \text{lr}_t`, over the :math:`n` finite points of
  the curve up to the divergence (non-positive rates left out for
  ``"steepest"``), and :math:`k = \max(1, \lfloor \text{num\_steps} / 20
  \rfloor)` points skipped at each end for ``"steepest"``:

  .. math::

    \text{lr} = \begin{cases}
      \text{lr}_{t^*}, \ t^* = \arg\min_{k \le t < n - k}
        \frac{\partial s}{\partial x}(t) & \text{steepest}
      \\
      \text{lr}_{\lfloor (a + b) / 2 \rfloor}, \ [a, b] \text{ the longest
        run with }
        s_{t+1} < s_t & \text{valley}
      \\
      \text{lr}_{t^*} / 10, \ t^* = \arg\min_t s_t & \text{minimum}
    \end{cases}

  (the slope by central differences, ``numpy.gradient``; ties go to the
  earliest step). For batched results from ``jax.vmap``, the median smoothed
  loss over the sweeps is read, cut at the earliest divergence. NumPy only:
  no matplotlib, nothing compiled.

  Args:
    result: a :class:`RangeTestResult`, one sweep or a batch of sweeps.
    method: ``"steepest"`` (steepest descent against log lr, fastai's
      ``steep``), ``"valley"`` (the middle of the longest descent, fastai's
      default) or ``"minimum"`` (a tenth of the rate at the lowest loss).

  Returns:
    lr
      The suggested value, a Python float.

  Raises:
    ValueError: an unknown ``method``, or too few finite points.

  Examples:
    >>> import numpy as np
    >>> import optax_clr
    >>> lrs = np.geomspace(1e-4, 1.0, 41)
    >>> loss = (np.log10(lrs) + 1.0) ** 2  # lowest at lr = 0.1
    >>> result = optax_clr.RangeTestResult(lrs, loss, loss, {}, 41)
    >>> round(optax_clr.suggest_lr(result, method='minimum'), 6)
    0.01
  """
  _checks.check_choice('method', method, SUGGEST_METHODS)
  data = curves(result)
  loss, valid = data.median, data.valid
  if method == 'steepest':
    index = _steepest(data.lrs, loss, valid, data.lrs.size)
  elif method == 'valley':
    index = _valley(loss, valid)
  else:
    if valid < 1:
      raise _too_short("method='minimum'", valid, 1)
    return float(data.lrs[int(np.argmin(loss[:valid]))]) / 10
  return float(data.lrs[index])


def suggest_clr_bounds(
    result: Any, *, metric: str = 'loss', ratio: float = 4.0
) -> tuple[float, float]:
  r"""CLR bounds from a range test: where the curve stops improving.

  As Smith (2015, section 3.3) and the seed describe: ``max_lr`` is the rate
  where the loss stops decreasing, or with ``metric="accuracy"`` where the
  accuracy stops rising, and ``base_lr`` is a ``ratio``-th of it (the seed's
  3 or 4). The moving average lags the raw curve by many steps, so the raw
  curve is read through a centred mean :math:`c` over :math:`2k + 1` steps,
  :math:`k = \max(1, \lfloor n / 50 \rfloor)`, which does not lag. With
  :math:`c = -\text{loss}` or :math:`c = \text{accuracy}` (higher is
  better), over the finite part up to the divergence:

  .. math::

    t^* = \min \{\, t : c_t \ge \max_u c_u - 0.05\,(\max_u c_u - c_0)
    \,\}, \quad
    \text{max\_lr} = \text{lr}_{t^*}, \quad
    \text{base\_lr} = \text{max\_lr} / \text{ratio}

  the first step that has made 95% of the sweep's total improvement (on a
  curve that keeps improving until it turns, the turn; on one that flattens
  first, where it flattens). ``max_lr`` is never above the rate where the
  sweep diverged. Batched results are read through the median over the
  sweeps.

  Args:
    result: a :class:`RangeTestResult`, one sweep or a batch of sweeps.
    metric: ``"loss"``, or ``"accuracy"`` when ``loss_fn`` returned
      ``(loss, {"accuracy": ...})`` with ``has_aux=True``.
    ratio: ``max_lr / base_lr``, ``>= 1``.

  Returns:
    bounds
      ``(base_lr, max_lr)``, Python floats, ready for
      :func:`optax_clr.triangular_schedule`.

  Raises:
    ValueError: an unknown ``metric``, a bad ``ratio``, no accuracy in the
      result, or no finite points.

  Examples:
    >>> import numpy as np
    >>> import optax_clr
    >>> lrs = np.geomspace(1e-4, 1.0, 41)
    >>> loss = np.maximum(-2.0 - np.log10(lrs), 0.0)  # falls until 0.01
    >>> result = optax_clr.RangeTestResult(lrs, loss, loss, {}, 41)
    >>> [round(b, 6) for b in optax_clr.suggest_clr_bounds(result)]
    [0.0025, 0.01]
  """
  _checks.check_choice('metric', metric, BOUND_METRICS)
  _checks.check_number('ratio', ratio, lower=1.0)
  data = curves(result)
  valid, num_steps = data.valid, data.lrs.size
  if metric == 'loss':
    curve = -np.median(data.losses, axis=0)
  else:
    aux = getattr(result, 'aux', None)
    if not isinstance(aux, dict) or 'accuracy' not in aux:
      raise ValueError(
          "metric='accuracy' needs result.aux['accuracy']: a loss_fn that"
          " returns (loss, {'accuracy': ...}) with has_aux=True."
      )
    accuracy = np.asarray(aux['accuracy'], np.float64)
    curve = np.median(accuracy.reshape(-1, num_steps), axis=0)
  bad = np.flatnonzero(~np.isfinite(curve[:valid]))
  valid = int(bad[0]) if bad.size else valid
  if valid < 1:
    raise _too_short(f'metric={metric!r}', valid, 1)
  curve = centered_mean(curve[:valid], max(1, num_steps // 50))
  best = np.max(curve)
  good_enough = curve >= best - TOLERANCE * (best - curve[0])
  max_lr = float(data.lrs[int(np.argmax(good_enough))])
  if data.diverged_lr is not None:
    max_lr = min(max_lr, data.diverged_lr)
  return max_lr / float(ratio), max_lr
