"""Device-resident training data: images decoded once onto the accelerator.

For training sets that fit in accelerator memory (T91 + BSD200: 104 MB decoded;
DIV2K train: about 6.6 GB). The images of this host are decoded once with PIL,
by the rules of ``data/sources`` (grayscale replicated, alpha dropped, 16-bit
to 8-bit, palette to RGB; images smaller than the crop and undecodable files
skipped and counted in one log line; no usable image is an error naming the
folders), degraded as evaluation degrades them (``degradation.training_pair``:
cropped to a multiple of the scale, the whole image downsampled by MATLAB bicubic
and rounded to uint8), and both HR and LR are uploaded once. Every step's batch
is then made ON THE DEVICE by one jitted function: ``batch_size`` distinct
images, a random crop of each HR at an offset that is a multiple of the scale
and the LR crop in register with it, one of the 8 symmetries of the square for
both when ``augment`` is on (``symmetry.dihedral``, numbered as in the tf.data
pipeline), LR scaled to [0, 1] and HR to [-1, 1]. With ``data.degradation =
'realesrgan'`` the LR is instead made from the (augmented) HR crop in the same
jitted function by ``realesrgan.degrade``, keyed by the step as the crops are (a
``clean_probability`` share of them keeps the bicubic LR, drawn per image). The
host only dispatches it, so a training step never waits for the host.

Determinism and resumption: every random choice of step ``s`` comes from
``fold_in(fold_in(key(seed), process_index), s)``, so a step's batch depends only
on (seed, process index, step) and the data: a run resumed at step ``s`` sees the
batches an uninterrupted run would, without iterator state. (The process index is
folded in so that hosts draw independent crops.) The batches differ from the
tf.data pipeline's, which draws with NumPy.

Per-host sharding: the files are numbered as in ``data/sources`` (sorted by
path, folder after folder) and process ``p`` of ``P`` keeps those whose number is
``p`` modulo ``P``, so hosts never share an image. ``batch`` returns this host's
part of the global batch as jax arrays on its first local device
(``jax.local_devices()[0]``), where the images live; build the global batch with
``jax.make_array_from_process_local_data(sharding, local_batch)``, which copies
the shards to the other local devices (device to device).

Memory layout: one flat uint8 buffer of all images, each row-major, back to
back, costs exactly the decoded size. Padding every image to the largest height
and width would cost 203 MB instead of 104 MB for T91 + BSD200 (portrait and
landscape 481x321 images pad to 508x481) and about 10 GB instead of 6.6 GB for
DIV2K. The flat buffer is stored as ``[pages, page_bytes + row_bytes]``: page
``i`` holds bytes ``[i * page_bytes, (i + 1) * page_bytes + row_bytes)``, so each
page repeats the first ``row_bytes = 3 * crop_size`` bytes of the next one. (The
LR images have a buffer of their own, laid out the same way with their crop side.) A
crop row (``row_bytes`` contiguous bytes) then always lies inside one page and is
read with one ``dynamic_slice``, and every index stays within int32 although
DIV2K's 6.6 GB exceed 2**31 bytes (JAX indexes with int32 unless x64 is on).
The repeated bytes cost ``row_bytes / page_bytes`` (0.03% for 96x96 crops and
1 MiB pages).

Nothing here imports tensorflow. ``python -m srgan_jax.device_data`` times it.
"""

from collections.abc import Iterator, Sequence
import functools
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from srgan_jax.data import realesrgan
from srgan_jax.data import sources
from srgan_jax.imaging import degradation
from srgan_jax.imaging import symmetry

# Bytes per page of the image buffer; the pages overlap by one crop row.
PAGE_BYTES = 1 << 20


def _pack(images: Sequence[np.ndarray], page_bytes: int,
          row_bytes: int) -> tuple[np.ndarray, np.ndarray]:
  """Lays images out back to back in overlapping pages (module docstring).

  Args:
    images: uint8 ``[H, W, 3]`` arrays.
    page_bytes: bytes per page, not counting the overlap.
    row_bytes: overlap between consecutive pages: the longest read.

  Returns:
    ``pages``, uint8 ``[num_pages, page_bytes + row_bytes]``, and ``table``, int32
    ``[num_images, 4]``: each image's first page, first byte in that page,
    height and width.
  """
  sizes = [image.nbytes for image in images]
  starts = np.cumsum([0] + sizes)  # int64: the total may exceed 2**31.
  num_pages = -(-int(starts[-1]) // page_bytes)
  pages = np.zeros((num_pages, page_bytes + row_bytes), np.uint8)
  for image, start in zip(images, starts):
    data = image.reshape(-1)
    written = 0
    while written < data.size:  # One copy per page the image touches.
      page, byte = divmod(int(start) + written, page_bytes)
      count = min(page_bytes - byte, data.size - written)
      pages[page, byte:byte + count] = data[written:written + count]
      written += count
  pages[:-1, page_bytes:] = pages[1:, :row_bytes]
  table = np.array([(start // page_bytes, start % page_bytes, *image.shape[:2])
                    for image, start in zip(images, starts)], np.int32)
  return pages, table


def _dihedral(image: jax.Array, which: jax.Array) -> jax.Array:
  """Symmetry ``which`` (0..7) of a square image, traced (``symmetry.dihedral``)."""
  return symmetry.dihedral(image, which, jnp.where)


def _read_crops(pages: jax.Array, table: jax.Array, index: jax.Array, top: jax.Array,
                left: jax.Array, size: int) -> jax.Array:
  """uint8 ``[b, size, size, 3]`` crops at (top, left) of images ``index`` of a buffer
  packed by ``_pack`` with ``row_bytes = 3 * size``."""
  row_bytes = 3 * size
  page_bytes = pages.shape[1] - row_bytes
  first_page, first_byte, _, width = table[index].T
  rows = top[:, None] + jnp.arange(size)
  # Within int32: first_byte < page_bytes, and the offset inside an image is
  # below its size (PIL refuses images over about 180 Mpixel, 540 MB).
  byte = first_byte[:, None] + (rows * width[:, None] + left[:, None]) * 3
  page = first_page[:, None] + byte // page_bytes
  read_row = lambda p, b: jax.lax.dynamic_slice(pages, (p, b), (1, row_bytes))[0]
  crops = jax.vmap(read_row)(page.reshape(-1), (byte % page_bytes).reshape(-1))
  return crops.reshape(index.shape[0], size, size, 3)


_STATIC = ('batch_size', 'crop_size', 'scale', 'augment', 'realistic')


@functools.partial(jax.jit, static_argnames=_STATIC)
def _make_batch(hr_pages: jax.Array, hr_table: jax.Array, lr_pages: jax.Array,
                lr_table: jax.Array, key: jax.Array, step: jax.Array, *, batch_size: int,
                crop_size: int, scale: int, augment: bool,
                realistic: realesrgan.Settings | None = None) -> dict[str, jax.Array]:
  """The batch of ``step``: LR in [0, 1] and HR in [-1, 1] (module docstring); the LR
  made from the HR crop by ``realesrgan.degrade`` when ``realistic`` is given."""
  lr_size = crop_size // scale
  step_key = jax.random.fold_in(key, step)
  choice_key, offset_key = jax.random.split(step_key)
  index = jax.random.choice(choice_key, lr_table.shape[0], (batch_size,), replace=False)
  _, _, lr_height, lr_width = lr_table[index].T
  # Offsets on the LR grid. One draw for all three: each draw is a threefry that
  # XLA compiles separately.
  top, left, which = jax.random.randint(
      offset_key, (3, batch_size), 0,
      jnp.stack([lr_height - lr_size + 1, lr_width - lr_size + 1, jnp.full_like(lr_height, 8)]))
  hr = _read_crops(hr_pages, hr_table, index, top * scale, left * scale, crop_size)
  if augment:
    hr = jax.vmap(_dihedral)(hr, which)
  if realistic is None or realistic.clean_probability > 0:
    bicubic_lr = _read_crops(lr_pages, lr_table, index, top, left, lr_size)
    if augment:
      bicubic_lr = jax.vmap(_dihedral)(bicubic_lr, which)
    lr = bicubic_lr.astype(jnp.float32) / 255.0
  if realistic is not None:
    # Keys of their own (the split above stays as it was: bicubic batches unchanged).
    degraded = realesrgan.degrade(jax.random.fold_in(step_key, 2),
                                  hr.astype(jnp.float32) / 255.0, realistic, scale)
    if realistic.clean_probability > 0:
      clean = jax.random.uniform(jax.random.fold_in(step_key, 3),
                                 (batch_size,)) < realistic.clean_probability
      degraded = jnp.where(clean[:, None, None, None], lr, degraded)
    lr = degraded
  # (hr - 127.5) / 127.5 maps 0 and 255 to exactly -1 and 1; XLA turns hr / 127.5 - 1
  # into a product with the reciprocal, which gives 1.0000001 for 255.
  return {'lr': lr, 'hr': (hr.astype(jnp.float32) - 127.5) / 127.5}


@functools.partial(jax.jit, static_argnames=_STATIC)
def _make_batches(hr_pages: jax.Array, hr_table: jax.Array, lr_pages: jax.Array,
                  lr_table: jax.Array, key: jax.Array, steps: jax.Array, **static
                  ) -> dict[str, jax.Array]:
  """The batches of ``steps`` stacked (``[n, batch, ...]``), in one program: each is
  ``_make_batch``'s of its step, since every draw is keyed by the step alone."""
  return jax.vmap(lambda step: _make_batch(hr_pages, hr_table, lr_pages, lr_table, key, step,
                                           **static))(steps)


class DeviceDataSource:
  """One host's training images on its first local device; batches made there."""

  def __init__(self, data_config: ml_collections.ConfigDict, *, scale: int, seed: int,
               process_index: int = 0, process_count: int = 1,
               page_bytes: int = PAGE_BYTES):
    """Decodes this host's images and uploads them.

    Args:
      data_config: ``config.data``; uses ``folders`` (directories, searched
        recursively for ``image_io.IMAGE_SUFFIXES`` files), ``crop_size``
        and ``augment``.
      scale: super-resolution factor; must divide ``crop_size``.
      seed: non-negative base seed.
      process_index: this host, ``0 .. process_count - 1``.
      process_count: number of hosts.
      page_bytes: page size of the image buffer (module docstring).

    Raises:
      ValueError or FileNotFoundError: bad settings, missing folders, or no
        usable image on this host.
    """
    crop_size = data_config.crop_size
    sources.check_process(seed, process_index, process_count)
    # One set of file and decoding rules for both training inputs.
    source = sources.folder_source(data_config.folders, process_index, process_count)
    images = sources.decode_all(source, crop_size, process_index, process_count)
    hrs, lrs = zip(*(degradation.training_pair(image, scale) for image in images))
    del images
    hr_pages, hr_table = _pack(hrs, page_bytes, 3 * crop_size)
    lr_pages, lr_table = _pack(lrs, page_bytes, 3 * (crop_size // scale))
    device = jax.local_devices()[0]
    self._buffers = jax.device_put((hr_pages, hr_table, lr_pages, lr_table), device)
    self._key = jax.device_put(
        jax.random.fold_in(jax.random.key(seed), process_index), device)
    self._crop_size = crop_size
    self._scale = scale
    self._augment = bool(data_config.augment)
    # Configs written before data.degradation existed are 'bicubic'.
    self._realistic = (
        realesrgan.Settings.from_config(data_config.realesrgan)
        if data_config.get('degradation', 'bicubic') == 'realesrgan' else None)
    self._description = f'{source.description}, process {process_index} of {process_count}'
    self.num_images = len(hrs)
    self.nbytes = hr_pages.nbytes + lr_pages.nbytes  # Device memory taken by the images.

  def batch(self, step: int | jax.Array, batch_size: int) -> dict[str, jax.Array]:
    """This host's batch of ``step``, dispatched without waiting for the device.

    Args:
      step: the training step (an int or an integer scalar array).
      batch_size: crops per step on this host, each from a different image.

    Returns:
      ``{'lr': float32 [b, crop / scale, crop / scale, 3] in [0, 1],
      'hr': float32 [b, crop, crop, 3] in [-1, 1]}`` on this host's first device.

    Raises:
      ValueError: fewer images on this host than ``batch_size``.
    """
    self._check_batch_size(batch_size)
    return _make_batch(*self._buffers, self._key, jnp.asarray(step, jnp.int32),
                       batch_size=batch_size, crop_size=self._crop_size, scale=self._scale,
                       augment=self._augment, realistic=self._realistic)

  def stacked_batches(self, first_step: int, count: int, batch_size: int
                      ) -> dict[str, jax.Array]:
    """The batches of steps ``first_step .. first_step + count - 1`` stacked along a new
    leading axis (``[count, b, ...]``), made by one dispatch (see ``batch``)."""
    self._check_batch_size(batch_size)
    return _make_batches(*self._buffers, self._key,
                         jnp.arange(first_step, first_step + count, dtype=jnp.int32),
                         batch_size=batch_size, crop_size=self._crop_size, scale=self._scale,
                         augment=self._augment, realistic=self._realistic)

  def _check_batch_size(self, batch_size: int) -> None:
    if batch_size > self.num_images:
      raise ValueError(f'{self._description} has {self.num_images} usable images, fewer '
                       f'than the per-host batch of {batch_size} (each crop needs its own image)')

  def batches(self, start_step: int, batch_size: int) -> Iterator[dict[str, jax.Array]]:
    """The batches of steps ``start_step, start_step + 1, ...`` (see ``batch``)."""
    for step in itertools.count(start_step):
      yield self.batch(step, batch_size)
