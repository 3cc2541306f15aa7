"""Command: converts LPIPS weights once into the cached ``.npz`` file.

  python -m srgan_jax.lpips import --backbone=alexnet-owt-7be5be79.pth
  python -m srgan_jax.lpips import --net=vgg --backbone=vgg16-397923af.pth

Where the weights come from and where the file goes: ``srgan_jax/nn/lpips.py``.
"""

from absl import flags

from srgan_jax.nn import lpips
from srgan_jax.runtime import cli
from srgan_jax.runtime import paths


def _define_flags() -> None:
  flags.DEFINE_enum('net', 'alex', lpips.NETS, 'The LPIPS backbone.')
  flags.DEFINE_string('backbone', None, 'torchvision alexnet() / vgg16() state dict (.pth).',
                      required=True)
  flags.DEFINE_string('linear', None, 'LPIPS v0.1 linear layers (.pth); default: those '
                      'of the installed lpips package.')
  flags.DEFINE_string('output', None, 'Where to write (default: the cache, see the module).')


def main() -> None:
  """``python -m srgan_jax.lpips import --backbone=PATH.pth [--net=vgg]``."""
  options = flags.FLAGS
  # Relative paths are relative to where the command was started.
  path = lpips.import_weights(paths.absolute(options.backbone), options.net,
                              paths.absolute(options.linear) if options.linear else None,
                              paths.absolute(options.output) if options.output else None)
  lpips.load_params(options.net, path)
  print(f'wrote LPIPS ({options.net}) weights to {path}')


def run() -> None:
  """``python -m srgan_jax.lpips import`` through ``cli.run``."""
  cli.run(main, name='lpips', define_flags=_define_flags, subcommand='import',
          usage='usage: python -m srgan_jax.lpips import --backbone=PATH.pth '
          '[--net=alex|vgg] [--linear=PATH.pth] [--output=PATH]')


if __name__ == '__main__':
  run()
