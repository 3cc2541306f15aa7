"""Tests for srgan_jax.evaluation.metrics: hand-computed values, skimage, and NumPy/JAX agreement."""

import io
import pathlib

import numpy as np
import pytest
from PIL import Image
import scipy.ndimage
from skimage import metrics as skmetrics

from conftest import image_set
from srgan_jax.evaluation import metrics
from srgan_jax.imaging import bicubic


def _pair(shape, seed, noise=12.0):
  """A smooth-ish uint8 image and a noisy copy of it."""
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, shape).astype(np.float64)
  base = bicubic.imresize(bicubic.imresize(base, 0.25), 4)[:shape[0], :shape[1]]
  hr = np.clip(base, 0, 255).astype(np.uint8)
  sr = np.clip(hr + rng.normal(0, noise, hr.shape), 0, 255).astype(np.uint8)
  return sr, hr


def _skimage_ssim(x, y):
  """Wang et al. SSIM in skimage; it filters with reflection and crops 5 pixels per
  border before averaging, which leaves exactly the 'valid' region of the 11x11 window."""
  return skmetrics.structural_similarity(
      x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)


def test_rgb_to_y_matches_matlab():
  rgb = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]])
  # MATLAB: rgb2ycbcr([r g b] / 255) * 255 has luma 16 + 65.481 r + 128.553 g + 24.966 b.
  np.testing.assert_allclose(metrics.rgb_to_y(rgb),
                             [16, 235, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-12)


def test_psnr_by_hand():
  hr = np.full((20, 20), 100, np.uint8)
  sr = hr.copy()
  sr[2:-2, 2:-2] += 5  # Differs only inside a 2-pixel frame.
  assert metrics.psnr(sr, hr, shave=2) == pytest.approx(20 * np.log10(255 / 5), abs=1e-12)
  # Without shaving, 16x16 of 400 pixels differ: MSE = 25 * 256 / 400.
  assert metrics.psnr(sr, hr, shave=0) == pytest.approx(10 * np.log10(255**2 / 16), abs=1e-12)
  assert metrics.psnr(hr, hr, shave=0) == float('inf')
  # On RGB, a change of 10 in R alone moves Y by 65.481 / 255 * 10.
  rgb = np.full((8, 8, 3), 50, np.uint8)
  red = rgb.copy()
  red[..., 0] += 10
  assert metrics.psnr(red, rgb, 1) == pytest.approx(20 * np.log10(255 / (65.481 / 25.5)))
  # RGB PSNR averages the squared error over the three channels.
  rgb_psnr = metrics.psnr(red, rgb, 1, y_channel=False)
  assert rgb_psnr == pytest.approx(10 * np.log10(255**2 * 3 / 100))


def test_psnr_matches_skimage():
  sr, hr = _pair((40, 36, 3), 0)
  y_sr, y_hr = metrics.rgb_to_y(sr)[4:-4, 4:-4], metrics.rgb_to_y(hr)[4:-4, 4:-4]
  expected = skmetrics.peak_signal_noise_ratio(y_hr, y_sr, data_range=255)
  assert metrics.psnr(sr, hr, 4) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize('shave', [0, 3])
def test_ssim_matches_skimage(shave):
  sr, hr = _pair((41, 37), 1)
  crop = slice(shave, -shave or None)
  expected = _skimage_ssim(sr[crop, crop].astype(np.float64), hr[crop, crop].astype(np.float64))
  assert metrics.ssim(sr, hr, shave) == pytest.approx(expected, abs=1e-10)
  # [H, W, 1] is the same single-channel image.
  assert metrics.ssim(sr[..., None], hr[..., None], shave) == metrics.ssim(sr, hr, shave)


def test_ssim_of_rgb_is_ssim_of_y():
  sr, hr = _pair((30, 34, 3), 2)
  expected = _skimage_ssim(metrics.rgb_to_y(sr)[4:-4, 4:-4], metrics.rgb_to_y(hr)[4:-4, 4:-4])
  assert metrics.ssim(sr, hr, 4) == pytest.approx(expected, abs=1e-10)
  assert metrics.ssim(hr, hr, 4) == pytest.approx(1.0, abs=1e-12)


def test_shape_mismatch_is_an_error():
  with pytest.raises(ValueError):
    metrics.psnr(np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8), 0)
  with pytest.raises(ValueError):
    metrics.ssim(np.zeros((16, 16), np.uint8), np.zeros((16, 16, 3), np.uint8), 0)


def _batch(pairs):
  stack = lambda images: np.stack([i.reshape(i.shape[:2] + (-1,)) for i in images]).astype(
      np.float32)
  return stack([sr for sr, _ in pairs]), stack([hr for _, hr in pairs])


@pytest.mark.parametrize('shape', [(48, 40, 3), (48, 40)])
def test_jax_matches_numpy(shape):
  pairs = [_pair(shape, seed, noise) for seed, noise in ((3, 3.0), (4, 20.0), (5, 60.0))]
  sr, hr = _batch(pairs)
  psnr = metrics.psnr_jax(sr, hr, 4)
  ssim = metrics.ssim_jax(sr, hr, 4)
  assert psnr.shape == ssim.shape == (3,)
  np.testing.assert_allclose(psnr, [metrics.psnr(s, h, 4) for s, h in pairs], atol=1e-4, rtol=0)
  np.testing.assert_allclose(ssim, [metrics.ssim(s, h, 4) for s, h in pairs], atol=1e-5, rtol=0)
  rgb_psnr = metrics.psnr_jax(sr, hr, 4, y_channel=False)
  expected = [metrics.psnr(s, h, 4, y_channel=False) for s, h in pairs]
  np.testing.assert_allclose(rgb_psnr, expected, atol=1e-4, rtol=0)


def test_jax_matches_numpy_on_a_photograph():
  # Large, bright, flat regions stress float32: Y up to 235 squared in the SSIM moments.
  hr = np.asarray(Image.open(pathlib.Path(image_set('Set5')) / 'baby.png'))
  sr = bicubic.imresize(bicubic.imresize(hr, 0.25), 4)
  sr_batch, hr_batch = _batch([(sr, hr)])
  assert float(metrics.psnr_jax(sr_batch, hr_batch, 4)[0]) == pytest.approx(
      metrics.psnr(sr, hr, 4), abs=1e-4)
  assert float(metrics.ssim_jax(sr_batch, hr_batch, 4)[0]) == pytest.approx(
      metrics.ssim(sr, hr, 4), abs=1e-5)


def _ycbcr_planes(image: np.ndarray) -> list[np.ndarray]:
  """MATLAB rgb2ycbcr on 0..255 input, written out from its documented matrix."""
  matrix = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0],
                     [112.0, -93.786, -18.214]])
  ycbcr = np.array([16, 128, 128]) + image.astype(np.float64) / 255 @ matrix.T
  return [ycbcr[..., channel] for channel in range(3)]


def test_high_pass_energy_is_scipys_laplacian_of_matlabs_ycbcr():
  image = np.random.default_rng(0).integers(0, 256, (40, 36, 3), dtype=np.uint8)
  y, cb, cr = (plane[4:-4, 4:-4] for plane in _ycbcr_planes(image))
  def energy(plane):  # scipy's 5-point Laplacian, interior pixels only.
    return np.mean(np.abs(scipy.ndimage.laplace(plane)[1:-1, 1:-1]))
  luma, chroma = metrics.high_pass_energy(image, shave=4)
  assert luma == pytest.approx(energy(y), rel=1e-12)
  assert chroma == pytest.approx(energy(cb) + energy(cr), rel=1e-12)
  gray = image[..., 0]
  assert metrics.high_pass_energy(gray, shave=4) == (
      pytest.approx(energy(gray[4:-4, 4:-4].astype(np.float64)), rel=1e-12), 0.0)


def _scipy_texture_by_flatness(sr, hr, shave, window, threshold):
  """metrics.texture_by_flatness written independently: MATLAB's Y from its documented
  matrix, scipy's moving sums for the local variance and scipy's Laplacian, both cut
  to the pixels whose whole window lies inside the shaved image."""
  def luma(image):
    plane = _ycbcr_planes(image)[0] if image.ndim == 3 else image.astype(np.float64)
    return plane[shave:-shave, shave:-shave]
  sr_y, hr_y = luma(sr), luma(hr)
  # variance < threshold^2, times n^2: sums of integer pixels are exact, so a gray
  # image's pixels exactly at the threshold are decided exactly, as the definition says.
  n, box = window**2, np.ones((window, window))
  sums, squares = (scipy.ndimage.correlate(plane, box) for plane in (hr_y, hr_y**2))
  inner = (slice(window // 2, -(window // 2)),) * 2
  flat = (n * squares - sums**2)[inner] < (n * threshold)**2
  sr_lap, hr_lap = (np.abs(scipy.ndimage.laplace(plane))[inner] for plane in (sr_y, hr_y))
  return (sr_lap[flat].mean(), hr_lap[flat].mean(), sr_lap[~flat].mean(),
          hr_lap[~flat].mean(), flat.mean())


@pytest.mark.parametrize('name, window, threshold', [
    ('baby', metrics.FLAT_WINDOW, metrics.FLAT_THRESHOLD), ('butterfly', 5, 4.0)])
def test_texture_by_flatness_is_scipys_on_photographs(name, window, threshold):
  hr = np.asarray(Image.open(image_set('Set5') / f'{name}.png'))
  # An SR with both blur (bicubic) and invented texture (noise) in it.
  noise = np.random.default_rng(0).normal(0, 3, hr.shape[:2])[..., None]
  sr = np.clip(np.round(bicubic.imresize(bicubic.imresize(hr, 0.25), 4) + noise), 0, 255)
  sr = sr.astype(np.uint8)
  for sr_image, hr_image in ((sr, hr), (sr[..., 1], hr[..., 1])):  # RGB, and gray.
    expected = _scipy_texture_by_flatness(sr_image, hr_image, 4, window, threshold)
    found = metrics.texture_by_flatness(sr_image, hr_image, 4, window, threshold)
    assert 0.05 < found.flat_fraction < 0.95  # Both regions hold many pixels.
    np.testing.assert_allclose(found, expected, rtol=1e-9)
  with pytest.raises(ValueError, match='window must be odd'):
    metrics.texture_by_flatness(hr, hr, 4, window=6)


def _loop_block_grid(image, period):
  """metrics.block_grid written as loops over the edges, from MATLAB's Y matrix."""
  luma = _ycbcr_planes(image)[0]
  on, off = [], []
  height, width = luma.shape
  for x in range(width - 1):
    (on if (x + 1) % period == 0 else off).extend(np.abs(luma[:, x + 1] - luma[:, x]))
  for y in range(height - 1):
    (on if (y + 1) % period == 0 else off).extend(np.abs(luma[y + 1] - luma[y]))
  return np.mean(on) / np.mean(off)


def test_block_grid_finds_the_blocks_of_a_jpeg_input_and_not_a_photographs():
  hr = np.asarray(Image.open(image_set('Set14') / 'lenna.png'))[:256, :256]
  lr = np.clip(np.round(bicubic.imresize(hr, 0.25)), 0, 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(lr).save(buffer, format='JPEG', quality=30)  # libjpeg, as users' files.
  jpeg = np.asarray(Image.open(buffer))
  upscaled = np.clip(np.round(bicubic.imresize(jpeg, 4)), 0, 255).astype(np.uint8)
  period = metrics.JPEG_BLOCK * 4
  for image in (hr, upscaled):
    assert metrics.block_grid(image, period) == pytest.approx(
        _loop_block_grid(image, period), rel=1e-9)
  assert 0.85 < metrics.block_grid(hr, period) < 1.15  # A photograph: no grid.
  assert metrics.block_grid(upscaled, period) > 1.3  # JPEG's block edges, kept.
  # The same image on a grid that is not JPEG's (half a block off) shows none.
  assert metrics.block_grid(upscaled[period // 2:, period // 2:], period) < 1.15
  assert np.isnan(metrics.block_grid(hr[:20, :20], period))  # No edge inside.
