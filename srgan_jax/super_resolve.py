r"""Command: super-resolve any image, of any size, with seamless tiles.

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

import pathlib
import resource
import sys
from typing import Any

from absl import flags
import tqdm

from srgan_jax.imaging import tiling
from srgan_jax.inference import super_resolve_files
from srgan_jax.nn import upscalers
from srgan_jax.runtime import cli
from srgan_jax.runtime import distributed
from srgan_jax.runtime import errors
from srgan_jax.runtime import flag_checks
from srgan_jax.runtime import memory
from srgan_jax.runtime import paths
from srgan_jax.training import model_reference


def main() -> int:
  options = flags.FLAGS
  # On every process alike: a host without --input would otherwise stop alone and
  # leave the others waiting for it.
  distributed.check_on_every_process(lambda: _check_flags(options))
  # On several processes, all compute and process 0 writes and reports.
  writes = options.model == 'bicubic' or distributed.is_main_process()
  # Not in logs: the bar moves the cursor up, which a file shows as stray characters.
  with tqdm.tqdm(unit='tile', leave=False, dynamic_ncols=True, position=1,
                 disable=options.model == 'bicubic' or not writes
                 or not sys.stderr.isatty()) as tile_bar:

    def on_tiles(done: int, total: int) -> None:
      if tile_bar.total != total or done < tile_bar.n:  # A new image.
        tile_bar.reset(total)
      tile_bar.update(done - tile_bar.n)

    if options.model == 'bicubic':
      upscaler = upscalers.bicubic(4 if options.scale is None else options.scale)
    else:
      # A workdir's generator (srgan) or a pretrained model's, by name.
      model, variables, _ = model_reference.load(model_reference.from_flags(
          options.model, options.workdir, options.step))
      flag_checks.check_flags([], options.scale not in (None, model.scale) and (
          f'--scale={options.scale} but the generator is x{model.scale}; leave --scale out'))
      upscaler = upscalers.generator(model, variables, tile=options.tile,
                                     overlap=options.overlap, batch_size=options.batch,
                                     progress=on_tiles)
    try:
      summary = super_resolve_files.super_resolve_paths(
          upscaler, paths.absolute(options.input), paths.absolute(options.output),
          overwrite=options.overwrite, progress=writes, write=writes)
    except RuntimeError as error:  # XLA's out-of-memory (a JaxRuntimeError).
      raise memory.out_of_memory(
          error, f'with --tile={options.tile} and --batch={options.batch}',
          'lower --tile or --batch; the images written so far are kept (a rerun skips '
          'them)') or error
  if not writes:
    return summary.exit_code
  megapixels = summary.output_pixels / 1e6
  # ru_maxrss is in KiB on Linux; host memory only (not accelerator memory).
  peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(summary)
  print(f'{megapixels:.2f} output megapixels in {summary.seconds:.1f} s '
        f'({megapixels / max(summary.seconds, 1e-9):.3f} MP/s, including reading, '
        f'compilation and writing); peak host memory {peak_mib:.0f} MiB')
  if summary.failed:  # The last line, as evaluate's: what failed is named above.
    cli.fail(f'{len(summary.failed)} of {len(summary.failed) + len(summary.written)} images '
             'failed (named above)' + ('; the others were written' if summary.written else ''),
             errors.EXIT_FAILED)
  return summary.exit_code


def _check_flags(options: Any) -> None:
  """Every flag, before a checkpoint or an image is read (errors.ConfigError)."""
  flag_checks.check_flags(
      [('scale', options.scale, flag_checks.integer(minimum=2)),
       ('step', options.step, flag_checks.integer(minimum=0)),
       ('tile', options.tile, flag_checks.integer(minimum=1)),
       ('overlap', options.overlap, flag_checks.integer(minimum=0)),
       ('batch', options.batch, flag_checks.integer(minimum=1)),
       ('input', options.input, flag_checks.text()),
       ('output', options.output, flag_checks.text()),
       # Found and written through pathlib (recursive listing, atomic renames), which
       # would turn gs://b/sr into a local folder gs:/b/sr: refused up front.
       ('input', options.input, flag_checks.local_path),
       ('output', options.output, flag_checks.local_path)],
      *model_reference.flag_problems(options.model, options.workdir, options.step),
      flag_checks.folder_problem(options.workdir, 'workdir'))
  if options.overlap is not None and options.overlap >= 0 and options.tile >= 1:
    tiling.check_tiles(options.tile, options.overlap, '--overlap')
  inputs = pathlib.Path(paths.absolute(options.input))
  super_resolve_files.check_paths(inputs, pathlib.Path(paths.absolute(options.output)))
  # Then where the images go, so that none is computed only to fail on writing.
  output_file = not inputs.is_dir() and pathlib.Path(options.output).suffix.lower() == '.png'
  flag_checks.check_flags(
      [], flag_checks.output_problem(options.output, folder=not output_file, flag='--output'))


def _define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'Training workdir holding the checkpoints (srgan).')
  flags.DEFINE_string('input', None, 'Image file, or folder searched recursively.')
  flags.DEFINE_string('output', None, 'Output .png path or folder.')
  flags.DEFINE_string('model', 'srgan', model_reference.flag_help())
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


def run() -> None:
  """``python -m srgan_jax.super_resolve`` through ``cli.run``; a generator runs JAX,
  maybe on several processes."""
  cli.run(main, name='super_resolve', define_flags=_define_flags,
          starts_jax=lambda: flags.FLAGS.model != 'bicubic')


if __name__ == '__main__':
  run()
