"""JAX's persistent compilation cache for the example scripts.

A second run of a script (another process) reads its compiled programs from
disk instead of compiling them again: the range test, the training step and
a sweep's program each compile in about a second on CPU, longer on an
accelerator. Enable it with ``--compilation-cache`` (the default folder) or
``--compilation-cache DIR``, or with the environment variable
``OPTAX_CLR_COMPILATION_CACHE`` (``1`` for the default folder, or a path).
The default folder is ``$XDG_CACHE_HOME/optax_clr/jax`` (``~/.cache/...``).

The same two lines enable it in any program::

  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
"""

import argparse
import os

import jax

ENV_VAR = 'OPTAX_CLR_COMPILATION_CACHE'
DEFAULT = 'default'


def default_dir() -> str:
  """``$XDG_CACHE_HOME/optax_clr/jax``, or ``~/.cache/optax_clr/jax``."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'optax_clr', 'jax')


def add_flag(parser: argparse.ArgumentParser) -> None:
  """Adds ``--compilation-cache [DIR]`` to ``parser``."""
  parser.add_argument(
      '--compilation-cache', nargs='?', const=DEFAULT, default=None,
      metavar='DIR',
      help='cache compiled programs on disk for later runs (default folder'
      f' {default_dir()}; or set {ENV_VAR}=1 or a path)')


def enable(flag: str | None) -> str | None:
  """Turns the cache on from the flag or the environment; returns its folder.

  Args:
    flag: the ``--compilation-cache`` value: None (then the environment
      decides), ``"default"`` or a folder.

  Returns:
    The folder in use, or None when the cache stays off.
  """
  setting = flag if flag is not None else os.environ.get(ENV_VAR, '')
  if setting in ('', '0'):
    return None
  path = default_dir() if setting in (DEFAULT, '1') else setting
  os.makedirs(path, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', path)
  # Cache every program, not only those that compile for over a second.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  return path
