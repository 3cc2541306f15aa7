"""The paper's Figure 2 in our own pictures: a crop of each image as bicubic and each
generator make it from the same LR, beside the HR crop, each under its scores.

The command is ``python -m srgan_jax.compare`` (``srgan_jax/compare.py``).
"""

import os
from typing import Sequence

from matplotlib import backend_bases
from matplotlib import figure
import numpy as np

from srgan_jax.evaluation import metrics
from srgan_jax.evaluation import niqe
from srgan_jax.evaluation import comparison_images
from srgan_jax.runtime import paths


def panel_caption(sr: np.ndarray, hr: np.ndarray, scale: int) -> str:
  """PSNR / SSIM (Y, ``scale`` shaved) and NIQE of a whole SR image, as in the
  paper's figures (there: PSNR / SSIM)."""
  niqe_score = float(niqe.niqe(sr[None], scale)[0])
  return (f'{metrics.psnr(sr, hr, scale):.2f} dB / {metrics.ssim(sr, hr, scale):.4f}\n'
          f'NIQE {niqe_score:.2f}')


def format_problem(path: str | None, flag: str) -> str | None:
  """Why matplotlib cannot save a figure as ``path`` (its suffix names the format), or
  None; checked before the figure is drawn, so that the work is not lost."""
  suffix = os.path.splitext(path or '')[1].lstrip('.').lower()
  supported = backend_bases.FigureCanvasBase.get_supported_filetypes()
  if not suffix or suffix in supported:  # No suffix: matplotlib writes PNG.
    return None
  return (f'--{flag}={path}: matplotlib cannot write .{suffix} files; name a '
          f'{", ".join("." + name for name in sorted(supported))} file (e.g. .png)')


def save_figure(fig: figure.Figure, path: str | os.PathLike[str], dpi: int) -> None:
  """Saves ``fig`` to ``path`` whole (``paths.replacing``), in the format its suffix
  names (PNG without one): a full disk leaves the previous file, never 0 bytes."""
  suffix = os.path.splitext(os.fspath(path))[1].lstrip('.').lower()
  with paths.replacing(path) as temporary:
    fig.savefig(temporary, dpi=dpi, format=suffix or 'png')


def comparison_figure(
    rows: Sequence[tuple[comparison_images.Crop, dict[str, np.ndarray], np.ndarray]],
    scale: int) -> figure.Figure:
  """One row per image: each method's crop (``{label: whole SR image}``, in order), then
  HR's, titled with the label and the whole image's scores (HR: its NIQE)."""
  columns = len(rows[0][1]) + 1
  fig = figure.Figure(figsize=(2.6 * columns, 2.9 * len(rows)), layout='constrained')
  axes = np.asarray(fig.subplots(len(rows), columns, squeeze=False))
  for row, (crop, srs, hr) in zip(axes, rows):
    panels = [(label, sr, panel_caption(sr, hr, scale)) for label, sr in srs.items()]
    panels.append(('HR', hr, f'{crop.image}\nNIQE {float(niqe.niqe(hr[None], scale)[0]):.2f}'))
    for ax, (label, image, caption) in zip(row, panels):
      cut = image[crop.y:crop.y + crop.height, crop.x:crop.x + crop.width]
      ax.imshow(cut[..., 0] if cut.shape[-1] == 1 else cut, cmap='gray',
                interpolation='nearest', vmin=0, vmax=255)
      ax.set_title(f'{label}\n{caption}', fontsize=9)
      ax.set_xticks([])
      ax.set_yticks([])
  return fig
