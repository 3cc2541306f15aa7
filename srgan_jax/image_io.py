"""Reading and writing user images for super-resolution.

The generator takes RGB in [0, 1]; user images come in many layouts. The rules:

- Orientation: ``PIL.ImageOps.exif_transpose`` is applied first, so an EXIF-rotated
  JPEG (or PNG eXIf) is super-resolved and written upright; the output carries no
  orientation tag.
- Grayscale (modes '1', 'L', 'I;16*', 'I', 'F'): replicated to RGB for the generator;
  on output the ITU-R BT.601 luma of the SR (0.299 R + 0.587 G + 0.114 B) is written
  as a single channel, so a gray input gives a gray output.
- Alpha (RGBA, LA, PA, a tRNS colour key): the colour channels go through the
  generator; the alpha is upscaled separately with MATLAB bicubic
  (``bicubic.imresize``, by the caller) and re-attached.
- Palette ('P', 'PA'): expanded to RGB, or RGBA when it has transparency; the output is
  a truecolour PNG, not a palette one.
- Bit depth: 8-bit images are written as 8-bit PNG. 16-bit PNGs (gray, gray+alpha,
  RGB, RGBA) and 16-bit grayscale TIFFs are read exactly, processed in float and
  written as 16-bit PNG; 'I' (32-bit integer) is read as 16-bit, clipped to
  [0, 65535]; 'F' (float) is read as gray in [0, 1], clipped, and written as 16-bit.
  Pillow decodes 16-bit colour TIFFs at 8 bits, so those come out as 8-bit PNG.
- Other modes (CMYK, YCbCr, LAB, HSV): Pillow's ``convert('RGB')``.
- Multi-frame files (GIF, APNG, WebP animations): the first frame.
- A file that cannot be decoded raises ``UnreadableImageError``.

Outputs are always PNG, written atomically (a temporary file renamed into place) so
that an interrupted run never leaves a partial file that looks finished.
"""

import dataclasses
import os
import pathlib
import struct
import zlib

import numpy as np
from PIL import Image
from PIL import ImageOps

from srgan_jax import errors

# ITU-R BT.601 luma weights, as in MATLAB rgb2gray and Pillow's convert('L').
LUMA_601 = np.array([0.299, 0.587, 0.114])

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


def _png_tile_rawmode(image: Image.Image) -> str | None:
  if image.format != 'PNG' or len(image.tile) != 1:
    return None
  return image.tile[0].args


def _decode_png_as(path: pathlib.Path, rawmode: str) -> np.ndarray:
  """Decodes a PNG with another unpacker (same pixel size), upright, as uint8."""
  with Image.open(path) as image:
    image.tile = [image.tile[0]._replace(args=rawmode)]
    return np.asarray(ImageOps.exif_transpose(image))


def _read_png16(path: pathlib.Path, rawmode: str) -> tuple[np.ndarray, bool]:
  """Exact uint16 samples [H, W, C] of a 16-bit colour or gray+alpha PNG."""
  if rawmode == _PNG16_GRAY_ALPHA_RAWMODE:
    data = _decode_png_as(path, 'RGBA').astype(np.uint16)
    return (data[..., 0::2] << 8) | data[..., 1::2], True
  high = _decode_png_as(path, rawmode).astype(np.uint16)
  low = _decode_png_as(path, _PNG16_LOW_BYTE_RAWMODE[rawmode]).astype(np.uint16)
  return (high << 8) | low, False


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


def _to_loaded(channels: np.ndarray, grayscale: bool, bit_depth: int) -> LoadedImage:
  """From [H, W, C] samples scaled to [0, 1] (C = 1 or 3, plus optional alpha)."""
  colour = 1 if grayscale else 3
  alpha = channels[..., colour] if channels.shape[-1] > colour else None
  rgb = np.broadcast_to(channels[..., :colour], channels.shape[:2] + (3,))
  return LoadedImage(
      rgb=np.ascontiguousarray(rgb, dtype=np.float32),
      alpha=None if alpha is None else np.ascontiguousarray(alpha, dtype=np.float32),
      grayscale=grayscale, bit_depth=bit_depth)


def _load(path: pathlib.Path) -> LoadedImage:
  with Image.open(path) as image:
    rawmode = _png_tile_rawmode(image)
    if rawmode in _PNG16_LOW_BYTE_RAWMODE or rawmode == _PNG16_GRAY_ALPHA_RAWMODE:
      samples, grayscale = _read_png16(path, rawmode)
      return _to_loaded(samples / 65535.0, grayscale, 16)
    image.load()  # Decode now: truncated data raises here, not later.
    image = _normalise_mode(ImageOps.exif_transpose(image))
  samples = np.asarray(image)
  if image.mode == 'F':
    return _to_loaded(np.clip(samples, 0.0, 1.0)[..., None], True, 16)
  if image.mode == 'I' or image.mode in _GRAY_16_MODES:
    return _to_loaded((np.clip(samples, 0, 65535) / 65535.0)[..., None], True, 16)
  if samples.ndim == 2:
    samples = samples[..., None]
  return _to_loaded(samples / 255.0, image.mode in ('L', 'LA'), 8)


def load_image(path: str | os.PathLike[str]) -> LoadedImage:
  """Reads an image file by the rules of this module's docstring.

  Raises:
    UnreadableImageError: the file cannot be opened or decoded.
  """
  path = pathlib.Path(path)
  try:
    return _load(path)
  except (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error,
          Image.DecompressionBombError) as error:
    # PIL signals bad data with several exception types; callers need one.
    raise UnreadableImageError(f'{path}: {type(error).__name__}: {error}') from error


def reduce_to_8_bits(samples: np.ndarray) -> np.ndarray:
  """uint8 from 16-bit samples (0..65535): the high byte, ``v >> 8``, which is what
  Pillow itself does when it opens a 16-bit colour PNG. The training input and
  evaluation reduce 16-bit images by this rule."""
  return (np.clip(samples, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)


def load_uint8(path: str | os.PathLike[str]) -> np.ndarray:
  """A file as uint8 ``[H, W, 1]`` (grayscale) or ``[H, W, 3]``, for scoring.

  Read by ``load_image``'s rules; 16-bit samples reduced by ``reduce_to_8_bits``;
  alpha dropped.

  Raises:
    UnreadableImageError: the file cannot be opened or decoded.
  """
  image = load_image(path)
  channels = image.rgb[..., :1] if image.grayscale else image.rgb
  if image.bit_depth == 16:
    return reduce_to_8_bits(np.round(channels.astype(np.float64) * 65535))
  return np.round(channels.astype(np.float64) * 255).astype(np.uint8)


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
  path = pathlib.Path(path)
  temporary = path.with_name(f'.{path.name}.partial')
  try:
    if bit_depth == 16:
      temporary.write_bytes(_png16_bytes(samples.astype(np.uint16)))
    else:
      samples = samples.astype(np.uint8)  # Pillow infers L, LA, RGB or RGBA.
      Image.fromarray(samples[..., 0] if samples.shape[-1] == 1 else samples).save(
          temporary, format='PNG')
    os.replace(temporary, path)
  finally:
    temporary.unlink(missing_ok=True)
