"""Tests for imaging/tiling.py: tiles that cover the image, and a tiled generator equal
to the whole-image one."""

import functools

import jax
import numpy as np
import pytest

from srgan_jax.imaging import tiling
from srgan_jax.nn import models


@functools.cache
def _generator(scale: int):
  """A small random SRResNet: (jitted apply on a batch, its receptive radius)."""
  model = models.SRResNet(num_blocks=2, features=8, upsample_features=16, scale=scale)
  shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32))
  rng = np.random.default_rng(scale)

  # Random values drawn with NumPy (JAX's RNG compiles slowly on a busy CPU); the
  # BatchNorm statistics are random too, so that they are exercised.
  def draw(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      return rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
    if name == 'var':
      return rng.uniform(0.5, 1.5, leaf.shape)
    base = {'scale': 1.0, 'negative_slope': 0.25}.get(name, 0.0)
    return base + 0.1 * rng.normal(size=leaf.shape)

  variables = jax.tree_util.tree_map_with_path(
      lambda path, leaf: draw(path, leaf).astype(np.float32), shapes)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return (lambda lr: apply(variables, lr)), models.generator_receptive_radius(2, scale)


@pytest.mark.parametrize('scale, height, width, tile, batch_size', [
    (4, 61, 47, 28, 3),  # Many tiles, shifted last row and column, padded last batch.
    (4, 37, 29, 32, 2),  # Non-square; narrower than a tile: one tile column of width 29.
    (4, 13, 19, 32, 4),  # Smaller than a tile: a single tile.
    (2, 37, 29, 26, 2),  # x2: another receptive radius.
])
def test_tiled_equals_whole_image(scale, height, width, tile, batch_size):
  apply_fn, radius = _generator(scale)
  image = np.random.default_rng(height).uniform(size=(height, width, 3)).astype(np.float32)
  whole = np.asarray(apply_fn(image[None]))[0]
  calls = []
  tiled = tiling.upscale_tiled(
      apply_fn, image, scale=scale, tile=tile, overlap=radius, batch_size=batch_size,
      progress=lambda done, total: calls.append((done, total)))
  assert tiled.shape == (height * scale, width * scale, 3)
  assert np.abs(whole).max() > 0.1  # The comparison below is not of near-zeros.
  np.testing.assert_array_less(np.abs(tiled - whole).max(), 1e-5)
  assert calls[-1][0] == calls[-1][1]


def test_overlap_below_radius_differs():
  apply_fn, radius = _generator(4)
  image = np.random.default_rng(61).uniform(size=(61, 47, 3)).astype(np.float32)
  whole = np.asarray(apply_fn(image[None]))[0]
  # One pixel short of the radius already changes the result: the radius is tight
  # and the equality test above can fail.
  tiled = tiling.upscale_tiled(apply_fn, image, scale=4, tile=28,
                               overlap=radius - 1, batch_size=3)
  assert np.abs(tiled - whole).max() > 1e-4


@pytest.mark.parametrize('length', [1, 5, 28, 29, 30, 61, 100, 257])
@pytest.mark.parametrize('tile, overlap', [(28, 12), (28, 0), (16, 7)])
def test_axis_tiles_cover_with_context(length, tile, overlap):
  starts, bounds, size = tiling.axis_tiles(length, tile, overlap)
  assert size == min(tile, length)
  assert bounds[0] == 0 and bounds[-1] == length
  assert all(a < b for a, b in zip(bounds, bounds[1:]))  # Every tile contributes.
  for i, start in enumerate(starts):
    assert 0 <= start and start + size <= length
    kept_from, kept_to = bounds[i], bounds[i + 1]
    assert start <= kept_from and kept_to <= start + size
    if start > 0:  # A cut edge, not the image border: needs context.
      assert kept_from - start >= overlap
    if start + size < length:
      assert start + size - kept_to >= overlap


def test_tile_must_exceed_twice_overlap():
  with pytest.raises(ValueError, match='larger than 2'):
    tiling.axis_tiles(100, 24, 12)
