"""SRGAN losses (paper Sec. 2.2): content losses and the adversarial losses.

All losses are computed in float32 whatever the compute dtype. Images are in [-1, 1].
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from srgan_jax.nn import vgg19

# Content loss name -> the VGG19 feature map it compares (phi_i,j after its ReLU).
VGG_CONTENT_LAYERS = {'vgg22': 'relu2_2', 'vgg54': 'relu5_4'}
CONTENT_LOSSES = ('mse', *VGG_CONTENT_LAYERS)


def pixel_mse(sr: jax.Array, hr: jax.Array) -> jax.Array:
  """Pixel-wise MSE, the SRResNet loss and the 'MSE' content loss."""
  return jnp.mean(jnp.square(sr.astype(jnp.float32) - hr.astype(jnp.float32)))


def make_content_loss(
    name: str,
    vgg_params: Any = None,
    vgg_preprocessing: str = 'caffe',
    feature_scale: float = 1 / 12.75,
    dtype: Any = jnp.float32,
) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Returns content_loss(sr, hr) for 'mse', 'vgg22' or 'vgg54'.

  The VGG losses compare feature maps scaled by ``feature_scale`` (1/12.75 in the
  paper, which brings them to the scale of the MSE); the VGG parameters are frozen
  constants, so gradients reach only the SR image.
  """
  if name == 'mse':
    return pixel_mse
  if name not in VGG_CONTENT_LAYERS:
    raise ValueError(f'content loss must be one of {CONTENT_LOSSES}, got {name!r}')
  if vgg_params is None:
    raise ValueError(f'content loss {name!r} needs VGG19 parameters')
  layer = VGG_CONTENT_LAYERS[name]

  def content_loss(sr: jax.Array, hr: jax.Array) -> jax.Array:
    both = jnp.concatenate([sr, hr], axis=0)  # One VGG pass for the pair.
    maps = vgg19.features(vgg_params, both, [layer], vgg_preprocessing, dtype)[layer]
    maps = maps.astype(jnp.float32) * feature_scale
    sr_maps, hr_maps = jnp.split(maps, 2, axis=0)
    # The HR target carries no gradient.
    return jnp.mean(jnp.square(sr_maps - jax.lax.stop_gradient(hr_maps)))

  return content_loss


def generator_adversarial_loss(fake_logits: jax.Array) -> jax.Array:
  """-log D(G(LR)), averaged over the batch, in the stable logits form."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(
      fake_logits.astype(jnp.float32), jnp.ones_like(fake_logits, jnp.float32)))


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Standard BCE: real HR labelled 1, generated SR labelled 0."""
  real = optax.sigmoid_binary_cross_entropy(
      real_logits.astype(jnp.float32), jnp.ones_like(real_logits, jnp.float32))
  fake = optax.sigmoid_binary_cross_entropy(
      fake_logits.astype(jnp.float32), jnp.zeros_like(fake_logits, jnp.float32))
  return jnp.mean(real) + jnp.mean(fake)
