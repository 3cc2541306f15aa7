"""conv.py: the matmul weight gradient equals jax.grad of lax.conv_general_dilated."""

import functools

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from srgan_jax.nn import conv
from srgan_jax.nn import conv_autotune
from srgan_jax.nn import models

# (input NHWC, kernel HWIO, strides, padding, kernel dilation): every kernel size,
# stride and padding of the networks (at small widths), then other cases the
# function accepts.
CASES = {
    'generator head 9x9': ((2, 12, 12, 3), (9, 9, 3, 8), (1, 1), 'SAME', (1, 1)),
    'generator body 3x3': ((2, 12, 12, 8), (3, 3, 8, 8), (1, 1), 'SAME', (1, 1)),
    'generator upsampling 3x3': ((2, 12, 12, 8), (3, 3, 8, 32), (1, 1), 'SAME', (1, 1)),
    'generator tail 9x9 to 3': ((2, 24, 24, 8), (9, 9, 8, 3), (1, 1), 'SAME', (1, 1)),
    'discriminator 3x3 stride 1': ((2, 16, 16, 3), (3, 3, 3, 8), (1, 1), 'SAME', (1, 1)),
    'discriminator 3x3 stride 2': ((2, 16, 16, 8), (3, 3, 8, 8), (2, 2), 'SAME', (1, 1)),
    'stride 2, odd side': ((2, 15, 13, 8), (3, 3, 8, 16), (2, 2), 'SAME', (1, 1)),
    'non-square stride, VALID': ((2, 14, 15, 4), (3, 5, 4, 6), (2, 3), 'VALID', (1, 1)),
    'explicit padding': ((2, 10, 11, 4), (3, 3, 4, 6), (1, 1), ((1, 2), (0, 1)), (1, 1)),
    'kernel dilation': ((2, 12, 12, 4), (3, 3, 4, 6), (1, 1), 'SAME', (2, 2)),
    'fewer outputs, explicit padding': ((2, 10, 9, 6), (5, 3, 6, 2), (1, 1), ((3, 1), (2, 0)),
                                        (1, 1)),
}


def _arrays(x_shape, kernel_shape, strides, padding, dilation, seed=0):
  """Random input, kernel and output cotangent of a case, float32 numpy."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(x_shape, np.float32)
  w = rng.standard_normal(kernel_shape, np.float32)
  y = jax.eval_shape(functools.partial(_xla_conv, strides=strides, padding=padding,
                                       dilation=dilation), x, w)
  return x, w, rng.standard_normal(y.shape, np.float32)


def _xla_conv(x, w, strides, padding, dilation):
  return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                  dimension_numbers=conv.NHWC_DIMENSIONS)


def _assert_close(actual, expected):
  """Equal within float32 round-off of sums of a few hundred products."""
  expected = np.asarray(expected)
  np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-5,
                             atol=2e-6 * np.abs(expected).max())


def _reference_vjp(x, w, g, strides, padding, dilation):
  y, vjp = jax.vjp(functools.partial(_xla_conv, strides=strides, padding=padding,
                                     dilation=dilation), x, w)
  return y, *vjp(g)


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('method', ['input', 'output'])
def test_weight_gradient_equals_jax_grad(case, method):
  x_shape, kernel_shape, strides, padding, dilation = CASES[case]
  x, w, g = _arrays(*CASES[case])
  if method == 'output' and (strides != (1, 1) or dilation != (1, 1)):
    with pytest.raises(ValueError, match='stride 1'):
      conv.weight_gradient(x, g, kernel_shape, strides, padding, dilation, method=method)
    return
  _, _, expected = _reference_vjp(x, w, g, strides, padding, dilation)
  actual = jax.jit(functools.partial(
      conv.weight_gradient, kernel_shape=kernel_shape, strides=strides, padding=padding,
      rhs_dilation=dilation, method=method))(x, g)
  _assert_close(actual, expected)


@pytest.mark.parametrize('case', CASES)
def test_custom_vjp_value_and_gradients_equal_xla(case):
  """Value, input gradient and weight gradient of conv_general_dilated with the
  matmul weight gradient forced on, as Flax's Conv calls it."""
  x, w, g = _arrays(*CASES[case])
  _, _, strides, padding, dilation = CASES[case]
  expected = _reference_vjp(x, w, g, strides, padding, dilation)

  def flax_like_call(x, w):
    return conv.conv_general_dilated(
        x, w, strides, padding, lhs_dilation=(1, 1), rhs_dilation=dilation,
        dimension_numbers=lax.conv_dimension_numbers(x.shape, w.shape, conv.NHWC_DIMENSIONS),
        feature_group_count=1, precision=None)

  with conv_autotune.weight_gradient_mode('matmul'):
    jaxpr = str(jax.make_jaxpr(lambda x, w: jax.vjp(flax_like_call, x, w)[1](g))(x, w))
    y, vjp = jax.vjp(flax_like_call, x, w)
    actual = (y, *vjp(g))
  assert 'custom_vjp' in jaxpr
  for name, a, e in zip(('value', 'dx', 'dw'), actual, expected):
    assert a.shape == e.shape, name
    _assert_close(a, e)


def test_uncovered_convolutions_use_xla():
  """Feature groups and NCHW layouts go to lax.conv_general_dilated unchanged."""
  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 2, 4))
  with conv_autotune.weight_gradient_mode('matmul'):
    grouped = jax.make_jaxpr(lambda x, w: conv.conv_general_dilated(
        x, w, (1, 1), 'SAME', dimension_numbers=conv.NHWC_DIMENSIONS,
        feature_group_count=2))(x, w)
    nchw = jax.make_jaxpr(lambda x, w: conv.conv_general_dilated(
        x, w, (1, 1), 'SAME', dimension_numbers=('NCHW', 'OIHW', 'NCHW')))(
            jnp.ones((2, 4, 8, 8)), jnp.ones((4, 4, 3, 3)))
  assert 'custom_vjp' not in str(grouped) and 'custom_vjp' not in str(nchw)


def test_bfloat16_gradient_dtypes():
  x = jnp.ones((2, 8, 8, 4), jnp.bfloat16)
  w = jnp.ones((3, 3, 4, 8), jnp.bfloat16)
  with conv_autotune.weight_gradient_mode('matmul'):
    dx, dw = jax.grad(lambda x, w: conv.conv_general_dilated(
        x, w, (1, 1), 'SAME', dimension_numbers=conv.NHWC_DIMENSIONS).astype(
            jnp.float32).sum(), argnums=(0, 1))(x, w)
  assert dx.dtype == dw.dtype == jnp.bfloat16
  # Interior taps see 2 x 8 x 8 ones; edge taps fewer.
  assert float(dw[1, 1, 0, 0]) == 128.0


@pytest.mark.parametrize('model, shape', [
    (models.SRResNet(num_blocks=1, features=8, upsample_features=32), (2, 8, 8, 3)),
    (models.Discriminator(convs=((4, 1), (4, 2), (8, 1), (8, 2), (8, 1), (8, 2), (8, 1), (8, 2)),
                          dense_features=16), (2, 32, 32, 3)),
])
def test_network_gradients_unchanged(model, shape):
  """The parameter gradients of a training-mode loss are those of XLA's convolutions."""
  x = jax.random.uniform(jax.random.key(0), shape)
  variables = model.init(jax.random.key(1), x, train=False)

  def loss(params):
    out, _ = model.apply({**variables, 'params': params}, x, train=True,
                         mutable=['batch_stats'])
    return jnp.sum(out**2)

  grads = {}
  for mode in ('xla', 'matmul'):
    with conv_autotune.weight_gradient_mode(mode):
      grads[mode] = jax.jit(jax.grad(loss))(variables['params'])
  flat_xla = jax.tree_util.tree_leaves_with_path(grads['xla'])
  for (path, expected), actual in zip(flat_xla, jax.tree_util.tree_leaves(grads['matmul'])):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=2e-4,
                               atol=2e-5 * np.abs(np.asarray(expected)).max() + 1e-7,
                               err_msg=jax.tree_util.keystr(path))
  kernels = [leaf for path, leaf in flat_xla if 'kernel' in jax.tree_util.keystr(path)]
  assert all(np.abs(np.asarray(k)).max() > 0 for k in kernels)


def test_models_use_it():
  assert models.Conv(4, (3, 3)).conv_general_dilated is conv.conv_general_dilated
  assert isinstance(models.Conv(4, (3, 3)), nn.Conv)
