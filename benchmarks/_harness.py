"""Timing, compile timing, environment and report helpers shared by benches.

Every measurement follows the same protocol: compile first and report the
compile time apart (``jax.jit(f).lower(...).compile()``), warm up, then time
the candidates interleaved (``A B A B ...``, the order rotating each repeat)
with ``jax.block_until_ready`` on every output, and report the median, min and
max of at least five repeats. Ratios are always ``median(A) / median(B)``.
"""

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import importlib.metadata
import os
import platform
import re
import statistics
import time
from typing import Any

import jax

MIN_REPEATS = 5
QUICK_REPEATS = 3


@dataclasses.dataclass(frozen=True)
class Settings:
  """How hard a benchmark works.

  Attributes:
    quick: a seconds-long smoke run (tiny sizes, ``QUICK_REPEATS``): checks
      that everything runs and agrees, measures nothing worth reading.
    repeats: timed repeats per measurement, at least ``MIN_REPEATS`` unless
      ``quick``.
  """

  quick: bool = False
  repeats: int = 7

  def __post_init__(self):
    least = 1 if self.quick else MIN_REPEATS
    if self.repeats < least:
      raise ValueError(
          f'repeats must be >= {least}, got repeats={self.repeats}.'
      )

  @property
  def compile_repeats(self) -> int:
    """Repeats of measurements that compile (compile time, cold calls)."""
    return 1 if self.quick else self.repeats


def stats(samples: Sequence[float]) -> dict[str, Any]:
  """Median, min, max and the raw samples (seconds)."""
  samples = [float(s) for s in samples]
  return {
      'median_s': statistics.median(samples),
      'min_s': min(samples),
      'max_s': max(samples),
      'repeats': len(samples),
      'samples_s': samples,
  }


def _block(value: Any) -> Any:
  return jax.block_until_ready(value)


def time_interleaved(
    candidates: Mapping[str, Callable[[], Any]],
    *,
    repeats: int,
    number: int = 1,
    warmup: int = 1,
) -> dict[str, dict[str, Any]]:
  """Times zero-argument callables interleaved; seconds per call.

  Args:
    candidates: name -> a callable doing the work once and returning its
      (possibly asynchronous) outputs, which are blocked on.
    repeats: samples per candidate.
    number: calls per sample; a sample is their total time / ``number``.
    warmup: untimed calls per candidate before the first sample.

  Returns:
    name -> :func:`stats` of the per-call times.
  """
  if repeats < 1:
    raise ValueError(f'repeats must be >= 1, got {repeats}.')
  names = list(candidates)
  for name in names:
    for _ in range(warmup):
      _block(candidates[name]())
  samples = {name: [] for name in names}
  for r in range(repeats):
    shift = r % len(names)
    for name in names[shift:] + names[:shift]:
      fn = candidates[name]
      start = time.perf_counter()
      outputs = [fn() for _ in range(number)]
      _block(outputs)
      samples[name].append((time.perf_counter() - start) / number)
  return {name: stats(samples[name]) for name in names}


def compile_once(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
  """Traces, lowers and compiles a fresh ``jax.jit`` of ``fn``; (exe, s).

  ``fn`` is wrapped in a new function each time so JAX's tracing cache never
  answers; the time is what a user waits for on a first call.
  """
  fresh = lambda *a: fn(*a)  # pylint: disable=unnecessary-lambda
  start = time.perf_counter()
  compiled = jax.jit(fresh).lower(*args).compile()
  return compiled, time.perf_counter() - start


def time_compiles(
    candidates: Mapping[str, tuple[Callable[..., Any], Sequence[Any]]],
    *,
    repeats: int,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
  """Compile times, interleaved like :func:`time_interleaved`.

  Args:
    candidates: name -> ``(fn, args)``.
    repeats: compilations per candidate.

  Returns:
    ``(executables, timings)``: the last compiled executable and the
    :func:`stats` of the compile times for each name.
  """
  if repeats < 1:
    raise ValueError(f'repeats must be >= 1, got {repeats}.')
  names = list(candidates)
  executables, samples = {}, {name: [] for name in names}
  for r in range(repeats):
    shift = r % len(names)
    for name in names[shift:] + names[:shift]:
      fn, args = candidates[name]
      executables[name], seconds = compile_once(fn, *args)
      samples[name].append(seconds)
  return executables, {name: stats(samples[name]) for name in names}


def compiled_bytes(compiled: Any) -> int | None:
  """Peak bytes the compiler plans for one call: arguments + outputs + temps.

  From ``Compiled.memory_analysis()`` (aliased buffers counted once); None
  where the backend does not report it.
  """
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if analysis is None:
    return None
  return int(
      analysis.argument_size_in_bytes
      + analysis.output_size_in_bytes
      + analysis.temp_size_in_bytes
      - analysis.alias_size_in_bytes
  )


def compiled_cost(compiled: Any) -> dict[str, float] | None:
  """XLA's static estimate of one call: flops, transcendentals, bytes.

  A deterministic count, immune to the machine's load: what a schedule adds
  to a step shows here even where the timings are too noisy to see it.
  None where the backend does not report it.
  """
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  if not analysis:
    return None
  keys = ('flops', 'transcendentals', 'bytes accessed')
  return {k: float(analysis[k]) for k in keys if k in analysis}


def ratio(
    timings: Mapping[str, Mapping[str, Any]],
    a: str,
    b: str,
    *,
    metric: str = 'run',
    target: tuple[str, float] | None = None,
    note: str = '',
) -> dict[str, Any]:
  """``median(a) / median(b)`` and whether it meets ``target``.

  The ratio of the minima is recorded too: on a loaded machine noise only
  ever adds time, so it is the better estimate of the intrinsic cost when
  the spread is wide. Targets are judged on the medians.

  Args:
    timings: name -> :func:`stats`.
    a: the numerator.
    b: the denominator (the baseline).
    metric: what was timed (``"run"``, ``"compile"``, ``"cold"``, ...).
    target: ``("<=", 1.3)`` or ``(">=", 10.0)``; None when there is none.
    note: one line shown next to the ratio.

  Returns:
    A JSON-ready record.
  """
  value = timings[a]['median_s'] / timings[b]['median_s']
  met = None
  if target is not None:
    op, bound = target
    if op not in ('<=', '>='):
      raise ValueError(f"target op must be '<=' or '>=', got {op!r}.")
    met = bool(value <= bound) if op == '<=' else bool(value >= bound)
  return {
      'a': a,
      'b': b,
      'metric': metric,
      'a_median_s': timings[a]['median_s'],
      'b_median_s': timings[b]['median_s'],
      'ratio': value,
      'min_ratio': timings[a]['min_s'] / timings[b]['min_s'],
      'target': None if target is None else f'{target[0]} {target[1]:g}',
      'met': met,
      'note': note,
  }


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def environment() -> dict[str, Any]:
  """Device kind, platform and the versions that the numbers depend on."""
  device = jax.devices()[0]
  info = {
      'device_kind': device.device_kind,
      'platform': device.platform,
      'device_count': jax.device_count(),
      'cpu_count': os.cpu_count(),
      'processor': platform.processor() or platform.machine(),
      'python': platform.python_version(),
  }
  for package in ('jax', 'jaxlib', 'optax', 'flax', 'numpy', 'torch'):
    info[package] = _version(package)
  return info


def device_slug(kind: str) -> str:
  """A file name for a device kind: ``"NVIDIA H100 80GB"`` -> ``nvidia-h100-80gb``."""
  slug = re.sub(r'[^a-z0-9]+', '-', kind.lower()).strip('-')
  return slug or 'device'


def format_seconds(seconds: float | None) -> str:
  """``1.23 ms`` style, three significant digits."""
  if seconds is None:
    return '-'
  for scale, unit in ((1.0, 's'), (1e-3, 'ms'), (1e-6, 'us')):
    if seconds >= scale:
      return f'{seconds / scale:.3g} {unit}'
  return f'{seconds / 1e-9:.3g} ns'


def format_bytes(count: int | None) -> str:
  if count is None:
    return '-'
  for scale, unit in ((2**30, 'GiB'), (2**20, 'MiB'), (2**10, 'KiB')):
    if count >= scale:
      return f'{count / scale:.3g} {unit}'
  return f'{count} B'
