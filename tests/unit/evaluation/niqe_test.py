"""Tests for srgan_jax.evaluation.niqe: MATLAB's published value, a literal float64 port, properties."""

import numpy as np
import pytest
from scipy import ndimage
from scipy import special

from conftest import image_set
from srgan_jax.evaluation import metrics
from srgan_jax.evaluation import niqe
from srgan_jax.imaging import bicubic
from srgan_jax.imaging import degradation
from srgan_jax.imaging import image_io

# BasicSR's tests/data/baboon.png is Set14's baboon.png without its 8 rightmost columns
# (480x492; pixel-identical otherwise), and NIQE reads only its top-left 480x480. BasicSR
# (basicsr/metrics/niqe.py, 1.4.2) gives the authors' MATLAB code on it, Y channel, no
# border crop, in MATLAB R2021a: 5.72957338.
MATLAB_BABOON = 5.72957338


def _matlab_niqe(y: np.ndarray) -> float:
  """NIQE of a float64 luma image, ported line by line from the authors' MATLAB release
  (computequality.m, computefeature.m, estimateaggdparam.m): float64, MATLAB's
  E[x^2] - mu^2 variance, block loops; independent of srgan_jax.evaluation.niqe but for the
  pristine parameters and MATLAB imresize (tested in bicubic_test.py)."""
  x = np.arange(7) - 3.0
  window = np.exp(-(x[:, None]**2 + x[None, :]**2) / (2 * (7 / 6)**2))
  window /= window.sum()
  gam = np.linspace(0.2, 10, 9801)
  r_gam = special.gamma(2 / gam)**2 / (special.gamma(1 / gam) * special.gamma(3 / gam))

  def estimate_aggd(vec):
    left = np.sqrt(np.mean(vec[vec < 0]**2)) if np.any(vec < 0) else np.nan
    right = np.sqrt(np.mean(vec[vec > 0]**2)) if np.any(vec > 0) else np.nan
    gammahat = left / right
    rhat = np.mean(np.abs(vec))**2 / np.mean(vec**2)
    rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1)**2
    alpha = gam[0] if np.isnan(rhatnorm) else gam[np.argmin((r_gam - rhatnorm)**2)]
    factor = np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
    return alpha, left * factor, right * factor

  def compute_feature(block):
    alpha, betal, betar = estimate_aggd(block.ravel())
    feat = [alpha, (betal + betar) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
      pair = block.ravel() * np.roll(block, shift, axis=(0, 1)).ravel()
      alpha, betal, betar = estimate_aggd(pair)
      meanparam = (betar - betal) * special.gamma(2 / alpha) / special.gamma(1 / alpha)
      feat += [alpha, meanparam, betal, betar]
    return feat

  rows, cols = y.shape[0] // 96 * 96, y.shape[1] // 96 * 96
  im = y[:rows, :cols].astype(np.float64)
  feat = []
  for scale in (1, 2):
    mu = ndimage.correlate(im, window, mode='nearest')
    sigma = np.sqrt(np.abs(ndimage.correlate(im * im, window, mode='nearest') - mu * mu))
    structdis = (im - mu) / (sigma + 1)
    size = 96 // scale
    feat.append([compute_feature(structdis[i:i + size, j:j + size])
                 for i in range(0, rows // scale, size) for j in range(0, cols // scale, size)])
    im = bicubic.imresize(im, 0.5)
  distparam = np.concatenate([np.asarray(f) for f in feat], axis=1)
  mu_pris, cov_pris = niqe.pristine_params()
  mu_dist = np.nanmean(distparam, axis=0)
  cov_dist = np.cov(distparam[~np.isnan(distparam).any(axis=1)], rowvar=False)
  difference = mu_pris - mu_dist
  return float(np.sqrt(difference @ np.linalg.pinv((cov_pris + cov_dist) / 2) @ difference))


def _luma(image: np.ndarray) -> np.ndarray:
  """MATLAB's uint8 rgb2ycbcr luma (rounded), float64."""
  return np.floor(metrics.rgb_to_y(image) + 0.5)


def _has_flat_window(y: np.ndarray) -> bool:
  """True if some 7x7 window is constant: there the normalised value is 0 in exact
  arithmetic but +-1e-14 noise in MATLAB's float64 formula, whose sign decides the
  AGGD fits; srgan_jax.evaluation.niqe gets exact zeros there (as MATLAB's value on baboon
  suggests MATLAB does), the port above gets noise."""
  return bool(np.any(ndimage.maximum_filter(y, 7, mode='nearest')
                     == ndimage.minimum_filter(y, 7, mode='nearest')))


def test_matches_published_matlab_value_on_baboon():
  image = image_io.load_uint8(image_set('Set14') / 'baboon.png')
  value = float(niqe.niqe(image[None])[0])
  print(f'NIQE(baboon) = {value:.7f}, MATLAB {MATLAB_BABOON}')
  assert value == pytest.approx(MATLAB_BABOON, abs=1e-3)
  # BasicSR's copy, 8 columns narrower, has the same 480x480 blocks.
  assert float(niqe.niqe(image[None, :, :492])[0]) == value


def test_matches_literal_matlab_port_on_benchmark_images():
  """Set14 HR images and their bicubic x4 reconstructions, 4-pixel border shaved."""
  compared = []
  for name in ('baboon', 'bridge', 'coastguard', 'comic', 'man'):
    hr = degradation.modcrop(image_io.load_uint8(image_set('Set14') / f'{name}.png'), 4)
    sr = bicubic.imresize(bicubic.imresize(hr, 0.25), 4)
    for kind, image in (('hr', hr), ('bicubic', sr)):
      y = _luma(image)[4:-4, 4:-4] if image.shape[-1] == 3 else image[4:-4, 4:-4, 0]
      if _has_flat_window(y):
        continue
      actual, expected = float(niqe.niqe(image[None], shave=4)[0]), _matlab_niqe(y)
      print(f'{name} {kind}: {actual:.6f} vs port {expected:.6f}')
      assert actual == pytest.approx(expected, abs=1e-3), (name, kind)
      compared.append((name, kind))
  assert len(compared) >= 6, compared  # The filter leaves 6 of these 10 on Set14.


def test_flat_windows_normalise_to_exact_zeros():
  image = np.full((1, 96, 192), 117.0, np.float32)
  image[:, :, 96:] = np.arange(96, dtype=np.float32)  # Flat on the left half only.
  normalised = np.asarray(niqe._normalise(image))  # pylint: disable=protected-access
  assert np.all(normalised[:, :, :92] == 0)
  assert np.all(normalised[:, :, 100:-4] != 0)


def test_blur_scores_worse():
  image = degradation.modcrop(image_io.load_uint8(image_set('Set5') / 'butterfly.png'), 4)
  blurred = bicubic.imresize(bicubic.imresize(image, 0.25), 4)
  sharp, blurry = niqe.niqe(np.stack([image, blurred]))
  print(f'butterfly {sharp:.4f}, bicubic x4 {blurry:.4f}')
  assert blurry > sharp + 2


def test_batch_shave_gray_and_small_images():
  rng = np.random.default_rng(0)
  smooth = lambda: np.clip(bicubic.imresize(rng.uniform(0, 255, (60, 55, 3)), 4), 0,
                           255).round().astype(np.uint8)
  images = np.stack([smooth(), smooth()])  # 240x220: 2x2 blocks.
  together = niqe.niqe(images, shave=3)
  alone = [niqe.niqe(image[None, 3:-3, 3:-3])[0] for image in images]
  np.testing.assert_allclose(together, alone, rtol=1e-6)
  # Gray images are scored on their own level: the luma, given as one channel, is the same.
  luma = np.stack([_luma(image) for image in images])[..., None].astype(np.uint8)
  np.testing.assert_allclose(niqe.niqe(luma), niqe.niqe(images), rtol=1e-6)
  assert np.isnan(niqe.niqe(images[:, :95])).all()  # No whole 96x96 block.


def test_luma_is_matlab_uint8_rgb2ycbcr():
  rgb = np.random.default_rng(1).integers(0, 256, (1, 500, 500, 3))
  rgb[0, 0, :3] = [[0, 0, 0], [255, 255, 255], [255, 0, 0]]
  luma = np.asarray(niqe._luma(rgb.astype(np.float32)))  # pylint: disable=protected-access
  np.testing.assert_array_equal(luma, _luma(rgb))
