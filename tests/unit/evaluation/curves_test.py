"""Learning-curve plots from a tiny run's TensorBoard events."""

import os
import struct
import subprocess
import sys

from conftest import REPO
import numpy as np
from PIL import Image
import pytest
import skimage.data

from srgan_jax.evaluation import curves
from srgan_jax.evaluation import metrics
from srgan_jax.evaluation import scoring
from srgan_jax.imaging import bicubic
from srgan_jax.nn import upscalers
from srgan_jax.training import model_reference


# A 112x104 crop of scikit-image's cat photograph: fur and the blurred room behind it.
CHELSEA_CROP = np.s_[40:152, 340:444]


def _bicubic_reference(folder):
  """Mean Y PSNR and SSIM of bicubic x4 on the folder's images, written out here."""
  scores = []
  for path in sorted(folder.glob('*.png')):
    with Image.open(path) as image:
      hr = np.asarray(image)  # 32x40: already a multiple of 4.
    sr = bicubic.imresize(bicubic.imresize(hr, 0.25), 4)
    scores.append((metrics.psnr(sr, hr, 4), metrics.ssim(sr, hr, 4)))
  return np.mean(scores, axis=0)


def test_events_hold_the_curves_and_the_bicubic_baseline(tiny_run):
  workdir, eval_folder = tiny_run
  scalars = curves.read_scalars(workdir)
  learning = curves.learning_curves(scalars)
  assert list(learning) == ['eval'] and sorted(learning['eval']) == ['psnr', 'ssim']
  steps, psnrs = learning['eval']['psnr']
  np.testing.assert_array_equal(steps, [2, 4])
  # The last point is the final generator's score, as evaluate measures it.
  final = scoring.evaluate_beside_bicubic(
      upscalers.generator(*model_reference.load(
          model_reference.from_flags('srgan', str(workdir)))[:2]),
      [str(eval_folder)])['eval']
  assert [float(psnrs[-1]), float(learning['eval']['ssim'][1][-1])] == pytest.approx(
      [final['psnr'], final['ssim']], rel=1e-6)
  # Training logged the bicubic baseline at each evaluation; it is bicubic's score.
  np.testing.assert_array_equal(scalars['eval/eval/bicubic_psnr'][0], [2, 4])
  baseline = curves.bicubic_baselines(scalars, ['eval'], curves.read_config(workdir))
  assert [baseline['eval']['psnr'], baseline['eval']['ssim']] == pytest.approx(
      _bicubic_reference(eval_folder), rel=1e-6)
  # Without those scalars (runs from before them), it is computed from the folder.
  older = {tag: curve for tag, curve in scalars.items() if 'bicubic' not in tag}
  recomputed = curves.bicubic_baselines(older, ['eval'], curves.read_config(workdir))['eval']
  assert [recomputed['psnr'], recomputed['ssim']] == pytest.approx(
      _bicubic_reference(eval_folder), rel=1e-6)
  assert curves.bicubic_baselines(older, ['eval'], {}) == {}  # No folder known: no line.


def test_plot_draws_each_curve_and_its_baseline(tiny_run, tmp_path):
  workdir, eval_folder = tiny_run
  output = tmp_path / 'curves' / 'curve.png'
  fig = curves.plot_workdir(workdir, output)
  with Image.open(output) as image:
    assert image.size == (11 * 120, int(4.2 * 120))
  learning = curves.learning_curves(curves.read_scalars(workdir))['eval']
  reference = _bicubic_reference(eval_folder)
  for ax, metric, baseline in zip(fig.axes, curves.METRICS, reference):
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_array_equal(lines['eval'].get_xdata(), learning[metric][0])
    np.testing.assert_array_equal(lines['eval'].get_ydata(), learning[metric][1])
    assert lines['eval bicubic'].get_ydata()[0] == pytest.approx(baseline, rel=1e-6)
  with pytest.raises(ValueError, match=r"no evaluations of \['Set5'\]"):
    curves.plot_workdir(workdir, output, sets=['Set5'])


def _python(*args):
  result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.system
def test_command_writes_the_png(tiny_run, tmp_path):
  output = tmp_path / 'curve.png'
  _python('-m', 'srgan_jax.plot', f'--workdir={tiny_run[0]}', f'--output={output}')
  assert output.stat().st_size > 10_000


@pytest.mark.system
def test_plotting_leaves_tensorflow_out(tiny_run, tmp_path):
  _python('-c', 'import sys; from srgan_jax.evaluation import curves; '
          f'curves.plot_workdir({str(tiny_run[0])!r}, {str(tmp_path / "c.png")!r}); '
          'assert "tensorflow" not in sys.modules')


@pytest.fixture(scope='module')
def tiny_gan_run(tmp_path_factory):
  """2 SRResNet then 4 SRGAN steps with LDL, logged every 2, NIQE and the texture ratios on
  one 112x104 crop of a photograph with flat and textured regions."""
  from conftest import tiny_run_config, write_tiny_image_sets  # pylint: disable=g-import-not-at-top
  from srgan_jax.training import loop  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('tiny_gan_run')
  write_tiny_image_sets(root)
  (root / 'bench').mkdir()
  Image.fromarray(skimage.data.chelsea()[CHELSEA_CROP]).save(root / 'bench' / 'cat.png')
  config = tiny_run_config(root, srresnet_steps=2, srgan_steps=4)
  config.eval_every_steps = 2
  config.eval_folders = (str(root / 'bench'),)
  config.eval_metrics = ('niqe', 'flat_texture', 'textured_detail')
  config.srgan.ldl_weight = 1.0  # Its loss is drawn too.
  loop.train_and_evaluate(config, str(root / 'workdir'))
  return root / 'workdir'


def test_losses_of_options_left_off_are_not_curves():
  """ldl_loss is logged as 0 when srgan.ldl_weight is 0: no line at 0 on a log axis."""
  steps = np.array([2, 4])
  scalars = {'train/srgan/content_loss': (steps, np.array([0.1, 0.2])),
             'train/srgan/ldl_loss': (steps, np.zeros(2)),
             'train/srgan/d_fake': (steps, np.zeros(2))}
  assert set(curves.gan_curves(scalars)) == {'content_loss', 'd_fake'}
  scalars['train/srgan/ldl_loss'] = (steps, np.array([0.0, 0.3]))
  assert set(curves.gan_curves(scalars)) == {'content_loss', 'ldl_loss', 'd_fake'}


def test_plot_draws_the_srgan_phase(tiny_gan_run, tmp_path):
  output = tmp_path / 'curve.png'
  fig = curves.plot_workdir(tiny_gan_run, output)
  with Image.open(output) as image:
    assert image.size == (11 * 120, int(8.4 * 120))
  scalars = curves.read_scalars(tiny_gan_run)
  psnr_ax, _, losses_ax, outputs_ax, niqe_ax, texture_ax = fig.axes
  assert [line.get_label() for line in psnr_ax.get_lines()][0] == 'bench'
  for ax, names in ((losses_ax, curves.GAN_LOSSES), (outputs_ax, curves.GAN_OUTPUTS)):
    lines = {line.get_label(): line for line in ax.get_lines()}
    for name in names:
      steps, values = scalars[f'train/srgan/{name}']
      np.testing.assert_array_equal(steps, [4, 6])
      np.testing.assert_array_equal(lines[name.replace('_', ' ')].get_ydata(), values)
  niqe_lines = {line.get_label(): line for line in niqe_ax.get_lines()}
  np.testing.assert_array_equal(niqe_lines['bench'].get_ydata(), scalars['eval/bench/niqe'][1])
  assert niqe_lines['bench bicubic'].get_ydata()[0] == pytest.approx(
      scalars['eval/bench/bicubic_niqe'][1][-1])
  # Each texture ratio as training wrote it, at every evaluation; HR's level beside them.
  texture_lines = {line.get_label(): line for line in texture_ax.get_lines()}
  for metric, label in (('flat_texture', 'bench flat'), ('textured_detail', 'bench textured')):
    steps, values = scalars[f'eval/bench/{metric}']
    np.testing.assert_array_equal(steps, [2, 4, 6])
    assert np.all(np.isfinite(values))  # The crop has both kinds of pixels.
    np.testing.assert_array_equal(texture_lines[label].get_xdata(), steps)
    np.testing.assert_array_equal(texture_lines[label].get_ydata(), values)
  assert list(texture_lines['HR'].get_ydata()) == [1, 1]


@pytest.mark.parametrize('damage', ['garbled length', 'zeroed block'])
def test_an_events_file_damaged_mid_way_is_one_line_naming_it(tiny_run, tmp_path, damage):
  """Before: a protobuf DecodeError traceback, or a length followed into garbage."""
  (events,) = sorted(tiny_run[0].glob('events.out.tfevents.*'))
  data = bytearray(events.read_bytes())
  (first_length,) = struct.unpack('<Q', data[:8])
  second = 12 + first_length + 4  # Where the second record starts.
  if damage == 'garbled length':
    data[second:second + 8] = b'\xff' * 8
  else:
    data[second:second + 4096] = bytes(min(4096, len(data) - second))
  (tmp_path / events.name).write_bytes(bytes(data))
  with pytest.raises(curves.DamagedRunFileError,
                     match=rf'TensorBoard events file {tmp_path / events.name} is damaged at '
                           rf'byte {second} of {len(data)} \(a record length fails its CRC\): '
                           'move it out of the workdir'):
    curves.read_scalars(tmp_path)
  (tmp_path / events.name).write_bytes(events.read_bytes()[:second + 20])  # Cut short: read.
  assert curves.read_scalars(tmp_path) is not None


@pytest.mark.parametrize('content, pattern', [
    ('[1, 2]', r'config.json holds a list, not a config: training writes it'),
    ('{"scale": 4, "eval_fo', r'config.json is not valid JSON \(.*\): training writes it'),
])
def test_a_config_json_that_is_not_a_config_is_one_line_naming_it(tmp_path, content, pattern):
  """Before: AttributeError ('list' object has no attribute 'get') or a JSONDecodeError
  that did not name the file, from `plot`."""
  (tmp_path / 'config.json').write_text(content)
  with pytest.raises(curves.DamagedRunFileError, match=rf'{tmp_path}/' + pattern):
    curves.read_config(tmp_path)


def test_a_json_lines_summary_that_is_not_scalars_is_one_line_naming_it(tmp_path):
  """A run without tensorflow logs JSON lines; one that is JSON but not a scalar was a
  KeyError or TypeError. A last line cut short (a run still writing) is skipped."""
  summary = tmp_path / 'summaries.1.000000.jsonl'
  summary.write_text('{"step": 2, "tag": "eval/a/psnr", "value": 30.5}\n{"step": 4, "ta')
  steps, values = curves.read_scalars(tmp_path)['eval/a/psnr']
  assert list(steps) == [2] and list(values) == [30.5]
  summary.write_text('{"step": 2, "tag": "eval/a/psnr", "value": 30.5}\n[1, 2]\n')
  with pytest.raises(curves.DamagedRunFileError,
                     match=rf"{summary} holds a line that is not a scalar \('\[1, 2\]'\)"):
    curves.read_scalars(tmp_path)
