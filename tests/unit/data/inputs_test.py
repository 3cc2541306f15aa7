"""Tests for srgan_jax.data.inputs: the training loop's batches, one compiled call at a time."""

from conftest import tiny_run_config, write_tiny_image_sets
import jax
import numpy as np
import pytest

from srgan_jax.data import inputs
from srgan_jax.runtime import sharding

START = 5  # Any step: batches are keyed by (seed, step).


@pytest.fixture(scope='module')
def data_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp('data')
  write_tiny_image_sets(root)
  return root


@pytest.mark.parametrize('source', ['folders', 'device'])
@pytest.mark.parametrize('steps_per_call', [1, 3])
def test_call_batches_are_the_steps_batches_split_over_the_devices(data_dirs, source,
                                                                   steps_per_call):
  """Calls of 3, then 2 steps (or 1, 1): the same batches as step by step, stacked
  [count, b, ...] and split along b when calls run several steps; `last` is the
  last step's."""
  config = tiny_run_config(data_dirs)
  config.data.source, config.steps_per_call = source, steps_per_call
  mesh = sharding.create_mesh()
  next_call = inputs.create_call_batches(config, START, mesh)
  counts = [3, 2] if steps_per_call > 1 else [1, 1]
  expected = inputs.create_input_iterator(config, START)
  for count in counts:
    batch = next_call(count)
    singles = [jax.device_get(next(expected)) for _ in range(count)]
    spec = jax.P(None, 'data') if steps_per_call > 1 else jax.P('data')
    for key in ('lr', 'hr'):
      assert batch.steps[key].sharding == jax.sharding.NamedSharding(mesh, spec)
      steps = np.asarray(batch.steps[key])
      if steps_per_call > 1:
        assert steps.shape[0] == count
        for offset, single in enumerate(singles):
          np.testing.assert_array_equal(steps[offset], single[key])
      else:
        np.testing.assert_array_equal(steps, singles[0][key])
      np.testing.assert_array_equal(np.asarray(batch.last[key]), singles[-1][key])
