"""Real-ESRGAN's second-order degradation, made on the device by one jitted function.

``config.data.degradation = 'realesrgan'`` trains on what Real-ESRGAN (Wang et al.,
"Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure Synthetic Data",
ICCVW 2021, section 3) feeds its network, in the order of BasicSR's
``RealESRNetModel.feed_data``, from each HR crop in [0, 1]:

1. first order: blur (one of six kernel families, or a sinc), resize up, down or
   keep (by a factor relative to the crop; area, bilinear or bicubic), Gaussian or
   Poisson noise (colour or grey), JPEG at a random quality;
2. second order: blur with probability ``blur_probability``, resize (the factor
   relative to the LR size), noise;
3. final: with probability ``final_resize_first_probability`` resize to the LR size
   and filter with a sinc (probability ``final_sinc_probability``, else nothing),
   then JPEG (the second order's quality range); otherwise JPEG first, then resize
   and sinc. The LR is rounded to 8 bits.

Every range and probability is a field of ``config.data.realesrgan`` (its
``first`` and ``second`` orders share their field names); configs/default.py holds
the paper's values. Two fields leave the paper: each order's ``noise_probability``
below 1 (the paper always adds noise), and ``clean_probability`` above 0, the share
of a batch whose LR is the MATLAB-bicubic one instead (``data/on_device`` chooses
it; ``degrade`` makes the others). The building blocks are
``imaging/blur_kernels``, ``resize``, ``noise`` and ``jpeg``, each tested against
its own reference.

Static shapes, random sizes: after a random resize an image's side is data (a
traced int per image), and it lies at the top-left of a static canvas as large as
the largest size its order can draw (``1.5 x`` the crop, then ``1.2 x`` the LR
size). Each op respects the image's own border, not the canvas's: resizing is a
matrix product whose ``[canvas_out, canvas_in]`` matrix is PyTorch's for the
image's traced sizes, zero elsewhere (``resize.canvas_matrix``); before blurring,
the canvas is refilled by reflecting at the image's border (torch's 'reflect',
BasicSR's ``filter2D``); before noise and JPEG, by replicating its edge (libjpeg
pads so, so the JPEG blocks inside the image are the ones libjpeg codes, and the
Poisson noise's count of distinct values sees no new value). So every resize
lands on its exact integer size, as ``F.interpolate`` does, at the cost of working
on the largest canvas (no buckets, no ``lax.switch``). The sizes are
``floor(crop x factor)`` and ``floor(crop / scale x factor)`` as in BasicSR; the
coordinates map by in / out (``resize``'s ``size=`` convention), where
``scale_factor=`` would use the factor itself: a fraction of a pixel at most.
Inside, the images are channel planes, ``[n, 3, h, w]`` (``_planar``): the HR crops
are transposed once on the way in and the LR once on the way out.

Where this differs from BasicSR, on purpose: every random choice is per image
(BasicSR draws the resize factor and mode and the noise kind once per batch, and
mixes batches through a queue of 180 pairs, which per-image draws make needless);
the JPEG quality is rounded to an integer, as libjpeg takes it; the HR target is
not unsharp-masked (BasicSR's ``gt_usm``, a loss choice, not a degradation).

Determinism: ``degrade`` draws everything from its key; ``on_device`` keys it by
(seed, process, step), so a resumed run sees the batches an uninterrupted one would.
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from srgan_jax.imaging import blur_kernels
from srgan_jax.imaging import jpeg
from srgan_jax.imaging import noise
from srgan_jax.imaging import resize

# config.data.degradation's choices: the paper's MATLAB bicubic, or this module's.
DEGRADATIONS = ('bicubic', 'realesrgan')
# The resize kinds, in the order of resize_probabilities.
RESIZE_KINDS = ('up', 'down', 'keep')


@dataclasses.dataclass(frozen=True)
class Order:
  """One order's ranges and probabilities (fields of config.data.realesrgan.first/second)."""
  blur_probability: float
  kernel_probabilities: tuple[float, ...]
  sinc_probability: float
  blur_sigma: tuple[float, float]
  generalized_beta: tuple[float, float]
  plateau_beta: tuple[float, float]
  resize_probabilities: tuple[float, float, float]
  resize_range: tuple[float, float]
  noise_probability: float
  gaussian_noise_probability: float
  noise_sigma: tuple[float, float]
  poisson_scale: tuple[float, float]
  grey_noise_probability: float
  jpeg_quality: tuple[float, float]


@dataclasses.dataclass(frozen=True)
class Settings:
  """The whole pipeline's settings: hashable, so jit takes them as a static argument."""
  first: Order
  second: Order
  kernel_sizes: tuple[int, ...]
  final_sinc_probability: float
  final_resize_first_probability: float
  clean_probability: float

  @classmethod
  def from_config(cls, config: Any) -> 'Settings':
    """From ``config.data.realesrgan`` (a ConfigDict or nested mappings)."""
    def frozen(value):
      return tuple(float(v) for v in value) if isinstance(value, (tuple, list)) else float(value)

    def order(fields):
      return Order(**{f.name: frozen(fields[f.name]) for f in dataclasses.fields(Order)})

    low, high = (int(v) for v in config['kernel_size_range'])
    return cls(order(config['first']), order(config['second']),
               tuple(range(low, high + 1, 2)), float(config['final_sinc_probability']),
               float(config['final_resize_first_probability']),
               float(config['clean_probability']))


def _planar(images: jax.Array) -> jax.Array:
  """``[n, h, w, c]`` as ``[n, c, h, w]``, the layout the pipeline works in.

  With a minor axis of 3 channels, XLA's CPU backend does not vectorize a fused
  computation that broadcasts a per-image value or picks one channel (the noise, the
  JPEG colour conversion); on channel planes the minor axis is a row. The blur's FFT
  transforms the minor axes too.
  """
  return jnp.moveaxis(images, 3, 1)


def _reflect_index(index: jax.Array, length: jax.Array) -> jax.Array:
  """torch's 'reflect' source of ``index`` for an axis of ``length`` (no edge repeat),
  periodic so that any offset is defined, even beyond a short image."""
  period = jnp.maximum(2 * (length - 1), 1)
  folded = jnp.mod(index, period)
  return jnp.where(folded < length, folded, period - folded)


def _gather(images: jax.Array, index: jax.Array) -> jax.Array:
  """``images[i][:, index[i]][:, :, index[i]]``: rows and columns of planar ``[n, c, h,
  w]`` images by per-image ``[n, k]`` indices."""
  rows = jax.vmap(lambda image, ix: image[:, ix])(images, index)
  return jax.vmap(lambda image, ix: image[:, :, ix])(rows, index)


def _edge_filled(images: jax.Array, size: jax.Array) -> jax.Array:
  """The canvas beyond each image's ``size`` refilled with its edge (as libjpeg pads).

  Columns by a product with a 0/1 matrix (exact: one 1 per column), rows by a
  gather. A gather would let XLA's CPU backend fuse whatever made ``images`` (the
  noise) into it, where it is not vectorized; a dot over the minor axis takes its
  operand as it lies, computed by a plain, vectorized loop.
  """
  canvas = images.shape[2]
  source = jnp.minimum(jnp.arange(canvas)[None, :], size[:, None] - 1)  # [n, canvas]
  select = (source[:, :, None] == jnp.arange(canvas)[None, None, :]).astype(images.dtype)
  columns = jax.lax.dot_general(images, select, (((3,), (2,)), ((0,), (0,))),
                                precision=jax.lax.Precision.HIGHEST)  # [n, c, h, canvas]
  return jax.vmap(lambda image, ix: image[:, ix])(columns, source)


def _blur(images: jax.Array, kernels: jax.Array, size: jax.Array) -> jax.Array:
  """``blur_kernels.blur`` of each image on its canvas, reflecting at its own border."""
  half = blur_kernels.KERNEL_SIZE // 2
  positions = jnp.arange(-half, images.shape[2] + half)[None, :]
  padded = _gather(images, _reflect_index(positions, size[:, None]))
  return blur_kernels.blur(padded, kernels, padded=True, channels_first=True)


def _resize(images: jax.Array, size: jax.Array, new_size: jax.Array, method: jax.Array,
            canvas: int) -> jax.Array:
  """Each image from its ``size`` to ``new_size`` (PyTorch's), onto a ``canvas`` side."""
  matrices = jax.vmap(lambda a, b, m: resize.canvas_matrix(a, b, m, images.shape[2], canvas))(
      size, new_size, method)
  return resize.apply_matrices(images, matrices, matrices, channels_first=True)


def _kernels(key: jax.Array, n: int, order: Order, sizes: tuple[int, ...]) -> jax.Array:
  """``[n, 21, 21]``: one ``random_mixed_kernel`` per image with ``order``'s settings."""
  return jax.vmap(lambda k: blur_kernels.random_mixed_kernel(
      k, order.blur_sigma, order.generalized_beta, order.plateau_beta,
      order.kernel_probabilities, order.sinc_probability, sizes))(jax.random.split(key, n))


def _blur_resize_noise(key: jax.Array, images: jax.Array, size: jax.Array, order: Order,
                       base: int, canvas: int, sizes: tuple[int, ...]
                       ) -> tuple[jax.Array, jax.Array]:
  """One order's blur, resize (to ``floor(base x factor)``) and noise; ``(images, size)``."""
  n = images.shape[0]
  keys = jax.random.split(key, 6)
  blurred = _blur(images, _kernels(keys[0], n, order, sizes), size)
  blurs = jax.random.uniform(keys[1], (n,)) < order.blur_probability
  images = jnp.where(blurs[:, None, None, None], blurred, images)
  kind = jax.random.choice(keys[2], len(RESIZE_KINDS), (n,),
                           p=jnp.asarray(order.resize_probabilities))
  low, high = order.resize_range
  u = jax.random.uniform(keys[3], (n,))
  factor = jnp.select([kind == 0, kind == 1], [1.0 + u * (high - 1.0), low + u * (1.0 - low)],
                      1.0)
  new_size = jnp.clip(jnp.floor(base * factor).astype(jnp.int32), 1, canvas)
  method = jax.random.randint(keys[4], (n,), 0, len(resize.METHODS))
  images = _edge_filled(_resize(images, size, new_size, method, canvas), new_size)
  noisy = noise.random_noise(keys[5], images, order.gaussian_noise_probability,
                             order.noise_sigma, order.poisson_scale,
                             order.grey_noise_probability, channels_first=True)
  if order.noise_probability < 1:  # Static: the paper's 1 draws nothing more.
    # A key of its own, so that the paper's draws are those of before this option.
    noises = jax.random.uniform(jax.random.fold_in(key, 6), (n,)) < order.noise_probability
    noisy = jnp.where(noises[:, None, None, None], noisy, images)
  return noisy, new_size


def _quality(key: jax.Array, n: int, order: Order) -> jax.Array:
  return jax.random.uniform(key, (n,), minval=order.jpeg_quality[0],
                            maxval=order.jpeg_quality[1])


def _final(key: jax.Array, images: jax.Array, size: jax.Array, settings: Settings,
           lr_size: int) -> jax.Array:
  """Resize to ``lr_size`` with a sinc and JPEG, in a random order per image."""
  n = images.shape[0]
  keys = jax.random.split(key, 6)
  method = jax.random.randint(keys[0], (n,), 0, len(resize.METHODS))
  kernel_size = jax.vmap(lambda k: blur_kernels.draw_size(k, settings.kernel_sizes))(
      jax.random.split(keys[1], n))
  # The final sinc's cut-off ignores the size (BasicSR's dataset: uniform pi/3..pi).
  cutoff = jax.random.uniform(keys[2], (n,), minval=math.pi / 3, maxval=math.pi)
  sinc = jax.vmap(blur_kernels.sinc_kernel)(kernel_size, cutoff)
  filters = jax.random.uniform(keys[3], (n,)) < settings.final_sinc_probability
  kernels = jnp.where(filters[:, None, None], sinc, blur_kernels.pulse_kernel())
  quality = _quality(keys[4], n, settings.second)
  full = jnp.full((n,), lr_size, jnp.int32)

  def resize_and_filter(x, from_size):
    return _blur(_resize(x, from_size, full, method, lr_size), kernels, full)

  # Both orders on every image (LR-sized, cheap), then one chosen per image.
  resized_first = jpeg.jpeg(resize_and_filter(images, size), quality, channels_first=True)
  compressed_first = resize_and_filter(
      jpeg.jpeg(_edge_filled(images, size), quality, channels_first=True), size)
  first = jax.random.uniform(keys[5], (n,)) < settings.final_resize_first_probability
  return jnp.where(first[:, None, None, None], resized_first, compressed_first)


def degrade(key: jax.Array, hr: jax.Array, settings: Settings, scale: int) -> jax.Array:
  """Real-ESRGAN's LR of each HR crop (module docstring).

  Args:
    key: PRNG key: every random choice comes from it.
    hr: float ``[n, crop, crop, 3]`` in [0, 1], ``crop`` a multiple of ``scale``.
    settings: the ranges and probabilities.
    scale: the super-resolution factor.

  Returns:
    float32 ``[n, crop / scale, crop / scale, 3]`` holding ``k / 255``.
  """
  n, crop = hr.shape[0], hr.shape[1]
  lr_size = crop // scale
  first, second = settings.first, settings.second
  keys = jax.random.split(key, 4)
  images, size = _blur_resize_noise(
      keys[0], _planar(hr.astype(jnp.float32)), jnp.full((n,), crop, jnp.int32), first, crop,
      max(crop, math.floor(crop * first.resize_range[1])), settings.kernel_sizes)
  images = jpeg.jpeg(_edge_filled(images, size), _quality(keys[1], n, first),
                     channels_first=True)
  images, size = _blur_resize_noise(
      keys[2], images, size, second, lr_size,
      max(lr_size, math.floor(lr_size * second.resize_range[1])), settings.kernel_sizes)
  lr = _final(keys[3], images, size, settings, lr_size)
  return jnp.moveaxis(jnp.clip(jnp.round(lr * 255.0), 0, 255) / 255.0, 1, 3)

