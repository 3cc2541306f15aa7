r"""Super-resolve any image, of any size, with seamless tiles.

  python -m srgan_jax.super_resolve --workdir=runs/srgan --input=photos/ --output=sr/
  python -m srgan_jax.super_resolve --model=cpu_small --input=photos/ --output=sr/
  python -m srgan_jax.super_resolve --model=bicubic --input=cat.jpg --output=cat_x4.png

--model=NAME runs a generator shipped inside the package (see ``pretrained``).

The input is a file or a folder (searched recursively for png, jpg/jpeg, bmp, webp,
tif/tiff); outputs are PNGs, mirroring the folder structure. How grayscale, alpha,
16-bit, palette and EXIF-rotated images are handled: see ``image_io``.

Large images are cut into overlapping tiles of one static shape (jit compiles once),
run in batches, and each output pixel is taken from the tile where it lies furthest
from a cut. With ``overlap >= models.generator_receptive_radius`` (the default) the
result equals whole-image inference; memory is bounded by the batch of tiles, not by
the image (apart from the assembled output).

Must not import tensorflow: inference machines may not have it.
"""

import dataclasses
import os
import pathlib
import resource
import sys
import time
from typing import Any, Callable

from absl import app
from absl import flags
import numpy as np
import tqdm

from srgan_jax import bicubic
from srgan_jax import distributed
from srgan_jax import errors
from srgan_jax import image_io
from srgan_jax import models
from srgan_jax import paths
from srgan_jax import pretrained
from srgan_jax import sharding
from srgan_jax.configs import validation

# LR batch [n, t, t, 3] in [0, 1] -> SR batch [n, t*scale, t*scale, 3] in [-1, 1].
ApplyFn = Callable[[np.ndarray], np.ndarray]
# LR image [H, W, 3] in [0, 1] -> SR image [H*scale, W*scale, 3] in [0, 1].
UpscaleImageFn = Callable[[np.ndarray], np.ndarray]


def axis_tiles(length: int, tile: int, overlap: int) -> tuple[list[int], list[int], int]:
  """How one image axis is cut.

  Args:
    length: image size along the axis.
    tile: tile size; an axis shorter than that is one tile of its own length.
    overlap: context each tile keeps on either side of the part it contributes;
      neighbouring tiles share at least ``2 * overlap`` pixels.

  Returns:
    ``(starts, bounds, size)``: tile starts; ``bounds[i]:bounds[i + 1]`` is the part of
    the axis taken from tile ``i`` (at least ``overlap`` pixels away from any cut edge
    of that tile); the tile size.
  """
  if length <= tile:
    return [0], [0, length], length
  stride = tile - 2 * overlap
  if stride < 1:
    raise ValueError(f'tile ({tile}) must be larger than 2 * overlap ({2 * overlap})')
  # The last tile is shifted back inside the image rather than padded.
  starts = list(range(0, length - tile, stride)) + [length - tile]
  # Between two tiles, cut in the middle of what they share: each side keeps at least
  # half of it (>= overlap) as context.
  cuts = [b + (a + tile - b) // 2 for a, b in zip(starts, starts[1:])]
  return starts, [0] + cuts + [length], tile


def upscale_tiled(apply_fn: ApplyFn, image: np.ndarray, *, scale: int, tile: int,
                  overlap: int, batch_size: int,
                  progress: Callable[[int, int], None] | None = None) -> np.ndarray:
  """Super-resolves an image of any size tile by tile.

  Args:
    apply_fn: the generator on a batch, [n, th, tw, 3] LR in [0, 1] ->
      [n, th*scale, tw*scale, 3] SR; called with one static shape per image (the last
      batch is zero-padded), and asynchronously dispatched results are fine.
    image: float32 [H, W, 3] in [0, 1].
    scale: upscaling factor of ``apply_fn``.
    tile: LR tile side; an image side shorter than that makes tiles of its length.
    overlap: LR context pixels around the kept centre of each tile; at least
      ``models.generator_receptive_radius`` for a result equal to whole-image inference.
    batch_size: tiles per ``apply_fn`` call (fewer if the image has fewer tiles).
    progress: called after each batch with (tiles done, tiles in total).

  Returns:
    float32 [H*scale, W*scale, 3], in the generator's range ([-1, 1] for SRResNet).
  """
  height, width, _ = image.shape
  row_starts, row_bounds, tile_h = axis_tiles(height, tile, overlap)
  col_starts, col_bounds, tile_w = axis_tiles(width, tile, overlap)
  tiles = [(i, j) for i in range(len(row_starts)) for j in range(len(col_starts))]
  batch_size = min(batch_size, len(tiles))
  output = np.empty((height * scale, width * scale, 3), np.float32)

  def paste(result: np.ndarray, batch: list[tuple[int, int]]) -> None:
    result = np.asarray(result)  # Waits for the device here, not at dispatch.
    for sr, (i, j) in zip(result, batch):
      y0, y1 = row_bounds[i], row_bounds[i + 1]
      x0, x1 = col_bounds[j], col_bounds[j + 1]
      dy, dx = (y0 - row_starts[i]) * scale, (x0 - col_starts[j]) * scale
      output[y0 * scale:y1 * scale, x0 * scale:x1 * scale] = (
          sr[dy:dy + (y1 - y0) * scale, dx:dx + (x1 - x0) * scale])

  pending = None
  for first in range(0, len(tiles), batch_size):
    batch = tiles[first:first + batch_size]
    lr = np.zeros((batch_size, tile_h, tile_w, 3), np.float32)
    for k, (i, j) in enumerate(batch):
      lr[k] = image[row_starts[i]:row_starts[i] + tile_h, col_starts[j]:col_starts[j] + tile_w]
    result = apply_fn(lr)
    # Assemble the previous batch while the device computes this one.
    if pending is not None:
      paste(*pending)
      if progress is not None:
        progress(first, len(tiles))
    pending = (result, batch)
  paste(*pending)
  if progress is not None:
    progress(len(tiles), len(tiles))
  return output


def collect_inputs(inputs: pathlib.Path, output: pathlib.Path
                   ) -> list[tuple[pathlib.Path, pathlib.Path]]:
  """(input file, output PNG) pairs for a file or a folder.

  A file goes to ``output`` if that ends in .png, else to ``output/<stem>.png``. A
  folder's images (recursively, skipping anything under ``output``) go to the same
  relative paths under ``output`` with a .png suffix; where two inputs would share an
  output (a.jpg and a.png), the non-PNG ones keep their suffix (a.jpg.png).
  """
  if not inputs.is_dir():
    if output.suffix.lower() == '.png':
      return [(inputs, output)]
    return [(inputs, output / f'{inputs.stem}.png')]
  if output.suffix.lower() == '.png':
    raise ValueError(f'--output must be a folder when --input is a folder: {output}')
  output_resolved = output.resolve()
  files = sorted(
      path for path in inputs.rglob('*')
      if path.suffix.lower() in image_io.IMAGE_SUFFIXES and path.is_file()
      and not path.resolve().is_relative_to(output_resolved))
  targets = [path.relative_to(inputs).with_suffix('.png') for path in files]
  counts: dict[pathlib.Path, int] = {}
  for target in targets:
    counts[target] = counts.get(target, 0) + 1
  return [
      (path, output / (target if counts[target] == 1 or path.suffix.lower() == '.png'
                       else target.with_name(path.name + '.png')))
      for path, target in zip(files, targets)]


class InputError(errors.UserError, FileNotFoundError):
  """--input is missing, or --output would overwrite it."""


def check_paths(inputs: pathlib.Path, output: pathlib.Path) -> None:
  """Raises InputError for a missing input, or an output that is the input."""
  if not inputs.exists():
    raise InputError(f'no such input: {inputs}')
  if inputs.is_dir():  # Outputs are never read as inputs: nothing would be done.
    same = inputs.resolve().is_relative_to(output.resolve())
  else:
    same = inputs.resolve() in (output.resolve(), (output / f'{inputs.stem}.png').resolve())
  if same:
    raise InputError(f'--output {output} would overwrite the input {inputs}; '
                     'choose another --output')


@dataclasses.dataclass
class Summary:
  """What a run did; ``exit_code`` is non-zero when any image failed."""
  written: list[pathlib.Path] = dataclasses.field(default_factory=list)
  skipped: list[pathlib.Path] = dataclasses.field(default_factory=list)
  failed: list[tuple[pathlib.Path, str]] = dataclasses.field(default_factory=list)
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
    return line


def super_resolve_image(upscale_image_fn: UpscaleImageFn, image: image_io.LoadedImage,
                        scale: int) -> tuple[np.ndarray, np.ndarray | None]:
  """(SR RGB in [0, 1], upscaled alpha or None) of a loaded image."""
  height, width, _ = image.rgb.shape
  sr = upscale_image_fn(image.rgb)
  if sr.shape != (height * scale, width * scale, 3):
    raise ValueError(f'upscale_image_fn gave {sr.shape} for {image.rgb.shape} at x{scale}')
  alpha = None
  if image.alpha is not None:
    # Transparency is not photographic content: plain bicubic, as MATLAB would.
    alpha = bicubic.imresize(image.alpha.astype(np.float64), scale)
  return sr, alpha


def super_resolve_paths(upscale_image_fn: UpscaleImageFn, inputs: str | os.PathLike[str],
                        output: str | os.PathLike[str], *, scale: int,
                        overwrite: bool = False, progress: bool = False,
                        write: bool = True) -> Summary:
  """Super-resolves a file or a folder of images into PNGs.

  Unreadable images (and outputs that cannot be written) are reported in the summary
  and skipped; the others are processed. Existing outputs are kept unless
  ``overwrite``; which those are is decided before the first image, so that processes
  that compute together (see ``write``) process the same images.

  Args:
    upscale_image_fn: LR float32 [H, W, 3] in [0, 1] -> SR [H*scale, W*scale, 3] in
      [0, 1] (clipped on writing).
    inputs: an image file, or a folder searched recursively.
    output: a .png path or a folder (see ``collect_inputs``).
    scale: the upscaling factor of ``upscale_image_fn``.
    overwrite: replace existing outputs.
    progress: show a progress bar over images.
    write: write the outputs; False on all processes of several but the first, which
      compute every image with it and leave the writing to it.
  """
  inputs, output = pathlib.Path(inputs), pathlib.Path(output)
  check_paths(inputs, output)
  summary = Summary()
  pairs = []
  for source, target in collect_inputs(inputs, output):
    if target.exists() and not overwrite:
      summary.skipped.append(target)
    else:
      pairs.append((source, target))
  start = time.perf_counter()
  if progress:
    pairs = tqdm.tqdm(pairs, unit='img', dynamic_ncols=True)
  for source, target in pairs:
    try:
      image = image_io.load_image(source)
      sr, alpha = super_resolve_image(upscale_image_fn, image, scale)
      if write:
        target.parent.mkdir(parents=True, exist_ok=True)
        image_io.save_image(target, sr, alpha, image.grayscale, image.bit_depth)
    except image_io.UnreadableImageError as error:  # Its message names the file.
      summary.failed.append((source, str(error)))
      continue
    except (OSError, MemoryError) as error:  # Writing, or a huge image.
      summary.failed.append((source, f'{source}: {type(error).__name__}: {error}'))
      continue
    summary.written.append(target)
    summary.output_pixels += sr.shape[0] * sr.shape[1]
  summary.seconds = time.perf_counter() - start
  return summary


def _check_tiles(tile: int, overlap: int, source: str) -> None:
  validation.check_flags([], tile <= 2 * overlap and (
      f'--tile={tile} must be larger than twice the overlap ({overlap}, {source}); '
      'raise --tile or lower --overlap'))


def _srgan_upscaler(model: Any, variables: Any, scale: int | None, tile: int,
                    overlap: int | None, batch_size: int,
                    progress: Callable[[int, int], None]) -> tuple[UpscaleImageFn, int]:
  """A trained generator (``pretrained.load_generator``) as an UpscaleImageFn, and its scale.

  Each batch of tiles is split over every device of every process
  (``sharding.data_parallel``); on several processes, all of them call it with
  the same image.
  """
  if scale is not None and scale != model.scale:
    raise errors.ConfigError(f'--scale={scale} but the generator is x{model.scale}; '
                             'leave --scale out')
  if overlap is None:
    overlap = models.generator_receptive_radius(model.num_blocks, model.scale)
    _check_tiles(tile, overlap, "the generator's receptive radius")
  apply = sharding.data_parallel(lambda v, lr: model.apply(v, lr, train=False), variables)

  def upscale(rgb: np.ndarray) -> np.ndarray:
    sr = upscale_tiled(apply, rgb, scale=model.scale, tile=tile,
                       overlap=overlap, batch_size=batch_size, progress=progress)
    return (sr + 1.0) / 2.0

  return upscale, model.scale


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  options = flags.FLAGS
  _check_flags(options)
  writes = True  # On several processes, all compute and process 0 writes and reports.
  if options.model != 'bicubic':  # A generator: JAX, maybe on several processes.
    distributed.initialise()
    writes = distributed.is_main_process()
  # Not in logs: the bar moves the cursor up, which a file shows as stray characters.
  with tqdm.tqdm(unit='tile', leave=False, dynamic_ncols=True, position=1,
                 disable=options.model == 'bicubic' or not writes
                 or not sys.stderr.isatty()) as tile_bar:

    def on_tiles(done: int, total: int) -> None:
      if tile_bar.total != total or done < tile_bar.n:  # A new image.
        tile_bar.reset(total)
      tile_bar.update(done - tile_bar.n)

    if options.model == 'bicubic':
      scale = 4 if options.scale is None else options.scale
      upscale = lambda rgb: bicubic.imresize(rgb.astype(np.float64), scale)
    else:
      try:  # A workdir's generator (srgan) or a shipped model's, by name.
        model, variables, _ = pretrained.load_generator(
            options.model, options.workdir and paths.absolute(options.workdir), options.step)
      except pretrained.UnknownModelError as error:  # Lists the shipped names.
        raise app.UsageError(str(error)) from error
      upscale, scale = _srgan_upscaler(model, variables, options.scale, options.tile,
                                       options.overlap, options.batch, on_tiles)
    summary = super_resolve_paths(upscale, paths.absolute(options.input),
                                  paths.absolute(options.output), scale=scale,
                                  overwrite=options.overwrite, progress=writes, write=writes)
  if not writes:
    return summary.exit_code
  megapixels = summary.output_pixels / 1e6
  # ru_maxrss is in KiB on Linux; host memory only (not accelerator memory).
  peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(summary)
  print(f'{megapixels:.2f} output megapixels in {summary.seconds:.1f} s '
        f'({megapixels / max(summary.seconds, 1e-9):.3f} MP/s, including reading, '
        f'compilation and writing); peak host memory {peak_mib:.0f} MiB')
  return summary.exit_code


def _check_flags(options: Any) -> None:
  """Every flag, before a checkpoint or an image is read (errors.ConfigError)."""
  srgan = options.model == 'srgan'
  validation.check_flags(
      [('scale', options.scale, validation.integer(minimum=2)),
       ('step', options.step, validation.integer(minimum=0)),
       ('tile', options.tile, validation.integer(minimum=1)),
       ('overlap', options.overlap, validation.integer(minimum=0)),
       ('batch', options.batch, validation.integer(minimum=1)),
       ('input', options.input, validation.text()),
       ('output', options.output, validation.text())],
      srgan and not options.workdir and '--model=srgan needs --workdir',
      not srgan and options.workdir and '--workdir is for --model=srgan',
      not srgan and options.step is not None and '--step is for --model=srgan')
  if options.overlap is not None and options.overlap >= 0 and options.tile >= 1:
    _check_tiles(options.tile, options.overlap, '--overlap')
  check_paths(pathlib.Path(paths.absolute(options.input)),
              pathlib.Path(paths.absolute(options.output)))


def _define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'Training workdir holding the checkpoints (srgan).')
  flags.DEFINE_string('input', None, 'Image file, or folder searched recursively.')
  flags.DEFINE_string('output', None, 'Output .png path or folder.')
  flags.DEFINE_string('model', 'srgan', pretrained.model_flag_help())
  flags.DEFINE_integer('scale', None,
                       'Upscaling factor: bicubic only (default 4); srgan takes it from '
                       'the checkpoint.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.DEFINE_integer('tile', 192, 'LR tile side.')
  flags.DEFINE_integer('overlap', None,
                       'LR context pixels around each tile (default: the generator\'s '
                       'receptive radius, which makes tiling exact).')
  flags.DEFINE_integer('batch', 4, 'Tiles per generator call.')
  flags.DEFINE_bool('overwrite', False, 'Replace existing outputs.')
  flags.mark_flags_as_required(['input', 'output'])


if __name__ == '__main__':
  from srgan_jax import cli  # pylint: disable=g-import-not-at-top

  _define_flags()
  cli.run(main)
