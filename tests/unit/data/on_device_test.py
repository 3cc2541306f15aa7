"""Tests for the device-resident training data source."""

import hashlib
import logging
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
from PIL import Image
import pytest

from conftest import REPO
from srgan_jax.data import on_device
from srgan_jax.imaging import degradation

CROP, SCALE = 16, 4
NUM_IMAGES, HEIGHT, WIDTH = 12, 40, 48


def _red(index: int) -> int:
  """Image ``index``'s red value, constant over it, so that a crop names its image."""
  return 10 + 20 * index


def _write_images(folder: pathlib.Path) -> list[np.ndarray]:
  """Writes 12 RGB 40x48 PNGs: red = their number; green and blue random 3x3
  blocks of 0 or 255.

  Such sharp edges make bicubic overshoot [0, 1] and put HR at both ends of
  [-1, 1], so that clipping and the range are tested.
  """
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  images = []
  for index in range(NUM_IMAGES):
    blocks = 255 * rng.integers(0, 2, (HEIGHT // 3 + 1, WIDTH // 3, 3), dtype=np.uint8)
    image = blocks.repeat(3, axis=0).repeat(3, axis=1)[:HEIGHT, :WIDTH]
    image[:, :, 0] = _red(index)
    Image.fromarray(image).save(folder / f'img_{index:02d}.png')
    images.append(image)
  return images


def _config(folders, augment: bool = True) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      {'folders': [str(folder) for folder in folders], 'crop_size': CROP, 'augment': augment})


def _symmetries(image: np.ndarray) -> list[np.ndarray]:
  """The 8 symmetries of a square: quarter turns, each with and without a mirror."""
  turns = [np.rot90(image, k) for k in range(4)]
  return turns + [turn[:, ::-1] for turn in turns]


def _locate(crop: np.ndarray, images: list[np.ndarray]) -> tuple[int, int, int, int]:
  """``(image, top, left, symmetry)`` of the one window that ``crop`` is a symmetry of."""
  index = (int(crop[0, 0, 0]) - 10) // 20
  assert (crop[:, :, 0] == _red(index)).all(), 'a crop mixes images'
  image = images[index]
  # Every row segment of the crop's length: [tops (rows), lefts, crop, 3].
  segments = np.moveaxis(np.lib.stride_tricks.sliding_window_view(image, CROP, axis=1), 2, -1)
  # g(window) == crop for the symmetry g exactly when window == g^-1(crop), one of the 8.
  # Windows whose first row matches are few, and are then compared whole.
  matches = [(index, top, left, symmetry)
             for symmetry, candidate in enumerate(_symmetries(crop))
             for top, left in zip(*np.nonzero((segments == candidate[0]).all(axis=(2, 3))))
             if top + CROP <= image.shape[0]
             and (image[top:top + CROP, left:left + CROP] == candidate).all()]
  assert len(matches) == 1, matches
  return matches[0]


def _to_uint8(hr: np.ndarray) -> np.ndarray:
  """HR in [-1, 1] back to its uint8 pixels, checking that it came from them."""
  pixels = (np.asarray(hr, np.float64) + 1.0) * 127.5
  np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-4)
  return np.round(pixels).astype(np.uint8)


@pytest.fixture(scope='module')
def folder(tmp_path_factory) -> tuple[pathlib.Path, list[np.ndarray]]:
  path = tmp_path_factory.mktemp('images')
  return path, _write_images(path)


@pytest.mark.parametrize('augment,page_bytes', [(True, 1000), (False, on_device.PAGE_BYTES)])
def test_crops_are_windows_of_distinct_images(folder, augment, page_bytes):
  # 1000-byte pages: most 5760-byte images and many crop rows straddle pages.
  path, images = folder
  source = on_device.DeviceDataSource(_config([path], augment), scale=SCALE, seed=1,
                                      page_bytes=page_bytes)
  assert source.num_images == NUM_IMAGES
  found = []
  for step in range(40):
    batch = source.batch(step, 6)
    assert batch['hr'].shape == (6, CROP, CROP, 3) and batch['hr'].dtype == np.float32
    assert batch['lr'].shape == (6, CROP // SCALE, CROP // SCALE, 3)
    assert batch['lr'].dtype == np.float32
    assert batch['hr'].devices() == {jax.local_devices()[0]}
    assert batch['hr'].min() == -1.0 and batch['hr'].max() == 1.0
    assert 0.0 <= batch['lr'].min() and batch['lr'].max() <= 1.0
    located = [_locate(crop, images) for crop in _to_uint8(batch['hr'])]
    assert len({image for image, *_ in located}) == 6, 'images repeat within a batch'
    found.extend(located)
  # Every offset on the LR grid (HR multiples of the scale) occurs, the largest
  # ones included, and no other.
  assert {top for _, top, _, _ in found} == set(range(0, HEIGHT - CROP + 1, SCALE))
  assert {left for *_, left, _ in found} == set(range(0, WIDTH - CROP + 1, SCALE))
  symmetries = {symmetry for *_, symmetry in found}
  assert symmetries == (set(range(8)) if augment else {0})


def test_lr_is_evaluations_lr_of_the_same_region(tmp_path):
  """Training degrades as evaluation does: the LR crop is the region, in register
  with the HR crop, of evaluate's LR of the whole (modcropped) image, uint8."""
  images = _write_images(tmp_path)
  # Sides that are not multiples of the scale: the bottom and right are cropped off.
  for index in range(0, NUM_IMAGES, 2):
    images[index] = images[index][:HEIGHT - 3, :WIDTH - 1]
    Image.fromarray(images[index]).save(tmp_path / f'img_{index:02d}.png')
  evaluation_lrs = [degradation.make_lr(degradation.modcrop(image, SCALE), SCALE)
                    for image in images]
  source = on_device.DeviceDataSource(_config([tmp_path]), scale=SCALE, seed=2)
  lr_size = CROP // SCALE
  edges = 0
  for step in range(6):
    batch = source.batch(step, 6)
    levels = np.asarray(batch['lr'], np.float64) * 255.0
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)  # uint8, rounded.
    for hr, lr in zip(_to_uint8(batch['hr']), np.round(levels).astype(np.uint8)):
      index, top, left, symmetry = _locate(hr, images)
      assert top % SCALE == 0 and left % SCALE == 0, (top, left)
      region = evaluation_lrs[index][top // SCALE:top // SCALE + lr_size,
                                     left // SCALE:left // SCALE + lr_size]
      np.testing.assert_array_equal(_symmetries(lr)[symmetry], region)
      lr_height, lr_width = evaluation_lrs[index].shape[:2]
      edges += (top // SCALE + lr_size == lr_height) or (left // SCALE + lr_size == lr_width)
  assert edges > 3  # The modcropped bottom and right borders were exercised.


def test_batches_depend_only_on_seed_and_step(folder):
  path, _ = folder
  first = on_device.DeviceDataSource(_config([path]), scale=SCALE, seed=3)
  second = on_device.DeviceDataSource(_config([path]), scale=SCALE, seed=3)
  other_seed = on_device.DeviceDataSource(_config([path]), scale=SCALE, seed=4)
  get = lambda source, step: jax.tree_util.tree_map(np.asarray, source.batch(step, 6))
  # The second source computes step 7 before step 3: no hidden iterator state.
  later, earlier = get(second, 7), get(second, 3)
  for step, expected in ((3, earlier), (7, later)):
    for batch in (get(first, step), get(first, step)):
      for name in ('lr', 'hr'):
        np.testing.assert_array_equal(batch[name], expected[name])
  assert not np.array_equal(earlier['hr'], later['hr'])
  assert not np.array_equal(get(other_seed, 3)['hr'], earlier['hr'])
  iterator = first.batches(6, 6)
  for step in (6, 7):
    np.testing.assert_array_equal(np.asarray(next(iterator)['hr']), get(first, step)['hr'])


def test_hosts_use_disjoint_images(folder):
  path, images = folder
  for process in range(2):
    source = on_device.DeviceDataSource(_config([path]), scale=SCALE, seed=5,
                                        process_index=process, process_count=2)
    assert source.num_images == NUM_IMAGES // 2
    # A batch of every local image must be a permutation of this host's images.
    for step in range(3):
      used = [_locate(crop, images)[0] for crop in _to_uint8(source.batch(step, 6)['hr'])]
      assert sorted(used) == list(range(process, NUM_IMAGES, 2))
    with pytest.raises(ValueError, match='fewer than the per-host batch of 7'):
      source.batch(0, 7)


def test_local_batch_makes_a_global_array(folder):
  path, _ = folder
  source = on_device.DeviceDataSource(_config([path]), scale=SCALE, seed=6)
  local = source.batch(0, 6)
  mesh = jax.sharding.Mesh(jax.local_devices()[:3], ('data',))
  sharding = jax.NamedSharding(mesh, jax.P('data'))
  global_hr = jax.make_array_from_process_local_data(sharding, local['hr'])
  assert global_hr.sharding == sharding
  np.testing.assert_array_equal(np.asarray(global_hr), np.asarray(local['hr']))


def test_batch_function_compiles_once(folder):
  path, _ = folder
  source = on_device.DeviceDataSource(_config([path]), scale=SCALE, seed=7)
  jax.block_until_ready(source.batch(0, 6))
  compiled = on_device._make_batch._cache_size()  # pylint: disable=protected-access
  for step in (1, np.int64(2), np.int32(3), jax.numpy.asarray(4)):
    jax.block_until_ready(source.batch(step, 6))
  jax.block_until_ready(next(source.batches(10**6, 6)))
  assert on_device._make_batch._cache_size() == compiled  # pylint: disable=protected-access


def test_unusable_files_are_skipped_and_counted(tmp_path, caplog):
  rng = np.random.default_rng(8)
  noise = lambda *shape: rng.integers(0, 256, shape, dtype=np.uint8)
  for index in range(3):
    Image.fromarray(noise(HEIGHT, WIDTH, 3)).save(tmp_path / f'rgb_{index}.png')
  # Usable after conversion: grayscale, RGBA, 16-bit grayscale, palette, in subfolders.
  (tmp_path / 'more' / 'deeper').mkdir(parents=True)
  Image.fromarray(noise(HEIGHT, WIDTH)).save(tmp_path / 'more' / 'gray.png')
  Image.fromarray(noise(HEIGHT, WIDTH, 4)).save(tmp_path / 'more' / 'rgba.png')
  Image.fromarray(noise(HEIGHT, WIDTH).astype(np.uint16) * 257).save(
      tmp_path / 'more' / 'deeper' / 'sixteen.png')
  Image.fromarray(noise(HEIGHT, WIDTH, 3)).convert('P').save(tmp_path / 'palette.bmp')
  # Unusable: truncated, not an image, smaller than the crop.
  (tmp_path / 'truncated.png').write_bytes((tmp_path / 'rgb_0.png').read_bytes()[:300])
  (tmp_path / 'text.jpg').write_text('not an image')
  Image.fromarray(noise(CROP - 1, WIDTH, 3)).save(tmp_path / 'short.png')
  (tmp_path / 'notes.txt').write_text('ignored: not an image extension')
  with caplog.at_level(logging.INFO):
    source = on_device.DeviceDataSource(_config([tmp_path]), scale=SCALE, seed=9)
  assert source.num_images == 7
  assert 'skipped 2 undecodable and 1 smaller than the 16x16 crop' in caplog.text
  hr = _to_uint8(source.batch(0, 7)['hr'])
  assert sum((crop[..., 0] == crop[..., 1]).all() for crop in hr) == 2  # gray, 16-bit


def test_no_usable_image_is_an_error_naming_the_folders(tmp_path):
  bad, empty = tmp_path / 'bad', tmp_path / 'empty'
  bad.mkdir()
  empty.mkdir()
  (bad / 'text.png').write_text('not an image')
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bad / 'tiny.png')
  with pytest.raises(ValueError, match='No usable training images.*bad'):
    on_device.DeviceDataSource(_config([bad]), scale=SCALE, seed=0)
  with pytest.raises(ValueError, match='No image files.*empty'):
    on_device.DeviceDataSource(_config([empty]), scale=SCALE, seed=0)
  with pytest.raises(FileNotFoundError, match='missing'):
    on_device.DeviceDataSource(_config([tmp_path / 'missing']), scale=SCALE, seed=0)


@pytest.mark.system
def test_does_not_import_tensorflow(folder):
  path, _ = folder
  script = (
      'import sys, ml_collections\n'
      'from srgan_jax.data import on_device\n'
      f'config = ml_collections.ConfigDict({_config([path]).to_dict()!r})\n'
      f'source = on_device.DeviceDataSource(config, scale={SCALE}, seed=0)\n'
      'source.batch(0, 4)["lr"].block_until_ready()\n'
      'assert "tensorflow" not in sys.modules, "tensorflow was imported"\n')
  result = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True,
                          text=True, check=False)
  assert result.returncode == 0, result.stderr


# sha256 of the LR and HR bytes of batches 0..2 and the stack of 3..4 below, made by
# the device source before data.degradation existed (commit b697a2b); the same JAX
# version's threefry draws (a JAX upgrade that changes jax.random may change it).
BICUBIC_BATCHES_SHA256 = '20801b22868cbfa6f552e8cb02b62de3e0ce7042e5bef56ec1ee32da712e6a26'


@pytest.mark.parametrize('degradation_field', [False, True])
def test_bicubic_batches_unchanged_bit_for_bit(tmp_path, degradation_field):
  """data.degradation='bicubic' (or no such field) gives the batches the source gave
  before the Real-ESRGAN pipeline was added, to the bit."""
  _write_images(tmp_path)
  config = _config([tmp_path])
  if degradation_field:
    config.degradation = 'bicubic'
  source = on_device.DeviceDataSource(config, scale=SCALE, seed=3)
  digest = hashlib.sha256()
  for batch in [source.batch(step, 6) for step in range(3)] + [source.stacked_batches(3, 2, 6)]:
    batch = jax.device_get(batch)
    digest.update(batch['lr'].tobytes())
    digest.update(batch['hr'].tobytes())
  assert digest.hexdigest() == BICUBIC_BATCHES_SHA256
