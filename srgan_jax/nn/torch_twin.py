"""The SRGAN networks in PyTorch, equal to the Flax ones on the same weights.

Parameters are trees of tensors that mirror the Flax trees (same names, torch
layouts, `torch_tree`), and the networks are functions of them, so that Flax weights
copy over by one tree map: the generator (models.SRResNet, with its bicubic skip,
chroma from bicubic and tanh options), the discriminator (models.Discriminator) and
the VGG19 content features (vgg19.VGG19, 'caffe' preprocessing). Two users: the
benchmark's PyTorch train steps (benchmarking/torch_reference.py) and the PyTorch
export (inference/exports.py, through `generator_module`), whose file holds these
functions' aten operations, traced by ``torch.export``.

torch is imported inside the functions that use it, so this module loads without
torch installed.
"""

from collections.abc import Sequence
import functools
from typing import Any, Callable

import jax
import numpy as np

from srgan_jax.imaging import bicubic
from srgan_jax.nn import models
from srgan_jax.nn import vgg19


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
    # Contiguous: torch.tensor keeps a transposed array's strides, and torch.export
    # saves a strided weight with a warning.
    tensor = torch.tensor(np.ascontiguousarray(value), device=device)
    if tensor.ndim == 4 and channels_last:
      tensor = tensor.contiguous(memory_format=torch.channels_last)
    return tensor.requires_grad_(requires_grad)

  return jax.tree_util.tree_map_with_path(convert, tree)


def _torch_conv(x: Any, params: dict[str, Any], stride: int = 1) -> Any:
  """A conv with Flax's 'SAME' padding (for stride 2 on an even side: one pixel at
  the end only, where torch's symmetric padding would shift the sampling grid)."""
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top,invalid-name
  kernel = params['kernel'].shape[-1]
  if stride == 1 and kernel % 2:  # The same padding both sides, for any (symbolic) size.
    return F.conv2d(x, params['kernel'], params['bias'], padding=kernel // 2)
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


def _upscale_by_taps(x: Any, scale: int, dim: int) -> Any:
  """bicubic.imresize_jax by an integer ``scale`` along ``dim`` of any length >= 2, by
  the same sums: the mirrored image, filtered per phase (`bicubic.phase_weights`),
  phases interleaved. Slices, not a resize matrix, so torch.export keeps sizes
  symbolic."""
  import torch  # pylint: disable=g-import-not-at-top
  length = x.shape[dim]
  radius = bicubic.TAP_RADIUS
  # Symmetric padding (edge pixel repeated), as MATLAB's: [1, 0 | x | n-1, n-2]. By
  # single rows: a flipped slice would make torch.export guard the length (!= 2) on
  # whether the slice is contiguous.
  before = [x.select(dim, i) for i in range(radius - 1, -1, -1)]
  after = [x.select(dim, -1 - i) for i in range(radius)]
  padded = torch.cat([torch.stack(before, dim), x, torch.stack(after, dim)], dim)
  shifted = [padded.narrow(dim, t, length) for t in range(2 * radius + 1)]
  phases = [sum(float(w) * s for w, s in zip(weights, shifted))
            for weights in bicubic.phase_weights(scale)]
  interleaved = torch.stack(phases, dim + 1)  # [..., n, scale, ...]
  return interleaved.flatten(dim, dim + 1)


def bicubic_upscale(x: Any, scale: int) -> Any:
  """MATLAB's bicubic ``imresize`` of NCHW ``x`` by an integer ``scale`` (height, then
  width, as bicubic.imresize_jax)."""
  return _upscale_by_taps(_upscale_by_taps(x, scale, 2), scale, 3)


def replace_chroma(image: Any, chroma_source: Any) -> Any:
  """models.replace_chroma of NCHW RGB: ``image``'s luma, ``chroma_source``'s chroma."""
  import torch  # pylint: disable=g-import-not-at-top
  correction = torch.tensor(np.asarray(models.chroma_correction()), device=image.device)
  return image + torch.einsum('dc,nchw->ndhw', correction, chroma_source - image)


def torch_generator(params: dict[str, Any], stats: dict[str, Any], lr: Any, *, train: bool,
                    output_activation: str = 'none', bicubic_skip: bool = False,
                    chroma_from_bicubic: bool = False) -> Any:
  """models.SRResNet: LR NCHW in [0, 1] -> SR NCHW float32 in [-1, 1]; updates
  ``stats`` in place when training. Blocks, stages and BatchNorm follow ``params``;
  the options are SRResNet's fields of the same names (`generator_function`)."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top,invalid-name

  def norm(x, name, p, s):  # Absent when the generator has batch_norm off.
    return _torch_batch_norm(x, p[name], s[name], train) if name in p else x

  x = F.prelu(_torch_conv(lr, params['head_conv']), params['head_prelu']['negative_slope'])
  head = x
  for i in range(sum(name.startswith('block') for name in params)):
    p, s = params[f'block{i}'], stats.get(f'block{i}', {})
    y = norm(_torch_conv(x, p['conv1']), 'bn1', p, s)
    y = F.prelu(y, p['prelu']['negative_slope'])
    x = x + norm(_torch_conv(y, p['conv2']), 'bn2', p, s)
  x = norm(_torch_conv(x, params['body_conv']), 'body_bn', params, stats) + head
  stages = sum(name.startswith('up') and name.endswith('_conv') for name in params)
  for i in range(stages):
    x = F.pixel_shuffle(_torch_conv(x, params[f'up{i}_conv']), 2)
    x = F.prelu(x, params[f'up{i}_prelu']['negative_slope'])
  x = _torch_conv(x, params['tail_conv'])
  if bicubic_skip or chroma_from_bicubic:  # [0, 1] -> [-1, 1] like the output.
    upsampled = 2 * bicubic_upscale(lr.float(), 2 ** stages) - 1
  if bicubic_skip:  # In float32, as models.SRResNet.
    x = x.float() + upsampled
  if output_activation == 'tanh':
    x = torch.tanh(x)
  if chroma_from_bicubic:  # Last, so that the chroma is exactly bicubic's.
    x = replace_chroma(x.float(), upsampled)
  return x.float()


def generator_function(model: models.SRResNet) -> Callable[..., Any]:
  """`torch_generator` with ``model``'s options: (params, stats, lr, *, train) -> SR.

  The one place that reads an SRResNet's fields for PyTorch; those the weights
  already say (blocks, widths, scale, batch_norm) or that only initialize (icnr)
  need nothing, the compute dtype is the caller's (torch.autocast).
  """
  return functools.partial(torch_generator, output_activation=model.output_activation,
                           bicubic_skip=model.bicubic_skip,
                           chroma_from_bicubic=model.chroma_from_bicubic)


def generator_module(model: models.SRResNet, variables: Any) -> Any:
  """A ``torch.nn.Module`` (eval mode) equal to ``model.apply(variables, lr)``: LR NCHW
  in [0, 1] -> SR NCHW in [-1, 1]. The weights are its buffers, named as in the Flax
  trees (``params.head_conv.kernel``, ``batch_stats.block0.bn1.mean``), in torch layouts.
  """
  import torch  # pylint: disable=g-import-not-at-top
  forward = generator_function(model)
  tree = functools.partial(torch_tree, device='cpu', channels_last=False, requires_grad=False)

  def holder(branch: dict[str, Any]) -> torch.nn.Module:
    module = torch.nn.Module()
    for name, value in branch.items():
      if isinstance(value, dict):
        module.add_module(name, holder(value))
      else:
        module.register_buffer(name, value)
    return module

  def branch(module: torch.nn.Module) -> dict[str, Any]:
    return {**dict(module.named_buffers(recurse=False)),
            **{name: branch(child) for name, child in module.named_children()}}

  class Generator(torch.nn.Module):
    """models.SRResNet's inference in PyTorch."""

    def __init__(self):
      super().__init__()
      self.params = holder(tree(dict(variables['params'])))
      self.batch_stats = holder(tree(dict(variables.get('batch_stats', {}))))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
      return forward(branch(self.params), branch(self.batch_stats), lr, train=False)

  return Generator().eval()


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
