"""Scoring on realistic inputs: evaluate's --degrade and --lr_data (imaging/degradation.LowRes)."""

import json
import os
import subprocess
import sys

from conftest import REPO, image_set
import numpy as np
from PIL import Image
import pytest

from srgan_jax.evaluation import scoring
from srgan_jax.imaging import degradation
from srgan_jax.imaging import image_io
from srgan_jax.nn import upscalers


def test_paired_folder_of_bicubic_lr_scores_as_the_benchmark(tmp_path):
  """A paired set whose LR files are the benchmark's bicubic LR gets the benchmark's
  scores exactly; JPEG 40 costs bicubic more than 0.5 dB on Set5 and is recorded."""
  folder = image_set('Set5')
  for path in image_io.image_files(folder, recursive=False):
    hr = scoring.scorable_hr(path, 4)
    Image.fromarray(degradation.make_lr(hr, 4).squeeze()).save(tmp_path / f'{path.stem}.png')
  bicubic = upscalers.bicubic(4)
  clean = scoring.evaluate_folder(bicubic, folder)
  paired = scoring.evaluate_folder(bicubic, folder,
                                   low_res=degradation.LowRes(folder=str(tmp_path)))
  assert paired.pop('lr') == f'files in {tmp_path}'
  assert paired == clean
  jpeg = scoring.evaluate_folder(bicubic, folder,
                                 low_res=degradation.LowRes((('jpeg', 40.0),)))
  assert jpeg['lr'] == 'bicubic, jpeg:40'
  assert jpeg['psnr'] < clean['psnr'] - 0.5


@pytest.mark.system
def test_cli_degrades_and_refuses_bad_values_in_one_line(tmp_path):
  output = tmp_path / 'results.json'
  base = [sys.executable, '-m', 'srgan_jax.evaluate', '--model=bicubic',
          f'--data={image_set("Set5")}', '--metrics=']
  run = lambda *args: subprocess.run(base + list(args), cwd=REPO, capture_output=True,
                                     text=True, env=dict(os.environ))
  done = run('--degrade=noise:10,jpeg:60', f'--output={output}')
  assert done.returncode == 0, done.stderr
  assert json.loads(output.read_text())['Set5']['lr'] == 'bicubic, noise:10, jpeg:60'
  for args, expected in [(['--degrade=jpeg:0'], "--degrade=jpeg:0: 'jpeg:0' is not"),
                         ([f'--lr_data={tmp_path}', f'--lr_data={tmp_path}'],
                          '--lr_data given 2 times for 1 --data sets')]:
    failed = run(*args)
    assert failed.returncode == 2 and expected in failed.stderr, failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
