"""Command: converts pretrained VGG19 weights once into the cached ``.npz`` file.

  python -m srgan_jax.vgg19 import --source=keras          # downloads (needs internet)
  python -m srgan_jax.vgg19 import --source=PATH.h5        # local Keras VGG19 weights
  python -m srgan_jax.vgg19 import --source=PATH.pth       # torchvision VGG19 state dict

What each source holds and where the file goes: ``srgan_jax/nn/vgg19.py``.
"""

import os
from absl import app
from absl import flags

from srgan_jax.nn import vgg19
from srgan_jax.runtime import cli
from srgan_jax.runtime import errors
from srgan_jax.runtime import paths


def _define_flags() -> None:
  """The command-line flags, defined only when this module is the program."""
  flags.DEFINE_string('source', None, "'keras' (download), PATH.h5 (Keras weights) or "
                      'PATH.pth (torchvision state dict)', required=True)
  flags.DEFINE_string('output', None, f'where to write the converted weights '
                      f'(default {vgg19.default_path()})')


def main() -> None:
  """``python -m srgan_jax.vgg19 import --source=...``: converts and checks the weights."""
  source, output = flags.FLAGS.source, flags.FLAGS.output
  # Relative paths are relative to where the command was started.
  source = source if source == 'keras' else paths.absolute(source)
  vgg19.check_source(source)
  if output is not None and (not output or os.path.isdir(output)):
    raise errors.ConfigError(f'--output must name a file, got {output!r}')
  path = vgg19.import_weights(source, paths.absolute(output) if output else None)
  _, preprocessing = vgg19.load_params(path)
  print(f'wrote VGG19 weights ({preprocessing} preprocessing) to {path}')


def run() -> None:
  """``python -m srgan_jax.vgg19 import`` through ``cli.run``."""
  cli.run(main, name='vgg19', define_flags=_define_flags, subcommand='import',
          usage='usage: python -m srgan_jax.vgg19 import '
          '--source=keras|PATH.h5|PATH.pth [--output=PATH]')


if __name__ == '__main__':
  run()
