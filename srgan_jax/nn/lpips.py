"""LPIPS (Zhang et al. 2018), the learned perceptual distance, in JAX; lower is closer.

(The ``import`` command is ``srgan_jax/lpips.py``.)

LPIPS v0.1 (the reference ``lpips`` package's default) compares two RGB images in
[-1, 1] through five ReLU layers of an ImageNet classifier: each feature map is
scaled to unit length along its channels, the squared difference is weighted per
channel by a learned linear layer, averaged over the map, and the five terms are
summed. Two backbones, as in the reference:

* ``alex`` (the default): torchvision's AlexNet ``features``, ReLUs 1..5;
* ``vgg``: torchvision's VGG16 ``features``, relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.

The input is first shifted and scaled per channel (the reference's ``ScalingLayer``).

Weights are converted once into a cached ``.npz`` file:

  python -m srgan_jax.lpips import --backbone=alexnet-owt-7be5be79.pth
  python -m srgan_jax.lpips import --net=vgg --backbone=vgg16-397923af.pth

``--backbone`` is a torchvision state dict of ``alexnet()`` / ``vgg16()``
(``features.{i}.weight/bias``; torchvision downloads them to
``~/.cache/torch/hub/checkpoints/``, from where they can be copied to an offline
machine). The linear layers are ``lpips/weights/v0.1/{alex,vgg}.pth`` of an installed
``lpips`` package (it ships them; the package itself is not imported), or
``--linear=PATH``. Both are read with ``torch.load(weights_only=True)``. The cache is
``$SRGAN_JAX_CACHE/lpips_{net}.npz`` when ``SRGAN_JAX_CACHE`` is set, else
``~/.cache/srgan_jax/lpips_{net}.npz`` (``paths.cache_dir``, as ``vgg19``'s); ``--output``
writes elsewhere. A missing or malformed file is an error that names the command.

This module does not import torch; the converter does when called.
"""

from collections.abc import Mapping
import functools
import importlib.util
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from srgan_jax.nn import weights_io
from srgan_jax.runtime import errors
from srgan_jax.runtime import paths

NETS = ('alex', 'vgg')
# The reference's ScalingLayer: (x - shift) / scale per RGB channel, x in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPSILON = 1e-10  # The reference's normalize_tensor.

# Per backbone, torchvision's ``features`` as (index, kind, arguments); 'conv' is
# (out channels, kernel, stride, padding), 'pool' a max pool (window, stride); every
# conv is followed by a ReLU. ``TAPS``: the indices of the ReLUs LPIPS reads.
LAYERS = {
    'alex': ((0, 'conv', (64, 11, 4, 2)), (2, 'pool', (3, 2)), (3, 'conv', (192, 5, 1, 2)),
             (5, 'pool', (3, 2)), (6, 'conv', (384, 3, 1, 1)), (8, 'conv', (256, 3, 1, 1)),
             (10, 'conv', (256, 3, 1, 1))),
    'vgg': ((0, 'conv', (64, 3, 1, 1)), (2, 'conv', (64, 3, 1, 1)), (4, 'pool', (2, 2)),
            (5, 'conv', (128, 3, 1, 1)), (7, 'conv', (128, 3, 1, 1)), (9, 'pool', (2, 2)),
            (10, 'conv', (256, 3, 1, 1)), (12, 'conv', (256, 3, 1, 1)),
            (14, 'conv', (256, 3, 1, 1)), (16, 'pool', (2, 2)), (17, 'conv', (512, 3, 1, 1)),
            (19, 'conv', (512, 3, 1, 1)), (21, 'conv', (512, 3, 1, 1)), (23, 'pool', (2, 2)),
            (24, 'conv', (512, 3, 1, 1)), (26, 'conv', (512, 3, 1, 1)),
            (28, 'conv', (512, 3, 1, 1))),
}
TAPS = {'alex': (1, 4, 7, 9, 11), 'vgg': (3, 8, 15, 22, 29)}


class LPIPSWeightsError(errors.UserError):
  """The converted LPIPS weights cannot be used; the message says how to make them."""


class LPIPSWeightsNotFoundError(LPIPSWeightsError, FileNotFoundError):
  """No converted LPIPS weights file at the expected path."""


class LPIPSWeightsInvalidError(LPIPSWeightsError, ValueError):
  """An LPIPS weights file (or tree) lacks layers or has wrong shapes."""


def _check_net(net: str) -> None:
  if net not in NETS:
    raise ValueError(f'net must be one of {NETS}, got {net!r}')


def param_shapes(net: str) -> dict[str, dict[str, tuple[int, ...]]]:
  """Shapes of the parameters: ``conv{i}`` kernel HWIO and bias (``i``: torchvision's
  index), ``lin{k}`` weight (channels of tap ``k``)."""
  _check_net(net)
  shapes, channels = {}, 3
  tap_channels = {}
  for index, kind, arguments in LAYERS[net]:
    if kind == 'conv':
      width, kernel = arguments[:2]
      shapes[f'conv{index}'] = {'kernel': (kernel, kernel, channels, width), 'bias': (width,)}
      channels = width
      tap_channels[index + 1] = width
  for k, tap in enumerate(TAPS[net]):
    shapes[f'lin{k}'] = {'weight': (tap_channels[tap],)}
  return shapes


def _backbone(params: Mapping[str, Any], x: jax.Array, net: str) -> list[jax.Array]:
  """The ReLU feature maps LPIPS reads, NHWC float32."""
  taps = []
  highest = jax.lax.Precision.HIGHEST  # No bf16/tf32 passes: LPIPS differences are small.
  for index, kind, arguments in LAYERS[net]:
    if kind == 'conv':
      _, _, stride, padding = arguments
      layer = params[f'conv{index}']
      x = jax.lax.conv_general_dilated(
          x, jnp.asarray(layer['kernel'], jnp.float32), (stride, stride),
          ((padding, padding), (padding, padding)),
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=highest)
      x = jax.nn.relu(x + jnp.asarray(layer['bias'], jnp.float32))
      if index + 1 in TAPS[net]:
        taps.append(x)
    else:
      window, stride = arguments  # torchvision: no padding, floor of the size.
      x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1),
                                (1, stride, stride, 1), 'VALID')
  return taps


@functools.partial(jax.jit, static_argnames='net')
def distance(params: Mapping[str, Any], x: jax.Array, y: jax.Array,
             net: str = 'alex') -> jax.Array:
  """LPIPS ``[B]`` between RGB images ``[B, H, W, 3]`` in [-1, 1] (H, W >= 32 for vgg).

  ``params`` is the tree of ``load_params(net)``; pass it as an argument (not a
  closure) so that the weights are not embedded in the compiled program.
  """
  shift = jnp.asarray(_SHIFT, jnp.float32)
  scale = jnp.asarray(_SCALE, jnp.float32)
  both = (jnp.concatenate([x, y]).astype(jnp.float32) - shift) / scale
  total = 0.0
  for k, features in enumerate(_backbone(params, both, net)):
    norm = jnp.sqrt(jnp.sum(features**2, axis=-1, keepdims=True))
    features = features / (norm + _EPSILON)
    fx, fy = jnp.split(features, 2)
    weighted = jnp.sum((fx - fy)**2 * jnp.asarray(params[f'lin{k}']['weight'], jnp.float32),
                       axis=-1)
    total = total + jnp.mean(weighted, axis=(1, 2))
  return total


def lpips(params: Mapping[str, Any], sr: np.ndarray | jax.Array, hr: np.ndarray | jax.Array,
          net: str = 'alex', shave: int = 0) -> np.ndarray:
  """LPIPS ``[B]`` (float64) of same-size image batches ``[B, H, W, C]`` in 0..255.

  Images are mapped to [-1, 1] as the reference does (``x / 127.5 - 1``); gray
  (``C = 1``) is repeated to RGB. ``shave`` pixels are cut off each border first.
  """
  def prepare(images):
    images = jnp.asarray(images, jnp.float32)
    images = images[:, shave:images.shape[1] - shave, shave:images.shape[2] - shave]
    return jnp.broadcast_to(images, (*images.shape[:3], 3)) / 127.5 - 1.0

  return np.asarray(distance(params, prepare(sr), prepare(hr), net), np.float64)


def default_path(net: str = 'alex') -> str:
  """``lpips_{net}.npz`` in the project's cache folder (``paths.cache_dir``)."""
  _check_net(net)
  return os.path.join(paths.cache_dir(), f'lpips_{net}.npz')


def import_command(net: str, path: str | None = None) -> str:
  """The command that writes converted weights for ``net`` (to ``path``)."""
  command = 'python -m srgan_jax.lpips import'
  if net != 'alex':
    command += f' --net={net}'
  command += f' --backbone=PATH_TO_TORCHVISION_{"ALEXNET" if net == "alex" else "VGG16"}.pth'
  if path is not None and os.path.abspath(path) != os.path.abspath(default_path(net)):
    command += f' --output={path}'
  return command


def _check_params(params: Mapping[str, Any], net: str, where: str,
                  path: str | None = None) -> dict[str, dict[str, np.ndarray]]:
  """Validates a parameter tree against ``param_shapes(net)``; returns float32 NumPy."""
  checked, problems = weights_io.check_layer_shapes(params, param_shapes(net))
  weights_io.raise_if_invalid(problems, LPIPSWeightsInvalidError, f'LPIPS ({net})', where,
                              None if path is None else import_command(net, path))
  return checked


def save_params(path: str, params: Mapping[str, Any], net: str) -> None:
  """Writes a validated parameter tree to ``path`` (.npz), atomically."""
  weights_io.write_layers_atomically(path, _check_params(params, net, 'the tree to save'))


def load_params(net: str = 'alex', path: str | None = None) -> dict[str, dict[str, np.ndarray]]:
  """Reads converted LPIPS weights; errors name the import command."""
  path = default_path(net) if path is None else path
  if not os.path.exists(path):
    raise LPIPSWeightsNotFoundError(
        f'no LPIPS ({net}) weights at {path}; convert them once with: '
        f'{import_command(net, path)} (see srgan_jax/lpips.py)')
  arrays = weights_io.read_npz(path, LPIPSWeightsInvalidError, 'LPIPS', import_command(net, path))
  return _check_params(weights_io.layers_from_entries(arrays), net, path, path)


def _numpy(value: Any) -> np.ndarray:
  """A float32 NumPy copy of a NumPy array or torch tensor (without importing torch)."""
  if hasattr(value, 'detach'):
    value = value.detach().cpu().numpy()
  return np.asarray(value, np.float32)


def params_from_torch(backbone: Mapping[str, Any], linear: Mapping[str, Any],
                      net: str) -> dict[str, dict[str, np.ndarray]]:
  """Parameters from a torchvision state dict (``features.{i}.weight/bias``; other keys
  ignored) and the reference's linear layers (``lin{k}.model.1.weight``, [1, C, 1, 1])."""
  params, missing = {}, []
  for layer, shapes in param_shapes(net).items():
    if layer.startswith('conv'):
      keys = {'kernel': f'features.{layer[4:]}.weight', 'bias': f'features.{layer[4:]}.bias'}
      source = backbone
    else:
      keys = {'weight': f'{layer}.model.1.weight'}
      source = linear
    missing += [key for key in keys.values() if key not in source]
    values = {kind: _numpy(source[key]) for kind, key in keys.items() if key in source}
    if 'kernel' in values and values['kernel'].ndim == 4:
      values['kernel'] = values['kernel'].transpose(2, 3, 1, 0)  # OIHW -> HWIO.
    if 'weight' in values:
      values['weight'] = values['weight'].reshape(-1)
    params[layer] = values
  if missing:
    raise LPIPSWeightsInvalidError(f'not torchvision {net} / LPIPS linear weights: missing '
                                   f'{missing}; give the .pth files: {import_command(net)}')
  return _check_params(params, net, 'the torch state dicts')


def packaged_linear_path(net: str) -> str:
  """``lpips/weights/v0.1/{net}.pth`` of the installed ``lpips`` package (not imported:
  it imports torchvision)."""
  _check_net(net)
  spec = importlib.util.find_spec('lpips')
  if spec is None or not spec.submodule_search_locations:
    raise LPIPSWeightsNotFoundError('the lpips package is not installed (pip install lpips); '
                            'or pass --linear=PATH to its weights/v0.1/<net>.pth')
  return os.path.join(list(spec.submodule_search_locations)[0], 'weights', 'v0.1', f'{net}.pth')


def import_weights(backbone: str, net: str = 'alex', linear: str | None = None,
                   output: str | None = None) -> str:
  """Converts a torchvision backbone and LPIPS linear layers; returns the path written."""
  linear = packaged_linear_path(net) if linear is None else linear
  output = default_path(net) if output is None else output
  for path in (backbone, linear):
    if not os.path.isfile(path):
      raise LPIPSWeightsNotFoundError(f'no torch state dict at {path}')
  import torch  # pylint: disable=g-import-not-at-top  # Only the converter needs it.
  state_dicts = []
  for path in (backbone, linear):
    try:  # Not a torch file (a PNG), or not a state dict: torch raises many types.
      state_dict = torch.load(path, map_location='cpu', weights_only=True)
      if not isinstance(state_dict, Mapping):
        raise TypeError(f'holds a {type(state_dict).__name__}, not a state dict')
    except Exception as error:  # pylint: disable=broad-except
      line = ' '.join(str(error).split())[:200]
      raise LPIPSWeightsInvalidError(
          f'cannot read a torch state dict from {path} ({type(error).__name__}: {line}); '
          f'give the .pth files: {import_command(net)}') from None
    state_dicts.append(state_dict)
  save_params(output, params_from_torch(*state_dicts, net), net)
  return output
