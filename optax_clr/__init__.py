"""optax_clr: cyclical learning rates, one-cycle, decays and the LR range test.

Every schedule is a jittable, vmappable ``optax.Schedule``.
"""

from optax_clr._cooldown import cooldown_schedule
from optax_clr._current import current_learning_rate
from optax_clr._cyclic import cyclic_momentum_schedule
from optax_clr._cyclic import cyclic_schedule
from optax_clr._cyclic import exp_range_schedule
from optax_clr._cyclic import triangular2_schedule
from optax_clr._cyclic import triangular_schedule
from optax_clr._decay import exponential_decay_schedule
from optax_clr._decay import inverse_time_decay_schedule
from optax_clr._decay import step_decay_schedule
from optax_clr._find_lr import find_lr
from optax_clr._find_lr import FindLRResult
from optax_clr._inverse_sqrt import inverse_sqrt_schedule
from optax_clr._one_cycle import one_cycle_momentum_schedule
from optax_clr._one_cycle import one_cycle_schedule
from optax_clr._plot import plot_range_test
from optax_clr._ramp import range_test_schedule
from optax_clr._range_test import range_test
from optax_clr._range_test import RangeTestResult
from optax_clr._restarts import cosine_restarts_schedule
from optax_clr._suggest import suggest_clr_bounds
from optax_clr._suggest import suggest_lr
from optax_clr._wsd import wsd_schedule
from optax_clr._wsd_restarts import wsd_restarts_schedule
from optax_clr._sweep import grid
from optax_clr._sweep import sweep
from optax_clr._sweep import SweepResult

__version__ = '0.1.0'

__all__ = (
    'cooldown_schedule',
    'cosine_restarts_schedule',
    'current_learning_rate',
    'cyclic_momentum_schedule',
    'cyclic_schedule',
    'exp_range_schedule',
    'exponential_decay_schedule',
    'find_lr',
    'FindLRResult',
    'grid',
    'inverse_sqrt_schedule',
    'inverse_time_decay_schedule',
    'one_cycle_momentum_schedule',
    'one_cycle_schedule',
    'plot_range_test',
    'range_test',
    'range_test_schedule',
    'RangeTestResult',
    'step_decay_schedule',
    'suggest_clr_bounds',
    'suggest_lr',
    'sweep',
    'SweepResult',
    'triangular2_schedule',
    'triangular_schedule',
    'wsd_restarts_schedule',
    'wsd_schedule',
)


def __getattr__(name: str):
  # optax_clr.nnx needs Flax, an optional dependency: import it on first use.
  if name == 'nnx':
    import importlib  # pylint: disable=g-import-not-at-top
    return importlib.import_module('optax_clr.nnx')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
