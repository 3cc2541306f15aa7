"""Tests for evaluation/results_table.py: the plain-text table of scores."""

from srgan_jax.evaluation import results_table


def test_format_table_with_metrics_and_baseline():
  scores = {'psnr': 22.2833, 'ssim': 0.7596, 'niqe': 5.123, 'lpips': 0.25}
  table = results_table.format_table({'Set5': {**scores, 'images': 5, 'bicubic': scores}})
  header, row = table.splitlines()
  assert header.split() == ['set', 'images', 'PSNR', '(dB)', 'SSIM', 'NIQE', 'LPIPS', 'bicubic',
                            'PSNR', 'bicubic', 'SSIM', 'bicubic', 'NIQE', 'bicubic', 'LPIPS']
  assert row.split() == ['Set5', '5'] + ['22.2833', '0.7596', '5.1230', '0.2500'] * 2


def test_format_table():
  table = results_table.format_table({'Set5': {'psnr': 28.43141, 'ssim': 0.81127, 'images': 5},
                               'BSD100': {'psnr': 25.9634, 'ssim': 0.6682, 'images': 100}})
  lines = table.splitlines()
  assert lines[0].split() == ['set', 'images', 'PSNR', '(dB)', 'SSIM']
  assert lines[1].split() == ['Set5', '5', '28.4314', '0.8113']
  assert lines[2].split() == ['BSD100', '100', '25.9634', '0.6682']


def test_every_row_ends_with_the_folder_read_and_says_what_was_not_written():
  """Issue 37: nothing said which folder `--data=Set5` had read."""
  table = results_table.format_table({
      'Set5': {'psnr': 28.43141, 'ssim': 0.81127, 'images': 5, 'folder': '/data/Set5',
               'not_written': ['a', 'b']},
      'Set14': {'error': 'no image to score', 'folder': '/data/Set14'}})
  header, set5, set14 = table.splitlines()
  assert header.split() == ['set', 'images', 'PSNR', '(dB)', 'SSIM', 'folder']
  assert set5.split() == ['Set5', '5', '28.4314', '0.8113', '/data/Set5', '(2', 'SR', 'images',
                          'not', 'written)']
  assert set14.split() == ['Set14', 'not', 'scored:', 'no', 'image', 'to', 'score', '(folder',
                           '/data/Set14)']
