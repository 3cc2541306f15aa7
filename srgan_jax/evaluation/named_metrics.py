"""The evaluation metrics beside PSNR/SSIM (NIQE, detail, texture, LPIPS), a table by name.

Each metric is a ``MetricFn``: same-size uint8 batches ``sr, hr [n, H, W, C]`` ->
per-image scores ``[n]``, computed with JAX where the evaluation runs. Conventions:

* ``niqe``: of the SR image alone (no reference), Y channel, ``scale`` pixels shaved
  off each border (the PIRM 2018 challenge's convention), 96x96 blocks; lower is
  more natural. Always available: its parameters ship with the package.
* ``luma_detail`` and ``chroma_detail``: the SR image's high-frequency energy over the
  HR image's (``metrics.high_pass_energy``: mean absolute Laplacian of Y, resp. Cb +
  Cr, ``scale`` pixels shaved): 1 is as much fine detail as the photograph, below 1
  blur, above 1 invented detail or (chroma) colour noise. Gray HR images have no
  chroma and are left out of ``chroma_detail``'s mean (NaN).
* ``flat_texture`` and ``textured_detail``: the same luma ratio, taken only where
  the HR photograph is locally flat (sky, walls, skin: its luma's standard deviation
  over 7x7 pixels below 3 grey levels), resp. everywhere else
  (``metrics.texture_by_flatness`` defines them exactly). ``flat_texture`` above 1 is
  texture the photograph does not have (a GAN's grain or crosshatch, which NIQE
  rewards); ``textured_detail`` below 1 is detail lost where it has some. An image
  without such pixels, or whose HR has no detail on them, is left out (NaN).
* ``jpeg_grid``: of the SR image alone, the luma gradient across the edges of the
  input's 8x8 JPEG blocks (every ``8 x scale`` output pixels) over the gradient
  elsewhere (``metrics.block_grid``): about 1 for a photograph, above 1 where the
  output keeps the blocks of a JPEG input (``--degrade=jpeg:40``).
* ``lpips`` (AlexNet, v0.1, the reference default) and ``lpips_vgg``: SR against HR,
  RGB (gray repeated), the whole image as the reference ``lpips`` scripts score it;
  lower is closer. Needs the weights of ``python -m srgan_jax.lpips import``.
"""

from collections.abc import Callable, Mapping, Sequence
import functools

from absl import logging
import jax
import numpy as np

from srgan_jax.evaluation import metrics
from srgan_jax.evaluation import niqe
from srgan_jax.nn import lpips

MetricFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

ALWAYS_COMPUTED = ('psnr', 'ssim')  # By evaluate itself, whatever is asked.
# What evaluation reports beside PSNR/SSIM unless told otherwise: the detail ratios
# cost milliseconds an image, NIQE and LPIPS the time.
DEFAULT_METRICS = ('niqe', 'lpips', 'luma_detail', 'flat_texture', 'textured_detail')
# Below this mean |Laplacian| (grey levels) an HR image has no such detail: a gray
# image's chroma (the MATLAB weights leave ~1e-14 there).
_NO_ENERGY = 1e-6


def _niqe(sr: np.ndarray, hr: np.ndarray, shave: int) -> np.ndarray:
  del hr  # No-reference.
  return niqe.niqe(sr, shave)


# One image's (SR, HR) energies, from (sr_image, hr_image, shave).
EnergiesFn = Callable[[np.ndarray, np.ndarray, int], tuple[float, float]]


def _whole_image(sr: np.ndarray, hr: np.ndarray, shave: int, channel: int
                 ) -> tuple[float, float]:
  """High-pass energies of the whole images (``channel`` 0 luma, 1 chroma)."""
  return (metrics.high_pass_energy(sr, shave)[channel],
          metrics.high_pass_energy(hr, shave)[channel])


def _by_flatness(sr: np.ndarray, hr: np.ndarray, shave: int, flat: bool
                 ) -> tuple[float, float]:
  """Luma energies where HR is flat (``flat``), else where it is not."""
  energies = metrics.texture_by_flatness(sr, hr, shave)
  if flat:
    return energies.sr_flat, energies.hr_flat
  return energies.sr_textured, energies.hr_textured


def _detail(sr: np.ndarray, hr: np.ndarray, shave: int, energies: EnergiesFn) -> np.ndarray:
  """Per image: SR's energy over HR's, NaN where HR has none (or no such pixels)."""
  ratios = []
  for sr_image, hr_image in zip(sr, hr):
    energy, reference = energies(sr_image, hr_image, shave)
    # NaN (no such pixels) compares False too.
    ratios.append(energy / reference if reference > _NO_ENERGY else np.nan)
  return np.array(ratios)


def _jpeg_grid(sr: np.ndarray, hr: np.ndarray, period: int) -> np.ndarray:
  del hr  # No-reference.
  return np.array([metrics.block_grid(image, period) for image in sr])


def _jpeg_grid_metric(scale: int) -> MetricFn:
  return functools.partial(_jpeg_grid, period=metrics.JPEG_BLOCK * scale)


def _lpips(sr: np.ndarray, hr: np.ndarray, params: Mapping[str, object], net: str) -> np.ndarray:
  return lpips.lpips(params, sr, hr, net)


def _niqe_metric(scale: int) -> MetricFn:
  return functools.partial(_niqe, shave=scale)


def _detail_metric(scale: int, energies: EnergiesFn) -> MetricFn:
  return functools.partial(_detail, shave=scale, energies=energies)


def _lpips_metric(scale: int, name: str, net: str) -> MetricFn | None:
  """LPIPS with ``net``'s converted weights; None, logged, when they are absent."""
  del scale  # The whole image, as the reference scripts score it.
  try:
    params = lpips.load_params(net)
  except lpips.LPIPSWeightsNotFoundError:
    logging.warning('Skipping %s: no weights at %s (convert them once with: %s).', name,
                    lpips.default_path(net), lpips.import_command(net))
    return None
  # On the device once, not with every batch.
  return functools.partial(_lpips, params=jax.device_put(params), net=net)


# Each metric's builder: scale -> its MetricFn, or None where it cannot be computed.
_BUILDERS: dict[str, Callable[[int], MetricFn | None]] = {
    'niqe': _niqe_metric,
    'luma_detail': functools.partial(
        _detail_metric, energies=functools.partial(_whole_image, channel=0)),
    'chroma_detail': functools.partial(
        _detail_metric, energies=functools.partial(_whole_image, channel=1)),
    'flat_texture': functools.partial(
        _detail_metric, energies=functools.partial(_by_flatness, flat=True)),
    'textured_detail': functools.partial(
        _detail_metric, energies=functools.partial(_by_flatness, flat=False)),
    'jpeg_grid': _jpeg_grid_metric,
    'lpips': functools.partial(_lpips_metric, name='lpips', net='alex'),
    'lpips_vgg': functools.partial(_lpips_metric, name='lpips_vgg', net='vgg'),
}
METRICS = tuple(_BUILDERS)


def metric_fns(names: Sequence[str], scale: int) -> dict[str, MetricFn]:
  """The ``MetricFn`` of each name in ``names`` (see ``METRICS``), in that order.

  'psnr' and 'ssim' may be named too: evaluation always computes them, so they get
  no ``MetricFn``. An LPIPS variant whose converted weights are absent is left out
  with one logged line that names the import command; an unknown name is a ValueError.
  """
  unknown = sorted(set(names) - set(METRICS) - set(ALWAYS_COMPUTED))
  if unknown:
    raise ValueError(f'unknown metrics {unknown}: expected some of '
                     f'{ALWAYS_COMPUTED + METRICS}')
  fns = {}
  for name in names:
    if name not in ALWAYS_COMPUTED and (fn := _BUILDERS[name](scale)) is not None:
      fns[name] = fn
  return fns
