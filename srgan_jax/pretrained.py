"""Command: lists the generators shipped inside the package, with their scores.

  python -m srgan_jax.pretrained

They load by name (``--model=NAME`` in ``srgan_jax.evaluate`` and
``srgan_jax.super_resolve``); see ``srgan_jax/inference/loading.py``.
"""

from typing import Sequence

from absl import app

from srgan_jax.inference import loading


def main(argv: Sequence[str]) -> None:
  """Lists the shipped models with their scores."""
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {argv[1:]}')
  for name in loading.names():
    scores = loading.describe(name)['scores']
    print(name, '  '.join(f'{s}: {r["psnr"]:.2f} dB / {r["ssim"]:.4f} (bicubic '
                          f'{r["bicubic"]["psnr"]:.2f} / {r["bicubic"]["ssim"]:.4f})'
                          for s, r in scores.items()))
  print(f'({len(loading.names())} in {loading.directory()})')


if __name__ == '__main__':
  app.run(main)
