"""Real-ESRGAN's blur kernels, drawn and applied on the accelerator.

Real-ESRGAN (Wang et al., "Real-ESRGAN: Training Real-World Blind Super-Resolution
with Pure Synthetic Data", ICCVW 2021, section 3.1) blurs each training image with
a kernel drawn at random from six families, of random odd size 7..21: isotropic and
anisotropic Gaussians, generalized Gaussians (Liang et al., "Mutual Affine Network
for Spatially Variant Kernel Estimation in Blind Image Super-Resolution", 2021) and
"plateau" kernels, or, with some probability, a 2-D sinc (an ideal circular
low-pass filter) that imitates ringing and overshoot. The formulas follow BasicSR's
``basicsr/data/degradations.py``, which Real-ESRGAN trains with:

* a kernel is evaluated on the integer grid of offsets ``(x, y)`` from its centre,
  ``x`` the column offset and ``y`` the row offset (downwards), and normalised to
  sum 1;
* the covariance is ``R diag(sigma_x^2, sigma_y^2) R^T``, ``R`` the rotation by
  ``theta``; with ``d = [x, y] Sigma^-1 [x, y]^T``, the Gaussian is
  ``exp(-d / 2)``, the generalized Gaussian ``exp(-d^beta / 2)`` and the plateau
  ``1 / (d^beta + 1)``;
* the sinc with cut-off ``omega`` is ``omega J1(omega r) / (2 pi r)`` at distance
  ``r``, ``omega^2 / (4 pi)`` at the centre (``circular_lowpass_kernel``).

Every kernel here is ``KERNEL_SIZE`` x ``KERNEL_SIZE`` (21, the largest size): one of
size ``k`` is zero outside its centred ``k`` x ``k`` window, which is what BasicSR's
zero-padding to 21 gives. Size, parameters and even the family are data, so one
jitted function draws kernels of every size and family; ``blur`` applies one kernel
per image.
"""

from collections.abc import Sequence
import math

import jax
import jax.numpy as jnp

KERNEL_SIZE = 21
# Real-ESRGAN's kernel sizes: the odd sizes 7..21.
SIZES = tuple(range(7, KERNEL_SIZE + 1, 2))
# Real-ESRGAN's families, in the order of ``random_mixed_kernel``'s probabilities.
FAMILIES = ('iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso',
            'plateau_aniso')
# train_realesrnet_x4plus.yml: the first degradation's family probabilities.
FAMILY_PROBABILITIES = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)


def _grid() -> tuple[jax.Array, jax.Array]:
  """Column and row offsets ``(x, y)`` from the centre, each float32 ``[21, 21]``."""
  offsets = jnp.arange(KERNEL_SIZE, dtype=jnp.float32) - (KERNEL_SIZE - 1) / 2
  return offsets[None, :], offsets[:, None]


def _window(size: jax.Array | int) -> jax.Array:
  """1 inside the centred ``size`` x ``size`` window, 0 outside; ``[21, 21]``."""
  x, y = _grid()
  half = (jnp.asarray(size, jnp.float32) - 1) / 2
  return ((jnp.abs(x) <= half) & (jnp.abs(y) <= half)).astype(jnp.float32)


def _normalized(values: jax.Array, size: jax.Array | int) -> jax.Array:
  values = values * _window(size)
  return values / jnp.sum(values)


def _mahalanobis(sigma_x: jax.Array | float, sigma_y: jax.Array | float,
                 theta: jax.Array | float) -> jax.Array:
  """``d = [x, y] Sigma^-1 [x, y]^T`` on the grid, ``Sigma = R diag(sx^2, sy^2) R^T``."""
  x, y = _grid()
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  # Offsets in the rotated frame: R^T [x, y]; then Sigma^-1 is diagonal there.
  along = cos * x + sin * y
  across = -sin * x + cos * y
  return (along / sigma_x) ** 2 + (across / sigma_y) ** 2


def gaussian_kernel(size: jax.Array | int, sigma_x: jax.Array | float,
                    sigma_y: jax.Array | float, theta: jax.Array | float = 0.0) -> jax.Array:
  """The (anisotropic) Gaussian kernel: ``exp(-d / 2)``, normalised, ``[21, 21]``.

  Args:
    size: odd kernel size, 1..21: zero outside the centred ``size`` window.
    sigma_x: standard deviation along the direction at angle ``theta``.
    sigma_y: standard deviation across it (``sigma_x`` for an isotropic kernel).
    theta: rotation in radians, from the column axis towards the row axis.
  """
  return _normalized(jnp.exp(-0.5 * _mahalanobis(sigma_x, sigma_y, theta)), size)


def generalized_gaussian_kernel(size: jax.Array | int, sigma_x: jax.Array | float,
                                sigma_y: jax.Array | float, theta: jax.Array | float,
                                beta: jax.Array | float) -> jax.Array:
  """The generalized Gaussian ``exp(-d^beta / 2)``, normalised (``gaussian_kernel``'s args).

  ``beta`` < 1 gives heavier tails than a Gaussian, > 1 a flatter top and sharper fall.
  """
  return _normalized(jnp.exp(-0.5 * _mahalanobis(sigma_x, sigma_y, theta) ** beta), size)


def plateau_kernel(size: jax.Array | int, sigma_x: jax.Array | float,
                   sigma_y: jax.Array | float, theta: jax.Array | float,
                   beta: jax.Array | float) -> jax.Array:
  """The plateau kernel ``1 / (d^beta + 1)``, normalised (``gaussian_kernel``'s args)."""
  return _normalized(1.0 / (_mahalanobis(sigma_x, sigma_y, theta) ** beta + 1.0), size)


def bessel_j1(x: jax.Array) -> jax.Array:
  """The Bessel function of the first kind of order 1, to about 2e-6 in float32.

  ``jax.scipy.special`` has no accurate J1 (``bessel_jn`` loses accuracy near 0):
  this is the rational approximation for |x| < 8 and the asymptotic form beyond it
  of Press et al., "Numerical Recipes in C", 2nd ed., section 6.5 (``bessj1``).
  """
  ax = jnp.abs(x)
  y = x * x
  numerator = x * (72362614232.0 + y * (-7895059235.0 + y * (242396853.1 + y * (
      -2972611.439 + y * (15704.48260 + y * -30.16036606)))))
  denominator = 144725228442.0 + y * (2300535178.0 + y * (18583304.74 + y * (
      99447.43394 + y * (376.9991397 + y))))
  near = numerator / denominator
  far_x = jnp.maximum(ax, 8.0)  # Keeps the unused branch finite.
  z = 8.0 / far_x
  z2 = z * z
  p = 1.0 + z2 * (0.183105e-2 + z2 * (-0.3516396496e-4 + z2 * (
      0.2457520174e-5 + z2 * -0.240337019e-6)))
  q = 0.04687499995 + z2 * (-0.2002690873e-3 + z2 * (0.8449199096e-5 + z2 * (
      -0.88228987e-6 + z2 * 0.105787412e-6)))
  phase = far_x - 0.75 * math.pi
  far = jnp.sign(x) * jnp.sqrt(2 / math.pi / far_x) * (jnp.cos(phase) * p - z * jnp.sin(phase) * q)
  return jnp.where(ax < 8.0, near, far)


def sinc_kernel(size: jax.Array | int, cutoff: jax.Array | float) -> jax.Array:
  """The circular low-pass ("2-D sinc") kernel of cut-off ``cutoff`` (radians per pixel).

  ``cutoff * J1(cutoff r) / (2 pi r)`` at distance ``r``, ``cutoff^2 / (4 pi)`` (its
  limit) at the centre, normalised; ``[21, 21]``, zero outside the ``size`` window.
  """
  x, y = _grid()
  r = jnp.sqrt(x * x + y * y)
  safe_r = jnp.where(r > 0, r, 1.0)
  values = jnp.where(r > 0, cutoff * bessel_j1(cutoff * safe_r) / (2 * math.pi * safe_r),
                     cutoff**2 / (4 * math.pi))
  return _normalized(values, size)


def pulse_kernel() -> jax.Array:
  """The identity kernel (1 at the centre): Real-ESRGAN's "no final sinc"."""
  return _window(1)


def draw_size(key: jax.Array, sizes: Sequence[int] = SIZES) -> jax.Array:
  """One of ``sizes``, uniformly (int32 scalar)."""
  return jax.random.choice(key, jnp.asarray(sizes, jnp.int32))


def draw_gaussian_parameters(
    key: jax.Array, sigma_range: tuple[float, float], isotropic: bool,
    rotation_range: tuple[float, float] = (-math.pi, math.pi),
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(sigma_x, sigma_y, theta)``, each uniform in its range, as BasicSR draws them.

  Isotropic: ``sigma_y = sigma_x`` and ``theta = 0``. Anisotropic: ``sigma_y`` is
  drawn from ``sigma_range`` too, independently (Real-ESRGAN passes one range for both).
  """
  keys = jax.random.split(key, 3)
  sigma_x = jax.random.uniform(keys[0], (), minval=sigma_range[0], maxval=sigma_range[1])
  if isotropic:
    return sigma_x, sigma_x, jnp.zeros(())
  sigma_y = jax.random.uniform(keys[1], (), minval=sigma_range[0], maxval=sigma_range[1])
  theta = jax.random.uniform(keys[2], (), minval=rotation_range[0], maxval=rotation_range[1])
  return sigma_x, sigma_y, theta


def draw_beta(key: jax.Array, beta_range: tuple[float, float]) -> jax.Array:
  """A shape ``beta`` as BasicSR draws it: with probability 1/2 uniform in
  ``[beta_range[0], 1]``, else in ``[1, beta_range[1]]``.

  So half the draws are at most 1 whatever the range; for the plateau range
  ``[1, 2]`` half are exactly 1, as in BasicSR (``random_bivariate_plateau``).
  """
  low_key, high_key, choice_key = jax.random.split(key, 3)
  low = jax.random.uniform(low_key, (), minval=beta_range[0], maxval=1.0)
  high = jax.random.uniform(high_key, (), minval=1.0, maxval=beta_range[1])
  return jnp.where(jax.random.uniform(choice_key) < 0.5, low, high)


def draw_sinc_cutoff(key: jax.Array, size: jax.Array | int) -> jax.Array:
  """Real-ESRGAN's sinc cut-off: uniform in [pi/3, pi] below size 13, else [pi/5, pi]."""
  low = jnp.where(jnp.asarray(size) < 13, math.pi / 3, math.pi / 5)
  return jax.random.uniform(key, (), minval=low, maxval=math.pi)


def random_gaussian_kernel(key: jax.Array, size: jax.Array | int,
                           sigma_range: tuple[float, float], isotropic: bool) -> jax.Array:
  """A Gaussian kernel with parameters from ``draw_gaussian_parameters``."""
  return gaussian_kernel(size, *draw_gaussian_parameters(key, sigma_range, isotropic))


def random_generalized_gaussian_kernel(key: jax.Array, size: jax.Array | int,
                                       sigma_range: tuple[float, float],
                                       beta_range: tuple[float, float],
                                       isotropic: bool) -> jax.Array:
  """A generalized Gaussian kernel, ``beta`` from ``draw_beta``."""
  shape_key, beta_key = jax.random.split(key)
  return generalized_gaussian_kernel(
      size, *draw_gaussian_parameters(shape_key, sigma_range, isotropic),
      draw_beta(beta_key, beta_range))


def random_plateau_kernel(key: jax.Array, size: jax.Array | int,
                          sigma_range: tuple[float, float], beta_range: tuple[float, float],
                          isotropic: bool) -> jax.Array:
  """A plateau kernel, ``beta`` from ``draw_beta``."""
  shape_key, beta_key = jax.random.split(key)
  return plateau_kernel(size, *draw_gaussian_parameters(shape_key, sigma_range, isotropic),
                        draw_beta(beta_key, beta_range))


def random_sinc_kernel(key: jax.Array, size: jax.Array | int) -> jax.Array:
  """A sinc kernel with ``draw_sinc_cutoff``'s cut-off."""
  return sinc_kernel(size, draw_sinc_cutoff(key, size))


def random_mixed_kernel(
    key: jax.Array,
    sigma_range: tuple[float, float] = (0.2, 3.0),
    generalized_beta_range: tuple[float, float] = (0.5, 4.0),
    plateau_beta_range: tuple[float, float] = (1.0, 2.0),
    family_probabilities: Sequence[float] = FAMILY_PROBABILITIES,
    sinc_probability: float = 0.1,
    sizes: Sequence[int] = SIZES,
) -> jax.Array:
  """Real-ESRGAN's blur kernel for one image: a random size from ``sizes``, then a
  sinc with probability ``sinc_probability``, else a family drawn with
  ``family_probabilities`` (in the order of ``FAMILIES``).

  The defaults are the first degradation's (``train_realesrnet_x4plus.yml``); the
  second uses ``sigma_range=(0.2, 1.5)`` and sinc probability 0.1 as well. All six
  families are evaluated and one is selected (21x21 each, negligible), so the family
  is data and the function traces once.
  """
  keys = jax.random.split(key, 5)
  size = draw_size(keys[0], sizes)
  candidates = []
  for family in FAMILIES:
    isotropic = family.endswith('_iso') or family == 'iso'
    if family.startswith('generalized'):
      kernel = random_generalized_gaussian_kernel(keys[1], size, sigma_range,
                                                  generalized_beta_range, isotropic)
    elif family.startswith('plateau'):
      kernel = random_plateau_kernel(keys[1], size, sigma_range, plateau_beta_range, isotropic)
    else:
      kernel = random_gaussian_kernel(keys[1], size, sigma_range, isotropic)
    candidates.append(kernel)
  family = jax.random.choice(keys[2], len(FAMILIES), p=jnp.asarray(family_probabilities))
  kernel = jnp.stack(candidates)[family]
  sinc = random_sinc_kernel(keys[3], size)
  return jnp.where(jax.random.uniform(keys[4]) < sinc_probability, sinc, kernel)


def _fft_length(length: int) -> int:
  """The least ``n >= length`` with no prime factor above 5 (a fast FFT length)."""
  while True:
    rest = length
    for prime in (2, 3, 5):
      while rest % prime == 0:
        rest //= prime
    if rest == 1:
      return length
    length += 1


def blur(images: jax.Array, kernels: jax.Array, padded: bool = False,
         channels_first: bool = False) -> jax.Array:
  """Filters each image with its own kernel, reflecting at the borders.

  Args:
    images: float ``[n, h, w, c]`` (``[n, c, h, w]`` if ``channels_first``), ``h`` and
      ``w`` above 10.
    kernels: ``[n, 21, 21]``, or ``[21, 21]`` for all.
    padded: ``images`` already carry their 10 border pixels on each side (padded by
      the caller, e.g. reflecting at a traced border): no padding here, and the
      result is 20 pixels shorter in height and width.
    channels_first: the layout of ``images`` and the result.

  Returns:
    ``[n, h, w, c]`` (or ``[n, c, h, w]``): ``out[i, j] = sum kernel[a, b]
    image[i + a - 10, j + b - 10]`` (correlation, as BasicSR's ``filter2D``; the
    kernels here are point-symmetric, so it is also convolution), with the image
    mirrored without repeating its edge (``torch``'s 'reflect' padding, which BasicSR
    uses).

  The correlation is computed by FFT, in float32, on the padded image: as a grouped
  convolution with a kernel per image, XLA's CPU backend runs it tap by tap, many
  times slower (notes/PERFORMANCE.md section 12). The FFT's correlation is circular,
  over a length ``n >= h + 20``; output ``i`` reads padded rows ``i .. i + 20``, all
  below ``h + 20``, so none wraps around and cropping to ``h`` leaves the plain
  correlation, to float32 round-off (closer to a float64 reference than XLA's
  convolution in float32 was).
  """
  if not channels_first:
    # XLA's FFT transforms the innermost axes: channels first.
    planes = blur(jnp.moveaxis(images, 3, 1), kernels, padded, channels_first=True)
    return jnp.moveaxis(planes, 1, 3)
  n = images.shape[0]
  kernels = jnp.broadcast_to(kernels, (n, KERNEL_SIZE, KERNEL_SIZE)).astype(jnp.float32)
  half = KERNEL_SIZE // 2
  if not padded:
    images = jnp.pad(images, ((0, 0), (0, 0), (half, half), (half, half)), mode='reflect')
  height, width = images.shape[2:]
  lengths = (_fft_length(height), _fft_length(width))
  spectra = jnp.fft.rfft2(images.astype(jnp.float32), s=lengths)
  # Correlation is the product with the kernel's conjugate spectrum (kernel at the origin).
  kernel_spectra = jnp.conj(jnp.fft.rfft2(kernels, s=lengths))
  filtered = jnp.fft.irfft2(spectra * kernel_spectra[:, None], s=lengths)
  return filtered[:, :, :height - 2 * half, :width - 2 * half].astype(images.dtype)
