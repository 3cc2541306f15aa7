"""Benchmark evaluation (Set5, Set14, BSD100, ...) by the SR literature's conventions.

For every image of a folder: crop HR to a multiple of the scale, make LR with MATLAB
bicubic downsampling (uint8), upscale it with the method under test (uint8), and
score Y-channel PSNR/SSIM with ``scale`` pixels shaved off each border (see
``metrics``). Grayscale files stay single-channel, as in the MATLAB test code.

Usage (bicubic baseline; gives Set5 28.43 / 0.8113, Set14 26.00 / 0.7031,
BSD100 25.96 / 0.6682, against the published 28.42 / 0.8104, 26.00 / 0.7027,
25.96 / 0.6675):

  python -m srgan_jax.evaluate --model=bicubic --scale=4 \\
      --data=../shared/datasets/Set5 --data=../shared/datasets/Set14 \\
      --output=results.json
"""

import functools
import json
import pathlib
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np
from PIL import Image

from srgan_jax import bicubic
from srgan_jax import metrics
from srgan_jax import paths

# A batch of same-size uint8 LR images [n, h, w, c] -> uint8 SR [n, h * scale, w * scale, c],
# c = 1 or 3.
UpscaleFn = Callable[[np.ndarray], np.ndarray]

# Images of one size are upscaled together, this many at a time.
EVAL_BATCH_SIZE = 8

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp')


def list_images(folder: str | pathlib.Path) -> list[pathlib.Path]:
  """The image files of ``folder``, sorted by name; an image file is a set of one."""
  if pathlib.Path(folder).is_file():
    return [pathlib.Path(folder)]
  return sorted(path for path in pathlib.Path(folder).iterdir()
                if path.suffix.lower() in IMAGE_SUFFIXES)


def load_image(path: str | pathlib.Path) -> np.ndarray:
  """uint8 ``[H, W, 1]`` for grayscale ('L') files, ``[H, W, 3]`` RGB for the rest."""
  with Image.open(path) as image:
    if image.mode == 'L':
      return np.asarray(image)[..., None]
    return np.asarray(image.convert('RGB'))


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
  """Crops the bottom/right so that height and width are multiples of ``scale``."""
  height, width = image.shape[0], image.shape[1]
  return image[:height - height % scale, :width - width % scale]


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
  """The benchmarks' LR of a modcropped HR image: MATLAB bicubic by 1 / scale, uint8.

  Training makes its LR inputs with this too (``input_pipeline.training_pair``), so
  a model sees in training the degradation it is scored on.
  """
  return bicubic.imresize(hr, 1 / scale)


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
  """The bicubic baseline: MATLAB ``imresize(lr, scale, 'bicubic')``, uint8, per image."""
  return np.stack([bicubic.imresize(image, scale) for image in lr])


def make_upscale_fn(model: str, scale: int) -> UpscaleFn:
  """The ``UpscaleFn`` of a method that needs no checkpoint (``--model``)."""
  if model == 'bicubic':
    return functools.partial(bicubic_upscale, scale=scale)
  raise ValueError(f'unknown model {model!r}')


@functools.cache
def _jitted_generator_apply() -> Callable[..., Any]:
  """One jitted ``(model, variables, lr) -> SR pixels`` for every call of
  ``generator_upscale_fn``, so that evaluations during training reuse the
  programs compiled for each image size (a new jit per call would recompile them)."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.jit(lambda model, variables, lr: metrics.to_pixels(
      model.apply(variables, lr, train=False)), static_argnums=0)


def _apply_generator(model: Any, variables: Any, lr: Any) -> Any:
  return _jitted_generator_apply()(model, variables, lr)


def generator_upscale_fn(model: Any, variables: Any) -> UpscaleFn:
  """A trained generator as an UpscaleFn, data-parallel over every device.

  Grayscale LR is replicated to RGB and the SR turned back into one channel with
  the BT.601 luma weights (those of the Y channel), so a gray image is scored on
  its own intensity, as the bicubic baseline is.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from srgan_jax import train  # pylint: disable=g-import-not-at-top

  mesh = train.create_mesh()
  data_sharding = jax.sharding.NamedSharding(mesh, jax.P('data'))
  variables = jax.device_put(variables, jax.sharding.NamedSharding(mesh, jax.P()))
  apply = functools.partial(_apply_generator, model)

  def upscale(lr: np.ndarray) -> np.ndarray:
    count, channels = lr.shape[0], lr.shape[-1]
    rgb = np.broadcast_to(lr, (*lr.shape[:3], 3)).astype(np.float32) / 255
    padded = -(-count // jax.device_count()) * jax.device_count()  # Fill every device.
    rgb = np.concatenate([rgb, np.zeros((padded - count, *rgb.shape[1:]), np.float32)])
    sr = np.asarray(jax.device_get(apply(variables, jax.device_put(rgb, data_sharding))))
    sr = sr[:count]
    if channels == 1:
      sr = np.round(sr @ np.array([0.299, 0.587, 0.114]))[..., None]
    return sr.astype(np.uint8)

  return upscale


def _same_size_batches(images: Sequence[np.ndarray], batch_size: int) -> list[list[int]]:
  """Indices of images grouped by shape, in chunks of at most batch_size."""
  groups: dict[tuple[int, ...], list[int]] = {}
  for index, image in enumerate(images):
    groups.setdefault(image.shape, []).append(index)
  return [group[i:i + batch_size] for group in groups.values()
          for i in range(0, len(group), batch_size)]


def comparison_image(lr: np.ndarray, bicubic_sr: np.ndarray, sr: np.ndarray,
                     hr: np.ndarray) -> np.ndarray:
  """LR (nearest-upsampled) | bicubic | SR | HR, side by side, uint8."""
  scale = hr.shape[0] // lr.shape[0]
  nearest = np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)
  return np.concatenate([nearest, bicubic_sr, sr, hr], axis=1)


def _save_png(path: pathlib.Path, image: np.ndarray) -> None:
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)


def evaluate_folder(upscale_fn: UpscaleFn, folder: str | pathlib.Path, scale: int,
                    save_dir: str | pathlib.Path | None = None,
                    compare_dir: str | pathlib.Path | None = None,
                    batch_size: int = EVAL_BATCH_SIZE) -> dict[str, float | int]:
  """Mean PSNR/SSIM of ``upscale_fn`` over the images of ``folder``.

  Args:
    upscale_fn: uint8 LR ``[n, h, w, c]`` -> uint8 SR ``[n, h * scale, w * scale, c]``.
    folder: HR images (png/jpg/bmp).
    scale: the upscaling factor; also the border shaved before scoring.
    save_dir: if set, the SR images are written there as PNG, named after the HR files.
    compare_dir: if set, LR | bicubic | SR | HR comparison images are written there.
    batch_size: most images of one size per ``upscale_fn`` call.

  Returns:
    ``{'psnr': dB, 'ssim': ..., 'images': count, 'bias': [R, G, B]}``, ``bias``
    the mean SR - HR difference per channel in grey levels, over the set's whole
    images (a brightness or colour offset; gray images count in every channel).
  """
  paths = list_images(folder)
  if not paths:
    raise FileNotFoundError(f'no images in {folder}')
  for directory in (save_dir, compare_dir):
    if directory is not None:
      pathlib.Path(directory).mkdir(parents=True, exist_ok=True)
  hrs = [modcrop(load_image(path), scale) for path in paths]
  lrs = [make_lr(hr, scale) for hr in hrs]
  srs: list[np.ndarray] = [np.empty(0)] * len(paths)
  for indices in _same_size_batches(lrs, batch_size):
    for index, sr in zip(indices, np.asarray(upscale_fn(np.stack([lrs[i] for i in indices])))):
      srs[index] = sr
  psnrs, ssims, biases = [], [], []
  for path, lr, sr, hr in zip(paths, lrs, srs, hrs):
    if sr.shape != hr.shape or sr.dtype != np.uint8:
      raise ValueError(f'{path.name}: upscale_fn gave {sr.dtype} {sr.shape}, '
                       f'expected uint8 {hr.shape}')
    psnrs.append(metrics.psnr(sr, hr, shave=scale))
    ssims.append(metrics.ssim(sr, hr, shave=scale))
    difference = sr.astype(np.float64) - hr
    biases.append(np.broadcast_to(difference.mean(axis=(0, 1)), (3,)))
    logging.info('%s: PSNR %.4f dB, SSIM %.4f', path.name, psnrs[-1], ssims[-1])
    if save_dir is not None:
      _save_png(pathlib.Path(save_dir) / f'{path.stem}.png', sr)
    if compare_dir is not None:
      _save_png(pathlib.Path(compare_dir) / f'{path.stem}.png',
                comparison_image(lr, bicubic.imresize(lr, scale), sr, hr))
  return {'psnr': float(np.mean(psnrs)), 'ssim': float(np.mean(ssims)), 'images': len(paths),
          'bias': [float(b) for b in np.mean(biases, axis=0)]}


def evaluate_sets(upscale_fn: UpscaleFn, folders: Sequence[str | pathlib.Path], scale: int,
                  save_dir: str | pathlib.Path | None = None, compare: bool = False
                  ) -> dict[str, dict[str, Any]]:
  """``evaluate_folder`` on each folder, keyed by folder name.

  With ``save_dir``, SR images go to ``save_dir/<set>/`` and, with ``compare``,
  comparison images to ``save_dir/<set>/compare/``.
  """
  if compare and save_dir is None:
    raise ValueError('comparison images need a save_dir')
  results = {}
  for folder in folders:
    name = pathlib.Path(folder).name
    set_dir = None if save_dir is None else pathlib.Path(save_dir) / name
    results[name] = evaluate_folder(upscale_fn, folder, scale, set_dir,
                                    set_dir / 'compare' if compare else None)
  return results


def evaluate_workdir(workdir: str, folders: Sequence[str | pathlib.Path],
                     step: int | None = None, ema: bool = True,
                     save_dir: str | pathlib.Path | None = None,
                     compare: bool = False) -> dict[str, dict[str, Any]]:
  """Scores a run's checkpoint (latest unless ``step``) with the bicubic baseline beside it.

  The architecture and scale come from the checkpoint, so only the workdir is needed.
  Each set's entry is the model's ``{'psnr', 'ssim', 'images'}`` plus
  ``'bicubic': {'psnr', 'ssim'}``; the table is printed.
  """
  from srgan_jax import checkpointing  # pylint: disable=g-import-not-at-top

  model, variables, config = checkpointing.load_generator(workdir, step, ema)
  results = evaluate_sets(generator_upscale_fn(model, variables), folders, config.scale,
                          save_dir, compare)
  baseline = evaluate_sets(make_upscale_fn('bicubic', config.scale), folders, config.scale)
  for name, result in results.items():
    result['bicubic'] = {key: baseline[name][key] for key in ('psnr', 'ssim')}
  print(format_table(results))
  return results


def format_table(results: dict[str, dict[str, Any]]) -> str:
  """A plain-text table: set, images, PSNR (dB), SSIM, and the bicubic baseline if present."""
  width = max([len('set')] + [len(name) for name in results])
  baseline = all('bicubic' in result for result in results.values())
  header = f'{"set":<{width}}  images  PSNR (dB)    SSIM'
  lines = [header + ('  bicubic PSNR  bicubic SSIM' if baseline else '')]
  for name, result in results.items():
    line = (f'{name:<{width}}  {result["images"]:>6}  {result["psnr"]:>9.4f}  '
            f'{result["ssim"]:.4f}')
    if baseline:
      line += f'  {result["bicubic"]["psnr"]:>12.4f}  {result["bicubic"]["ssim"]:>12.4f}'
    lines.append(line)
  return '\n'.join(lines)


def _define_flags() -> None:
  flags.DEFINE_enum('model', None, ['bicubic', 'srgan'],
                    'bicubic: the baseline; srgan: the generator of --workdir '
                    '(the default when --workdir is given).')
  flags.DEFINE_string('workdir', None, 'Training workdir whose checkpoint to evaluate.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.DEFINE_bool('ema', True, 'Use the EMA generator weights when the run kept them.')
  flags.DEFINE_integer('scale', 4, 'bicubic: upscaling factor (also the shaved border).')
  flags.DEFINE_multi_string('data', None, 'Folder of HR images; repeat for several sets.')
  flags.DEFINE_string('output', None, 'Write the results here as JSON.')
  flags.DEFINE_string('save_dir', None, 'Write the SR images here, one folder per set.')
  flags.DEFINE_bool('compare', False, 'Also write LR | bicubic | SR | HR images (needs --save_dir).')
  flags.mark_flag_as_required('data')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  options = flags.FLAGS
  model = options.model or ('srgan' if options.workdir else 'bicubic')
  # Relative paths are relative to where the command was started.
  folders = [paths.absolute(folder) for folder in options.data]
  save_dir = paths.absolute(options.save_dir) if options.save_dir else None
  if model == 'srgan':
    if not options.workdir:
      raise app.UsageError('--model=srgan needs --workdir')
    results = evaluate_workdir(paths.absolute(options.workdir), folders, options.step,
                               options.ema, save_dir, options.compare)
  else:
    results = evaluate_sets(make_upscale_fn(model, options.scale), folders,
                            options.scale, save_dir, options.compare)
    print(format_table(results))
  if options.output:
    output = pathlib.Path(paths.absolute(options.output))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + '\n')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
