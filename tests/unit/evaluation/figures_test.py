"""The Figure 2 comparison: each panel is its method's crop, titled with its scores."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, image_set
from srgan_jax.evaluation import comparison_images
from srgan_jax.evaluation import figures
from srgan_jax.evaluation import metrics
from srgan_jax.evaluation import niqe
from srgan_jax.imaging import degradation
from srgan_jax.imaging import image_io
from srgan_jax.nn import upscalers


def test_panels_are_the_crops_in_order_with_whole_image_scores():
  hr = degradation.modcrop(image_io.load_uint8(image_set('Set5') / 'butterfly.png'), 4)
  lr = degradation.make_lr(hr, 4)[None]
  bicubic = upscalers.bicubic(4).upscale_batch(lr)[0]
  darker = (bicubic // 2).astype(np.uint8)
  crop = comparison_images.Crop('butterfly', 96, 64, 64, 48)
  fig = figures.comparison_figure([(crop, {'bicubic': bicubic, 'darker': darker}, hr)], 4)
  axes = fig.axes
  assert [ax.get_title().split('\n')[0] for ax in axes] == ['bicubic', 'darker', 'HR']
  for ax, image in zip(axes, (bicubic, darker, hr)):
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), image[64:112, 96:160])
  assert f'{metrics.psnr(bicubic, hr, 4):.2f} dB' in axes[0].get_title()
  assert f'NIQE {float(niqe.niqe(hr[None], 4)[0]):.2f}' in axes[2].get_title()


def _compare(*args):
  return subprocess.run([sys.executable, '-m', 'srgan_jax.compare', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu'))


@pytest.mark.system
def test_command_draws_the_figure_and_names_a_missing_image(tmp_path):
  output = tmp_path / 'figure' / 'f.png'
  result = _compare('--model=cpu_small', f'--data={image_set("Set5")}',
                    '--crop=butterfly:96,64,64,48', f'--output={output}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert output.stat().st_size > 10_000
  result = _compare('--model=cpu_small', f'--data={image_set("Set5")}', '--crop=nope:0,0,8,8',
                    f'--output={output}')
  assert result.returncode == 2 and "no image 'nope'" in result.stderr.splitlines()[-1]


@pytest.mark.system
def test_command_refuses_an_unwritable_output_and_missing_flags_before_any_work(tmp_path):
  a_file = tmp_path / 'a_file'
  a_file.write_text('kept')
  result = _compare('--model=cpu_small', f'--data={image_set("Set5")}',
                    '--crop=butterfly:96,64,64,48', f'--output={a_file}/f.png')
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.splitlines()[-1].endswith('is a file, not a folder; choose another --output')
  assert a_file.read_text() == 'kept' and 'Traceback' not in result.stderr
  result = _compare('--model=cpu_small')
  assert result.returncode == 2 and '--data, --crop required' in result.stderr.splitlines()[-1]
  assert 'UserWarning' not in result.stderr  # absl's, for required multi-flags: gone.


def test_save_figure_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
  """Issue 37: plot (and compare) left a 0-byte PNG on a full disk, the old one lost."""
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  target = tmp_path / 'curve.png'
  fig = figure.Figure(figsize=(2, 2))
  fig.add_subplot().plot([0, 1], [1, 0])
  figures.save_figure(fig, target, dpi=50)
  old = target.read_bytes()
  assert old.startswith(b'\x89PNG')
  real_savefig = figure.Figure.savefig

  def full_disk(self, path, **kwargs):
    real_savefig(self, path, **kwargs)
    os.truncate(path, 0)
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(figure.Figure, 'savefig', full_disk)
  with pytest.raises(OSError, match='No space left'):
    figures.save_figure(fig, target, dpi=50)
  assert target.read_bytes() == old and os.listdir(tmp_path) == ['curve.png']
  monkeypatch.undo()
  figures.save_figure(fig, tmp_path / 'curve.pdf', dpi=50)  # The suffix names the format.
  assert (tmp_path / 'curve.pdf').read_bytes().startswith(b'%PDF')
