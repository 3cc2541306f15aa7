"""Tests for srgan_jax.imaging.jpeg against Pillow's (libjpeg-turbo's) encode-decode.

Below quality 30 (out of Real-ESRGAN's range, not asserted) the mean absolute
difference from Pillow on these crops is 0.02 to 0.12 grey levels (measured at
every quality 10..29). It grows with quality (0.05 at 30, 0.42 at 95), because
libjpeg-turbo's fixed-point DCT moves coefficients by fractions of a unit, which
finer quantisation steps no longer absorb.
"""

import io

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from conftest import image_set
from srgan_jax.imaging import jpeg

# Odd-sized crops: the padding to whole MCUs and the cropping back are exercised.
CROP = (75, 93)
IMAGES = ('baboon', 'comic', 'lenna', 'zebra')


def _pillow(rgb: np.ndarray, quality: int) -> np.ndarray:
  """Pillow's encode-decode at ``quality``, 4:2:0 stated explicitly."""
  buffer = io.BytesIO()
  Image.fromarray(rgb).save(buffer, 'JPEG', quality=quality, subsampling=2)
  buffer.seek(0)
  return np.asarray(Image.open(buffer).convert('RGB'))


def _ours(rgb: np.ndarray, quality) -> np.ndarray:
  """``jpeg.jpeg`` of uint8 images, back as uint8 (its values are exact k / 255)."""
  out = np.asarray(jpeg.jpeg(jnp.asarray(rgb, jnp.float32) / 255.0, quality)) * 255.0
  np.testing.assert_allclose(out, np.round(out), atol=1e-3)
  return np.round(out).astype(np.uint8)


@pytest.fixture(scope='module')
def crops() -> np.ndarray:
  """``[4, 75, 93, 3]`` uint8 crops from the middle of four Set14 images."""
  folder = image_set('Set14')
  out = []
  for name in IMAGES:
    image = np.asarray(Image.open(folder / f'{name}.png').convert('RGB'))
    top, left = (image.shape[0] - CROP[0]) // 2, (image.shape[1] - CROP[1]) // 2
    out.append(image[top:top + CROP[0], left:left + CROP[1]])
  return np.stack(out)


@pytest.mark.parametrize('quality', [1, 10, 30, 50, 75, 95, 100])
def test_quantization_tables_match_pillow(quality):
  buffer = io.BytesIO()
  Image.new('RGB', (16, 16)).save(buffer, 'JPEG', quality=quality)
  buffer.seek(0)
  tables = Image.open(buffer).quantization  # Natural order, as Pillow reports them.
  luminance, chrominance = jpeg.quantization_tables(jnp.array([quality]))
  np.testing.assert_array_equal(np.asarray(luminance[0]).ravel(), list(tables[0]))
  np.testing.assert_array_equal(np.asarray(chrominance[0]).ravel(), list(tables[1]))


@pytest.mark.parametrize('quality', [30, 40, 50, 60, 75, 90, 95, 100])
def test_matches_pillow(crops, quality):
  ours = _ours(crops, quality).astype(np.float64)
  expected = np.stack([_pillow(crop, quality) for crop in crops]).astype(np.float64)
  difference = np.abs(ours - expected)
  assert difference.mean() <= 1.0
  # Most pixels are exactly Pillow's: the differences are rounding, not a misplaced step.
  assert np.mean(difference == 0) > 0.6


@pytest.mark.parametrize('quality', [10, 50, 90])
def test_flat_blocks_equal_pillow_exactly(quality):
  """Images of flat 16x16 squares have only DC coefficients, where libjpeg's integer
  DCT is exact: every other step (colour conversion with its rounding, subsampling,
  quantisation, halves rounded as libjpeg does, fancy upsampling across squares of
  different colours, padding of a 40x56 image) must then match bit for bit."""
  rng = np.random.default_rng(quality)
  rgb = np.kron(rng.integers(0, 256, (3, 4, 3)), np.ones((16, 16, 1)))[:40, :56]
  rgb = rgb.astype(np.uint8)
  np.testing.assert_array_equal(_ours(rgb[None], quality)[0], _pillow(rgb, quality))


def test_per_image_quality_under_jit(crops):
  qualities = jnp.array([30.0, 55.0, 80.0, 95.0])
  batched = jax.jit(jpeg.jpeg)(jnp.asarray(crops, jnp.float32) / 255.0, qualities)
  for i, quality in enumerate([30, 55, 80, 95]):
    single = jpeg.jpeg(jnp.asarray(crops[i:i + 1], jnp.float32) / 255.0, quality)
    np.testing.assert_array_equal(np.asarray(batched[i]), np.asarray(single[0]))



def test_channels_first_is_the_same_jpeg(crops):
  """The layout the Real-ESRGAN pipeline works in gives the same decoded samples."""
  images = jnp.asarray(crops, jnp.float32) / 255.0
  qualities = jnp.array([30.0, 55.0, 80.0, 95.0])
  planar = jpeg.jpeg(jnp.moveaxis(images, 3, 1), qualities, channels_first=True)
  np.testing.assert_array_equal(np.moveaxis(np.asarray(planar), 1, 3),
                                np.asarray(jax.jit(jpeg.jpeg)(images, qualities)))
