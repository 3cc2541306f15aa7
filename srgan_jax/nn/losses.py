"""SRGAN losses (paper Sec. 2.2): content losses and the adversarial losses, and
(off the paper) LDL's artifact-weighted pixel loss.

All losses are computed in float32 whatever the compute dtype. Images are in [-1, 1].
The adversarial losses take D's logits of any shape (one per image from the paper's
D, one per pixel from the U-Net D) and average over all of them.
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
  """Relativistic average logits: each logit against the other batch's mean (over its
  images, and their pixels for a per-pixel D)."""
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


# LDL (Liang, Zeng, Zhang, CVPR 2022, "Details or Artifacts"): the side of the window
# of the residual's local variance, and the power of the patch's residual variance.
LDL_WINDOW = 7
LDL_PATCH_POWER = 1 / 5


def _channel_l1(a: jax.Array, b: jax.Array) -> jax.Array:
  """sum over channels of |a - b|, in [0, 1] units for images in [-1, 1]: [n, h, w, 1]."""
  difference = (a.astype(jnp.float32) - b.astype(jnp.float32)) / 2
  return jnp.sum(jnp.abs(difference), axis=-1, keepdims=True)


def local_variance(x: jax.Array, window: int = LDL_WINDOW) -> jax.Array:
  """Each pixel's unbiased variance over the ``window`` x ``window`` square around it
  (edges reflected, without repeating the edge pixel): ``x`` [n, h, w, 1] -> same shape."""
  pad = window // 2
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')
  h, w = x.shape[1:3]
  # Every offset of the window as a channel: a two-pass variance, exact in float32
  # where E[x^2] - E[x]^2 would cancel on small residuals.
  shifted = jnp.concatenate([padded[:, i:i + h, j:j + w] for i in range(window)
                             for j in range(window)], axis=-1)
  return jnp.var(shifted, axis=-1, ddof=1, keepdims=True)


def artifact_map(sr: jax.Array, hr: jax.Array, sr_ema: jax.Array) -> jax.Array:
  """LDL's refined artifact map ``[n, h, w, 1]``: where the generator invents detail.

  The residual ``r = sum_c |HR - SR|`` (in [0, 1] units, as the paper's images) is
  noise-like where SR paints texture that HR lacks, smooth where SR follows HR (or
  both are flat); its local variance (``LDL_WINDOW`` squared) marks the first. That is
  scaled by the patch's whole residual variance to the power ``LDL_PATCH_POWER``
  (crops that are wrong everywhere weigh more), and zeroed wherever the generator's
  EMA (``sr_ema``, a steadier model) is worse than the current one: there the detail
  is taken for real detail still being learned, not an artifact.
  """
  residual = _channel_l1(sr, hr)
  patch = jnp.var(residual, axis=(1, 2, 3), ddof=1, keepdims=True) ** LDL_PATCH_POWER
  weights = patch * local_variance(residual)
  return jnp.where(residual < _channel_l1(sr_ema, hr), 0.0, weights)


def ldl_loss(sr: jax.Array, hr: jax.Array, sr_ema: jax.Array) -> jax.Array:
  """LDL's artifact loss: the mean of ``artifact_map`` x |SR - HR| over pixels and
  channels, in [0, 1] units (so the paper's weight 1 means what it means there).

  The map is a constant for G (the authors' code lets the gradient through it too;
  the 1/5 power's derivative is infinite where a patch's residual is constant).
  """
  weights = jax.lax.stop_gradient(artifact_map(sr, hr, sr_ema))
  difference = (sr.astype(jnp.float32) - hr.astype(jnp.float32)) / 2
  return jnp.mean(weights * jnp.abs(difference))
