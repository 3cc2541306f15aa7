"""The SRGAN networks (Ledig et al., CVPR 2017): SRResNet generator and discriminator.

Flax Linen, NHWC. Every width, kernel size and stride below is the paper's (Fig. 4);
the configurable ones default to the paper's values. This module must not import
tensorflow: benchmark and inference machines may not have it.

Mixed precision: ``dtype`` is the compute dtype (e.g. bfloat16); parameters are
always float32 and BatchNorm statistics are reduced in float32.

The convolutions are ``Conv``: Flax's, with conv.conv_general_dilated, whose weight
gradient is a matrix product on CPUs (XLA's is slow there) and XLA's own elsewhere.
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections

from srgan_jax.imaging import bicubic
from srgan_jax.nn import conv as conv_lib

# He et al. (2015) initialize PReLU slopes at 0.25; the paper uses their PReLU.
PRELU_INIT = 0.25
# BatchNorm momentum and epsilon of the paper's era (TF/Keras defaults).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# Same parameters and values as nn.Conv; only the weight gradient's computation differs.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_lib.conv_general_dilated)


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
  """Sub-pixel convolution rearrangement (Shi et al. 2016), NHWC.

  Channel order is that of ``tf.nn.depth_to_space`` (DCR):
  ``out[n, h*r + i, w*r + j, c] = x[n, h, w, (i*r + j)*C + c]``, with ``C`` the
  output channels. (PyTorch's ``nn.PixelShuffle`` uses ``c*r*r + i*r + j`` instead;
  weights imported from PyTorch must have their output channels permuted.)
  """
  n, h, w, channels = x.shape
  out_channels = channels // (factor * factor)
  x = x.reshape(n, h, w, factor, factor, out_channels)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h * factor, w * factor, out_channels)


def icnr(base_init: Callable[..., jax.Array], factor: int) -> Callable[..., jax.Array]:
  """ICNR initialization (Aitken et al. 2017) of a conv followed by ``pixel_shuffle``.

  The kernel's ``factor**2`` groups of output channels (one per sub-pixel position,
  in ``pixel_shuffle``'s order) start as copies of one ``base_init`` kernel, so the
  shuffled output starts as a nearest-neighbour upsampling of one convolution: free
  of the checkerboard pattern that independent sub-pixel kernels start with. The
  copies have the base kernel's fan-in, hence its variance.
  """
  def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    groups = factor * factor
    if shape[-1] % groups:
      raise ValueError(f'ICNR needs output channels divisible by {groups}, got {shape}')
    base = base_init(key, (*shape[:-1], shape[-1] // groups), dtype)
    # Channel (i * r + j) * C + c is sub-pixel (i, j) of output channel c.
    return jnp.tile(base, (1,) * (len(shape) - 1) + (groups,))
  return init


def _norm(batch_norm: bool, train: bool, dtype: Any, name: str) -> Callable[[jax.Array], jax.Array]:
  """The paper's BatchNorm, or the identity when ``batch_norm`` is off."""
  if not batch_norm:
    return lambda x: x
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                      epsilon=BN_EPSILON, dtype=dtype, name=name)


class ResidualBlock(nn.Module):
  """conv3x3 - BN - PReLU - conv3x3 - BN, plus the identity skip (no BN if off)."""
  features: int
  batch_norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = lambda name: Conv(self.features, (3, 3), dtype=self.dtype, name=name)
    norm = lambda name: _norm(self.batch_norm, train, self.dtype, name)
    y = conv('conv1')(x)
    y = norm('bn1')(y)
    y = nn.PReLU(negative_slope_init=PRELU_INIT, name='prelu')(y)
    y = conv('conv2')(y)
    y = norm('bn2')(y)
    return x + y


class SRResNet(nn.Module):
  """The SRGAN generator. Input: LR RGB in [0, 1]; output: SR RGB in [-1, 1].

  With 16 blocks and 64 features (the paper) it has 1,549,462 parameters.
  """
  num_blocks: int = 16  # B in the paper.
  features: int = 64
  scale: int = 4  # 2, 4 or 8: one conv + pixel shuffle x2 stage per factor 2.
  upsample_features: int = 256  # conv width before each pixel shuffle.
  output_activation: str = 'none'  # 'none' (the paper) or 'tanh'.
  # Off the paper: False drops every BatchNorm (as EDSR does); the output then
  # no longer depends on statistics that differ between training crops and whole
  # images.
  batch_norm: bool = True
  # Off the paper: ICNR initialization of the convs before each pixel shuffle.
  icnr: bool = False
  # Off the paper: add the input's bicubic upsampling (MATLAB's, as the LR images
  # are made) to the output, so the network learns only what bicubic misses (the
  # global residual of VDSR, Kim et al. 2016). Training starts at bicubic quality
  # and the output's mean is anchored to the input's.
  bicubic_skip: bool = False
  # Off the paper: the output keeps the network's luma (BT.601 Y) and takes its chroma
  # (Cb, Cr) from the input's bicubic upsampling, as SRCNN and most PSNR-era SR
  # networks did by working on Y alone. The eye resolves colour far more coarsely
  # than brightness (hence JPEG's 4:2:0), so little is lost; what is gained is that a
  # generator trained against a discriminator cannot add colour noise.
  chroma_from_bicubic: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.scale not in (2, 4, 8):
      raise ValueError(f'scale must be 2, 4 or 8, got {self.scale}')
    if self.output_activation not in ('none', 'tanh'):
      raise ValueError(f'output_activation must be none or tanh, got {self.output_activation!r}')
    lr = x.astype(jnp.float32)
    x = x.astype(self.dtype)
    x = Conv(self.features, (9, 9), dtype=self.dtype, name='head_conv')(x)
    head = nn.PReLU(negative_slope_init=PRELU_INIT, name='head_prelu')(x)
    x = head
    for i in range(self.num_blocks):
      x = ResidualBlock(self.features, self.batch_norm, dtype=self.dtype,
                        name=f'block{i}')(x, train)
    x = Conv(self.features, (3, 3), dtype=self.dtype, name='body_conv')(x)
    x = _norm(self.batch_norm, train, self.dtype, 'body_bn')(x)
    x = x + head  # The long skip connection.
    up_init = nn.linear.default_kernel_init
    if self.icnr:
      up_init = icnr(up_init, 2)
    for i in range(self.scale.bit_length() - 1):  # log2(scale) x2 stages.
      x = Conv(self.upsample_features, (3, 3), kernel_init=up_init, dtype=self.dtype,
               name=f'up{i}_conv')(x)
      x = pixel_shuffle(x, 2)
      x = nn.PReLU(negative_slope_init=PRELU_INIT, name=f'up{i}_prelu')(x)
    x = Conv(3, (9, 9), dtype=self.dtype, name='tail_conv')(x)
    if self.bicubic_skip or self.chroma_from_bicubic:  # [0, 1] -> [-1, 1] like the output.
      upsampled = 2 * bicubic.imresize_jax(lr, self.scale) - 1
    if self.bicubic_skip:  # In float32.
      x = x.astype(jnp.float32) + upsampled
    if self.output_activation == 'tanh':
      x = jnp.tanh(x)
    if self.chroma_from_bicubic:  # Last, so that the chroma is exactly bicubic's.
      x = replace_chroma(x.astype(jnp.float32), upsampled)
    return x.astype(jnp.float32)


# The paper's discriminator: (channels, stride) of its eight 3x3 convolutions.
DISCRIMINATOR_CONVS = ((64, 1), (64, 2), (128, 1), (128, 2),
                       (256, 1), (256, 2), (512, 1), (512, 2))


class Discriminator(nn.Module):
  """The SRGAN discriminator. Input: HR or SR RGB in [-1, 1]; output: one logit per image.

  The sigmoid of the paper is left to the loss (``optax.sigmoid_binary_cross_entropy``),
  which is the numerically stable form. Any input side that is a multiple of 16 works;
  the Dense layer's size follows from it (96x96 in the paper: 6x6x512 features).
  """
  convs: tuple[tuple[int, int], ...] = DISCRIMINATOR_CONVS
  dense_features: int = 1024
  negative_slope: float = 0.2  # LeakyReLU alpha.
  # Off the paper when True: D sees the mean of R, G and B only. Its gradient then
  # changes the three channels of G's output equally, so the adversarial loss can
  # add detail but no colour noise; colour is left to the content loss.
  gray_input: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = x.astype(self.dtype)
    if self.gray_input:
      x = jnp.mean(x, axis=-1, keepdims=True)
    for i, (features, stride) in enumerate(self.convs):
      x = Conv(features, (3, 3), strides=(stride, stride), dtype=self.dtype,
               name=f'conv{i}')(x)
      if i > 0:  # The paper has no BN after the first convolution.
        x = _norm(True, train, self.dtype, f'bn{i}')(x)
      x = nn.leaky_relu(x, self.negative_slope)
      # Each block's output, for feature matching (apply with mutable=['intermediates']).
      self.sow('intermediates', f'features{i}', x)
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.dense_features, dtype=self.dtype, name='dense1')(x)
    x = nn.leaky_relu(x, self.negative_slope)
    x = nn.Dense(1, dtype=self.dtype, name='dense2')(x)
    return x[:, 0].astype(jnp.float32)


# The variable collection of the spectral normalisation's power-iteration state (the
# ``u`` vector and ``sigma`` of each normalised kernel). Its own collection, not
# 'batch_stats': D's real and fake passes of one step both start from the stored
# ``u``, so both see the same normalised weights and ``u`` advances once a step.
SPECTRAL = 'spectral'


def _upsample2(x: jax.Array) -> jax.Array:
  """x2 bilinear upsampling with half-pixel centres and clamped edges (PyTorch's
  interpolate(mode='bilinear', align_corners=False), as Real-ESRGAN's U-Net uses)."""
  n, h, w, c = x.shape
  return jax.image.resize(x, (n, 2 * h, 2 * w, c), 'bilinear')


class UNetDiscriminator(nn.Module):
  """Real-ESRGAN's U-Net discriminator with spectral normalisation (Wang et al.,
  ICCVW 2021, after Schonfeld et al. 2020), off the paper: one logit per pixel.

  Input: HR or SR RGB in [-1, 1], sides a multiple of 8; output: logits
  ``[n, h, w, 1]``, so D tells the generator where an image looks fake, not only
  whether (the paper's D gives one logit per crop). conv0 (3x3) and three 4x4
  stride-2 convs down (``features`` x 2, 4, 8), three 3x3 convs up after each x2
  bilinear upsampling, each added to the encoder map of its size, then two 3x3
  convs and a 3x3 conv to one channel. Every conv but the first and the last is
  spectrally normalised (Miyato et al. 2018), by one power iteration per call whose
  ``u`` vectors live in the ``SPECTRAL`` collection (apply with it mutable while
  training); those convs have no bias, as in Real-ESRGAN.
  """
  features: int = 64  # Real-ESRGAN's num_feat.
  negative_slope: float = 0.2  # LeakyReLU alpha.
  gray_input: bool = False  # As Discriminator.gray_input.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if x.shape[1] % 8 or x.shape[2] % 8:
      raise ValueError(f'the U-Net discriminator halves its input three times: sides must '
                       f'be multiples of 8, got {x.shape[1:3]}')
    act = lambda y: nn.leaky_relu(y, self.negative_slope)

    def sow(i, y):  # Features in layer order, for feature matching (mutable=['intermediates']).
      self.sow('intermediates', f'features{i}', y)
      return y

    def conv(features, kernel, stride, name):  # A spectrally normalised conv, no bias.
      layer = Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((1, 1), (1, 1)) if kernel == 4 else 'SAME', use_bias=False,
                   dtype=self.dtype, name=name)
      return lambda y: nn.SpectralNorm(layer, collection_name=SPECTRAL, name=f'{name}_sn')(
          y, update_stats=train)

    x = x.astype(self.dtype)
    if self.gray_input:
      x = jnp.mean(x, axis=-1, keepdims=True)
    width = self.features
    x0 = sow(0, act(Conv(width, (3, 3), dtype=self.dtype, name='conv0')(x)))
    x1 = sow(1, act(conv(2 * width, 4, 2, 'conv1')(x0)))
    x2 = sow(2, act(conv(4 * width, 4, 2, 'conv2')(x1)))
    x3 = sow(3, act(conv(8 * width, 4, 2, 'conv3')(x2)))
    x4 = sow(4, act(conv(4 * width, 3, 1, 'conv4')(_upsample2(x3))) + x2)
    x5 = sow(5, act(conv(2 * width, 3, 1, 'conv5')(_upsample2(x4))) + x1)
    x6 = sow(6, act(conv(width, 3, 1, 'conv6')(_upsample2(x5))) + x0)
    y = sow(7, act(conv(width, 3, 1, 'conv7')(x6)))
    y = sow(8, act(conv(width, 3, 1, 'conv8')(y)))
    y = Conv(1, (3, 3), dtype=self.dtype, name='conv9')(y)
    return y.astype(jnp.float32)


# BT.601 RGB -> YCbCr (without offsets: only differences are converted below).
_YCBCR_601 = ((0.299, 0.587, 0.114),
              (-0.168736, -0.331264, 0.5),
              (0.5, -0.418688, -0.081312))


def chroma_correction() -> jax.Array:
  """The float32 ``[3, 3]`` RGB -> RGB map of `replace_chroma`: RGB(0, Cb, Cr) of an RGB
  difference. A constant, computed while tracing: exporters (jax2onnx) lack the
  in-graph inverse's linear solve; the PyTorch twin (nn/torch_twin.py) takes it too."""
  with jax.ensure_compile_time_eval():
    to_ycbcr = jnp.asarray(_YCBCR_601, jnp.float32)
    chroma_only = to_ycbcr.at[0].set(0.0)  # Y difference dropped: the luma stays.
    return jnp.linalg.inv(to_ycbcr) @ chroma_only


def replace_chroma(image: jax.Array, chroma_source: jax.Array) -> jax.Array:
  """``image`` with its BT.601 luma kept and its chroma taken from ``chroma_source``.

  Both are RGB (``[..., 3]``, any common offset and scale). The conversion is linear,
  so the result is image + RGB(0, Cb_source - Cb_image, Cr_source - Cr_image).
  """
  return image + (chroma_source - image) @ chroma_correction().T


# Generator options that change what the output is made of but no parameter's
# meaning: a generator may start from weights trained without them (the init_from fields).
OUTPUT_ONLY_OPTIONS = ('chroma_from_bicubic',)


def weight_layout(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What a run's generator weights mean: its scale and generator fields, less
  OUTPUT_ONLY_OPTIONS. Two configs with equal layouts can share weights."""
  fields = {key: value for key, value in config.generator.to_dict().items()
            if key not in OUTPUT_ONLY_OPTIONS}
  return {'scale': config.scale, **fields}


def generator_from_config(config: ml_collections.ConfigDict,
                          dtype: Any = jnp.float32) -> SRResNet:
  """The generator of a run config (``scale`` and the ``generator`` fields), computing
  in ``dtype``: training uses the config's dtype, evaluation and inference float32."""
  return SRResNet(scale=config.scale, dtype=dtype, **config.generator)


DISCRIMINATOR_ARCHS = ('srgan', 'unet')  # discriminator.arch: the paper's, Real-ESRGAN's.
# The discriminator fields each architecture's weights depend on (besides arch).
_DISCRIMINATOR_FIELDS = {
    'srgan': ('convs', 'dense_features', 'negative_slope', 'gray_input'),
    'unet': ('unet_features', 'negative_slope', 'gray_input'),
}


def discriminator_layout(discriminator: Any) -> dict[str, Any]:
  """What a run's discriminator weights mean: its arch and the fields that arch
  uses (a mapping: the config's ``discriminator``, or a checkpoint's record of it;
  records from before ``arch`` existed are 'srgan')."""
  arch = discriminator.get('arch', 'srgan')
  return {'arch': arch, **{field: discriminator.get(field)
                           for field in _DISCRIMINATOR_FIELDS[arch]}}


def discriminator_from_config(config: ml_collections.ConfigDict,
                              dtype: Any = jnp.float32) -> nn.Module:
  """The discriminator of a run config (``discriminator.arch`` and the fields it
  uses), computing in ``dtype``."""
  options = config.discriminator
  if options.arch == 'unet':
    return UNetDiscriminator(features=options.unet_features,
                             negative_slope=options.negative_slope,
                             gray_input=options.gray_input, dtype=dtype)
  return Discriminator(convs=tuple(tuple(conv) for conv in options.convs),  # Hashable.
                       dense_features=options.dense_features,
                       negative_slope=options.negative_slope,
                       gray_input=options.gray_input, dtype=dtype)


def generator_receptive_radius(num_blocks: int, scale: int) -> int:
  """How many LR pixels beyond a tile's edge can influence its SR output.

  Head 9x9 (4) + 2 x 3x3 per block (2 each) + body 3x3 (1) + one 3x3 per upsampling
  stage, measured at that stage's resolution (1 / 2^k LR px, rounded up) + tail 9x9
  at SR resolution (4 / scale LR px, rounded up). Tiled inference that overlaps tiles
  by at least this many LR pixels equals whole-image inference.
  """
  stages = scale.bit_length() - 1
  return 4 + 2 * num_blocks + 1 + stages + -(-4 // scale)


def count_params(params: Any) -> int:
  """Number of scalars in a parameter tree."""
  return sum(p.size for p in jax.tree_util.tree_leaves(params))


def weights_problem(config: ml_collections.ConfigDict, variables: Any) -> str | None:
  """Why ``variables`` are not weights of the generator of ``config`` (a run record or
  model card whose config was edited after the weights were saved), else None.

  Compares the parameters' names and shapes with those the config's generator
  creates (traced by ``jax.eval_shape``, nothing computed): applying it would raise
  Flax's ScopeParamShapeError deep inside the first call otherwise.
  """
  try:
    model = generator_from_config(config)
    expected = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                              jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32))['params']
  except Exception as error:  # pylint: disable=broad-except  # Any edit; said in the message.
    return f'its config builds no generator ({type(error).__name__}: {error})'
  shapes = lambda tree: {'/'.join(map(str, path)): tuple(leaf.shape) for path, leaf in
                         flax.traverse_util.flatten_dict(dict(tree)).items()}
  want, have = shapes(expected), shapes((variables or {}).get('params', {}))
  differences = [f'{name}: config {want.get(name, "absent")}, weights {have.get(name, "absent")}'
                 for name in sorted(set(want) | set(have)) if want.get(name) != have.get(name)]
  if not differences:
    return None
  more = f' and {len(differences) - 2} more' if len(differences) > 2 else ''
  return (f'its config (generator {config.generator.to_dict()}, scale {config.scale}) does '
          f'not fit its weights ({"; ".join(differences[:2])}{more})')
