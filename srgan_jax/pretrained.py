"""Command: lists the generators shipped inside the package, with their scores.

  python -m srgan_jax.pretrained

They load by name (``--model=NAME`` in ``srgan_jax.evaluate`` and
``srgan_jax.super_resolve``); see ``srgan_jax/nn/pretrained.py``.
"""

from srgan_jax.nn import pretrained
from srgan_jax.runtime import cli


def main() -> None:
  """Lists the shipped models with their scores."""
  for name in pretrained.names():
    scores = pretrained.describe(name)['scores']
    print(name, '  '.join(f'{s}: {r["psnr"]:.2f} dB / {r["ssim"]:.4f} (bicubic '
                          f'{r["bicubic"]["psnr"]:.2f} / {r["bicubic"]["ssim"]:.4f})'
                          for s, r in scores.items()))
  print(f'({len(pretrained.names())} in {pretrained.directory()})')


def run() -> None:
  """``python -m srgan_jax.pretrained`` through ``cli.run``."""
  cli.run(main, name='pretrained')


if __name__ == '__main__':
  run()
