"""Data-parallel inference over the mesh of every device (8 simulated CPU devices here).

multihost_test runs it over several processes.
"""

import numpy as np

from srgan_jax.runtime import sharding


def test_data_parallel_pads_splits_and_returns_every_row():
  """8 devices here; 3 and 11 rows are padded to 8 and 16, and cut back."""
  calls = []

  def fn(variables, batch):
    calls.append(batch.shape)
    return batch * variables['w'] + 1

  apply = sharding.data_parallel(fn, {'w': np.float32(2)})
  for rows in (3, 11):
    batch = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
    out = apply(batch)
    assert out.sharding.is_fully_replicated
    np.testing.assert_array_equal(np.asarray(out), batch * 2 + 1)
  assert calls == [(8, 2), (16, 2)]  # Traced once per padded shape.
