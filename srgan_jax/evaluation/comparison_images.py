"""Comparison images of evaluation (LR | bicubic | SR | HR), whole or cut to a region of
interest (``Crop``, from --crop), and how they are saved."""

import pathlib
import re
from typing import NamedTuple

import numpy as np
from PIL import Image

from srgan_jax.runtime import errors
from srgan_jax.runtime import paths


class Crop(NamedTuple):
  """A region of interest of one image, in HR pixels, shown ``zoom`` times enlarged."""
  image: str  # The file name without suffix, e.g. 'butterfly'.
  x: int
  y: int
  width: int
  height: int
  zoom: int = 1

  @property
  def file_name(self) -> str:
    return f'{self.image}_x{self.x}_y{self.y}_{self.width}x{self.height}.png'

  def outside(self, hr_shape: tuple[int, ...]) -> str | None:
    """Why this region does not fit an HR image of ``hr_shape`` (cropped to a multiple
    of the scale), in one line, or None."""
    height, width = hr_shape[:2]
    if self.x + self.width <= width and self.y + self.height <= height:
      return None
    return (f'--crop={self.image}:{self.x},{self.y},{self.width},{self.height} lies outside '
            f'{self.image} ({width}x{height} HR pixels after cropping to a multiple of the '
            'scale); choose a region inside it')


def parse_crop(spec: str, zoom: int = 1) -> Crop:
  """``'NAME:x,y,w,h'`` (HR pixels) as a Crop."""
  match = re.fullmatch(r'([^:]+):(\d+),(\d+),(\d+),(\d+)', spec.strip())
  if not match or min(int(match[4]), int(match[5]), zoom) < 1:
    raise errors.ConfigError(f'--crop={spec} is not NAME:x,y,width,height (HR pixels, '
                             'positive size), e.g. butterfly:96,64,64,48')
  return Crop(match[1], *map(int, match.groups()[1:]), zoom=zoom)


def comparison_image(lr: np.ndarray, bicubic_sr: np.ndarray, sr: np.ndarray,
                     hr: np.ndarray, crop: Crop | None = None) -> np.ndarray:
  """LR (nearest-upsampled) | bicubic | SR | HR, side by side, uint8; with ``crop``,
  each panel cut to the same HR region (so they stay in register) and enlarged."""
  scale = hr.shape[0] // lr.shape[0]
  panels = [np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1), bicubic_sr, sr, hr]
  if crop is not None:
    if crop.outside(hr.shape):  # Commands check this before any work (check_crops).
      raise errors.ConfigError(crop.outside(hr.shape))
    panels = [np.repeat(np.repeat(panel[crop.y:crop.y + crop.height, crop.x:crop.x + crop.width],
                                  crop.zoom, axis=0), crop.zoom, axis=1) for panel in panels]
  return np.concatenate(panels, axis=1)


def save_png(path: pathlib.Path, image: np.ndarray) -> None:
  """Writes a uint8 ``[H, W, 1]`` (grayscale) or ``[H, W, 3]`` image as PNG, whole
  (``paths.replacing``): never half a file, and never through a symlink at ``path``
  onto the file it points to (an HR image)."""
  with paths.replacing(path) as temporary:
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
        temporary, format='PNG')
