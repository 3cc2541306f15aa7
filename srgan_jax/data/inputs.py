"""The training input: which source makes this host's batches, and how the compiled
calls of the training steps take them.

``config.data.source`` chooses the source: 'device' decodes the images once onto this
host's first device and makes each batch there (``on_device``, no tensorflow); any
other source is the tf.data pipeline (``tf_pipeline``), imported only when used, so
that importing this module, or training from the device source, never imports
tensorflow.

``create_call_batches`` is the training loop's one door: the batch of its next call
of ``count`` steps, sharded over the mesh. Batches are keyed by (config.seed, step),
so the batches from ``start_step`` on are those an uninterrupted run reads there.
"""

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from srgan_jax.runtime import sharding


def _device_source(config: ml_collections.ConfigDict) -> Any:
  """This host's images decoded onto its first device (config.data.source='device')."""
  from srgan_jax.data import on_device  # pylint: disable=g-import-not-at-top  # This source only.
  return on_device.DeviceDataSource(
      config.data, scale=config.scale, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())


def create_input_iterator(config: ml_collections.ConfigDict,
                          start_step: int) -> Iterator[dict[str, np.ndarray]]:
  """This host's batches for steps start_step, start_step + 1, ..."""
  if config.data.source == 'device':  # No tensorflow: decoded once onto the accelerator.
    return _device_source(config).batches(start_step, config.batch_size // jax.process_count())
  # tf.data source only (it imports tensorflow).
  from srgan_jax.data import tf_pipeline  # pylint: disable=g-import-not-at-top
  return tf_pipeline.create_train_iterator(
      config.data, scale=config.scale, batch_size=config.batch_size // jax.process_count(),
      seed=config.seed, start_step=start_step, process_index=jax.process_index(),
      process_count=jax.process_count())


def _stacked_input(config: ml_collections.ConfigDict,
                   start_step: int) -> Callable[[int], dict[str, Any]]:
  """``next_stack(count)``: this host's batches of the next ``count`` steps (from
  start_step on), stacked ``[count, b, ...]``, for calls of several steps.

  The device source makes the stack on the device in one dispatch; the others stack
  host batches, which then reach the devices in one transfer.
  """
  if config.data.source == 'device':
    source, next_step = _device_source(config), start_step

    def next_stack(count: int) -> dict[str, Any]:
      nonlocal next_step
      stack = source.stacked_batches(next_step, count, config.batch_size // jax.process_count())
      next_step += count
      return stack

    return next_stack
  batches = create_input_iterator(config, start_step)
  return lambda count: jax.tree_util.tree_map(
      lambda *steps_batches: np.stack(steps_batches), *[next(batches) for _ in range(count)])


class CallBatch(NamedTuple):
  """The input of one compiled call of the training steps, on the mesh.

  Attributes:
    steps: what the call takes: every step's global batch, stacked ``[count, b, ...]``
      when calls run several steps (config.steps_per_call > 1), else ``[b, ...]``.
    last: the global batch ``[b, ...]`` of the call's last step (what the loop's
      TensorBoard images show).
  """
  steps: dict[str, jax.Array]
  last: dict[str, jax.Array]


def create_call_batches(config: ml_collections.ConfigDict, start_step: int,
                        mesh: jax.sharding.Mesh) -> Callable[[int], CallBatch]:
  """``next_call(count)``: the batch of the training loop's next call, of ``count``
  steps (from start_step on), split over ``mesh``'s 'data' axis along the batch.

  Each host makes its part of the global batch (``create_input_iterator``). With
  config.steps_per_call > 1 the steps compile to one scan (``training/steps.
  scan_steps``) taking the batches stacked ``[count, b, ...]``, sharded ``P(None,
  'data')``; with one step per call, a batch ``[b, ...]`` sharded ``P('data')`` and
  ``count`` is 1. Call it outside the mesh context: the device source makes each
  host's batch on one of its devices before it joins the global batch.
  """
  if config.steps_per_call > 1:
    next_stack = _stacked_input(config, start_step)
    stacked = jax.sharding.NamedSharding(mesh, jax.P(None, 'data'))

    def next_call(count: int) -> CallBatch:
      stack = sharding.shard_batch(next_stack(count), stacked)
      return CallBatch(stack, jax.tree_util.tree_map(lambda steps: steps[-1], stack))

    return next_call
  batches = create_input_iterator(config, start_step)
  split = jax.sharding.NamedSharding(mesh, jax.P('data'))

  def next_single(count: int) -> CallBatch:
    del count  # 1: calls of one step.
    batch = sharding.shard_batch(next(batches), split)
    return CallBatch(batch, batch)

  return next_single
