"""Tests for tiled inference and the super-resolve command."""

import functools
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from conftest import REPO
from srgan_jax.imaging import bicubic
from srgan_jax.inference import files
from srgan_jax.inference import tiling
from srgan_jax.nn import models


def _bicubic_x4(rgb: np.ndarray) -> np.ndarray:
  return bicubic.imresize(rgb.astype(np.float64), 4)


@functools.cache
def _generator(scale: int):
  """A small random SRResNet: (jitted apply on a batch, its receptive radius)."""
  model = models.SRResNet(num_blocks=2, features=8, upsample_features=16, scale=scale)
  shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32))
  rng = np.random.default_rng(scale)

  # Random values drawn with NumPy (JAX's RNG compiles slowly on a busy CPU); the
  # BatchNorm statistics are random too, so that they are exercised.
  def draw(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      return rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
    if name == 'var':
      return rng.uniform(0.5, 1.5, leaf.shape)
    base = {'scale': 1.0, 'negative_slope': 0.25}.get(name, 0.0)
    return base + 0.1 * rng.normal(size=leaf.shape)

  variables = jax.tree_util.tree_map_with_path(
      lambda path, leaf: draw(path, leaf).astype(np.float32), shapes)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return (lambda lr: apply(variables, lr)), models.generator_receptive_radius(2, scale)


@pytest.mark.parametrize('scale, height, width, tile, batch_size', [
    (4, 61, 47, 28, 3),  # Many tiles, shifted last row and column, padded last batch.
    (4, 37, 29, 32, 2),  # Non-square; narrower than a tile: one tile column of width 29.
    (4, 13, 19, 32, 4),  # Smaller than a tile: a single tile.
    (2, 37, 29, 26, 2),  # x2: another receptive radius.
])
def test_tiled_equals_whole_image(scale, height, width, tile, batch_size):
  apply_fn, radius = _generator(scale)
  image = np.random.default_rng(height).uniform(size=(height, width, 3)).astype(np.float32)
  whole = np.asarray(apply_fn(image[None]))[0]
  calls = []
  tiled = tiling.upscale_tiled(
      apply_fn, image, scale=scale, tile=tile, overlap=radius, batch_size=batch_size,
      progress=lambda done, total: calls.append((done, total)))
  assert tiled.shape == (height * scale, width * scale, 3)
  assert np.abs(whole).max() > 0.1  # The comparison below is not of near-zeros.
  np.testing.assert_array_less(np.abs(tiled - whole).max(), 1e-5)
  assert calls[-1][0] == calls[-1][1]


def test_overlap_below_radius_differs():
  apply_fn, radius = _generator(4)
  image = np.random.default_rng(61).uniform(size=(61, 47, 3)).astype(np.float32)
  whole = np.asarray(apply_fn(image[None]))[0]
  # One pixel short of the radius already changes the result: the radius is tight
  # and the equality test above can fail.
  tiled = tiling.upscale_tiled(apply_fn, image, scale=4, tile=28,
                               overlap=radius - 1, batch_size=3)
  assert np.abs(tiled - whole).max() > 1e-4


@pytest.mark.parametrize('length', [1, 5, 28, 29, 30, 61, 100, 257])
@pytest.mark.parametrize('tile, overlap', [(28, 12), (28, 0), (16, 7)])
def test_axis_tiles_cover_with_context(length, tile, overlap):
  starts, bounds, size = tiling.axis_tiles(length, tile, overlap)
  assert size == min(tile, length)
  assert bounds[0] == 0 and bounds[-1] == length
  assert all(a < b for a, b in zip(bounds, bounds[1:]))  # Every tile contributes.
  for i, start in enumerate(starts):
    assert 0 <= start and start + size <= length
    kept_from, kept_to = bounds[i], bounds[i + 1]
    assert start <= kept_from and kept_to <= start + size
    if start > 0:  # A cut edge, not the image border: needs context.
      assert kept_from - start >= overlap
    if start + size < length:
      assert start + size - kept_to >= overlap


def test_tile_must_exceed_twice_overlap():
  with pytest.raises(ValueError, match='larger than 2'):
    tiling.axis_tiles(100, 24, 12)


def _write_rgb(path: pathlib.Path, seed: int) -> np.ndarray:
  """A random 11x9 RGB image, in the format of the path's suffix."""
  pixels = np.random.default_rng(seed).integers(0, 256, (11, 9, 3), dtype=np.uint8)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(pixels).save(path)
  return pixels


def test_bicubic_model_equals_imresize(tmp_path):
  pixels = _write_rgb(tmp_path / 'in.png', 0)
  summary = files.super_resolve_paths(
      _bicubic_x4, tmp_path / 'in.png', tmp_path / 'out', scale=4)
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
  summary = files.super_resolve_paths(_bicubic_x4, tmp_path / 'in', output, scale=4)
  assert sorted(summary.written) == [output / 'a.png', output / 'sub' / 'b.png']
  assert [path.name for path, _ in summary.failed] == ['bad.png']
  assert summary.exit_code != 0
  assert str(summary).startswith('2 written, 0 skipped (existing), 1 failed: ')
  assert 'bad.png' in str(summary)
  assert Image.open(output / 'sub' / 'b.png').size == (36, 44)
  assert sorted(p.name for p in output.rglob('*')) == ['a.png', 'b.png', 'sub']
  assert summary.output_pixels == 2 * 44 * 36


def test_existing_outputs_not_overwritten(tmp_path):
  _write_rgb(tmp_path / 'in' / 'a.png', 3)
  _write_rgb(tmp_path / 'in' / 'b.png', 4)
  output = tmp_path / 'out'
  output.mkdir()
  (output / 'a.png').write_bytes(b'previous result')
  summary = files.super_resolve_paths(_bicubic_x4, tmp_path / 'in', output, scale=4)
  assert summary.skipped == [output / 'a.png'] and summary.written == [output / 'b.png']
  assert (output / 'a.png').read_bytes() == b'previous result'
  summary = files.super_resolve_paths(
      _bicubic_x4, tmp_path / 'in', output, scale=4, overwrite=True)
  assert len(summary.written) == 2 and not summary.skipped
  assert Image.open(output / 'a.png').size == (36, 44)


def test_collect_inputs_targets(tmp_path):
  root = tmp_path / 'in'
  for name in ('x.png', 'x.jpg', 'y.JPEG', 'deep/z.webp', 'out/old.png'):
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(b'')
  pairs = files.collect_inputs(root, root / 'out')
  targets = {source.relative_to(root).as_posix(): target.relative_to(root / 'out').as_posix()
             for source, target in pairs}
  # Outputs inside the input folder are not inputs; a.jpg beside a.png keeps its suffix.
  assert targets == {'x.png': 'x.png', 'x.jpg': 'x.jpg.png', 'y.JPEG': 'y.png',
                     'deep/z.webp': 'deep/z.png'}
  assert files.collect_inputs(root / 'x.jpg', tmp_path / 'r.png') == [
      (root / 'x.jpg', tmp_path / 'r.png')]
  assert files.collect_inputs(root / 'x.jpg', tmp_path / 'dir') == [
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
