"""Super-resolving image files: the inputs found, the outputs written, a summary of the run.

The input is a file or a folder (searched recursively for png, jpg/jpeg, bmp, webp,
tif/tiff); outputs are PNGs, mirroring the folder structure. How grayscale, alpha,
16-bit, palette and EXIF-rotated images are handled: see ``image_io``.
"""

import dataclasses
import os
import pathlib
import time

import numpy as np
import tqdm

from srgan_jax.imaging import bicubic
from srgan_jax.imaging import image_io
from srgan_jax.nn import upscalers
from srgan_jax.runtime import distributed
from srgan_jax.runtime import errors
from srgan_jax.runtime import memory


def collect_inputs(inputs: pathlib.Path, output: pathlib.Path
                   ) -> list[tuple[pathlib.Path, pathlib.Path]]:
  """(input file, output PNG) pairs for a file or a folder (``check_paths`` first).

  A file goes to ``output`` if that ends in .png, else to ``output/<stem>.png``. A
  folder's images (recursively, skipping anything under ``output``) go to the same
  relative paths under ``output``, named by ``image_io.png_names`` (a.jpg beside a.png
  becomes a.jpg.png; OutputNameError where names still collide).
  """
  if not inputs.is_dir():
    if output.suffix.lower() == '.png':
      return [(inputs, output)]
    return [(inputs, output / f'{inputs.stem}.png')]
  output_resolved = output.resolve()
  files = sorted(
      path for path in inputs.rglob('*')
      if path.suffix.lower() in image_io.IMAGE_SUFFIXES and path.is_file()
      and not path.resolve().is_relative_to(output_resolved))
  names = image_io.png_names([path.relative_to(inputs) for path in files], inputs)
  return [(path, output / name) for path, name in zip(files, names)]


def _other_files(inputs: pathlib.Path, output: pathlib.Path) -> list[pathlib.Path]:
  """The files under folder ``inputs`` (outside ``output``) that are not images by their
  suffix, sorted; hidden ones (.DS_Store, a write's .partial) are not counted."""
  output_resolved = output.resolve()
  return sorted(path for path in inputs.rglob('*')
                if path.is_file() and path.suffix.lower() not in image_io.IMAGE_SUFFIXES
                and not path.name.startswith('.')
                and not path.resolve().is_relative_to(output_resolved))


def _check_same_inputs(inputs: pathlib.Path, output: pathlib.Path,
                       found: list[tuple[pathlib.Path, pathlib.Path]]) -> None:
  """Raises HostsDifferError on every process unless all found the same inputs.

  Processes that compute together call the data-parallel generator once per tile
  batch of each image: one with an image more would wait forever for the others.
  """
  names = [(source.relative_to(inputs).as_posix(), target.relative_to(output).as_posix())
           for source, target in found]
  differ = distributed.disagreement([names], [len(names)])
  if differ is not None:
    raise distributed.HostsDifferError(
        f'--input: the hosts do not see the same images (process {differ.process}: '
        f'{differ.counts[differ.process][0]} files; process 0: {differ.counts[0][0]}'
        f'{"" if differ.counts[differ.process] != differ.counts[0] else ", other names"}); '
        'give every host identical copies')


def _same_image_on_every_host(source: pathlib.Path, inputs: pathlib.Path,
                              image: image_io.LoadedImage | None) -> bool:
  """Whether every process read the same pixels from ``source`` (or none could read it)."""
  name = source.relative_to(inputs).as_posix()
  if image is None:
    return distributed.same_on_every_process(name, 'unreadable')
  return distributed.same_on_every_process(name, image.rgb, image.alpha, image.grayscale,
                                           image.bit_depth)


class InputError(errors.UserError, FileNotFoundError):
  """--input is missing or holds no image, or --output cannot hold its results."""


def check_paths(inputs: pathlib.Path, output: pathlib.Path) -> None:
  """Raises InputError for inputs and outputs that ``collect_inputs`` cannot pair.

  A missing input; a file that is not an image (its header, not its pixels, is read);
  a folder with no image; a folder into a .png name; an output name
  of another image format (outputs are PNG: ``x.jpg`` would become a folder); an
  output that is the input.
  """
  if not inputs.exists():
    raise InputError(f'no such input: {inputs}')
  suffix = output.suffix.lower()
  if inputs.is_dir() and suffix == '.png' and not output.is_dir():
    raise InputError(f'--input {inputs} is a folder, so --output must be a folder to write '
                     f'its images into, got the file name {output}; drop the .png suffix')
  if suffix in image_io.IMAGE_SUFFIXES and suffix != '.png' and not output.is_dir():
    raise InputError(f'--output {output} names a {suffix} file, but outputs are PNG; '
                     'name a .png file or a folder')
  if inputs.is_dir():  # Outputs are never read as inputs: nothing would be done.
    same = inputs.resolve().is_relative_to(output.resolve())
  else:
    same = inputs.resolve() in (output.resolve(), (output / f'{inputs.stem}.png').resolve())
  if same:
    raise InputError(f'--output {output} would overwrite the input {inputs}; '
                     'choose another --output')
  if not inputs.is_dir():
    image_io.image_size(inputs)  # Its header: UnreadableImageError (one line) before any work.
  elif not collect_inputs(inputs, output):
    raise InputError(f'no image files ({", ".join(image_io.IMAGE_SUFFIXES)}) in --input '
                     f'{inputs}' + (f' outside --output {output}' if output.is_relative_to(inputs)
                                    else '') + '; name a folder or file with images')


@dataclasses.dataclass
class Summary:
  """What a run did; ``exit_code`` is non-zero when any image failed."""
  written: list[pathlib.Path] = dataclasses.field(default_factory=list)
  skipped: list[pathlib.Path] = dataclasses.field(default_factory=list)
  failed: list[tuple[pathlib.Path, str]] = dataclasses.field(default_factory=list)
  # Files in an --input folder without an image suffix (image_io.IMAGE_SUFFIXES).
  not_images: list[pathlib.Path] = dataclasses.field(default_factory=list)
  output_pixels: int = 0
  seconds: float = 0.0

  @property
  def exit_code(self) -> int:
    return 1 if self.failed else 0

  def __str__(self) -> str:
    line = (f'{len(self.written)} written, {len(self.skipped)} skipped (existing), '
            f'{len(self.failed)} failed')
    if self.failed:
      line += ': ' + '; '.join(message for _, message in self.failed)
    if self.not_images:
      names = ', '.join(path.name for path in self.not_images[:3])
      line += (f'; left out, not images by their suffix: {len(self.not_images)} '
               f'({names}{", ..." if len(self.not_images) > 3 else ""})')
    return line


def super_resolve_image(upscaler: upscalers.Upscaler, image: image_io.LoadedImage
                        ) -> tuple[np.ndarray, np.ndarray | None]:
  """(SR RGB in [0, 1], upscaled alpha or None) of a loaded image."""
  sr = upscaler.upscale_image(image.rgb)
  alpha = None
  if image.alpha is not None:
    # Transparency is not photographic content: plain bicubic, as MATLAB would.
    alpha = bicubic.imresize(image.alpha.astype(np.float64), upscaler.scale)
  return sr, alpha


# Host memory per output sample while an image is made and written: the float
# output, and save_image's float64 copies (measured: notes/BAD_INPUT_CASES.md, issue 37:
# 2,473 MiB above the start for a 6000x6000 output).
HOST_BYTES_PER_OUTPUT_SAMPLE = 24
_SMALLER = 'crop or shrink the image (or use a machine with more memory)'


def output_problem(image: image_io.LoadedImage, scale: int) -> str | None:
  """Why the output of ``image`` would not fit in the host's free memory, stating the
  memory it needs (a 10000x10000 input at x4: 18 GiB of output alone), or None;
  decided before the output is allocated, alike on every process (the others would
  otherwise wait for one that skipped the image)."""
  height, width = image.rgb.shape[:2]
  channels = 3 + (image.alpha is not None)
  try:
    memory.check_fits(height * width * scale ** 2 * channels * HOST_BYTES_PER_OUTPUT_SAMPLE,
                      f'its {width * scale}x{height * scale} output', _SMALLER)
    problem = None
  except memory.OutOfMemoryError as error:
    problem = str(error)
  if distributed.on_every_process([problem is None])[0]:
    return None
  return problem or 'another host lacks the memory for its output; ' + _SMALLER


def super_resolve_paths(upscaler: upscalers.Upscaler, inputs: str | os.PathLike[str],
                        output: str | os.PathLike[str], *, overwrite: bool = False,
                        progress: bool = False, write: bool = True) -> Summary:
  """Super-resolves a file or a folder of images into PNGs.

  Unreadable images (and outputs that cannot be written) are reported in the summary
  and skipped; the others are processed. Existing outputs are kept unless
  ``overwrite``; which those are is decided before the first image, so that processes
  that compute together (see ``write``) process the same images: process 0's outputs,
  the ones that would be overwritten. Those processes must see the same inputs:
  they agree on the list (else every one raises ``distributed.HostsDifferError``), and
  on each image before computing it (an image read differently by some is a failure
  on all).

  Args:
    upscaler: its ``upscale_image`` makes each SR image (clipped to [0, 1] on writing).
    inputs: an image file, or a folder searched recursively.
    output: a .png path or a folder (see ``collect_inputs``).
    overwrite: replace existing outputs.
    progress: show a progress bar over images.
    write: write the outputs; False on all processes of several but the first, which
      compute every image with it and leave the writing to it.
  """
  inputs, output = pathlib.Path(inputs), pathlib.Path(output)
  distributed.check_on_every_process(lambda: check_paths(inputs, output))
  summary = Summary()
  found = collect_inputs(inputs, output)
  if inputs.is_dir():  # Said, not silently passed over.
    summary.not_images = _other_files(inputs, output)
  _check_same_inputs(inputs, output, found)
  # Process 0 writes (the others compute with it): its outputs are those kept.
  exists = distributed.from_main_process(
      [not overwrite and target.exists() for _, target in found])
  pairs = []
  for (source, target), skip in zip(found, exists):
    if skip:
      summary.skipped.append(target)
    else:
      pairs.append((source, target))
  start = time.perf_counter()
  if progress:
    pairs = tqdm.tqdm(pairs, unit='img', dynamic_ncols=True)
  for source, target in pairs:
    try:
      image, problem = image_io.load_image(source), None
    except image_io.UnreadableImageError as error:  # Its message names the file.
      image, problem = None, error
    if not _same_image_on_every_host(source, inputs, image):
      summary.failed.append((source, f'{source}: the hosts read different images from it '
                                     '(unreadable or other pixels on some); give every '
                                     'host identical copies'))
      continue
    if problem is not None:
      summary.failed.append((source, str(problem)))
      continue
    problem = output_problem(image, upscaler.scale)
    if problem is not None:  # Refused before the output is allocated.
      summary.failed.append((source, f'{source}: {problem}'))
      continue
    try:
      sr, alpha = super_resolve_image(upscaler, image)
      if write:
        target.parent.mkdir(parents=True, exist_ok=True)
        image_io.save_image(target, sr, alpha, image.grayscale, image.bit_depth)
    except MemoryError as error:  # Host memory: this image is too large, others may fit.
      problem = memory.out_of_memory(error, 'making its output', _SMALLER)
      summary.failed.append((source, f'{source}: {problem}'))
      continue
    except OSError as error:  # Writing.
      summary.failed.append((source, f'{source}: {type(error).__name__}: {error}'))
      continue
    summary.written.append(target)
    summary.output_pixels += sr.shape[0] * sr.shape[1]
  summary.seconds = time.perf_counter() - start
  return summary
