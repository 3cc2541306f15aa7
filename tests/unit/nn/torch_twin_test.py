"""torch_twin.py: the PyTorch generator equals models.SRResNet on the same weights, with
each of its options; its bicubic upscaling equals MATLAB's (bicubic.imresize_jax)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srgan_jax.imaging import bicubic
from srgan_jax.nn import models
from srgan_jax.nn import torch_twin

torch = pytest.importorskip('torch', reason='torch is not installed')


def _nchw(x: np.ndarray):
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(x) -> np.ndarray:
  return x.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize('scale', [2, 4, 8])
@pytest.mark.parametrize('size', [(2, 2), (5, 9)])  # The smallest size, odd sizes.
def test_bicubic_upscale_is_matlabs(scale, size):
  x = np.random.default_rng(0).uniform(0, 1, (2, *size, 3)).astype(np.float32)
  expected = np.asarray(bicubic.imresize_jax(x, scale))
  np.testing.assert_allclose(_nhwc(torch_twin.bicubic_upscale(_nchw(x), scale)), expected,
                             atol=1e-6, rtol=0)


# Every option at once, x8, in eager PyTorch (the exports' tests cover the others,
# through torch.export: inference/exports_test.py).
ALL_OPTIONS = dict(num_blocks=1, features=8, upsample_features=32, scale=8, bicubic_skip=True,
                   chroma_from_bicubic=True, output_activation='tanh')


@pytest.mark.parametrize('batch_norm', [True, False])
def test_generator_module_equals_flax(batch_norm):
  model = models.SRResNet(**ALL_OPTIONS, batch_norm=batch_norm)
  variables = model.init(jax.random.key(1), jnp.zeros((1, 8, 8, 3)))
  if 'batch_stats' in variables:  # Statistics that are not the identity's.
    variables = {**variables, 'batch_stats': jax.tree_util.tree_map(
        lambda s: s + 0.3, variables['batch_stats'])}
  x = np.random.default_rng(2).uniform(0, 1, (2, 7, 5, 3)).astype(np.float32)
  expected = np.asarray(model.apply(variables, x))
  module = torch_twin.generator_module(model, variables)
  with torch.no_grad():
    got = _nhwc(module(_nchw(x)))
  np.testing.assert_allclose(got, expected, atol=1e-5 * max(1, np.abs(expected).max()), rtol=0)
  # The weights are buffers named as the Flax trees.
  names = dict(module.named_buffers())
  assert names['params.head_conv.kernel'].shape == (8, 3, 9, 9)
  assert ('batch_stats.block0.bn1.mean' in names) == batch_norm


def test_pixel_shuffle_channel_order():
  """torch's pixel_shuffle on reordered channels equals models.pixel_shuffle."""
  x = np.random.default_rng(0).normal(size=(1, 3, 5, 12)).astype(np.float32)
  expected = models.pixel_shuffle(jnp.asarray(x), 2)
  reordered = x[..., torch_twin._crd_channel_order(12)]  # pylint: disable=protected-access
  actual = torch.nn.functional.pixel_shuffle(
      torch.from_numpy(reordered).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).numpy()
  np.testing.assert_array_equal(actual, expected)
