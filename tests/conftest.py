"""Test-session defaults: CPU unless asked otherwise, reproducible hypothesis.

* ``JAX_PLATFORMS`` defaults to ``cpu`` before JAX starts: several tests
  assert bitwise equality (a resumed run against an uninterrupted one), which
  holds on CPU; GPU reductions need not be deterministic. Set
  ``JAX_PLATFORMS`` explicitly to run the suite on another backend.
* Hypothesis runs the ``ci`` profile: derandomized (the same examples on every
  run and machine, so a failure in CI reproduces locally), no deadline (the
  first example compiles), no example database written into the repository.
  ``HYPOTHESIS_PROFILE=explore`` draws fresh random examples, more of them.
"""

import os

from hypothesis import settings
import jax

if not os.environ.get('JAX_PLATFORMS'):
  os.environ['JAX_PLATFORMS'] = 'cpu'  # Inherited by the tests' subprocesses.
  jax.config.update('jax_platforms', 'cpu')  # jax read the variable already.

# jax.enable_x64 (a context manager) is newer than the oldest JAX the core
# supports; there, the same context manager lives in jax.experimental. The
# job that installs the declared lower bounds runs the x64 tests through it.
if not hasattr(jax, 'enable_x64'):
  from jax.experimental import enable_x64  # pylint: disable=g-import-not-at-top
  jax.enable_x64 = enable_x64

settings.register_profile(
    'ci', derandomize=True, deadline=None, max_examples=40, database=None,
    print_blob=True,
)
settings.register_profile(
    'explore', deadline=None, max_examples=300, database=None,
    print_blob=True,
)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci'))
