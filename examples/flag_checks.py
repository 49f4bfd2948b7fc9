"""Checks of a trainer config's fields, each error naming the field's flag.

Shared by the digits trainer (:mod:`examples.trainer.config`) and the LM
trainer (:mod:`examples.lm.config`): a config is a frozen dataclass whose
field ``batch_size`` is the flag ``--batch-size``. Every check raises
ValueError with the flag and the value received, before any work.
"""

from collections.abc import Sequence
import math
from typing import Any

import numpy as np


def flag(name: str) -> str:
  """The command-line flag of a config field: ``batch_size -> --batch-size``."""
  return '--' + name.replace('_', '-')


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
  """Raises ValueError naming ``name`` unless ``value`` is in ``choices``."""
  if value not in choices:
    raise ValueError(f'{name} must be one of {tuple(choices)}, got {value!r}.')


def check_whole(config: Any, name: str, low: int,
                high: float = math.inf) -> None:
  """Field ``name`` must be a whole number in ``[low, high)``.

  Args:
    config: the config dataclass.
    name: the field.
    low: the least value allowed.
    high: the first value refused (``math.inf``: no upper bound).

  Raises:
    ValueError: it is not; the message names the flag and the value.
  """
  value = getattr(config, name)
  if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
      or not low <= value < high):
    bounds = f'>= {low}' if high == math.inf else f'in [{low}, {high})'
    raise ValueError(
        f'{flag(name)} must be a whole number {bounds}, got {value!r}.')


def check_real(
    config: Any, name: str, low: float, high: float = math.inf, *,
    low_open: bool = False, high_open: bool = True,
) -> None:
  """Field ``name`` must be a finite number between ``low`` and ``high``.

  Args:
    config: the config dataclass.
    name: the field.
    low: the lower bound.
    high: the upper bound.
    low_open: exclude ``low`` itself.
    high_open: exclude ``high`` itself.

  Raises:
    ValueError: it is not; the message names the flag and the value.
  """
  value = getattr(config, name)
  ok = (not isinstance(value, bool)
        and isinstance(value, (int, float, np.integer, np.floating))
        and math.isfinite(value)
        and (low < value if low_open else low <= value)
        and (value < high if high_open else value <= high))
  if not ok:
    interval = ('(' if low_open else '[') + f'{low:g}, {high:g}' + (
        ')' if high_open else ']')
    raise ValueError(
        f'{flag(name)} must be a finite number in {interval}, got {value!r}.')
