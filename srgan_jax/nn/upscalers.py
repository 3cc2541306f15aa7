"""Upscaling methods, one type: bicubic interpolation or a trained generator.

An ``Upscaler`` upscales in the two forms its users need:

* ``upscale_batch``: same-size uint8 LR images ``[n, h, w, c]`` -> uint8 SR (a
  generator's by tiles above its ``tile``), as the benchmark scoring
  (``evaluation/scoring``), the evaluation during training and ``compare`` score and
  show them; ``c`` is 1 for grayscale images, which stay
  single-channel as in the MATLAB test code, or 3.
* ``upscale_image``: one float RGB image ``[H, W, 3]`` in [0, 1] of any size -> SR in
  [0, 1], as ``super_resolve`` writes it; a generator's runs through seamless tiles
  (``imaging/tiling``).

``bicubic(scale)`` is MATLAB's ``imresize``; ``generator(model, variables)`` a
trained SRResNet, data-parallel over every device of every process
(``sharding.data_parallel``): on several processes, every process calls it with the
same images and gets all the SR images back.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from srgan_jax.imaging import bicubic as matlab_bicubic
from srgan_jax.imaging import image_io
from srgan_jax.imaging import tiling
from srgan_jax.nn import models
from srgan_jax.runtime import sharding

_PEAK = 255.0  # uint8's.


@dataclasses.dataclass(frozen=True)
class Upscaler:
  """An upscaling method, ``scale`` times; built by ``bicubic`` or ``generator``.

  Attributes:
    name: what it is, for messages: 'bicubic' or 'generator'.
    scale: the upscaling factor.
    batch_fn: uint8 LR ``[n, h, w, c]`` -> uint8 SR ``[n, h * scale, w * scale, c]``,
      ``c`` = 1 or 3.
    image_fn: float RGB LR ``[H, W, 3]`` in [0, 1] -> SR ``[H * scale, W * scale, 3]``
      in [0, 1].
  """
  name: str
  scale: int
  batch_fn: Callable[[np.ndarray], np.ndarray]
  image_fn: Callable[[np.ndarray], np.ndarray]

  def upscale_batch(self, lr: np.ndarray) -> np.ndarray:
    """SR of a batch of same-size uint8 LR images (``batch_fn``), checked."""
    sr = np.asarray(self.batch_fn(lr))
    count, height, width, channels = lr.shape
    expected = (count, height * self.scale, width * self.scale, channels)
    if sr.shape != expected or sr.dtype != np.uint8:
      raise ValueError(f'the {self.name} upscaler gave {sr.dtype} {sr.shape} for LR '
                       f'{lr.shape}, expected uint8 {expected}')
    return sr

  def upscale_image(self, rgb: np.ndarray) -> np.ndarray:
    """SR of one float RGB image in [0, 1] (``image_fn``), checked."""
    sr = self.image_fn(rgb)
    height, width, _ = rgb.shape
    expected = (height * self.scale, width * self.scale, 3)
    if sr.shape != expected:
      raise ValueError(f'the {self.name} upscaler gave {sr.shape} for LR {rgb.shape}, '
                       f'expected {expected}')
    return sr


def _bicubic_batch(lr: np.ndarray, scale: int) -> np.ndarray:
  """MATLAB ``imresize(lr, scale, 'bicubic')`` of each uint8 image, rounded as MATLAB does."""
  return np.stack([matlab_bicubic.imresize(image, scale) for image in lr])


def _bicubic_image(rgb: np.ndarray, scale: int) -> np.ndarray:
  return matlab_bicubic.imresize(rgb.astype(np.float64), scale)


def bicubic(scale: int) -> Upscaler:
  """The bicubic baseline: MATLAB ``imresize(lr, scale, 'bicubic')``, per image."""
  return Upscaler('bicubic', scale, functools.partial(_bicubic_batch, scale=scale),
                  functools.partial(_bicubic_image, scale=scale))


def to_pixels(x: jax.Array) -> jax.Array:
  """Model output in [-1, 1] -> float 0..255, rounded and clipped as if saved as uint8.

  Rounds half away from zero, like ``bicubic.imresize`` (MATLAB) does for uint8.
  """
  return jnp.floor(jnp.clip((x + 1.0) * (_PEAK / 2), 0.0, _PEAK) + 0.5)


@functools.cache
def _generator_fns(model: Any) -> tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]]:
  """``(variables, lr) ->`` SR in [-1, 1], and ``->`` SR pixels (``to_pixels``).

  One pair per generator architecture, so that its upscalers (the evaluation during
  training builds one each time) reuse the programs compiled for each image size:
  ``sharding.data_parallel`` caches its compiled programs by function.
  """
  def sr(variables, lr):
    return model.apply(variables, lr, train=False)

  def pixels(variables, lr):
    return to_pixels(sr(variables, lr))

  return sr, pixels


def _generator_batch(apply_pixels: Callable[[np.ndarray], Any], lr: np.ndarray) -> np.ndarray:
  """uint8 SR of uint8 LR, through the generator's SR pixels of RGB LR in [0, 1].

  Grayscale LR is replicated to RGB and the SR turned back into one channel with the
  BT.601 luma weights (those of the Y channel), so a gray image is scored on its own
  intensity, as the bicubic baseline is.
  """
  rgb = np.broadcast_to(lr, (*lr.shape[:3], 3)).astype(np.float32) / 255
  sr = np.asarray(apply_pixels(rgb))
  if lr.shape[-1] == 1:
    sr = np.round(sr @ image_io.LUMA_601)[..., None]
  return sr.astype(np.uint8)


def generator(model: Any, variables: Any, *, tile: int | None = None,
              overlap: int | None = None, batch_size: int = 1,
              progress: Callable[[int, int], None] | None = None) -> Upscaler:
  """A trained generator (as ``loading.load_generator`` gives it) as an Upscaler.

  Args:
    model: the generator (``models.SRResNet``).
    variables: its ``{'params', 'batch_stats'}``, the same on every process; put on
      the devices when first used.
    tile: the LR tile side of ``upscale_image``, and of ``upscale_batch`` for images
      with a side above it (each then by tiles, one image at a time: memory bounded
      by the tile, results equal to whole-image ones); None: whole images.
    overlap: LR context around each tile's kept centre; default (None): the
      generator's receptive radius, which makes tiling exact, checked against ``tile``
      (``errors.ConfigError``).
    batch_size: tiles per call of the generator in ``upscale_image``.
    progress: called by ``upscale_image`` after each batch of tiles with (tiles done,
      tiles in total).
  """
  if tile is not None and overlap is None:
    overlap = models.generator_receptive_radius(model.num_blocks, model.scale)
    tiling.check_tiles(tile, overlap, "the generator's receptive radius")
  sr_fn, pixels_fn = _generator_fns(model)

  # Replicated on first use, once per function: an upscaler mostly serves one form.
  @functools.cache
  def on_devices(fn: Callable[[Any, Any], Any]) -> Callable[[np.ndarray], jax.Array]:
    return sharding.data_parallel(fn, variables)

  def upscale_image(rgb: np.ndarray) -> np.ndarray:
    sr = tiling.upscale_tiled(on_devices(sr_fn), rgb, scale=model.scale,
                              tile=tile or max(rgb.shape[:2]), overlap=overlap or 0,
                              batch_size=batch_size, progress=progress)
    return (sr + 1.0) / 2.0

  def upscale_batch(lr: np.ndarray) -> np.ndarray:
    if tile is None or max(lr.shape[1:3]) <= tile:
      return _generator_batch(on_devices(pixels_fn), lr)
    return _generator_batch(lambda rgb: np.stack([tiling.upscale_tiled(
        on_devices(pixels_fn), image, scale=model.scale, tile=tile, overlap=overlap,
        batch_size=batch_size) for image in rgb]), lr)

  return Upscaler('generator', model.scale, upscale_batch, upscale_image)
