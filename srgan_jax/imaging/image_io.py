"""Image files as pixels: the one reader of training, evaluation and super-resolution.

Every image is read by ``_read``, under one rule per kind of image (the same for
every caller unless said otherwise); what differs between the callers is a keyword
of the function each one uses:

- Orientation: ``PIL.ImageOps.exif_transpose`` first, so an EXIF-rotated JPEG (or
  PNG eXIf) is upright. Training skips it (``upright=False``): its augmentation
  turns crops anyway.
- Grey ('1', 'L', 'I;16*', 'I', 'F'): one channel. Super-resolution replicates it
  to RGB for the generator and writes its output as the BT.601 luma of the SR, so a
  grey input gives a grey output; evaluation keeps it single-channel (the MATLAB
  conventions: the Y of a grey image is the image); training replicates it to RGB
  (``grey_to_rgb=True``).
- Palette ('P', 'PA'): its colours, as RGB, or RGBA when it has transparency.
- Alpha (RGBA, LA, PA, a tRNS colour key): kept apart from the colour, never
  composited (a background would invent content). Super-resolution upscales it
  with MATLAB bicubic and re-attaches it; evaluation and training drop it.
- 16-bit: 16-bit PNGs (grey, grey+alpha, RGB, RGBA) and 16-bit grey TIFFs are read
  exactly; 'I' (32-bit integer) is clipped to [0, 65535]; 'F' (float) is grey in
  [0, 1], clipped. Super-resolution works in float and writes 16-bit PNG;
  evaluation and training reduce to 8 bits by the high byte (``reduce_to_8_bits``:
  ``v >> 8``, what Pillow itself does when it opens a 16-bit colour PNG). Pillow
  decodes 16-bit colour TIFFs at 8 bits, so those are 8-bit images.
- CMYK, YCbCr, LAB, HSV and other modes: Pillow's ``convert('RGB')``.
- Animated or multi-frame (GIF, APNG, animated WebP, multi-page TIFF): the first
  frame.
- Undecodable (missing, empty, truncated, not an image): ``UnreadableImageError``.

The callers: super-resolution reads with ``load_image`` (float RGB, alpha, grey flag
and bit depth); evaluation with ``load_uint8`` (``evaluate.load_image``: uint8, grey
single-channel); training with ``load_uint8(data, grey_to_rgb=True,
upright=False)`` (``data/sources.decode_image``, on the encoded bytes of a file or
TFDS example). All three look for files by ``IMAGE_SUFFIXES``.

Outputs are always PNG, written atomically (a temporary file renamed into place) so
that an interrupted run never leaves a partial file that looks finished.
"""

import dataclasses
import io
import os
import pathlib
import struct
from typing import Sequence
import zlib

from etils import epath
import numpy as np
from PIL import Image
from PIL import ImageOps

from srgan_jax.runtime import errors
from srgan_jax.runtime import paths

# The suffixes (lower case) of the files that folders of images are searched for: every
# format this module decodes (GIF: its first frame), so that a folder and one file of
# it are read alike.
IMAGE_SUFFIXES = ('.bmp', '.gif', '.jpeg', '.jpg', '.png', '.tif', '.tiff', '.webp')

# ITU-R BT.601 luma weights, as in MATLAB rgb2gray and Pillow's convert('L'). (MATLAB's
# rgb2ycbcr Y, which the metrics score, is these scaled to 219 levels, plus 16.)
LUMA_601 = np.array([0.299, 0.587, 0.114])

# A file's path, or its encoded bytes (a TFDS example's image).
Source = str | os.PathLike[str] | bytes

_GRAY_16_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N')
# Pillow unpacks 16-bit colour PNG samples to their high byte. Decoding the same file
# once more with the little-endian unpacker yields the low bytes of the big-endian
# data, so the two passes together give the exact 16-bit values (the PNG unfiltering,
# which depends only on the pixel size in bits, is the same in both passes).
_PNG16_LOW_BYTE_RAWMODE = {'RGB;16B': 'RGB;16L', 'RGBA;16B': 'RGBA;16L'}
# 16-bit gray+alpha has no little-endian unpacker; the 8-bit RGBA unpacker has the
# same 32-bit pixel size and copies the bytes verbatim: (L hi, L lo, A hi, A lo).
_PNG16_GRAY_ALPHA_RAWMODE = 'LA;16B'


class UnreadableImageError(errors.UserError):
  """The file is missing, not an image, truncated or otherwise undecodable."""


@dataclasses.dataclass(frozen=True)
class LoadedImage:
  """A user image, ready for the generator.

  Attributes:
    rgb: float32 [H, W, 3] in [0, 1] (a grayscale image replicated to 3 channels).
    alpha: float32 [H, W] in [0, 1], or None when the image has no transparency.
    grayscale: whether the source was single-channel (write the output as gray).
    bit_depth: 8 or 16, the depth to write the output at.
  """
  rgb: np.ndarray
  alpha: np.ndarray | None
  grayscale: bool
  bit_depth: int


@dataclasses.dataclass(frozen=True)
class _Samples:
  """An image as decoded, before any caller's choices.

  Attributes:
    colour: ``[H, W, 1]`` (grey) or ``[H, W, 3]`` samples: uint8 (``peak`` 255),
      integers in 0..65535 (``peak`` 65535) or float32 in [0, 1] (``peak`` 1).
    alpha: ``[H, W]`` on the same scale, or None.
    peak: the value of white.
  """
  colour: np.ndarray
  alpha: np.ndarray | None
  peak: float


def image_files(location: str | os.PathLike[str], recursive: bool) -> list[epath.Path]:
  """The image files (``IMAGE_SUFFIXES``) at ``location``, sorted by path.

  ``location`` is a folder or one image file; local, or remote (gs://...) through
  epath. Every reader of folders (training, evaluation) lists them here, so they agree
  on what an image file is. ``recursive`` (training) walks the subfolders and lists
  files only; otherwise (an evaluation set) every entry with an image suffix is listed,
  so that a folder named like an image is reported as skipped rather than silently left
  out of the set's count.
  """
  location = epath.Path(location)
  if not location.is_dir():
    return [location] if location.exists() else []
  if recursive:
    found = [epath.Path(directory) / name for directory, _, names in location.walk()
             for name in names]
  else:
    found = list(location.iterdir())
  return sorted(path for path in found if path.suffix.lower() in IMAGE_SUFFIXES)


def subfolders_note(folder: str | os.PathLike[str]) -> str:
  """For a set read without its subfolders: '' , or a note that names the subfolders
  holding image files and says they are not searched (a set copied in with its
  folder structure, HR/ and LR/ say)."""
  folder = epath.Path(folder)
  if not folder.is_dir():
    return ''
  holding = sorted(path.name for path in folder.iterdir()
                   if path.is_dir() and image_files(path, recursive=True))
  if not holding:
    return ''
  more = f', ... ({len(holding)})' if len(holding) > 3 else ''
  return (f'; its subfolders are not searched, and {", ".join(holding[:3])}{more} hold '
          'images: name that folder instead')


def _open(source: Source) -> Image.Image:
  if isinstance(source, bytes):
    return Image.open(io.BytesIO(source))
  if paths.is_remote(os.fspath(source)):  # PIL opens local files only.
    return Image.open(io.BytesIO(epath.Path(source).read_bytes()))
  return Image.open(source)


def _png_tile_rawmode(image: Image.Image) -> str | None:
  if image.format != 'PNG' or len(image.tile) != 1:
    return None
  return image.tile[0].args


def _decode_png_as(source: Source, rawmode: str, upright: bool) -> np.ndarray:
  """Decodes a PNG with another unpacker (same pixel size), as uint8."""
  with _open(source) as image:
    image.tile = [image.tile[0]._replace(args=rawmode)]
    return np.asarray(ImageOps.exif_transpose(image) if upright else image)


def _read_png16(source: Source, rawmode: str, upright: bool) -> _Samples:
  """Exact uint16 samples of a 16-bit colour or gray+alpha PNG."""
  if rawmode == _PNG16_GRAY_ALPHA_RAWMODE:
    data = _decode_png_as(source, 'RGBA', upright).astype(np.uint16)
    samples = (data[..., 0::2] << 8) | data[..., 1::2]
    return _Samples(samples[..., :1], samples[..., 1], 65535)
  high = _decode_png_as(source, rawmode, upright).astype(np.uint16)
  low = _decode_png_as(source, _PNG16_LOW_BYTE_RAWMODE[rawmode], upright).astype(np.uint16)
  samples = (high << 8) | low
  return _Samples(samples[..., :3], samples[..., 3] if samples.shape[-1] == 4 else None,
                  65535)


def _normalise_mode(image: Image.Image) -> Image.Image:
  """Converts to L, LA, RGB, RGBA or a 16-bit/32-bit/float single-channel mode."""
  mode = image.mode
  has_key = 'transparency' in image.info
  if mode in ('P', 'PA'):
    return image.convert('RGBA' if has_key or mode == 'PA' else 'RGB')
  if mode in ('1', 'L'):
    return image.convert('LA' if has_key else 'L')
  if mode == 'RGB' and has_key:
    return image.convert('RGBA')
  if mode == 'La':  # Premultiplied alpha.
    return image.convert('LA')
  if mode == 'RGBa':
    return image.convert('RGBA')
  if mode in ('L', 'LA', 'RGB', 'RGBA', 'I', 'F') or mode in _GRAY_16_MODES:
    return image
  return image.convert('RGB')


def _decode(source: Source, upright: bool) -> _Samples:
  with _open(source) as image:
    rawmode = _png_tile_rawmode(image)
    if rawmode in _PNG16_LOW_BYTE_RAWMODE or rawmode == _PNG16_GRAY_ALPHA_RAWMODE:
      return _read_png16(source, rawmode, upright)
    image.load()  # Decode now: truncated data raises here, not later.
    image = _normalise_mode(ImageOps.exif_transpose(image) if upright else image)
  samples = np.asarray(image)
  if image.mode == 'F':
    return _Samples(np.clip(samples, 0.0, 1.0)[..., None], None, 1.0)
  if image.mode == 'I' or image.mode in _GRAY_16_MODES:
    return _Samples(np.clip(samples, 0, 65535)[..., None], None, 65535)
  if samples.ndim == 2:
    samples = samples[..., None]
  colour = 1 if image.mode in ('L', 'LA') else 3
  alpha = samples[..., colour] if samples.shape[-1] > colour else None
  return _Samples(samples[..., :colour], alpha, 255)


def _read(source: Source, upright: bool) -> _Samples:
  """Decodes ``source`` by the rules of the module docstring.

  Raises:
    UnreadableImageError: it cannot be opened or decoded; the message names the
      file (a path source) and PIL's error.
  """
  try:
    return _decode(source, upright)
  except (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error,
          Image.DecompressionBombError) as error:
    # PIL signals bad data with several exception types; callers need one.
    name = '' if isinstance(source, bytes) else f'{source}: '
    raise UnreadableImageError(f'{name}{type(error).__name__}: {error}') from error


class OutputNameError(errors.UserError, FileExistsError):
  """Two input images whose outputs would have one name."""


def png_names(relative: Sequence[pathlib.PurePath], folder: str | os.PathLike[str] = ''
              ) -> list[pathlib.PurePath]:
  """The output PNG name of each image file (paths relative to ``folder``): its name
  with a .png suffix (``a.jpg`` -> ``a.png``), except where two would share one: then
  each of those whose suffix is not exactly '.png' keeps its suffix (``a.jpg`` ->
  ``a.jpg.png``, ``a.PNG`` -> ``a.PNG.png``) and ``a.png`` stays ``a.png``. Both
  super_resolve and evaluate --save_dir name their outputs so: none overwrites another.

  Raises:
    OutputNameError: names that still collide (``a.jpg.png`` beside ``a.jpg`` and
      ``a.png``), naming both files, before anything is written.
  """
  plain = [pathlib.PurePath(path).with_suffix('.png') for path in relative]
  counts: dict[pathlib.PurePath, int] = {}
  for name in plain:
    counts[name] = counts.get(name, 0) + 1
  names = [name if counts[name] == 1 or path.suffix == '.png' else
           path.with_name(path.name + '.png') for path, name in zip(relative, plain)]
  owners: dict[pathlib.PurePath, pathlib.PurePath] = {}
  for path, name in zip(relative, names):
    if name in owners:
      raise OutputNameError(
          f'{os.path.join(folder, owners[name])} and {os.path.join(folder, path)} would both '
          f'be written as {name}; rename one of them')
    owners[name] = path
  return names


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
  """``(width, height)`` of a local image file from its header, without decoding it
  (EXIF orientation not applied: training's rule, ``upright=False``).

  Raises:
    UnreadableImageError: the header cannot be read (not an image, empty, missing).
  """
  try:
    with Image.open(path) as image:
      return image.size
  except (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error,
          Image.DecompressionBombError) as error:
    raise UnreadableImageError(f'{path}: {type(error).__name__}: {error}') from error


def load_image(path: str | os.PathLike[str]) -> LoadedImage:
  """Reads an image file for super-resolution (rules in the module docstring).

  Raises:
    UnreadableImageError: the file cannot be opened or decoded.
  """
  samples = _read(pathlib.Path(path), upright=True)
  colour = samples.colour / samples.peak
  alpha = None if samples.alpha is None else samples.alpha / samples.peak
  return LoadedImage(
      rgb=np.ascontiguousarray(np.broadcast_to(colour, colour.shape[:2] + (3,)),
                               dtype=np.float32),
      alpha=None if alpha is None else np.ascontiguousarray(alpha, dtype=np.float32),
      grayscale=samples.colour.shape[-1] == 1, bit_depth=8 if samples.peak == 255 else 16)


def reduce_to_8_bits(samples: np.ndarray) -> np.ndarray:
  """uint8 from 16-bit samples (0..65535): the high byte, ``v >> 8``, which is what
  Pillow itself does when it opens a 16-bit colour PNG. The training input and
  evaluation reduce 16-bit images by this rule."""
  return (np.clip(samples, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)


def _to_uint8(samples: np.ndarray, peak: float) -> np.ndarray:
  if peak == 255:
    return samples
  if peak == 1:  # Float: at 16 bits first, as 16-bit integer images are.
    samples = np.round(samples.astype(np.float64) * 65535)
  return reduce_to_8_bits(samples)


def load_uint8(source: Source, *, grey_to_rgb: bool = False,
               upright: bool = True) -> np.ndarray:
  """An image as uint8 ``[H, W, 1]`` (grey) or ``[H, W, 3]``, alpha dropped.

  The rules of the module docstring, 16-bit samples reduced by ``reduce_to_8_bits``.
  Evaluation's defaults; training sets both options.

  Args:
    source: a file's path, or its encoded bytes.
    grey_to_rgb: replicate a grey image to ``[H, W, 3]``.
    upright: apply the EXIF orientation.

  Raises:
    UnreadableImageError: the file cannot be opened or decoded.
  """
  samples = _read(source, upright)
  colour = np.ascontiguousarray(_to_uint8(samples.colour, samples.peak))
  if grey_to_rgb and colour.shape[-1] == 1:
    return np.repeat(colour, 3, axis=2)
  return colour


def _png_chunk(kind: bytes, data: bytes) -> bytes:
  return (struct.pack('>I', len(data)) + kind + data
          + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF))


def _png16_bytes(samples: np.ndarray) -> bytes:
  """A 16-bit PNG of uint16 [H, W, C], C in 1..4 (Pillow cannot write 16-bit colour)."""
  height, width, channels = samples.shape
  colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
  rows = samples.astype('>u2').view(np.uint8).reshape(height, width * channels * 2)
  # PNG 'Sub' filter: each byte minus the same byte of the pixel to its left (mod 256);
  # smooth images compress much better than unfiltered.
  pixel_bytes = channels * 2
  filtered = rows.copy()
  filtered[:, pixel_bytes:] -= rows[:, :-pixel_bytes]
  scanlines = np.concatenate([np.ones((height, 1), np.uint8), filtered], axis=1)
  header = struct.pack('>IIBBBBB', width, height, 16, colour_type, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', header)
          + _png_chunk(b'IDAT', zlib.compress(scanlines.tobytes(), 6))
          + _png_chunk(b'IEND', b''))


def save_image(path: str | os.PathLike[str], rgb: np.ndarray, alpha: np.ndarray | None = None,
               grayscale: bool = False, bit_depth: int = 8) -> None:
  """Writes a PNG (whatever the suffix), atomically.

  Args:
    path: output file; its folder must exist.
    rgb: float [H, W, 3], clipped to [0, 1].
    alpha: float [H, W] in [0, 1] (clipped), or None.
    grayscale: write the BT.601 luma of (clipped) ``rgb`` as one channel.
    bit_depth: 8 or 16.
  """
  if bit_depth not in (8, 16):
    raise ValueError(f'bit_depth must be 8 or 16, got {bit_depth}')
  # Clipped before the luma, so that a gray output is the gray of the RGB one.
  rgb = np.clip(np.asarray(rgb, np.float64), 0.0, 1.0)
  channels = [rgb @ LUMA_601] if grayscale else list(np.moveaxis(rgb, -1, 0))
  if alpha is not None:
    channels.append(np.asarray(alpha, np.float64))
  peak = 2 ** bit_depth - 1
  samples = np.round(np.clip(np.stack(channels, axis=-1), 0.0, 1.0) * peak)
  with paths.replacing(path) as temporary:
    if bit_depth == 16:
      temporary.write_bytes(_png16_bytes(samples.astype(np.uint16)))
    else:
      samples = samples.astype(np.uint8)  # Pillow infers L, LA, RGB or RGBA.
      Image.fromarray(samples[..., 0] if samples.shape[-1] == 1 else samples).save(
          temporary, format='PNG')
