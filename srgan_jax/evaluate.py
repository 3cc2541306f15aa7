"""Command: benchmark evaluation (Set5, Set14, BSD100, ...) by the SR literature's
conventions (the scoring itself is ``evaluation/scoring.py``).

For every image of a folder: crop HR to a multiple of the scale, make LR with MATLAB
bicubic downsampling (uint8), upscale it with the method under test (uint8), and
score Y-channel PSNR/SSIM with ``scale`` pixels shaved off each border (see
``metrics``), and the metrics of ``--metrics`` (NIQE, LPIPS, the detail ratios and
texture where the photograph is flat; see ``evaluation/named_metrics.py``) on
batches of same-size images. Grayscale files stay
single-channel, as in the MATLAB test code; files are read by ``image_io``'s rules (16-bit images
reduced to their high byte, as the training input does).

``--data=Set5`` is always ``$SRGAN_DATASETS/Set5`` (``paths.image_folder``); the folder
read ends each row of the table and is each set's ``folder`` in results.json. A
generator scores images with an LR side above ``--tile`` by tiles (equal to whole-image
scoring); a set that runs out of memory is reported and the others are kept.

Files that cannot be scored (unreadable, unsupported, or too small for the SSIM
window once shaved) are reported by name and skipped; a set that cannot be scored at
all is reported and the other sets are still scored and written. The command exits
with 1 when anything was skipped, 2 for a bad flag (one line on stderr).

Usage (the bicubic baseline; its scores against the published ones are in the
README, "Evaluating checkpoints"):

  python -m srgan_jax.evaluate --model=bicubic --scale=4 \\
      --data=../shared/datasets/Set5 --data=../shared/datasets/Set14 \\
      --output=results.json

A shipped model by name (``pretrained``), with comparison images (LR | bicubic |
SR | HR) of every image and a 3x enlarged region of interest of one (HR pixels):

  python -m srgan_jax.evaluate --model=cpu_small --data=../shared/datasets/Set5 \
      --save_dir=sr --compare --crop=butterfly:96,64,64,64 --zoom=3

Realistic inputs: ``--degrade=noise:10,jpeg:60`` degrades each LR (in order; the
noise seeded by the image name), and ``--lr_data=FOLDER`` (one per --data) scores a
paired set's own LR files (RealSR, DRealSR: LR named as the HR, the HR size /
scale); ``imaging/degradation.LowRes``, recorded in the results as 'lr'.
"""

import json
import pathlib
from typing import Any

from absl import flags

from srgan_jax.evaluation import comparison_images
from srgan_jax.evaluation import named_metrics
from srgan_jax.evaluation import results_table
from srgan_jax.evaluation import scoring
from srgan_jax.imaging import degradation
from srgan_jax.nn import upscalers
from srgan_jax.runtime import cli
from srgan_jax.runtime import distributed
from srgan_jax.runtime import errors
from srgan_jax.runtime import flag_checks
from srgan_jax.runtime import paths
from srgan_jax.training import model_reference

# The default --tile: LR images up to this side (2048 HR pixels at x4: every benchmark
# set's) are scored whole, in batches; larger ones by tiles.
SCORING_TILE = 512


def _define_flags() -> None:
  flags.DEFINE_string('model', None, model_reference.flag_help() +
                      ' Default: srgan with --workdir, else bicubic.')
  flags.DEFINE_string('workdir', None, 'Training workdir whose checkpoint to evaluate.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.DEFINE_bool('ema', True, 'Use the EMA generator weights when the run kept them.')
  flags.DEFINE_integer('scale', 4, 'bicubic: upscaling factor (also the shaved border).')
  flags.DEFINE_multi_string('data', None, 'A set of HR images: ' + paths.DATA_FLAG_HELP +
                            '. Repeat for several sets; the folder read is in the table '
                            'and results.json.')
  flags.DEFINE_string('output', None, 'Write the results here as JSON.')
  flags.DEFINE_string('save_dir', None, 'Write the SR images here, one folder per set.')
  flags.DEFINE_bool('compare', False, 'Also write LR | bicubic | SR | HR images (needs --save_dir).')
  flags.DEFINE_multi_string('crop', [], 'NAME:x,y,w,h: also a comparison image of that '
                            'region (HR pixels) of image NAME (file name without suffix); '
                            'repeatable; implies --compare.')
  flags.DEFINE_integer('zoom', 1, 'Enlarge the --crop images this many times (nearest).')
  flags.DEFINE_integer('tile', SCORING_TILE, 'A generator scores images with an LR side '
                       'above this by tiles of this side (equal to whole-image scoring, '
                       'in bounded memory); lower it when out of memory.')
  flags.DEFINE_list('metrics', list(named_metrics.DEFAULT_METRICS),
                    f'Metrics beside PSNR and SSIM (always computed), of {named_metrics.METRICS}; '
                    'LPIPS is skipped with a warning when its weights are absent.')
  flags.DEFINE_string('degrade', None, degradation.DEGRADE_HELP)
  flags.DEFINE_multi_string('lr_data', None, degradation.LR_DATA_HELP)
  flags.mark_flag_as_required('data')


def _check_flags(options: Any, model: str) -> None:
  """Every flag, before any image is read (errors.ConfigError)."""
  hint = (f' (set names are looked up in {paths.datasets_dir()}: set $SRGAN_DATASETS, see '
          'the README\'s "Image sets")')
  flag_checks.check_flags(
      [('data', folder, flag_checks.text()) for folder in options.data] +
      [('scale', options.scale, flag_checks.integer(minimum=2)),
       ('step', options.step, flag_checks.integer(minimum=0)),
       ('zoom', options.zoom, flag_checks.integer(minimum=1)),
       ('tile', options.tile, flag_checks.integer(minimum=1)),
       ('metrics', options.metrics, flag_checks.subset_of(*named_metrics.METRICS)),
       ('workdir', options.workdir, flag_checks.text()),
       ('output', options.output, flag_checks.text()),
       ('save_dir', options.save_dir, flag_checks.text())],
      *[flag_checks.folder_problem(folder, 'data', hint, paths.image_folder(folder))
        for folder in options.data if isinstance(folder, str) and folder],
      *[flag_checks.folder_problem(folder, 'lr_data') for folder in options.lr_data or ()],
      options.compare and not options.save_dir and '--compare needs --save_dir',
      options.crop and not options.save_dir and '--crop needs --save_dir (the comparison '
                                                'images are written there)',
      *model_reference.flag_problems(model, options.workdir, options.step),
      # A generator's scale is its own: a --scale given beside one would be ignored.
      model != 'bicubic' and options['scale'].present and '--scale is for --model=bicubic '
      '(a generator upscales by its own factor); leave --scale out',
      flag_checks.folder_problem(options.workdir, 'workdir'))
  for spec in options.crop:
    comparison_images.parse_crop(spec, options.zoom)
  degradation.low_res_sources(options.degrade, options.lr_data, len(options.data))
  # Then where the results go: scores that cannot be written would be lost, and what
  # they would overwrite (an image named as --output, a set's own images).
  flag_checks.check_flags(
      [], flag_checks.output_problem(options.output, flag='--output', suffix='.json'),
      flag_checks.output_problem(options.save_dir, folder=True, flag='--save_dir'),
      flag_checks.sets_problem([paths.image_folder(folder) for folder in options.data],
                               options.save_dir and paths.absolute(options.save_dir)))


def _failures(results: dict[str, dict[str, Any]]) -> str | None:
  """One line naming what could not be scored, or None."""
  sets = [name for name, result in results.items() if 'error' in result]
  files = sum(len(result.get('failed', ())) for result in results.values())
  unwritten = sum(len(result.get('not_written', ())) for result in results.values())
  if not sets and not files and not unwritten:
    return None
  parts = ([f'{files} files skipped'] if files else []) + (
      [f'{unwritten} scored images whose SR images were not written'] if unwritten else []) + (
      [f'sets not scored: {", ".join(sets)}'] if sets else [])
  return '; '.join(parts) + ' (named above)'


def _model() -> str:
  """--model, with its default: srgan with --workdir, else bicubic."""
  return flags.FLAGS.model or ('srgan' if flags.FLAGS.workdir else 'bicubic')


def main() -> int:
  options = flags.FLAGS
  model = _model()
  # On every process alike: a host whose --data lacks a set would otherwise stop alone
  # and leave the others waiting for it.
  distributed.check_on_every_process(lambda: _check_flags(options, model))
  crops = [comparison_images.parse_crop(spec, options.zoom) for spec in options.crop]
  low_res = degradation.low_res_sources(
      options.degrade, [paths.absolute(folder) for folder in options.lr_data or ()],
      len(options.data))
  # Relative paths are relative to where the command was started.
  folders = [paths.image_folder(folder) for folder in options.data]
  save_dir = paths.absolute(options.save_dir) if options.save_dir else None
  writes = True
  memory_fix = 'lower --tile' + (' or --zoom' if crops else '')
  if model == 'bicubic':
    results = scoring.evaluate_sets(upscalers.bicubic(options.scale), folders, save_dir,
                                    options.compare, crops,
                                    named_metrics.metric_fns(options.metrics, options.scale),
                                    memory_fix=memory_fix, low_res=low_res)
    print(results_table.format_table(results))
  else:
    # A workdir's generator (srgan) or a pretrained model's, by name.
    generator = model_reference.load(model_reference.from_flags(
        model, options.workdir, options.step, options.ema))
    results = scoring.evaluate_beside_bicubic(
        upscalers.generator(*generator[:2], tile=options.tile), folders, save_dir,
        options.compare, crops, options.metrics, memory_fix=memory_fix, low_res=low_res)
    writes = distributed.is_main_process()
  if options.output and writes:
    output = pathlib.Path(paths.absolute(options.output))
    output.parent.mkdir(parents=True, exist_ok=True)
    # Whole or not at all: a full disk keeps the previous results, never half of them.
    paths.write_whole(output, json.dumps(results, indent=2) + '\n')
    print(f'wrote {output}')
  failures = _failures(results)
  if failures:
    cli.fail(failures, errors.EXIT_FAILED)
  return errors.EXIT_OK


def run() -> None:
  """``python -m srgan_jax.evaluate`` through ``cli.run``; a generator runs JAX, maybe
  on several processes."""
  cli.run(main, name='evaluate', define_flags=_define_flags,
          starts_jax=lambda: _model() != 'bicubic')


if __name__ == '__main__':
  run()
