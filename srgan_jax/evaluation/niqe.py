"""NIQE (Mittal et al. 2013), the no-reference "naturalness" score, as MATLAB computes it.

Lower is more natural. NIQE fits a multivariate Gaussian to 36 natural-scene
statistics of an image's 96x96 blocks and reports its distance to the Gaussian of
pristine natural images (``niqe_pristine.npz``, the authors' ``modelparameters.mat``):

  sqrt((mu_p - mu) (pinv((cov_p + cov) / 2)) (mu_p - mu)^T)

The conventions are those of the authors' MATLAB release (``computequality(im, 96,
96, 0, 0, ...)``) as the SR literature runs it (the PIRM 2018 challenge's
``calc_scores.m``, BasicSR): the luma of MATLAB's ``rgb2ycbcr`` rounded to uint8
(grayscale images are scored as they are), ``shave`` pixels cut off each border, the
image cropped to whole 96x96 blocks (bottom and right), and two scales, the second
MATLAB ``imresize(im, 0.5)`` (bicubic with antialiasing) with 48x48 blocks. At each
scale the image is normalised by its local mean and deviation (7x7 Gaussian,
sigma 7/6, replicated edges): ``(im - mu) / (sigma + 1)``. Each block gives 18
features: the shape and mean scale of an asymmetric generalised Gaussian (AGGD) fitted
to the normalised pixels, and shape, mean, left and right scale of AGGDs fitted to
the products of each pixel with its (circular, within the block) neighbour to the
right, below, below-right and below-left. AGGD shapes are found on MATLAB's grid
0.2:0.001:10 by moment matching. Blocks with NaN features (a flat block has no
negative values) count in the mean of the other features and not in the covariance
(MATLAB's ``nanmean``, ``nancov``).

Flat 7x7 windows (dark backgrounds, screenshots) normalise to exactly 0 here, so
they fall on neither side of an AGGD. MATLAB's formula gives them +-1e-14 rounding
noise whose sign, in a re-implementation such as BasicSR's NumPy one, moves NIQE by up
to 0.3 on images like Set5's head; exact zeros reproduce MATLAB's published value on
baboon to 1e-7 (tests/unit/evaluation/niqe_test.py).

The block features are computed with JAX, batched over same-size images, where the
evaluation runs; the 36-dimensional Gaussian fit and distance run in float64 NumPy on
the host: the pristine covariance has a condition number of 1.6e5, beyond what a
float32 pseudo-inverse resolves.
"""

import functools
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from srgan_jax.imaging import bicubic

BLOCK_SIZE = 96
NUM_FEATURES = 36
# MATLAB's fspecial('gaussian', 7, 7/6) for the local mean and deviation.
_WINDOW_SIZE = 7
_WINDOW_SIGMA = 7 / 6
# Neighbours multiplied with each pixel, as MATLAB circshift offsets (rows, columns).
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
PRISTINE_PARAMS = pathlib.Path(__file__).with_name('niqe_pristine.npz')


def gaussian_window() -> np.ndarray:
  """MATLAB ``fspecial('gaussian', 7, 7/6)``: normalised 7x7 float64."""
  x = np.arange(_WINDOW_SIZE) - (_WINDOW_SIZE - 1) / 2
  window = np.exp(-(x[:, None]**2 + x[None, :]**2) / (2 * _WINDOW_SIGMA**2))
  return window / window.sum()


@functools.lru_cache(maxsize=1)
def _aggd_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """MATLAB's shape grid 0.2:0.001:10 and, per shape a, float64:

  r(a) = G(2/a)^2 / (G(1/a) G(3/a)), the moment ratio matched against the data;
  sqrt(G(1/a) / G(3/a)), which turns a standard deviation into an AGGD scale;
  G(2/a) / G(1/a), the factor of the AGGD mean.
  """
  shapes = 0.2 + 0.001 * np.arange(9801)
  lgamma = np.vectorize(math.lgamma)
  g1, g2, g3 = lgamma(1 / shapes), lgamma(2 / shapes), lgamma(3 / shapes)
  return shapes, np.exp(2 * g2 - g1 - g3), np.exp(0.5 * (g1 - g3)), np.exp(g2 - g1)


@functools.lru_cache(maxsize=1)
def pristine_params() -> tuple[np.ndarray, np.ndarray]:
  """``(mu (36,), cov (36, 36))`` of the pristine model, float64 (see niqe_pristine.md)."""
  with np.load(PRISTINE_PARAMS, allow_pickle=False) as data:
    return data['mu'], data['cov']


def _luma(images: jax.Array) -> jax.Array:
  """``[B, H, W, C]`` 0..255 -> ``[B, H, W]`` float32: uint8 MATLAB luma, or the gray level.

  ``rgb2ycbcr`` on uint8 rounds ``16 + (65.481 R + 128.553 G + 24.966 B) / 255``; in
  integers (x 255000, below 2^31) the rounding is exact, as float32 would not be.
  """
  pixels = jnp.round(images).astype(jnp.int32)
  if images.shape[-1] == 1:
    return pixels[..., 0].astype(jnp.float32)
  scaled = (16 * 255000 + 65481 * pixels[..., 0] + 128553 * pixels[..., 1]
            + 24966 * pixels[..., 2])
  return ((scaled + 127500) // 255000).astype(jnp.float32)  # Half away from zero.


def _window_sum(padded: jax.Array, weights: np.ndarray, fn) -> jax.Array:
  """sum_k w_k fn(x_{j + k}) over the 7x7 offsets k of 3-pixel-padded ``[B, H + 6, W + 6]``."""
  height, width = padded.shape[1] - _WINDOW_SIZE + 1, padded.shape[2] - _WINDOW_SIZE + 1
  total = 0.0
  for dy in range(_WINDOW_SIZE):
    for dx in range(_WINDOW_SIZE):
      total = total + float(weights[dy, dx]) * fn(padded[:, dy:dy + height, dx:dx + width])
  return total


def _normalise(image: jax.Array) -> jax.Array:
  """MSCN coefficients ``(im - mu) / (sigma + 1)`` of ``[B, H, W]`` (replicated edges)."""
  pad = _WINDOW_SIZE // 2
  padded = jnp.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode='edge')
  window = gaussian_window()
  # The mean as an offset from the centre pixel, and the variance as the window sum
  # of (x - mu)^2 rather than MATLAB's E[x^2] - mu^2: equal in exact arithmetic, but
  # without float32 cancellation, and exactly 0 and 0 on flat windows (see the module).
  offset = _window_sum(padded, window, lambda x: x - image)
  variance = _window_sum(padded, window, lambda x: (x - image - offset)**2)
  return -offset / (jnp.sqrt(variance) + 1)


def _aggd(values: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Moment-matched AGGD of ``[..., n]``, each ``[...]``: (index of the shape in the
  grid, left scale, right scale)."""
  _, ratio, scale_factor, _ = (jnp.asarray(t, jnp.float32) for t in _aggd_tables())
  squares = values * values
  negative, positive = values < 0, values > 0
  # 0 / 0 = NaN where a side is empty, as MATLAB's mean([]) is.
  left = jnp.sqrt(jnp.sum(jnp.where(negative, squares, 0), -1) / jnp.sum(negative, -1))
  right = jnp.sqrt(jnp.sum(jnp.where(positive, squares, 0), -1) / jnp.sum(positive, -1))
  gamma_hat = left / right
  r_hat = jnp.mean(jnp.abs(values), -1)**2 / jnp.mean(squares, -1)
  r_hat_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1)**2
  index = jnp.argmin((ratio - r_hat_norm[..., None])**2, axis=-1)
  index = jnp.where(jnp.isnan(r_hat_norm), 0, index)  # MATLAB's min picks the first.
  return index, left * scale_factor[index], right * scale_factor[index]


def _block_features(blocks: jax.Array) -> jax.Array:
  """The 18 features of each ``[..., b, b]`` block: ``[..., 18]``."""
  shapes, _, _, mean_factor = (jnp.asarray(t, jnp.float32) for t in _aggd_tables())
  # The pixels and their four neighbour products, fitted in one batch: [..., 5, b * b].
  values = jnp.stack([blocks] + [blocks * jnp.roll(blocks, shift, axis=(-2, -1))
                                 for shift in _SHIFTS], axis=-3)
  index, left, right = _aggd(values.reshape(*values.shape[:-2], -1))
  shape = shapes[index]
  features = [shape[..., 0], (left[..., 0] + right[..., 0]) / 2]
  for k in range(1, 1 + len(_SHIFTS)):
    mean = (right[..., k] - left[..., k]) * mean_factor[index[..., k]]
    features += [shape[..., k], mean, left[..., k], right[..., k]]
  return jnp.stack(features, axis=-1)


def _blocks(image: jax.Array, size: int) -> jax.Array:
  """``[B, H, W]`` (multiples of ``size``) -> ``[B, blocks, size, size]``."""
  batch, height, width = image.shape
  blocks = image.reshape(batch, height // size, size, width // size, size)
  return blocks.transpose(0, 1, 3, 2, 4).reshape(batch, -1, size, size)


@functools.partial(jax.jit, static_argnames='shave')
def block_features(images: jax.Array, shave: int = 0) -> jax.Array:
  """NIQE features ``[B, blocks, 36]`` (float32) of ``[B, H, W, C]`` images in 0..255.

  ``C`` is 3 (RGB, scored on the uint8 luma) or 1. ``shave`` pixels are cut off
  each border before the image is cropped to whole 96x96 blocks; an image with no
  whole block gives ``[B, 0, 36]``.
  """
  image = _luma(images)
  height, width = image.shape[1] - 2 * shave, image.shape[2] - 2 * shave
  rows, cols = height // BLOCK_SIZE * BLOCK_SIZE, width // BLOCK_SIZE * BLOCK_SIZE
  image = image[:, shave:shave + rows, shave:shave + cols]
  if rows == 0 or cols == 0:
    return jnp.zeros((images.shape[0], 0, NUM_FEATURES), jnp.float32)
  features = []
  for scale in (1, 2):
    features.append(_block_features(_blocks(_normalise(image), BLOCK_SIZE // scale)))
    if scale == 1:
      image = bicubic.imresize_jax(image[..., None], 0.5)[..., 0]
  return jnp.concatenate(features, axis=-1)


def score_features(features: np.ndarray) -> np.ndarray:
  """NIQE ``[B]`` (float64) from ``block_features`` ``[B, blocks, 36]``; NaN without blocks."""
  mu_pristine, cov_pristine = pristine_params()
  scores = []
  for image in np.asarray(features, np.float64):
    valid = image[~np.isnan(image).any(axis=1)]
    if not len(valid):  # No block, or none without NaN: no covariance.
      scores.append(float('nan'))
      continue
    # MATLAB's cov of a single observation is 0, where NumPy's is NaN.
    cov = np.cov(valid, rowvar=False) if len(valid) > 1 else np.zeros_like(cov_pristine)
    difference = mu_pristine - np.nanmean(image, axis=0)
    inverse = np.linalg.pinv((cov_pristine + cov) / 2)
    scores.append(float(np.sqrt(difference @ inverse @ difference)))
  return np.asarray(scores)


def niqe(images: np.ndarray | jax.Array, shave: int = 0) -> np.ndarray:
  """NIQE ``[B]`` of same-size ``[B, H, W, C]`` images in 0..255 (uint8 or float); lower is better.

  Args:
    images: RGB (``C = 3``, scored on the MATLAB uint8 luma) or gray (``C = 1``).
    shave: pixels cut off each border first (the SR scale, by convention; 0 for
      plain NIQE). An image with no whole 96x96 block left scores NaN.
  """
  return score_features(np.asarray(block_features(jnp.asarray(images), shave)))
