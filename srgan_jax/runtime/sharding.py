"""The device mesh and how arrays are placed on it.

One 'data' mesh axis spans every device of every process. Training splits each
global batch along it (`shard_batch`) and replicates the states; evaluation and
super-resolution split a batch that every process holds and gather the outputs
back to every process (`data_parallel`).
"""

import functools
from typing import Any, Callable

import jax
import numpy as np


def create_mesh() -> jax.sharding.Mesh:
  """A 1-D data-parallel mesh over every device of every host.

  Auto axis: XLA propagates the batch sharding through the networks (the default,
  Explicit, would need every reshape in the models annotated).
  """
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def shard_batch(local_batch: dict[str, np.ndarray | jax.Array],
                sharding: jax.sharding.NamedSharding) -> dict[str, jax.Array]:
  """The global batch, from this host's part of it."""
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


@functools.cache
def _data_parallel_program(fn: Callable[[Any, jax.Array], jax.Array], mesh: jax.sharding.Mesh
                           ) -> Callable[..., jax.Array]:
  """The jitted program of ``data_parallel``, one per (fn, mesh): calls with the same
  function reuse what was compiled for each batch shape."""
  data_sharding = jax.sharding.NamedSharding(mesh, jax.P('data'))

  def sharded(variables, batch, count):
    outputs = jax.lax.with_sharding_constraint(fn(variables, batch), data_sharding)
    return outputs[:count]

  # The constraint keeps the computation split over the batch; out_shardings gathers.
  return jax.jit(sharded, static_argnums=2,
                 out_shardings=jax.sharding.NamedSharding(mesh, jax.P()))


def replicate(tree: Any, replicated: jax.sharding.NamedSharding) -> Any:
  """A pytree whose values every process holds alike, replicated onto ``replicated``.

  Through the host: JAX does not move a process-local array (a restored checkpoint
  sits on one local device) onto other processes' devices.
  """
  return jax.device_put(jax.device_get(tree), replicated)


def data_parallel(fn: Callable[[Any, jax.Array], jax.Array], variables: Any
                  ) -> Callable[[np.ndarray], jax.Array]:
  """``fn(variables, batch)`` over every device of every process, batch in, outputs out.

  Every process calls the result with the same whole batch (all of them read the same
  images). The batch is zero-padded to a multiple of the device count and split over
  the 'data' axis, each device taking its rows of it (make_array_from_process_local_data
  with the batch's own shape as the global shape); the variables are replicated.
  The outputs are gathered to every process inside the compiled program (an
  all-gather onto every device, as multihost_utils.process_allgather does in a
  program of its own), so each process reads them from its own devices and the call
  stays asynchronous: ``np.asarray`` of the result waits for it.

  Args:
    fn: (variables, batch of the padded size) -> outputs with the batch as axis 0.
    variables: a pytree, the same on every process (host or replicated arrays).

  Returns:
    batch [n, ...] -> fn's outputs for its n rows, a jax.Array present on every process.
  """
  mesh = create_mesh()
  data_sharding = jax.sharding.NamedSharding(mesh, jax.P('data'))
  variables = replicate(variables, jax.sharding.NamedSharding(mesh, jax.P()))
  apply = _data_parallel_program(fn, mesh)

  def run(batch: np.ndarray) -> jax.Array:
    count = batch.shape[0]
    padded = -(-count // jax.device_count()) * jax.device_count()
    if padded != count:
      batch = np.concatenate([batch, np.zeros((padded - count, *batch.shape[1:]), batch.dtype)])
    global_batch = jax.make_array_from_process_local_data(data_sharding, batch, batch.shape)
    return apply(variables, global_batch, count)

  return run
