"""optax_clr: cyclical learning rates, one-cycle, decays and the LR range test.

Every schedule is a jittable, vmappable ``optax.Schedule``.
"""

from optax_clr._cyclic import cyclic_momentum_schedule
from optax_clr._cyclic import cyclic_schedule
from optax_clr._cyclic import exp_range_schedule
from optax_clr._cyclic import triangular2_schedule
from optax_clr._cyclic import triangular_schedule
from optax_clr._decay import exponential_decay_schedule
from optax_clr._decay import inverse_time_decay_schedule
from optax_clr._decay import step_decay_schedule
from optax_clr._one_cycle import one_cycle_momentum_schedule
from optax_clr._one_cycle import one_cycle_schedule
from optax_clr._ramp import range_test_schedule

__version__ = '0.1.0'

__all__ = (
    'cyclic_momentum_schedule',
    'cyclic_schedule',
    'exp_range_schedule',
    'exponential_decay_schedule',
    'inverse_time_decay_schedule',
    'one_cycle_momentum_schedule',
    'one_cycle_schedule',
    'range_test_schedule',
    'step_decay_schedule',
    'triangular2_schedule',
    'triangular_schedule',
)
