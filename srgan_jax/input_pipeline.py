"""Training input: random HR crops and their bicubic LR, per host, resumable.

Each step's batch holds ``batch_size`` crops of ``crop_size`` x ``crop_size``
pixels, each from a DIFFERENT image (the paper's 16 crops from 16 images), with
a random offset and, when ``augment`` is on, one of the 8 symmetries of the
square (flips and quarter turns).

Degradation: the LR input is made as the benchmarks (``evaluate``) make theirs:
each image is cropped to a multiple of the scale, downsampled WHOLE by
MATLAB-exact bicubic (``evaluate.make_lr``, antialiased, rounded to uint8), and
the LR and HR crops are cut in register (the HR crop's offset is a multiple of
the scale) and given the same symmetry. So a training LR crop equals the
corresponding region of the LR that evaluation feeds the model, border rings and
rounding included (``training_pair``). LR is scaled to [0, 1], HR to [-1, 1].

Determinism and resumption. Every random choice for step ``s`` comes from a
NumPy generator seeded with ``(seed, process_index, s // crops_per_image)``, so
the batch for step ``s`` depends only on the seed, the step and the data, never
on iterator state: a run restarted at step ``s`` sees exactly the batches an
uninterrupted run would (same ``process_count``; same NumPy, whose ``Generator``
algorithms may change between releases). The tf.data graph: counter from
``start // k`` -> parallel deterministic map, NumPy (``tf.numpy_function``):
choose images, crop LR and HR, augment -> unbatch the ``k`` steps, skip to
``start`` -> parallel deterministic map, TF: scale to float -> prefetch.

Per-host sharding. Images are numbered (files sorted by path, folder after
folder; TFDS examples in split order) and process ``p`` of ``P`` uses only
those whose number is ``p`` modulo ``P``, so hosts never share an image.

Sources (``data.source``):

* ``'folders'``: every .png, .jpg/.jpeg, .bmp and .webp file under
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

``data.cache=True`` decodes this host's images (and makes their LR) once, at
start, into memory (for small sets like T91 + BSD200; about 110 MB decoded).
``cache=False`` decodes each chosen image (and makes its LR) when a step needs it; ``data.crops_per_image = k``
then lets one decoded image serve ``k`` consecutive steps (step ``s`` uses the
images drawn for ``s // k`` and its own crop), which divides decoding work by
``k`` while keeping every batch's images distinct. Cached images are cheap to
crop, so ``crops_per_image`` is ignored with ``cache=True``.

Image rules, the same for files and TFDS (both decoded with PIL):

* grayscale (and 1-bit) -> replicated to RGB; palette -> its RGB colours;
  CMYK, YCbCr and other colour modes -> PIL's conversion to RGB;
* RGBA / LA / PA -> the alpha channel is dropped, not composited: the stored
  colour is the image content, and a background would invent some;
* 16-bit samples -> the high byte (``v >> 8``), which is what PIL itself does
  when it opens a 16-bit colour PNG;
* EXIF orientation is ignored (the augmentation rotates anyway); animated
  files give their first frame;
* images smaller than the crop on either side, and files that do not decode
  completely (truncated, corrupt, not an image), are skipped and counted.
  With ``cache=True`` one log line at start gives the counts; when streaming,
  each unusable image is logged once, when first drawn, and the step takes
  the next candidate image instead, so nothing crashes or hangs mid-training.
* no usable images at all (or fewer than ``batch_size`` on a host, which could
  not give distinct images) -> one error at start naming the source.

TensorFlow is imported only inside functions, so importing this module does not
load it.
"""

import atexit
from collections.abc import Callable, Iterable, Iterator, Sequence
import concurrent.futures
import dataclasses
import functools
import io
import os
import pathlib
import threading
from typing import Any
import weakref

from absl import logging
import ml_collections
import numpy as np
from PIL import Image

from srgan_jax import evaluate
from srgan_jax import image_io

IMAGE_EXTENSIONS = ('.bmp', '.jpeg', '.jpg', '.png', '.webp')

# PIL modes of 16-bit single-channel images ('I' is how older Pillow opens them).
_SIXTEEN_BIT_MODES = frozenset({'I', 'I;16', 'I;16B', 'I;16L', 'I;16N'})

# How many unusable files the start-up log line names.
_EXAMPLES_LOGGED = 3


def decode_image(data: bytes) -> np.ndarray:
  """Decodes an encoded image to uint8 RGB ``[H, W, 3]`` by the module's rules.

  Args:
    data: the bytes of a PNG, JPEG, BMP or WebP file (any format PIL reads).

  Returns:
    The image as a uint8 ``[H, W, 3]`` array.

  Raises:
    Whatever PIL raises for data it cannot decode completely (OSError,
    SyntaxError, ValueError, DecompressionBombError, ...).
  """
  with Image.open(io.BytesIO(data)) as image:
    image.load()  # Decode everything now, so that a truncated file fails here.
    if image.mode in _SIXTEEN_BIT_MODES:
      gray = image_io.reduce_to_8_bits(np.asarray(image))
      return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(image.convert('RGB'))


def training_pair(image: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
  """An image as evaluation degrades it: ``(hr, lr)``, both uint8.

  ``hr`` is ``image`` cropped to a multiple of ``scale`` (``evaluate.modcrop``) and
  ``lr`` its MATLAB bicubic downsampling, rounded to uint8 (``evaluate.make_lr``):
  LR pixel ``(i, j)`` covers HR pixels ``[i * scale, (i + 1) * scale)`` x
  ``[j * scale, (j + 1) * scale)``, so crops at offsets ``(t, l)`` of ``lr`` and
  ``(t * scale, l * scale)`` of ``hr`` are in register.
  """
  hr = evaluate.modcrop(image, scale)
  return hr, evaluate.make_lr(hr, scale)


@dataclasses.dataclass(frozen=True)
class _Source:
  """This host's encoded images, by local index ``0 .. num_images - 1``."""
  description: str  # Names the folders or dataset, for messages.
  num_images: int
  read: Callable[[int], bytes]
  name: Callable[[int], str]  # Names one image (its path, or split and index).


def _load_usable(source: _Source, index: int, crop_size: int) -> tuple[np.ndarray | None, str]:
  """Reads and decodes one image; ``(None, why)`` when it is unusable."""
  try:
    image = decode_image(source.read(index))
  # PIL reports bad data with many exception types (SyntaxError for a broken PNG
  # chunk, OSError for truncation, ...); any of them means "skip this image".
  except Exception as e:  # pylint: disable=broad-except
    return None, f'undecodable ({type(e).__name__}: {e})'
  height, width = image.shape[:2]
  if min(height, width) < crop_size:
    return None, f'smaller than the crop ({width}x{height} < {crop_size}x{crop_size})'
  return image, ''


def check_settings(crop_size: int, scale: int, seed: int, process_index: int,
                   process_count: int) -> None:
  """Raises ValueError for settings no training source can serve."""
  if crop_size % scale:
    raise ValueError(f'data.crop_size {crop_size} is not a multiple of the scale {scale}')
  if seed < 0 or not 0 <= process_index < process_count:
    raise ValueError(f'Need seed >= 0 and 0 <= process_index < process_count, got '
                     f'{seed}, {process_index}, {process_count}')


def folder_source(folders: str | Sequence[str], process_index: int,
                  process_count: int) -> _Source:
  """Image files under ``folders`` (directories, or image files named one by one),
  every ``process_count``-th one."""
  folders = [folders] if isinstance(folders, str) else list(folders)
  missing = [folder for folder in folders if not pathlib.Path(folder).exists()]
  if not folders or missing:
    raise FileNotFoundError(f'data.folders: not found: {missing or folders}')
  paths = []
  for folder in map(pathlib.Path, folders):
    if folder.is_file():
      paths.append(folder)
      continue
    paths.extend(sorted(
        path for path in folder.rglob('*')
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()))
  if not paths:
    raise ValueError(f'No image files ({", ".join(IMAGE_EXTENSIONS)}) in folders {folders}')
  local = paths[process_index::process_count]
  return _Source(
      description=f'folders {folders}', num_images=len(local),
      read=lambda i: local[i].read_bytes(), name=lambda i: str(local[i]))


def _tfds_source(config: ml_collections.ConfigDict, process_index: int,
                 process_count: int, random_access: bool) -> _Source:
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
  return _Source(
      description=description, num_images=len(indices), read=read,
      name=lambda i: f'{config.tfds_name}[{config.tfds_split}][{indices[i]}]')


def decode_all(source: _Source, crop_size: int, process_index: int,
                process_count: int) -> list[np.ndarray]:
  """Decodes every image of ``source``; logs one line with what was skipped."""
  load = functools.partial(_load_usable, source, crop_size=crop_size)
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


class _StreamedImages:
  """Decodes images (and makes their LR) on demand; remembers and logs each
  unusable one once."""

  def __init__(self, source: _Source, crop_size: int, scale: int):
    self._source = source
    self._crop_size = crop_size
    self._scale = scale
    self._unusable: set[int] = set()
    self._lock = threading.Lock()  # tf.data calls from several threads.

  def __call__(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
    if index in self._unusable:
      return None
    image, why = _load_usable(self._source, index, self._crop_size)
    if image is None:
      with self._lock:
        if index not in self._unusable:
          self._unusable.add(index)
          logging.warning('Skipping %s: %s (%d unusable images so far in %s).',
                          self._source.name(index), why, len(self._unusable),
                          self._source.description)
      return None
    return training_pair(image, self._scale)


def _dihedral(image: np.ndarray, which: int) -> np.ndarray:
  """Symmetry ``which`` (0..7) of the square: quarter turns, then a mirror if >= 4."""
  image = np.rot90(image, which % 4)
  return image[:, ::-1] if which >= 4 else image


class _Batches(Iterator[dict[str, np.ndarray]]):
  """A dataset's NumPy batches, closed before the interpreter exits.

  tf.data threads running Python (``tf.numpy_function``) cannot take the GIL
  once the interpreter is finalizing, and deleting an iterator waits for them,
  so an iterator still alive then (a global, or one held by the traceback of
  an exception) hangs the process at exit. ``atexit`` handlers run before
  finalization: ``close_all`` deletes the open iterators there.
  """

  _open: weakref.WeakSet['_Batches'] = weakref.WeakSet()

  def __init__(self, dataset: Any):
    self._iterator = dataset.as_numpy_iterator()
    _Batches._open.add(self)

  def __next__(self) -> dict[str, np.ndarray]:
    if self._iterator is None:
      raise StopIteration
    return next(self._iterator)

  def close(self) -> None:
    """Stops the pipeline's threads now."""
    self._iterator = None
    _Batches._open.discard(self)

  @staticmethod
  def close_all() -> None:
    for batches in list(_Batches._open):
      batches.close()


atexit.register(_Batches.close_all)


class TrainInput:
  """One host's training batches; ``batch(step)`` depends only on seed and step.

  Attributes:
    num_images: this host's images: the usable ones when cached; when streaming,
      all files or examples (unusable ones are found when first drawn).
  """

  def __init__(self, data_config: ml_collections.ConfigDict, *, scale: int,
               batch_size: int, seed: int, process_index: int = 0,
               process_count: int = 1):
    """Opens (and with ``cache=True`` decodes) the source; checks it is usable.

    Args:
      data_config: ``config.data`` (fields in the module docstring).
      scale: super-resolution factor; must divide ``crop_size``.
      batch_size: crops per step on this host (from as many distinct images).
      seed: non-negative base seed.
      process_index: this host, ``0 .. process_count - 1``.
      process_count: number of hosts.

    Raises:
      ValueError or FileNotFoundError: bad settings, or a source without
        ``batch_size`` usable images on this host.
    """
    crop_size = data_config.crop_size
    check_settings(crop_size, scale, seed, process_index, process_count)
    if data_config.source == 'folders':
      source = folder_source(data_config.folders, process_index, process_count)
    elif data_config.source == 'tfds':
      source = _tfds_source(data_config, process_index, process_count,
                            random_access=not data_config.cache)
    else:
      raise ValueError(f"data.source must be 'folders' or 'tfds', not {data_config.source!r}")
    self._config = data_config
    self._scale = scale
    self._batch_size = batch_size
    self._seed = seed
    self._process_index = process_index
    self._description = f'{source.description}, process {process_index} of {process_count}'
    self._load: Callable[[int], tuple[np.ndarray, np.ndarray] | None]
    if data_config.cache:
      pairs = [training_pair(image, scale)
               for image in decode_all(source, crop_size, process_index, process_count)]
      self._load = pairs.__getitem__
      self.num_images = len(pairs)
      self._crops_per_image = 1
    else:
      self._load = _StreamedImages(source, crop_size, scale)
      self.num_images = source.num_images
      self._crops_per_image = data_config.crops_per_image
      if self._crops_per_image < 1:
        raise ValueError(f'data.crops_per_image must be >= 1, not {self._crops_per_image}')
    if self.num_images < batch_size:
      raise ValueError(f'{self._description} has {self.num_images} images, fewer than '
                       f'the per-host batch of {batch_size} (each crop needs its own image)')
    if not data_config.cache:
      # Fail now, naming the source, if too few images are usable; not inside tf.data.
      self._crops(0)

  def _choose_images(self, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """``batch_size`` distinct usable images, drawn at random, as ``(hr, lr)`` pairs."""
    size = self._batch_size

    def take_usable(indices: Iterable[int], images: list[Any]) -> list[Any]:
      for index in indices:
        if len(images) == size:
          break
        image = self._load(int(index))
        if image is not None:
          images.append(image)
      return images

    # Twice the batch leaves room for a few unusable streamed images without an
    # O(num_images) permutation at every step.
    candidates = rng.choice(self.num_images, size=min(self.num_images, 2 * size), replace=False)
    images = take_usable(candidates, [])
    if len(images) < size:
      tried = set(candidates.tolist())
      images = take_usable((i for i in rng.permutation(self.num_images) if i not in tried),
                           images)
    if len(images) < size:
      raise ValueError(f'{self._description}: only {len(images)} of {self.num_images} images '
                       f'are usable, fewer than the per-host batch of {size}')
    return images

  def _crops(self, group: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 HR crops ``[k, b, crop, crop, 3]`` and their LR ``[k, b, crop / scale,
    crop / scale, 3]``, of steps ``group * k .. group * k + k - 1``."""
    rng = np.random.default_rng([self._seed, self._process_index, int(group)])
    pairs = self._choose_images(rng)
    k, crop, scale = self._crops_per_image, self._config.crop_size, self._scale
    lr_crop = crop // scale
    # Per crop: top and left offsets on the LR grid, and a symmetry of the square.
    draws = rng.random((k, self._batch_size, 3))
    ranges = np.array([lr.shape[:2] for _, lr in pairs]) - lr_crop + 1
    tops = (draws[:, :, 0] * ranges[:, 0]).astype(np.int64)
    lefts = (draws[:, :, 1] * ranges[:, 1]).astype(np.int64)
    symmetries = (draws[:, :, 2] * 8).astype(np.int64)
    hr_crops = np.empty((k, self._batch_size, crop, crop, 3), np.uint8)
    lr_crops = np.empty((k, self._batch_size, lr_crop, lr_crop, 3), np.uint8)
    for j in range(k):
      for slot, (hr, lr) in enumerate(pairs):
        top, left = tops[j, slot], lefts[j, slot]
        hr_window = hr[top * scale:(top + lr_crop) * scale, left * scale:(left + lr_crop) * scale]
        lr_window = lr[top:top + lr_crop, left:left + lr_crop]
        if self._config.augment:
          # In NumPy, not the graph: TF's uint8 transposes and selects cost ~10x more.
          hr_window = _dihedral(hr_window, symmetries[j, slot])
          lr_window = _dihedral(lr_window, symmetries[j, slot])
        hr_crops[j, slot], lr_crops[j, slot] = hr_window, lr_window
    return hr_crops, lr_crops

  @staticmethod
  def _model_inputs(hr: Any, lr: Any) -> dict[str, Any]:
    """LR in [0, 1] and HR in [-1, 1], float32, from uint8 crops."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return {'lr': tf.cast(lr, tf.float32) / 255.0, 'hr': tf.cast(hr, tf.float32) / 127.5 - 1.0}

  def dataset(self, start_step: int) -> Any:
    """A ``tf.data.Dataset`` of the batches of steps ``start_step, start_step + 1, ...``."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    if tf.config.list_physical_devices('GPU'):  # A full tensorflow on a GPU machine:
      try:  # keep TF off the accelerators JAX trains on.
        tf.config.set_visible_devices([], 'GPU')
      except RuntimeError:  # TF already started on them; nothing to change now.
        logging.warning('tensorflow already uses the GPUs; tf.data may take GPU memory.')
    k = self._crops_per_image
    crop = self._config.crop_size
    first_group = start_step // k

    def crops(group):
      hr, lr = tf.numpy_function(self._crops, [group], (tf.uint8, tf.uint8), stateful=False)
      lr_crop = crop // self._scale
      return (tf.ensure_shape(hr, [k, self._batch_size, crop, crop, 3]),
              tf.ensure_shape(lr, [k, self._batch_size, lr_crop, lr_crop, 3]))

    dataset = tf.data.Dataset.counter(first_group)
    dataset = dataset.map(crops, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.unbatch().skip(start_step - first_group * k)
    dataset = dataset.map(self._model_inputs, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
    return dataset.prefetch(self._config.prefetch)

  def iterator(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    """NumPy batches ``{'lr', 'hr'}`` of steps ``start_step, start_step + 1, ...``."""
    return _Batches(self.dataset(start_step))

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """The batch of ``step``, by the same graph as the iterator, so bit-identical."""
    return next(self.iterator(step))


def create_train_iterator(data_config: ml_collections.ConfigDict, *, scale: int,
                          batch_size: int, seed: int, start_step: int,
                          process_index: int = 0,
                          process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """This host's training batches for steps ``start_step, start_step + 1, ...``.

  Args:
    data_config: ``config.data`` (fields in the module docstring).
    scale: super-resolution factor; must divide ``data_config.crop_size``.
    batch_size: crops per step on this host.
    seed: non-negative base seed; the batch of step ``s`` depends only on
      ``(seed, s)``, the data and the host.
    start_step: the first step to produce (the restored step when resuming).
    process_index: this host, ``0 .. process_count - 1``.
    process_count: number of hosts; each uses a disjoint share of the images.

  Returns:
    An iterator of ``{'lr': float32 [b, crop/scale, crop/scale, 3] in [0, 1],
    'hr': float32 [b, crop, crop, 3] in [-1, 1]}``.
  """
  train_input = TrainInput(data_config, scale=scale, batch_size=batch_size, seed=seed,
                           process_index=process_index, process_count=process_count)
  return train_input.iterator(start_step)
