"""The compiled-program cache: no hang, no leak, however its entries die."""

import gc
import subprocess
import sys
import textwrap
import threading

from optax_clr import _cache

# A deadlocked script is stopped here, not by the CI's own limit.
SCRIPT_TIMEOUT = 300


def _in_thread(target, timeout=60):
  """Runs ``target`` in a daemon thread; True if it returned in time."""
  thread = threading.Thread(target=target, daemon=True)
  thread.start()
  thread.join(timeout)
  return not thread.is_alive()


def _build_holding(obj):
  """A build whose program holds ``obj`` strongly, as find_lr's wrappers may."""
  return lambda refs: (refs, obj)


def test_dead_callable_drops_its_entry():
  cache = _cache.ProgramCache()
  fn = lambda x: x
  cache.get((fn,), 'static', lambda refs: object())
  assert len(cache) == 1
  del fn
  gc.collect()
  assert len(cache) == 0


def test_same_callable_and_static_reuses_the_program():
  cache = _cache.ProgramCache()
  fn = lambda x: x
  first = cache.get((fn,), 'a', lambda refs: object())
  assert cache.get((fn,), 'a', lambda refs: object()) is first
  assert cache.get((fn,), 'b', lambda refs: object()) is not first


def test_dropping_an_entry_that_frees_another_cached_callable():
  # The entry of `outer` holds `inner`, itself a cached callable: dropping
  # the first frees the second, whose weakref callback runs right then on
  # the same thread. A lock taken in that callback deadlocked here.
  cache = _cache.ProgramCache()

  def scenario():
    inner = lambda x: x
    outer = lambda x: x
    cache.get((inner,), 'inner', lambda refs: object())
    cache.get((outer,), 'outer', _build_holding(inner))
    del inner  # Still alive: outer's program holds it.
    del outer

  assert _in_thread(scenario), 'dropping a dead entry deadlocked'
  gc.collect()
  assert len(cache) == 0


def test_eviction_that_frees_a_cached_callable():
  # Past max_entries the oldest entry is evicted; its program holds the last
  # reference to a callable that keys a newer entry.
  cache = _cache.ProgramCache(max_entries=2)

  def scenario():
    for _ in range(3 * cache._max_entries + 1):  # pylint: disable=protected-access
      schedule = lambda lr: lr
      cache.get((schedule,), 'schedule', lambda refs: object())
      cache.get((print,), ('wrapper', id(schedule)), _build_holding(schedule))
      del schedule

  assert _in_thread(scenario), 'evicting past capacity deadlocked'
  gc.collect()
  assert len(cache) <= 2


def test_entries_of_fresh_callables_do_not_accumulate():
  cache = _cache.ProgramCache(max_entries=1000)
  for _ in range(50):
    fn = lambda x: x
    cache.get((fn,), 'static', lambda refs: object())
  del fn
  gc.collect()
  assert len(cache) == 0


def test_callback_while_lock_is_held_defers_the_drop():
  cache = _cache.ProgramCache()
  sizes = []

  def scenario():
    fn = lambda x: x
    cache.get((fn,), 'static', lambda refs: object())
    with cache._lock:  # pylint: disable=protected-access
      del fn  # Its callback finds the lock taken and only marks the cache.
      gc.collect()
      sizes.append(len(cache))
    other = lambda x: x
    cache.get((other,), 'static', lambda refs: object())  # Purges first.
    sizes.append(len(cache))

  assert _in_thread(scenario), 'a callback waited on the held lock'
  assert sizes == [1, 1]


def _run(source: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, '-c', textwrap.dedent(source)],
      capture_output=True, text=True, timeout=SCRIPT_TIMEOUT, check=False,
  )


_FIND_LR_SETUP = """
    import jax.numpy as jnp
    import numpy as np
    import optax
    import optax_clr
    from optax_clr import _find_lr

    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 16, 4)).astype(np.float32)
    w_true = np.arange(1.0, 5.0, dtype=np.float32)
    batches = {'x': x[:200], 'y': x[:200] @ w_true}
    loss_fn = lambda w, b: jnp.mean((b['x'] @ w - b['y']) ** 2)
    eval_fn = lambda w: jnp.mean((x[200:] @ w - x[200:] @ w_true) ** 2)
    options = dict(num_candidates=2, num_seeds=1, num_rungs=1,
                   num_range_tests=1, range_test_steps=100, max_cost=None)
"""


def test_find_lr_with_a_schedule_lambda_exits():
  process = _run(_FIND_LR_SETUP + """
    result = optax_clr.find_lr(
        loss_fn, jnp.zeros(4), optax.sgd, batches, eval_fn,
        schedule=lambda lr: optax.constant_schedule(lr), **options)
    print('chosen', result.learning_rate)
  """)
  assert process.returncode == 0, process.stderr
  assert 'chosen' in process.stdout


def test_find_lr_loop_past_the_cache_capacity_exits():
  process = _run(_FIND_LR_SETUP + """
    _find_lr._WRAPPERS._max_entries = 2
    for i in range(5):
      optax_clr.find_lr(
          loss_fn, jnp.zeros(4), optax.sgd, batches, eval_fn,
          schedule=lambda lr: optax.constant_schedule(lr), **options)
    import gc
    gc.collect()
    # Only eval_fn's wrapper is left: the schedules' died with them.
    print('entries', len(_find_lr._WRAPPERS))
  """)
  assert process.returncode == 0, process.stderr
  assert 'entries 1' in process.stdout
