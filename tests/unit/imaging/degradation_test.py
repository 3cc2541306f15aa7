"""Tests for imaging/degradation.py's realistic benchmark inputs: --degrade's
operations, their determinism, and paired LR folders."""

import io

import numpy as np
from PIL import Image
import pytest

from srgan_jax.imaging import degradation
from srgan_jax.runtime import errors

RNG = np.random.default_rng(0)
LR = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)


def test_parse_degrade_reads_operations_in_order():
  assert degradation.parse_degrade('noise:10,jpeg:60') == (('noise', 10.0), ('jpeg', 60.0))
  assert degradation.parse_degrade(' jpeg:40 ') == (('jpeg', 40.0),)
  assert degradation.parse_degrade(None) == degradation.parse_degrade('') == ()


@pytest.mark.parametrize('spec', ['jpeg:0', 'jpeg:101', 'jpeg:40.5', 'jpeg', 'noise:-1',
                                  'blur:2', 'noise:ten', 'jpeg:40,,noise:5'])
def test_bad_degrade_is_one_line_naming_the_fix(spec):
  with pytest.raises(errors.UserError) as raised:
    degradation.parse_degrade(spec)
  message = str(raised.value)
  assert '\n' not in message and f'--degrade={spec}' in message and 'e.g.' in message


def test_jpeg_is_pillows_and_noise_is_seeded_by_the_name():
  buffer = io.BytesIO()
  Image.fromarray(LR).save(buffer, 'JPEG', quality=40)
  expected = np.asarray(Image.open(buffer))
  np.testing.assert_array_equal(degradation.degrade_lr(LR, (('jpeg', 40.0),), 'a'), expected)
  grey = np.full((200, 200, 3), 128, np.uint8)
  noisy = degradation.degrade_lr(grey, (('noise', 10.0),), 'baboon')
  np.testing.assert_array_equal(noisy, degradation.degrade_lr(grey, (('noise', 10.0),), 'baboon'))
  assert not np.array_equal(noisy, degradation.degrade_lr(grey, (('noise', 10.0),), 'lenna'))
  # Gaussian in grey levels: sigma 10 (rounding adds 1/12 to the variance).
  residual = noisy.astype(np.float64) - 128
  assert abs(residual.mean()) < 0.1 and residual.std() == pytest.approx(
      np.sqrt(100 + 1 / 12), rel=0.02)
  # In order: noise then JPEG is not JPEG then noise.
  assert not np.array_equal(degradation.degrade_lr(LR, (('noise', 5.0), ('jpeg', 60.0)), 'a'),
                            degradation.degrade_lr(LR, (('jpeg', 60.0), ('noise', 5.0)), 'a'))


def test_grey_images_stay_grey():
  grey = LR[..., :1]
  assert degradation.degrade_lr(grey, (('noise', 3.0), ('jpeg', 50.0)), 'g').shape == grey.shape


def test_paired_folder_gives_its_files_and_refuses_other_sizes(tmp_path):
  hr = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
  Image.fromarray(LR).save(tmp_path / 'photo.png')
  Image.fromarray(LR[:20]).save(tmp_path / 'short.png')
  paired = degradation.LowRes(folder=str(tmp_path))
  np.testing.assert_array_equal(paired.make(hr, 2, 'photo'), LR)
  np.testing.assert_array_equal(degradation.LowRes().make(hr, 2, 'photo'),
                                degradation.make_lr(hr, 2))
  with pytest.raises(errors.UserError, match=r'short.png: 32x20 pixels.*needs 32x24'):
    paired.make(hr, 2, 'short')
  with pytest.raises(errors.UserError, match=f'--lr_data={tmp_path} has no image named other'):
    paired.make(hr, 2, 'other')
  assert degradation.LowRes(((('noise', 10.0), ('jpeg', 60.0)))).describe() == (
      'bicubic, noise:10, jpeg:60')
  assert paired.describe() == f'files in {tmp_path}'


def test_low_res_sources_pair_lr_folders_with_sets():
  sources = degradation.low_res_sources('jpeg:40', ['a', 'b'], 2)
  assert [s.folder for s in sources] == ['a', 'b']
  assert all(s.degrade == (('jpeg', 40.0),) for s in sources)
  with pytest.raises(errors.UserError, match='--lr_data given 1 times for 2 --data sets'):
    degradation.low_res_sources(None, ['a'], 2)
