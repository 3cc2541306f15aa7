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

Every parameter is per image and may be traced, so one jitted function draws any
mixture. BasicSR chooses between Gaussian and Poisson once per batch;
``random_noise`` chooses per image, which mixes more finely and is otherwise the same.
"""

import jax
import jax.numpy as jnp

# torchvision's rgb_to_grayscale weights (BT.601 luma, as BasicSR's grey Poisson noise).
_LUMA = (0.2989, 0.587, 0.114)


def _per_image(value: jax.Array | float, n: int) -> jax.Array:
  """A scalar or ``[n]`` value as float32 ``[n, 1, 1, 1]``, to broadcast over images."""
  return jnp.broadcast_to(jnp.asarray(value, jnp.float32), (n,))[:, None, None, None]


def gaussian_noise(key: jax.Array, shape: tuple[int, ...], sigma: jax.Array | float,
                   grey: jax.Array | bool = False) -> jax.Array:
  """Gaussian noise ``[n, h, w, c]`` of standard deviation ``sigma / 255``.

  Args:
    key: PRNG key.
    shape: ``(n, h, w, c)``.
    sigma: standard deviation in grey levels (0..255 scale), scalar or ``[n]``.
    grey: per image (scalar or ``[n]``): one draw shared by the channels.
  """
  n = shape[0]
  colour_key, grey_key = jax.random.split(key)
  colour = jax.random.normal(colour_key, shape)
  shared = jax.random.normal(grey_key, shape[:3] + (1,))
  grey = _per_image(grey, n)
  return (colour * (1 - grey) + shared * grey) * _per_image(sigma, n) / 255.0


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
    The noise, ``[n, h, w, 3]``.
  """
  n = images.shape[0]
  colour = _quantized(images)
  luma = _quantized(jnp.tensordot(images, jnp.asarray(_LUMA, images.dtype), axes=1)[..., None])
  colour_vals = distinct_value_scale(colour)[:, None, None, None]
  luma_vals = distinct_value_scale(luma)[:, None, None, None]
  # One sampler for both (jax.random.poisson is a large program to compile).
  rates = jnp.concatenate([colour * colour_vals, luma * luma_vals], axis=-1)
  counts = jax.random.poisson(key, rates, rates.shape).astype(jnp.float32)
  colour_noise = counts[..., :3] / colour_vals - colour
  luma_noise = counts[..., 3:] / luma_vals - luma
  grey = _per_image(grey, n)
  return (colour_noise * (1 - grey) + luma_noise * grey) * _per_image(scale, n)


def random_noise(
    key: jax.Array,
    images: jax.Array,
    gaussian_probability: float = 0.5,
    sigma_range: tuple[float, float] = (1.0, 30.0),
    poisson_scale_range: tuple[float, float] = (0.05, 3.0),
    grey_probability: float = 0.4,
) -> jax.Array:
  """Real-ESRGAN's noise step: each image gets Gaussian noise (probability
  ``gaussian_probability``, sigma uniform in ``sigma_range``) or else Poisson noise
  (scale uniform in ``poisson_scale_range``), grey with probability
  ``grey_probability``; the result is clipped to [0, 1] (not rounded, as BasicSR).

  The defaults are the first degradation's (``train_realesrnet_x4plus.yml``); the
  second uses ``sigma_range=(1, 25)`` and ``poisson_scale_range=(0.05, 2.5)``.
  """
  n = images.shape[0]
  keys = jax.random.split(key, 6)
  sigma = jax.random.uniform(keys[0], (n,), minval=sigma_range[0], maxval=sigma_range[1])
  scale = jax.random.uniform(keys[1], (n,), minval=poisson_scale_range[0],
                             maxval=poisson_scale_range[1])
  grey = jax.random.uniform(keys[2], (n,)) < grey_probability
  use_gaussian = (jax.random.uniform(keys[3], (n,)) < gaussian_probability)[:, None, None, None]
  noise = jnp.where(use_gaussian, gaussian_noise(keys[4], images.shape, sigma, grey),
                    poisson_noise(keys[5], images, scale, grey))
  return jnp.clip(images + noise, 0.0, 1.0)
