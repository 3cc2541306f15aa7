"""Tests for nn/upscalers.py: bicubic and generator upscalers, batched and tiled."""

import dataclasses
import functools

import jax
import numpy as np
import pytest

from srgan_jax.imaging import bicubic
from srgan_jax.imaging import image_io
from srgan_jax.nn import models
from srgan_jax.nn import upscalers


@functools.cache
def _model_and_variables():
  """A small SRResNet x4 with random weights (drawn with NumPy: quick to compile)."""
  model = models.SRResNet(num_blocks=2, features=8, upsample_features=16, scale=4)
  shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32))
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    if path[-1].key == 'kernel':
      return rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
    return {'scale': 1.0, 'var': 1.0, 'negative_slope': 0.25}.get(path[-1].key, 0.0) + (
        0.1 * rng.normal(size=leaf.shape))

  variables = jax.tree_util.tree_map_with_path(
      lambda path, leaf: np.asarray(draw(path, leaf), np.float32), shapes)
  return model, variables


def test_to_pixels_rounds_and_clips_like_uint8():
  x = np.array([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.2], np.float32)
  # 63.75 -> 64, 127.5 -> 128, 191.25 -> 191.
  np.testing.assert_array_equal(upscalers.to_pixels(x), [0, 0, 64, 128, 191, 255, 255])
  x = np.random.default_rng(6).uniform(-1, 1, 1000).astype(np.float32)
  pixels = np.asarray(upscalers.to_pixels(x))
  np.testing.assert_array_equal(pixels, np.round(pixels))
  assert np.abs(pixels - (x + 1) * 127.5).max() <= 0.5


def test_bicubic_is_matlab_imresize_in_both_forms():
  rng = np.random.default_rng(1)
  lr = rng.integers(0, 256, (2, 7, 5, 3), dtype=np.uint8)
  upscaler = upscalers.bicubic(4)
  assert upscaler.scale == 4 and upscaler.name == 'bicubic'
  sr = upscaler.upscale_batch(lr)
  assert sr.dtype == np.uint8 and sr.shape == (2, 28, 20, 3)
  for image, expected in zip(lr, sr):
    np.testing.assert_array_equal(bicubic.imresize(image, 4), expected)
  rgb = rng.uniform(size=(7, 5, 3)).astype(np.float32)
  np.testing.assert_array_equal(upscaler.upscale_image(rgb),
                                bicubic.imresize(rgb.astype(np.float64), 4))


def test_outputs_of_the_wrong_size_or_type_are_errors():
  lr = np.zeros((1, 6, 6, 3), np.uint8)
  wrong_size = dataclasses.replace(upscalers.bicubic(4), batch_fn=upscalers.bicubic(2).batch_fn,
                                   image_fn=upscalers.bicubic(2).image_fn)
  with pytest.raises(ValueError, match=r'expected uint8 \(1, 24, 24, 3\)'):
    wrong_size.upscale_batch(lr)
  with pytest.raises(ValueError, match=r'expected \(24, 24, 3\)'):
    wrong_size.upscale_image(np.zeros((6, 6, 3), np.float32))
  floats = dataclasses.replace(upscalers.bicubic(4), batch_fn=lambda lr: np.zeros((1, 24, 24, 3)))
  with pytest.raises(ValueError, match='gave float64'):
    floats.upscale_batch(lr)


def test_generator_batches_score_gray_images_on_their_luma():
  model, variables = _model_and_variables()
  upscaler = upscalers.generator(model, variables)
  assert upscaler.scale == 4
  gray = np.random.default_rng(2).integers(0, 256, (2, 9, 7, 1), dtype=np.uint8)
  rgb_sr = upscaler.upscale_batch(np.repeat(gray, 3, axis=-1))
  gray_sr = upscaler.upscale_batch(gray)
  assert gray_sr.shape == (2, 36, 28, 1) and gray_sr.dtype == np.uint8
  np.testing.assert_array_equal(gray_sr[..., 0],
                                np.round(rgb_sr.astype(np.float64) @ image_io.LUMA_601))
  # The same pixels as the float image's, rounded as if saved as uint8.
  whole = upscaler.upscale_image(np.repeat(gray[0], 3, axis=-1).astype(np.float32) / 255)
  np.testing.assert_allclose(rgb_sr[0], np.clip(np.floor(whole * 255 + 0.5), 0, 255), atol=1)


def test_generator_tiles_equal_the_whole_image():
  model, variables = _model_and_variables()
  image = np.random.default_rng(3).uniform(size=(37, 29, 3)).astype(np.float32)
  whole = upscalers.generator(model, variables).upscale_image(image)
  progress = []
  tiled = upscalers.generator(model, variables, tile=28, batch_size=3,
                              progress=lambda done, total: progress.append((done, total)))
  np.testing.assert_array_less(np.abs(tiled.upscale_image(image) - whole).max(), 1e-5)
  assert progress[-1][0] == progress[-1][1] > 1


def test_upscalers_of_one_architecture_share_their_compiled_programs():
  """The evaluation during training builds an upscaler each time: its programs must be
  those compiled the first time (sharding.data_parallel caches them by function)."""
  model, _ = _model_and_variables()
  same = models.SRResNet(num_blocks=2, features=8, upsample_features=16, scale=4)
  generator_fns = upscalers._generator_fns  # pylint: disable=protected-access
  assert generator_fns(same) is generator_fns(model)


def test_generator_batches_above_its_tile_are_scored_by_tiles_as_whole_images(monkeypatch):
  """evaluate --tile (issue 37): an image with an LR side above the tile goes through
  the tiles of upscale_image, one image at a time, in memory bounded by the tile; its
  uint8 SR equals the whole image's (up to a float ulp flipping a rounding)."""
  model, variables = _model_and_variables()
  lr = np.random.default_rng(4).integers(0, 256, (2, 37, 29, 3), dtype=np.uint8)
  whole = upscalers.generator(model, variables).upscale_batch(lr)
  tiled_calls = []
  real_upscale_tiled = upscalers.tiling.upscale_tiled

  def upscale_tiled(apply_fn, image, **kwargs):
    tiled_calls.append((image.shape, kwargs['tile']))
    return real_upscale_tiled(apply_fn, image, **kwargs)

  monkeypatch.setattr(upscalers.tiling, 'upscale_tiled', upscale_tiled)
  tiled = upscalers.generator(model, variables, tile=28, batch_size=3).upscale_batch(lr)
  assert tiled_calls == [((37, 29, 3), 28)] * 2
  assert tiled.dtype == np.uint8 and tiled.shape == whole.shape == (2, 148, 116, 3)
  difference = np.abs(tiled.astype(int) - whole)
  assert difference.max() <= 1 and np.mean(difference > 0) < 1e-3
  # Images within the tile are still batched whole.
  small = lr[:, :20, :20]
  tiled_calls.clear()
  np.testing.assert_array_equal(
      upscalers.generator(model, variables, tile=28).upscale_batch(small),
      upscalers.generator(model, variables).upscale_batch(small))
  assert not tiled_calls
