"""Tests for srgan_jax.imaging.bicubic: MATLAB imresize weights, sizes, rounding, np/tf/jax agreement."""

import math

import numpy as np
import pytest

from srgan_jax.imaging import bicubic


def _keys_cubic(x: float) -> float:
  """Keys' kernel, a = -0.5, written out independently of the module."""
  x = abs(x)
  if x <= 1:
    return 1.5 * x**3 - 2.5 * x**2 + 1
  if x <= 2:
    return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
  return 0.0


def _mirror(j: int, n: int) -> int:
  """1-based symmetric padding (edge pixel repeated), applied until inside [1, n]."""
  while j < 1 or j > n:
    j = 1 - j if j < 1 else 2 * n + 1 - j
  return j


def _reference_matrix(n: int, scale: float) -> np.ndarray:
  """Per-output-pixel loop over every input position the (widened) kernel reaches."""
  stretch = min(scale, 1.0)  # < 1: antialiasing widens the kernel by 1/scale.
  out = math.ceil(n * scale)
  matrix = np.zeros((out, n))
  for x in range(1, out + 1):
    centre = (x - 0.5) / scale + 0.5  # Pixel centres aligned, 1-based.
    for j in range(math.floor(centre - 2 / stretch) - 1, math.ceil(centre + 2 / stretch) + 2):
      matrix[x - 1, _mirror(j, n) - 1] += stretch * _keys_cubic(stretch * (centre - j))
    matrix[x - 1] /= matrix[x - 1].sum()
  return matrix


# Kernel values at the offsets that occur for factors 2 and 1/2, by hand:
# k(1/4) = 1.5/64 - 2.5/16 + 1 = 0.8671875    k(3/4) = 40.5/64 - 22.5/16 + 1 = 0.2265625
# k(5/4) = -62.5/128 + 62.5/16 - 3 = -0.0703125
# k(7/4) = -171.5/128 + 122.5/16 - 5 = -0.0234375
K1, K3, K5, K7 = 0.8671875, 0.2265625, -0.0703125, -0.0234375


def test_upscale_x2_weights_by_hand():
  # x2, n = 4: output 1 samples u = 0.75 (offsets 1.75, 0.75, 0.25, 1.25 to input
  # positions -1, 0, 1, 2), output 2 samples u = 1.25. Positions 0 and -1 mirror to 1 and 2.
  matrix = bicubic.resize_matrix(4, 2.0)
  assert matrix.shape == (8, 4)
  np.testing.assert_allclose(matrix[0], [K3 + K1, K7 + K5, 0, 0], atol=1e-15)
  np.testing.assert_allclose(matrix[1], [K5 + K1, K3, K7, 0], atol=1e-15)
  # The last row is the first one mirrored.
  np.testing.assert_allclose(matrix[-1], matrix[0][::-1], atol=1e-15)


def test_downscale_half_weights_by_hand():
  # x1/2, n = 8: the kernel is k(d / 2) / 2; output 1 samples u = 1.5, so the
  # positions -2..5 sit at offsets 3.5, 2.5, ..., -3.5, i.e. k(7/4), k(5/4), k(3/4),
  # k(1/4), k(1/4), k(3/4), k(5/4), k(7/4), halved. Positions -2, -1, 0 mirror to 3, 2, 1.
  matrix = bicubic.resize_matrix(8, 0.5)
  assert matrix.shape == (4, 8)
  expected = np.array([K3 + K1, K5 + K1, K7 + K3, K5, K7, 0, 0, 0]) / 2
  np.testing.assert_allclose(matrix[0], expected, atol=1e-15)
  # Output 3 samples u = 5.5: input pixels 2..9 (columns 1..8), no mirroring; each
  # further output pixel shifts the same 8 taps by 2.
  interior = bicubic.resize_matrix(16, 0.5)
  taps = np.array([K7, K5, K3, K1, K1, K3, K5, K7]) / 2
  np.testing.assert_allclose(interior[2, 1:9], taps, atol=1e-15)
  np.testing.assert_allclose(interior[3, 2:], interior[2, :-2], atol=1e-15)


@pytest.mark.parametrize('n', [1, 2, 3, 7, 13, 17, 24])
@pytest.mark.parametrize('scale', [4.0, 3.0, 2.0, 1.5, 0.5, 1 / 3, 0.25, 0.3])
def test_matrix_matches_loop_reference(n, scale):
  np.testing.assert_allclose(bicubic.resize_matrix(n, scale), _reference_matrix(n, scale),
                             atol=1e-12)


@pytest.mark.parametrize('shape', [(17, 13), (17, 13, 3), (17, 13, 1)])
def test_output_sizes(shape):
  image = np.random.default_rng(0).random(shape)
  assert bicubic.imresize(image, 0.25).shape == (5, 4) + shape[2:]
  assert bicubic.imresize(image, 4).shape == (68, 52) + shape[2:]
  assert bicubic.resize_matrix(17, 0.25, out_length=7).shape == (7, 17)


def test_constant_image_is_preserved():
  image = np.full((9, 11, 3), 77, np.uint8)
  for scale in (0.25, 4):
    out = bicubic.imresize(image, scale)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, 77)


def test_separable_float_result():
  image = np.random.default_rng(1).random((10, 7, 2))
  expected = np.stack([_reference_matrix(10, 0.5) @ image[..., c] @ _reference_matrix(7, 0.5).T
                       for c in range(2)], axis=-1)
  out = bicubic.imresize(image, 0.5)
  assert out.dtype == np.float64
  np.testing.assert_allclose(out, expected, atol=1e-12)


def test_uint8_rounds_half_away_from_zero_and_saturates():
  # A single row keeps the vertical weights at 1. Along the row, output 1 is
  # (K3 + K1) * 10 + (K7 + K5) * 26 = 1.09375 * 10 - 0.09375 * 26 = 8.5 exactly.
  image = np.array([[10, 26, 26, 26]], np.uint8)
  assert bicubic.imresize(image.astype(np.float64), 2)[0, 0] == 8.5
  assert bicubic.imresize(image, 2)[0, 0] == 9  # Banker's rounding would give 8.
  # A hard edge rings beyond 0..255 when upscaled; uint8 output saturates.
  edge = np.zeros((4, 8), np.uint8)
  edge[:, 4:] = 255
  ringing = bicubic.imresize(edge.astype(np.float64), 4)
  assert ringing.min() < -5 and ringing.max() > 260
  out = bicubic.imresize(edge, 4)
  np.testing.assert_array_equal(out, np.floor(np.clip(ringing, 0, 255) + 0.5))
  assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize('scale', [0.25, 4.0, 0.5, 1 / 3])
def test_numpy_tf_jax_agree(scale):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  images = np.random.default_rng(2).random((2, 17, 13, 3)).astype(np.float32)
  expected = np.stack([bicubic.imresize(image, scale) for image in images])

  static = bicubic.imresize_tf(tf.constant(images[0]), scale).numpy()
  # tf.data after decoding: unknown height and width, so the matrices are built in-graph.
  dataset = tf.data.Dataset.from_generator(
      lambda: iter(images), output_signature=tf.TensorSpec([None, None, 3], tf.float32))
  dataset = dataset.map(lambda image: bicubic.imresize_tf(image, scale))
  dynamic = np.stack([image.numpy() for image in dataset])
  batched = np.asarray(bicubic.imresize_jax(images, scale))

  assert static.dtype == dynamic.dtype == batched.dtype == np.float32
  np.testing.assert_allclose(static, expected[0], atol=1e-5)
  np.testing.assert_allclose(dynamic, expected, atol=1e-5)
  np.testing.assert_allclose(batched, expected, atol=1e-5)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_jax_upscale_of_symbolic_sizes_equals_the_numpy_reference(scale):
  """jax.export with symbolic height and width takes the per-phase taps
  (`_upscale_by_taps`); on sizes down to 2 it must equal MATLAB's matrices."""
  import jax  # pylint: disable=g-import-not-at-top

  shape = jax.export.symbolic_shape('b, h, w, 3', constraints=('h >= 2', 'w >= 2'))
  exported = jax.export.export(jax.jit(lambda x: bicubic.imresize_jax(x, scale)))(
      jax.ShapeDtypeStruct(shape, np.float32))
  rng = np.random.default_rng(3)
  for height, width in ((2, 3), (5, 2), (17, 13), (4, 31)):
    images = rng.random((2, height, width, 3)).astype(np.float32)
    expected = np.stack([bicubic.imresize(image, scale) for image in images])
    got = np.asarray(exported.call(images))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-6, rtol=0)
