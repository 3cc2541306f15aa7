"""The evaluation metrics beside PSNR/SSIM (NIQE, detail, LPIPS), a table by name.

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
# What evaluation reports beside PSNR/SSIM unless told otherwise.
DEFAULT_METRICS = ('niqe', 'lpips')
# Below this mean |Laplacian| (grey levels) an HR image has no such detail: a gray
# image's chroma (the MATLAB weights leave ~1e-14 there).
_NO_ENERGY = 1e-6


def _niqe(sr: np.ndarray, hr: np.ndarray, shave: int) -> np.ndarray:
  del hr  # No-reference.
  return niqe.niqe(sr, shave)


def _detail(sr: np.ndarray, hr: np.ndarray, shave: int, channel: int) -> np.ndarray:
  """Per image: high-pass energy of SR over HR's (``channel`` 0 luma, 1 chroma)."""
  ratios = []
  for sr_image, hr_image in zip(sr, hr):
    reference = metrics.high_pass_energy(hr_image, shave)[channel]
    energy = metrics.high_pass_energy(sr_image, shave)[channel]
    ratios.append(energy / reference if reference > _NO_ENERGY else np.nan)
  return np.array(ratios)


def _lpips(sr: np.ndarray, hr: np.ndarray, params: Mapping[str, object], net: str) -> np.ndarray:
  return lpips.lpips(params, sr, hr, net)


def _niqe_metric(scale: int) -> MetricFn:
  return functools.partial(_niqe, shave=scale)


def _detail_metric(scale: int, channel: int) -> MetricFn:
  return functools.partial(_detail, shave=scale, channel=channel)


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
    'luma_detail': functools.partial(_detail_metric, channel=0),
    'chroma_detail': functools.partial(_detail_metric, channel=1),
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
