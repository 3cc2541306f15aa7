"""Tests for evaluation/scoring.py and the evaluate command: the published bicubic
baseline, the library, the CLI."""

import dataclasses
import errno
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from conftest import REPO, image_set, write_blocky_images
from srgan_jax.evaluation import metrics
from srgan_jax.evaluation import niqe
from srgan_jax.evaluation import results_table
from srgan_jax.evaluation import scoring
from srgan_jax.imaging import bicubic
from srgan_jax.imaging import degradation
from srgan_jax.imaging import image_io
from srgan_jax.nn import upscalers
from srgan_jax.runtime import errors


# Bicubic x4, Y channel, 4-pixel border (EDSR/RCAN tables; datasets/README.md).
PUBLISHED_BICUBIC_X4 = {
    'Set5': (28.42, 0.8104),
    'Set14': (26.00, 0.7027),
    'BSD100': (25.96, 0.6675),
}


def _check_published(name, result):
  psnr, ssim = PUBLISHED_BICUBIC_X4[name]
  assert result['psnr'] == pytest.approx(psnr, abs=0.02)
  assert result['ssim'] == pytest.approx(ssim, abs=0.002)


def test_bicubic_baseline_reproduces_published_numbers():
  folders = [image_set(name) for name in PUBLISHED_BICUBIC_X4]
  results = scoring.evaluate_sets(upscalers.bicubic(4), folders)
  print('\n' + results_table.format_table(results))
  assert list(results) == list(PUBLISHED_BICUBIC_X4)
  assert [result['images'] for result in results.values()] == [5, 14, 100]
  for name, result in results.items():
    _check_published(name, result)


@pytest.mark.system
def test_cli_writes_json_and_images(tmp_path):
  output = tmp_path / 'results.json'
  command = [sys.executable, '-m', 'srgan_jax.evaluate', '--model=bicubic', '--scale=4',
             f'--data={image_set("Set5")}', f'--output={output}', f'--save_dir={tmp_path}']
  # Default metrics; no LPIPS weights in this cache: one line says it is skipped.
  completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True,
                             env=dict(os.environ, SRGAN_JAX_CACHE=str(tmp_path / 'cache')))
  assert 'Set5' in completed.stdout and 'PSNR' in completed.stdout and 'NIQE' in completed.stdout
  skipped = [line for line in completed.stderr.splitlines() if 'Skipping' in line]
  assert len(skipped) == 1 and 'python -m srgan_jax.lpips import' in skipped[0], skipped
  results = json.loads(output.read_text())
  assert list(results) == ['Set5'] and results['Set5']['images'] == 5
  assert list(results['Set5']) == ['psnr', 'ssim', 'niqe', 'luma_detail', 'flat_texture',
                                    'textured_detail', 'images', 'bias', 'failed', 'folder']
  assert results['Set5']['folder'] == str(image_set('Set5'))
  _check_published('Set5', results['Set5'])
  # NIQE of the bicubic images it saved, 4-pixel border shaved (one at a time: sizes differ).
  saved = [image_io.load_uint8(path) for path in sorted((tmp_path / 'Set5').glob('*.png'))]
  expected = np.mean([niqe.niqe(image[None], shave=4)[0] for image in saved])
  assert results['Set5']['niqe'] == pytest.approx(expected, abs=1e-6)
  saved = sorted(path.name for path in (tmp_path / 'Set5').iterdir())
  expected = [path.stem + '.png'
              for path in image_io.image_files(image_set('Set5'), recursive=False)]
  assert saved == expected


@pytest.mark.system
def test_importing_evaluate_leaves_tensorflow_out():
  code = 'import sys, srgan_jax.evaluate; assert "tensorflow" not in sys.modules'
  subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True)


def _write_folder(folder):
  """Images of sizes not multiple of 4 in every accepted format, one grayscale, a stray file."""
  rng = np.random.default_rng(0)

  def smooth(height, width, *channels):
    noise = rng.uniform(0, 255, (height // 4 + 1, width // 4 + 1, *channels))
    return np.clip(bicubic.imresize(noise, 4)[:height, :width], 0, 255).astype(np.uint8)

  Image.fromarray(smooth(35, 42, 3)).save(folder / 'a.png')
  Image.fromarray(smooth(30, 45), 'L').save(folder / 'b.png')
  Image.fromarray(smooth(40, 29, 3)).save(folder / 'c.bmp')
  (folder / 'notes.txt').write_text('not an image')


def test_evaluate_folder_crops_scores_and_saves(tmp_path):
  _write_folder(tmp_path)
  seen = []
  bicubic_x4 = upscalers.bicubic(4)

  def upscale_batch(lr):
    seen.append(lr.shape)
    return bicubic_x4.batch_fn(lr)

  result = scoring.evaluate_folder(dataclasses.replace(bicubic_x4, batch_fn=upscale_batch),
                                   tmp_path, save_dir=tmp_path / 'sr')
  # 35x42 -> 32x40, 30x45 -> 28x44 (kept single-channel), 40x29 -> 40x28.
  assert seen == [(1, 8, 10, 3), (1, 7, 11, 1), (1, 10, 7, 3)]
  assert result['images'] == 3
  psnrs, ssims = [], []
  for name in ('a.png', 'b.png', 'c.bmp'):
    with Image.open(tmp_path / name) as image:
      hr = np.asarray(image)
    hr = hr[:hr.shape[0] // 4 * 4, :hr.shape[1] // 4 * 4]
    sr = bicubic.imresize(bicubic.imresize(hr, 0.25), 4)
    with Image.open(tmp_path / 'sr' / (name.split('.')[0] + '.png')) as saved:
      np.testing.assert_array_equal(np.asarray(saved), sr)
    psnrs.append(metrics.psnr(sr, hr, 4))
    ssims.append(metrics.ssim(sr, hr, 4))
  assert result['psnr'] == pytest.approx(np.mean(psnrs), abs=1e-12)
  assert result['ssim'] == pytest.approx(np.mean(ssims), abs=1e-12)


def test_evaluate_folder_rejects_wrong_output(tmp_path):
  _write_folder(tmp_path)
  bicubic_x4 = upscalers.bicubic(4)
  with pytest.raises(ValueError, match='expected uint8'):
    scoring.evaluate_folder(
        dataclasses.replace(bicubic_x4, batch_fn=upscalers.bicubic(2).batch_fn), tmp_path)
  with pytest.raises(ValueError, match='expected uint8'):
    scoring.evaluate_folder(dataclasses.replace(
        bicubic_x4, batch_fn=lambda lr: bicubic_x4.batch_fn(lr.astype(float))), tmp_path)
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(FileNotFoundError):
    scoring.evaluate_folder(bicubic_x4, empty)


def test_metric_fns_score_same_size_batches(tmp_path):
  _write_folder(tmp_path)
  calls = []

  def mean_difference(sr, hr):
    calls.append(sr.shape)
    return np.mean(np.abs(sr.astype(float) - hr), axis=(1, 2, 3))

  result = scoring.evaluate_folder(upscalers.bicubic(4), tmp_path,
                                   metric_fns={'l1': mean_difference}, batch_size=2)
  assert calls == [(1, 32, 40, 3), (1, 28, 44, 1), (1, 40, 28, 3)]
  expected = []
  for name in ('a.png', 'b.png', 'c.bmp'):
    hr = degradation.modcrop(image_io.load_uint8(tmp_path / name), 4)
    sr = bicubic.imresize(bicubic.imresize(hr, 0.25), 4)
    expected.append(np.mean(np.abs(sr.astype(float) - hr)))
  assert list(result) == ['psnr', 'ssim', 'l1', 'images', 'bias', 'failed']
  assert result['l1'] == pytest.approx(np.mean(expected), abs=1e-12)


def test_evaluate_beside_bicubic_scores_both_alike(tmp_path, monkeypatch, capsys):
  from conftest import tiny_quickstart_config  # pylint: disable=g-import-not-at-top
  from srgan_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  from srgan_jax.training import model_reference  # pylint: disable=g-import-not-at-top
  from srgan_jax.training import steps  # pylint: disable=g-import-not-at-top

  config = tiny_quickstart_config()
  generator, _ = steps.create_states(config, 'srresnet')
  variables = {'params': generator.params, 'batch_stats': generator.batch_stats}
  monkeypatch.setattr(checkpointing, 'load_generator',
                      lambda *unused: (steps.create_generator(config), variables, config))
  folder = tmp_path / 'bench'
  folder.mkdir()
  rng = np.random.default_rng(3)
  smooth = bicubic.imresize(rng.uniform(0, 255, (29, 27, 3)), 4)[:112, :104]
  Image.fromarray(np.clip(smooth, 0, 255).astype(np.uint8)).save(folder / 'a.png')
  upscaler = upscalers.generator(
      *model_reference.load(model_reference.from_flags('srgan', 'unused'))[:2])
  results = scoring.evaluate_beside_bicubic(upscaler, [folder], metric_names=('niqe',))
  assert list(results['bench']) == ['psnr', 'ssim', 'niqe', 'images', 'bias', 'failed', 'folder',
                                    'bicubic']
  baseline = scoring.evaluate_folder(upscalers.bicubic(4), folder,
                                     metric_fns={'niqe': lambda sr, hr: niqe.niqe(sr, 4)})
  assert results['bench']['bicubic'] == {k: v for k, v in baseline.items()
                                         if k not in ('images', 'failed')}
  assert 'bicubic NIQE' in capsys.readouterr().out


def test_evaluate_folder_skips_unscorable_files_by_name(tmp_path):
  _write_folder(tmp_path)
  (tmp_path / 'zero.png').write_bytes(b'')
  Image.fromarray(np.zeros((18, 30, 3), np.uint8)).save(tmp_path / 'small.png')
  result = scoring.evaluate_folder(upscalers.bicubic(4), tmp_path)
  assert result['images'] == 3
  assert [message.split(':')[0] for message in result['failed']] == [
      str(tmp_path / 'small.png'), str(tmp_path / 'zero.png')]
  assert 'too small to score at x4: both sides must be at least 19' in result['failed'][0]


def test_sets_in_a_bucket_score_as_local_ones(tmp_path):
  """An evaluation set on gs:// (a fake bucket): before, pathlib turned gs://b/Set5
  into gs:/b/Set5 and the set was never scored."""
  from conftest import fake_bucket  # pylint: disable=g-import-not-at-top
  write_blocky_images(tmp_path / 'Bench', 2, (48, 40), seed=4)
  local = scoring.evaluate_sets(upscalers.bicubic(4), [tmp_path / 'Bench'])
  with fake_bucket(tmp_path):
    remote = scoring.evaluate_sets(upscalers.bicubic(4), ['gs://bucket/Bench'])
    assert [str(path) for path in image_io.image_files('gs://bucket/Bench', recursive=False)] == [
        'gs://bucket/Bench/img00.png', 'gs://bucket/Bench/img01.png']
  assert list(remote) == ['Bench'] and remote['Bench']['images'] == 2
  # The same scores; each names the folder it read.
  assert remote['Bench'].pop('folder') == 'gs://bucket/Bench'
  assert local['Bench'].pop('folder') == str(tmp_path / 'Bench')
  assert remote == local


def test_evaluate_accepts_a_set_in_a_bucket(tmp_path):
  """The evaluate command's check of --data: before, gs://bucket/Bench became
  gs:/bucket/Bench (pathlib) and was refused as missing."""
  import types  # pylint: disable=g-import-not-at-top
  from conftest import fake_bucket  # pylint: disable=g-import-not-at-top
  from srgan_jax import evaluate  # pylint: disable=g-import-not-at-top
  from srgan_jax.runtime import errors  # pylint: disable=g-import-not-at-top
  write_blocky_images(tmp_path / 'Bench', 1, (48, 40), seed=4)
  options = types.SimpleNamespace(scale=4, step=None, workdir=None, output=None,
                                  save_dir=None, compare=False, crop=[], zoom=1, metrics=[],
                                  tile=evaluate.SCORING_TILE, degrade=None, lr_data=None)
  with fake_bucket(tmp_path):
    evaluate._check_flags(  # pylint: disable=protected-access
        types.SimpleNamespace(**vars(options), data=['gs://bucket/Bench']), 'bicubic')
    with pytest.raises(errors.ConfigError, match='no folder gs://bucket/Missing'):
      evaluate._check_flags(  # pylint: disable=protected-access
          types.SimpleNamespace(**vars(options), data=['gs://bucket/Missing']), 'bicubic')


def test_a_set_whose_images_are_all_in_subfolders_says_they_are_not_searched(tmp_path):
  """Before: "no image to score in X (0 skipped; looked for ...)", nothing more."""
  for name in ('HR', 'LR'):
    (tmp_path / 'set' / name).mkdir(parents=True)
    Image.new('RGB', (32, 32)).save(tmp_path / 'set' / name / 'a.png')
  (tmp_path / 'set' / 'empty').mkdir()
  with pytest.raises(scoring.NoImagesError) as raised:
    scoring._read_set(tmp_path / 'set', 4)  # pylint: disable=protected-access
  assert str(raised.value).endswith('; its subfolders are not searched, and HR, LR hold '
                                    'images: name that folder instead')
  assert image_io.subfolders_note(tmp_path / 'set' / 'HR') == ''
def _sr_of(path, scale=4):
  """The bicubic SR image evaluate makes of an HR file: modcrop, MATLAB down, up."""
  hr = degradation.modcrop(image_io.load_uint8(path), scale)
  return bicubic.imresize(degradation.make_lr(hr, scale), scale)


def test_a_png_beside_a_bmp_in_one_set_saves_two_sr_images_each_its_own(tmp_path):
  """Issue 37: a.png beside a.jpg or a.bmp: both SR images went to a.png, the second
  over the first (a.bmp here: lossless, so the pixels can be compared exactly)."""
  rng = np.random.default_rng(5)
  Image.fromarray(rng.integers(0, 256, (32, 36, 3), dtype=np.uint8)).save(tmp_path / 'a.png')
  Image.fromarray(rng.integers(0, 256, (36, 32, 3), dtype=np.uint8)).save(tmp_path / 'a.bmp')
  result = scoring.evaluate_folder(upscalers.bicubic(4), tmp_path, save_dir=tmp_path / 'sr',
                                   compare_dir=tmp_path / 'sr' / 'compare')
  assert result['images'] == 2 and 'not_written' not in result
  assert sorted(path.name for path in (tmp_path / 'sr').glob('*.png')) == ['a.bmp.png', 'a.png']
  for hr_name, sr_name in (('a.png', 'a.png'), ('a.bmp', 'a.bmp.png')):
    np.testing.assert_array_equal(image_io.load_uint8(tmp_path / 'sr' / sr_name),
                                  _sr_of(tmp_path / hr_name))
  assert sorted(path.name for path in (tmp_path / 'sr' / 'compare').iterdir()) == [
      'a.bmp.png', 'a.png']


def test_sr_images_never_go_through_a_symlink_onto_an_hr_image(tmp_path):
  """Issue 37: save_dir/<set>/a.png a symlink to the set's a.png: the HR image was
  overwritten by its SR image."""
  hr_folder = tmp_path / 'Set'
  hr_folder.mkdir()
  _write_folder(hr_folder)
  hr_bytes = (hr_folder / 'a.png').read_bytes()
  save_dir = tmp_path / 'sr'
  save_dir.mkdir()
  (save_dir / 'a.png').symlink_to(hr_folder / 'a.png')
  scoring.evaluate_folder(upscalers.bicubic(4), hr_folder, save_dir=save_dir)
  assert (hr_folder / 'a.png').read_bytes() == hr_bytes
  assert not (save_dir / 'a.png').is_symlink()
  np.testing.assert_array_equal(image_io.load_uint8(save_dir / 'a.png'),
                                _sr_of(hr_folder / 'a.png'))
  # A save_dir that is the set's folder through a symlink: refused before any write.
  (tmp_path / 'link').symlink_to(hr_folder)
  with pytest.raises(errors.UserError, match=r"is the set's own folder .*choose another "
                     '--save_dir'):
    scoring.evaluate_folder(upscalers.bicubic(4), hr_folder, save_dir=tmp_path / 'link')
  assert (hr_folder / 'a.png').read_bytes() == hr_bytes


def test_sr_images_that_cannot_be_written_leave_the_set_scored_and_say_so(tmp_path,
                                                                         monkeypatch):
  """Issue 37: on a full disk evaluate --save_dir reported the set "not scored" although
  it was; and the file being written is not left half-written."""
  _write_folder(tmp_path)
  expected = scoring.evaluate_folder(upscalers.bicubic(4), tmp_path)
  real_save = Image.Image.save

  def full_disk(image, target, *args, **kwargs):
    real_save(image, target, *args, **kwargs)
    with open(target, 'r+b') as file:  # Half of it on disk, then ENOSPC.
      file.truncate(100)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(Image.Image, 'save', full_disk)
  results = scoring.evaluate_sets(upscalers.bicubic(4), [tmp_path], save_dir=tmp_path / 'sr')
  result = results[tmp_path.name]
  assert 'error' not in result and result['psnr'] == expected['psnr']
  assert len(result['not_written']) == 3 and all(
      'No space left on device' in line for line in result['not_written'])
  assert list((tmp_path / 'sr' / tmp_path.name).iterdir()) == []  # Nothing half-written.
  assert '(3 SR images not written)' in results_table.format_table(results)


def test_a_set_out_of_memory_is_reported_and_the_sets_before_it_are_kept(tmp_path, monkeypatch):
  """Issue 37: a MemoryError (or XLA's RESOURCE_EXHAUSTED) in one set threw away every
  set already scored; now that set is one line naming what to lower."""
  import jax  # pylint: disable=g-import-not-at-top
  for name in ('first', 'big', 'xla'):
    (tmp_path / name).mkdir()
    _write_folder(tmp_path / name)
  bicubic_x4 = upscalers.bicubic(4)
  raised = {'big': MemoryError('Unable to allocate 18.0 GiB for an array'),
            'xla': jax.errors.JaxRuntimeError('RESOURCE_EXHAUSTED: Out of memory while '
                                              'trying to allocate 9 bytes.')}
  current = []

  def upscale_batch(lr):
    if current[-1] in raised:
      raise raised[current[-1]]
    return bicubic_x4.batch_fn(lr)

  folders = [tmp_path / 'first', tmp_path / 'big', tmp_path / 'xla']
  upscaler = dataclasses.replace(bicubic_x4, batch_fn=upscale_batch)
  real_read_set = scoring._read_set  # pylint: disable=protected-access

  def read_set(folder, scale):  # Notes which set is being scored.
    current.append(pathlib.Path(folder).name)
    return real_read_set(folder, scale)

  monkeypatch.setattr(scoring, '_read_set', read_set)
  results = scoring.evaluate_sets(upscaler, folders, memory_fix='lower --tile')
  assert results['first']['psnr'] == scoring.evaluate_folder(bicubic_x4, folders[0])['psnr']
  assert results['big'] == {'error': 'out of host memory scoring set big (Unable to allocate '
                                     '18.0 GiB for an array): lower --tile',
                            'folder': str(folders[1])}
  assert results['xla']['error'] == (
      'out of accelerator memory scoring set xla (RESOURCE_EXHAUSTED: Out of memory while '
      'trying to allocate 9 bytes.): lower --tile')
  # Other runtime errors are bugs: raised, with their traceback.
  broken = dataclasses.replace(bicubic_x4, batch_fn=lambda lr: (_ for _ in ()).throw(
      RuntimeError('INTERNAL: a bug')))
  with pytest.raises(RuntimeError, match='a bug'):
    scoring.evaluate_sets(broken, folders[:1])


def test_every_result_names_the_folder_read_in_json_and_table(tmp_path):
  (tmp_path / 'mine').mkdir()
  _write_folder(tmp_path / 'mine')
  results = scoring.evaluate_sets(upscalers.bicubic(4), [tmp_path / 'mine', tmp_path / 'none'])
  assert results['mine']['folder'] == str(tmp_path / 'mine')
  assert results['none']['folder'] == str(tmp_path / 'none') and 'error' in results['none']
  header, mine, none = results_table.format_table(results).splitlines()
  assert header.split()[-1] == 'folder' and mine.split()[-1] == str(tmp_path / 'mine')
  assert none.startswith('none') and str(tmp_path / 'none') in none
