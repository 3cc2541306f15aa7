"""Tests for inference/super_resolve_files.py and the super_resolve command on files."""

import dataclasses
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from conftest import REPO
from srgan_jax.imaging import bicubic
from srgan_jax.imaging import image_io
from srgan_jax.inference import super_resolve_files
from srgan_jax.nn import upscalers
from srgan_jax.runtime import memory


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


def test_a_png_beside_a_PNG_gives_two_outputs_each_of_its_own_input(tmp_path):
  """Issue 37: "2 written", one file (the second overwrote the first)."""
  upper = _write_rgb(tmp_path / 'in' / 'a.PNG', 3)
  lower = _write_rgb(tmp_path / 'in' / 'a.png', 4)
  summary = super_resolve_files.super_resolve_paths(
      upscalers.bicubic(2), tmp_path / 'in', tmp_path / 'out')
  assert sorted(path.name for path in (tmp_path / 'out').iterdir()) == ['a.PNG.png', 'a.png']
  assert len(summary.written) == 2
  for name, pixels in (('a.PNG.png', upper), ('a.png', lower)):
    result = np.asarray(Image.open(tmp_path / 'out' / name)).astype(int)
    assert np.abs(result - bicubic.imresize(pixels, 2)).max() <= 1, name


def test_names_that_still_collide_are_refused_before_any_image(tmp_path):
  for name in ('a.jpg', 'a.jpg.png', 'a.png'):
    _write_rgb(tmp_path / 'in' / name, 5)
  with pytest.raises(image_io.OutputNameError, match=r'a.jpg and \S+a.jpg.png would both be '
                     r'written as a.jpg.png'):
    super_resolve_files.super_resolve_paths(upscalers.bicubic(2), tmp_path / 'in',
                                            tmp_path / 'out')
  assert not (tmp_path / 'out').exists()


def test_an_output_larger_than_free_memory_is_refused_up_front_stating_the_need(tmp_path,
                                                                                 monkeypatch):
  """Issue 37: a 10000x10000 input allocated its 18 GiB output array up front. With a
  small fake limit: the 44x36 output (x4 of 11x9) needs 44*36*3*24 bytes (0.1 MiB); a
  limit below that refuses it, without calling the upscaler, and the next image goes on."""
  _write_rgb(tmp_path / 'in' / 'a.png', 6)
  _write_rgb(tmp_path / 'in' / 'b.png', 7)
  needed = 44 * 36 * 3 * super_resolve_files.HOST_BYTES_PER_OUTPUT_SAMPLE
  limits = iter([needed - 1, needed])  # a: one byte short; b: just enough.
  monkeypatch.setattr(memory, 'available_bytes', lambda: next(limits))
  calls = []
  upscaler = upscalers.bicubic(4)
  counting = dataclasses.replace(upscaler, image_fn=lambda rgb: calls.append(rgb.shape)
                                 or upscaler.image_fn(rgb))
  summary = super_resolve_files.super_resolve_paths(counting, tmp_path / 'in', tmp_path / 'out')
  assert calls == [(11, 9, 3)] and [path.name for path in summary.written] == ['b.png']
  ((source, message),) = summary.failed
  assert source.name == 'a.png' and message == (
      f'{source}: its 36x44 output needs {needed / 2 ** 20:.1f} MiB of host memory, '
      f'{(needed - 1) / 2 ** 20:.1f} MiB is available: crop or shrink the image (or use a '
      'machine with more memory)')
  assert not (tmp_path / 'out' / 'a.png').exists()


def test_a_host_memory_error_on_one_image_is_one_line_and_the_others_go_on(tmp_path):
  _write_rgb(tmp_path / 'in' / 'a.png', 8)
  _write_rgb(tmp_path / 'in' / 'b.png', 9)
  upscaler, calls = upscalers.bicubic(2), []

  def fails_on_a(rgb):  # The first image, a.png (inputs go in sorted order).
    calls.append(rgb)
    if len(calls) == 1:
      raise MemoryError('Unable to allocate 18.0 GiB for an array with shape (40000, 40000, 3)')
    return upscaler.image_fn(rgb)

  summary = super_resolve_files.super_resolve_paths(
      dataclasses.replace(upscaler, image_fn=fails_on_a), tmp_path / 'in', tmp_path / 'out')
  assert [path.name for path in summary.written] == ['b.png']
  assert summary.failed[0][1].endswith(
      'a.png: out of host memory making its output (Unable to allocate 18.0 GiB for an array '
      'with shape (40000, 40000, 3)): crop or shrink the image (or use a machine with more '
      'memory)')
