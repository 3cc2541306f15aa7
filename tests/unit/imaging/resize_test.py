"""Tests for srgan_jax.imaging.resize: Pillow's and PyTorch's resizing, per-image methods."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from srgan_jax.imaging import resize

RNG = np.random.default_rng(0)
# Noise: every tap's weight shows in the result.
IMAGES = RNG.uniform(size=(3, 30, 44, 3)).astype(np.float32)
# Shrinking by non-integer and integer factors, enlarging, and one axis each way.
SIZES = [(13, 19), (15, 22), (71, 90), (41, 17)]


@functools.cache
def _resize(size, method, antialias):
  return jax.jit(lambda images: resize.resize(images, size, method, antialias))


def _pillow(image: np.ndarray, size, method: str) -> np.ndarray:
  """Pillow's float ('F' mode) resize, channel by channel."""
  flag = {'area': Image.BOX, 'bilinear': Image.BILINEAR, 'bicubic': Image.BICUBIC}[method]
  return np.stack([np.asarray(Image.fromarray(image[..., c], 'F').resize(size[::-1], flag))
                   for c in range(image.shape[-1])], axis=-1)


@pytest.mark.parametrize('size', SIZES)
@pytest.mark.parametrize('method', resize.METHODS)
def test_antialias_matches_pillow(method, size):
  out = np.asarray(_resize(size, method, True)(IMAGES))
  for i in range(len(IMAGES)):
    np.testing.assert_allclose(out[i], _pillow(IMAGES[i], size, method), atol=2e-5)


def test_area_by_integer_factors_is_the_block_mean():
  expected = IMAGES.reshape(3, 15, 2, 22, 2, 3).mean(axis=(2, 4))
  for antialias in (False, True):
    np.testing.assert_allclose(_resize((15, 22), 'area', antialias)(IMAGES), expected, atol=1e-6)


def test_bilinear_enlarging_is_the_same_for_pillow_and_pytorch():
  # Enlarging, Pillow's kernel is not widened and clamped taps equal dropped ones.
  np.testing.assert_allclose(_resize((71, 90), 'bilinear', False)(IMAGES),
                             _resize((71, 90), 'bilinear', True)(IMAGES), atol=1e-6)


@pytest.mark.parametrize('size', SIZES)
@pytest.mark.parametrize('method', resize.METHODS)
def test_default_matches_pytorch_interpolate(method, size):
  torch = pytest.importorskip('torch')
  nchw = torch.from_numpy(IMAGES.transpose(0, 3, 1, 2).astype(np.float64))
  kwargs = {} if method == 'area' else {'align_corners': False}
  expected = torch.nn.functional.interpolate(nchw, size=size, mode=method, **kwargs)
  np.testing.assert_allclose(_resize(size, method, False)(IMAGES),
                             expected.numpy().transpose(0, 2, 3, 1), atol=2e-5)


def test_per_image_method_under_jit():
  methods = jnp.array([2, 0, 1])
  out = jax.jit(lambda images, m: resize.resize(images, (13, 19), m))(IMAGES, methods)
  for i, m in enumerate([2, 0, 1]):
    np.testing.assert_allclose(out[i], _resize((13, 19), resize.METHODS[m], False)(IMAGES)[i],
                               atol=1e-6)


def test_rows_sum_to_one_and_unknown_methods_fail():
  for method in resize.METHODS:
    for antialias in (False, True):
      np.testing.assert_allclose(resize.resize_matrix(37, 11, method, antialias).sum(axis=1), 1)
  with pytest.raises(ValueError, match='nearest'):
    resize.resize_matrix(4, 2, 'nearest')


def test_canvas_matrix_is_resize_matrix_for_traced_sizes():
  """In its top-left corner, for every pair of lengths up to 24 and every method,
  the traced matrix is the NumPy one (to float32 rounding); zero elsewhere."""
  pairs = np.array([(a, b, m) for a in range(1, 25) for b in range(1, 25) for m in range(3)])
  matrices = jax.jit(jax.vmap(lambda a, b, m: resize.canvas_matrix(a, b, m, 24, 26)))(
      *pairs.T)
  for (a, b, m), matrix in zip(pairs, np.asarray(matrices)):
    expected = np.zeros((26, 24))
    expected[:b, :a] = resize.resize_matrix(a, b, resize.METHODS[m])
    np.testing.assert_allclose(matrix, expected, atol=1e-5, err_msg=f'{a} -> {b}, {m}')
