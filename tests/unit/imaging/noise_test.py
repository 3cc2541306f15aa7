"""Tests for srgan_jax.imaging.noise: the statistics of the Gaussian and Poisson noise,
and the Poisson sampler's distribution against SciPy's."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special
from scipy import stats

from srgan_jax.imaging import noise

KEY = jax.random.key(0)


@functools.cache
def _gaussian():
  return jax.jit(noise.gaussian_noise, static_argnums=1)


@functools.cache
def _poisson():
  return jax.jit(noise.poisson_noise)


def test_gaussian_noise_has_the_requested_std_per_image():
  sigma = np.array([1.0, 5.0, 12.0, 30.0])
  out = np.asarray(_gaussian()(KEY, (4, 64, 64, 3), jnp.asarray(sigma), False))
  # 12288 draws per image: the sample std is within 2% with overwhelming probability.
  np.testing.assert_allclose(out.std(axis=(1, 2, 3)), sigma / 255, rtol=0.02)
  # The sample mean's std is sigma / 255 / sqrt(12288), about 0.009 sigma / 255.
  assert np.all(np.abs(out.mean(axis=(1, 2, 3))) < 0.04 * sigma / 255)
  # Colour: the channels are independent.
  flat = out[3].reshape(-1, 3)
  assert np.abs(np.corrcoef(flat.T) - np.eye(3)).max() < 0.05


def test_grey_gaussian_noise_is_shared_by_the_channels_per_image():
  out = np.asarray(_gaussian()(KEY, (2, 32, 32, 3), 10.0, jnp.array([True, False])))
  np.testing.assert_array_equal(out[0, ..., 0], out[0, ..., 2])
  assert not np.allclose(out[1, ..., 0], out[1, ..., 2])
  np.testing.assert_allclose(out[0].std(), 10 / 255, rtol=0.05)


def test_distinct_value_scale_is_the_next_power_of_two():
  ramp = np.tile(np.arange(256)[None, :, None], (2, 1, 3)) / 255.0  # 256 levels
  three = np.where(np.arange(256) % 3 == 0, 0.2, np.where(np.arange(256) % 3 == 1, 0.6, 0.8))
  three = np.tile(three[None, :, None], (2, 1, 3))  # 3 levels -> 4
  five = np.tile((np.arange(256) % 5)[None, :, None] / 255.0, (2, 1, 3))  # 5 -> 8
  images = jnp.asarray(np.stack([ramp, three, five]), jnp.float32)
  np.testing.assert_array_equal(noise.distinct_value_scale(images), [256, 4, 8])


def _poisson_test_images() -> np.ndarray:
  """Two [2, 128, 128, 3] images: flat halves at 0.2 and 0.8 (level 51 and 204);
  image 0 also has a row of every 8-bit value (256 levels: vals 256), image 1 only
  the two levels and 0.6 (3 levels: vals 4)."""
  images = np.zeros((2, 128, 128, 3), np.float32)
  images[:, :64] = 51 / 255
  images[:, 64:] = 204 / 255
  images[0, :2] = (np.arange(256).reshape(2, 128) / 255)[..., None]
  images[1, 0, :, :] = 153 / 255
  return images


def test_poisson_variance_is_proportional_to_intensity_over_vals():
  images = _poisson_test_images()
  scale = np.array([1.0, 2.0])
  out = np.asarray(_poisson()(KEY, jnp.asarray(images), jnp.asarray(scale),
                              jnp.array([False, False])))
  for i, vals in enumerate((256, 4)):
    for rows, level in ((slice(2, 64), 51 / 255), (slice(64, 128), 204 / 255)):
      patch = out[i, rows]
      expected_variance = scale[i]**2 * level / vals
      # About 23000 draws: the sample variance is within 5% (variance of the
      # variance for Poisson counts of mean >= 0.8 included).
      np.testing.assert_allclose(patch.var(), expected_variance, rtol=0.05)
      assert abs(patch.mean()) < 4 * np.sqrt(expected_variance / patch.size)
      # Noise in multiples of scale / vals: Poisson counts over vals.
      np.testing.assert_allclose(patch / scale[i] * vals + level * vals,
                                 np.round(patch / scale[i] * vals + level * vals), atol=1e-3)


def test_grey_poisson_noise_is_drawn_on_luma_and_shared():
  images = _poisson_test_images()
  images[..., 0] *= 0.5  # Not grey: luma differs from every channel.
  # Same argument shapes as above: one compiled program.
  out = np.asarray(_poisson()(KEY, jnp.asarray(images), jnp.array([1.0, 1.0]),
                              jnp.array([True, True])))
  np.testing.assert_array_equal(out[..., 0], out[..., 1])
  np.testing.assert_array_equal(out[..., 0], out[..., 2])
  luma = np.round((0.2989 * 0.5 * 204 + 0.587 * 204 + 0.114 * 204)) / 255
  np.testing.assert_allclose(out[1, 64:, :, 0].var(), luma / 4, rtol=0.05)


def test_random_noise_is_jittable_and_clipped():
  images = jnp.full((8, 16, 16, 3), 0.5)
  # Every argument given, so that both calls share one compiled program.
  draw = jax.jit(noise.random_noise)
  noisy = draw(KEY, images, 0.5, (1.0, 30.0), (0.05, 3.0), 0.4)
  assert noisy.shape == images.shape
  assert float(noisy.min()) >= 0 and float(noisy.max()) <= 1
  np.testing.assert_array_equal(noisy, draw(KEY, images, 0.5, (1.0, 30.0), (0.05, 3.0), 0.4))
  # Gaussian only at sigma 10: the std is 10 / 255.
  gaussian = draw(KEY, images, 1.0, (10.0, 10.0), (0.05, 3.0), 0.4)
  np.testing.assert_allclose(np.std(gaussian - images), 10 / 255, rtol=0.05)


# Rates the exact search covers, and rates of the Cornish-Fisher quantile (10 and up).
EXACT_RATES = (0.0, 0.05, 0.8, 3.2, 7.0, 9.99)
APPROXIMATE_RATES = (10.0, 10.5, 16.0, 51.2, 204.8, 256.0)


@functools.cache
def _count_distributions(grid: int = 2**18) -> dict[float, np.ndarray]:
  """The distribution of ``poisson_counts`` at each rate, exactly: its counts at
  ``grid`` equally spaced uniforms (midpoints), the normal quantiles from SciPy."""
  u = (np.arange(grid) + 0.5) / grid
  z = special.ndtri(u)
  rates = np.asarray(EXACT_RATES + APPROXIMATE_RATES, np.float32)[:, None]
  counts = jax.jit(noise.poisson_counts)(
      jnp.asarray(np.broadcast_to(u, (len(rates), grid)), jnp.float32),
      jnp.asarray(np.broadcast_to(z, (len(rates), grid)), jnp.float32),
      jnp.asarray(np.broadcast_to(rates, (len(rates), grid))))
  counts = np.asarray(counts).astype(np.int64)
  assert np.all(counts >= 0) and np.all(counts == np.asarray(counts, np.float32))
  return {float(rate): np.bincount(row, minlength=600)[:600] / grid
          for rate, row in zip(rates[:, 0], counts)}


@pytest.mark.parametrize('rate', EXACT_RATES + APPROXIMATE_RATES)
def test_poisson_counts_follow_the_poisson_distribution(rate):
  """Total variation from SciPy's Poisson pmf: below rate 10 only what a grid of 2^18
  uniforms resolves (exact inversion); from 10, within the Cornish-Fisher quantile's
  0.21% (noise.poisson_counts' docstring), and its mean and variance as stated there."""
  distribution = _count_distributions()[np.float32(rate).item()]
  counts = np.arange(len(distribution))
  pmf = stats.poisson.pmf(counts, np.float32(rate).item())
  total_variation = 0.5 * np.abs(distribution - pmf).sum()
  mean = np.sum(distribution * counts)
  variance = np.sum(distribution * counts**2) - mean**2
  if rate < noise.EXACT_BELOW:
    assert total_variation < 1e-4, total_variation
    assert abs(mean - rate) < 1e-3 and abs(variance - rate) < 2e-3 + 1e-3 * rate
  else:
    assert total_variation < 0.0025, total_variation
    assert abs(mean - rate) < 1e-3 and 0 <= variance - rate < 0.09, (mean, variance)


def test_random_noise_channels_first_is_the_same_noise():
  """The Real-ESRGAN pipeline's layout (channel planes) draws the same noise."""
  images = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (8, 12, 10, 3)), jnp.float32)
  draw = jax.jit(noise.random_noise, static_argnums=(2, 3, 4, 5, 6))
  interleaved = draw(KEY, images, 0.5, (1.0, 30.0), (0.05, 3.0), 0.4, False)
  planar = draw(KEY, jnp.moveaxis(images, 3, 1), 0.5, (1.0, 30.0), (0.05, 3.0), 0.4, True)
  np.testing.assert_array_equal(np.moveaxis(np.asarray(planar), 1, 3), interleaved)
