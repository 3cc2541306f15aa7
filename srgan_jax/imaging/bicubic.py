"""MATLAB-compatible bicubic resizing (``imresize(x, scale, 'bicubic')``).

The SR literature makes its LR inputs and its bicubic baseline with MATLAB's
``imresize``; published PSNR/SSIM figures are only reproducible with the same
kernel, antialiasing and edge handling. MATLAB's algorithm, per axis:

* cubic convolution kernel with a = -0.5 (Keys), support 4;
* when shrinking (scale < 1) the kernel is stretched by 1/scale (antialiasing);
* output pixel ``x`` (1-based) samples the input at ``u = x / scale + (1 - 1 / scale) / 2``;
* taps falling outside the image are mirrored (symmetric padding, edge pixel repeated);
* each output pixel's weights are normalised to sum to 1;
* output size ``ceil(in * scale)``; uint8 results are rounded and saturated.

Each axis is a linear map, so it is precomputed as a dense ``[out, in]`` matrix with
the mirroring folded in, and an image is resized by two matrix products. The same
matrices serve NumPy (the evaluation reference), TensorFlow (tf.data) and JAX
(on-device data and in-training evaluation). The formula for the weights is written
once, over an array module, because tf.data may need it for dynamic image sizes.
"""

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Support of the cubic kernel, in input pixels, before antialiasing.
_KERNEL_WIDTH = 4.0


def output_length(in_length: int, scale: float) -> int:
  """MATLAB's output size along one axis: ``ceil(in_length * scale)``."""
  return math.ceil(in_length * scale)


def _cubic(xp: Any, x: Any) -> Any:
  """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
  absx = xp.abs(x)
  absx2 = absx * absx
  absx3 = absx2 * absx
  near = 1.5 * absx3 - 2.5 * absx2 + 1.0
  far = -0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0
  return xp.where(absx <= 1.0, near, xp.where(absx <= 2.0, far, 0.0 * absx))


def _contributions(xp: Any, in_length: Any, positions: Any, scale: float) -> tuple[Any, Any]:
  """Weights and (mirrored, 0-based) input indices of every output pixel's taps.

  Args:
    xp: ``numpy``, or ``tensorflow.experimental.numpy`` for images of dynamic size.
    in_length: input size (an int, or a scalar tensor with TensorFlow).
    positions: float64 ``[1, 2, ..., out_length]``, MATLAB's 1-based output pixels
      (passed in because ``tnp.arange`` cannot take a symbolic length).
    scale: resize factor.

  Returns:
    ``(weights, indices)``, both float64 ``[out_length, taps]``; ``taps`` depends
    on ``scale`` alone, so it is static even for dynamic sizes.
  """
  antialias = scale < 1
  width = _KERNEL_WIDTH / scale if antialias else _KERNEL_WIDTH
  taps = math.ceil(width) + 2  # MATLAB's P: enough taps for any sub-pixel offset.
  u = positions / scale + 0.5 * (1.0 - 1.0 / scale)
  left = xp.floor(u - width / 2.0)
  index = left[:, None] + xp.arange(taps, dtype=xp.float64)[None, :]
  distance = u[:, None] - index
  if antialias:
    weights = scale * _cubic(xp, scale * distance)
  else:
    weights = _cubic(xp, distance)
  weights = weights / xp.sum(weights, axis=1, keepdims=True)
  # Symmetric padding: the index sequence 1..n, n..1 repeats forever (MATLAB's aux).
  period = 2.0 * xp.asarray(in_length, dtype=xp.float64)
  folded = xp.mod(index - 1.0, period)
  indices = xp.where(folded < period / 2.0, folded, period - 1.0 - folded)
  return weights, indices


@functools.lru_cache(maxsize=256)
def _cached_matrix(in_length: int, out_length: int, scale: float) -> np.ndarray:
  positions = np.arange(1, out_length + 1, dtype=np.float64)
  weights, indices = _contributions(np, in_length, positions, scale)
  matrix = np.zeros((out_length, in_length), np.float64)
  rows = np.broadcast_to(np.arange(out_length)[:, None], indices.shape)
  # Mirrored taps can land on the same input pixel: accumulate, don't overwrite.
  np.add.at(matrix, (rows, indices.astype(np.int64)), weights)
  matrix.setflags(write=False)  # Shared through the cache.
  return matrix


def resize_matrix(in_length: int, scale: float, out_length: int | None = None) -> np.ndarray:
  """The ``[out_length, in_length]`` float64 matrix that resizes one axis.

  Args:
    in_length: input size along the axis.
    scale: resize factor (< 1 shrinks, with antialiasing).
    out_length: output size; defaults to ``ceil(in_length * scale)``.

  Returns:
    A read-only (cached) float64 array; each row sums to 1.
  """
  if out_length is None:
    out_length = output_length(in_length, scale)
  return _cached_matrix(int(in_length), int(out_length), float(scale))


def imresize(image: np.ndarray, scale: float) -> np.ndarray:
  """``imresize(image, scale, 'bicubic')``: the NumPy evaluation reference.

  Args:
    image: ``[H, W]`` or ``[H, W, C]``, uint8 or float.
    scale: resize factor, the same for both axes.

  Returns:
    uint8 (rounded half away from zero, saturated) for uint8 input, otherwise
    float64 (unclipped), of size ``ceil(H * scale) x ceil(W * scale)``.
  """
  image = np.asarray(image)
  rows = resize_matrix(image.shape[0], scale)
  cols = resize_matrix(image.shape[1], scale)
  pixels = image.astype(np.float64)
  # optimize=True hands the products to BLAS; plain einsum is several times slower.
  out = np.einsum('oh,hw...->ow...', rows, pixels, optimize=True)
  out = np.einsum('pw,ow...->op...', cols, out, optimize=True)
  if image.dtype == np.uint8:
    # After clipping the values are >= 0, where floor(x + 0.5) is MATLAB's round.
    return np.floor(np.clip(out, 0.0, 255.0) + 0.5).astype(np.uint8)
  return out


def _tf_resize_matrix(tf: Any, in_length: Any, scale: float) -> Any:
  """float32 resize matrix built with TF ops, for a dynamic (tensor) length."""
  tnp = tf.experimental.numpy
  out_length = tf.cast(tf.math.ceil(tf.cast(in_length, tf.float64) * scale), tf.int32)
  positions = tf.cast(tf.range(1, out_length + 1), tf.float64)
  weights, indices = _contributions(tnp, in_length, positions, scale)
  rows = tf.broadcast_to(tf.range(out_length)[:, None], tf.shape(indices))
  coordinates = tf.stack([rows, tf.cast(indices, tf.int32)], axis=-1)
  # scatter_nd sums duplicate coordinates, as np.add.at does above.
  matrix = tf.scatter_nd(
      tf.reshape(coordinates, [-1, 2]), tf.reshape(weights, [-1]),
      tf.stack([out_length, tf.cast(in_length, tf.int32)]))
  return tf.cast(matrix, tf.float32)


def imresize_tf(image: Any, scale: float) -> Any:
  """TensorFlow float32 ``imresize`` of an ``[H, W, C]`` image, for tf.data.

  Static sizes use the cached NumPy matrices as constants; dynamic sizes build the
  same matrices with TF ops in the graph. No rounding or clipping.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  # tf.data only.

  image = tf.cast(image, tf.float32)
  height, width = image.shape[0], image.shape[1]
  if height is not None:
    rows = tf.constant(resize_matrix(height, scale), tf.float32)
  else:
    rows = _tf_resize_matrix(tf, tf.shape(image)[0], scale)
  if width is not None:
    cols = tf.constant(resize_matrix(width, scale), tf.float32)
  else:
    cols = _tf_resize_matrix(tf, tf.shape(image)[1], scale)
  out = tf.einsum('oh,hwc->owc', rows, image)
  return tf.einsum('pw,owc->opc', cols, out)


# Upscaling by an integer s, output pixel s*k + p (0-based) samples the input at
# k - 0.5 + (p + 0.5)/s (MATLAB's u in 0-based pixels): its taps are input pixels
# k-2 .. k+2, at distances (p + 0.5)/s - 0.5 - t, with weights that depend on p
# alone. So the resize matrix is, away from the borders, a fixed 5-tap filter per
# phase p, and at the borders the same filter over the mirrored image: rows of
# `resize_matrix` fold mirrored taps onto the same pixels. This form needs no size,
# for programs exported with symbolic sizes (and for the PyTorch twin, nn/torch_twin.py,
# which computes the same sums).
TAP_RADIUS = 2


@functools.lru_cache(maxsize=8)
def phase_weights(scale: int) -> np.ndarray:
  """``[scale, 2 * TAP_RADIUS + 1]`` float64: phase p's weights of pixels k-2 .. k+2
  (read-only: shared through the cache)."""
  offsets = np.arange(-TAP_RADIUS, TAP_RADIUS + 1, dtype=np.float64)
  distance = (np.arange(scale)[:, None] + 0.5) / scale - 0.5 - offsets[None, :]
  weights = _cubic(np, distance)
  weights = weights / weights.sum(axis=1, keepdims=True)  # As `_contributions` normalises.
  weights.setflags(write=False)
  return weights


def _upscale_by_taps(images: jax.Array, scale: int, axis: int) -> jax.Array:
  """``imresize`` by an integer ``scale`` along one ``axis`` of any (symbolic) length
  >= 2: the mirrored image, filtered per phase, phases interleaved."""
  axis %= images.ndim
  length = images.shape[axis]
  # Symmetric padding (edge pixel repeated), as MATLAB's: [1, 0 | x | n-1, n-2]. By
  # slices, which need the length proven >= TAP_RADIUS: the exporters are given
  # that constraint (inference/exports.py). Not by gathers of those rows: the
  # TFLite converter lacks the dynamic gather they become for symbolic sizes.
  before = jax.lax.rev(jax.lax.slice_in_dim(images, 0, TAP_RADIUS, axis=axis), (axis,))
  after = jax.lax.rev(jax.lax.slice_in_dim(images, length - TAP_RADIUS, length, axis=axis),
                      (axis,))
  # lax, not jnp: jax2onnx replaces jnp.concatenate by one that loses symbolic sizes.
  padded = jax.lax.concatenate([before, images, after], axis)
  shifted = [jax.lax.slice_in_dim(padded, t, t + length, axis=axis)
             for t in range(2 * TAP_RADIUS + 1)]
  phases = [sum(float(w) * x for w, x in zip(weights, shifted))
            for weights in phase_weights(scale)]
  interleaved = jax.lax.concatenate([jnp.expand_dims(phase, axis + 1) for phase in phases],
                                    axis + 1)  # [..., n, scale, ...]
  shape = images.shape[:axis] + (length * scale,) + images.shape[axis + 1:]
  return interleaved.reshape(shape)


@functools.partial(jax.jit, static_argnames='scale')
def imresize_jax(images: jax.Array, scale: float) -> jax.Array:
  """JAX float ``imresize`` of ``[..., H, W, C]`` arrays. No rounding.

  Sizes that are symbolic (``jax.export`` with any height and width) are upscaled by
  an integer ``scale`` through `_upscale_by_taps`; other resizes need static sizes.
  """
  if not jnp.issubdtype(images.dtype, jnp.floating):
    images = images.astype(jnp.float32)
  height, width = images.shape[-3], images.shape[-2]
  if not (isinstance(height, int) and isinstance(width, int)):
    if scale < 1 or not float(scale).is_integer():
      raise ValueError(f'imresize of symbolic sizes upscales by an integer, not {scale}')
    return _upscale_by_taps(_upscale_by_taps(images, int(scale), axis=-3), int(scale),
                            axis=-2)
  rows = jnp.asarray(resize_matrix(height, scale), images.dtype)
  cols = jnp.asarray(resize_matrix(width, scale), images.dtype)
  # Full float32 products: TPU/GPU default precision (bf16/tf32) would cost ~1e-3.
  highest = jax.lax.Precision.HIGHEST
  out = jnp.einsum('oh,...hwc->...owc', rows, images, precision=highest)
  return jnp.einsum('pw,...owc->...opc', cols, out, precision=highest)
