"""Tests for reading and writing user images, end to end through bicubic x4."""

import pathlib
import struct
import zlib

import numpy as np
from PIL import Image
import pytest

from srgan_jax.data import sources
from srgan_jax.data import tf_pipeline
from srgan_jax.evaluation import metrics
from srgan_jax.evaluation import scoring
from srgan_jax.imaging import bicubic
from srgan_jax.imaging import image_io
from srgan_jax.inference import super_resolve_files
from srgan_jax.nn import upscalers

RNG = np.random.default_rng(0)


def _upscale(tmp_path: pathlib.Path, name: str) -> pathlib.Path:
  """Super-resolves tmp_path/name with bicubic x4; returns the output PNG."""
  summary = super_resolve_files.super_resolve_paths(
      upscalers.bicubic(4), tmp_path / name, tmp_path / 'out')
  assert summary.exit_code == 0, str(summary)
  return tmp_path / 'out' / (pathlib.Path(name).stem + '.png')


def _assert_close_to(result: np.ndarray, expected_uint8: np.ndarray) -> None:
  """Within one level of MATLAB's own uint8 imresize, and mostly equal."""
  assert result.shape == expected_uint8.shape
  difference = np.abs(result.astype(int) - expected_uint8)
  assert difference.max() <= 1 and np.mean(difference == 0) > 0.98


def _png16(path: pathlib.Path, samples: np.ndarray) -> None:
  """A 16-bit PNG by the spec, unfiltered: independent of image_io's writer."""
  height, width, channels = samples.shape
  colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
  rows = samples.astype('>u2').reshape(height, -1)
  raw = b''.join(b'\x00' + row.tobytes() for row in rows)

  def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

  header = struct.pack('>IIBBBBB', width, height, 16, colour_type, 0, 0, 0)
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header)
                   + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))


def test_grayscale_8bit_gives_gray_output(tmp_path):
  gray = RNG.integers(0, 256, (7, 5), dtype=np.uint8)
  Image.fromarray(gray).save(tmp_path / 'g.png')
  loaded = image_io.load_image(tmp_path / 'g.png')
  assert loaded.grayscale and loaded.bit_depth == 8 and loaded.alpha is None
  np.testing.assert_array_equal(loaded.rgb, np.stack([gray / 255.0] * 3, -1).astype(np.float32))
  with Image.open(_upscale(tmp_path, 'g.png')) as result:
    assert result.mode == 'L'
    _assert_close_to(np.asarray(result), bicubic.imresize(gray, 4))


def test_gray_output_is_bt601_luma(tmp_path):
  primaries = np.eye(3)[None]  # Pure red, green and blue pixels.
  image_io.save_image(tmp_path / 'l8.png', primaries, grayscale=True)
  image_io.save_image(tmp_path / 'l16.png', primaries, grayscale=True, bit_depth=16)
  # round(255 * (0.299, 0.587, 0.114)) and round(65535 * ...).
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'l8.png')), [[76, 150, 29]])
  with Image.open(tmp_path / 'l16.png') as l16:
    assert l16.mode == 'I;16'
    np.testing.assert_array_equal(np.asarray(l16), [[19595, 38469, 7471]])


@pytest.mark.parametrize('mode', ['RGBA', 'LA'])
def test_alpha_is_bicubic_upscaled_and_reattached(tmp_path, mode):
  pixels = RNG.integers(0, 256, (6, 9, len(mode)), dtype=np.uint8)
  Image.fromarray(pixels, mode).save(tmp_path / 'a.png')
  loaded = image_io.load_image(tmp_path / 'a.png')
  assert loaded.grayscale == (mode == 'LA')
  np.testing.assert_array_equal(loaded.alpha, (pixels[..., -1] / 255.0).astype(np.float32))
  with Image.open(_upscale(tmp_path, 'a.png')) as result:
    assert result.mode == mode
    _assert_close_to(np.asarray(result), bicubic.imresize(pixels, 4))


def test_16bit_gray_png(tmp_path):
  samples = RNG.integers(0, 65536, (5, 6), dtype=np.uint16)
  Image.fromarray(samples).save(tmp_path / 'g16.png')  # Pillow writes gray 16-bit itself.
  loaded = image_io.load_image(tmp_path / 'g16.png')
  assert loaded.grayscale and loaded.bit_depth == 16
  np.testing.assert_array_equal(np.round(loaded.rgb[..., 0] * 65535), samples)
  with Image.open(_upscale(tmp_path, 'g16.png')) as result:
    assert result.mode == 'I;16'
    expected = np.clip(bicubic.imresize(samples / 65535.0, 4), 0, 1) * 65535
    # An 8-bit detour would be off by up to 128.
    assert np.abs(np.asarray(result) - expected).max() <= 0.5 + 1e-6


@pytest.mark.parametrize('channels', [2, 3, 4])
def test_16bit_png_read_exactly(tmp_path, channels):
  samples = RNG.integers(0, 65536, (5, 7, channels), dtype=np.uint16)
  _png16(tmp_path / 'c16.png', samples)
  loaded = image_io.load_image(tmp_path / 'c16.png')
  assert loaded.bit_depth == 16 and loaded.grayscale == (channels == 2)
  colour = samples[..., :1] if channels == 2 else samples[..., :3]
  np.testing.assert_array_equal(np.round(loaded.rgb * 65535), np.broadcast_to(colour, (5, 7, 3)))
  if channels % 2 == 0:
    np.testing.assert_array_equal(np.round(loaded.alpha * 65535), samples[..., -1])
  else:
    assert loaded.alpha is None


@pytest.mark.parametrize('channels', [2, 3, 4])
def test_16bit_png_written_exactly(tmp_path, channels):
  samples = RNG.integers(0, 65536, (6, 5, channels), dtype=np.uint16)
  values = samples / 65535.0
  gray = channels == 2
  rgb = np.repeat(values[..., :1], 3, -1) if gray else values[..., :3]
  alpha = values[..., -1] if channels % 2 == 0 else None
  image_io.save_image(tmp_path / 'w16.png', rgb, alpha, grayscale=gray, bit_depth=16)
  # Pillow itself reads 16-bit colour PNGs as their high bytes (gray+alpha as RGBA).
  with Image.open(tmp_path / 'w16.png') as plain:
    high = np.asarray(plain)
  expected_high = samples >> 8
  if gray:
    expected_high = expected_high[..., [0, 0, 0, 1]]
  np.testing.assert_array_equal(high, expected_high)
  loaded = image_io.load_image(tmp_path / 'w16.png')
  np.testing.assert_array_equal(np.round(loaded.rgb * 65535), np.round(rgb * 65535))
  if alpha is not None:
    np.testing.assert_array_equal(np.round(loaded.alpha * 65535), samples[..., -1])


def test_16bit_colour_super_resolved_at_16_bits(tmp_path):
  samples = RNG.integers(0, 65536, (5, 4, 3), dtype=np.uint16)
  _png16(tmp_path / 'c16.png', samples)
  result = image_io.load_image(_upscale(tmp_path, 'c16.png'))
  assert result.bit_depth == 16 and result.rgb.shape == (20, 16, 3)
  expected = np.clip(bicubic.imresize(samples / 65535.0, 4), 0, 1)
  assert np.abs(result.rgb - expected).max() <= 0.5 / 65535 + 1e-7


def test_exif_rotated_jpeg_is_upright(tmp_path):
  # Quadrants red, green / blue, white, 24 rows x 40 columns as stored.
  stored = np.zeros((24, 40, 3), np.uint8)
  stored[:12, :20] = (255, 0, 0)
  stored[:12, 20:] = (0, 255, 0)
  stored[12:, :20] = (0, 0, 255)
  stored[12:, 20:] = 255
  exif = Image.Exif()
  exif[0x0112] = 6  # Orientation 6: displayed rotated 90 degrees clockwise.
  Image.fromarray(stored).save(tmp_path / 'r.jpg', quality=95, exif=exif)
  loaded = image_io.load_image(tmp_path / 'r.jpg')
  upright = np.rot90(stored, k=-1) / 255.0  # np.rot90 with k=-1 turns clockwise.
  assert loaded.rgb.shape == (40, 24, 3)
  assert np.abs(loaded.rgb - upright).mean() < 0.03
  with Image.open(_upscale(tmp_path, 'r.jpg')) as result:
    assert result.size == (96, 160)  # (width, height): portrait, like the display.
    assert 0x0112 not in result.getexif()
    pixels = np.asarray(result) / 255.0
  assert np.abs(pixels[:20, -20:] - (1, 0, 0)).max() < 0.1  # Red now top right.
  assert np.abs(pixels[-20:, :20] - (1, 1, 1)).max() < 0.1  # White bottom left.


@pytest.mark.parametrize('transparent', [False, True])
def test_palette_image(tmp_path, transparent):
  palette = np.array([[200, 10, 10], [10, 200, 10], [10, 10, 200], [90, 90, 90]], np.uint8)
  indices = RNG.integers(0, 4, (6, 5), dtype=np.uint8)
  image = Image.fromarray(indices, 'P')
  image.putpalette(palette.tobytes())
  extra = {'transparency': 2} if transparent else {}
  image.save(tmp_path / 'p.png', **extra)
  loaded = image_io.load_image(tmp_path / 'p.png')
  assert not loaded.grayscale and loaded.bit_depth == 8
  np.testing.assert_array_equal(np.round(loaded.rgb * 255), palette[indices])
  if transparent:
    np.testing.assert_array_equal(loaded.alpha, (indices != 2).astype(np.float32))
  else:
    assert loaded.alpha is None
  with Image.open(_upscale(tmp_path, 'p.png')) as result:
    assert result.mode == ('RGBA' if transparent else 'RGB')
    assert result.size == (20, 24)


def test_32bit_integer_read_as_16bit(tmp_path):
  Image.fromarray(np.array([[-5, 70000, 1000]], np.int32)).save(tmp_path / 'i.tif')
  loaded = image_io.load_image(tmp_path / 'i.tif')
  assert loaded.grayscale and loaded.bit_depth == 16
  np.testing.assert_allclose(loaded.rgb[..., 0], [[0, 1, 1000 / 65535]], rtol=1e-6)


def test_unreadable_files_raise_one_error_type(tmp_path):
  Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / 'ok.png')
  data = (tmp_path / 'ok.png').read_bytes()
  (tmp_path / 'truncated.png').write_bytes(data[:len(data) // 2])
  (tmp_path / 'garbage.jpg').write_bytes(b'\xff\xd8 this is no JPEG')
  (tmp_path / 'empty.png').write_bytes(b'')
  _png16(tmp_path / 'c16.png', RNG.integers(0, 65536, (64, 64, 3), dtype=np.uint16))
  data16 = (tmp_path / 'c16.png').read_bytes()
  (tmp_path / 'truncated16.png').write_bytes(data16[:len(data16) // 2])
  for name in ('truncated.png', 'garbage.jpg', 'empty.png', 'missing.png', 'truncated16.png'):
    with pytest.raises(image_io.UnreadableImageError, match=name):
      image_io.load_image(tmp_path / name)


def _write_kind(path: pathlib.Path, kind: str) -> None:
  """An image of ``kind`` (a row of the module docstring's table) at ``path``."""
  rgb = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
  if kind == 'palette':
    Image.fromarray(rgb).convert('P').save(path, transparency=0)
  elif kind in ('L', 'LA', 'RGBA', 'CMYK'):
    Image.fromarray(rgb).convert(kind).save(path)
  elif kind == '16-bit grey':
    Image.fromarray(RNG.integers(0, 65536, (6, 5), dtype=np.uint16)).save(path)
  elif kind in ('16-bit grey+alpha', '16-bit RGB', '16-bit RGBA'):
    channels = {'16-bit grey+alpha': 2, '16-bit RGB': 3, '16-bit RGBA': 4}[kind]
    _png16(path, RNG.integers(0, 65536, (6, 5, channels), dtype=np.uint16))
  elif kind == 'I':
    Image.fromarray(RNG.integers(-9, 70000, (6, 5), dtype=np.int32)).save(path)
  elif kind == 'F':
    Image.fromarray(RNG.uniform(-0.1, 1.1, (6, 5)).astype(np.float32)).save(path)
  elif kind == 'animated':
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
  else:
    raise ValueError(kind)


_KINDS = {'palette': 'p.png', 'L': 'l.png', 'LA': 'la.png', 'RGBA': 'rgba.png',
          'CMYK': 'cmyk.jpg', '16-bit grey': 'g16.png', '16-bit grey+alpha': 'ga16.png',
          '16-bit RGB': 'c16.png', '16-bit RGBA': 'ca16.png', 'I': 'i.tif', 'F': 'f.tif',
          'animated': 'a.png'}


@pytest.mark.parametrize('kind', _KINDS)
def test_training_evaluation_and_super_resolution_read_alike(tmp_path, kind):
  """The one reader: the callers differ only where they say so (grey channels,
  alpha, bit depth, orientation). Training used to read 'F' on PIL's 0..255 scale."""
  path = tmp_path / _KINDS[kind]
  _write_kind(path, kind)
  evaluation = image_io.load_uint8(path)
  training = sources.decode_image(path.read_bytes())
  loaded = image_io.load_image(path)
  grey = kind in ('L', 'LA', '16-bit grey', '16-bit grey+alpha', 'I', 'F')
  assert evaluation.shape[-1] == (1 if grey else 3) and loaded.grayscale == grey
  np.testing.assert_array_equal(training, np.broadcast_to(evaluation, training.shape))
  peak = 2 ** loaded.bit_depth - 1
  samples = np.round(loaded.rgb.astype(np.float64) * peak)
  eight_bits = image_io.reduce_to_8_bits(samples) if peak > 255 else samples
  np.testing.assert_array_equal(eight_bits, training)
  assert loaded.bit_depth == (16 if kind.startswith('16') or kind in ('I', 'F') else 8)
  assert (loaded.alpha is not None) == (kind in ('palette', 'LA', 'RGBA', '16-bit grey+alpha',
                                                 '16-bit RGBA'))


def test_animated_files_give_their_first_frame(tmp_path):
  first = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
  Image.fromarray(first).save(tmp_path / 'a.png', save_all=True,
                              append_images=[Image.fromarray(255 - first)])
  np.testing.assert_array_equal(image_io.load_uint8(tmp_path / 'a.png'), first)


def test_training_ignores_exif_orientation(tmp_path):
  stored = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
  exif = Image.Exif()
  exif[0x0112] = 6  # Displayed rotated 90 degrees clockwise.
  Image.fromarray(stored).save(tmp_path / 'r.png', exif=exif)
  np.testing.assert_array_equal(sources.decode_image((tmp_path / 'r.png').read_bytes()),
                                stored)
  np.testing.assert_array_equal(image_io.load_uint8(tmp_path / 'r.png'),
                                np.rot90(stored, k=-1))


def test_one_suffix_list():
  """Training, evaluation and super-resolution look for the same files."""
  # Before: no '.gif', so a GIF given alone was super-resolved and one in a folder
  # skipped without a word.
  assert {'.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp', '.tif', '.tiff'} == set(
      image_io.IMAGE_SUFFIXES)
  for module in (scoring, super_resolve_files, sources, tf_pipeline):
    assert not hasattr(module, 'IMAGE_SUFFIXES') and not hasattr(module, 'IMAGE_EXTENSIONS')


def test_luma_weights():
  """BT.601, and MATLAB rgb2ycbcr's Y weights (metrics) derived from them exactly."""
  np.testing.assert_array_equal(image_io.LUMA_601, [0.299, 0.587, 0.114])
  weights = metrics._Y_WEIGHTS  # pylint: disable=protected-access
  assert weights == (65.481 / 255, 128.553 / 255, 24.966 / 255)


def test_16_bit_images_are_reduced_to_their_high_byte_like_the_training_input(tmp_path):
  """Not saturated by convert('RGB'): a 16-bit gray image used to score with 99.8% of
  its pixels at 255."""
  rng = np.random.default_rng(0)
  gray = rng.integers(0, 65536, (20, 24), dtype=np.uint16)
  Image.fromarray(gray).save(tmp_path / 'gray16.png')
  loaded = image_io.load_uint8(tmp_path / 'gray16.png')
  assert loaded.dtype == np.uint8 and loaded.shape == (20, 24, 1)
  np.testing.assert_array_equal(loaded[..., 0], gray >> 8)
  training = sources.decode_image((tmp_path / 'gray16.png').read_bytes())
  np.testing.assert_array_equal(training[..., 0], loaded[..., 0])  # The same rule.

  rgb = rng.integers(0, 65536, (20, 24, 3), dtype=np.uint16)
  image_io.save_image(tmp_path / 'rgb16.png', rgb / 65535, bit_depth=16)
  np.testing.assert_array_equal(image_io.load_uint8(tmp_path / 'rgb16.png'), rgb >> 8)


def test_png_names_never_give_two_images_one_output():
  """Issue 37: a.png beside a.PNG (super_resolve: "2 written", one file) or a.jpg
  (evaluate --save_dir: one SR image overwritten)."""
  names = lambda *files: [str(name) for name in image_io.png_names(
      [pathlib.PurePath(file) for file in files], 'set')]
  assert names('a.jpg', 'b.PNG', 'sub/c.webp') == ['a.png', 'b.png', 'sub/c.png']
  assert names('a.jpg', 'a.png') == ['a.jpg.png', 'a.png']
  assert names('a.PNG', 'a.png') == ['a.PNG.png', 'a.png']
  assert names('a.bmp', 'a.jpg', 'a.tif') == ['a.bmp.png', 'a.jpg.png', 'a.tif.png']
  assert names('x/a.jpg', 'x/a.png', 'y/a.jpg') == ['x/a.jpg.png', 'x/a.png', 'y/a.png']
  # What still collides is refused before anything is written, naming both files.
  with pytest.raises(image_io.OutputNameError, match=r'^set/a.jpg and set/a.jpg.png would '
                     r'both be written as a.jpg.png; rename one of them$'):
    names('a.jpg', 'a.jpg.png', 'a.png')
