"""How an HR image becomes its LR input: the benchmarks' degradation, which training
also uses, so that a model sees in training the degradation it is scored on.

The HR image is cropped to a multiple of the scale (``modcrop``) and downsampled
WHOLE by MATLAB-exact bicubic (``make_lr``: antialiased, rounded to uint8). LR pixel
``(i, j)`` covers HR pixels ``[i * scale, (i + 1) * scale)`` x ``[j * scale, (j + 1)
* scale)``, so crops at offsets ``(t, l)`` of the LR and ``(t * scale, l * scale)``
of the HR are in register.

Imports neither evaluation nor TensorFlow: the training input uses it too.
"""

import numpy as np

from srgan_jax.imaging import bicubic


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
  """Crops the bottom/right so that height and width are multiples of ``scale``."""
  height, width = image.shape[0], image.shape[1]
  return image[:height - height % scale, :width - width % scale]


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
  """The benchmarks' LR of a modcropped HR image: MATLAB bicubic by 1 / scale, uint8."""
  return bicubic.imresize(hr, 1 / scale)


def training_pair(image: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
  """``(hr, lr)``, both uint8: ``image`` modcropped, and its LR (module docstring)."""
  hr = modcrop(image, scale)
  return hr, make_lr(hr, scale)
