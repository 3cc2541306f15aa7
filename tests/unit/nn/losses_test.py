"""Tests for srgan_jax.nn.losses' off-paper terms against formulas written out here."""

import numpy as np
import pytest

from srgan_jax.nn import losses


def _log_sigmoid(x):
  return -np.log1p(np.exp(-x))


def test_relativistic_losses_follow_esrgan():
  rng = np.random.default_rng(0)
  real, fake = rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32)
  real_rel, fake_rel = real - fake.mean(), fake - real.mean()
  expected_d = -np.mean(_log_sigmoid(real_rel)) - np.mean(_log_sigmoid(-fake_rel))
  expected_g = -np.mean(_log_sigmoid(-real_rel)) - np.mean(_log_sigmoid(fake_rel))
  assert float(losses.discriminator_loss(real, fake, 'relativistic')) == pytest.approx(
      expected_d, rel=1e-5)
  assert float(losses.generator_adversarial_loss(fake, real, 'relativistic')) == pytest.approx(
      expected_g, rel=1e-5)


def test_chroma_l1_ignores_gray_changes_and_measures_colour_ones():
  rng = np.random.default_rng(1)
  hr = rng.uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
  gray_change = hr + rng.normal(0, 0.1, (2, 8, 8, 1)).astype(np.float32)  # R, G, B alike.
  assert float(losses.chroma_l1(gray_change, hr)) == pytest.approx(0, abs=1e-6)
  colour_change = hr + np.float32([0.1, 0, 0])  # Red: Cb -0.0169, Cr +0.05.
  assert float(losses.chroma_l1(colour_change, hr)) == pytest.approx(
      (0.0168736 + 0.05) / 2, rel=1e-4)


def test_feature_matching_is_the_mean_l1_over_layers():
  sr = [np.ones((2, 4, 4, 3), np.float32), np.zeros((2, 2, 2, 5), np.float32)]
  hr = [np.zeros((2, 4, 4, 3), np.float32), np.full((2, 2, 2, 5), 3, np.float32)]
  assert float(losses.feature_matching(sr, hr)) == pytest.approx((1 + 3) / 2)
  assert float(losses.pixel_l1(sr[0], hr[0])) == 1.0


def _numpy_artifact_map(sr, hr, sr_ema, window=7):
  """LDL's refined artifact map written out with NumPy loops (images in [-1, 1])."""
  residual = np.abs(hr - sr).sum(-1) / 2
  residual_ema = np.abs(hr - sr_ema).sum(-1) / 2
  pad = window // 2
  out = np.zeros_like(residual)
  for n in range(residual.shape[0]):
    padded = np.pad(residual[n], pad, mode='reflect')
    patch = np.var(residual[n], ddof=1) ** 0.2
    for i in range(residual.shape[1]):
      for j in range(residual.shape[2]):
        out[n, i, j] = patch * np.var(padded[i:i + window, j:j + window], ddof=1)
  out[residual < residual_ema] = 0
  return out[..., None]


def test_artifact_map_follows_ldl():
  rng = np.random.default_rng(0)
  sr, hr, sr_ema = (rng.uniform(-1, 1, (2, 12, 10, 3)).astype(np.float32) for _ in range(3))
  np.testing.assert_allclose(losses.artifact_map(sr, hr, sr_ema),
                             _numpy_artifact_map(sr, hr, sr_ema), rtol=1e-4, atol=1e-7)
  weights = _numpy_artifact_map(sr, hr, sr_ema)
  assert 0 < np.mean(weights == 0) < 1  # The EMA comparison kept some pixels and not others.
  expected = np.mean(weights * np.abs(sr - hr) / 2)
  assert float(losses.ldl_loss(sr, hr, sr_ema)) == pytest.approx(expected, rel=1e-4)


def test_artifact_map_marks_noise_on_flat_regions_not_on_texture():
  """HR: a flat left half, a strongly textured right half. SR adds the same noise
  everywhere; the EMA, a steadier and smoother generator, gives HR blurred (flat
  stays flat, texture is lost). On the flat half the noise is what SR invents (the
  EMA does better): a high map. On the texture, SR is closer to HR than the EMA
  (detail being learned): a low one."""
  rng = np.random.default_rng(1)
  hr = np.zeros((1, 48, 48, 3), np.float32)
  hr[:, :, 24:] = rng.uniform(-0.8, 0.8, (1, 48, 24, 3))
  sr = hr + rng.normal(0, 0.05, hr.shape).astype(np.float32)
  blurred = hr.copy()
  blurred[:, :, 24:] = hr[:, :, 24:].mean()  # The texture's mean: its detail lost.
  weights = np.asarray(losses.artifact_map(sr, hr, blurred))[0, :, :, 0]
  flat, texture = weights[:, :20].mean(), weights[:, 28:].mean()
  assert flat > 20 * texture, (flat, texture)
