"""Tests for evaluation/named_metrics.py: the metrics beside PSNR/SSIM, by name."""

import numpy as np
from PIL import Image
import pytest
import scipy.ndimage

from conftest import image_set
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
