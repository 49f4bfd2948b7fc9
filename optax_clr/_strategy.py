"""How a sweep or range test runs its steps: one scanned program, or the host.

``"scan"`` compiles the whole run as one ``lax.scan``: no trip to Python per
step. ``"loop"`` compiles one step and calls it from Python once per step
(:mod:`optax_clr._host_loop`), with the training state donated and the
batches read by index from arrays already on the device. ``"auto"`` picks by
a rule measured on the families of ``benchmarks/bench_strategy.py``:

* on CPU, ``"loop"`` when the loss computes a convolution
  (``conv_general_dilated`` in its jaxpr): XLA:CPU runs a convolution inside
  a while loop many times slower than the same step called from Python
  (jax-ml/jax#12868; the loop was 11x-22x faster on two CNNs,
  ``docs/scaling.md``);
* ``"scan"`` otherwise: the scanned program was faster for an MLP (1.5x-1.7x:
  its step is shorter than a dispatch) and for a small transformer (1.1x-
  1.3x, though one of its steps takes milliseconds, so a rule on step cost
  alone would have picked wrong); and on GPU and TPU, where no such slowdown
  is known and a dispatch per step can leave the device idle (not measured
  here).

Traced inputs (a range test under ``jax.vmap``) cannot be driven from the
host: ``"auto"`` picks ``"scan"`` there and ``"loop"`` is refused.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.core

STRATEGIES = ('auto', 'scan', 'loop')
# The primitive whose presence makes a scanned program slow on XLA:CPU.
CONVOLUTION = 'conv_general_dilated'


def check(strategy: Any) -> str:
  """Checks a ``strategy=`` argument; returns it.

  Raises:
    ValueError: ``strategy`` is not one of :data:`STRATEGIES`.

  Examples:
    >>> check('loop')
    'loop'
  """
  if not isinstance(strategy, str) or strategy not in STRATEGIES:
    raise ValueError(
        f'strategy must be one of {", ".join(map(repr, STRATEGIES))}, got'
        f' {strategy!r}.'
    )
  return strategy


def traced(tree: Any) -> bool:
  """Whether any leaf of ``tree`` is traced (under the user's jit or vmap)."""
  return any(isinstance(leaf, jax.core.Tracer)
             for leaf in jax.tree.leaves(tree))


def _primitives(jaxpr: Any) -> set[str]:
  """The names of every primitive in ``jaxpr`` and its sub-jaxprs."""
  names: set[str] = set()
  stack = [jaxpr]
  while stack:
    current = stack.pop()
    current = getattr(current, 'jaxpr', current)  # A ClosedJaxpr's Jaxpr.
    for eqn in current.eqns:
      names.add(eqn.primitive.name)
      for value in eqn.params.values():
        values = value if isinstance(value, (tuple, list)) else (value,)
        stack.extend(v for v in values if hasattr(v, 'eqns') or
                     hasattr(getattr(v, 'jaxpr', None), 'eqns'))
  return names


def convolves(fn: Callable[..., Any], *args: Any) -> bool:
  """Whether ``fn(*args)`` computes a convolution (traced once, not run).

  Examples:
    >>> import jax.numpy as jnp
    >>> convolves(lambda x: jnp.convolve(x, x), jnp.ones(3))
    True
    >>> convolves(lambda x: x @ x, jnp.ones(3))
    False
  """
  return CONVOLUTION in _primitives(jax.make_jaxpr(fn)(*args))


def choose(strategy: str, *, platform: str, is_traced: bool,
           convolution: Callable[[], bool]) -> str:
  """The strategy a call runs: ``"scan"`` or ``"loop"``.

  Args:
    strategy: a checked ``strategy=`` argument.
    platform: the platform of the devices that train (``"cpu"``, ``"gpu"``).
    is_traced: whether the inputs are traced (no host loop then).
    convolution: called only when the rule needs it: whether the loss
      computes a convolution.

  Raises:
    ValueError: ``"loop"`` with traced inputs.

  Examples:
    >>> choose('auto', platform='cpu', is_traced=False,
    ...        convolution=lambda: True)
    'loop'
    >>> choose('auto', platform='gpu', is_traced=False,
    ...        convolution=lambda: True)
    'scan'
  """
  if strategy == 'loop' and is_traced:
    raise ValueError(
        "strategy='loop' drives the steps from Python and needs concrete"
        ' inputs, but some are traced (under jax.jit or jax.vmap); use'
        " strategy='scan' or 'auto' there."
    )
  if strategy != 'auto':
    return strategy
  if is_traced or platform != 'cpu':
    return 'scan'
  return 'loop' if convolution() else 'scan'
