"""Batch resizing by area, bilinear or bicubic interpolation, as PyTorch or as Pillow.

Real-ESRGAN (Wang et al., "Real-ESRGAN: Training Real-World Blind Super-Resolution
with Pure Synthetic Data", ICCVW 2021, section 3.1) resizes its images up or down
by a random factor with a random one of three modes, calling PyTorch's
``F.interpolate(mode='area' | 'bilinear' | 'bicubic')``. With ``antialias=False``
(the default) ``resize`` computes exactly those:

* 'area': ``adaptive_avg_pool2d``: output pixel ``i`` averages input pixels
  ``floor(i * in / out)`` to ``ceil((i + 1) * in / out) - 1``;
* 'bilinear' and 'bicubic' (Keys' cubic with ``a = -0.75``): output pixel ``i``
  samples the input at ``(i + 0.5) * in / out - 0.5`` (``align_corners=False``),
  taps beyond the border clamped to it, and no antialiasing, so that downscaling
  aliases, as it does in Real-ESRGAN's training data.

``antialias=True`` computes Pillow's ``Image.resize`` with ``BOX``, ``BILINEAR`` or
``BICUBIC`` (``a = -0.5``): the kernel is widened by the factor when shrinking,
taps beyond the border are dropped and the weights renormalised.

Coordinates map by ``in / out``: PyTorch called with ``size=`` (not
``scale_factor=``, whose mapping uses the factor as given). Sizes are static; each
axis is a dense ``[out, in]`` matrix made once with NumPy (as in ``bicubic``), so an
image is resized by two matrix products, and ``method`` may be a per-image traced
index into ``METHODS``.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

METHODS = ('area', 'bilinear', 'bicubic')


def _cubic(x: np.ndarray, a: float, xp=np) -> np.ndarray:
  """Keys' cubic convolution kernel with parameter ``a`` (``xp``: numpy or jax.numpy)."""
  x = xp.abs(x)
  near = ((a + 2) * x - (a + 3)) * x * x + 1
  far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return xp.where(x <= 1, near, xp.where(x < 2, far, 0.0))


def _torch_matrix(in_length: int, out_length: int, method: str) -> np.ndarray:
  """PyTorch's ``F.interpolate`` (no antialiasing) along one axis."""
  matrix = np.zeros((out_length, in_length))
  scale = in_length / out_length
  for i in range(out_length):
    if method == 'area':
      start = math.floor(i * in_length / out_length)
      end = math.ceil((i + 1) * in_length / out_length)
      matrix[i, start:end] = 1.0 / (end - start)
      continue
    source = (i + 0.5) * scale - 0.5
    if method == 'bilinear':
      source = max(source, 0.0)  # PyTorch clamps negative source positions.
      taps = math.floor(source) + np.array([0, 1])
      weights = 1.0 - np.abs(source - taps)
    else:
      taps = math.floor(source) + np.array([-1, 0, 1, 2])
      weights = _cubic(source - taps, -0.75)
    np.add.at(matrix[i], np.clip(taps, 0, in_length - 1), weights)
  return matrix


_PIL_FILTERS = {
    # (kernel, support): Pillow's box_filter, bilinear_filter, bicubic_filter.
    'area': (lambda x: ((x > -0.5) & (x <= 0.5)).astype(np.float64), 0.5),
    'bilinear': (lambda x: np.maximum(1.0 - np.abs(x), 0.0), 1.0),
    'bicubic': (lambda x: _cubic(x, -0.5), 2.0),
}


def _pil_matrix(in_length: int, out_length: int, method: str) -> np.ndarray:
  """Pillow's ``Image.resize`` along one axis (``precompute_coeffs`` in Resample.c)."""
  kernel, support = _PIL_FILTERS[method]
  scale = in_length / out_length
  filter_scale = max(scale, 1.0)
  support *= filter_scale
  matrix = np.zeros((out_length, in_length))
  for i in range(out_length):
    centre = (i + 0.5) * scale
    # int() truncates towards zero, as Pillow's C cast.
    first = max(int(centre - support + 0.5), 0)
    last = min(int(centre + support + 0.5), in_length)
    taps = np.arange(first, last)
    weights = kernel((taps - centre + 0.5) / filter_scale)
    matrix[i, first:last] = weights / weights.sum()
  return matrix


@functools.lru_cache(maxsize=256)
def resize_matrix(in_length: int, out_length: int, method: str,
                  antialias: bool = False) -> np.ndarray:
  """The ``[out_length, in_length]`` float64 matrix resizing one axis (module docstring).

  Read-only: it is cached and shared.
  """
  if method not in METHODS:
    raise ValueError(f'unknown resize method {method!r}: expected one of {METHODS}')
  build = _pil_matrix if antialias else _torch_matrix
  matrix = build(int(in_length), int(out_length), method)
  matrix.setflags(write=False)
  return matrix


def resize(images: jax.Array, size: tuple[int, int], method: str | jax.Array,
           antialias: bool = False) -> jax.Array:
  """Resizes ``[n, h, w, c]`` images to ``size = (height, width)`` (static).

  Args:
    images: float images.
    size: output height and width.
    method: one of ``METHODS``, or an int ``[n]`` array of indices into it (one
      method per image; may be traced).
    antialias: False: PyTorch's ``F.interpolate`` (Real-ESRGAN's); True: Pillow's
      ``Image.resize`` (module docstring).

  Returns:
    ``[n, height, width, c]``, in ``images``' float dtype; not clipped (bicubic
    overshoots).
  """
  height, width = images.shape[1], images.shape[2]
  dtype = images.dtype if jnp.issubdtype(images.dtype, jnp.floating) else jnp.float32
  images = images.astype(dtype)
  if isinstance(method, str):
    rows = jnp.asarray(resize_matrix(height, size[0], method, antialias), dtype)
    cols = jnp.asarray(resize_matrix(width, size[1], method, antialias), dtype)
    rows = jnp.broadcast_to(rows, (images.shape[0],) + rows.shape)
    cols = jnp.broadcast_to(cols, (images.shape[0],) + cols.shape)
  else:
    all_rows = jnp.asarray(np.stack([resize_matrix(height, size[0], m, antialias)
                                     for m in METHODS]), dtype)
    all_cols = jnp.asarray(np.stack([resize_matrix(width, size[1], m, antialias)
                                     for m in METHODS]), dtype)
    rows, cols = all_rows[method], all_cols[method]
  return apply_matrices(images, rows, cols)


def apply_matrices(images: jax.Array, rows: jax.Array, cols: jax.Array,
                   channels_first: bool = False) -> jax.Array:
  """``rows[i] @ images[i] @ cols[i].T`` per image and channel: ``[n, h, w, c]`` and
  ``[n, out_h, h]``, ``[n, out_w, w]`` matrices to ``[n, out_h, out_w, c]`` (``[n, c,
  h, w]`` to ``[n, c, out_h, out_w]`` if ``channels_first``)."""
  # Full float32 products: TPU/GPU default precision (bf16/tf32) would cost ~1e-3.
  highest = jax.lax.Precision.HIGHEST
  if channels_first:
    out = jnp.einsum('noh,nchw->ncow', rows, images, precision=highest)
    return jnp.einsum('npw,ncow->ncop', cols, out, precision=highest)
  out = jnp.einsum('noh,nhwc->nowc', rows, images, precision=highest)
  return jnp.einsum('npw,nowc->nopc', cols, out, precision=highest)


def canvas_matrix(in_length: jax.Array, out_length: jax.Array, method: jax.Array,
                  in_canvas: int, out_canvas: int) -> jax.Array:
  """PyTorch's ``F.interpolate`` matrix along one axis for TRACED lengths, on static canvases.

  An image of traced length ``in_length`` lies at the start of an axis of static
  length ``in_canvas``; the result, float32 ``[out_canvas, in_canvas]``, holds
  ``resize_matrix(in_length, out_length, METHODS[method])`` in its top-left corner
  and zeros elsewhere, so the resized image lies at the start of the output axis
  (rows beyond ``out_length`` are zero). Jitted resizing to random sizes uses it:
  shapes stay static, sizes are data. One image's; ``jax.vmap`` it for a batch.

  Args:
    in_length: int scalar, 1..in_canvas.
    out_length: int scalar, 1..out_canvas.
    method: int scalar index into ``METHODS``.
    in_canvas: static input axis length.
    out_canvas: static output axis length.
  """
  i = jnp.arange(out_canvas)[:, None]
  j = jnp.arange(in_canvas)[None, :]
  in_length = jnp.asarray(in_length, jnp.int32)
  out_length = jnp.asarray(out_length, jnp.int32)
  # 'area': integer bounds, exactly as _torch_matrix's floor and ceil.
  start = (i * in_length) // out_length
  end = -((-(i + 1) * in_length) // out_length)
  area = ((j >= start) & (j < end)) / (end - start).astype(jnp.float32)
  # (i + 0.5) in / out - 0.5 as one division of integers: exact where it is an integer,
  # so floor() picks the taps _torch_matrix picks.
  source = (((2 * i + 1) * in_length - out_length).astype(jnp.float32)
            / (2 * out_length).astype(jnp.float32))

  def taps(position, offsets, weight):
    base = jnp.floor(position)
    return sum(weight(position - (base + o)) * (jnp.clip(base + o, 0, in_length - 1) == j)
               for o in offsets)

  bilinear = taps(jnp.maximum(source, 0.0), (0, 1), lambda d: 1.0 - jnp.abs(d))
  bicubic = taps(source, (-1, 0, 1, 2), lambda d: _cubic(d, -0.75, jnp))
  matrix = jnp.stack([area, bilinear, bicubic])[method]
  return jnp.where(i < out_length, matrix, 0.0).astype(jnp.float32)
