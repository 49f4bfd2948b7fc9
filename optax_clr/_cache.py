"""Compiled programs cached per user callable, without keeping it alive.

``jax.jit`` with a user's ``loss_fn`` as a static argument would keep every
``loss_fn`` ever passed (and the arrays its closure captures, baked into the
traced program) alive in a module-level cache. Here each program is jitted
once per combination of callables and static settings, the callables are held
through weak references, and an entry is dropped as soon as any of its
callables is garbage collected. A callable that cannot be weakly referenced
(a builtin) is held normally; a bound method, which Python recreates on every
attribute access, is held through ``weakref.WeakMethod``.
"""

from collections import OrderedDict
from collections.abc import Callable, Hashable
import threading
from typing import Any
import weakref

# Entries kept for callables that are still alive; the oldest is dropped
# first. Each holds compiled executables, so the bound is on memory.
MAX_ENTRIES = 32


class Ref:
  """A hashable handle on a callable, by identity, weak where possible."""

  __slots__ = ('_get', '_id', '__weakref__')

  def __init__(self, fn: Callable[..., Any], on_death: Callable[..., Any]):
    try:
      if hasattr(fn, '__self__') and hasattr(fn, '__func__'):
        self._id = (id(getattr(fn, '__self__')), id(getattr(fn, '__func__')))
        self._get = weakref.WeakMethod(fn, on_death)
      else:
        self._id = id(fn)
        self._get = weakref.ref(fn, on_death)
    except TypeError:  # Not weakly referenceable: hold it.
      self._id = id(fn)
      self._get = lambda: fn

  def __call__(self) -> Callable[..., Any]:
    fn = self._get()
    if fn is None:
      raise ReferenceError('the callable of a cached program is gone.')
    return fn

  def alive(self) -> bool:
    return self._get() is not None

  def __hash__(self) -> int:
    return hash(self._id)

  def __eq__(self, other: Any) -> bool:
    if not isinstance(other, Ref):
      return NotImplemented
    # An entry is dropped when its callable dies, before its id can be
    # reused, so equal ids of live callables mean the same callable.
    return self._id == other._id and self.alive() and other.alive()


class ProgramCache:
  """Builds and keeps one program per (callables, static settings).

  A weak reference's callback may run on any thread at any moment (whenever
  the last strong reference goes, garbage collection included), also while
  this thread holds the lock, and dropping an entry can free the last
  reference to another cached callable, whose callback then runs at once.
  So a callback only marks the cache as holding dead entries and purges it
  if the lock is free; entries are popped under the lock and released after
  it, never freeing a user's object while the lock is held.
  """

  def __init__(self, max_entries: int = MAX_ENTRIES):
    self._entries: OrderedDict[Any, Any] = OrderedDict()
    self._max_entries = max_entries
    self._lock = threading.Lock()
    self._has_dead = False

  def __len__(self) -> int:
    return len(self._entries)

  def _on_death(self, *_: Any) -> None:
    self._has_dead = True
    self._purge(blocking=False)

  def _purge(self, *, blocking: bool) -> None:
    """Drops the entries of dead callables; gives up if the lock is held."""
    if not self._lock.acquire(blocking=blocking):
      return  # The holder, or the next get, purges.
    dropped = []
    try:
      while self._has_dead:
        self._has_dead = False
        dead = [key for key in self._entries
                if not all(ref.alive() for ref in key[0])]
        dropped.extend(self._entries.pop(key) for key in dead)
    finally:
      self._lock.release()
    del dropped  # Freed here, outside the lock: callbacks may purge again.

  def get(
      self,
      callables: tuple[Callable[..., Any], ...],
      static: Hashable,
      build: Callable[[tuple[Ref, ...]], Any],
  ) -> Any:
    """The program for ``callables`` and ``static``, built on first use.

    Args:
      callables: the user's functions the program calls.
      static: other hashable settings the program is specialised on.
      build: ``build(refs)`` returns the program; it must reach the callables
        only through ``refs`` (call ``ref()`` to get one), never hold them.

    Returns:
      The cached or newly built program.
    """
    self._purge(blocking=True)
    refs = tuple(Ref(fn, self._on_death) for fn in callables)
    key = (refs, static)
    with self._lock:
      program = self._entries.get(key)
      if program is not None:
        self._entries.move_to_end(key)
        return program
    program = build(refs)
    evicted = []
    with self._lock:
      self._entries[key] = program
      while len(self._entries) > self._max_entries:
        evicted.append(self._entries.popitem(last=False))
    del evicted  # Freed outside the lock, as in _purge.
    return program
