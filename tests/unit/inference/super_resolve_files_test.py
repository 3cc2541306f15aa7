"""Tests for inference/super_resolve_files.py and the super_resolve command on files."""

import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from conftest import REPO
from srgan_jax.imaging import bicubic
from srgan_jax.inference import super_resolve_files
from srgan_jax.nn import upscalers


def _write_rgb(path: pathlib.Path, seed: int) -> np.ndarray:
  """A random 11x9 RGB image, in the format of the path's suffix."""
  pixels = np.random.default_rng(seed).integers(0, 256, (11, 9, 3), dtype=np.uint8)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(pixels).save(path)
  return pixels


def test_bicubic_model_equals_imresize(tmp_path):
  pixels = _write_rgb(tmp_path / 'in.png', 0)
  summary = super_resolve_files.super_resolve_paths(
      upscalers.bicubic(4), tmp_path / 'in.png', tmp_path / 'out')
  assert summary.exit_code == 0 and len(summary.written) == 1
  result = np.asarray(Image.open(tmp_path / 'out' / 'in.png'))
  expected = bicubic.imresize(pixels, 4)  # MATLAB's uint8 path, rounded once.
  assert result.shape == expected.shape == (44, 36, 3)
  difference = np.abs(result.astype(int) - expected)
  assert difference.max() <= 1 and np.mean(difference == 0) > 0.99


def _make_folder(root: pathlib.Path) -> None:
  _write_rgb(root / 'a.png', 1)
  _write_rgb(root / 'sub' / 'b.jpg', 2)
  (root / 'bad.png').write_bytes(b'not an image at all')
  (root / 'notes.txt').write_text('ignored')


def test_folder_with_corrupt_file(tmp_path):
  _make_folder(tmp_path / 'in')
  output = tmp_path / 'out'
  summary = super_resolve_files.super_resolve_paths(upscalers.bicubic(4), tmp_path / 'in', output)
  assert sorted(summary.written) == [output / 'a.png', output / 'sub' / 'b.png']
  assert [path.name for path, _ in summary.failed] == ['bad.png']
  assert summary.exit_code != 0
  assert str(summary).startswith('2 written, 0 skipped (existing), 1 failed: ')
  assert 'bad.png' in str(summary)
  assert Image.open(output / 'sub' / 'b.png').size == (36, 44)
  assert sorted(p.name for p in output.rglob('*')) == ['a.png', 'b.png', 'sub']
  assert summary.output_pixels == 2 * 44 * 36


def test_a_folder_reads_gifs_as_one_file_does_and_names_what_it_left_out(tmp_path):
  """Before: a .gif given alone was super-resolved, one in a folder skipped unsaid."""
  pixels = _write_rgb(tmp_path / 'in' / 'c.png', 4)
  Image.fromarray(pixels).convert('P').save(tmp_path / 'in' / 'g.gif')
  (tmp_path / 'in' / 'c.png').unlink()
  (tmp_path / 'in' / 'notes.txt').write_text('not an image')
  (tmp_path / 'in' / 'photo.heic').write_bytes(b'')
  summary = super_resolve_files.super_resolve_paths(upscalers.bicubic(4), tmp_path / 'in',
                                                    tmp_path / 'out')
  alone = super_resolve_files.super_resolve_paths(upscalers.bicubic(4), tmp_path / 'in' / 'g.gif',
                                                  tmp_path / 'alone.png')
  assert summary.written == [tmp_path / 'out' / 'g.png'] and alone.exit_code == 0
  assert (tmp_path / 'out' / 'g.png').read_bytes() == (tmp_path / 'alone.png').read_bytes()
  assert str(summary) == ('1 written, 0 skipped (existing), 0 failed; left out, not images by '
                          'their suffix: 2 (notes.txt, photo.heic)')
  assert str(alone) == '1 written, 0 skipped (existing), 0 failed'


def test_existing_outputs_not_overwritten(tmp_path):
  _write_rgb(tmp_path / 'in' / 'a.png', 3)
  _write_rgb(tmp_path / 'in' / 'b.png', 4)
  output = tmp_path / 'out'
  output.mkdir()
  (output / 'a.png').write_bytes(b'previous result')
  summary = super_resolve_files.super_resolve_paths(upscalers.bicubic(4), tmp_path / 'in', output)
  assert summary.skipped == [output / 'a.png'] and summary.written == [output / 'b.png']
  assert (output / 'a.png').read_bytes() == b'previous result'
  summary = super_resolve_files.super_resolve_paths(
      upscalers.bicubic(4), tmp_path / 'in', output, overwrite=True)
  assert len(summary.written) == 2 and not summary.skipped
  assert Image.open(output / 'a.png').size == (36, 44)


def test_collect_inputs_targets(tmp_path):
  root = tmp_path / 'in'
  for name in ('x.png', 'x.jpg', 'y.JPEG', 'deep/z.webp', 'out/old.png'):
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(b'')
  pairs = super_resolve_files.collect_inputs(root, root / 'out')
  targets = {source.relative_to(root).as_posix(): target.relative_to(root / 'out').as_posix()
             for source, target in pairs}
  # Outputs inside the input folder are not inputs; a.jpg beside a.png keeps its suffix.
  assert targets == {'x.png': 'x.png', 'x.jpg': 'x.jpg.png', 'y.JPEG': 'y.png',
                     'deep/z.webp': 'deep/z.png'}
  assert super_resolve_files.collect_inputs(root / 'x.jpg', tmp_path / 'r.png') == [
      (root / 'x.jpg', tmp_path / 'r.png')]
  assert super_resolve_files.collect_inputs(root / 'x.jpg', tmp_path / 'dir') == [
      (root / 'x.jpg', tmp_path / 'dir' / 'x.png')]


def _run(args: list[str]) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=120)


@pytest.mark.system
def test_command_line_reports_failure(tmp_path):
  _make_folder(tmp_path / 'in')
  result = _run(['-m', 'srgan_jax.super_resolve', '--model=bicubic',
                 f'--input={tmp_path / "in"}', f'--output={tmp_path / "out"}'])
  assert result.returncode != 0, result.stderr
  assert '2 written, 0 skipped (existing), 1 failed: ' in result.stdout, result.stderr
  assert 'MP/s' in result.stdout and 'peak host memory' in result.stdout
  assert (tmp_path / 'out' / 'sub' / 'b.png').exists()


@pytest.mark.system
def test_does_not_import_tensorflow():
  result = _run(['-c', 'import sys, srgan_jax.super_resolve, srgan_jax.imaging.image_io; '
                 'assert "tensorflow" not in sys.modules'])
  assert result.returncode == 0, result.stderr
