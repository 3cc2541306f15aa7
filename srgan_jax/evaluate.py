"""Benchmark evaluation (Set5, Set14, BSD100, ...) by the SR literature's conventions.

For every image of a folder: crop HR to a multiple of the scale, make LR with MATLAB
bicubic downsampling (uint8), upscale it with the method under test (uint8), and
score Y-channel PSNR/SSIM with ``scale`` pixels shaved off each border (see
``metrics``), and the perceptual metrics of ``--metrics`` (NIQE, LPIPS; see
``perceptual``) on batches of same-size images. Grayscale files stay single-channel,
as in the MATLAB test code; files are read by ``image_io``'s rules (16-bit images
reduced to their high byte, as the training input does).

Files that cannot be scored (unreadable, unsupported, or too small for the SSIM
window once shaved) are reported by name and skipped; a set that cannot be scored at
all is reported and the other sets are still scored and written. The command exits
with 1 when anything was skipped, 2 for a bad flag (one line on stderr).

Usage (bicubic baseline; gives Set5 28.43 / 0.8113, Set14 26.00 / 0.7031,
BSD100 25.96 / 0.6682, against the published 28.42 / 0.8104, 26.00 / 0.7027,
25.96 / 0.6675):

  python -m srgan_jax.evaluate --model=bicubic --scale=4 \\
      --data=../shared/datasets/Set5 --data=../shared/datasets/Set14 \\
      --output=results.json

A shipped model by name (``pretrained``), with comparison images (LR | bicubic |
SR | HR) of every image and a 3x enlarged region of interest of one (HR pixels):

  python -m srgan_jax.evaluate --model=cpu_small --data=../shared/datasets/Set5 \
      --save_dir=sr --compare --crop=butterfly:96,64,64,64 --zoom=3
"""

import functools
import json
import pathlib
import re
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np
from PIL import Image

from srgan_jax import bicubic
from srgan_jax import cli
from srgan_jax import degradation
from srgan_jax import distributed
from srgan_jax import errors
from srgan_jax import image_io
from srgan_jax import metrics
from srgan_jax import paths
from srgan_jax import perceptual
from srgan_jax import pretrained
from srgan_jax import sharding
from srgan_jax.configs import validation

# A batch of same-size uint8 LR images [n, h, w, c] -> uint8 SR [n, h * scale, w * scale, c],
# c = 1 or 3.
UpscaleFn = Callable[[np.ndarray], np.ndarray]

# Images of one size are upscaled together, this many at a time.
EVAL_BATCH_SIZE = 8

class NoImagesError(errors.UserError, FileNotFoundError):
  """A set with no image that can be scored."""


def list_images(folder: str | pathlib.Path) -> list[pathlib.Path]:
  """The image files of ``folder``, sorted by name; an image file is a set of one."""
  if pathlib.Path(folder).is_file():
    return [pathlib.Path(folder)]
  return sorted(path for path in pathlib.Path(folder).iterdir()
                if path.suffix.lower() in image_io.IMAGE_SUFFIXES)


def load_image(path: str | pathlib.Path) -> np.ndarray:
  """uint8 ``[H, W, 1]`` for grayscale files (MATLAB's conventions: the Y of a grey
  image is the image), ``[H, W, 3]`` RGB for the rest, upright, alpha dropped
  (``image_io.load_uint8``); raises ``image_io.UnreadableImageError``."""
  return image_io.load_uint8(path)


def _scorable(path: pathlib.Path, scale: int) -> np.ndarray:
  """The HR image cropped to a multiple of ``scale``, if big enough to be scored."""
  hr = degradation.modcrop(load_image(path), scale)
  smallest = metrics.SSIM_WINDOW + 2 * scale  # The SSIM window, after shaving the border.
  if min(hr.shape[:2]) < smallest:
    raise image_io.UnreadableImageError(
        f'{path}: {hr.shape[0]}x{hr.shape[1]} pixels (cropped to a multiple of {scale}) '
        f'is too small to score at x{scale}: both sides must be at least {smallest}')
  return hr


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
  """The bicubic baseline: MATLAB ``imresize(lr, scale, 'bicubic')``, uint8, per image."""
  return np.stack([bicubic.imresize(image, scale) for image in lr])


def make_upscale_fn(model: str, scale: int) -> UpscaleFn:
  """The ``UpscaleFn`` of a method that needs no checkpoint (``--model``)."""
  if model == 'bicubic':
    return functools.partial(bicubic_upscale, scale=scale)
  raise ValueError(f'unknown model {model!r}')


_BICUBIC_SCORES: dict[tuple[str, int, tuple[str, ...]], dict[str, float | int]] = {}


def bicubic_scores(folder: str, scale: int,
                   metric_fns: Mapping[str, perceptual.MetricFn] | None = None
                   ) -> dict[str, float | int]:
  """The bicubic baseline's ``evaluate_folder`` result, computed once per process
  (for each folder, scale and set of metric names)."""
  key = (folder, scale, tuple(sorted(metric_fns or {})))
  if key not in _BICUBIC_SCORES:
    _BICUBIC_SCORES[key] = evaluate_folder(make_upscale_fn('bicubic', scale), folder, scale,
                                           metric_fns=metric_fns)
  return _BICUBIC_SCORES[key]


@functools.cache
def _generator_pixels(model: Any) -> Callable[[Any, Any], Any]:
  """One ``(variables, lr) -> SR pixels`` function per generator architecture, so that
  evaluations during training reuse the programs compiled for each image size
  (``sharding.data_parallel`` caches its compiled programs by function)."""
  return lambda variables, lr: metrics.to_pixels(model.apply(variables, lr, train=False))


def generator_upscale_fn(model: Any, variables: Any) -> UpscaleFn:
  """A trained generator as an UpscaleFn, data-parallel over every device of every process.

  On several processes, every process calls it with the same images and gets all the
  SR images back (see ``sharding.data_parallel``). Grayscale LR is replicated to
  RGB and the SR turned back into one channel with the BT.601 luma weights (those of
  the Y channel), so a gray image is scored on its own intensity, as the bicubic
  baseline is.
  """
  apply = sharding.data_parallel(_generator_pixels(model), variables)

  def upscale(lr: np.ndarray) -> np.ndarray:
    rgb = np.broadcast_to(lr, (*lr.shape[:3], 3)).astype(np.float32) / 255
    sr = np.asarray(apply(rgb))
    if lr.shape[-1] == 1:
      sr = np.round(sr @ image_io.LUMA_601)[..., None]
    return sr.astype(np.uint8)

  return upscale


def _same_size_batches(images: Sequence[np.ndarray], batch_size: int) -> list[list[int]]:
  """Indices of images grouped by shape, in chunks of at most batch_size."""
  groups: dict[tuple[int, ...], list[int]] = {}
  for index, image in enumerate(images):
    groups.setdefault(image.shape, []).append(index)
  return [group[i:i + batch_size] for group in groups.values()
          for i in range(0, len(group), batch_size)]


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


def parse_crop(spec: str, zoom: int = 1) -> Crop:
  """``'NAME:x,y,w,h'`` (HR pixels) as a Crop."""
  match = re.fullmatch(r'([^:]+):(\d+),(\d+),(\d+),(\d+)', spec.strip())
  if not match or min(int(match[4]), int(match[5]), zoom) < 1:
    raise ValueError(f'crop {spec!r} is not NAME:x,y,width,height (HR pixels, positive '
                     'size), e.g. butterfly:96,64,64,48')
  return Crop(match[1], *map(int, match.groups()[1:]), zoom=zoom)


def comparison_image(lr: np.ndarray, bicubic_sr: np.ndarray, sr: np.ndarray,
                     hr: np.ndarray, crop: Crop | None = None) -> np.ndarray:
  """LR (nearest-upsampled) | bicubic | SR | HR, side by side, uint8; with ``crop``,
  each panel cut to the same HR region (so they stay in register) and enlarged."""
  scale = hr.shape[0] // lr.shape[0]
  panels = [np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1), bicubic_sr, sr, hr]
  if crop is not None:
    if crop.x + crop.width > hr.shape[1] or crop.y + crop.height > hr.shape[0]:
      raise ValueError(f'crop {crop} lies outside {crop.image} (HR {hr.shape[1]}x'
                       f'{hr.shape[0]} after cropping to a multiple of the scale)')
    panels = [np.repeat(np.repeat(panel[crop.y:crop.y + crop.height, crop.x:crop.x + crop.width],
                                  crop.zoom, axis=0), crop.zoom, axis=1) for panel in panels]
  return np.concatenate(panels, axis=1)


def _save_png(path: pathlib.Path, image: np.ndarray) -> None:
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)


def _batched_means(metric_fns: Mapping[str, perceptual.MetricFn], srs: Sequence[np.ndarray],
                   hrs: Sequence[np.ndarray], batch_size: int) -> dict[str, float]:
  """Each metric's mean over the images, computed on batches of same-size images."""
  means = {}
  for name, fn in metric_fns.items():
    scores = np.empty(len(srs))
    for indices in _same_size_batches(hrs, batch_size):
      scores[indices] = fn(np.stack([srs[i] for i in indices]), np.stack([hrs[i] for i in indices]))
    means[name] = float(np.mean(scores))
  return means


def evaluate_folder(upscale_fn: UpscaleFn, folder: str | pathlib.Path, scale: int,
                    save_dir: str | pathlib.Path | None = None,
                    compare_dir: str | pathlib.Path | None = None,
                    batch_size: int = EVAL_BATCH_SIZE,
                    crops: Sequence[Crop] = (),
                    metric_fns: Mapping[str, perceptual.MetricFn] | None = None
                    ) -> dict[str, float | int]:
  """Mean PSNR/SSIM (and ``metric_fns``) of ``upscale_fn`` over the images of ``folder``.

  Args:
    upscale_fn: uint8 LR ``[n, h, w, c]`` -> uint8 SR ``[n, h * scale, w * scale, c]``.
    folder: HR images (``image_io.IMAGE_SUFFIXES``).
    scale: the upscaling factor; also the border shaved before scoring.
    save_dir: if set, the SR images are written there as PNG, named after the HR files.
    compare_dir: if set, LR | bicubic | SR | HR comparison images are written there.
    batch_size: most images of one size per ``upscale_fn`` call.
    crops: regions of interest; those of this folder's images are written to
      ``compare_dir`` as ``Crop.file_name``, beside the whole comparison images.
    metric_fns: further metrics by name (``perceptual.metric_fns``), scored on
      batches of same-size images.

  Returns:
    ``{'psnr': dB, 'ssim': ..., 'images': count scored, 'bias': [R, G, B],
    'failed': [messages]}`` and the mean of each further metric. ``bias`` is the mean
    SR - HR difference per channel in grey levels, over the set's whole images (a
    brightness or colour offset; gray images count in every channel); 'failed' names
    each file that was skipped and why.

  Raises:
    NoImagesError: no file of the folder could be scored.
  """
  failed, image_paths, hrs = [], [], []
  for path in list_images(folder):
    try:
      hrs.append(_scorable(path, scale))
      image_paths.append(path)
    except image_io.UnreadableImageError as error:  # Its message names the file.
      logging.warning('Skipped %s', error)
      failed.append(str(error))
  if not image_paths:
    raise NoImagesError(f'no image to score in {folder} ({len(failed)} skipped'
                        + (f', e.g. {failed[0]}' if failed else
                           f'; looked for {", ".join(image_io.IMAGE_SUFFIXES)}') + ')')
  for directory in (save_dir, compare_dir):
    if directory is not None:
      pathlib.Path(directory).mkdir(parents=True, exist_ok=True)
  lrs = [degradation.make_lr(hr, scale) for hr in hrs]
  srs: list[np.ndarray] = [np.empty(0)] * len(image_paths)
  for indices in _same_size_batches(lrs, batch_size):
    for index, sr in zip(indices, np.asarray(upscale_fn(np.stack([lrs[i] for i in indices])))):
      srs[index] = sr
  psnrs, ssims, biases = [], [], []
  for path, lr, sr, hr in zip(image_paths, lrs, srs, hrs):
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
      bicubic_sr = bicubic.imresize(lr, scale)
      for crop in [None] + [crop for crop in crops if crop.image == path.stem]:
        _save_png(pathlib.Path(compare_dir) / (crop.file_name if crop else f'{path.stem}.png'),
                  comparison_image(lr, bicubic_sr, sr, hr, crop))
  return {'psnr': float(np.mean(psnrs)), 'ssim': float(np.mean(ssims)),
          **_batched_means(metric_fns or {}, srs, hrs, batch_size), 'images': len(image_paths),
          'bias': [float(b) for b in np.mean(biases, axis=0)], 'failed': failed}


def evaluate_sets(upscale_fn: UpscaleFn, folders: Sequence[str | pathlib.Path], scale: int,
                  save_dir: str | pathlib.Path | None = None, compare: bool = False,
                  crops: Sequence[Crop] = (),
                  metric_fns: Mapping[str, perceptual.MetricFn] | None = None
                  ) -> dict[str, dict[str, Any]]:
  """``evaluate_folder`` on each folder, keyed by folder name.

  With ``save_dir``, SR images go to ``save_dir/<set>/`` and, with ``compare`` (or
  ``crops``), comparison images to ``save_dir/<set>/compare/``. A set that cannot be
  scored (missing, no usable image) gets ``{'error': message}`` and the others are scored.
  """
  compare = compare or bool(crops)
  if compare and save_dir is None:
    raise ValueError('comparison images need a save_dir')
  stems = {path.stem for folder in folders for path in list_images(folder)}
  unknown = sorted({crop.image for crop in crops} - stems)
  if unknown:  # Before the evaluation, not after it.
    raise ValueError(f'crops name images that are in none of the sets: {unknown}')
  results = {}
  for folder in folders:
    name = pathlib.Path(folder).name
    set_dir = None if save_dir is None else pathlib.Path(save_dir) / name
    try:
      results[name] = evaluate_folder(upscale_fn, folder, scale, set_dir,
                                      set_dir / 'compare' if compare else None,
                                      crops=crops, metric_fns=metric_fns)
    except (errors.UserError, OSError) as error:  # Missing, unreadable or empty set.
      logging.warning('Set %s not scored: %s', name, error)
      results[name] = {'error': str(error)}
  return results


def evaluate_workdir(workdir: str, folders: Sequence[str | pathlib.Path],
                     step: int | None = None, ema: bool = True,
                     save_dir: str | pathlib.Path | None = None,
                     compare: bool = False,
                     metric_names: Sequence[str] = perceptual.DEFAULT_METRICS
                     ) -> dict[str, dict[str, Any]]:
  """Scores a run's checkpoint (latest unless ``step``) with the bicubic baseline beside it.

  The architecture and scale come from the checkpoint, so only the workdir is needed.
  See ``evaluate_model``.
  """
  return evaluate_model(*pretrained.load_generator('srgan', workdir, step, ema), folders,
                        save_dir, compare, metric_names=metric_names)



def evaluate_model(model: Any, variables: Any, config: Any,
                   folders: Sequence[str | pathlib.Path],
                   save_dir: str | pathlib.Path | None = None, compare: bool = False,
                   crops: Sequence[Crop] = (),
                   metric_names: Sequence[str] = perceptual.DEFAULT_METRICS
                   ) -> dict[str, dict[str, Any]]:
  """Scores a generator (``pretrained.load_generator``'s triple) beside bicubic.

  Each set's entry is the model's ``{'psnr', 'ssim', <metric_names>..., 'images'}``
  plus the same scores of the bicubic baseline under ``'bicubic'``; the table is
  printed. On several processes, all of them compute (and return) the results;
  process 0 alone writes images and prints.
  """
  writes = distributed.is_main_process()
  if not writes:
    save_dir, compare, crops = None, False, ()
  metric_fns = perceptual.metric_fns(metric_names, config.scale)
  results = evaluate_sets(generator_upscale_fn(model, variables), folders, config.scale,
                          save_dir, compare, crops, metric_fns)
  for folder, result in zip(folders, results.values()):
    if 'error' not in result:
      baseline = bicubic_scores(str(folder), config.scale, metric_fns)
      result['bicubic'] = {key: value for key, value in baseline.items()
                           if key not in ('images', 'failed')}
  if writes:
    print(format_table(results))
  return results


_COLUMN_LABELS = {'psnr': 'PSNR (dB)', 'ssim': 'SSIM', 'niqe': 'NIQE', 'lpips': 'LPIPS',
                  'lpips_vgg': 'LPIPS-VGG'}


def format_table(results: dict[str, dict[str, Any]]) -> str:
  """A plain-text table: set, images, each metric (PSNR (dB), SSIM, NIQE, LPIPS, ...),
  then the bicubic baseline's if present."""
  width = max([len('set')] + [len(name) for name in results])
  scored = [result for result in results.values() if 'error' not in result]
  names = [key for key, value in (scored[0] if scored else {}).items()
           if key != 'images' and isinstance(value, float)]  # Not bias, failed, bicubic.
  columns = [(_COLUMN_LABELS.get(key, key), (key,)) for key in names]
  if scored and all('bicubic' in result for result in scored):
    columns += [(f'bicubic {_COLUMN_LABELS.get(key, key).removesuffix(" (dB)")}',
                 ('bicubic', key)) for key in names]
  sizes = [max(len(label), 6) for label, _ in columns]
  lines = [f'{"set":<{width}}  images' +
           ''.join(f'  {label:>{size}}' for (label, _), size in zip(columns, sizes))]
  for name, result in results.items():
    if 'error' in result:
      lines.append(f'{name:<{width}}  not scored: {result["error"]}')
      continue
    values = [functools.reduce(dict.get, keys, result) for _, keys in columns]
    line = (f'{name:<{width}}  {result["images"]:>6}' +
            ''.join(f'  {value:>{size}.4f}' for value, size in zip(values, sizes)))
    if result.get('failed'):
      line += f'  ({len(result["failed"])} files skipped)'
    lines.append(line)
  return '\n'.join(lines)


def _define_flags() -> None:
  flags.DEFINE_string('model', None, pretrained.model_flag_help() +
                      ' Default: srgan with --workdir, else bicubic.')
  flags.DEFINE_string('workdir', None, 'Training workdir whose checkpoint to evaluate.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.DEFINE_bool('ema', True, 'Use the EMA generator weights when the run kept them.')
  flags.DEFINE_integer('scale', 4, 'bicubic: upscaling factor (also the shaved border).')
  flags.DEFINE_multi_string('data', None, 'Folder of HR images, or the name of a set in '
                            '$SRGAN_DATASETS (e.g. Set5); repeat for several sets.')
  flags.DEFINE_string('output', None, 'Write the results here as JSON.')
  flags.DEFINE_string('save_dir', None, 'Write the SR images here, one folder per set.')
  flags.DEFINE_bool('compare', False, 'Also write LR | bicubic | SR | HR images (needs --save_dir).')
  flags.DEFINE_multi_string('crop', [], 'NAME:x,y,w,h: also a comparison image of that '
                            'region (HR pixels) of image NAME (file name without suffix); '
                            'repeatable; implies --compare.')
  flags.DEFINE_integer('zoom', 1, 'Enlarge the --crop images this many times (nearest).')
  flags.DEFINE_list('metrics', list(perceptual.DEFAULT_METRICS),
                    f'Metrics beside PSNR and SSIM (always computed), of {perceptual.METRICS}; '
                    'LPIPS is skipped with a warning when its weights are absent.')
  flags.mark_flag_as_required('data')


def _check_flags(options: Any, model: str) -> None:
  """Every flag, before any image is read (errors.ConfigError)."""
  missing = [folder for folder in options.data
             if isinstance(folder, str) and folder and not pathlib.Path(
                 paths.image_folder(folder)).is_dir()]
  validation.check_flags(
      [('data', folder, validation.text()) for folder in options.data] +
      [('scale', options.scale, validation.integer(minimum=2)),
       ('step', options.step, validation.integer(minimum=0)),
       ('workdir', options.workdir, validation.text()),
       ('output', options.output, validation.text()),
       ('save_dir', options.save_dir, validation.text())],
      missing and f'--data: no folder {", ".join(missing)} (set names are looked up in '
                  f'{paths.datasets_dir()}: set $SRGAN_DATASETS, see the README\'s "Image sets")',
      options.compare and not options.save_dir and '--compare needs --save_dir',
      model == 'srgan' and not options.workdir and '--model=srgan needs --workdir',
      model == 'bicubic' and options.workdir and '--workdir is for --model=srgan',
      model == 'bicubic' and options.step is not None and '--step is for --model=srgan',
      options.output and pathlib.Path(options.output).is_dir()
      and f'--output={options.output} is a folder; name a .json file')


def _failures(results: dict[str, dict[str, Any]]) -> str | None:
  """One line naming what could not be scored, or None."""
  sets = [name for name, result in results.items() if 'error' in result]
  files = sum(len(result.get('failed', ())) for result in results.values())
  if not sets and not files:
    return None
  parts = ([f'{files} files skipped'] if files else []) + (
      [f'sets not scored: {", ".join(sets)}'] if sets else [])
  return '; '.join(parts) + ' (named above)'


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  options = flags.FLAGS
  model = options.model or ('srgan' if options.workdir else 'bicubic')
  _check_flags(options, model)
  # Relative paths are relative to where the command was started.
  folders = [paths.image_folder(folder) for folder in options.data]
  save_dir = paths.absolute(options.save_dir) if options.save_dir else None
  crops = [parse_crop(spec, options.zoom) for spec in options.crop]
  writes = True
  if model == 'bicubic':
    results = evaluate_sets(make_upscale_fn(model, options.scale), folders,
                            options.scale, save_dir, options.compare, crops,
                            perceptual.metric_fns(options.metrics, options.scale))
    print(format_table(results))
  else:
    distributed.initialise()
    try:  # A workdir's generator (srgan) or a shipped model's, by name.
      generator = pretrained.load_generator(model, options.workdir and paths.absolute(
          options.workdir), options.step, options.ema)
    except pretrained.UnknownModelError as error:  # Lists the shipped names.
      raise app.UsageError(str(error)) from error
    results = evaluate_model(*generator, folders, save_dir, options.compare, crops,
                             options.metrics)
    writes = distributed.is_main_process()
  if options.output and writes:
    output = pathlib.Path(paths.absolute(options.output))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + '\n')
    print(f'wrote {output}')
  failures = _failures(results)
  if failures:
    cli.fail(failures, errors.EXIT_FAILED)
  return errors.EXIT_OK


if __name__ == '__main__':
  _define_flags()
  cli.run(main)
