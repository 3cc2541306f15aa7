"""Real-ESRGAN's sensor noise, made on the accelerator: Gaussian and Poisson, colour or grey.

Real-ESRGAN (Wang et al., "Real-ESRGAN: Training Real-World Blind Super-Resolution
with Pure Synthetic Data", ICCVW 2021, section 3.1) adds, after each blur and
resize, either Gaussian noise (read noise) or Poisson noise (shot noise, its
variance proportional to the intensity), each in colour (independent per channel)
or grey (one draw for all three channels), with the formulas of BasicSR's
``basicsr/data/degradations.py``:

* Gaussian: ``image + sigma / 255 * N(0, 1)``, ``sigma`` in grey levels;
* Poisson: ``image + scale * (Poisson(v * image) / v - image)`` on the image
  rounded to 8 bits, ``v = 2 ** ceil(log2(u))`` for ``u`` the number of distinct
  8-bit values in the image (so an image of few grey levels gets coarser, stronger
  noise, as a low-count sensor would); grey Poisson noise is drawn on the image's
  luma (``0.2989 R + 0.587 G + 0.114 B``, torchvision's ``rgb_to_grayscale``).
  ``u`` is counted here exactly too, with a 256-bin histogram per image (static
  shape, so it stays in the jitted function).

Both kinds come from one uniform draw per value (``_draws``): the Gaussian noise is
its normal quantile, the Poisson count its Poisson quantile (``poisson_counts``:
exact below a rate of 10, a Cornish-Fisher expansion of the quantile above).
This replaces ``jax.random.poisson``, whose rejection sampler loops until every value
of the batch is accepted and was most of the pipeline's time on a CPU
(notes/PERFORMANCE.md section 12); a quantile costs a fixed, fused computation.

Every parameter is per image and may be traced, so one jitted function draws any
mixture. BasicSR chooses between Gaussian and Poisson once per batch;
``random_noise`` chooses per image, which mixes more finely and is otherwise the same.
"""

import math

import jax
import jax.numpy as jnp

# torchvision's rgb_to_grayscale weights (BT.601 luma, as BasicSR's grey Poisson noise).
_LUMA = (0.2989, 0.587, 0.114)
# Poisson rates below this are sampled exactly (poisson_counts), those above by the
# Cornish-Fisher quantile; jax.random.poisson switches its algorithm at 10 too.
EXACT_BELOW = 10.0
# The exact search's last count: P(count >= 32) < 2.5e-8 for rates below 10, under
# the 2^-24 a float32 uniform resolves, so no reachable count is cut off.
_SEARCH_COUNTS = 32


def _per_image(value: jax.Array | float, n: int) -> jax.Array:
  """A scalar or ``[n]`` value as float32 ``[n, 1, 1, 1]``, to broadcast over images."""
  return jnp.broadcast_to(jnp.asarray(value, jnp.float32), (n,))[:, None, None, None]


def _planar(images: jax.Array) -> jax.Array:
  """``[n, h, w, c]`` as ``[n, c, h, w]``.

  The noise is made on channel planes: picking a grey image's one draw or its luma
  for every channel then broadcasts along a major axis. Along the minor axis of 3,
  XLA's CPU backend does not vectorize the fused computation (the quantile and the
  Poisson search with it), which then ran several times slower.
  """
  return jnp.moveaxis(images, 3, 1)


def _interleaved(planes: jax.Array) -> jax.Array:
  """``[n, c, h, w]`` as ``[n, h, w, c]``."""
  return jnp.moveaxis(planes, 1, 3)


def _draws(key: jax.Array, shape: tuple[int, ...],
           grey: jax.Array | bool) -> tuple[jax.Array, jax.Array]:
  """``(u, z)``, each of the planar ``shape`` ``(n, c, h, w)``: uniforms in (0, 1) and
  their standard normal quantiles ``z = Phi^-1(u)``; a grey image's channels all
  hold its first channel's draw.

  ``u`` is a multiple of 2^-23 plus 2^-24, symmetric about 1/2, and ``2 u - 1`` is
  exact in float32, so ``z = sqrt(2) erfinv(2 u - 1)`` (as ``jax.random.normal``
  makes its normals, cheaper than ``ndtri``) is finite and symmetric, |z| <= 5.4.
  """
  u = jax.random.uniform(key, shape) + 2.0**-24
  u = jnp.where(_per_image(grey, shape[0]) > 0, u[:, :1], u)
  return u, math.sqrt(2.0) * jax.lax.erf_inv(2.0 * u - 1.0)


def poisson_counts(u: jax.Array, z: jax.Array, rates: jax.Array) -> jax.Array:
  """Poisson counts of ``rates`` (float32), as the Poisson quantile of ``u``, elementwise.

  Below ``EXACT_BELOW`` exactly: the smallest ``k`` with ``u <= P(count <= k)``, by
  summing the probabilities ``exp(-rate) rate^k / k!`` up to ``_SEARCH_COUNTS``.

  Above it, the Cornish-Fisher expansion of the Poisson quantile at ``z`` (its
  skewness ``1 / sqrt(rate)`` and kurtosis ``1 / rate`` terms), rounded to the
  nearest count (the continuity correction) and clipped at 0:
  ``rate + sqrt(rate) z + (z^2 - 1) / 6 + (z - z^3) / (72 sqrt(rate))``. Against
  the exact Poisson distribution (evaluated with SciPy over the uniforms ``_draws``
  makes, at rates 10 to 256): the mean is exact to 1e-4 counts, the variance is
  ``rate`` plus at most 0.084 (mostly the rounding's 1/12), so the standard deviation
  is off by at most 0.014 counts, and at most 0.21% of the probability moves (total
  variation), all at rate 10 and less above. A count is ``255 scale / v`` grey levels
  of noise (``poisson_noise``; ``scale`` <= 3, and rates of 10 or more need ``v`` >=
  16): for the photographs of more than 128 distinct values (``v`` = 256) the noise's
  spread is right to 0.04 grey levels, to 0.16 at ``v`` = 64 and 0.63 at ``v`` = 16.

  Args:
    u: uniforms in (0, 1).
    z: their standard normal quantiles, ``Phi^-1(u)``.
    rates: Poisson rates, >= 0.

  Returns:
    float32 counts, the shape of ``rates``.
  """
  small = jnp.minimum(rates, EXACT_BELOW)  # The exact search's rates (the others unused).
  probability = jnp.exp(-small)
  cumulative = probability
  exact = jnp.zeros_like(rates)
  for count in range(1, _SEARCH_COUNTS + 1):
    exact = exact + jnp.where(u > cumulative, 1.0, 0.0)
    probability = probability * (small * (1.0 / count))
    cumulative = cumulative + probability
  root = jnp.sqrt(jnp.maximum(rates, EXACT_BELOW))
  quantile = rates + root * z + (z * z - 1) / 6 + (z - z * z * z) / (72 * root)
  approximate = jnp.maximum(jnp.floor(quantile + 0.5), 0.0)
  return jnp.where(rates < EXACT_BELOW, exact, approximate)


def _gaussian(z: jax.Array, sigma: jax.Array | float) -> jax.Array:
  return z * _per_image(sigma, z.shape[0]) / 255.0


def gaussian_noise(key: jax.Array, shape: tuple[int, ...], sigma: jax.Array | float,
                   grey: jax.Array | bool = False) -> jax.Array:
  """Gaussian noise ``[n, h, w, c]`` of standard deviation ``sigma / 255``.

  Args:
    key: PRNG key.
    shape: ``(n, h, w, c)``.
    sigma: standard deviation in grey levels (0..255 scale), scalar or ``[n]``.
    grey: per image (scalar or ``[n]``): one draw shared by the channels.
  """
  n, height, width, channels = shape
  return _interleaved(_gaussian(_draws(key, (n, channels, height, width), grey)[1], sigma))


def _quantized(images: jax.Array) -> jax.Array:
  """Images rounded to 8-bit levels, as BasicSR does before counting them."""
  return jnp.clip(jnp.round(images * 255.0), 0, 255) / 255.0


def distinct_value_scale(images: jax.Array) -> jax.Array:
  """BasicSR's ``vals`` per image: ``2 ** ceil(log2(u))``, ``u`` its distinct 8-bit values.

  Args:
    images: float ``[n, h, w, c]`` in [0, 1] (rounded to 8 bits to count).

  Returns:
    float32 ``[n]``.
  """
  n = images.shape[0]
  levels = jnp.clip(jnp.round(images * 255.0), 0, 255).astype(jnp.int32).reshape(n, -1)
  present = jnp.zeros((n, 256), jnp.bool_).at[jnp.arange(n)[:, None], levels].set(True)
  distinct = jnp.sum(present, axis=1).astype(jnp.float32)
  return 2.0 ** jnp.ceil(jnp.log2(distinct))


def _poisson(u: jax.Array, z: jax.Array, planes: jax.Array, scale: jax.Array | float,
             grey: jax.Array | bool) -> jax.Array:
  """``poisson_noise`` of ``_planar`` images from ``_draws``'s ``(u, z)``, planar."""
  n = planes.shape[0]
  grey = _per_image(grey, n) > 0
  colour = _quantized(planes)
  weights = jnp.asarray(_LUMA, planes.dtype)[None, :, None, None]
  luma = _quantized(jnp.sum(planes * weights, axis=1, keepdims=True))
  colour_vals = distinct_value_scale(colour)[:, None, None, None]
  luma_vals = distinct_value_scale(luma)[:, None, None, None]
  # One sampler call: a grey image's rate (its luma's) and draw are the same in every
  # channel, so are its counts.
  level = jnp.where(grey, luma, colour)
  vals = jnp.where(grey, luma_vals, colour_vals)
  counts = poisson_counts(u, z, level * vals)
  return (counts / vals - level) * _per_image(scale, n)


def poisson_noise(key: jax.Array, images: jax.Array, scale: jax.Array | float,
                  grey: jax.Array | bool = False) -> jax.Array:
  """BasicSR's Poisson noise for ``images`` (float ``[n, h, w, 3]`` in [0, 1]).

  Args:
    key: PRNG key.
    images: the images the noise is for: its variance is ``scale^2 * image / vals``
      (``distinct_value_scale``), on the images rounded to 8 bits.
    scale: strength, scalar or ``[n]`` (Real-ESRGAN draws it from [0.05, 3]).
    grey: per image: noise drawn on the luma and shared by the channels.

  Returns:
    The noise, ``[n, h, w, 3]``; the counts come from ``poisson_counts``.
  """
  planes = _planar(images)
  u, z = _draws(key, planes.shape, grey)
  return _interleaved(_poisson(u, z, planes, scale, grey))


def random_noise(
    key: jax.Array,
    images: jax.Array,
    gaussian_probability: float = 0.5,
    sigma_range: tuple[float, float] = (1.0, 30.0),
    poisson_scale_range: tuple[float, float] = (0.05, 3.0),
    grey_probability: float = 0.4,
    channels_first: bool = False,
) -> jax.Array:
  """Real-ESRGAN's noise step: each image gets Gaussian noise (probability
  ``gaussian_probability``, sigma uniform in ``sigma_range``) or else Poisson noise
  (scale uniform in ``poisson_scale_range``), grey with probability
  ``grey_probability``; the result is clipped to [0, 1] (not rounded, as BasicSR).

  One uniform per value serves both kinds (an image uses one), so the noise costs
  one draw, not two. ``images`` and the result are ``[n, h, w, c]``, or ``[n, c, h,
  w]`` if ``channels_first`` (the layout the noise is made in: ``_planar``).

  The defaults are the first degradation's (``train_realesrnet_x4plus.yml``); the
  second uses ``sigma_range=(1, 25)`` and ``poisson_scale_range=(0.05, 2.5)``.
  """
  if not channels_first:
    return _interleaved(random_noise(
        key, _planar(images), gaussian_probability, sigma_range, poisson_scale_range,
        grey_probability, channels_first=True))
  n = images.shape[0]
  keys = jax.random.split(key, 5)
  sigma = jax.random.uniform(keys[0], (n,), minval=sigma_range[0], maxval=sigma_range[1])
  scale = jax.random.uniform(keys[1], (n,), minval=poisson_scale_range[0],
                             maxval=poisson_scale_range[1])
  grey = jax.random.uniform(keys[2], (n,)) < grey_probability
  use_gaussian = (jax.random.uniform(keys[3], (n,)) < gaussian_probability)[:, None, None, None]
  u, z = _draws(keys[4], images.shape, grey)
  noise = jnp.where(use_gaussian, _gaussian(z, sigma), _poisson(u, z, images, scale, grey))
  return jnp.clip(images + noise, 0.0, 1.0)
