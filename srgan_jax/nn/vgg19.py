"""VGG19 feature extractor for SRGAN's perceptual (VGG) content loss, and its weights.

(The ``import`` command is ``srgan_jax/vgg19.py``.)

The network is the convolutional part of VGG19 (Simonyan & Zisserman, 2015) in
Flax Linen, NHWC: 16 3x3 convolutions ``conv1_1`` ... ``conv5_4`` with 2x2 max
pooling between the five blocks. ``relu2_2`` is the paper's VGG22 and ``relu5_4``
its VGG54 (the SRGAN default).

Pretrained weights are converted once into a cached ``.npz`` file:

  python -m srgan_jax.vgg19 import --source=keras          # downloads (needs internet)
  python -m srgan_jax.vgg19 import --source=PATH.h5        # local Keras VGG19 weights
  python -m srgan_jax.vgg19 import --source=PATH.pth       # torchvision VGG19 state dict

``--source=keras`` takes ``keras.applications.VGG19(include_top=False,
weights='imagenet')``, the original Caffe model converted by Keras; Keras keeps its
download in ``~/.keras/models/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``,
which can be copied to an offline machine and imported with ``--source=PATH.h5``
(so can any ``.h5`` / ``.weights.h5`` of a ``VGG19(include_top=False)`` model).
``--source=PATH.pth`` takes a state dict with torchvision's layout
(``features.{0,2,5,...}.weight/bias``, e.g. ``vgg19-dcbb9e9d.pth``) and needs torch.

The cache is ``$SRGAN_JAX_CACHE/vgg19.npz`` when ``SRGAN_JAX_CACHE`` is set, else
``~/.cache/srgan_jax/vgg19.npz``; ``--output=PATH`` writes elsewhere. The file holds
the kernels and biases in Flax layout and the input preprocessing that matches them
('caffe' for Keras weights, 'torch' for torchvision weights), which ``load_params``
returns with the parameters. A missing or malformed file is an error that names the
import command: the loss never runs on randomly initialized VGG weights.

This module imports neither tensorflow, keras nor torch; the converters import them
when called.
"""

from collections.abc import Mapping, Sequence
import os
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from srgan_jax.nn import weights_io
from srgan_jax.runtime import errors
from srgan_jax.runtime import paths

# Output channels of the convolutions of each of the five blocks.
BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512),
          (512, 512, 512, 512))
CONV_NAMES = tuple(f'conv{i}_{j}' for i, block in enumerate(BLOCKS, 1)
                   for j in range(1, len(block) + 1))
WIDTHS = tuple(width for block in BLOCKS for width in block)
PREPROCESSING_MODES = ('caffe', 'torch')

# Caffe / Keras weights take BGR in 0..255 minus the ImageNet mean (BGR order).
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
# torchvision weights take RGB in [0, 1] normalised per channel.
TORCH_RGB_MEAN = (0.485, 0.456, 0.406)
TORCH_RGB_STD = (0.229, 0.224, 0.225)

IMPORT_COMMAND = 'python -m srgan_jax.vgg19 import --source=keras'
_PREPROCESSING_KEY = 'preprocessing'
_OUTPUT_NAME = re.compile(r'(conv|relu)(\d)_(\d)')


class VGG19WeightsError(errors.UserError):
  """The converted VGG19 weights cannot be used; the message says how to make them."""


class VGG19WeightsNotFoundError(VGG19WeightsError, FileNotFoundError):
  """No converted VGG19 weights file at the expected path."""


class VGG19WeightsInvalidError(VGG19WeightsError, ValueError):
  """A VGG19 weights file (or tree) lacks layers or has wrong shapes."""


def param_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
  """Flax parameter shapes of the 16 convolutions: kernel HWIO and bias."""
  shapes = {}
  in_channels = 3
  for name, out_channels in zip(CONV_NAMES, WIDTHS):
    shapes[name] = {'kernel': (3, 3, in_channels, out_channels), 'bias': (out_channels,)}
    in_channels = out_channels
  return shapes


def _conv_index(output: str) -> int:
  """Position in CONV_NAMES of the conv layer behind an output name ('relu2_2' -> 3)."""
  match = _OUTPUT_NAME.fullmatch(output)
  conv = f'conv{match.group(2)}_{match.group(3)}' if match else None
  if conv not in CONV_NAMES:
    raise ValueError(f'unknown VGG19 output {output!r}: expected conv{{i}}_{{j}} or '
                     f'relu{{i}}_{{j}} with conv{{i}}_{{j}} in {CONV_NAMES}')
  return CONV_NAMES.index(conv)


def preprocess(images: jax.Array, preprocessing: str) -> jax.Array:
  """Maps RGB images in [-1, 1] to the input the VGG19 weights were trained on."""
  images = images.astype(jnp.float32)  # 0..255 needs more precision than bfloat16 has.
  if preprocessing == 'caffe':
    bgr = (images[..., ::-1] + 1.0) * 127.5
    return bgr - jnp.asarray(CAFFE_BGR_MEAN, jnp.float32)
  if preprocessing == 'torch':
    rgb = (images + 1.0) * 0.5
    return (rgb - jnp.asarray(TORCH_RGB_MEAN, jnp.float32)) / jnp.asarray(TORCH_RGB_STD,
                                                                          jnp.float32)
  raise ValueError(f'preprocessing must be one of {PREPROCESSING_MODES}, got {preprocessing!r}')


class VGG19(nn.Module):
  """VGG19 convolutional features. Input: RGB in [-1, 1], NHWC, any size.

  ``__call__(images, outputs)`` returns ``{name: feature map}`` (float32) for each
  requested name: ``conv{i}_{j}`` before its ReLU, ``relu{i}_{j}`` after it. Only the
  layers up to the deepest requested one are created and computed.
  """
  preprocessing: str = 'caffe'  # Must match the weights: see load_params.
  dtype: Any = jnp.float32  # Compute dtype; parameters stay float32.

  @nn.compact
  def __call__(self, images: jax.Array, outputs: Sequence[str]) -> dict[str, jax.Array]:
    if isinstance(outputs, str) or not outputs:
      raise ValueError(f'outputs must be a non-empty sequence of names, got {outputs!r}')
    last = max(_conv_index(name) for name in outputs)
    x = preprocess(images, self.preprocessing).astype(self.dtype)
    features = {}
    for name, width in zip(CONV_NAMES[:last + 1], WIDTHS):
      if name.endswith('_1') and name != 'conv1_1':  # Each block after the first.
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      x = nn.Conv(width, (3, 3), padding='SAME', dtype=self.dtype,
                  param_dtype=jnp.float32, name=name)(x)
      features[name] = x
      x = nn.relu(x)
      features['relu' + name[len('conv'):]] = x
    return {name: features[name].astype(jnp.float32) for name in outputs}


def features(params: Mapping[str, Any], images: jax.Array, outputs: Sequence[str],
             preprocessing: str = 'caffe', dtype: Any = jnp.float32) -> dict[str, jax.Array]:
  """VGG19 feature maps of ``images`` (RGB in [-1, 1]) with frozen parameters.

  ``params`` is the tree from ``load_params`` (without a ``'params'`` wrapper). It is
  held constant: gradients flow to ``images`` only. Under ``jax.jit`` pass ``params``
  as an argument rather than closing over it, so that the 80 MB of weights are not
  embedded in the compiled program.
  """
  model = VGG19(preprocessing=preprocessing, dtype=dtype)
  return model.apply({'params': jax.lax.stop_gradient(params)}, images, outputs)


def default_path() -> str:
  """``$SRGAN_JAX_CACHE/vgg19.npz``, else ``~/.cache/srgan_jax/vgg19.npz``."""
  return os.path.join(paths.cache_dir(), 'vgg19.npz')


def _import_command(path: str) -> str:
  """The command that writes converted weights to ``path``."""
  if os.path.abspath(path) == os.path.abspath(default_path()):
    return IMPORT_COMMAND
  return f'{IMPORT_COMMAND} --output={path}'


def _check_params(params: Mapping[str, Any], preprocessing: str, where: str,
                  path: str | None = None) -> dict[str, dict[str, np.ndarray]]:
  """Validates a parameter tree against the 16 layers; returns it as float32 numpy."""
  problems = []
  if preprocessing not in PREPROCESSING_MODES:
    problems.append(f'preprocessing {preprocessing!r} is not one of {PREPROCESSING_MODES}')
  checked, shape_problems = weights_io.check_layer_shapes(params, param_shapes(), strict_entries=True)
  problems += shape_problems
  weights_io.raise_if_invalid(problems, VGG19WeightsInvalidError, 'VGG19', where,
                              None if path is None else _import_command(path))
  return checked


def save_params(path: str, params: Mapping[str, Any], preprocessing: str) -> None:
  """Writes a validated parameter tree and its preprocessing mode to ``path`` (.npz)."""
  checked = _check_params(params, preprocessing, 'the tree to save')
  weights_io.write_layers_atomically(path, checked, {_PREPROCESSING_KEY: np.array(preprocessing)})


def load_params(path: str | None = None) -> tuple[dict[str, dict[str, np.ndarray]], str]:
  """Reads converted VGG19 weights: (params tree, preprocessing mode).

  ``path`` defaults to ``default_path()``. Raises ``VGG19WeightsNotFoundError`` when
  the file does not exist and ``VGG19WeightsInvalidError`` when it is unreadable or
  lacks a layer or has a wrong shape; both messages name the import command.
  """
  path = default_path() if path is None else path
  if not os.path.exists(path):
    raise VGG19WeightsNotFoundError(
        f'no VGG19 weights at {path}; convert the pretrained weights once with: '
        f'{_import_command(path)} (or --source=PATH.h5 / --source=PATH.pth offline; '
        'see srgan_jax/nn/vgg19.py)')
  arrays = weights_io.read_npz(path, VGG19WeightsInvalidError, 'VGG19', _import_command(path))
  preprocessing = str(arrays.pop(_PREPROCESSING_KEY, 'missing'))
  params = _check_params(weights_io.layers_from_entries(arrays), preprocessing, path, path)
  return params, preprocessing


def _numpy(value: Any) -> np.ndarray:
  """A float32 numpy copy of a numpy array or torch tensor."""
  if hasattr(value, 'detach'):  # A torch tensor; avoids importing torch here.
    value = value.detach().cpu().numpy()
  return np.asarray(value, np.float32)


def params_from_keras(model: Any) -> dict[str, dict[str, np.ndarray]]:
  """Parameters of a Keras ``VGG19`` (``keras.applications`` layer names ``block{i}_conv{j}``).

  Keras kernels are already HWIO, the Flax layout; the weights expect 'caffe' input.
  """
  params = {}
  for layer in CONV_NAMES:
    block, conv = layer[len('conv'):].split('_')
    kernel, bias = model.get_layer(f'block{block}_conv{conv}').get_weights()
    params[layer] = {'kernel': _numpy(kernel), 'bias': _numpy(bias)}
  return _check_params(params, 'caffe', 'the Keras model')


def _torch_feature_indices() -> list[int]:
  """Indices in torchvision's ``vgg19().features`` of the 16 convolutions."""
  indices = []
  index = 0
  for block in BLOCKS:
    for _ in block:
      indices.append(index)
      index += 2  # Conv2d, ReLU.
    index += 1  # MaxPool2d.
  return indices


def params_from_torch_state_dict(state_dict: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
  """Parameters from a torchvision-layout VGG19 state dict (``features.{i}.weight/bias``).

  Other keys (the classifier) are ignored. Torch kernels are OIHW, transposed to HWIO;
  the weights expect 'torch' input.
  """
  params = {}
  missing = []
  for layer, index in zip(CONV_NAMES, _torch_feature_indices()):
    keys = {'kernel': f'features.{index}.weight', 'bias': f'features.{index}.bias'}
    missing += [key for key in keys.values() if key not in state_dict]
    if keys['kernel'] in state_dict and keys['bias'] in state_dict:
      kernel = _numpy(state_dict[keys['kernel']])
      # A kernel that is not 4-D is left as is for _check_params to report its shape.
      params[layer] = {'kernel': kernel.transpose(2, 3, 1, 0) if kernel.ndim == 4 else kernel,
                       'bias': _numpy(state_dict[keys['bias']])}
  if missing:
    raise VGG19WeightsInvalidError(
        f'not a torchvision VGG19 state dict: missing {missing}')
  return _check_params(params, 'torch', 'the torch state dict')


def check_source(source: str) -> None:
  """Raises a VGG19WeightsError for a source that is not 'keras' or an existing file."""
  if source != 'keras' and not source.endswith(('.h5', '.pth', '.pt')):
    raise VGG19WeightsInvalidError(
        f"--source must be 'keras', a .h5 file or a .pth file, got {source!r}")
  if source != 'keras' and not os.path.isfile(source):
    raise VGG19WeightsNotFoundError(f'no VGG19 weights file at {source}')


def import_weights(source: str, output: str | None = None) -> str:
  """Converts pretrained VGG19 weights and saves them; returns the path written.

  ``source``: 'keras' (download through ``keras.applications``), a Keras weights
  file ending in .h5, or a torchvision state dict ending in .pth / .pt.
  """
  output = default_path() if output is None else output
  check_source(source)
  try:
    if source == 'keras' or source.endswith('.h5'):
      import keras  # pylint: disable=g-import-not-at-top  # Only this converter needs it.
      weights = 'imagenet' if source == 'keras' else None
      model = keras.applications.VGG19(include_top=False, weights=weights)
      if weights is None:
        model.load_weights(source)
      params, preprocessing = params_from_keras(model), 'caffe'
    else:
      import torch  # pylint: disable=g-import-not-at-top  # Only this converter needs it.
      state_dict = torch.load(source, map_location='cpu', weights_only=True)
      params, preprocessing = params_from_torch_state_dict(state_dict), 'torch'
  except VGG19WeightsError:
    raise
  except Exception as error:  # A damaged file, a failed download: many types.
    where = 'the Keras download' if source == 'keras' else source
    raise VGG19WeightsInvalidError(
        f'cannot read VGG19 weights from {where} ({type(error).__name__}: {error})'
        + ('; offline, copy the .h5 file and use --source=PATH.h5' if source == 'keras'
           else '')) from error
  save_params(output, params, preprocessing)
  return output
