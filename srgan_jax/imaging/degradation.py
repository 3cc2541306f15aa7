"""How an HR image becomes its LR input: the benchmarks' degradation, which training
also uses, so that a model sees in training the degradation it is scored on.

The HR image is cropped to a multiple of the scale (``modcrop``) and downsampled
WHOLE by MATLAB-exact bicubic (``make_lr``: antialiased, rounded to uint8). LR pixel
``(i, j)`` covers HR pixels ``[i * scale, (i + 1) * scale)`` x ``[j * scale, (j + 1)
* scale)``, so crops at offsets ``(t, l)`` of the LR and ``(t * scale, l * scale)``
of the HR are in register.

Scoring on realistic inputs (``evaluate`` and ``compare``'s ``--degrade`` and
``--lr_data``): a ``LowRes`` says how a benchmark image's LR is made: the bicubic LR
above, or an LR file of a paired set (a folder of LR images with the HR images'
names, as RealSR and DRealSR ship them), then degraded in order by JPEG (Pillow's,
libjpeg: what users' files went through) and Gaussian noise in grey levels (NumPy),
seeded by the image's name, so that every run, model and host scores the same LR.

Imports neither evaluation nor TensorFlow: the training input uses it too.
"""

import dataclasses
import io
import os
import zlib

import numpy as np
from PIL import Image

from srgan_jax.imaging import bicubic
from srgan_jax.imaging import image_io
from srgan_jax.runtime import errors

# --degrade's operations: what the number after the colon means, and its range.
DEGRADE_OPERATIONS = {'jpeg': ('quality', 1, 100), 'noise': ('sigma', 0, 255)}
DEGRADE_HELP = ('Degrade each benchmark LR, in order, before upscaling: comma-separated '
                'jpeg:QUALITY (Pillow/libjpeg, 1..100) and noise:SIGMA (Gaussian, grey '
                'levels), e.g. noise:10,jpeg:60; seeded by the image name.')
LR_DATA_HELP = ('Paired real sets: a folder of LR images named as the HR images of the '
                '--data set in the same position (one per --data, in order; each LR '
                'the HR size / scale), used instead of bicubic LR.')


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
  """Crops the bottom/right so that height and width are multiples of ``scale``."""
  height, width = image.shape[0], image.shape[1]
  return image[:height - height % scale, :width - width % scale]


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
  """The benchmarks' LR of a modcropped HR image: MATLAB bicubic by 1 / scale, uint8."""
  return bicubic.imresize(hr, 1 / scale)


def training_pair(image: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
  """``(hr, lr)``, both uint8: ``image`` modcropped, and its LR (module docstring)."""
  hr = modcrop(image, scale)
  return hr, make_lr(hr, scale)


def parse_degrade(spec: str | None) -> tuple[tuple[str, float], ...]:
  """``--degrade``'s operations, ``(('noise', 10.0), ('jpeg', 60.0))``; raises a one-line
  UserError for anything else."""
  if not spec:
    return ()
  steps = []
  for part in spec.split(','):
    name, _, value = part.strip().partition(':')
    what = DEGRADE_OPERATIONS.get(name)
    try:
      number = float(value)
    except ValueError:
      number = float('nan')
    if what is None or not what[1] <= number <= what[2] or (
        name == 'jpeg' and not number.is_integer()):
      raise errors.UserError(
          f'--degrade={spec}: {part!r} is not jpeg:QUALITY (an integer 1..100) or '
          'noise:SIGMA (grey levels, 0..255); e.g. --degrade=noise:10,jpeg:60')
    steps.append((name, number))
  return tuple(steps)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
  """Pillow's (libjpeg's) JPEG encode-decode of a uint8 ``[h, w, 1 or 3]`` image."""
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
      buffer, 'JPEG', quality=quality)
  decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
  return decoded.reshape(image.shape)


def degrade_lr(lr: np.ndarray, steps: tuple[tuple[str, float], ...], name: str) -> np.ndarray:
  """``lr`` (uint8) through ``steps`` (``parse_degrade``) in order, the noise seeded by
  ``name`` (crc32), so an image always gets the same noise."""
  rng = np.random.default_rng(zlib.crc32(name.encode()))
  for operation, value in steps:
    if operation == 'jpeg':
      lr = _jpeg(lr, int(value))
    else:
      noisy = lr + rng.normal(0.0, value, lr.shape)
      lr = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
  return lr


@dataclasses.dataclass(frozen=True)
class LowRes:
  """How a benchmark HR image's LR is made (module docstring).

  Attributes:
    degrade: ``parse_degrade``'s operations, applied to the LR in order.
    folder: a paired set's LR folder (files named as the HR files), or None for the
      benchmarks' bicubic LR.
  """
  degrade: tuple[tuple[str, float], ...] = ()
  folder: str | None = None

  def describe(self) -> str:
    """What results.json records: 'bicubic', or the LR folder, then the degradations."""
    source = f'files in {self.folder}' if self.folder else 'bicubic'
    return ', '.join([source] + [f'{op}:{value:g}' for op, value in self.degrade])

  def make(self, hr: np.ndarray, scale: int, name: str) -> np.ndarray:
    """The LR of the modcropped ``hr`` of the image ``name`` (its file name's stem).

    Raises:
      errors.UserError: a paired set without that image, or with one of another size.
    """
    lr = make_lr(hr, scale) if self.folder is None else self._paired(hr, scale, name)
    return degrade_lr(lr, self.degrade, name)

  def _paired(self, hr: np.ndarray, scale: int, name: str) -> np.ndarray:
    matches = [path for path in image_io.image_files(self.folder, recursive=False)
               if path.stem == name]
    if not matches:
      raise errors.UserError(f'--lr_data={self.folder} has no image named {name} '
                             f'(looked for {name} with {", ".join(image_io.IMAGE_SUFFIXES)})')
    lr = image_io.load_uint8(matches[0])
    expected = (hr.shape[0] // scale, hr.shape[1] // scale)
    if lr.shape[:2] != expected or lr.shape[-1] != hr.shape[-1]:
      raise errors.UserError(
          f'{os.fspath(matches[0])}: {lr.shape[1]}x{lr.shape[0]} pixels, {lr.shape[-1]} '
          f'channels; its HR image at x{scale} needs {expected[1]}x{expected[0]}, '
          f'{hr.shape[-1]} channels (an LR of the HR size / scale, same colours)')
    return lr


def low_res_sources(degrade: str | None, lr_folders: list[str] | None,
                    count: int) -> list[LowRes]:
  """The ``LowRes`` of each of ``count`` sets from ``--degrade`` and ``--lr_data``.

  Raises:
    errors.UserError: a bad --degrade, or --lr_data not one per --data.
  """
  steps = parse_degrade(degrade)
  if lr_folders and len(lr_folders) != count:
    raise errors.UserError(f'--lr_data given {len(lr_folders)} times for {count} --data '
                           'sets: give one LR folder per --data, in the same order')
  return [LowRes(steps, folder) for folder in (lr_folders or [None] * count)]
