"""Tests for evaluation/comparison_images.py: evaluate's comparison images cropped to a
region of interest, panels in register."""

import numpy as np
from PIL import Image
import pytest

from srgan_jax.evaluation import comparison_images
from srgan_jax.evaluation import scoring
from srgan_jax.imaging import bicubic
from srgan_jax.nn import upscalers


def _write_image(path, height, width, seed):
  """A smooth random RGB image (bicubic-enlarged noise)."""
  noise = np.random.default_rng(seed).uniform(0, 255, (height // 4 + 1, width // 4 + 1, 3))
  image = np.clip(bicubic.imresize(noise, 4)[:height, :width], 0, 255).astype(np.uint8)
  Image.fromarray(image).save(path)
  return image


def _unzoom(image, zoom):
  """The image shrunk by ``zoom`` after checking it is made of zoom x zoom blocks."""
  small = image[::zoom, ::zoom]
  np.testing.assert_array_equal(np.repeat(np.repeat(small, zoom, 0), zoom, 1), image)
  return small


@pytest.mark.parametrize('x, y, width, height, zoom', [
    (8, 4, 16, 12, 3),   # On the LR grid: the LR panel shows whole LR pixels.
    (5, 3, 14, 9, 1),    # Off the grid: still the same HR region in every panel.
])
def test_crop_panels_are_the_same_region(tmp_path, x, y, width, height, zoom):
  hr = _write_image(tmp_path / 'photo.png', 32, 40, seed=0)
  _write_image(tmp_path / 'other.png', 24, 24, seed=1)
  crop = comparison_images.Crop('photo', x, y, width, height, zoom)
  scoring.evaluate_folder(upscalers.bicubic(4), tmp_path, compare_dir=tmp_path / 'compare',
                          crops=[crop])
  assert sorted(path.name for path in (tmp_path / 'compare').iterdir()) == [
      'other.png', 'photo.png', crop.file_name]
  with Image.open(tmp_path / 'compare' / crop.file_name) as image:
    comparison = _unzoom(np.asarray(image), zoom)
  assert comparison.shape == (height, 4 * width, 3)
  nearest, bicubic_panel, sr, hr_panel = np.split(comparison, 4, axis=1)
  region = np.s_[y:y + height, x:x + width]
  np.testing.assert_array_equal(hr_panel, hr[region])
  lr = bicubic.imresize(hr, 1 / 4)
  nearest_lr = np.repeat(np.repeat(lr, 4, axis=0), 4, axis=1)
  np.testing.assert_array_equal(nearest, nearest_lr[region])
  if x % 4 == y % 4 == width % 4 == height % 4 == 0:  # Whole LR pixels.
    np.testing.assert_array_equal(nearest, np.repeat(np.repeat(
        lr[y // 4:(y + height) // 4, x // 4:(x + width) // 4], 4, axis=0), 4, axis=1))
  np.testing.assert_array_equal(bicubic_panel, bicubic.imresize(lr, 4)[region])
  np.testing.assert_array_equal(sr, bicubic_panel)  # The method under test is bicubic.


def test_crop_outside_the_image_or_of_no_image_is_an_error(tmp_path):
  _write_image(tmp_path / 'photo.png', 30, 41, seed=0)  # Cropped to 28x40.
  with pytest.raises(ValueError, match='outside photo'):
    scoring.evaluate_sets(upscalers.bicubic(4), [tmp_path], save_dir=tmp_path / 'out',
                          crops=[comparison_images.Crop('photo', 30, 0, 12, 8)])
  with pytest.raises(ValueError, match=r"in none of the sets: \['missing'\]"):
    scoring.evaluate_sets(upscalers.bicubic(4), [tmp_path], save_dir=tmp_path / 'out',
                          crops=[comparison_images.Crop('missing', 0, 0, 8, 8)])


def test_parse_crop():
  assert comparison_images.parse_crop('baby:96,64,48,32', zoom=2) == comparison_images.Crop(
      'baby', 96, 64, 48, 32, 2)
  for spec in ('baby', 'baby:1,2,3', 'baby:1,2,0,4', ':1,2,3,4', 'baby:-1,2,3,4'):
    with pytest.raises(ValueError, match='NAME:x,y,width,height'):
      comparison_images.parse_crop(spec)
