"""JPEG compression artifacts made on the accelerator: encode and decode in one jit.

Real-ESRGAN (Wang et al., "Real-ESRGAN: Training Real-World Blind Super-Resolution
with Pure Synthetic Data", ICCVW 2021) degrades its training inputs with JPEG at a
random quality, twice per image; doing it with PIL on the host would stall a
device-resident input pipeline. ``jpeg`` computes what a baseline JPEG encoder and
decoder (ITU-T T.81, as the IJG's libjpeg and libjpeg-turbo implement it, with the
settings Pillow's ``Image.save(..., 'JPEG', quality=q)`` uses) make of an image,
without the entropy coding, which is lossless:

* RGB -> YCbCr, BT.601 full range, in libjpeg's 16-bit fixed point (``jccolor.c``);
* 4:2:0 chroma: 2x2 box averages with libjpeg's alternating 1, 2 rounding bias
  (``jcsample.c``); the image is padded by edge replication as libjpeg pads it
  (columns before subsampling, to a multiple of 16; chroma rows after it, to a
  multiple of 8: ``jcprepct.c``);
* 8x8 DCT-II of the samples minus 128, quantised by the IJG standard tables (T.81
  Annex K) scaled by quality as ``jpeg_set_quality`` does with ``force_baseline``,
  rounded to nearest, halves away from zero;
* dequantisation, inverse DCT, samples rounded and clipped to 0..255;
* "fancy" (triangular, h2v2) chroma upsampling with libjpeg's rounding
  (``jdsample.c``), edge replication at the chroma image's border;
* YCbCr -> RGB in libjpeg's fixed point (``jdcolor.c``), clipped to 0..255.

The one deliberate difference: the DCTs here are exact (8x8 matrix products in
float32), where libjpeg-turbo's default ``JDCT_ISLOW`` uses 13-bit fixed-point
constants; a coefficient close to a rounding boundary can round the other way, so a
few pixels differ from Pillow's by a grey level or so. Exact halves (flat blocks,
which are common) are recognised despite float32 rounding and round as libjpeg
rounds them.

Every step is elementwise, a fixed reshape or a matrix product, so one traced
program serves any per-image quality: quality is data, not a compile-time constant.
"""

import jax
import jax.numpy as jnp
import numpy as np

# IJG standard tables (T.81 Annex K.1), in natural (row-major) order.
LUMINANCE_TABLE = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99],
], np.int32)
CHROMINANCE_TABLE = np.array([
    [17, 18, 24, 47, 99, 99, 99, 99],
    [18, 21, 26, 66, 99, 99, 99, 99],
    [24, 26, 56, 99, 99, 99, 99, 99],
    [47, 66, 99, 99, 99, 99, 99, 99],
] + [[99] * 8] * 4, np.int32)

# libjpeg's colour conversion is 16-bit fixed point: FIX(x) = int(x * 2**16 + 0.5).
_SCALEBITS = 16
_ONE_HALF = 1 << (_SCALEBITS - 1)

# Rounding ties: a float32 DCT of a flat block lands within ~1e-4 of the exact
# half that libjpeg's integer arithmetic hits exactly; this margin (far below the
# fixed-point DCT's own error) makes such values round as the exact ones do.
_TIE_MARGIN = 1e-3


def _fix(x: float) -> int:
  return int(x * (1 << _SCALEBITS) + 0.5)


def _dct_matrix() -> np.ndarray:
  """The orthonormal 8-point DCT-II matrix ``[frequency, sample]``.

  Its 2-D transform ``D @ block @ D.T`` is T.81's FDCT (``1/4 C(u) C(v) sum ...``).
  """
  k = np.arange(8)[:, None]
  n = np.arange(8)[None, :]
  matrix = np.cos((2 * n + 1) * k * np.pi / 16) * np.sqrt(2 / 8)
  matrix[0] = np.sqrt(1 / 8)
  return matrix.astype(np.float32)


def quantization_tables(quality: jax.Array) -> tuple[jax.Array, jax.Array]:
  """libjpeg's luminance and chrominance tables for each quality (``jpeg_set_quality``).

  Args:
    quality: ``[n]`` qualities in [1, 100] (rounded to integers, then clipped).

  Returns:
    ``(luminance, chrominance)``, int32 ``[n, 8, 8]``, each entry
    ``(table * scale + 50) // 100`` clipped to 1..255 (``force_baseline``), where
    ``scale`` is ``5000 // q`` percent below quality 50 and ``200 - 2 q`` from 50 up.
  """
  q = jnp.clip(jnp.round(jnp.asarray(quality, jnp.float32)), 1, 100).astype(jnp.int32)
  scale = jnp.where(q < 50, 5000 // q, 200 - 2 * q)[:, None, None]

  def scaled(table):
    return jnp.clip((jnp.asarray(table) * scale + 50) // 100, 1, 255)

  return scaled(LUMINANCE_TABLE), scaled(CHROMINANCE_TABLE)


def rgb_to_ycbcr(rgb: jax.Array, axis: int = -1) -> jax.Array:
  """libjpeg's RGB -> YCbCr (``jccolor.c``) of int32 samples 0..255, channels on ``axis``."""
  r, g, b = (jnp.take(rgb, channel, axis=axis) for channel in range(3))
  offset = 128 << _SCALEBITS
  y = (_fix(0.299) * r + _fix(0.587) * g + _fix(0.114) * b + _ONE_HALF) >> _SCALEBITS
  # ONE_HALF - 1: libjpeg's bias keeps Cb and Cr of grey at exactly 128.
  cb = (-_fix(0.16874) * r - _fix(0.33126) * g + _fix(0.5) * b + offset + _ONE_HALF - 1
        ) >> _SCALEBITS
  cr = (_fix(0.5) * r - _fix(0.41869) * g - _fix(0.08131) * b + offset + _ONE_HALF - 1
        ) >> _SCALEBITS
  return jnp.stack([y, cb, cr], axis=axis)


def ycbcr_to_rgb(ycc: jax.Array, axis: int = -1) -> jax.Array:
  """libjpeg's YCbCr -> RGB (``jdcolor.c``) of int32 samples, clipped to 0..255,
  channels on ``axis``."""
  y, cb, cr = (jnp.take(ycc, channel, axis=axis) for channel in range(3))
  cb, cr = cb - 128, cr - 128
  # jnp's >> on int32 is arithmetic, as libjpeg's RIGHT_SHIFT.
  r = y + ((_fix(1.402) * cr + _ONE_HALF) >> _SCALEBITS)
  g = y + ((-_fix(0.34414) * cb - _fix(0.71414) * cr + _ONE_HALF) >> _SCALEBITS)
  b = y + ((_fix(1.772) * cb + _ONE_HALF) >> _SCALEBITS)
  return jnp.clip(jnp.stack([r, g, b], axis=axis), 0, 255)


def _pad_edge(x: jax.Array, height: int, width: int) -> jax.Array:
  """Pads ``[n, h, w]`` at the bottom and right to ``[n, height, width]`` by replication."""
  return jnp.pad(x, ((0, 0), (0, height - x.shape[1]), (0, width - x.shape[2])), mode='edge')


def downsample_420(x: jax.Array) -> jax.Array:
  """libjpeg's h2v2 downsampling of int32 ``[n, 2h, 2w]``: 2x2 sums plus 1, 2, 1, 2, ... >> 2.

  The alternating bias (``jcsample.c``) rounds half the columns' halves down and
  half up, so that no colour drifts.
  """
  sums = x[:, 0::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 0::2] + x[:, 1::2, 1::2]
  bias = 1 + (jnp.arange(sums.shape[2]) % 2)
  return (sums + bias) >> 2


def upsample_420(x: jax.Array) -> jax.Array:
  """libjpeg's "fancy" h2v2 upsampling of int32 ``[n, h, w]`` to ``[n, 2h, 2w]``.

  Each output sample weighs its chroma sample 9/16, the two nearer neighbours 3/16
  each and the diagonal one 1/16 (``jdsample.c``: a 3:1 vertical blend, then 3:1
  horizontal with biases 8 and 7); the border sample is replicated.
  """
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1)), mode='edge')
  centre = padded[:, 1:-1]
  above = 3 * centre + padded[:, :-2]  # Column sums for the upper output rows.
  below = 3 * centre + padded[:, 2:]
  def horizontal(colsum):
    this = colsum[:, :, 1:-1]
    left = (3 * this + colsum[:, :, :-2] + 8) >> 4
    right = (3 * this + colsum[:, :, 2:] + 7) >> 4
    return jnp.stack([left, right], axis=-1).reshape(this.shape[0], this.shape[1], -1)
  rows = jnp.stack([horizontal(above), horizontal(below)], axis=2)
  return rows.reshape(x.shape[0], 2 * x.shape[1], 2 * x.shape[2])


def _round_half_away(x: jax.Array) -> jax.Array:
  """Rounds to nearest, halves (within ``_TIE_MARGIN``) away from zero, as libjpeg."""
  return jnp.sign(x) * jnp.floor(jnp.abs(x) + (0.5 + _TIE_MARGIN))


def quantize_dequantize(samples: jax.Array, tables: jax.Array) -> jax.Array:
  """One component through DCT, quantisation, dequantisation and inverse DCT.

  Args:
    samples: int32 ``[n, h, w]``, ``h`` and ``w`` multiples of 8.
    tables: int32 ``[n, 8, 8]``, one quantisation table per image.

  Returns:
    int32 ``[n, h, w]``: the decoder's samples, rounded and clipped to 0..255.
  """
  n, h, w = samples.shape
  blocks = samples.reshape(n, h // 8, 8, w // 8, 8).astype(jnp.float32) - 128.0
  dct = jnp.asarray(_dct_matrix())
  # Full float32 products: TPU/GPU default precision (bf16/tf32) would move coefficients
  # across rounding boundaries.
  highest = jax.lax.Precision.HIGHEST
  coefficients = jnp.einsum('uy,nbyax,vx->nbuav', dct, blocks, dct, precision=highest)
  steps = tables[:, None, :, None, :].astype(jnp.float32)
  dequantized = _round_half_away(coefficients / steps) * steps
  restored = jnp.einsum('uy,nbuav,vx->nbyax', dct, dequantized, dct, precision=highest)
  # libjpeg's IDCT descales by adding a half and shifting: halves round up.
  restored = jnp.floor(restored + (128.5 + _TIE_MARGIN))
  return jnp.clip(restored, 0, 255).astype(jnp.int32).reshape(n, h, w)


def _jpeg(images: jax.Array, quality: jax.Array, channels_first: bool) -> jax.Array:
  axis = 1 if channels_first else 3
  height, width = images.shape[2:] if channels_first else images.shape[1:3]
  padded_height, padded_width = -(-height // 16) * 16, -(-width // 16) * 16
  chroma_height, chroma_width = -(-height // 2), -(-width // 2)
  # The encoder receives 8-bit samples.
  rgb = jnp.round(jnp.clip(images, 0.0, 1.0) * 255.0).astype(jnp.int32)
  ycc = rgb_to_ycbcr(rgb, axis)
  luminance_table, chrominance_table = quantization_tables(quality)

  luma = quantize_dequantize(
      _pad_edge(jnp.take(ycc, 0, axis=axis), padded_height, padded_width), luminance_table)
  luma = luma[:, :height, :width]

  chroma = []
  for channel in (1, 2):
    # As jcprepct.c: columns padded before subsampling, rows only to an even count;
    # the subsampled rows are then padded by replicating the last one.
    full = _pad_edge(jnp.take(ycc, channel, axis=axis), 2 * chroma_height, padded_width)
    small = _pad_edge(downsample_420(full), padded_height // 2, padded_width // 2)
    small = quantize_dequantize(small, chrominance_table)
    # The decoder upsamples the chroma image proper, replicating its own border.
    small = small[:, :chroma_height, :chroma_width]
    chroma.append(upsample_420(small)[:, :height, :width])

  decoded = ycbcr_to_rgb(jnp.stack([luma] + chroma, axis=axis), axis)
  return decoded.astype(jnp.float32) / 255.0


_jpeg_jit = jax.jit(_jpeg, static_argnums=2)


def jpeg(images: jax.Array, quality: jax.Array | float,
         channels_first: bool = False) -> jax.Array:
  """JPEG-compresses and decodes a batch as Pillow (libjpeg) does at ``quality``.

  Args:
    images: float ``[n, h, w, 3]`` (``[n, 3, h, w]`` if ``channels_first``) RGB in
      [0, 1], any ``h`` and ``w`` (rounded to 8-bit samples first, as an encoder
      receives them).
    quality: one quality for all, or ``[n]`` per-image qualities in [1, 100]
      (integers: fractions are rounded); may be traced.
    channels_first: the layout of ``images`` and the result.

  Returns:
    float32, the layout of ``images``, holding ``k / 255``: the decoded 8-bit image.
  """
  quality = jnp.broadcast_to(jnp.asarray(quality, jnp.float32), images.shape[:1])
  return _jpeg_jit(jnp.asarray(images, jnp.float32), quality, channels_first)
