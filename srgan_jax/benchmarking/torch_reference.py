"""An equivalent PyTorch implementation of the networks and train steps, for the benchmark.

``python -m srgan_jax.benchmark --compare=torch`` times it against the JAX steps,
started from the same weights: the SRResNet (models.SRResNet), the discriminator
(models.Discriminator), the VGG19 content features (vgg19.VGG19, 'caffe'
preprocessing) and the SRResNet and SRGAN steps of training/steps.py, whose losses equal the
JAX ones (tests/unit/benchmarking/torch_reference_test.py).

Parameters are trees of tensors that mirror the Flax trees (same names, torch
layouts), and the networks are functions of them, so that Flax weights copy over by
one tree map. torch is imported inside the functions that use it, so this module
(and the benchmark, which imports it) loads without torch installed.
"""

from collections.abc import Sequence
import functools
from typing import Any

import jax
import ml_collections
import numpy as np

from srgan_jax.nn import losses
from srgan_jax.nn import models
from srgan_jax.nn import vgg19
from srgan_jax.training import steps as train_steps


def _crd_channel_order(channels: int, factor: int = 2) -> np.ndarray:
  """Flax output channel of each torch channel of a conv before a pixel shuffle.

  models.pixel_shuffle reads channel (i*r + j)*C + c for sub-pixel (i, j) of output
  channel c (TF depth_to_space); torch's pixel_shuffle reads c*r*r + i*r + j.
  """
  out_channel, sub_pixel = np.divmod(np.arange(channels), factor * factor)
  return sub_pixel * (channels // (factor * factor)) + out_channel


def torch_tree(tree: Any, *, device: str, channels_last: bool, requires_grad: bool) -> Any:
  """A Flax parameter or BatchNorm-statistics tree as torch tensors in torch layouts.

  Conv kernels HWIO -> OIHW, Dense kernels (in, out) -> (out, in), PReLU slopes of
  shape () -> (1,); the rest as is. The generator's upsampling convs get their output
  channels reordered for torch's pixel shuffle (see _crd_channel_order).
  """
  import torch  # pylint: disable=g-import-not-at-top

  def convert(path, leaf):
    names = [entry.key for entry in path]
    value = np.asarray(leaf, np.float32)
    if names[0].startswith('up') and names[0].endswith('_conv'):
      value = value[..., _crd_channel_order(value.shape[-1])]
    if names[-1] == 'kernel':
      value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
    elif names[-1] == 'negative_slope':
      value = value.reshape(1)
    tensor = torch.tensor(value, device=device)
    if tensor.ndim == 4 and channels_last:
      tensor = tensor.contiguous(memory_format=torch.channels_last)
    return tensor.requires_grad_(requires_grad)

  return jax.tree_util.tree_map_with_path(convert, tree)


def _torch_conv(x: Any, params: dict[str, Any], stride: int = 1) -> Any:
  """A conv with Flax's 'SAME' padding (for stride 2 on an even side: one pixel at
  the end only, where torch's symmetric padding would shift the sampling grid)."""
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top,invalid-name
  kernel = params['kernel'].shape[-1]
  size = x.shape[-1]
  total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
  low, high = total // 2, total - total // 2
  if low != high:
    x = F.pad(x, (low, high, low, high))
    low = 0
  return F.conv2d(x, params['kernel'], params['bias'], stride=stride, padding=low)


def _torch_batch_norm(x: Any, params: dict[str, Any], stats: dict[str, Any] | None,
                      train: bool) -> Any:
  """Flax BatchNorm (momentum 0.9 = torch 0.1, eps 1e-5). With ``stats`` None, a
  training pass whose statistic updates are discarded, as in the SRGAN G loss.

  (torch updates the running variance with the unbiased batch variance, Flax with
  the biased one; this changes only the running statistics, never a training loss.)
  """
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top,invalid-name
  stats = stats or {'mean': None, 'var': None}
  return F.batch_norm(x, stats['mean'], stats['var'], params['scale'], params['bias'],
                      training=train, momentum=1 - models.BN_MOMENTUM, eps=models.BN_EPSILON)


def torch_generator(params: dict[str, Any], stats: dict[str, Any], lr: Any, *, train: bool,
                    output_activation: str = 'none') -> Any:
  """models.SRResNet: LR NCHW in [0, 1] -> SR NCHW float32; updates ``stats`` in place
  when training."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top,invalid-name
  x = F.prelu(_torch_conv(lr, params['head_conv']), params['head_prelu']['negative_slope'])
  head = x
  for i in range(sum(name.startswith('block') for name in params)):
    p, s = params[f'block{i}'], stats[f'block{i}']
    y = _torch_batch_norm(_torch_conv(x, p['conv1']), p['bn1'], s['bn1'], train)
    y = F.prelu(y, p['prelu']['negative_slope'])
    x = x + _torch_batch_norm(_torch_conv(y, p['conv2']), p['bn2'], s['bn2'], train)
  x = _torch_batch_norm(_torch_conv(x, params['body_conv']), params['body_bn'],
                        stats['body_bn'], train) + head
  for i in range(sum(name.startswith('up') and name.endswith('_conv') for name in params)):
    x = F.pixel_shuffle(_torch_conv(x, params[f'up{i}_conv']), 2)
    x = F.prelu(x, params[f'up{i}_prelu']['negative_slope'])
  x = _torch_conv(x, params['tail_conv'])
  if output_activation == 'tanh':
    x = torch.tanh(x)
  return x.float()


def torch_discriminator(params: dict[str, Any], stats: dict[str, Any] | None, images: Any, *,
                        strides: Sequence[int], negative_slope: float) -> Any:
  """models.Discriminator in training mode: images NCHW -> logits [n] float32.

  ``stats`` None discards the BatchNorm statistic updates.
  """
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top,invalid-name
  x = images
  for i, stride in enumerate(strides):
    x = _torch_conv(x, params[f'conv{i}'], stride)
    if i > 0:
      x = _torch_batch_norm(x, params[f'bn{i}'], stats and stats[f'bn{i}'], True)
    x = F.leaky_relu(x, negative_slope)
  x = x.permute(0, 2, 3, 1).flatten(1)  # NHWC order, that of the Flax Dense kernel.
  x = F.leaky_relu(F.linear(x, params['dense1']['kernel'], params['dense1']['bias']),
                   negative_slope)
  return F.linear(x, params['dense2']['kernel'], params['dense2']['bias'])[:, 0].float()


def torch_vgg_features(params: dict[str, Any], images: Any, bgr_mean: Any, layer: str) -> Any:
  """vgg19.VGG19 to ``relu{i}_{j}`` with 'caffe' preprocessing: images NCHW in [-1, 1],
  ``bgr_mean`` the tensor of vgg19.CAFFE_BGR_MEAN, shaped [1, 3, 1, 1]."""
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top,invalid-name
  x = (images.float().flip(1) + 1.0) * 127.5 - bgr_mean  # RGB [-1, 1] -> BGR 0..255 - mean.
  last = vgg19.CONV_NAMES.index('conv' + layer[len('relu'):])
  for name in vgg19.CONV_NAMES[:last + 1]:
    if name.endswith('_1') and name != 'conv1_1':
      x = F.max_pool2d(x, 2)
    x = F.relu(_torch_conv(x, params[name]))
  return x.float()


class TorchSRGAN:
  """The SRResNet and SRGAN train steps and generator inference in PyTorch.

  Same networks, losses, optimizer (Adam, optax's defaults) and order of updates as
  train_steps.srresnet_train_step and train_steps.srgan_train_step, from the same Flax weights;
  the JAX steps' metrics (gradient norms, D outputs) are left out. Images are NHWC
  numpy arrays, turned into NCHW tensors (channels_last: no copy).
  """

  def __init__(self, config: ml_collections.ConfigDict, phase: str,
               generator: dict[str, Any], discriminator: dict[str, Any] | None = None,
               vgg_params: Any = None, *, device: str = 'cpu', channels_last: bool = True,
               compile_networks: bool = False):
    import torch  # pylint: disable=g-import-not-at-top
    self._torch = torch
    self.device = device
    self.channels_last = channels_last
    self._autocast = functools.partial(torch.autocast, device_type=device,
                                       dtype=torch.bfloat16, enabled=config.dtype == 'bfloat16')
    tree = functools.partial(torch_tree, device=device, channels_last=channels_last)
    self.g_params = tree(generator['params'], requires_grad=True)
    self.g_stats = tree(generator['batch_stats'], requires_grad=False)
    learning_rate = (config.srresnet.learning_rate if phase == train_steps.SRRESNET
                     else config.srgan.learning_rate)
    adam = functools.partial(torch.optim.Adam, lr=learning_rate, eps=1e-8, fused=True,
                             betas=(config.adam_b1, config.adam_b2))
    self.g_optimizer = adam(jax.tree_util.tree_leaves(self.g_params))
    maybe_compile = torch.compile if compile_networks else lambda fn: fn
    self._generator = maybe_compile(functools.partial(
        torch_generator, output_activation=config.generator.output_activation))
    if discriminator is not None:
      self.d_params = tree(discriminator['params'], requires_grad=True)
      self.d_stats = tree(discriminator['batch_stats'], requires_grad=False)
      self.d_optimizer = adam(jax.tree_util.tree_leaves(self.d_params))
      self._discriminator = maybe_compile(functools.partial(
          torch_discriminator, strides=[stride for _, stride in config.discriminator.convs],
          negative_slope=config.discriminator.negative_slope))
    if vgg_params is not None:
      self.vgg_params = tree(vgg_params, requires_grad=False)
      self._bgr_mean = torch.tensor(vgg19.CAFFE_BGR_MEAN, device=device).view(1, 3, 1, 1)
      self._vgg = maybe_compile(functools.partial(
          torch_vgg_features, layer=losses.VGG_CONTENT_LAYERS[config.srgan.content_loss]))
    self.adversarial_weight = config.srgan.adversarial_weight
    self.vgg_feature_scale = config.srgan.vgg_feature_scale

  def images(self, nhwc: np.ndarray) -> Any:
    """A device tensor NCHW from NHWC numpy (channels_last memory, or contiguous)."""
    x = self._torch.from_numpy(np.ascontiguousarray(nhwc)).to(self.device).permute(0, 3, 1, 2)
    return x if self.channels_last else x.contiguous()

  def synchronize(self, _: Any = None) -> None:
    """Waits for queued device work (CUDA runs asynchronously; CPU does not)."""
    if self.device == 'cuda':
      self._torch.cuda.synchronize()

  def srresnet_step(self, lr: Any, hr: Any) -> Any:
    """One SRResNet update; returns the pixel MSE before it."""
    F = self._torch.nn.functional  # pylint: disable=invalid-name
    with self._autocast():
      sr = self._generator(self.g_params, self.g_stats, lr, train=True)
    loss = F.mse_loss(sr, hr.float())
    self.g_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    self.g_optimizer.step()
    return loss.detach()

  def _content_loss(self, sr: Any, hr: Any) -> Any:
    maps = self._vgg(self.vgg_params, self._torch.cat([sr, hr]), self._bgr_mean)
    maps = maps * self.vgg_feature_scale
    sr_maps, hr_maps = maps.chunk(2)
    return self._torch.nn.functional.mse_loss(sr_maps, hr_maps.detach())

  def srgan_step(self, lr: Any, hr: Any) -> dict[str, Any]:
    """One update of D then G (k = 1); returns the losses as the JAX step defines them."""
    F = self._torch.nn.functional  # pylint: disable=invalid-name
    bce = F.binary_cross_entropy_with_logits
    with self._autocast():
      sr = self._generator(self.g_params, self.g_stats, lr, train=True)
      # Real and fake batches pass separately, so each has its own BN statistics.
      real = self._discriminator(self.d_params, self.d_stats, hr)
      fake = self._discriminator(self.d_params, self.d_stats, sr.detach())
    d_loss = bce(real, self._torch.ones_like(real)) + bce(fake, self._torch.zeros_like(fake))
    self.d_optimizer.zero_grad(set_to_none=True)
    d_loss.backward()
    self.d_optimizer.step()
    with self._autocast():
      logits = self._discriminator(self.d_params, None, sr)  # The updated D.
      content = self._content_loss(sr, hr)
    adversarial = bce(logits, self._torch.ones_like(logits))
    g_loss = content + self.adversarial_weight * adversarial
    self.g_optimizer.zero_grad(set_to_none=True)
    # Only G's gradients: D's weight gradients of this pass are never computed.
    g_loss.backward(inputs=self.g_optimizer.param_groups[0]['params'])
    self.g_optimizer.step()
    return {'discriminator_loss': d_loss.detach(), 'content_loss': content.detach(),
            'adversarial_loss': adversarial.detach(), 'generator_loss': g_loss.detach()}

  def generate(self, lr: Any) -> Any:
    """Generator inference (running BatchNorm statistics), SR NCHW float32."""
    with self._torch.inference_mode(), self._autocast():
      return self._generator(self.g_params, self.g_stats, lr, train=False)


def torch_device() -> str:
  """Where the PyTorch comparison runs: the same kind of device as JAX."""
  backend = jax.default_backend()
  if backend not in ('cpu', 'gpu'):
    raise ValueError(f'--compare=torch needs JAX on CPU or GPU, not {backend}')
  return 'cuda' if backend == 'gpu' else 'cpu'
