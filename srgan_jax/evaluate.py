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
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np
from PIL import Image

from srgan_jax import bicubic
from srgan_jax import metrics

# uint8 LR [h, w, c] -> uint8 SR [h * scale, w * scale, c], c = 1 or 3.
UpscaleFn = Callable[[np.ndarray], np.ndarray]

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp')


def list_images(folder: str | pathlib.Path) -> list[pathlib.Path]:
  """The image files of ``folder``, sorted by name."""
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


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
  """The bicubic baseline: MATLAB ``imresize(lr, scale, 'bicubic')``, uint8."""
  return bicubic.imresize(lr, scale)


def make_upscale_fn(model: str, scale: int) -> UpscaleFn:
  """The ``UpscaleFn`` that the command line's ``--model`` names."""
  if model == 'bicubic':
    return functools.partial(bicubic_upscale, scale=scale)
  raise ValueError(f'unknown model {model!r}')


def evaluate_folder(upscale_fn: UpscaleFn, folder: str | pathlib.Path, scale: int,
                    save_dir: str | pathlib.Path | None = None) -> dict[str, float | int]:
  """Mean PSNR/SSIM of ``upscale_fn`` over the images of ``folder``.

  Args:
    upscale_fn: uint8 LR ``[h, w, c]`` -> uint8 SR ``[h * scale, w * scale, c]``.
    folder: HR images (png/jpg/bmp).
    scale: the upscaling factor; also the border shaved before scoring.
    save_dir: if set, the SR images are written there as PNG, named after the HR files.

  Returns:
    ``{'psnr': dB, 'ssim': ..., 'images': count}``.
  """
  paths = list_images(folder)
  if not paths:
    raise FileNotFoundError(f'no images in {folder}')
  if save_dir is not None:
    save_dir = pathlib.Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
  psnrs, ssims = [], []
  for path in paths:
    hr = modcrop(load_image(path), scale)
    lr = bicubic.imresize(hr, 1 / scale)
    sr = np.asarray(upscale_fn(lr))
    if sr.shape != hr.shape or sr.dtype != np.uint8:
      raise ValueError(f'{path.name}: upscale_fn gave {sr.dtype} {sr.shape}, '
                       f'expected uint8 {hr.shape}')
    psnrs.append(metrics.psnr(sr, hr, shave=scale))
    ssims.append(metrics.ssim(sr, hr, shave=scale))
    logging.info('%s: PSNR %.4f dB, SSIM %.4f', path.name, psnrs[-1], ssims[-1])
    if save_dir is not None:
      Image.fromarray(sr[..., 0] if sr.shape[-1] == 1 else sr).save(
          save_dir / f'{path.stem}.png')
  return {'psnr': float(np.mean(psnrs)), 'ssim': float(np.mean(ssims)), 'images': len(paths)}


def evaluate_sets(upscale_fn: UpscaleFn, folders: Sequence[str | pathlib.Path], scale: int,
                  save_dir: str | pathlib.Path | None = None) -> dict[str, dict[str, float | int]]:
  """``evaluate_folder`` on each folder, keyed by folder name (SR saved per set)."""
  results = {}
  for folder in folders:
    name = pathlib.Path(folder).name
    set_save_dir = None if save_dir is None else pathlib.Path(save_dir) / name
    results[name] = evaluate_folder(upscale_fn, folder, scale, set_save_dir)
  return results


def format_table(results: dict[str, dict[str, float | int]]) -> str:
  """A plain-text table: set, images, PSNR (dB), SSIM."""
  width = max([len('set')] + [len(name) for name in results])
  lines = [f'{"set":<{width}}  images  PSNR (dB)    SSIM']
  for name, result in results.items():
    lines.append(f'{name:<{width}}  {result["images"]:>6}  {result["psnr"]:>9.4f}  '
                 f'{result["ssim"]:.4f}')
  return '\n'.join(lines)


def _define_flags() -> None:
  flags.DEFINE_enum('model', 'bicubic', ['bicubic'], 'Upscaling method to evaluate.')
  flags.DEFINE_integer('scale', 4, 'Upscaling factor (also the shaved border).')
  flags.DEFINE_multi_string('data', None, 'Folder of HR images; repeat for several sets.')
  flags.DEFINE_string('output', None, 'Write the results here as JSON.')
  flags.DEFINE_string('save_dir', None, 'Write the SR images here, one folder per set.')
  flags.mark_flag_as_required('data')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = flags.FLAGS
  upscale_fn = make_upscale_fn(config.model, config.scale)
  results = evaluate_sets(upscale_fn, config.data, config.scale, config.save_dir)
  print(format_table(results))
  if config.output:
    pathlib.Path(config.output).write_text(json.dumps(results, indent=2) + '\n')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
