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
# 'l1' (pixel mean absolute error, as ESRGAN) is off the paper.
CONTENT_LOSSES = ('mse', 'l1', *VGG_CONTENT_LAYERS)
# 'standard': the paper's -log D(G(LR)) against BCE; 'relativistic' (off the paper):
# the relativistic average GAN of ESRGAN (Wang et al. 2018), where D judges whether
# an image is more realistic than the other batch's on average.
GAN_LOSSES = ('standard', 'relativistic')


def pixel_mse(sr: jax.Array, hr: jax.Array) -> jax.Array:
  """Pixel-wise MSE, the SRResNet loss and the 'MSE' content loss."""
  return jnp.mean(jnp.square(sr.astype(jnp.float32) - hr.astype(jnp.float32)))


def pixel_l1(sr: jax.Array, hr: jax.Array) -> jax.Array:
  """Pixel-wise mean absolute error (the 'l1' content loss, off the paper)."""
  return jnp.mean(jnp.abs(sr.astype(jnp.float32) - hr.astype(jnp.float32)))


# BT.601 chroma (Cb, Cr) of RGB: rows of the YCbCr matrix, each summing to 0.
_CHROMA_601 = ((-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def chroma_l1(sr: jax.Array, hr: jax.Array) -> jax.Array:
  """Mean absolute difference of the BT.601 chroma (Cb, Cr) of SR and HR: a
  content term on colour alone (off the paper), against colour noise."""
  weights = jnp.asarray(_CHROMA_601, jnp.float32).T
  difference = sr.astype(jnp.float32) - hr.astype(jnp.float32)
  return jnp.mean(jnp.abs(difference @ weights))


def make_content_loss(
    name: str,
    vgg_params: Any = None,
    vgg_preprocessing: str = 'caffe',
    feature_scale: float = 1 / 12.75,
    dtype: Any = jnp.float32,
) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Returns content_loss(sr, hr) for 'mse', 'l1', 'vgg22' or 'vgg54'.

  The VGG losses compare feature maps scaled by ``feature_scale`` (1/12.75 in the
  paper, which brings them to the scale of the MSE); the VGG parameters are frozen
  constants, so gradients reach only the SR image.
  """
  if name == 'mse':
    return pixel_mse
  if name == 'l1':
    return pixel_l1
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


def _bce(logits: jax.Array, label: float) -> jax.Array:
  logits = logits.astype(jnp.float32)
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, label)))


def _relative(real_logits: jax.Array, fake_logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Relativistic average logits: each image against the other batch's mean."""
  real_logits, fake_logits = real_logits.astype(jnp.float32), fake_logits.astype(jnp.float32)
  return real_logits - jnp.mean(fake_logits), fake_logits - jnp.mean(real_logits)


def generator_adversarial_loss(fake_logits: jax.Array, real_logits: jax.Array | None = None,
                               kind: str = 'standard') -> jax.Array:
  """G's adversarial loss. 'standard': -log D(G(LR)) (paper eq. 6), averaged over the
  batch, in the stable logits form. 'relativistic': ESRGAN's, which also needs D's
  logits of the real images (constants for G)."""
  if kind == 'standard':
    return _bce(fake_logits, 1.0)
  real, fake = _relative(jax.lax.stop_gradient(real_logits), fake_logits)
  return _bce(real, 0.0) + _bce(fake, 1.0)


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array,
                       kind: str = 'standard') -> jax.Array:
  """D's loss: 'standard' BCE with real HR labelled 1 and generated SR 0 (the paper);
  'relativistic': the same on relativistic average logits (ESRGAN)."""
  if kind == 'relativistic':
    real_logits, fake_logits = _relative(real_logits, fake_logits)
  return _bce(real_logits, 1.0) + _bce(fake_logits, 0.0)


def feature_matching(sr_features: list[jax.Array], hr_features: list[jax.Array]) -> jax.Array:
  """Mean over layers of the L1 distance between D's feature maps of SR and HR
  (pix2pixHD's feature matching; Perceptual Adversarial Networks): a content loss
  that needs no pretrained network. The HR features carry no gradient."""
  distances = [jnp.mean(jnp.abs(sr.astype(jnp.float32)
                                - jax.lax.stop_gradient(hr).astype(jnp.float32)))
               for sr, hr in zip(sr_features, hr_features, strict=True)]
  return sum(distances) / len(distances)
