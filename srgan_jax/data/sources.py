"""Training images: where they come from, which are usable, and decoding them.

Sources (``data.source``):

* ``'folders'``: every image file (``image_io.IMAGE_SUFFIXES``) under
  ``data.folders``, searched recursively; an entry may also name one image file.
* ``'tfds'``: split ``data.tfds_split`` of ``data.tfds_name``, the image in
  feature ``data.tfds_image_key``. Streaming (``cache=False``) needs random
  access (array_record or parquet files, ``tfds.data_source``): step ``s``
  reads exactly the examples it needs, so resuming costs nothing. A TFRecord
  dataset has no random access; the alternative, a seeded per-epoch shuffle
  with ``skip`` to the start step, would re-read every example before the
  resume point (11 epochs of ImageNet to resume at step 900k) and only
  approximate a shuffle, so it is refused: convert the dataset once
  (``tfds convert_format --dataset_dir=... --out_file_format=array_record``)
  or, if it is small, cache it (TFRecord is read once, in order, for that).

Per-host sharding. Images are numbered (files sorted by path, folder after
folder; TFDS examples in split order) and process ``p`` of ``P`` uses only
those whose number is ``p`` modulo ``P``, so hosts never share an image.

Decoding: files and TFDS examples alike by ``image_io``'s rules (``decode_image``),
as training states them: grey replicated to RGB, alpha dropped, 16-bit reduced to
the high byte, EXIF orientation ignored (the augmentation turns crops anyway).

Usability: images smaller than the crop on either side, and files that do not
decode completely (truncated, corrupt, not an image), are skipped and counted.
``decode_all`` (all images at start) logs one line with the counts;
``StreamedImages`` (each image when a step draws it) logs each unusable image
once, when first drawn, and answers None so that the step takes another. No
usable image at all is one error at start naming the source.

TensorFlow (for TFDS) is imported only inside functions.
"""

from collections.abc import Callable, Sequence
import concurrent.futures
import dataclasses
import functools
import os
import threading

from absl import logging
from etils import epath
import ml_collections
import numpy as np

from srgan_jax.imaging import degradation
from srgan_jax.imaging import image_io

# How many unusable files the start-up log line names.
_EXAMPLES_LOGGED = 3


def decode_image(data: bytes) -> np.ndarray:
  """Decodes an encoded image to uint8 RGB ``[H, W, 3]`` by training's rules
  (module docstring).

  Raises:
    image_io.UnreadableImageError: the data cannot be decoded completely.
  """
  return image_io.load_uint8(data, grey_to_rgb=True, upright=False)


@dataclasses.dataclass(frozen=True)
class Source:
  """This host's encoded images, by local index ``0 .. num_images - 1``."""
  description: str  # Names the folders or dataset, for messages.
  num_images: int
  read: Callable[[int], bytes]
  name: Callable[[int], str]  # Names one image (its path, or split and index).


def check_process(seed: int, process_index: int, process_count: int) -> None:
  """Raises ValueError for a seed or process numbering no training source can serve.

  The config's fields (crop size, crops per image, ...) were checked where the
  config entered (``training/config_rules``).
  """
  if seed < 0 or not 0 <= process_index < process_count:
    raise ValueError(f'Need seed >= 0 and 0 <= process_index < process_count, got '
                     f'{seed}, {process_index}, {process_count}')


def list_image_files(folders: Sequence[str]) -> list[epath.Path]:
  """The image files of ``folders`` (local or remote), numbered as training numbers
  them: sorted by path, folder after folder (module docstring)."""
  return [path for folder in folders for path in image_io.image_files(folder, recursive=True)]


def fits_crop(width: int, height: int, crop_size: int) -> bool:
  """Whether an image of this size gives a ``crop_size`` crop: the usability rule."""
  return min(width, height) >= crop_size


@dataclasses.dataclass(frozen=True)
class Share:
  """One host's share of some image files, judged by their headers."""
  process_index: int
  num_files: int
  usable: int  # At least the crop on both sides.
  unreadable: int  # No readable image header.
  # The shorter side of each readable image; complete only when usable < the batch.
  short_sides: tuple[int, ...]


def short_shares(files: Sequence[epath.Path], crop_size: int, batch_per_host: int,
                 process_count: int) -> list[Share]:
  """The hosts whose share of local ``files`` has fewer than ``batch_per_host``
  images that fit the crop (each crop of a batch needs its own image).

  Reads image headers only (``image_io.image_size``), and stops reading a host's
  share once it has enough: a few header reads for a large, usable dataset. A
  readable header can still hide a truncated file; the input pipeline skips those.
  """
  shares = []
  for process_index in range(process_count):
    local = files[process_index::process_count]
    usable, unreadable, short_sides = 0, 0, []
    for path in local:
      try:
        width, height = image_io.image_size(path)
      except image_io.UnreadableImageError:
        unreadable += 1
        continue
      short_sides.append(min(width, height))
      usable += fits_crop(width, height, crop_size)
      if usable >= batch_per_host:
        break
    if usable < batch_per_host:
      shares.append(Share(process_index, len(local), usable, unreadable, tuple(short_sides)))
  return shares


def folder_source(folders: str | Sequence[str], process_index: int,
                  process_count: int) -> Source:
  """Image files under ``folders`` (directories, or image files named one by one),
  every ``process_count``-th one."""
  folders = [folders] if isinstance(folders, str) else list(folders)
  missing = [folder for folder in folders if not epath.Path(folder).exists()]
  if not folders or missing:
    raise FileNotFoundError(f'data.folders: not found: {missing or folders}')
  paths = list_image_files(folders)
  if not paths:
    raise ValueError(f'No image files ({", ".join(image_io.IMAGE_SUFFIXES)}) in folders '
                     f'{folders}')
  local = paths[process_index::process_count]
  return Source(
      description=f'folders {folders}', num_images=len(local),
      read=lambda i: local[i].read_bytes(), name=lambda i: str(local[i]))


def tfds_problem(name: str, data_dir: str | None, image_key: str) -> str | None:
  """Why ``data.source='tfds'`` cannot read dataset ``name`` (data.tfds_name) on this
  machine (not registered, not prepared in ``data_dir``, no feature ``image_key``),
  with how to get the data; else None. Asks TFDS itself (``tfds.builder``,
  ``is_prepared``: the dataset_info.json it writes when it prepares a dataset) and
  downloads nothing."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  folders = 'or train from image folders: --config.data.source=folders --config.data.folders=DIR'
  verbosity = logging.get_verbosity()
  # TFDS logs a warning for the folder it looks in; the problem returned says it.
  logging.set_verbosity(logging.ERROR)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    prepared = builder.is_prepared()
  except tfds.core.registered.DatasetNotFoundError:
    return (f'data.tfds_name={name!r} is not a TFDS dataset: name one of '
            f'https://www.tensorflow.org/datasets/catalog, {folders}')
  finally:
    logging.set_verbosity(verbosity)
  if not prepared:
    where = builder.data_dir_root  # data.tfds_data_dir, else TFDS's default.
    manual = (f' (it needs its files downloaded by hand first, into --manual_dir: see '
              f'https://www.tensorflow.org/datasets/catalog/{name.split("/")[0]})'
              if builder.MANUAL_DOWNLOAD_INSTRUCTIONS else '')
    return (f'TFDS dataset {name!r} is not prepared in {where} (no {builder.data_dir}/'
            f'dataset_info.json): prepare it once with `tfds build {name} '
            f'--data_dir={where}`{manual}, set data.tfds_data_dir to where it is '
            f'prepared, {folders}')
  features = builder.info.features
  if image_key not in features:
    return (f'data.tfds_image_key={image_key!r} is not a feature of '
            f'{name} (it has {", ".join(sorted(features.keys()))})')
  return None


def tfds_source(config: ml_collections.ConfigDict, process_index: int,
                process_count: int, random_access: bool) -> Source:
  """The encoded images of a TFDS split, every ``process_count``-th example."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = tfds.builder(config.tfds_name, data_dir=config.tfds_data_dir)
  features = builder.info.features
  key = config.tfds_image_key
  if key not in features:
    raise KeyError(f'data.tfds_image_key {key!r} is not a feature of {config.tfds_name}: '
                   f'{sorted(features.keys())}')
  # Images come back encoded, to be decoded by this module's rules; other image
  # features (e.g. DIV2K's LR) are left encoded because they are never used.
  decoders = {name: tfds.decode.SkipDecoding() for name, feature in features.items()
              if name == key or isinstance(feature, tfds.features.Image)}
  description = f'TFDS {config.tfds_name!r} split {config.tfds_split!r}'
  try:
    examples = builder.as_data_source(split=config.tfds_split, decoders=decoders)
  except NotImplementedError as e:  # TFDS's answer for TFRecord files.
    if random_access:
      raise ValueError(
          f'{description} has no random access (TFRecord files), which streaming '
          '(data.cache=False) needs to resume without re-reading. Convert it once: '
          'tfds convert_format --dataset_dir=DIR --out_file_format=array_record, '
          'or set data.cache=True if it fits in memory.') from e
    dataset = builder.as_dataset(split=config.tfds_split, decoders=decoders, shuffle_files=False)
    dataset = dataset.shard(process_count, process_index).map(lambda example: example[key])
    encoded = list(dataset.as_numpy_iterator())
    indices = range(process_index, process_index + process_count * len(encoded), process_count)
    read = encoded.__getitem__
  else:
    indices = range(process_index, len(examples), process_count)
    read = lambda i: examples[indices[i]][key]
  return Source(
      description=description, num_images=len(indices), read=read,
      name=lambda i: f'{config.tfds_name}[{config.tfds_split}][{indices[i]}]')


def open_source(data_config: ml_collections.ConfigDict, process_index: int,
                process_count: int) -> Source:
  """This host's share of the images of ``data.source`` (module docstring)."""
  if data_config.source == 'folders':
    return folder_source(data_config.folders, process_index, process_count)
  if data_config.source == 'tfds':
    return tfds_source(data_config, process_index, process_count,
                       random_access=not data_config.cache)
  raise ValueError(f"data.source must be 'folders' or 'tfds', not {data_config.source!r}")


def load_usable(source: Source, index: int, crop_size: int) -> tuple[np.ndarray | None, str]:
  """Reads and decodes one image; ``(None, why)`` when it is unusable."""
  try:
    image = decode_image(source.read(index))
  except image_io.UnreadableImageError as e:  # Names PIL's error.
    return None, f'undecodable ({e})'
  # Reading can fail too, and PIL's decoders raise other types on some odd files;
  # a long run must not stop for one image.
  except Exception as e:  # pylint: disable=broad-except
    return None, f'undecodable ({type(e).__name__}: {e})'
  height, width = image.shape[:2]
  if not fits_crop(width, height, crop_size):
    return None, f'smaller than the crop ({width}x{height} < {crop_size}x{crop_size})'
  return image, ''


def decode_all(source: Source, crop_size: int, process_index: int,
               process_count: int) -> list[np.ndarray]:
  """Decodes every image of ``source``; logs one line with what was skipped."""
  load = functools.partial(load_usable, source, crop_size=crop_size)
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    loaded = list(pool.map(load, range(source.num_images)))
  images = [image for image, _ in loaded if image is not None]
  problems = [f'{source.name(i)}: {why}' for i, (image, why) in enumerate(loaded) if image is None]
  too_small = sum(why.startswith('smaller') for image, why in loaded if image is None)
  where = f'{source.description}, process {process_index} of {process_count}'
  if not images:
    raise ValueError(f'No usable training images in {where}: all {len(problems)} are '
                     f'undecodable or smaller than the crop, e.g. {problems[:_EXAMPLES_LOGGED]}')
  log = logging.warning if problems else logging.info
  log('%s: cached %d images (%.0f MB); skipped %d undecodable and %d smaller than the '
      '%dx%d crop%s', where, len(images), sum(image.nbytes for image in images) / 2**20,
      len(problems) - too_small, too_small, crop_size, crop_size,
      f', e.g. {problems[:_EXAMPLES_LOGGED]}' if problems else '')
  return images


class StreamedImages:
  """Decodes images (and makes their LR, ``degradation.training_pair``) on demand;
  remembers and logs each unusable one once."""

  def __init__(self, source: Source, crop_size: int, scale: int):
    self._source = source
    self._crop_size = crop_size
    self._scale = scale
    self._unusable: set[int] = set()
    self._lock = threading.Lock()  # tf.data calls from several threads.

  def __call__(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Image ``index`` as ``(hr, lr)``, or None when it is unusable."""
    if index in self._unusable:
      return None
    image, why = load_usable(self._source, index, self._crop_size)
    if image is None:
      with self._lock:
        if index not in self._unusable:
          self._unusable.add(index)
          logging.warning('Skipping %s: %s (%d unusable images so far in %s).',
                          self._source.name(index), why, len(self._unusable),
                          self._source.description)
      return None
    return degradation.training_pair(image, self._scale)
