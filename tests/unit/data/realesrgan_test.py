"""Tests for Real-ESRGAN's degradation on the device (data/realesrgan.py) and its
place in the device source: determinism per (seed, process, step), devices, resume.

The parts (kernels, noise, JPEG, resize) are tested against their own references in
tests/unit/imaging/; here: the static-canvas ops against the same ops on the image
cropped to its traced size, and the whole pipeline's LR statistics on Set14 crops.
The pipeline compiles slowly on a CPU (about a minute under load), so every test of
it reads batches of one shape through the device source: one compiled program.
"""

import pathlib

from conftest import image_set, tiny_run_config, write_tiny_image_sets
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import pytest

from srgan_jax.configs import default
from srgan_jax.data import inputs
from srgan_jax.data import on_device
from srgan_jax.data import realesrgan
from srgan_jax.evaluation import metrics
from srgan_jax.imaging import blur_kernels
from srgan_jax.imaging import resize
from srgan_jax.training import checkpointing
from srgan_jax.training import loop

SETTINGS = realesrgan.Settings.from_config(default.get_config().data.realesrgan)
CROP, SCALE = 32, 4


def test_settings_hold_the_papers_values():
  """train_realesrnet_x4plus.yml's values (../shared/REFERENCE.md section 7), as read."""
  first, second = SETTINGS.first, SETTINGS.second
  assert SETTINGS.kernel_sizes == (7, 9, 11, 13, 15, 17, 19, 21)
  assert first.kernel_probabilities == (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
  assert (first.blur_sigma, second.blur_sigma) == ((0.2, 3.0), (0.2, 1.5))
  assert (first.resize_probabilities, second.resize_probabilities) == (
      (0.2, 0.7, 0.1), (0.3, 0.4, 0.3))
  assert (first.resize_range, second.resize_range) == ((0.15, 1.5), (0.3, 1.2))
  assert (first.noise_sigma, second.noise_sigma) == ((1.0, 30.0), (1.0, 25.0))
  assert (first.poisson_scale, second.poisson_scale) == ((0.05, 3.0), (0.05, 2.5))
  assert (first.blur_probability, second.blur_probability) == (1.0, 0.8)
  assert first.jpeg_quality == second.jpeg_quality == (30.0, 95.0)
  assert (SETTINGS.final_sinc_probability, SETTINGS.final_resize_first_probability) == (0.8, 0.5)


def _canvas(images: np.ndarray, sizes: list[int], side: int, seed: int) -> np.ndarray:
  """Each image's top-left ``size`` square on a ``side`` canvas filled with noise
  beyond it (what the ops must ignore)."""
  rng = np.random.default_rng(seed)
  canvas = rng.uniform(0, 1, (len(sizes), side, side, 3)).astype(np.float32)
  for i, size in enumerate(sizes):
    canvas[i, :size, :size] = images[i, :size, :size]
  return canvas


def test_canvas_ops_equal_the_ops_on_the_cropped_image():
  """Blur (reflecting at the traced border) and resize (to a traced size) of an image
  on a larger canvas equal blur_kernels.blur and resize.resize of the image alone;
  the edge fill replicates the image's edge over the canvas."""
  rng = np.random.default_rng(0)
  sizes, new_sizes, methods = [24, 13, 40, 11], [9, 30, 40, 5], [0, 1, 2, 2]
  images = rng.uniform(0, 1, (4, 40, 40, 3)).astype(np.float32)
  kernels = np.stack([blur_kernels.gaussian_kernel(size, 1.0 + i, 0.5, 0.3 * i)
                      for i, size in enumerate((21, 7, 13, 9))])

  @jax.jit
  def on_canvas(canvas, kernels, sizes, new_sizes, methods):
    planes = realesrgan._planar(canvas)  # The pipeline's layout, [n, c, h, w].
    return (jnp.moveaxis(realesrgan._blur(planes, kernels, sizes), 1, 3),
            jnp.moveaxis(realesrgan._resize(planes, sizes, new_sizes, methods, 48), 1, 3),
            jnp.moveaxis(realesrgan._edge_filled(planes, sizes), 1, 3))

  canvas = _canvas(images, sizes, 40, 1)
  blurred, resized, filled = on_canvas(canvas, kernels, np.array(sizes), np.array(new_sizes),
                                       np.array(methods))
  for i, (size, new_size, method) in enumerate(zip(sizes, new_sizes, methods)):
    alone = images[i:i + 1, :size, :size]
    # Edge-filled as libjpeg pads: exact copies of the image's last row and column.
    np.testing.assert_array_equal(filled[i], np.pad(alone[0], ((0, 40 - size),) * 2 + ((0, 0),),
                                                    mode='edge'))
    if size > 10:  # blur_kernels.blur's own padding needs more than 10 pixels.
      np.testing.assert_allclose(blurred[i, :size, :size],
                                 blur_kernels.blur(alone, kernels[i:i + 1])[0], atol=1e-5)
    matrix = resize.resize_matrix(size, new_size, resize.METHODS[method])
    expected = np.einsum('oh,hwc,pw->opc', matrix, alone[0], matrix)
    np.testing.assert_allclose(resized[i, :new_size, :new_size], expected, atol=1e-5)
    assert not np.any(resized[i, new_size:]) and not np.any(resized[i, :, new_size:])


# Eight 32x32 crops of Set14 photographs; every test below reads batches of all eight
# (batch 8, crop 32, no augmentation), so that one compiled program serves them all.
BATCH = 8


def _write_crops(folder: pathlib.Path, copies: int) -> None:
  """The eight crops, each written ``copies`` times, copies of a crop next to each
  other in name order: with ``copies`` hosts, every host holds all eight."""
  folder.mkdir(parents=True, exist_ok=True)
  paths = sorted(image_set('Set14').glob('*.png'))
  colour = [path for path in paths if Image.open(path).mode == 'RGB'][:BATCH]
  for i, path in enumerate(colour):
    image = np.asarray(Image.open(path))
    crop = image[image.shape[0] // 2:image.shape[0] // 2 + CROP,
                 image.shape[1] // 2:image.shape[1] // 2 + CROP]
    for copy in range(copies):
      Image.fromarray(crop).save(folder / f'{i:02d}_{copy}.png')


def _source_config(folder: pathlib.Path, degradation_name: str) -> ml_collections.ConfigDict:
  data = default.get_config().data
  data.folders, data.crop_size, data.augment = (str(folder),), CROP, False
  data.degradation = degradation_name
  return data


def _by_hr(batch: dict[str, np.ndarray]) -> dict[bytes, np.ndarray]:
  """LR by HR crop: batches hold the same eight crops in drawn orders."""
  return {hr.tobytes(): lr for hr, lr in zip(batch['hr'], batch['lr'])}


@pytest.fixture(scope='module')
def two_host_sources(tmp_path_factory):
  folder = tmp_path_factory.mktemp('crops')
  _write_crops(folder, copies=2)
  return [on_device.DeviceDataSource(_source_config(folder, 'realesrgan'), scale=SCALE,
                                     seed=0, process_index=p, process_count=2)
          for p in (0, 1)], folder


def test_batches_depend_on_seed_process_and_step(two_host_sources):
  """Same (seed, process, step): the same LR; another step or process: the same HR
  crops, degraded otherwise; the images of a batch independently."""
  (source, other_host), folder = two_host_sources
  again = on_device.DeviceDataSource(_source_config(folder, 'realesrgan'), scale=SCALE,
                                     seed=0, process_index=0, process_count=2)
  batch = _by_hr(jax.device_get(source.batch(5, BATCH)))
  assert len(batch) == BATCH
  for other, same in [(again.batch(5, BATCH), True), (source.batch(6, BATCH), False),
                      (other_host.batch(5, BATCH), False)]:
    other = _by_hr(jax.device_get(other))
    assert other.keys() == batch.keys()  # The same crops...
    differences = [np.abs(other[hr] - lr).mean() for hr, lr in batch.items()]
    if same:
      assert max(differences) == 0
    else:  # ...each degraded otherwise.
      assert min(differences) > 1 / 255, differences


def test_degraded_lr_statistics(two_host_sources):
  """The whole pipeline at the paper's settings on the eight crops, three steps: its
  LR against the clean (MATLAB bicubic) LR of the same crops, mean PSNR (RGB) in
  PSNR_RANGE dB (measured with this seed: 20.53 dB; notes/CONFIG_RESULTS.md), and
  spread (no two draws alike)."""
  (source, _), folder = two_host_sources
  clean = on_device.DeviceDataSource(_source_config(folder, 'bicubic'), scale=SCALE, seed=0,
                                     process_index=0, process_count=2)
  psnrs = []
  for step in range(3):
    degraded = _by_hr(jax.device_get(source.batch(step, BATCH)))
    reference = _by_hr(jax.device_get(clean.batch(step, BATCH)))
    for hr, lr in degraded.items():
      to_uint8 = lambda x: np.round(x * 255).astype(np.uint8)
      psnrs.append(metrics.psnr(to_uint8(lr), to_uint8(reference[hr]), shave=0,
                                y_channel=False))
  psnrs = np.array(psnrs)
  print(f'PSNR against the clean LR: mean {psnrs.mean():.2f} dB, std {psnrs.std():.2f}, '
        f'min {psnrs.min():.2f}, max {psnrs.max():.2f}')
  assert PSNR_RANGE[0] <= psnrs.mean() <= PSNR_RANGE[1], psnrs
  assert psnrs.std() > 1.0, psnrs


# Measured 20.53 dB (std 3.44, 12.4 to 29.5): a pipeline without its noise, blur or
# JPEG would score far above, a misaligned or broken one far below.
PSNR_RANGE = (17.0, 23.0)


def _run_config(root: pathlib.Path, srgan_steps: int) -> ml_collections.ConfigDict:
  """The tests' tiny run, on the eight crops (the batches above), from the device."""
  config = tiny_run_config(root, srresnet_steps=2, srgan_steps=srgan_steps)
  config.data.source, config.data.augment = 'device', False
  config.data.degradation = 'realesrgan'
  config.data.folders = (str(root / 'crops'),)
  return config


@pytest.fixture(scope='module')
def run_root(tmp_path_factory):
  root = tmp_path_factory.mktemp('run')
  write_tiny_image_sets(root)
  _write_crops(root / 'crops', copies=1)
  return root


def test_eight_devices_get_the_batches_of_one(run_root):
  config = _run_config(run_root, 2)
  batches = []
  for count in (1, 8):
    mesh = jax.make_mesh((count,), ('data',), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices()[:count])
    next_call = inputs.create_call_batches(config, 3, mesh)  # Step 3's batch.
    batches.append(jax.device_get(next_call(1).steps))
  for key in ('lr', 'hr'):
    np.testing.assert_array_equal(batches[0][key], batches[1][key])


def test_resumed_run_equals_uninterrupted(run_root, tmp_path):
  """Stopped at the phase switch (step 2) and resumed: the same final weights."""
  uninterrupted = loop.train_and_evaluate(_run_config(run_root, 2), str(tmp_path / 'a'))
  workdir = str(tmp_path / 'b')
  loop.train_and_evaluate(_run_config(run_root, 0), workdir)
  assert checkpointing.latest_step(workdir) == 2
  resumed = loop.train_and_evaluate(_run_config(run_root, 2), workdir)
  a, b = (jax.tree_util.tree_leaves(jax.device_get([s.params for s in states]))
          for states in (uninterrupted, resumed))
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_noise_probability_leaves_that_share_without_noise():
  """An order's noise_probability (off the paper below 1): on flat grey images with
  no blur and no resize, the images left unchanged are the share drawn without noise,
  1 - noise_probability (any Gaussian or Poisson noise of sigma 20 changes a 32x32
  image); at 1, none."""
  images = jnp.full((256, 3, CROP, CROP), 0.5, jnp.float32)
  size = jnp.full((256,), CROP, jnp.int32)
  unchanged = {}
  for probability in (1.0, 0.3):
    order = SETTINGS.first.__class__(**{
        **vars(SETTINGS.first), 'blur_probability': 0.0, 'resize_probabilities': (0, 0, 1),
        'noise_sigma': (20.0, 20.0), 'poisson_scale': (3.0, 3.0),
        'noise_probability': probability})
    noisy, _ = realesrgan._blur_resize_noise(  # pylint: disable=protected-access
        jax.random.key(0), images, size, order, CROP, CROP, SETTINGS.kernel_sizes)
    unchanged[probability] = float(jnp.mean(jnp.all(noisy == images, axis=(1, 2, 3))))
  assert unchanged[1.0] == 0
  # 256 draws: unchanged 0.7 +- 0.09 (3 standard deviations).
  assert abs(unchanged[0.3] - 0.7) < 0.09, unchanged


def test_clean_probability_keeps_the_bicubic_lr_of_that_share(two_host_sources, monkeypatch):
  """clean_probability (off the paper above 0): per image, the LR is either the
  bicubic source's LR of that crop, bit for bit, or the degraded one, drawn per step.
  The degradation is replaced by a constant, so the selection compiles in seconds."""
  _, folder = two_host_sources
  monkeypatch.setattr(realesrgan, 'degrade', lambda key, hr, settings, scale: jnp.full(
      (hr.shape[0], hr.shape[1] // scale, hr.shape[2] // scale, 3), -1.0))
  data = _source_config(folder, 'realesrgan')
  data.realesrgan.clean_probability = 0.25
  source = on_device.DeviceDataSource(data, scale=SCALE, seed=0)
  clean = on_device.DeviceDataSource(_source_config(folder, 'bicubic'), scale=SCALE, seed=0)
  kept = []
  for step in range(12):
    batch = _by_hr(jax.device_get(source.batch(step, BATCH)))
    reference = _by_hr(jax.device_get(clean.batch(step, BATCH)))
    assert batch.keys() == reference.keys()  # The same crops as the bicubic source's.
    for hr, lr in batch.items():
      degraded = bool(np.all(lr == -1.0))
      assert degraded or np.array_equal(lr, reference[hr])
      kept.append(not degraded)
  # 96 draws of p = 0.25: 0.25 +- 0.13 (3 standard deviations; swapped, 0.75).
  assert abs(np.mean(kept) - 0.25) < 0.13, np.mean(kept)
