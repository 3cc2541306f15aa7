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
