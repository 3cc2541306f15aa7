r"""Command: the paper's Figure 2 in our own pictures. Crops of images as bicubic and
each --model make them from the same LR (MATLAB bicubic x4 of the HR image), beside
the HR crop, each titled with the whole image's PSNR / SSIM (Y) and NIQE.
``--degrade`` and ``--lr_data`` make the LR as ``evaluate``'s do.

  python -m srgan_jax.compare --model=cpu_small --model=cpu_small_gan \
      --data=Set14 --data=BSD100 --crop=baboon:200,100,120,120 \
      --crop=108005:160,200,120,120 --output=docs/figure2.png

What is drawn: ``srgan_jax/evaluation/figures.py``.
"""

import os
import pathlib
from typing import Sequence

from absl import app
from absl import flags

from srgan_jax.evaluation import comparison_images
from srgan_jax.evaluation import figures
from srgan_jax.evaluation import scoring
from srgan_jax.imaging import degradation
from srgan_jax.imaging import image_io
from srgan_jax.nn import pretrained
from srgan_jax.nn import upscalers
from srgan_jax.runtime import cli
from srgan_jax.runtime import flag_checks
from srgan_jax.runtime import paths
from srgan_jax.training import model_reference


def _define_flags() -> None:
  flags.DEFINE_multi_string('model', [], 'Shipped generators to compare, by name, in '
                            'order (bicubic always comes first): '
                            f'{", ".join(pretrained.names()) or "none in this install"}.')
  flags.DEFINE_multi_string('data', [], 'The sets that hold the --crop images: ' +
                            paths.DATA_FLAG_HELP + '.')
  flags.DEFINE_multi_string('crop', [], 'NAME:x,y,w,h: one row, that region of image NAME '
                            '(HR pixels).')
  flags.DEFINE_string('output', 'figure2.png', 'The PNG to write.')
  flags.DEFINE_integer('scale', 4, 'The upscaling factor (the models\' own).')
  flags.DEFINE_string('degrade', None, degradation.DEGRADE_HELP)
  flags.DEFINE_multi_string('lr_data', None, degradation.LR_DATA_HELP)


def _find(name: str, folders: Sequence[str]) -> tuple[pathlib.Path, int]:
  """The image file called ``name`` (without suffix) in the first folder holding one,
  and that folder's position."""
  for index, folder in enumerate(folders):
    for path in image_io.image_files(folder, recursive=False):
      if path.stem == name:
        return pathlib.Path(path), index
  raise app.UsageError(f'no image {name!r} in {", ".join(folders)}'
                       + ''.join(map(image_io.subfolders_note, folders)))


def main() -> None:
  options = flags.FLAGS
  # Checked here, not by absl's mark_flags_as_required, which cannot tell an empty
  # multi-flag from a missing one.
  unset = [f'--{name}' for name in ('model', 'data', 'crop') if not options[name].value]
  if unset:
    raise app.UsageError(f'{", ".join(unset)} required: e.g. --model=cpu_small '
                         '--data=Set14 --crop=baboon:200,100,120,120')
  folders = [paths.image_folder(folder) for folder in options.data]
  flag_checks.check_flags(
      [('scale', options.scale, flag_checks.integer(minimum=2))],
      *[f"--model={name}: bicubic is always the figure's first column; name only shipped "
        f'generators ({", ".join(pretrained.names()) or "none in this install"})'
        for name in options.model if name == model_reference.BICUBIC],
      *[flag_checks.folder_problem(folder, 'data', location=location)
        for folder, location in zip(options.data, folders)],
      *[flag_checks.folder_problem(folder, 'lr_data') for folder in options.lr_data or ()])
  low_res = degradation.low_res_sources(
      options.degrade, [paths.absolute(folder) for folder in options.lr_data or ()],
      len(folders))
  crops = [comparison_images.parse_crop(spec) for spec in options.crop]
  output = paths.absolute(options.output)
  # A figure written into a set would replace one of its images, or join the set.
  # Checked first: output_problem's write test would touch the set's folder.
  flag_checks.check_flags([], *[
      f'--output={options.output} lies in the --data folder {folder}, whose images it '
      'would replace or join; write it elsewhere'
      for folder in folders
      if os.path.realpath(output).startswith(os.path.join(os.path.realpath(folder), ''))])
  flag_checks.check_flags([], flag_checks.output_problem(options.output, flag='--output'),
                          figures.format_problem(options.output, 'output'))
  references = [model_reference.from_flags(name) for name in options.model]
  for name, reference in zip(options.model, references):  # Before any weights are read.
    scale = model_reference.scale(reference)
    flag_checks.check_flags([], scale != options.scale and (
        f'--scale={options.scale} but --model={name} is x{scale}; pass --scale={scale}, '
        'with models of one scale'))
  images = []  # Each crop's HR and LR images, checked before any generator is loaded.
  for crop in crops:
    path, index = _find(crop.image, folders)
    hr = scoring.scorable_hr(path, options.scale)  # Or a UserError.
    flag_checks.check_flags([], crop.outside(hr.shape))
    images.append((hr, low_res[index].make(hr, options.scale, crop.image)))
  methods = {'bicubic': upscalers.bicubic(options.scale)}
  methods.update({name: upscalers.generator(*model_reference.load(reference)[:2])
                  for name, reference in zip(options.model, references)})
  rows = []
  for crop, (hr, lr) in zip(crops, images):
    lr = lr[None]
    srs = {name: upscaler.upscale_batch(lr)[0] for name, upscaler in methods.items()}
    rows.append((crop, srs, hr))
  output = pathlib.Path(output)
  output.parent.mkdir(parents=True, exist_ok=True)
  figures.save_figure(figures.comparison_figure(rows, options.scale), output, dpi=110)
  print(f'Wrote {output}')


def run() -> None:
  """``python -m srgan_jax.compare`` through ``cli.run``."""
  cli.run(main, name='compare', define_flags=_define_flags)


if __name__ == '__main__':
  run()
