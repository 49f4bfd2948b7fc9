"""Reading a range test: suggested rates and CLR bounds (NumPy, host side).

Nothing here traces or compiles: a :class:`RangeTestResult` (one sweep, or a
batch of sweeps from ``jax.vmap``) is turned into NumPy arrays and read.
"""

from typing import Any, NamedTuple

import numpy as np

from optax_clr import _checks

SUGGEST_METHODS = ('robust', 'steepest', 'valley', 'minimum')
DEFAULT_METHOD = 'robust'
# 'minimum': the rate at the lowest point of the curve over this.
MINIMUM_DIVISOR = 10.0
# 'robust': the geometric mean of the steepest rate and the lowest point's
# rate over this.
ROBUST_DIVISOR = 2.0
# The centred filter spans 2 * max(1, num_steps // 25) + 1 steps.
HALF_WIDTH_DIVISOR = 25
# A curve must fall below its start by more than this fraction of it.
FLAT_TOLERANCE = 0.01
BOUND_METRICS = ('loss', 'accuracy')
# suggest_clr_bounds(metric='accuracy'): max_lr is the first step within this
# fraction of the total improvement from the best value.
TOLERANCE = 0.05
# suggest_clr_bounds(metric='loss'): max_lr is this multiple of suggest_lr().
CLR_MAX_FACTOR = 2.0


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
  values = np.asarray(values, np.float64)
  sums = np.concatenate([[0.0], np.cumsum(values)])
  index = np.arange(values.size)
  low = np.maximum(index - half_width, 0)
  high = np.minimum(index + half_width + 1, values.size)
  return (sums[high] - sums[low]) / (high - low)


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


def half_width(num_steps: int) -> int:
  """The centred filter's half width: ``max(1, num_steps // 25)`` steps."""
  return max(1, num_steps // HALF_WIDTH_DIVISOR)


def loss_curve(data: Curves) -> tuple[np.ndarray, np.ndarray, int]:
  """The curve every rule reads: ``(raw, filtered, n)``.

  ``raw`` is the median over the sweeps of the raw losses, ``n`` the length
  of its finite prefix up to the divergence, ``filtered`` its centred mean
  over ``2 k + 1`` steps (:func:`half_width`), truncated at the ends: a
  non-causal filter, without the moving average's lag.
  """
  raw = np.median(data.losses, axis=0)
  bad = np.flatnonzero(~np.isfinite(raw[: data.valid]))
  valid = int(bad[0]) if bad.size else data.valid
  raw = raw[:valid]
  if not valid:
    return raw, raw, 0
  return raw, centered_mean(raw, half_width(data.lrs.size)), valid


def check_improves(raw: np.ndarray, filtered: np.ndarray, k: int) -> None:
  r"""Refuses a curve that is flat or never falls below its start.

  The filtered curve must fall below its first value by more than 1 % of
  that value's magnitude and, on a curve of at least :math:`4 (2k + 1)`
  points, by more than five standard errors of the filter: the raw points'
  scatter about the filtered curve (the median absolute deviation, times
  1.4826) over :math:`\sqrt{2k + 1}`. A curve shorter than one window,
  :math:`2k + 1` points, is not judged.

  Raises:
    ValueError: the curve does not improve.
  """
  window = 2 * k + 1
  if filtered.size < window:
    return
  drop = filtered[0] - np.min(filtered)
  needed = FLAT_TOLERANCE * abs(filtered[0])
  if filtered.size >= 4 * window:
    scatter = 1.4826 * np.median(np.abs(raw - filtered))
    needed = max(needed, 5.0 * scatter / np.sqrt(window))
  if not drop > needed:
    raise ValueError(
        f'the range test loss never improved: it fell {drop:.3g} below'
        f' its start ({filtered[0]:.3g}), within its noise ({needed:.3g}).'
        ' No learning rate can be read off it: check the model and the data,'
        ' or sweep from a lower start_lr to a higher end_lr.'
    )


def _skip(num_steps: int) -> int:
  # No slope reads a point whose window is cut by an end of the curve.
  return max(num_steps // 20, half_width(num_steps) + 2)


def _steepest(lrs, loss, num_steps):
  """The steepest descent of ``loss`` against log lr, up to its lowest point.

  Past the lowest point the curve only rises on average; a drop there is
  noise (a spike and its recovery), not the descent the rule looks for.
  """
  skip = _skip(num_steps)
  valid = loss.size
  positive = np.flatnonzero(lrs[:valid] > 0)
  first = int(positive[0]) if positive.size else valid
  if valid - first < 2 * skip + 1:
    raise _too_short("method='steepest'", valid - first, 2 * skip + 1)
  x = np.log(lrs[first:valid])
  slope = np.gradient(loss[first:valid], x)
  lowest = int(np.argmin(loss[first:valid]))
  end = max(min(lowest + 1, slope.size - skip), skip + 1)
  return first + skip + int(np.argmin(slope[skip:end]))


def _valley(loss):
  falling = np.diff(loss) < 0
  best_start, best_length, start = 0, 0, 0
  for i, down in enumerate(falling):
    if not down:
      start = i + 1
    elif i + 1 - start > best_length:
      best_start, best_length = start, i + 1 - start
  return best_start + best_length // 2


def suggest_lr(result: Any, *, method: str = DEFAULT_METHOD) -> float:
  r"""A learning rate read off a range test's loss, without lag.

  Every method reads the same curve :math:`c`: the raw losses (the median
  over the sweeps of a batched result), cut before the first non-finite
  point and at the divergence, through a centred mean over :math:`2k + 1`
  steps, :math:`k = \max(1, \lfloor \text{num\_steps} / 25 \rfloor)`. It is
  a non-causal filter: unlike the moving average ``smoothed_losses`` (which
  lags the raw loss by about :math:`\beta / (1 - \beta)` = 49 steps at
  :math:`\beta = 0.98`), it does not move the curve to higher rates.
  Over the :math:`n` points of :math:`c`, with :math:`x_t = \log
  \text{lr}_t`, :math:`t_{\min} = \arg\min_t c_t` and :math:`s = \max(
  \lfloor \text{num\_steps} / 20 \rfloor, k + 2)` points skipped at each end
  for the slope (non-positive rates left out):

  .. math::

    t^* = \arg\min_{s \le t \le \max(s, \min(t_{\min}, n - s - 1))}
      \frac{\partial c}{\partial x}(t),
    \qquad
    \text{lr} = \begin{cases}
      \sqrt{\text{lr}_{t^*} \cdot \text{lr}_{t_{\min}} / 2}
        & \text{robust (the default)}
      \\
      \text{lr}_{t^*} & \text{steepest}
      \\
      \text{lr}_{\lfloor (a + b) / 2 \rfloor}, \ [a, b] \text{ the longest
        run with } c_{t+1} < c_t & \text{valley}
      \\
      \text{lr}_{t_{\min}} / 10 & \text{minimum}
    \end{cases}

  (the slope by central differences, ``numpy.gradient``; ties go to the
  earliest step).

  The default, ``"robust"``, lies halfway in log scale between the steepest
  descent and half the rate of the lowest loss. The steepest point alone is
  too low where the loss falls early and then keeps falling slowly, the
  lowest point too high where the loss falls until it blows up (a sharp
  stability limit). It was chosen on the suite of ``benchmarks/suggest.py``
  (``docs/suggestion_quality.md``: 11 tasks, each rule's suggestion trained
  and compared with the best of a 21-rate grid) for the lowest worst-case
  regret on its development tasks. Read off the median of 5 range tests
  (their defaults, 100 steps), its regret against the grid-best rate was at
  worst 1.42 accuracy points and 2.25 % of test MSE on the development
  tasks (mean 0.41 points, 2.11 %), and at worst 0.74 points and 2.35 % on
  the held-out tasks (mean 0.19 points, 1.24 %); the previous default,
  ``"steepest"`` read off the lagging moving average, lost up to 87 points
  there. Off one range test the worst case was 1.48 points and 6.71 % of
  MSE on the held-out tasks: prefer a batch of range tests (``jax.vmap``
  over seeds) when the rate matters.

  A curve that never falls below its start by more than its noise (a flat
  or rising loss: the model does not learn at any swept rate, or the sweep
  starts too high) is refused with a ValueError rather than given an
  arbitrary answer. NumPy only: no matplotlib, nothing compiled.

  Args:
    result: a :class:`RangeTestResult`, one sweep or a batch of sweeps
      (several seeds or batch orders from ``jax.vmap``: the median of their
      raw losses is read, more reliable than one sweep, see above).
    method: ``"robust"`` (the default, above), ``"steepest"`` (steepest
      descent against log lr, fastai's ``steep``), ``"valley"`` (the middle
      of the longest descent) or ``"minimum"`` (a tenth of the rate at the
      lowest loss, fastai's ``minimum``).

  Returns:
    lr
      The suggested value, a Python float.

  Raises:
    ValueError: an unknown ``method``, too few finite points, or a curve
      that never improves.

  Examples:
    >>> import numpy as np
    >>> import optax_clr
    >>> lrs = np.geomspace(1e-4, 1.0, 41)
    >>> loss = (np.log10(lrs) + 1.0) ** 2  # lowest at lr = 0.1
    >>> result = optax_clr.RangeTestResult(lrs, loss, loss, {}, 41)
    >>> round(optax_clr.suggest_lr(result, method='minimum'), 6)
    0.01

  References:
    Smith, `Cyclical Learning Rates for Training Neural Networks
    <https://arxiv.org/abs/1506.01186>`_, 2015, section 3.3.
  """
  _checks.check_choice('method', method, SUGGEST_METHODS)
  data = curves(result)
  raw, loss, valid = loss_curve(data)
  needed = {'minimum': 1, 'valley': 2}.get(
      method, 2 * _skip(data.lrs.size) + 1)
  if valid < needed:
    raise _too_short(f'method={method!r}', valid, needed)
  check_improves(raw, loss, half_width(data.lrs.size))
  lowest = float(data.lrs[int(np.argmin(loss))])
  if method == 'minimum':
    return lowest / MINIMUM_DIVISOR
  if method == 'valley':
    return float(data.lrs[_valley(loss)])
  steepest = float(data.lrs[_steepest(data.lrs, loss, data.lrs.size)])
  if method == 'steepest':
    return steepest
  return float(np.sqrt(steepest * lowest / ROBUST_DIVISOR))


def suggest_clr_bounds(
    result: Any, *, metric: str = 'loss', ratio: float = 4.0
) -> tuple[float, float]:
  r"""CLR bounds from a range test: around the suggested rate.

  With ``metric="loss"`` (the default), the bounds are centred in log
  scale on :func:`suggest_lr`'s default suggestion :math:`\text{lr}_r`
  (``"robust"``, read off the same lag-free curve):

  .. math::

    \text{max\_lr} = \min(2\, \text{lr}_r,\ \text{lr}_{\text{diverged}}),
    \quad
    \text{base\_lr} = \text{max\_lr} / \text{ratio}

  so with the default ``ratio=4`` a triangular schedule swings between half
  and twice the suggested rate. On the suite of ``benchmarks/suggest.py``
  (``docs/suggestion_quality.md``) this placement had the lowest worst-case
  regret on the development tasks among those tried (a triangular schedule
  of two cycles, against the grid-best fixed rate): at worst 1.23 accuracy
  points and 2.79 % of test MSE there, 0.00 points and 0.99 % on the
  held-out tasks, where Smith's "where the loss stops falling" rule (the
  previous default) lost up to 1.73 (dev) and 1.48 (held-out) points.

  With ``metric="accuracy"``, Smith's reading (2015, section 3.3):
  ``max_lr`` is where the accuracy stops rising. The accuracy (the median
  over the sweeps) is read through the same centred mean :math:`c` as the
  loss, without lag, and over its finite part up to the divergence

  .. math::

    t^* = \min \{\, t : c_t \ge \max_u c_u - 0.05\,(\max_u c_u - c_0)
    \,\}, \quad
    \text{max\_lr} = \text{lr}_{t^*}

  the first step that has made 95% of the sweep's total rise (on a curve
  that rises until it turns, the turn; on one that flattens first, where it
  flattens); ``base_lr`` is ``max_lr / ratio``. ``max_lr`` is never above
  the rate where the sweep diverged.

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
      result, too few finite points, or a loss that never improves (as
      :func:`suggest_lr`).

  Examples:
    >>> import numpy as np
    >>> import optax_clr
    >>> lrs = np.geomspace(1e-5, 1.0, 101)
    >>> loss = 2.0 - np.tanh(2.0 * (np.log10(lrs) + 3.0))  # falls at 1e-3
    >>> loss += 10.0 * np.maximum(np.log10(lrs) + 1.0, 0.0) ** 2  # rises at 0.1
    >>> result = optax_clr.RangeTestResult(lrs, loss, loss, {}, 101)
    >>> round(optax_clr.suggest_lr(result, method='steepest'), 6)
    0.001
    >>> lr = optax_clr.suggest_lr(result)  # sqrt(0.001 * lowest / 2)
    >>> round(lr, 6)
    0.005617
    >>> [round(b / lr, 6) for b in optax_clr.suggest_clr_bounds(result)]
    [0.5, 2.0]

  References:
    Smith, `Cyclical Learning Rates for Training Neural Networks
    <https://arxiv.org/abs/1506.01186>`_, 2015, section 3.3.
  """
  _checks.check_choice('metric', metric, BOUND_METRICS)
  _checks.check_number('ratio', ratio, lower=1.0)
  data = curves(result)
  num_steps = data.lrs.size
  if metric == 'loss':
    max_lr = CLR_MAX_FACTOR * suggest_lr(result, method=DEFAULT_METHOD)
    if data.diverged_lr is not None:
      max_lr = min(max_lr, data.diverged_lr)
    return max_lr / float(ratio), max_lr
  aux = getattr(result, 'aux', None)
  if not isinstance(aux, dict) or 'accuracy' not in aux:
    raise ValueError(
        "metric='accuracy' needs result.aux['accuracy']: a loss_fn that"
        " returns (loss, {'accuracy': ...}) with has_aux=True."
    )
  accuracy = np.asarray(aux['accuracy'], np.float64)
  curve = np.median(accuracy.reshape(-1, num_steps), axis=0)
  valid = data.valid
  bad = np.flatnonzero(~np.isfinite(curve[:valid]))
  valid = int(bad[0]) if bad.size else valid
  if valid < 1:
    raise _too_short(f'metric={metric!r}', valid, 1)
  curve = centered_mean(curve[:valid], half_width(num_steps))
  best = np.max(curve)
  good_enough = curve >= best - TOLERANCE * (best - curve[0])
  max_lr = float(data.lrs[int(np.argmax(good_enough))])
  if data.diverged_lr is not None:
    max_lr = min(max_lr, data.diverged_lr)
  return max_lr / float(ratio), max_lr
