"""Command: lists the generators shipped inside the package, with their scores.

  python -m srgan_jax.pretrained

They load by name (``--model=NAME`` in ``srgan_jax.evaluate`` and
``srgan_jax.super_resolve``); see ``srgan_jax/nn/shipped.py``.
"""

from typing import Sequence

from absl import app

from srgan_jax.nn import shipped
from srgan_jax.runtime import cli


def main(argv: Sequence[str]) -> None:
  """Lists the shipped models with their scores."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for name in shipped.names():
    scores = shipped.describe(name)['scores']
    print(name, '  '.join(f'{s}: {r["psnr"]:.2f} dB / {r["ssim"]:.4f} (bicubic '
                          f'{r["bicubic"]["psnr"]:.2f} / {r["bicubic"]["ssim"]:.4f})'
                          for s, r in scores.items()))
  print(f'({len(shipped.names())} in {shipped.directory()})')


if __name__ == '__main__':
  cli.run(main)
