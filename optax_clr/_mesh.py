"""Where sweeps and range tests run: a mesh of ``models`` and ``data`` axes.

Arguments are placed on the mesh as global ``jax.Array`` s, whatever they
come as: host arrays (NumPy, Python numbers, or arrays of one process's
devices, the same on every process) are cut into the shards of this
process's devices; global arrays are resharded by a compiled identity. The
compiler then partitions the program: along ``models`` each device computes
only its own models, along ``data`` a model's batch is split and its
gradients reduced across the devices that hold it.
"""

from collections.abc import Sequence
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

MODEL_AXIS = 'models'
DATA_AXIS = 'data'
P = jax.sharding.PartitionSpec


def check(mesh: Any, *, axes: Sequence[str], required: str,
          caller: str) -> jax.sharding.Mesh:
  """Checks a user's mesh: a ``Mesh`` with ``required`` and only ``axes``."""
  if not isinstance(mesh, jax.sharding.Mesh):
    raise TypeError(
        f'mesh must be a jax.sharding.Mesh (or None), got'
        f' {type(mesh).__name__}.'
    )
  names = tuple(mesh.axis_names)
  if required not in names:
    raise ValueError(
        f'{caller} needs mesh to have a {required!r} axis, got axis names'
        f' {names}.'
    )
  unknown = [name for name in names if name not in axes]
  if unknown:
    raise ValueError(
        f'{caller} takes a mesh with axes {tuple(axes)}, got axis names'
        f' {names}.'
    )
  return mesh


def size(mesh: jax.sharding.Mesh, axis: str) -> int:
  return int(dict(mesh.shape).get(axis, 1))


def default(num_models: int) -> jax.sharding.Mesh:
  """A 1-D ``models`` mesh over every device of every process.

  One process uses at most ``num_models`` devices (more would only compute
  padding); several processes use all devices, so that every one takes part.
  """
  devices = jax.devices()
  if jax.process_count() == 1:
    devices = devices[:max(1, min(len(devices), num_models))]
  return jax.sharding.Mesh(np.array(devices), (MODEL_AXIS,))


def check_batch(batches: Any, axis: int, data_size: int) -> None:
  """Refuses batches whose batch axis the ``data`` axis does not divide."""
  if data_size == 1:
    return
  for path, leaf in jax.tree_util.tree_flatten_with_path(batches)[0]:
    shape = np.shape(leaf)
    if len(shape) > axis and shape[axis] % data_size:
      raise ValueError(
          f"mesh's {DATA_AXIS!r} axis of size {data_size} must divide the"
          f' batch size, got {shape[axis]} (axis {axis} of shape {shape}) at'
          f' batches{jax.tree_util.keystr(path)}.'
      )


def batch_spec(mesh: jax.sharding.Mesh, ndim: int, axis: int,
               models: bool) -> P:
  """``models`` on axis 0 (when stacked), ``data`` on the batch axis."""
  spec: list[str | None] = [None] * ndim
  if models:
    spec[0] = MODEL_AXIS
  if ndim > axis and DATA_AXIS in mesh.axis_names:
    spec[axis] = DATA_AXIS
  return P(*spec)


def _is_key(leaf: Any) -> bool:
  dtype = getattr(leaf, 'dtype', None)
  return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _pad_host(array: Any, padding: int) -> Any:
  if not padding:
    return array
  xp = jnp if isinstance(array, jax.Array) else np
  return xp.concatenate([array, xp.repeat(array[-1:], padding, axis=0)])


@functools.lru_cache(maxsize=64)
def _reshard(padding: int, sharding: jax.sharding.Sharding):
  return jax.jit(lambda x: _pad_host(x, padding), out_shardings=sharding)


def put(leaf: Any, sharding: jax.sharding.NamedSharding,
        padding: int = 0) -> jax.Array:
  """``leaf`` as a global array of ``sharding``, its axis 0 padded.

  Padding repeats the last entry ``padding`` times (copies of the last
  model, trimmed from the results).
  """
  if _is_key(leaf):  # Typed PRNG keys travel as their key data.
    return jax.random.wrap_key_data(
        put(jax.random.key_data(leaf), sharding, padding),
        impl=jax.random.key_impl(leaf),
    )
  if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
    if leaf.sharding.device_set == sharding.device_set:
      return _reshard(padding, sharding)(leaf)
    # On other devices (a trimmed result on part of the mesh: a continued
    # sweep with fewer models): no program takes both, so through the host.
    leaf = local(leaf)
  if jax.process_count() == 1:
    return jax.device_put(_pad_host(leaf, padding), sharding)
  array = _pad_host(np.asarray(leaf), padding)
  return jax.make_array_from_callback(
      array.shape, sharding, lambda index: array[index]
  )


def put_all(leaves: Sequence[Any], shardings: Sequence[Any],
            paddings: Sequence[int]) -> list[jax.Array]:
  """:func:`put` of every leaf; one batched transfer on one process."""
  if jax.process_count() > 1:
    return [put(*args) for args in zip(leaves, shardings, paddings)]
  placed = [_pad_host(leaf, padding) if padding else leaf
            for leaf, padding in zip(leaves, paddings)]
  moved = [i for i, (leaf, sharding) in enumerate(zip(placed, shardings))
           if not (isinstance(leaf, jax.Array) and
                   leaf.sharding.is_equivalent_to(sharding, leaf.ndim))]
  for i, leaf in zip(moved, jax.device_put([placed[i] for i in moved],
                                           [shardings[i] for i in moved])):
    placed[i] = leaf
  return placed


def local(tree: Any) -> Any:
  """Every leaf readable on this process: replicated arrays' local copy."""

  def read(leaf):
    if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
      return leaf
    if leaf.is_fully_replicated:
      return leaf.addressable_data(0)
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return jnp.asarray(multihost_utils.process_allgather(leaf, tiled=True))

  return jax.tree.map(read, tree)


def trim(tree: Any, num_models: int, mesh: jax.sharding.Mesh) -> Any:
  """The first ``num_models`` entries of arrays sharded over ``models``.

  One process slices. Several keep the arrays global and each model where
  it was trained: the devices that hold only padding are dropped from the
  sharding when the models per device divide ``num_models``; otherwise the
  trimmed arrays are gathered onto every device.
  """

  def cut(leaf):
    padded = leaf.shape[0]
    if padded == num_models:
      return leaf
    if leaf.is_fully_addressable:
      return leaf[:num_models]
    per_device = padded // size(mesh, MODEL_AXIS)
    if num_models % per_device:
      return _reshard_slice(num_models,
                            jax.sharding.NamedSharding(mesh, P()))(leaf)
    kept = num_models // per_device
    axis = mesh.axis_names.index(MODEL_AXIS)
    devices = np.take(mesh.devices, np.arange(kept), axis=axis)
    sub = jax.sharding.NamedSharding(
        jax.sharding.Mesh(devices, mesh.axis_names), leaf.sharding.spec
    )
    keep = set(devices.flat)
    shards = [s.data for s in leaf.addressable_shards if s.device in keep]
    # A process may hold none of the kept models: then the dtype is given
    # (a keyword of newer jax).
    return jax.make_array_from_single_device_arrays(
        (num_models, *leaf.shape[1:]), sub, shards,
        **({} if shards else {'dtype': leaf.dtype})
    )

  return jax.tree.map(cut, tree)


@functools.lru_cache(maxsize=64)
def _reshard_slice(num_models: int, sharding: jax.sharding.Sharding):
  return jax.jit(lambda x: x[:num_models], out_shardings=sharding)


def padded_count(num_models: int, models: int, chunk: int | None) -> tuple[
    int, int, int]:
  """``(per_device, passes, chunk)`` of K models on ``models`` devices.

  Each device trains ``per_device = passes * chunk`` models (the last ones
  copies of model K - 1), ``chunk`` at a time; the chunks are balanced, so
  at most ``chunk`` (the requested size) run at once and the padding is
  less than one chunk per device.
  """
  per_device = math.ceil(num_models / models)
  if chunk is None or chunk >= per_device:
    return per_device, 1, per_device
  passes = math.ceil(per_device / chunk)
  chunk = math.ceil(per_device / passes)
  return passes * chunk, passes, chunk
