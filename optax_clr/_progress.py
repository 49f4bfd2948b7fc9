r"""Progress bars of compiled loops, updated from inside the program.

A compiled ``lax.scan`` of training steps runs without coming back to Python,
so a bar of steps done is fed by a host callback: every :math:`N` steps (and
at the last one) the program tells the bar through ``jax.debug.callback``;
no step waits for a device-to-host copy. A range test checks after every
step and takes the bar's token and :math:`N` as traced arguments, so a new
bar, or another :math:`N`, reuses its compiled program. A sweep, whose
devices run several models one after another, scans blocks of :math:`N`
steps and checks after each block (one check per step and model would cost
a tenth of a small model's step on CPU), so its :math:`N` is part of the
program: an explicit ``every`` of another value compiles another one. The callbacks carry no
operands: JAX places a callback's operands on a device before calling back,
and on CPU, once training has streamed its batches through the caches, that
placement was most of a callback's cost (about 0.5 ms of about 1 ms). Each
program's :class:`Channel` knows instead where each update falls. A program
built without progress contains no callback at all.

Under automatic sharding the callback runs once per update, on the first
device of the mesh (``jax.debug.callback`` gives it a maximal sharding), and
only process 0 draws a bar.

The ``progress=`` argument of :func:`optax_clr.sweep`,
:func:`optax_clr.range_test` and their NNX versions is checked here, once:
``False`` (no bar), ``True`` (a bar with about :data:`UPDATES` updates), an
int :math:`N \ge 1` (an update every :math:`N` steps) or a dict of
``tqdm.tqdm`` keyword arguments (``desc``, ``leave``, ``file``...), which may
also hold ``every=N``. tqdm is an optional dependency (the ``progress``
extra).
"""

from collections.abc import Iterator, Mapping
import contextlib
import itertools
import math
import threading
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

# Updates of a bar over a whole run, when ``every`` is not given. Each update
# is one host callback (a fraction of a millisecond on CPU); 50 of them and
# the bar itself cost tens of milliseconds a call, under 1 % of a run of a
# few seconds (benchmarks/README.md, section 9).
UPDATES = 50
INSTALL = "progress bars need tqdm: pip install 'optax_clr[progress]'."


class Progress(NamedTuple):
  """A checked ``progress=`` setting."""

  every: int | None  # Steps between updates; None: about UPDATES in all.
  options: tuple[tuple[str, Any], ...]  # tqdm keyword arguments.

  def interval(self, total: int) -> int:
    """Steps between updates of a bar of ``total`` steps."""
    if self.every is not None:
      return self.every
    return max(1, math.ceil(total / UPDATES))


def _tqdm() -> Any:
  try:
    import tqdm  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError(INSTALL) from error
  return tqdm.tqdm


def check(progress: Any, name: str = 'progress') -> Progress | None:
  """Checks a ``progress=`` argument; None when no bar is wanted.

  Args:
    progress: False or None, True, an int ``N >= 1`` or a dict of tqdm
      keyword arguments (with an optional ``every``).
    name: the argument's name, for messages.

  Returns:
    A :class:`Progress`, or None for no bar.

  Raises:
    TypeError: ``progress`` of another type, or a dict with non-string keys.
    ValueError: an ``N`` (or ``every``) below 1.
    ImportError: a bar is asked for and tqdm is not installed.

  Examples:
    >>> from optax_clr import _progress
    >>> _progress.check(False) is None
    True
    >>> _progress.check({'every': 10, 'desc': 'lr'})
    Progress(every=10, options=(('desc', 'lr'),))
    >>> _progress.check(True).interval(1000)
    20
  """
  if progress is None or progress is False:
    return None
  if progress is True:
    setting = Progress(None, ())
  elif isinstance(progress, int) and not isinstance(progress, bool):
    setting = Progress(_every(name, progress), ())
  elif isinstance(progress, Mapping):
    options = dict(progress)
    for key in options:
      if not isinstance(key, str):
        raise TypeError(
            f'{name} must be a dict of tqdm keyword arguments (string keys),'
            f' got the key {key!r}.'
        )
    every = options.pop('every', None)
    if every is not None:
      every = _every(f'{name}["every"]', every)
    setting = Progress(every, tuple(sorted(options.items())))
  else:
    raise TypeError(
        f'{name} must be True, False, an int N >= 1 (an update every N steps)'
        f' or a dict of tqdm keyword arguments, got {progress!r}.'
    )
  _tqdm()  # A clear ImportError before anything compiles.
  return setting


def _every(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(
        f'{name} must be a whole number of steps >= 1, got {value!r}.'
    )
  return value


_BARS: dict[int, Any] = {}
_TOKENS = itertools.count(1)
_LOCK = threading.Lock()


def update(token: Any, done: Any) -> None:
  """Moves bar ``token`` to ``done`` steps (the host side of :func:`report`)."""
  with _LOCK:
    bar = _BARS.get(int(token))
    if bar is not None and int(done) > bar.n:
      bar.update(int(done) - bar.n)


@contextlib.contextmanager
def bar(setting: Progress | None, total: int, desc: str) -> Iterator[int]:
  """A bar of ``total`` steps while the block runs; yields its token.

  The token (0 for no bar: ``setting`` None, or a process other than 0) is
  what the compiled program passes back to :func:`report`. The block must
  wait for the program (``jax.block_until_ready``) before it ends.
  """
  if setting is None or jax.process_index() != 0:
    yield 0
    return
  options = {'desc': desc, 'unit': 'step', **dict(setting.options)}
  handle = _tqdm()(total=total, **options)
  token = next(_TOKENS)
  with _LOCK:
    _BARS[token] = handle
  try:
    yield token
  finally:
    with _LOCK:
      del _BARS[token]
    handle.close()


def report(token: jax.Array, done: jax.Array, total: int,
           every: jax.Array, callback: Any, after: jax.Array) -> None:
  """Inside a program: calls ``callback()`` every ``every`` steps, and last.

  A check after each step (a range test's): the callback runs when
  ``done`` reaches a multiple of ``every`` or ``total``, once ``after`` (the
  step's loss, say) is computed.

  Args:
    token: the bar's token (a traced int32 scalar; 0: no bar).
    done: the steps done so far, an int32 scalar that is not batched by
      ``vmap`` (a scan's step count is not), so that the callback runs once.
    total: the bar's total (static): its last step is always reported.
    every: steps between updates (a traced int32 scalar).
    callback: a :class:`Channel`'s :meth:`~Channel.block_done`.
    after: an array the update waits for.
  """
  due = (done % every == 0) | (done == total)
  signal(token, due & computed(after), callback)


def ends_every(every: int, total: int) -> tuple[int, ...]:
  """Where :func:`report` calls back: each multiple of ``every``, ``total``.

  Examples:
    >>> ends_every(3, 10)
    (3, 6, 9, 10)
  """
  ends = tuple(range(every, total + 1, every))
  return ends if total % every == 0 else ends + (total,)


class Channel:
  """The host side of a sweep's bar, told without operands.

  A compiled program (one channel each) tells its channel "the next block
  of this pass is done" (:meth:`block_done`) or "a pass is done"
  (:meth:`pass_done`); the channel knows how many steps into the pass each
  update falls (the ``ends`` of the call, from the program's structure) and
  the bar of the call in progress. One call of a program at a time has the
  channel: a call made while another holds it runs without updates from
  inside (:meth:`attach` gives it token 0) and its bar jumps to the end
  when it returns.

  Args:
    steps_per_pass: steps of one pass.
  """

  def __init__(self, steps_per_pass: int):
    self.steps_per_pass = steps_per_pass
    self._lock = threading.Lock()
    self._token = self._passes = self._blocks = 0
    self._ends: tuple[int, ...] = ()

  @contextlib.contextmanager
  def attach(self, token: int, ends: tuple[int, ...]) -> Iterator[int]:
    """Gives the channel to bar ``token`` for a call; yields the token to use.

    Args:
      token: the bar's token (0: no bar).
      ends: the steps into a pass at which the program calls
        :meth:`block_done`, in order.
    """
    with self._lock:
      busy = self._token != 0
      if token and not busy:
        self._token, self._passes, self._blocks = token, 0, 0
        self._ends = ends
    if busy or not token:
      yield 0
      return
    try:
      yield token
    finally:
      with self._lock:
        self._token = 0

  def block_done(self) -> None:
    """Moves the bar to the end of the next block the program reported."""
    with self._lock:
      if not self._ends:
        return
      end = self._ends[min(self._blocks, len(self._ends) - 1)]
      self._blocks += 1
      token, done = self._token, self._passes * self.steps_per_pass + end
    update(token, done)

  def pass_done(self) -> None:
    """Moves the bar to the end of the next pass."""
    with self._lock:
      self._passes += 1
      self._blocks = 0
      token, done = self._token, self._passes * self.steps_per_pass
    update(token, done)


def signal(token: jax.Array, ready: jax.Array, callback: Any) -> None:
  """Inside a program: calls ``callback()`` (no operands) when a bar is on.

  Args:
    token: the bar's token (a traced int32 scalar; 0: no bar).
    ready: a boolean scalar computed from the work being reported, and not
      batched by ``vmap``: the callback waits for it, and runs only where
      it is true.
    callback: a function of no arguments (a :class:`Channel`'s method).
  """
  jax.lax.cond((token > 0) & ready, lambda: jax.debug.callback(callback),
               lambda: None)


def computed(x: jax.Array) -> jax.Array:
  """True, once ``x`` (a non-empty float array) is computed; never folded.

  Every element equals itself or is NaN, so this is always true, but the
  compiler cannot know that and must wait for ``x``.
  """
  return jnp.any(x == x) | jnp.any(x != x)  # pylint: disable=comparison-with-itself


def operands(token: int, every: int) -> tuple[jax.Array, jax.Array]:
  """The traced ``(token, every)`` a program with progress takes."""
  return jnp.asarray(token, jnp.int32), jnp.asarray(every, jnp.int32)
