"""Where arrays live: one mesh over every device of every process.

Batches are split along the mesh's ``data`` axis and the model state is
replicated, so XLA inserts the gradient all-reduce; the same code runs on one
CPU, several devices and several hosts under JAX's multi-controller runtime.
"""

from typing import Any

import jax
import numpy as np

DATA_AXIS = 'data'


class Placement:
  """Puts host arrays on the global mesh: batches sharded, state replicated."""

  def __init__(self):
    self.mesh = jax.make_mesh(
        (jax.device_count(),), (DATA_AXIS,),
        axis_types=(jax.sharding.AxisType.Auto,),
    )
    self.batch = jax.NamedSharding(self.mesh, jax.P(DATA_AXIS))
    self.replicated = jax.NamedSharding(self.mesh, jax.P())

  def shard(self, array: np.ndarray) -> jax.Array:
    """Splits the leading (batch) axis over the devices.

    Every process holds the whole global batch; each one hands over only
    the slices of its own devices.
    """
    return jax.make_array_from_callback(
        array.shape, self.batch, lambda index: array[index]
    )

  def replicate(self, tree: Any) -> Any:
    """Copies every leaf to every device.

    Typed PRNG keys (a dropout layer's ``nnx.Rngs`` stream) are copied as
    their key data and rewrapped with the same implementation.
    """

    def put(leaf):
      if jax.dtypes.issubdtype(getattr(leaf, 'dtype', None),
                               jax.dtypes.prng_key):
        return jax.random.wrap_key_data(
            put(jax.random.key_data(leaf)), impl=jax.random.key_impl(leaf))
      leaf = np.asarray(leaf)
      return jax.make_array_from_callback(
          leaf.shape, self.replicated, lambda index: leaf[index]
      )

    return jax.tree.map(put, tree)


def initialize_distributed(
    coordinator: str, num_processes: int, process_id: int
) -> None:
  """Joins JAX's multi-controller runtime (before any other JAX call)."""
  # CPU processes exchange collectives through gloo; GPUs and TPUs ignore it.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
      coordinator_address=coordinator, num_processes=num_processes,
      process_id=process_id,
  )
