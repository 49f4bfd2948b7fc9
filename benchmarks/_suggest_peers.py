"""The peers' suggestion rules, re-implemented from their documented behaviour.

Each rule reads ONE recorded range test: ``lrs`` and the RAW losses (the loss
of step ``t`` before update ``t``, NaN after the sweep stopped), applies the
peer's own smoothing and early stop to them, then its suggestion. NumPy only;
nothing here calls the peers' code.

* torch-lr-finder (``LRFinder.range_test`` + ``plot(suggest_lr=True)``):
  smoothing without bias correction, ``s_0 = L_0``, ``s_t = 0.05 L_t + 0.95
  s_{t-1}``; stop after recording the first ``s_t > 5 * best``; drop 10
  points at the start and 5 at the end; the lr at the most negative
  ``numpy.gradient`` of ``s`` over the index.
* fastai (``Learner.lr_find``): bias-corrected EMA, ``beta = 0.98``; stop
  after recording the first ``s_t > 4 * best``; the curve trimmed to
  ``[num_it // 10 : -5]`` and cut at the first NaN; ``valley`` (the default:
  the longest strictly decreasing subsequence, index ``start + n/3 +
  n/6``), ``steep`` (left end of the most negative forward slope against
  ``ln lr``) and ``minimum`` (the lr at the lowest loss, / 10).
* Lightning (``Tuner.lr_find``, 2.5): bias-corrected EMA ``beta = 0.98``
  with its off-by-one (``1 - beta ** (t + 2)``), stop after the first
  ``s_t > 4 * best`` (from the second step on); skip 10 at the start and 1
  at the end, drop non-finite points, the lr at the most negative gradient
  with respect to the raw lr (``torch.gradient(losses, spacing=[lrs])``).
* optax_clr 0.1 (the previous default, for comparison): ``steepest`` on
  the bias-corrected EMA (``beta = 0.98``) that :func:`optax_clr.range_test`
  records, the slope against log lr, ``max(1, n // 20)`` points skipped at
  each end; its CLR bounds: the first step of a centred mean of the raw loss
  within 5 % of the total improvement, ``base = max / 4``.
"""

import numpy as np


def _finite_prefix(lrs, losses):
  bad = np.flatnonzero(~np.isfinite(losses))
  end = int(bad[0]) if bad.size else losses.size
  return lrs[:end], losses[:end]


def _stop(smoothed, factor):
  """The recorded prefix: up to and including the first ``s > factor*best``."""
  best = np.inf
  for t, value in enumerate(smoothed):
    best = min(best, value)
    if value > factor * best:
      return smoothed[: t + 1]
  return smoothed


def torch_lr_finder(lrs, losses):
  """torch-lr-finder's suggestion on one raw curve."""
  lrs, losses = _finite_prefix(np.asarray(lrs, np.float64),
                               np.asarray(losses, np.float64))
  smoothed = np.empty_like(losses)
  for t, loss in enumerate(losses):
    smoothed[t] = loss if t == 0 else 0.05 * loss + 0.95 * smoothed[t - 1]
  smoothed = _stop(smoothed, 5.0)
  lrs = lrs[: smoothed.size][10:-5]
  smoothed = smoothed[10:-5]
  if smoothed.size < 2:
    raise ValueError('torch-lr-finder: too few points')
  return float(lrs[int(np.argmin(np.gradient(smoothed)))])


def _ema(losses, beta=0.98, offset=1):
  average, out = 0.0, np.empty_like(losses)
  for t, loss in enumerate(losses):
    average = beta * average + (1 - beta) * loss
    out[t] = average / (1 - beta ** (t + offset))
  return out


def _fastai_curve(lrs, losses, num_it):
  lrs, losses = _finite_prefix(np.asarray(lrs, np.float64),
                               np.asarray(losses, np.float64))
  smoothed = _stop(_ema(losses), 4.0)
  lrs = lrs[: smoothed.size][num_it // 10: -5]
  smoothed = smoothed[num_it // 10: -5]
  if smoothed.size < 2:
    raise ValueError('fastai: too few points')
  return lrs, smoothed


def fastai_valley(lrs, losses):
  """fastai's ``valley``: the middle of the longest decreasing subsequence."""
  lrs, losses = _fastai_curve(lrs, losses, np.size(lrs))
  n = losses.size
  max_start, max_end = 0, 0
  lds = [1] * n
  for i in range(1, n):
    for j in range(0, i):
      if losses[i] < losses[j] and lds[i] < lds[j] + 1:
        lds[i] = lds[j] + 1
      if lds[max_end] < lds[i]:
        max_end = i
        max_start = max_end - lds[max_end]
  sections = (max_end - max_start) / 3
  index = max_start + int(sections) + int(sections / 2)
  return float(lrs[index])


def fastai_steep(lrs, losses):
  """fastai's ``steep``: the steepest forward slope against ln(lr)."""
  lrs, losses = _fastai_curve(lrs, losses, np.size(lrs))
  slopes = np.diff(losses) / np.diff(np.log(lrs))
  return float(lrs[int(np.argmin(slopes))])


def fastai_minimum(lrs, losses):
  """fastai's ``minimum``: a tenth of the lr at the lowest smoothed loss."""
  lrs, losses = _fastai_curve(lrs, losses, np.size(lrs))
  return float(lrs[int(np.argmin(losses))]) / 10


def lightning(lrs, losses):
  """Lightning's suggestion: steepest gradient against the raw lr."""
  lrs = np.asarray(lrs, np.float64)
  losses = np.asarray(losses, np.float64)
  finite = np.isfinite(losses)
  end = int(np.argmin(finite)) if not finite.all() else losses.size
  smoothed = _stop(_ema(losses[:end], offset=2), 4.0)
  lrs, smoothed = lrs[: smoothed.size][10:-1], smoothed[10:-1]
  keep = np.isfinite(smoothed)
  lrs, smoothed = lrs[keep], smoothed[keep]
  if smoothed.size < 2:
    raise ValueError('Lightning: too few points')
  return float(lrs[int(np.argmin(np.gradient(smoothed, lrs)))])


def legacy_steepest(lrs, smoothed, valid):
  """optax_clr 0.1's default: steepest on the lagging EMA, vs log lr."""
  lrs = np.asarray(lrs, np.float64)[:valid]
  smoothed = np.asarray(smoothed, np.float64)[:valid]
  skip = max(1, np.size(lrs) // 20)
  slope = np.gradient(smoothed, np.log(lrs))
  return float(lrs[skip + int(np.argmin(slope[skip:-skip]))])


def legacy_clr_bounds(lrs, losses, valid, num_steps):
  """optax_clr 0.1's CLR bounds (5 % tolerance, ratio 4)."""
  curve = -np.asarray(losses, np.float64)[:valid]
  k = max(1, num_steps // 50)
  kernel = np.ones(2 * k + 1)
  curve = (np.convolve(curve, kernel, mode='same')
           / np.convolve(np.ones_like(curve), kernel, mode='same'))
  best = np.max(curve)
  index = int(np.argmax(curve >= best - 0.05 * (best - curve[0])))
  max_lr = float(lrs[index])
  return max_lr / 4, max_lr


PEER_RULES = {
    'torch-lr-finder': torch_lr_finder,
    'fastai valley': fastai_valley,
    'fastai steep': fastai_steep,
    'fastai minimum': fastai_minimum,
    'Lightning': lightning,
}
