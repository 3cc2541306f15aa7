"""The summaries of a run without tensorflow: JSON lines and PNGs that srgan_jax.plot reads."""

import time

import numpy as np
from PIL import Image

from srgan_jax.evaluation import curves
from srgan_jax.evaluation import summaries


def test_json_lines_are_read_back_as_curves_with_a_resumed_run_winning(tmp_path):
  first = summaries.JsonLinesWriter(str(tmp_path))
  first.write_scalars(2, {'eval/Set5/psnr': np.float32(20.5), 'train/srresnet/loss': 0.25})
  first.write_scalars(4, {'eval/Set5/psnr': 21.0})
  time.sleep(0.01)  # A later start: files are named by it.
  resumed = summaries.JsonLinesWriter(str(tmp_path))  # Repeats step 4 after a restore.
  resumed.write_scalars(4, {'eval/Set5/psnr': 21.5})
  resumed.write_scalars(6, {'eval/Set5/psnr': 22.0})
  resumed.close()
  assert len(list(tmp_path.glob(summaries.SCALARS_GLOB))) == 2
  scalars = curves.read_scalars(tmp_path)
  np.testing.assert_array_equal(scalars['eval/Set5/psnr'][0], [2, 4, 6])
  np.testing.assert_allclose(scalars['eval/Set5/psnr'][1], [20.5, 21.5, 22.0])
  np.testing.assert_allclose(scalars['train/srresnet/loss'][1], [0.25])
  assert set(curves.learning_curves(scalars)) == {'Set5'}


def test_images_are_pngs_and_other_processes_write_nothing(tmp_path):
  writer = summaries.JsonLinesWriter(str(tmp_path / 'first'))
  pairs = np.arange(2 * 4 * 8 * 3, dtype=np.uint8).reshape(2, 4, 8, 3)
  writer.write_images(10, {'train/srgan/sr_beside_hr': pairs,
                           'eval/sample0': np.full((1, 4, 4, 3), 0.5, np.float32)})
  folder = tmp_path / 'first' / summaries.IMAGES_FOLDER
  np.testing.assert_array_equal(
      np.asarray(Image.open(folder / 'train_srgan_sr_beside_hr' / '10_1.png')), pairs[1])
  assert np.asarray(Image.open(folder / 'eval_sample0' / '10_0.png')).max() == 128
  other = summaries.JsonLinesWriter(str(tmp_path / 'other'), just_logging=True)
  other.write_scalars(1, {'loss': 1.0})
  other.write_images(1, {'eval/sample0': pairs})
  other.close()
  assert not (tmp_path / 'other').exists()
