"""Training input: random HR crops and their bicubic LR, per host, resumable (tf.data).

Each step's batch holds ``batch_size`` crops of ``crop_size`` x ``crop_size``
pixels, each from a DIFFERENT image (the paper's 16 crops from 16 images), with
a random offset and, when ``augment`` is on, one of the 8 symmetries of the
square (``symmetry.dihedral``).

Images come from ``data/sources`` (folders or TFDS, this host's share, decoded
by ``image_io``'s rules as training states them, unusable ones skipped and
counted). Degradation: the LR input is made as the benchmarks make theirs
(``degradation.training_pair``: modcrop, the whole image downsampled by MATLAB
bicubic, rounded to uint8) and the LR and HR crops are cut in register (the HR
crop's offset is a multiple of the scale) and given the same symmetry. So a
training LR crop equals the corresponding region of the LR that evaluation feeds
the model, border rings and rounding included. LR is scaled to [0, 1], HR to
[-1, 1].

Determinism and resumption. Every random choice for step ``s`` comes from a
NumPy generator seeded with ``(seed, process_index, s // crops_per_image)``, so
the batch for step ``s`` depends only on the seed, the step and the data, never
on iterator state: a run restarted at step ``s`` sees exactly the batches an
uninterrupted run would (same ``process_count``; same NumPy, whose ``Generator``
algorithms may change between releases). The tf.data graph: counter from
``start // k`` -> parallel deterministic map, NumPy (``tf.numpy_function``):
choose images, crop LR and HR, augment -> unbatch the ``k`` steps, skip to
``start`` -> parallel deterministic map, TF: scale to float -> prefetch.

``data.cache=True`` decodes this host's images (and makes their LR) once, at
start, into memory (for small sets like T91 + BSD200; about 110 MB decoded).
``cache=False`` decodes each chosen image (and makes its LR) when a step needs
it; an unusable one is then found when first drawn and the step takes the next
candidate instead, so nothing crashes or hangs mid-training. ``data.crops_per_image
= k`` then lets one decoded image serve ``k`` consecutive steps (step ``s`` uses
the images drawn for ``s // k`` and its own crop), which divides decoding work by
``k`` while keeping every batch's images distinct. Cached images are cheap to
crop, so ``crops_per_image`` is ignored with ``cache=True``. Fewer usable images
on a host than ``batch_size`` (which could not give distinct images) is one error
at start naming the source.

TensorFlow is imported only inside functions, so importing this module does not
load it.
"""

import atexit
from collections.abc import Callable, Iterable, Iterator
from typing import Any
import weakref

from absl import logging
import ml_collections
import numpy as np

from srgan_jax.data import sources
from srgan_jax.imaging import degradation
from srgan_jax.imaging import symmetry

# Image ``index`` of this host as uint8 ``(hr, lr)``, or None when it is unusable.
_LoadFn = Callable[[int], tuple[np.ndarray, np.ndarray] | None]


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


def _image_loader(source: sources.Source, data_config: ml_collections.ConfigDict,
                  scale: int, process_index: int,
                  process_count: int) -> tuple[_LoadFn, int, int]:
  """``(load, num_images, crops_per_image)``: this host's images from memory
  (``cache``: decoded now, only the usable ones) or decoded on demand."""
  if data_config.cache:
    pairs = [degradation.training_pair(image, scale) for image in sources.decode_all(
        source, data_config.crop_size, process_index, process_count)]
    return pairs.__getitem__, len(pairs), 1
  return (sources.StreamedImages(source, data_config.crop_size, scale),
          source.num_images, data_config.crops_per_image)


def _take_usable(load: _LoadFn, indices: Iterable[int], pairs: list[Any],
                 size: int) -> list[Any]:
  """Appends the usable images of ``indices`` to ``pairs`` until it holds ``size``."""
  for index in indices:
    if len(pairs) == size:
      break
    pair = load(int(index))
    if pair is not None:
      pairs.append(pair)
  return pairs


def _choose_images(load: _LoadFn, num_images: int, size: int, rng: np.random.Generator,
                   description: str) -> list[tuple[np.ndarray, np.ndarray]]:
  """``size`` distinct usable images, drawn at random, as ``(hr, lr)`` pairs."""
  # Twice the batch leaves room for a few unusable streamed images without an
  # O(num_images) permutation at every step.
  candidates = rng.choice(num_images, size=min(num_images, 2 * size), replace=False)
  pairs = _take_usable(load, candidates, [], size)
  if len(pairs) < size:
    tried = set(candidates.tolist())
    pairs = _take_usable(load, (i for i in rng.permutation(num_images) if i not in tried),
                         pairs, size)
  if len(pairs) < size:
    raise ValueError(f'{description}: only {len(pairs)} of {num_images} images '
                     f'are usable, fewer than the per-host batch of {size}')
  return pairs


def _cut_crops(pairs: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator,
               steps: int, crop: int, scale: int,
               augment: bool) -> tuple[np.ndarray, np.ndarray]:
  """uint8 HR crops ``[steps, b, crop, crop, 3]`` and their LR ``[steps, b, crop /
  scale, crop / scale, 3]``, ``b = len(pairs)``, one of each pair per step."""
  lr_crop = crop // scale
  # Per crop: top and left offsets on the LR grid, and a symmetry of the square.
  draws = rng.random((steps, len(pairs), 3))
  ranges = np.array([lr.shape[:2] for _, lr in pairs]) - lr_crop + 1
  tops = (draws[:, :, 0] * ranges[:, 0]).astype(np.int64)
  lefts = (draws[:, :, 1] * ranges[:, 1]).astype(np.int64)
  symmetries = (draws[:, :, 2] * 8).astype(np.int64) if augment else np.zeros_like(tops)
  hr_crops = np.empty((steps, len(pairs), crop, crop, 3), np.uint8)
  lr_crops = np.empty((steps, len(pairs), lr_crop, lr_crop, 3), np.uint8)
  for j in range(steps):
    for slot, (hr, lr) in enumerate(pairs):
      top, left, which = tops[j, slot], lefts[j, slot], symmetries[j, slot]
      # In NumPy, not the graph: TF's uint8 transposes and selects cost ~10x more.
      hr_crops[j, slot] = symmetry.dihedral(
          hr[top * scale:(top + lr_crop) * scale, left * scale:(left + lr_crop) * scale], which)
      lr_crops[j, slot] = symmetry.dihedral(lr[top:top + lr_crop, left:left + lr_crop], which)
  return hr_crops, lr_crops


def _model_inputs(hr: Any, lr: Any) -> dict[str, Any]:
  """LR in [0, 1] and HR in [-1, 1], float32, from uint8 crops (TF)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return {'lr': tf.cast(lr, tf.float32) / 255.0, 'hr': tf.cast(hr, tf.float32) / 127.5 - 1.0}


def _keep_tensorflow_off_gpus() -> None:
  """Hides the GPUs from a full tensorflow, so that tf.data leaves them to JAX."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if tf.config.list_physical_devices('GPU'):
    try:
      tf.config.set_visible_devices([], 'GPU')
    except RuntimeError:  # TF already started on them; nothing to change now.
      logging.warning('tensorflow already uses the GPUs; tf.data may take GPU memory.')


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
      data_config: ``config.data`` (fields here and in ``data/sources``).
      scale: super-resolution factor; must divide ``crop_size``.
      batch_size: crops per step on this host (from as many distinct images).
      seed: non-negative base seed.
      process_index: this host, ``0 .. process_count - 1``.
      process_count: number of hosts.

    Raises:
      ValueError or FileNotFoundError: bad settings, or a source without
        ``batch_size`` usable images on this host.
    """
    sources.check_process(seed, process_index, process_count)
    source = sources.open_source(data_config, process_index, process_count)
    self._config = data_config
    self._scale = scale
    self._batch_size = batch_size
    self._seed = seed
    self._process_index = process_index
    self._description = f'{source.description}, process {process_index} of {process_count}'
    self._load, self.num_images, self._crops_per_image = _image_loader(
        source, data_config, scale, process_index, process_count)
    if self.num_images < batch_size:
      raise ValueError(f'{self._description} has {self.num_images} images, fewer than '
                       f'the per-host batch of {batch_size} (each crop needs its own image)')
    if not data_config.cache:
      # Fail now, naming the source, if too few images are usable; not inside tf.data.
      self._crops(0)

  def _crops(self, group: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 HR and LR crops ``[k, b, ...]`` of steps ``group * k .. group * k + k - 1``."""
    rng = np.random.default_rng([self._seed, self._process_index, int(group)])
    pairs = _choose_images(self._load, self.num_images, self._batch_size, rng,
                           self._description)
    return _cut_crops(pairs, rng, self._crops_per_image, self._config.crop_size,
                      self._scale, self._config.augment)

  def dataset(self, start_step: int) -> Any:
    """A ``tf.data.Dataset`` of the batches of steps ``start_step, start_step + 1, ...``."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    _keep_tensorflow_off_gpus()
    k = self._crops_per_image
    crop = self._config.crop_size
    lr_crop = crop // self._scale
    first_group = start_step // k

    def crops(group):
      hr, lr = tf.numpy_function(self._crops, [group], (tf.uint8, tf.uint8), stateful=False)
      return (tf.ensure_shape(hr, [k, self._batch_size, crop, crop, 3]),
              tf.ensure_shape(lr, [k, self._batch_size, lr_crop, lr_crop, 3]))

    dataset = tf.data.Dataset.counter(first_group)
    dataset = dataset.map(crops, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.unbatch().skip(start_step - first_group * k)
    dataset = dataset.map(_model_inputs, num_parallel_calls=tf.data.AUTOTUNE,
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
    data_config: ``config.data`` (fields here and in ``data/sources``).
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
