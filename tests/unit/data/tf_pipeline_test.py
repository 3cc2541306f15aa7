"""Tests for srgan_jax.data.tf_pipeline on tiny images written to tmp_path."""

import io
import logging
import pathlib

import ml_collections
import numpy as np
from PIL import Image
import pytest

from conftest import REPO
from srgan_jax.data import sources
from srgan_jax.data import tf_pipeline
from srgan_jax.imaging import degradation

CROP = 16
SCALE = 4
NUM_IMAGES = 20


def _config(folders, **overrides) -> ml_collections.ConfigDict:
  config = dict(
      source='folders', folders=[str(folder) for folder in folders],
      tfds_name='', tfds_split='train', tfds_image_key='image', tfds_data_dir=None,
      crop_size=CROP, augment=True, cache=True, crops_per_image=1, prefetch=2)
  config.update(overrides)
  return ml_collections.ConfigDict(config)


def _input(config, batch_size=4, seed=0, process_index=0, process_count=1):
  return tf_pipeline.TrainInput(config, scale=SCALE, batch_size=batch_size, seed=seed,
                                process_index=process_index, process_count=process_count)


def _encode(array: np.ndarray, fmt: str = 'PNG', **kwargs) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def _colour(i: int) -> tuple[int, int, int]:
  """A different RGB colour for each image index."""
  return (i * 12, 255 - i * 12, (i * 37) % 256)


def _colours(hr: np.ndarray) -> list[tuple[int, int, int]]:
  """The colour of each crop of a batch of constant-colour crops, as uint8 RGB."""
  pixels = np.round((hr + 1.0) * 127.5).astype(np.uint8)
  assert (pixels == pixels[:, :1, :1]).all(), 'a crop mixes colours'
  return [tuple(int(v) for v in crop[0, 0]) for crop in pixels]


@pytest.fixture(name='colour_folder')
def fixture_colour_folder(tmp_path) -> pathlib.Path:
  """20 images of 40x48 (and 48x40), image i of constant colour _colour(i)."""
  folder = tmp_path / 'colours'
  (folder / 'sub').mkdir(parents=True)
  for i in range(NUM_IMAGES):
    shape = (40, 48, 3) if i % 2 else (48, 40, 3)
    # Half in a subfolder: the search is recursive; names sort as the indices.
    path = folder / ('sub' if i >= 10 else '') / f'img_{i:02d}.png'
    path.write_bytes(_encode(np.full(shape, _colour(i), np.uint8)))
  return folder


@pytest.fixture(name='texture_folder')
def fixture_texture_folder(tmp_path) -> tuple[pathlib.Path, list[np.ndarray]]:
  """Random-noise images of several sizes, and their pixels."""
  folder = tmp_path / 'textures'
  folder.mkdir()
  rng = np.random.default_rng(1)
  images = []
  for i, (height, width) in enumerate([(40, 48), (36, 52), (48, 40), (17, 30), (33, 33), (40, 41)]):
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    (folder / f'{i}.png').write_bytes(_encode(image))
    images.append(image)
  return folder, images


def _symmetries(crop: np.ndarray) -> list[np.ndarray]:
  """The 8 images that flips and quarter turns make of a square crop."""
  turns = [np.rot90(crop, k) for k in range(4)]
  return turns + [turn[:, ::-1] for turn in turns]


@pytest.mark.system
def test_import_does_not_load_tensorflow():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ('import sys, srgan_jax.data.tf_pipeline; '
          'assert "tensorflow" not in sys.modules, "tensorflow imported"')
  subprocess.run([sys.executable, '-c', code], check=True,
                 cwd=REPO)


@pytest.mark.system
def test_process_exits_with_an_open_iterator(texture_folder):
  """An iterator left open (here a global) must not hang the interpreter's exit."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  folder, _ = texture_folder
  code = f"""if True:
    import ml_collections
    from srgan_jax.data import tf_pipeline
    config = ml_collections.ConfigDict({dict(_config([folder], cache=False))!r})
    batches = tf_pipeline.create_train_iterator(
        config, scale={SCALE}, batch_size=2, seed=0, start_step=0)
    next(batches)
    """
  subprocess.run([sys.executable, '-c', code], check=True, timeout=120,
                 cwd=REPO)


def test_shapes_and_ranges(texture_folder):
  folder, _ = texture_folder
  batch = _input(_config([folder]), batch_size=5).batch(0)
  assert batch['lr'].shape == (5, CROP // SCALE, CROP // SCALE, 3)
  assert batch['hr'].shape == (5, CROP, CROP, 3)
  assert batch['lr'].dtype == batch['hr'].dtype == np.float32
  assert 0.0 <= batch['lr'].min() and batch['lr'].max() <= 1.0
  assert -1.0 <= batch['hr'].min() and batch['hr'].max() <= 1.0
  # HR is an 8-bit image scaled to [-1, 1]: noise spans the range, in 1/127.5 steps.
  levels = (batch['hr'] + 1.0) * 127.5
  np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
  assert levels.min() < 5 and levels.max() > 250


@pytest.mark.parametrize('cache, crops_per_image', [(True, 1), (False, 1), (False, 3)])
def test_batches_depend_only_on_seed_and_step(texture_folder, cache, crops_per_image):
  folder, _ = texture_folder
  config = _config([folder], cache=cache, crops_per_image=crops_per_image)
  iterator = _input(config).iterator(0)
  from_start = [next(iterator) for _ in range(8)]
  # A fresh pipeline (as after a restart) resumed at step 5 sees the same batches.
  resumed = _input(config).iterator(5)
  for step in range(5, 8):
    resumed_batch = next(resumed)
    for key in ('lr', 'hr'):
      np.testing.assert_array_equal(resumed_batch[key], from_start[step][key])
  np.testing.assert_array_equal(_input(config).batch(2)['hr'], from_start[2]['hr'])
  for step in range(7):
    assert not np.array_equal(from_start[step]['hr'], from_start[step + 1]['hr'])
  other_seed = _input(config, seed=1).batch(0)
  assert not np.array_equal(other_seed['hr'], from_start[0]['hr'])


def test_crops_per_image_reuses_each_image_for_k_steps(colour_folder):
  config = _config([colour_folder], cache=False, crops_per_image=3)
  iterator = _input(config, batch_size=6).iterator(0)
  colours = [_colours(next(iterator)['hr']) for _ in range(6)]
  assert colours[0] == colours[1] == colours[2]
  assert colours[3] == colours[4] == colours[5]
  assert colours[0] != colours[3]


@pytest.mark.parametrize('cache', [True, False])
def test_each_batch_has_distinct_images(colour_folder, cache):
  all_colours = {_colour(i) for i in range(NUM_IMAGES)}
  iterator = _input(_config([colour_folder], cache=cache), batch_size=8).iterator(0)
  seen = set()
  for _ in range(20):
    colours = _colours(next(iterator)['hr'])
    assert len(set(colours)) == len(colours), colours
    seen.update(colours)
  assert seen == all_colours  # Every image gets drawn.


@pytest.mark.parametrize('cache', [True, False])
def test_processes_use_disjoint_images(colour_folder, cache):
  config = _config([colour_folder], cache=cache)
  seen = []
  for process_index in range(2):
    iterator = _input(config, process_index=process_index, process_count=2).iterator(0)
    seen.append({colour for _ in range(25) for colour in _colours(next(iterator)['hr'])})
  assert not seen[0] & seen[1]
  # Files are numbered in path order (img_00 ... img_19); process p has p, p + 2, ...
  for process_index in range(2):
    assert seen[process_index] == {_colour(i) for i in range(process_index, NUM_IMAGES, 2)}


@pytest.mark.parametrize('augment', [True, False])
def test_crops_are_windows_of_the_images(texture_folder, augment):
  """Each HR crop is an exact window of one image, flipped/turned only if augmenting."""
  folder, images = texture_folder
  windows = [np.lib.stride_tricks.sliding_window_view(image, (CROP, CROP, 3))[..., 0, :, :, :]
             for image in images]  # [rows, cols, CROP, CROP, 3] each.
  iterator = _input(_config([folder], augment=augment), batch_size=5).iterator(0)
  used_symmetries = set()
  for _ in range(6):
    hr = np.round((next(iterator)['hr'] + 1.0) * 127.5).astype(np.uint8)
    for crop in hr:
      matches = set()
      for which, symmetric in enumerate(_symmetries(crop)):
        for image_windows in windows:
          # Windows whose top-left pixel matches (noise: almost always the one), in full.
          starts = np.argwhere((image_windows[:, :, 0, 0] == symmetric[0, 0]).all(axis=-1))
          if any((image_windows[row, col] == symmetric).all() for row, col in starts):
            matches.add(which)
      assert matches, 'crop is not a window of any image'
      used_symmetries |= matches
  if augment:
    assert len(used_symmetries) > 4
  else:
    assert used_symmetries == {0}


def _locate(crop: np.ndarray, images: list[np.ndarray]) -> tuple[int, int, int, int]:
  """``(image, top, left, symmetry)`` of the one window of noise ``images`` that
  ``crop`` is symmetry ``symmetry`` of (``_symmetries`` order)."""
  found = []
  for which, symmetric in enumerate(_symmetries(crop)):
    for index, image in enumerate(images):
      height, width = image.shape[:2]
      for top, left in np.argwhere((image[:height - CROP + 1, :width - CROP + 1]
                                    == symmetric[0, 0]).all(axis=-1)):
        if (image[top:top + CROP, left:left + CROP] == symmetric).all():
          found.append((index, int(top), int(left), which))
  assert len(found) == 1, found
  return found[0]


@pytest.mark.parametrize('cache', [True, False])
def test_lr_is_evaluations_lr_of_the_same_region(texture_folder, cache):
  """Training degrades as evaluation does: the LR crop is the region, in register
  with the HR crop, of evaluate's LR of the whole (modcropped) image, uint8."""
  folder, images = texture_folder
  evaluation_lrs = [degradation.make_lr(degradation.modcrop(image, SCALE), SCALE)
                    for image in images]
  iterator = _input(_config([folder], cache=cache), batch_size=5).iterator(0)
  lr_size = CROP // SCALE
  symmetries, edges = set(), 0
  for _ in range(8):
    batch = next(iterator)
    levels = batch['lr'] * 255.0
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)  # uint8, rounded.
    for hr, lr in zip(np.round((batch['hr'] + 1.0) * 127.5).astype(np.uint8),
                      np.round(levels).astype(np.uint8)):
      index, top, left, symmetry = _locate(hr, images)
      assert top % SCALE == 0 and left % SCALE == 0, (top, left)
      region = evaluation_lrs[index][top // SCALE:top // SCALE + lr_size,
                                     left // SCALE:left // SCALE + lr_size]
      np.testing.assert_array_equal(_symmetries(lr)[symmetry], region)
      symmetries.add(symmetry)
      lr_height, lr_width = evaluation_lrs[index].shape[:2]
      edges += top == 0 or left == 0 or (top // SCALE + lr_size == lr_height) or (
          left // SCALE + lr_size == lr_width)
  assert len(symmetries) > 4 and edges > 5  # Augmented; image borders exercised.


@pytest.fixture(name='mixed_folder')
def fixture_mixed_folder(tmp_path) -> tuple[pathlib.Path, set[tuple[int, int, int]]]:
  """Good images of every kind, unusable files, and the colours to expect."""
  folder = tmp_path / 'mixed'
  folder.mkdir()
  expected = set()
  for i in range(4):
    (folder / f'good_{i}.png').write_bytes(_encode(np.full((40, 48, 3), _colour(i), np.uint8)))
    expected.add(_colour(i))
  (folder / 'good.bmp').write_bytes(_encode(np.full((20, 20, 3), (1, 2, 3), np.uint8), 'BMP'))
  (folder / 'good.WEBP').write_bytes(
      _encode(np.full((20, 20, 3), (4, 5, 6), np.uint8), 'WEBP', lossless=True))
  expected |= {(1, 2, 3), (4, 5, 6)}
  gray = np.full((20, 24), 77, np.uint8)
  (folder / 'gray.png').write_bytes(_encode(gray))
  expected.add((77, 77, 77))
  # 16-bit: 0xFF00 keeps its high byte, 0xFF (scaling by 255 / 65535 gives 0xFE).
  (folder / 'gray16.png').write_bytes(_encode(np.full((20, 24), 0xFF00, np.uint16)))
  expected.add((0xFF, 0xFF, 0xFF))
  rgba = np.zeros((20, 24, 4), np.uint8)
  rgba[...] = (10, 20, 30, 0)  # Transparent: the colour is kept, not composited.
  (folder / 'rgba.png').write_bytes(_encode(rgba))
  expected.add((10, 20, 30))
  palette = Image.new('P', (24, 20), 1)
  palette.putpalette([0, 0, 0, 200, 100, 50])
  buffer = io.BytesIO()
  palette.save(buffer, 'PNG')
  (folder / 'palette.png').write_bytes(buffer.getvalue())
  expected.add((200, 100, 50))
  good_png = _encode(np.full((40, 48, 3), (9, 9, 9), np.uint8))
  (folder / 'truncated.png').write_bytes(good_png[:len(good_png) // 2])
  (folder / 'text.png').write_text('not an image')
  (folder / 'small.png').write_bytes(_encode(np.full((CROP - 1, 30, 3), (8, 8, 8), np.uint8)))
  (folder / 'notes.txt').write_text('not an image file name: ignored')
  return folder, expected


@pytest.mark.parametrize('cache', [True, False])
def test_unusual_and_unusable_files(mixed_folder, caplog, cache):
  folder, expected = mixed_folder
  caplog.set_level(logging.INFO)
  # A batch as large as the usable images holds each of them once.
  train_input = _input(_config([folder], cache=cache), batch_size=len(expected))
  iterator = train_input.iterator(0)
  for _ in range(3):
    assert set(_colours(next(iterator)['hr'])) == expected
  messages = [record.getMessage() for record in caplog.records]
  if cache:
    assert train_input.num_images == len(expected)
    summary = [m for m in messages if 'cached' in m]
    assert len(summary) == 1, messages
    assert 'skipped 2 undecodable and 1 smaller' in summary[0]
  else:
    assert train_input.num_images == len(expected) + 3  # Found out when drawn.
    for name in ('truncated.png', 'text.png', 'small.png'):
      assert sum(name in m for m in messages) == 1, messages  # Once, not per step.


@pytest.mark.parametrize('cache', [True, False])
def test_no_usable_images_is_one_error_at_start(tmp_path, cache):
  folder = tmp_path / 'broken'
  folder.mkdir()
  (folder / 'text.png').write_text('not an image')
  (folder / 'small.png').write_bytes(_encode(np.zeros((8, 8, 3), np.uint8)))
  with pytest.raises(ValueError, match='broken'):
    _input(_config([folder], cache=cache), batch_size=1)


def test_source_errors(tmp_path, colour_folder):
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(ValueError, match='empty'):
    _input(_config([empty]))
  with pytest.raises(FileNotFoundError, match='missing'):
    _input(_config([tmp_path / 'missing']))
  with pytest.raises(ValueError, match='fewer than the per-host batch'):
    _input(_config([colour_folder]), batch_size=NUM_IMAGES + 1)


def _tfds_examples() -> list[dict[str, bytes]]:
  """DIV2K-like examples: 'hr' holds the image, image i of colour _colour(i)."""
  examples = [{'hr': _encode(np.full((40, 48, 3), _colour(i), np.uint8)), 'lr': b''}
              for i in range(10)]
  examples[4]['hr'] = b'corrupt'
  examples[7]['hr'] = _encode(np.zeros((8, 8, 3), np.uint8))
  return examples


def _tfds_config(cache: bool) -> ml_collections.ConfigDict:
  return _config([], source='tfds', tfds_name='div2k/bicubic_x4', tfds_image_key='hr',
                 cache=cache)


@pytest.mark.parametrize('cache', [True, False])
def test_tfds_random_access(cache):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  examples = _tfds_examples()

  def as_data_source(self, split, decoders=None, **kwargs):
    del self, kwargs
    assert split == 'train'
    # The image must come back encoded, to be decoded by the pipeline's rules.
    assert isinstance(decoders['hr'], tfds.decode.SkipDecoding)
    return examples

  seen = []
  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    for process_index in range(2):
      train_input = _input(_tfds_config(cache), batch_size=3, process_index=process_index,
                           process_count=2)
      iterator = train_input.iterator(0)
      seen.append({colour for _ in range(15) for colour in _colours(next(iterator)['hr'])})
  # Process p reads examples p, p + 2, ...; 4 is corrupt and 7 too small.
  assert seen[0] == {_colour(i) for i in (0, 2, 6, 8)}
  assert seen[1] == {_colour(i) for i in (1, 3, 5, 9)}


def test_tfds_without_random_access():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  examples = _tfds_examples()

  def as_data_source(self, *args, **kwargs):
    raise NotImplementedError('Random access data source for file format tfrecord')

  def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    del self, decoders, read_config
    assert split == 'train' and not shuffle_files
    return tf.data.Dataset.from_tensor_slices(
        {key: [example[key] for example in examples] for key in ('hr', 'lr')})

  with tfds.testing.mock_data(as_data_source_fn=as_data_source, as_dataset_fn=as_dataset):
    with pytest.raises(ValueError, match='array_record'):
      _input(_tfds_config(cache=False))
    # Cached, a TFRecord split is read once, in order.
    iterator = _input(_tfds_config(cache=True), batch_size=3, process_index=1,
                      process_count=2).iterator(0)
    seen = {colour for _ in range(15) for colour in _colours(next(iterator)['hr'])}
  assert seen == {_colour(i) for i in (1, 3, 5, 9)}


def test_training_folders_in_a_bucket_are_read_as_local_ones(tmp_path):
  """data.folders on gs:// (a fake bucket), subfolders included: before, pathlib's
  exists() on gs://... crashed the run at its start."""
  from conftest import fake_bucket, write_blocky_images  # pylint: disable=g-import-not-at-top
  write_blocky_images(tmp_path / 'train', 2, (48, 40), seed=5)
  write_blocky_images(tmp_path / 'train' / 'more', 1, (40, 48), seed=6)
  local = sources.folder_source([str(tmp_path / 'train')], 0, 1)
  with fake_bucket(tmp_path):
    remote = sources.folder_source(['gs://bucket/train'], 0, 1)
    assert [remote.name(i) for i in range(remote.num_images)] == [
        'gs://bucket/train/img00.png', 'gs://bucket/train/img01.png',
        'gs://bucket/train/more/img00.png']
    assert [remote.read(i) for i in range(3)] == [local.read(i) for i in range(3)]
