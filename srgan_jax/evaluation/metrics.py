"""PSNR and SSIM by the SR literature's MATLAB conventions; fine-detail energies.

Published x4 figures (and the SRGAN paper's PSNR) are computed on the luma of
MATLAB's ``rgb2ycbcr`` (Y in 16..235, unrounded), after shaving ``scale`` pixels
off every border, with PSNR peak 255 and the SSIM of Wang et al. (2004):
11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255, 'valid'
filtering, mean of the map. Single-channel images are scored on their own
intensity, not converted to RGB first.

Two implementations: NumPy float64 on uint8 images (the evaluation reference) and
JAX on batched float images in 0..255 (in-training evaluation; jit-able), which
agree to a few 1e-6 dB and 1e-6 SSIM on Set5/Set14 (see tests/unit/evaluation/metrics_test.py).

Beside them, NumPy only: the high-frequency (mean absolute Laplacian) energy of an
image (``high_pass_energy``), and of its luma split by where the HR photograph is
flat (``texture_by_flatness``), which ``named_metrics`` turns into SR-over-HR ratios.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from srgan_jax.imaging import image_io

PEAK = 255.0
# MATLAB rgb2ycbcr luma on [0, 1] doubles, rescaled to 0..255 input: the BT.601
# weights on 219 levels from 16, (65.481, 128.553, 24.966) / 255 to the last bit.
_Y_OFFSET = 16.0
_Y_WEIGHTS = tuple(image_io.LUMA_601 * 219 / 255)
# Wang et al. (2004) SSIM constants.
SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_C1 = (0.01 * PEAK) ** 2
_C2 = (0.03 * PEAK) ** 2


def rgb_to_y(image: np.ndarray) -> np.ndarray:
  """MATLAB ``rgb2ycbcr`` luma of RGB in 0..255 (``[..., 3]``), float64 in 16..235."""
  image = np.asarray(image, np.float64)
  return _Y_OFFSET + image @ np.asarray(_Y_WEIGHTS)


def _gaussian_window() -> np.ndarray:
  """The normalised 1-D factor of MATLAB's ``fspecial('gaussian', 11, 1.5)``."""
  x = np.arange(SSIM_WINDOW) - (SSIM_WINDOW - 1) / 2
  window = np.exp(-x**2 / (2 * _SSIM_SIGMA**2))
  return window / window.sum()


def _channels(image: np.ndarray, y_channel: bool) -> np.ndarray:
  """What gets scored, as float64: Y (or RGB) of colour images, else the intensity."""
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim == 3 and y_channel:
    return rgb_to_y(image)
  return image.astype(np.float64)


def _shave(image: np.ndarray, shave: int) -> np.ndarray:
  return image[shave:image.shape[0] - shave, shave:image.shape[1] - shave]


def psnr(sr: np.ndarray, hr: np.ndarray, shave: int, y_channel: bool = True) -> float:
  """PSNR (dB, peak 255) of uint8 images ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]``.

  Args:
    sr: the image scored.
    hr: the ground truth, same shape.
    shave: pixels removed from each border first (the scale, by convention).
    y_channel: score the Y channel of RGB images (the convention); False scores RGB.
  """
  if np.shape(sr) != np.shape(hr):
    raise ValueError(f'shapes differ: {np.shape(sr)} vs {np.shape(hr)}')
  diff = _shave(_channels(sr, y_channel) - _channels(hr, y_channel), shave)
  mse = np.mean(diff**2)
  return float(10 * np.log10(PEAK**2 / mse)) if mse > 0 else float('inf')


# MATLAB rgb2ycbcr chroma weights on 0..255 RGB (Cb, Cr rows; the offset 128 drops
# out of a high-pass filter).
_CHROMA_WEIGHTS = np.array([[-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255


def _laplacian(plane: np.ndarray) -> np.ndarray:
  """The 5-point Laplacian (4 x centre - 4 neighbours) of a 2-D plane's interior
  pixels (one fewer on every side): no padding, so no border is invented."""
  return (4 * plane[1:-1, 1:-1] - plane[:-2, 1:-1] - plane[2:, 1:-1]
          - plane[1:-1, :-2] - plane[1:-1, 2:])


def _mean_abs_laplacian(plane: np.ndarray) -> float:
  """Mean |5-point Laplacian| over the plane's interior pixels."""
  return float(np.mean(np.abs(_laplacian(plane))))


def high_pass_energy(image: np.ndarray, shave: int) -> tuple[float, float]:
  """(luma, chroma) high-frequency energy of an RGB (or gray) image in 0..255.

  Mean absolute Laplacian of MATLAB's Y, and the sum of those of Cb and Cr, after
  shaving ``shave`` pixels off every border. Over the HR image's, the SR image's
  values say how much fine detail it holds: near 1 as much as the photograph, below
  it blur, above it invented detail; chroma above 1 is colour noise. A gray image has
  no chroma (0).
  """
  image = np.asarray(image, np.float64)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  image = _shave(image, shave)
  if image.ndim == 2:
    return _mean_abs_laplacian(image), 0.0
  luma = _mean_abs_laplacian(rgb_to_y(image))
  chroma = sum(_mean_abs_laplacian(image @ weights) for weights in _CHROMA_WEIGHTS)
  return luma, chroma


def _filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
  """Separable 'valid' filtering of a 2-D array (MATLAB ``filter2(w' * w, x, 'valid')``)."""
  size = len(window)
  rows = np.lib.stride_tricks.sliding_window_view(image, size, axis=0) @ window
  return np.lib.stride_tricks.sliding_window_view(rows, size, axis=1) @ window


# Where the HR photograph counts as flat (sky, walls, skin, paper): its luma's local
# standard deviation over FLAT_WINDOW x FLAT_WINDOW pixels is below FLAT_THRESHOLD
# grey levels ("a few": below that, near-noiseless flat HR regions make the ratios'
# means; notes/CONFIG_RESULTS.md, "Texture where the photograph is flat (issue 35)").
FLAT_WINDOW = 7
FLAT_THRESHOLD = 3.0


class FlatnessEnergies(NamedTuple):
  """Mean |Laplacian| of SR's and HR's luma where HR is flat and where it is not.

  Each is NaN where its region is empty; ``flat_fraction`` is the flat share of the
  pixels scored.
  """
  sr_flat: float
  hr_flat: float
  sr_textured: float
  hr_textured: float
  flat_fraction: float


def _mean_or_nan(values: np.ndarray) -> float:
  return float(np.mean(values)) if values.size else float('nan')


def texture_by_flatness(sr: np.ndarray, hr: np.ndarray, shave: int,
                        window: int = FLAT_WINDOW,
                        threshold: float = FLAT_THRESHOLD) -> FlatnessEnergies:
  """Luma detail of SR and HR split by where HR is locally flat.

  On the Y channel of MATLAB's ``rgb2ycbcr`` (16..235; a gray image's own intensity)
  of uint8 images ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]``, after shaving ``shave``
  pixels off every border: a pixel is flat when the population standard deviation
  of HR's luma over the ``window`` x ``window`` square centred on it is below
  ``threshold`` grey levels. Scored are the pixels whose whole window lies inside
  the shaved image ('valid': ``window // 2`` more pixels off every border, no
  padding); on them, the mean absolute 5-point Laplacian (``[[0, -1, 0], [-1, 4,
  -1], [0, -1, 0]]``) of SR's and of HR's luma, over the flat pixels and over the
  others.

  Args:
    sr: the image scored.
    hr: the ground truth, same shape; it alone decides where is flat.
    shave: pixels removed from each border first (the scale, by convention).
    window: the side of the square (odd, at least 3).
    threshold: grey levels of luma.
  """
  if np.shape(sr) != np.shape(hr):
    raise ValueError(f'shapes differ: {np.shape(sr)} vs {np.shape(hr)}')
  if window < 3 or window % 2 == 0:
    raise ValueError(f'window must be odd and at least 3, got {window}')
  sr_y, hr_y = (_shave(_channels(image, True), shave) for image in (sr, hr))
  # Sums, not means, over the window: n * sum(x^2) - sum(x)^2 = n^2 * variance is
  # exact for integer pixels (gray images), so no pixel at the threshold flips.
  ones, area = np.ones(window), window * window
  sums, squares = _filter_valid(hr_y, ones), _filter_valid(hr_y * hr_y, ones)
  flat = area * squares - sums * sums < (area * threshold) ** 2
  inset = window // 2 - 1  # The Laplacian already lost one pixel per border.
  sr_lap, hr_lap = (np.abs(_laplacian(plane))[inset:plane.shape[0] - 2 - inset,
                                              inset:plane.shape[1] - 2 - inset]
                    for plane in (sr_y, hr_y))
  return FlatnessEnergies(_mean_or_nan(sr_lap[flat]), _mean_or_nan(hr_lap[flat]),
                          _mean_or_nan(sr_lap[~flat]), _mean_or_nan(hr_lap[~flat]),
                          float(np.mean(flat)) if flat.size else float('nan'))


# JPEG codes 8x8 blocks of luma (16x16 of subsampled chroma): a JPEG-compressed LR
# image upscaled by s carries its block edges every 8 s pixels of the output.
JPEG_BLOCK = 8


def block_grid(image: np.ndarray, period: int) -> float:
  """How much of an image's luma gradient lies on a grid of block edges.

  The mean absolute difference of MATLAB's Y between neighbouring pixels across the
  edges of ``period`` x ``period`` blocks from the image's top-left corner (columns
  ``period k - 1`` and ``period k``, rows likewise), over the same mean between all
  other neighbouring pixels. A photograph scores about 1; an output that keeps or
  sharpens the block edges of a JPEG input (``period`` = 8 x the scale) scores above
  it. NaN for an image with no edge inside it, or no gradient off the edges.
  """
  luma = _channels(np.asarray(image), True)
  across_columns = np.abs(np.diff(luma, axis=1))  # [H, W - 1]: column x against x + 1.
  across_rows = np.abs(np.diff(luma, axis=0))
  on_columns = (np.arange(1, luma.shape[1]) % period) == 0
  on_rows = (np.arange(1, luma.shape[0]) % period) == 0
  on_edges = np.concatenate([across_columns[:, on_columns].ravel(),
                             across_rows[on_rows].ravel()])
  elsewhere = np.concatenate([across_columns[:, ~on_columns].ravel(),
                              across_rows[~on_rows].ravel()])
  if not on_edges.size or not elsewhere.size or not np.mean(elsewhere) > 0:
    return float('nan')
  return float(np.mean(on_edges) / np.mean(elsewhere))


def ssim(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
  """SSIM (Wang et al.) of the Y channel (or intensity) of uint8 images; see ``psnr``."""
  if np.shape(sr) != np.shape(hr):
    raise ValueError(f'shapes differ: {np.shape(sr)} vs {np.shape(hr)}')
  x = _shave(_channels(sr, True), shave)
  y = _shave(_channels(hr, True), shave)
  window = _gaussian_window()
  mu_x, mu_y = _filter_valid(x, window), _filter_valid(y, window)
  var_x = _filter_valid(x * x, window) - mu_x**2
  var_y = _filter_valid(y * y, window) - mu_y**2
  cov = _filter_valid(x * y, window) - mu_x * mu_y
  ssim_map = ((2 * mu_x * mu_y + _C1) * (2 * cov + _C2)
              / ((mu_x**2 + mu_y**2 + _C1) * (var_x + var_y + _C2)))
  return float(np.mean(ssim_map))


def _channels_jax(images: jax.Array, y_channel: bool, offset: float) -> jax.Array:
  """``[B, H, W, C]`` -> ``[B, H, W, C']``: Y (with ``offset``) of RGB, else unchanged."""
  if images.shape[-1] == 3 and y_channel:
    # Elementwise, not a matmul: TPU/GPU matmuls default to reduced precision.
    y = jnp.sum(images * jnp.asarray(_Y_WEIGHTS, images.dtype), axis=-1, keepdims=True)
    return y + offset
  return images


def _shave_jax(images: jax.Array, shave: int) -> jax.Array:
  height, width = images.shape[1], images.shape[2]
  return images[:, shave:height - shave, shave:width - shave]


@functools.partial(jax.jit, static_argnames=('shave', 'y_channel'))
def psnr_jax(sr: jax.Array, hr: jax.Array, shave: int, y_channel: bool = True) -> jax.Array:
  """Per-image PSNR ``[B]`` of float ``[B, H, W, C]`` images in 0..255 (C = 1 or 3)."""
  sr, hr = sr.astype(jnp.float32), hr.astype(jnp.float32)
  # Y is linear: convert the difference (small, exact for integer pixels), not each
  # image, so float32 keeps ~7 digits of the error rather than of 16..235.
  diff = _shave_jax(_channels_jax(sr - hr, y_channel, 0.0), shave)
  # Reduce rows, then images: shorter float32 sums than one flat mean.
  mse = jnp.mean(jnp.mean(diff**2, axis=(2, 3)), axis=1)
  return 10 * jnp.log10(PEAK**2 / mse)


def _filter_valid_jax(images: jax.Array, window: jax.Array) -> jax.Array:
  """Separable 'valid' Gaussian filtering of every channel of ``[B, H, W, C]``."""
  channels = images.shape[-1]
  size = window.shape[0]
  dimensions = ('NHWC', 'HWIO', 'NHWC')
  for kernel in (window.reshape(size, 1, 1, 1), window.reshape(1, size, 1, 1)):
    images = jax.lax.conv_general_dilated(
        images, jnp.tile(kernel, (1, 1, 1, channels)), (1, 1), 'VALID',
        dimension_numbers=dimensions, feature_group_count=channels,
        precision=jax.lax.Precision.HIGHEST)  # No bf16/tf32 passes on TPU/GPU.
  return images


@functools.partial(jax.jit, static_argnames='shave')
def ssim_jax(sr: jax.Array, hr: jax.Array, shave: int) -> jax.Array:
  """Per-image SSIM ``[B]`` of float ``[B, H, W, C]`` images in 0..255 (C = 1 or 3)."""
  sr, hr = sr.astype(jnp.float32), hr.astype(jnp.float32)
  # Centre on 128: variances are E[x^2] - E[x]^2, whose float32 cancellation error
  # grows with the magnitude of x; the means get the shift back below.
  centre = 128.0
  x = _shave_jax(_channels_jax(sr, True, _Y_OFFSET) - centre, shave)
  y = _shave_jax(_channels_jax(hr, True, _Y_OFFSET) - centre, shave)
  window = jnp.asarray(_gaussian_window(), jnp.float32)
  moments = _filter_valid_jax(jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1), window)
  mu_x, mu_y, xx, yy, xy = jnp.split(moments, 5, axis=-1)
  var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
  mu_x, mu_y = mu_x + centre, mu_y + centre
  ssim_map = ((2 * mu_x * mu_y + _C1) * (2 * cov + _C2)
              / ((mu_x**2 + mu_y**2 + _C1) * (var_x + var_y + _C2)))
  return jnp.mean(ssim_map, axis=(1, 2, 3))
