"""An equivalent PyTorch implementation of the train steps, for the benchmark.

``python -m srgan_jax.benchmark --compare=torch`` times it against the JAX steps,
started from the same weights: the SRResNet and SRGAN steps of training/steps.py,
whose losses equal the JAX ones (tests/unit/benchmarking/torch_reference_test.py),
over the PyTorch twins of the networks (nn/torch_twin.py, which the PyTorch export
uses too). torch is imported inside the functions that use it, so this module (and
the benchmark, which imports it) loads without torch installed.
"""

import functools
from typing import Any

import jax
import ml_collections
import numpy as np

from srgan_jax.nn import losses
from srgan_jax.nn import models
from srgan_jax.nn import torch_twin
from srgan_jax.nn import vgg19
from srgan_jax.training import steps as train_steps


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
    tree = functools.partial(torch_twin.torch_tree, device=device, channels_last=channels_last)
    self.g_params = tree(generator['params'], requires_grad=True)
    self.g_stats = tree(generator['batch_stats'], requires_grad=False)
    learning_rate = (config.srresnet.learning_rate if phase == train_steps.SRRESNET
                     else config.srgan.learning_rate)
    adam = functools.partial(torch.optim.Adam, lr=learning_rate, eps=1e-8, fused=True,
                             betas=(config.adam_b1, config.adam_b2))
    self.g_optimizer = adam(jax.tree_util.tree_leaves(self.g_params))
    maybe_compile = torch.compile if compile_networks else lambda fn: fn
    self._generator = maybe_compile(torch_twin.generator_function(
        models.generator_from_config(config)))
    if discriminator is not None:
      self.d_params = tree(discriminator['params'], requires_grad=True)
      self.d_stats = tree(discriminator['batch_stats'], requires_grad=False)
      self.d_optimizer = adam(jax.tree_util.tree_leaves(self.d_params))
      self._discriminator = maybe_compile(functools.partial(
          torch_twin.torch_discriminator,
          strides=[stride for _, stride in config.discriminator.convs],
          negative_slope=config.discriminator.negative_slope))
    if vgg_params is not None:
      self.vgg_params = tree(vgg_params, requires_grad=False)
      self._bgr_mean = torch.tensor(vgg19.CAFFE_BGR_MEAN, device=device).view(1, 3, 1, 1)
      self._vgg = maybe_compile(functools.partial(
          torch_twin.torch_vgg_features,
          layer=losses.VGG_CONTENT_LAYERS[config.srgan.content_loss]))
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
