r"""Command: ships a training run's generator inside the package, loadable by name.

  python -m srgan_jax.export --workdir=runs/cpu_small --name=cpu_small \
      --command='python -m srgan_jax.main --config=configs/cpu_small.py --workdir=runs/cpu_small'

writes ``srgan_jax/pretrained_models/cpu_small.{msgpack,json}`` from the latest
checkpoint (or --step), with the EMA weights when the run kept them, scored on Set5,
Set14 and BSD100 where $SRGAN_DATASETS has them (or on the --data folders). An
existing name is kept unless --overwrite. Then ``--model=cpu_small`` works in
``srgan_jax.evaluate`` and ``srgan_jax.super_resolve``, and ``pip install .`` ships it.

  python -m srgan_jax.export --model=cpu_small_gan --format=onnx --output=gan.onnx

writes a shipped model (``--model``) or a run's generator (``--workdir``) as a file
that another runtime runs (stablehlo, onnx, litert, torch), verified there against
JAX on two odd sizes, with a model card beside it (``gan.onnx.json``); see
``inference/exports.py``. An export that differs beyond its format's tolerance is
deleted and the command exits 2.
"""

import os
from typing import Any

from absl import app
from absl import flags

from srgan_jax.inference import exports
from srgan_jax.inference import pretrained_export
from srgan_jax.nn import pretrained
from srgan_jax.runtime import cli
from srgan_jax.runtime import errors
from srgan_jax.runtime import flag_checks
from srgan_jax.runtime import paths
from srgan_jax.training import model_reference


def _define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'The training workdir.')
  flags.DEFINE_string('name', None, 'The model name, e.g. cpu_small.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.DEFINE_bool('ema', True, 'Ship the EMA weights when the run kept them.')
  flags.DEFINE_string('command', None, 'The command that trained the run (recorded).')
  flags.DEFINE_multi_string('data', None, 'Image sets to score it on: ' +
                            paths.DATA_FLAG_HELP + ' (default: '
                            f'{", ".join(pretrained_export.DEFAULT_SCORE_SETS)} where present).')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing model of that name.')
  flags.DEFINE_string('model', None, 'With --format: a shipped model to export, by name.')
  flags.DEFINE_enum('format', None, exports.FORMATS,
                    'Write the generator as a file of this format (with --output).')
  flags.DEFINE_string('output', None, 'With --format: the file to write.')


def _check_mode(options: Any) -> None:
  """Which export: shipping a run (--workdir, --name) or a file (--format, --output)."""
  if options.format is None and options.output is None:
    flag_checks.check_flags([], not options.workdir and '--workdir is required (or --model '
                            'with --format and --output)',
                            not options.name and '--name is required to ship a run (or '
                            'pass --format and --output to write a file)',
                            options.model and '--model needs --format and --output')
    return
  flag_checks.check_flags(
      [('step', options.step, flag_checks.integer(minimum=0))],
      not options.format and f'--output needs --format ({", ".join(exports.FORMATS)})',
      not options.output and '--format needs --output=FILE',
      options.name and '--name ships a run; it does not go with --format',
      not (options.model or options.workdir) and '--format needs --model=NAME or --workdir',
      options.model and options.workdir and 'pass --model or --workdir, not both',
      options.model == model_reference.BICUBIC and '--model=bicubic has no generator to '
      'export; name a shipped model or pass --workdir',
      options.workdir and flag_checks.folder_problem(options.workdir, 'workdir'),
      options.output and paths.is_remote(options.output) and '--output must be a local file',
      options.output and flag_checks.output_problem(options.output, flag='--output'))


def _export_file(options: Any) -> None:
  """--format: the generator as a verified file, with its model card."""
  exports.check_packages(options.format)
  reference = model_reference.from_flags(options.model or model_reference.WORKDIR,
                                         options.workdir, options.step, options.ema)
  problem = model_reference.problem(reference)
  if problem:
    raise errors.UserError(problem)
  model, variables, config = model_reference.load(reference)
  record = pretrained.describe(reference.location) if reference.kind == 'pretrained' else None
  line = exports.export(model, variables, config, options.format,
                        paths.absolute(options.output), source=str(reference), record=record)
  print(line)
  print(f'Wrote {options.output} and {options.output}.json')


def _check_target() -> None:
  """Where the model goes, before the checkpoint is read and scored (errors.ConfigError)."""
  override = os.environ.get(pretrained.DIRECTORY_ENV)
  if override:  # The package's folder, or another local one: read back by pathlib.
    problem = flag_checks.local_path(override)
    flag_checks.check_flags([], problem and f'${pretrained.DIRECTORY_ENV} {problem}')
  flag_checks.check_flags([], flag_checks.output_problem(
      override or str(pretrained.directory()), folder=True,
      flag=override and f'${pretrained.DIRECTORY_ENV}',
      fix=None if override else f'set ${pretrained.DIRECTORY_ENV} to a folder you can write'))


def _check_flags(options: Any) -> None:
  """The flags, before the checkpoint is read and scored (errors.ConfigError)."""
  flag_checks.check_flags(
      [('workdir', options.workdir, flag_checks.text()),
       ('step', options.step, flag_checks.integer(minimum=0))] +
      [('data', folder, flag_checks.text()) for folder in options.data or ()],
      flag_checks.folder_problem(options.workdir, 'workdir'),
      *[flag_checks.folder_problem(folder, 'data', location=paths.image_folder(folder))
        for folder in options.data or () if folder],
      options.data and flag_checks.sets_problem([paths.image_folder(f) for f in options.data]))


def main() -> None:
  options = flags.FLAGS
  _check_mode(options)
  if options.format is not None:
    _export_file(options)
    return
  _check_target()
  _check_flags(options)
  # Folders, or set names in $SRGAN_DATASETS, as evaluate takes them.
  folders = [paths.image_folder(folder) for folder in options.data] if options.data else None
  try:
    record = pretrained_export.export(paths.absolute(options.workdir), options.name, step=options.step,
                              ema=options.ema, command=options.command, folders=folders,
                              overwrite=options.overwrite)
  except (ValueError, FileExistsError) as error:
    raise app.UsageError(str(error)) from error
  print(f'Wrote {record} and {record.with_suffix(".msgpack")}')


def run() -> None:
  """``python -m srgan_jax.export`` through ``cli.run``."""
  cli.run(main, name='export', define_flags=_define_flags)


if __name__ == '__main__':
  run()
