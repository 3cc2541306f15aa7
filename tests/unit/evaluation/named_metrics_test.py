"""Tests for evaluation/named_metrics.py: the metrics beside PSNR/SSIM, by name."""

import numpy as np
from PIL import Image
import pytest
import scipy.ndimage

from conftest import image_set
from srgan_jax.evaluation import metrics
from srgan_jax.evaluation import named_metrics


def test_metric_names(tmp_path, monkeypatch):
  monkeypatch.setenv('SRGAN_JAX_CACHE', str(tmp_path))  # No LPIPS weights.
  assert list(named_metrics.metric_fns(['psnr', 'ssim', 'niqe', 'lpips', 'lpips_vgg'], 4)) == [
      'niqe']
  with pytest.raises(ValueError, match=r"unknown metrics \['fid'\]"):
    named_metrics.metric_fns(['niqe', 'fid'], 4)


def test_detail_metrics_see_blur_invented_detail_and_colour_noise():
  hr = np.asarray(Image.open(image_set('Set5') / 'butterfly.png').convert('RGB'))
  rng = np.random.default_rng(0)
  blurred = scipy.ndimage.uniform_filter(hr.astype(np.float64), size=(3, 3, 1))
  luma_noise = hr + rng.normal(0, 8, hr.shape[:2])[..., None]  # Same on R, G, B: gray noise.
  colour_noise = hr + rng.normal(0, 8, hr.shape)
  fns = named_metrics.metric_fns(['luma_detail', 'chroma_detail'], scale=4)
  def scores(sr):
    sr = np.clip(np.round(sr), 0, 255).astype(np.uint8)[None]
    return {name: float(fn(sr, hr[None])[0]) for name, fn in fns.items()}
  assert scores(hr) == {'luma_detail': 1.0, 'chroma_detail': 1.0}
  assert scores(blurred)['luma_detail'] < 0.7 and scores(blurred)['chroma_detail'] < 1
  assert scores(luma_noise)['luma_detail'] > 1.3
  assert scores(luma_noise)['chroma_detail'] < 1.3 < scores(colour_noise)['chroma_detail']
  gray = np.repeat(hr[..., :1], 3, axis=-1)[None]  # No chroma: left out of the mean.
  assert np.isnan(fns['chroma_detail'](gray, gray)[0])


def _flat_pixels(plane):
  """Where the plane's local standard deviation is below the threshold, away from a
  7-pixel border: the flat pixels that the metrics score at scale 4."""
  plane = plane.astype(np.float64)
  mean = scipy.ndimage.uniform_filter(plane, metrics.FLAT_WINDOW)
  std = np.sqrt(np.maximum(scipy.ndimage.uniform_filter(plane**2, metrics.FLAT_WINDOW)
                           - mean**2, 0))
  flat = np.zeros(plane.shape, bool)
  flat[7:-7, 7:-7] = std[7:-7, 7:-7] < metrics.FLAT_THRESHOLD
  return flat


def test_texture_metrics_see_grain_on_flat_regions_and_blur_on_textured_ones():
  hr = np.asarray(Image.open(image_set('Set5') / 'baby.png').convert('RGB'))
  flat = _flat_pixels(metrics.rgb_to_y(hr))
  grain = np.random.default_rng(0).normal(0, 4, hr.shape[:2])
  on_flat = hr + np.where(flat, grain, 0)[..., None]  # Gray grain, on flat pixels only.
  blurred = scipy.ndimage.uniform_filter(hr.astype(np.float64), size=(3, 3, 1))
  names = ['flat_texture', 'textured_detail']
  fns = named_metrics.metric_fns(names, scale=4)
  def scores(sr, reference=hr):
    sr = np.clip(np.round(sr), 0, 255).astype(np.uint8)[None]
    return [float(fns[name](sr, reference[None])[0]) for name in names]
  assert scores(hr) == [1.0, 1.0]
  grained, blurred = scores(on_flat), scores(blurred)
  assert grained[0] > 2 and abs(grained[1] - 1) < 0.1
  assert blurred[1] < 0.7
  gray = hr[..., 1]  # Single-channel images: their own intensity.
  assert scores(gray, gray) == [1.0, 1.0]
  assert scores(np.where(_flat_pixels(gray), gray + grain, gray), gray)[0] > 2
  # No flat pixels (noise everywhere), or no detail on them (a constant image): left out.
  noise = np.random.default_rng(1).integers(0, 256, hr.shape, dtype=np.uint8)
  assert np.isnan(fns['flat_texture'](noise[None], noise[None])[0])
  constant = np.full_like(hr, 128)
  assert np.isnan(fns['flat_texture'](noise[None], constant[None])[0])
  assert np.isnan(fns['textured_detail'](noise[None], constant[None])[0])
