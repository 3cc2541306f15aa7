"""The README's snippets that use an exported generator, run verbatim in a folder of their
own (no srgan_jax import), must give the image that srgan_jax's own upscaler gives."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import skimage

from srgan_jax.inference import exports
from srgan_jax.nn import pretrained
from srgan_jax.nn import upscalers

pytestmark = pytest.mark.system

README = pathlib.Path(__file__).resolve().parents[2] / 'README.md'
SNIPPETS = {'onnx': 'onnxruntime.InferenceSession', 'stablehlo': 'jax.export.deserialize',
            'torch': 'torch.export.load'}


def readme_snippet(marker: str) -> str:
  """The README's one ```python block that contains ``marker``."""
  blocks = [block for block in re.findall(r'```python\n(.*?)```', README.read_text(), re.S)
            if marker in block]
  assert len(blocks) == 1, f'{len(blocks)} README snippets contain {marker!r}'
  assert 'srgan_jax' not in blocks[0] and len(blocks[0].splitlines()) <= 15
  return blocks[0]


@pytest.mark.parametrize('fmt', SNIPPETS)
def test_readme_snippet_super_resolves_like_srgan_jax(tmp_path, fmt):
  missing = exports.missing_packages(fmt)
  if missing:
    pytest.skip(f'{", ".join(missing)} not installed ({exports.extra_hint(fmt)})')
  code = readme_snippet(SNIPPETS[fmt])
  model, variables, config = pretrained.load('cpu_small_gan')
  exports.export(model, variables, config, fmt, str(tmp_path / f'cpu_small_gan{exports.SUFFIXES[fmt]}'),
                 source='cpu_small_gan')
  photo = np.asarray(Image.open(os.path.join(skimage.data_dir, 'chelsea.png')))[90:131, 150:197]
  Image.fromarray(photo).save(tmp_path / 'photo.png')  # 47x41: odd sizes.

  result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, 'PYTHONPATH': ''})
  assert result.returncode == 0, result.stderr
  got = np.asarray(Image.open(tmp_path / 'photo_x4.png')).astype(int)
  expected = upscalers.generator(model, variables).upscale_batch(photo[None])[0].astype(int)
  assert got.shape == expected.shape == (41 * 4, 47 * 4, 3)
  # Equal but where float32 sums of another order round across a half grey level.
  assert np.abs(got - expected).max() <= 1 and np.mean(got != expected) < 1e-3
