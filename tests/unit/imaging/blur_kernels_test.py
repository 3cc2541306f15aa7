"""Tests for srgan_jax.imaging.blur_kernels: the formulas evaluated independently with
NumPy/SciPy, second moments of wide Gaussians, the random draws and their jitting."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from scipy import special

from srgan_jax.imaging import blur_kernels


def _reference(size: int, value) -> np.ndarray:
  """``value(x, y)`` (x the column, y the row offset) on a size x size grid,
  normalised, zero-padded to 21x21 (BasicSR's pad_to)."""
  half = size // 2
  kernel = np.array([[value(float(x), float(y)) for x in range(-half, half + 1)]
                     for y in range(-half, half + 1)])
  kernel /= kernel.sum()
  pad = (21 - size) // 2
  return np.pad(kernel, pad)


def _quadratic_form(sigma_x, sigma_y, theta):
  """``d(x, y)`` with the covariance built as a matrix and inverted with NumPy."""
  rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
  inverse = np.linalg.inv(rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T)
  return lambda x, y: np.array([x, y]) @ inverse @ np.array([x, y])


# (size, sigma_x, sigma_y, theta, beta): sizes at both ends, narrow and wide, rotated.
CASES = [(7, 0.5, 0.5, 0.0, 0.5), (13, 2.0, 0.8, 0.7, 1.5), (21, 3.0, 1.2, -2.5, 4.0),
         (9, 1.5, 2.5, 3.0, 1.0)]


@pytest.mark.parametrize('size, sigma_x, sigma_y, theta, beta', CASES)
def test_gaussian_families_match_numpy(size, sigma_x, sigma_y, theta, beta):
  d = _quadratic_form(sigma_x, sigma_y, theta)
  np.testing.assert_allclose(
      blur_kernels.gaussian_kernel(size, sigma_x, sigma_y, theta),
      _reference(size, lambda x, y: math.exp(-0.5 * d(x, y))), atol=1e-6)
  np.testing.assert_allclose(
      blur_kernels.generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, beta),
      _reference(size, lambda x, y: math.exp(-0.5 * d(x, y)**beta)), atol=1e-6)
  np.testing.assert_allclose(
      blur_kernels.plateau_kernel(size, sigma_x, sigma_y, theta, beta),
      _reference(size, lambda x, y: 1 / (d(x, y)**beta + 1)), atol=1e-6)


@pytest.mark.parametrize('size, cutoff',
                         [(7, math.pi), (13, math.pi / 5), (21, 2.0), (21, math.pi / 3)])
def test_sinc_matches_scipy_j1(size, cutoff):
  def jinc(x, y):
    r = math.hypot(x, y)
    if r == 0:
      return cutoff**2 / (4 * math.pi)
    return cutoff * special.j1(cutoff * r) / (2 * math.pi * r)
  np.testing.assert_allclose(blur_kernels.sinc_kernel(size, cutoff), _reference(size, jinc),
                             rtol=1e-5, atol=1e-6)


def test_bessel_j1_matches_scipy():
  # The sinc evaluates J1 at up to pi * 10 sqrt(2), about 44.4.
  x = np.linspace(-45, 45, 9001, dtype=np.float32)
  np.testing.assert_allclose(blur_kernels.bessel_j1(jnp.asarray(x)),
                             special.j1(x.astype(np.float64)), atol=3e-6)


@pytest.mark.parametrize('sigma_x, sigma_y, theta',
                         [(2.5, 1.0, 0.6), (2.0, 2.0, 0.0), (1.2, 2.2, -2.0)])
def test_wide_gaussian_second_moments_equal_the_covariance(sigma_x, sigma_y, theta):
  kernel = np.asarray(blur_kernels.gaussian_kernel(21, sigma_x, sigma_y, theta), np.float64)
  offsets = np.arange(21) - 10.0
  x, y = offsets[None, :], offsets[:, None]
  moments = np.array([[np.sum(kernel * x * x), np.sum(kernel * x * y)],
                      [np.sum(kernel * x * y), np.sum(kernel * y * y)]])
  c, s = math.cos(theta), math.sin(theta)
  cross = c * s * (sigma_x**2 - sigma_y**2)
  covariance = np.array([[c * c * sigma_x**2 + s * s * sigma_y**2, cross],
                         [cross, s * s * sigma_x**2 + c * c * sigma_y**2]])
  np.testing.assert_allclose(moments, covariance, atol=2e-3 * sigma_x * sigma_y)
  assert abs(np.sum(kernel * x)) < 1e-5 and abs(np.sum(kernel * y)) < 1e-5  # Centred.


def test_every_kernel_sums_to_one_inside_its_window():
  for size in blur_kernels.SIZES:
    for kernel in (blur_kernels.gaussian_kernel(size, 4.0, 1.0, 0.3),
                   blur_kernels.plateau_kernel(size, 4.0, 1.0, 0.3, 1.5),
                   blur_kernels.sinc_kernel(size, 0.7)):
      kernel = np.asarray(kernel)
      assert abs(kernel.sum() - 1) < 1e-5
      pad = (21 - size) // 2
      outside = np.ones((21, 21), bool)
      outside[pad:21 - pad, pad:21 - pad] = False
      assert np.all(kernel[outside] == 0)


@functools.cache
def _draws(count: int = 4000):
  """Parameters and kernels of ``count`` keys, drawn by one jitted, vmapped function."""
  def draw(key):
    keys = jax.random.split(key, 6)
    return dict(
        size=blur_kernels.draw_size(keys[0]),
        gaussian=blur_kernels.draw_gaussian_parameters(keys[1], (0.2, 3.0), isotropic=False),
        iso=blur_kernels.draw_gaussian_parameters(keys[1], (0.2, 3.0), isotropic=True),
        betag=blur_kernels.draw_beta(keys[2], (0.5, 4.0)),
        betap=blur_kernels.draw_beta(keys[2], (1.0, 2.0)),
        cutoff=blur_kernels.draw_sinc_cutoff(keys[3], blur_kernels.draw_size(keys[0])),
        mixed=blur_kernels.random_mixed_kernel(keys[4]))
  keys = jax.random.split(jax.random.key(0), count)
  return jax.tree.map(np.asarray, jax.jit(jax.vmap(draw))(keys))


def test_draws_cover_real_esrgan_ranges():
  draws = _draws()
  assert set(np.unique(draws['size'])) == set(blur_kernels.SIZES)
  sigma_x, sigma_y, theta = draws['gaussian']
  for values, low, high in ((sigma_x, 0.2, 3.0), (sigma_y, 0.2, 3.0), (theta, -math.pi, math.pi)):
    assert values.min() >= low and values.max() <= high
    assert values.min() < low + 0.05 and values.max() > high - 0.05  # Uniform: reaches both ends.
  assert np.corrcoef(sigma_x, sigma_y)[0, 1] < 0.05  # Drawn independently.
  iso_x, iso_y, iso_theta = draws['iso']
  np.testing.assert_array_equal(iso_x, iso_y)
  assert np.all(iso_theta == 0)
  # Beta: half below 1 (uniform on [0.5, 1]), half above (uniform on [1, 4]).
  betag = draws['betag']
  assert 0.45 < np.mean(betag < 1) < 0.55 and betag.min() >= 0.5 and betag.max() <= 4
  assert 0.45 < np.mean(draws['betap'] == 1) < 0.55 and draws['betap'].max() <= 2
  small = draws['size'] < 13
  assert draws['cutoff'][small].min() >= math.pi / 3 - 1e-6
  assert draws['cutoff'][~small].min() < math.pi / 3  # Wider range for big kernels.


def test_mixed_kernels_are_valid_and_varied():
  kernels = _draws()['mixed']
  np.testing.assert_allclose(kernels.sum(axis=(1, 2)), 1, atol=1e-5)
  assert np.all(np.isfinite(kernels))
  # Point symmetry (every family is even in (x, y)).
  np.testing.assert_allclose(kernels, kernels[:, ::-1, ::-1], atol=1e-6)
  # Sinc kernels (p 0.1) are the only ones with negative lobes: about 10% of the draws
  # (a sinc with a tiny window may have none, hence the loose lower bound).
  assert 0.06 < np.mean(kernels.min(axis=(1, 2)) < -1e-6) < 0.13
  # Transpose-asymmetric kernels only come from the anisotropic families (p 0.31).
  asymmetric = np.abs(kernels - kernels.transpose(0, 2, 1)).max(axis=(1, 2)) > 1e-4
  assert 0.2 < np.mean(asymmetric) < 0.35


def test_random_family_samplers_use_the_drawn_parameters():
  key = jax.random.key(3)
  sampler = jax.jit(blur_kernels.random_plateau_kernel, static_argnums=(2, 3, 4))
  shape_key, beta_key = jax.random.split(key)
  sigma_x, sigma_y, theta = blur_kernels.draw_gaussian_parameters(shape_key, (0.2, 3.0), False)
  beta = blur_kernels.draw_beta(beta_key, (1.0, 2.0))
  np.testing.assert_allclose(
      sampler(key, 15, (0.2, 3.0), (1.0, 2.0), False),
      _reference(15, lambda x, y: 1 / (_quadratic_form(
          float(sigma_x), float(sigma_y), float(theta))(x, y)**float(beta) + 1)), atol=1e-6)


@pytest.mark.parametrize('height, width', [(24, 31), (96, 90)])
def test_blur_matches_scipy_correlate(height, width):
  """The FFT's correlation against SciPy's direct one in float64, both layouts; 96x90
  as the pipeline's canvas for 64-pixel crops, the FFT length (120) above both padded
  sides (116, 110)."""
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(2, height, width, 3)).astype(np.float32)
  kernels = np.stack([blur_kernels.gaussian_kernel(9, 2.0, 0.7, 0.4),
                      blur_kernels.sinc_kernel(21, 1.3)])
  out = np.asarray(jax.jit(blur_kernels.blur)(images, kernels))
  planar = jax.jit(functools.partial(blur_kernels.blur, channels_first=True))(
      np.moveaxis(images, 3, 1), kernels)
  np.testing.assert_array_equal(np.moveaxis(np.asarray(planar), 1, 3), out)
  for i in range(2):
    for c in range(3):
      # scipy's 'mirror' is torch's 'reflect': the edge pixel is not repeated.
      expected = ndimage.correlate(images[i, :, :, c].astype(np.float64), kernels[i], mode='mirror')
      # Float32 round-off: about 3e-7 measured (XLA's direct convolution: 1.1e-6).
      np.testing.assert_allclose(out[i, :, :, c], expected, atol=2e-6)
