r"""Command: draws a training run's learning curves (PSNR and SSIM against step).

  python -m srgan_jax.plot --workdir=runs/cpu_small --output=curve.png

What is drawn: ``srgan_jax/evaluation/curves.py``.
"""

import os

from absl import app
from absl import flags

from srgan_jax.evaluation import curves
from srgan_jax.evaluation import figures
from srgan_jax.runtime import cli
from srgan_jax.runtime import flag_checks
from srgan_jax.runtime import paths


def _define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'The training run (its TensorBoard event files).')
  flags.DEFINE_string('output', None, 'The PNG to write (default: WORKDIR/learning_curve.png).')
  flags.DEFINE_multi_string('set', [], 'Plot only these evaluation sets (default: all).')
  flags.mark_flag_as_required('workdir')


def main() -> None:
  options = flags.FLAGS
  workdir_problem = flag_checks.folder_problem(options.workdir, 'workdir')
  # Before the event files are read: a plot that cannot be written is lost work. (The
  # default output is checked once the workdir is known to be a folder.)
  flag_checks.check_flags(
      [('workdir', options.workdir, flag_checks.text())], workdir_problem,
      (options.output or not workdir_problem) and flag_checks.output_problem(
          options.output or os.path.join(options.workdir, 'learning_curve.png'),
          flag=options.output and '--output', fix=None if options.output else 'pass --output'),
      figures.format_problem(options.output, 'output'))
  workdir = paths.absolute(options.workdir)
  output = paths.absolute(options.output or f'{workdir}/learning_curve.png')
  try:
    curves.plot_workdir(workdir, output, options.set)
  except ValueError as error:
    raise app.UsageError(str(error)) from error
  print(f'Wrote {output}')


def run() -> None:
  """``python -m srgan_jax.plot`` through ``cli.run``."""
  cli.run(main, name='plot', define_flags=_define_flags)


if __name__ == '__main__':
  run()
