"""Scoring a generator on image sets by the SR literature's conventions.

For every image of a folder: crop HR to a multiple of the scale, make LR with MATLAB
bicubic downsampling (uint8), upscale it with the method under test (uint8, an
``upscalers.Upscaler``: bicubic or a generator), and
score Y-channel PSNR/SSIM with ``scale`` pixels shaved off each border (see
``metrics``), and further metrics by name (NIQE, LPIPS; see ``named_metrics``) on batches
of same-size images. Grayscale files stay single-channel, as in the MATLAB test code;
files are read by ``image_io``'s rules (16-bit images reduced to their high byte, as
the training input does).

Files that cannot be scored (unreadable, unsupported, or too small for the SSIM
window once shaved) are reported by name and skipped; a set that cannot be scored at
all is reported and the other sets are still scored.

On several processes (hosts that may read their own copies of the sets), every
process must see the same images: the hosts agree on each set's names, shapes and
pixels before scoring it, and a set they differ on is reported alike by every host
and skipped (``distributed.HostsDifferError``), so that no host waits for the others.
"""

import os
import pathlib
from typing import Any, Mapping, Sequence

from absl import logging
from etils import epath
import numpy as np

from srgan_jax.evaluation import comparison_images
from srgan_jax.evaluation import metrics
from srgan_jax.evaluation import named_metrics
from srgan_jax.evaluation import results_table
from srgan_jax.imaging import degradation
from srgan_jax.imaging import image_io
from srgan_jax.nn import upscalers
from srgan_jax.runtime import distributed
from srgan_jax.runtime import errors
from srgan_jax.runtime import memory
from srgan_jax.runtime import paths

# Images of one size are upscaled together, this many at a time.
EVAL_BATCH_SIZE = 8
# What to lower when a set does not fit in memory (evaluate names its flags).
MEMORY_FIX = 'score smaller images, or on a device with more memory'


class NoImagesError(errors.UserError, FileNotFoundError):
  """A set with no image that can be scored."""


class CropError(errors.UserError, ValueError):
  """A --crop naming an image of no set, or a region outside its image."""


def _set_images(folder: str | os.PathLike[str]) -> list[epath.Path]:
  """The image files of the set ``folder`` (local or gs://...), sorted by name; an
  image file is a set of one; a missing one is a FileNotFoundError."""
  if not epath.Path(folder).exists():
    raise FileNotFoundError(f'{folder}: no such folder')
  return image_io.image_files(folder, recursive=False)


def scorable_hr(path: str | os.PathLike[str], scale: int) -> np.ndarray:
  """The HR image cropped to a multiple of ``scale``, if big enough to be scored.

  uint8 ``[H, W, 1]`` for grayscale files (MATLAB's conventions: the Y of a grey image
  is the image), ``[H, W, 3]`` RGB for the rest (``image_io.load_uint8``); raises
  ``image_io.UnreadableImageError``.
  """
  hr = degradation.modcrop(image_io.load_uint8(path), scale)
  smallest = metrics.SSIM_WINDOW + 2 * scale  # The SSIM window, after shaving the border.
  if min(hr.shape[:2]) < smallest:
    raise image_io.UnreadableImageError(
        f'{path}: {hr.shape[0]}x{hr.shape[1]} pixels (cropped to a multiple of {scale}) '
        f'is too small to score at x{scale}: both sides must be at least {smallest}')
  return hr


def _same_size_batches(images: Sequence[np.ndarray], batch_size: int) -> list[list[int]]:
  """Indices of images grouped by shape, in chunks of at most batch_size."""
  groups: dict[tuple[int, ...], list[int]] = {}
  for index, image in enumerate(images):
    groups.setdefault(image.shape, []).append(index)
  return [group[i:i + batch_size] for group in groups.values()
          for i in range(0, len(group), batch_size)]


def _batched_means(metric_fns: Mapping[str, named_metrics.MetricFn], srs: Sequence[np.ndarray],
                   hrs: Sequence[np.ndarray], batch_size: int) -> dict[str, float]:
  """Each metric's mean over the images, computed on batches of same-size images."""
  means = {}
  for name, fn in metric_fns.items():
    scores = np.empty(len(srs))
    for indices in _same_size_batches(hrs, batch_size):
      scores[indices] = fn(np.stack([srs[i] for i in indices]), np.stack([hrs[i] for i in indices]))
    # NaN marks an image a metric does not apply to (a gray image's chroma detail).
    scored = scores[~np.isnan(scores)]
    means[name] = float(np.mean(scored)) if scored.size else float('nan')
  return means


def _files_seen(counts: Sequence[int]) -> str:
  files, readable = counts
  return 'no such folder' if files < 0 else f'{files} files, {readable} readable'


def _check_same_on_every_host(folder: str | os.PathLike[str], parts: Sequence[Any],
                              counts: Sequence[int]) -> None:
  """Raises HostsDifferError on every process unless all read the same ``parts`` (names
  and pixels) from ``folder``: each would otherwise score other batches, and the
  data-parallel upscaling would wait forever for the hosts that stopped calling it.

  Every process calls it once per set, before any computation; ``counts`` are (files
  listed or -1 for none, files readable), for the message.
  """
  differ = distributed.disagreement(parts, counts)
  if differ is None:
    return
  other, first = differ.counts[differ.process], differ.counts[0]
  seen = (f'process {differ.process}: {_files_seen(other)}; process 0: {_files_seen(first)}'
          if other != first else
          f'process {differ.process} read other names or pixels than process 0')
  raise distributed.HostsDifferError(
      f'{epath.Path(folder).name}: the hosts do not see the same images ({seen}); give '
      'every host identical copies of the set')


def _read_set(folder: str | os.PathLike[str], scale: int
              ) -> tuple[list[epath.Path], list[np.ndarray], list[str]]:
  """The scorable images of a set: their paths, their HR images (``scorable_hr``), and
  a message for each file skipped (logged).

  Every process reads the set and compares it with the others' before anything is
  raised.

  Raises:
    OSError: the folder is missing.
    NoImagesError: no file of the folder could be scored.
    distributed.HostsDifferError: (on every process) processes read other images.
  """
  failed, image_paths, hrs = [], [], []
  try:
    listed, missing = _set_images(folder), None
  except OSError as error:  # Raised once the hosts agree that they differ, or not.
    listed, missing = [], error
  parts: list[Any] = [missing is None]
  for path in listed:
    try:
      hrs.append(scorable_hr(path, scale))
      image_paths.append(path)
      parts += [path.name, hrs[-1]]
    except image_io.UnreadableImageError as error:  # Its message names the file.
      logging.warning('Skipped %s', error)
      failed.append(str(error))
      parts += [path.name, 'unreadable']
  _check_same_on_every_host(folder, parts, [len(listed) if missing is None else -1,
                                            len(image_paths)])
  if missing is not None:
    raise missing
  if not image_paths:
    raise NoImagesError(f'no image to score in {folder} ({len(failed)} skipped'
                        + (f', e.g. {failed[0]}' if failed else
                           f'; looked for {", ".join(image_io.IMAGE_SUFFIXES)}') + ')'
                        + image_io.subfolders_note(folder))
  return image_paths, hrs, failed


def _upscale_all(upscaler: upscalers.Upscaler, lrs: Sequence[np.ndarray],
                 batch_size: int) -> list[np.ndarray]:
  """The SR image of each LR image, upscaled in batches of same-size images."""
  srs: list[np.ndarray] = [np.empty(0)] * len(lrs)
  for indices in _same_size_batches(lrs, batch_size):
    batch = upscaler.upscale_batch(np.stack([lrs[i] for i in indices]))
    for index, sr in zip(indices, batch):
      srs[index] = sr
  return srs


def _save_images(path: epath.Path, name: str, lr: np.ndarray, sr: np.ndarray,
                 hr: np.ndarray, scale: int, save_dir: str | pathlib.Path | None,
                 compare_dir: str | pathlib.Path | None,
                 crops: Sequence[comparison_images.Crop]) -> None:
  """Writes the SR image of ``path`` to ``save_dir/name``, and its comparison images
  (whole, as ``name``, and each crop of it) to ``compare_dir``, where those are given."""
  if save_dir is not None:
    comparison_images.save_png(pathlib.Path(save_dir) / name, sr)
  if compare_dir is not None:
    bicubic_sr = upscalers.bicubic(scale).upscale_batch(lr[None])[0]
    for crop in [None] + list(crops):
      comparison_images.save_png(pathlib.Path(compare_dir) / (crop.file_name if crop else name),
                                 comparison_images.comparison_image(lr, bicubic_sr, sr, hr, crop))


def _output_dirs(folder: str | os.PathLike[str], *directories: str | pathlib.Path | None
                 ) -> None:
  """Makes the folders SR and comparison images go to; raises errors.UserError where one
  is the set's own folder (through a symlink too), whose HR images they would replace."""
  for directory in directories:
    if directory is None:
      continue
    pathlib.Path(directory).mkdir(parents=True, exist_ok=True)
    if (not paths.is_remote(os.fspath(folder))
        and os.path.realpath(directory) == os.path.realpath(folder)):
      raise errors.UserError(f'{directory} is the set\'s own folder {folder} (a symlink?): '
                             'its SR images would replace the HR images; choose another '
                             '--save_dir')


def _write_images(image_paths: Sequence[epath.Path], lrs: Sequence[np.ndarray],
                  srs: Sequence[np.ndarray], hrs: Sequence[np.ndarray], scale: int,
                  save_dir: str | pathlib.Path | None, compare_dir: str | pathlib.Path | None,
                  crops: Sequence[comparison_images.Crop], folder: str | os.PathLike[str]
                  ) -> list[str]:
  """Writes each image's SR and comparison images (``_save_images``) under the names of
  ``image_io.png_names`` (a.jpg beside a.png: a.jpg.png); a --crop goes with the first
  image of its name, as ``check_crops`` reads it. Returns a message for each image
  whose files could not be written (a full disk): its scores stand."""
  if save_dir is None and compare_dir is None:
    return []
  names = image_io.png_names([pathlib.PurePath(path.name) for path in image_paths], folder)
  not_written, cropped = [], set()
  for path, name, lr, sr, hr in zip(image_paths, names, lrs, srs, hrs):
    own_crops = [crop for crop in crops if crop.image == path.stem and path.stem not in cropped]
    cropped.add(path.stem)
    try:
      _save_images(path, str(name), lr, sr, hr, scale, save_dir, compare_dir, own_crops)
    except (OSError, MemoryError) as error:  # A full disk; a --zoom too large.
      problem = (memory.out_of_memory(error, 'drawing its comparison images', 'lower --zoom')
                 if isinstance(error, MemoryError) else f'{type(error).__name__}: {error}')
      logging.warning('Images of %s not written: %s', path, problem)
      not_written.append(f'{path}: not written: {problem}')
  return not_written


def evaluate_folder(upscaler: upscalers.Upscaler, folder: str | pathlib.Path,
                    save_dir: str | pathlib.Path | None = None,
                    compare_dir: str | pathlib.Path | None = None,
                    batch_size: int = EVAL_BATCH_SIZE,
                    crops: Sequence[comparison_images.Crop] = (),
                    metric_fns: Mapping[str, named_metrics.MetricFn] | None = None,
                    low_res: degradation.LowRes = degradation.LowRes()
                    ) -> dict[str, float | int]:
  """Mean PSNR/SSIM (and ``metric_fns``) of ``upscaler`` over the images of ``folder``.

  Args:
    upscaler: the method under test; its scale is also the border shaved before scoring.
    folder: HR images (``image_io.IMAGE_SUFFIXES``).
    save_dir: if set, the SR images are written there as PNG, named after the HR files.
    compare_dir: if set, LR | bicubic | SR | HR comparison images are written there.
    batch_size: most images of one size per ``upscaler.upscale_batch`` call.
    crops: regions of interest; those of this folder's images are written to
      ``compare_dir`` as ``comparison_images.Crop.file_name``, beside the whole
      comparison images.
    metric_fns: further metrics by name (``named_metrics.metric_fns``), scored on
      batches of same-size images.
    low_res: how the LR images are made (default: the benchmarks' bicubic LR).

  Returns:
    ``{'psnr': dB, 'ssim': ..., 'images': count scored, 'bias': [R, G, B],
    'failed': [messages]}`` and the mean of each further metric. ``bias`` is the mean
    SR - HR difference per channel in grey levels, over the set's whole images (a
    brightness or colour offset; gray images count in every channel); 'failed' names
    each file that was skipped and why; 'not_written' (only when some were) names each
    image whose SR or comparison images could not be written (it is scored); ``'lr'``
    (``LowRes.describe``) when the LR is not the benchmarks' bicubic LR.

  Raises:
    NoImagesError: no file of the folder could be scored.
    distributed.HostsDifferError: (on every process) processes read other images.
    image_io.OutputNameError: two images whose SR images would have one name.
  """
  scale = upscaler.scale
  image_paths, hrs, failed = _read_set(folder, scale)
  _output_dirs(folder, save_dir, compare_dir)
  if save_dir is not None or compare_dir is not None:  # Name clashes before any work.
    image_io.png_names([pathlib.PurePath(path.name) for path in image_paths], folder)
  lrs = [low_res.make(hr, scale, path.stem) for path, hr in zip(image_paths, hrs)]
  srs = _upscale_all(upscaler, lrs, batch_size)
  psnrs, ssims, biases = [], [], []
  for path, sr, hr in zip(image_paths, srs, hrs):
    psnrs.append(metrics.psnr(sr, hr, shave=scale))
    ssims.append(metrics.ssim(sr, hr, shave=scale))
    difference = sr.astype(np.float64) - hr
    biases.append(np.broadcast_to(difference.mean(axis=(0, 1)), (3,)))
    logging.info('%s: PSNR %.4f dB, SSIM %.4f', path.name, psnrs[-1], ssims[-1])
  not_written = _write_images(image_paths, lrs, srs, hrs, scale, save_dir, compare_dir,
                              crops, folder)
  return {'psnr': float(np.mean(psnrs)), 'ssim': float(np.mean(ssims)),
          **_batched_means(metric_fns or {}, srs, hrs, batch_size), 'images': len(image_paths),
          'bias': [float(b) for b in np.mean(biases, axis=0)], 'failed': failed,
          **({'not_written': not_written} if not_written else {}),
          **({'lr': low_res.describe()} if low_res != degradation.LowRes() else {})}


def check_crops(folders: Sequence[str | pathlib.Path],
                crops: Sequence[comparison_images.Crop], scale: int) -> None:
  """Raises CropError (on every process alike) for crops that name an image of no set,
  or a region outside their image (cropped to a multiple of ``scale``).

  Every process must call it (a collective when there are several): an image that
  only some hosts have counts as absent.
  """
  if not crops:
    return
  images = {}
  for folder in folders:
    try:
      for path in _set_images(folder):
        images.setdefault(path.stem, path)
    except OSError:  # A missing set: reported as that set's error.
      pass
  found = distributed.on_every_process([crop.image in images for crop in crops])
  unknown = sorted({crop.image for crop, ok in zip(crops, found) if not ok})
  if unknown:
    raise CropError(f'crops name images that are in none of the sets: {unknown}'
                    + (' (on every host)' if distributed.several_processes() else ''))
  outside = []
  for crop in crops:
    try:
      outside.append(crop.outside(
          degradation.modcrop(image_io.load_uint8(images[crop.image]), scale).shape))
    except image_io.UnreadableImageError:  # Reported as that image's failure.
      outside.append(None)
  fits = distributed.on_every_process([problem is None for problem in outside])
  problems = [problem or f'--crop of {crop.image} lies outside its image on another host'
              for crop, problem, ok in zip(crops, outside, fits) if not ok]
  if problems:
    raise CropError('; '.join(problems))


def evaluate_sets(upscaler: upscalers.Upscaler, folders: Sequence[str | pathlib.Path],
                  save_dir: str | pathlib.Path | None = None, compare: bool = False,
                  crops: Sequence[comparison_images.Crop] = (),
                  metric_fns: Mapping[str, named_metrics.MetricFn] | None = None,
                  write: bool = True, memory_fix: str = MEMORY_FIX,
                  low_res: Sequence[degradation.LowRes] | None = None
                  ) -> dict[str, dict[str, Any]]:
  """``evaluate_folder`` on each folder, keyed by folder name, each result with the
  ``'folder'`` actually read (printed in the table, kept in results.json).

  With ``save_dir``, SR images go to ``save_dir/<set>/`` and, with ``compare`` (or
  ``crops``), comparison images to ``save_dir/<set>/compare/``. A set that cannot be
  scored (missing, no usable image, other images on another host, or out of memory:
  ``memory.out_of_memory`` with ``memory_fix``) gets ``{'error': message}`` and the
  others are scored.

  ``write=False`` (processes of several but the first) writes no image, but checks
  the crops with the other processes (``check_crops``). ``low_res``: each folder's
  ``LowRes`` (default: bicubic LR for all).
  """
  check_crops(folders, crops, upscaler.scale)  # Before the evaluation, not after it.
  if not write:
    save_dir, compare, crops = None, False, ()
  compare = compare or bool(crops)
  if compare and save_dir is None:
    raise ValueError('comparison images need a save_dir')
  results = {}
  low_res = low_res or [degradation.LowRes()] * len(folders)
  for folder, lr_source in zip(folders, low_res):
    name = epath.Path(folder).name
    set_dir = None if save_dir is None else pathlib.Path(save_dir) / name
    try:
      results[name] = evaluate_folder(upscaler, folder, set_dir,
                                      set_dir / 'compare' if compare else None,
                                      crops=crops, metric_fns=metric_fns, low_res=lr_source)
    except (errors.UserError, OSError, MemoryError, RuntimeError) as error:
      # Missing, unreadable or empty; out of memory (XLA's is a RuntimeError): the
      # sets already scored are kept. Other runtime errors are bugs.
      problem = (error if isinstance(error, (errors.UserError, OSError)) else
                 memory.out_of_memory(error, f'scoring set {name}', memory_fix))
      if problem is None:
        raise
      logging.warning('Set %s not scored: %s', name, problem)
      results[name] = {'error': str(problem)}
    results[name]['folder'] = str(folder)
  return results


def evaluate_beside_bicubic(upscaler: upscalers.Upscaler,
                            folders: Sequence[str | pathlib.Path],
                            save_dir: str | pathlib.Path | None = None, compare: bool = False,
                            crops: Sequence[comparison_images.Crop] = (),
                            metric_names: Sequence[str] = named_metrics.DEFAULT_METRICS,
                            memory_fix: str = MEMORY_FIX,
                            low_res: Sequence[degradation.LowRes] | None = None
                            ) -> dict[str, dict[str, Any]]:
  """Scores an upscaler (a generator's: ``upscalers.generator``) beside bicubic.

  Each set's entry is the upscaler's ``{'psnr', 'ssim', <metric_names>..., 'images',
  'folder'}`` plus the same scores of the bicubic baseline (from the same LR:
  ``low_res``, as in ``evaluate_sets``) under ``'bicubic'``; the table is
  printed. On several processes, all of them compute (and return) the results;
  process 0 alone writes images and prints.
  """
  writes = distributed.is_main_process()
  metric_fns = named_metrics.metric_fns(metric_names, upscaler.scale)
  low_res = low_res or [degradation.LowRes()] * len(folders)
  results = evaluate_sets(upscaler, folders, save_dir, compare, crops, metric_fns,
                          write=writes, memory_fix=memory_fix, low_res=low_res)
  bicubic = upscalers.bicubic(upscaler.scale)
  for folder, result, lr_source in zip(folders, results.values(), low_res):
    if 'error' not in result:
      baseline = evaluate_folder(bicubic, folder, metric_fns=metric_fns, low_res=lr_source)
      result['bicubic'] = {key: value for key, value in baseline.items()
                           if key not in ('images', 'failed', 'lr')}
  if writes:
    print(results_table.format_table(results))
  return results
