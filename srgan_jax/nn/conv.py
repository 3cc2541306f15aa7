"""A convolution whose weight gradient is a matrix product: fast training on CPUs.

Why: XLA's CPU backend lowers the weight gradient of an NHWC convolution to another
convolution that contracts over the batch alone (``dim_labels=b01f_01io->b01f`` with
the whole image as "window"), which YNNPACK runs with inner products as long as the
batch. It takes several times as long as the forward convolution and makes the JAX
training step much slower than PyTorch's on the same CPU (measured:
notes/PERFORMANCE.md, sections 1 and 2).

What: ``conv_general_dilated`` has ``lax.conv_general_dilated``'s signature and values,
and, where selected, a custom VJP. Its forward and input gradient stay XLA's own
convolutions; its weight gradient is one matrix product whose contraction runs over
batch x height x width instead of the batch alone: the kernel taps' shifted (and
strided) views of the padded input (im2col, built by slicing, not by a patch
convolution) times the output gradient. Where the output has fewer channels than the
input (the generator's 9x9 tail, 64 -> 3) the output gradient is the one shifted,
which copies fewer bytes by the ratio of the channel counts. The values are those of ``jax.grad`` of
``lax.conv_general_dilated`` up to float32 round-off (tests/unit/nn/conv_test.py).

When: ``conv_autotune.py`` decides, per layer, as its mode says ('auto', the default:
on CPUs, where timing on first use finds it faster; XLA's elsewhere, notably on GPUs
and TPUs, whose weight-gradient convolutions are fast). Convolutions it does not
cover (other layouts, input dilation, feature groups) always use XLA's.

What it does not fix: XLA's CPU convolutions and matrix products themselves are slower
than PyTorch's (oneDNN's) in the small 64-channel layers; see notes/PERFORMANCE.md,
sections 7 and 8.
"""

from collections.abc import Callable, Sequence
import functools
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

from srgan_jax.nn import conv_autotune

NHWC_DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')


def _is_nhwc(dimension_numbers: Any) -> bool:
  """Whether dimension numbers are NHWC / HWIO / NHWC (strings or ConvDimensionNumbers)."""
  if dimension_numbers is None:
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return dimension_numbers == lax.conv_dimension_numbers(
        (1, 1, 1, 1), (1, 1, 1, 1), NHWC_DIMENSIONS)
  return tuple(dimension_numbers) == NHWC_DIMENSIONS


def _pads(x_shape: Sequence[int], kernel_shape: Sequence[int], strides: Sequence[int],
          padding: Any, rhs_dilation: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """Explicit (low, high) spatial padding, as lax.conv_general_dilated resolves it."""
  if not isinstance(padding, str):
    return tuple((int(lo), int(hi)) for lo, hi in padding)
  dilated = [(k - 1) * d + 1 for k, d in zip(kernel_shape[:2], rhs_dilation)]
  return tuple(lax.padtype_to_pads(x_shape[1:3], dilated, strides, padding))


def _input_taps(x: jax.Array, out_shape: Sequence[int], kernel_shape: Sequence[int],
                strides: Sequence[int], pads: Sequence[tuple[int, int]],
                rhs_dilation: Sequence[int]) -> jax.Array:
  """[KH*KW, C, N, OH, OW]: for each kernel tap, the input pixels it meets (im2col).

  Channels come before the pixels, the layout in which the matrix product that follows
  contracts its left operand's minor dimension (XLA would transpose it otherwise).
  """
  x = x.transpose(3, 0, 1, 2)
  x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (0, 0, 0), (*pads[0], 0), (*pads[1], 0)))
  _, oh, ow, _ = out_shape
  (sh, sw), (dh, dw) = strides, rhs_dilation
  views = [lax.slice(x, (0, 0, i * dh, j * dw),
                     (*x.shape[:2], i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1),
                     (1, 1, sh, sw))
           for i in range(kernel_shape[0]) for j in range(kernel_shape[1])]
  return jnp.stack(views)


def _output_gradient_taps(g: jax.Array, x_shape: Sequence[int], kernel_shape: Sequence[int],
                          pads: Sequence[tuple[int, int]]) -> jax.Array:
  """[N, H, W, KH*KW*O] (stride 1, no dilation): for each tap, the output gradient that
  meets each input pixel through it, zero where that output lies outside the image."""
  kh, kw = kernel_shape[:2]
  h, w = x_shape[1:3]
  # Input pixel a meets output a + pad_low - i through tap i.
  lo = [k - 1 - p for k, (p, _) in zip((kh, kw), pads)]
  hi = [size + p - out for size, (p, _), out in zip((h, w), pads, g.shape[1:3])]
  g = lax.pad(g, jnp.zeros((), g.dtype), ((0, 0, 0), (lo[0], hi[0], 0), (lo[1], hi[1], 0),
                                          (0, 0, 0)))
  views = [lax.slice_in_dim(lax.slice_in_dim(g, kh - 1 - i, kh - 1 - i + h, axis=1),
                            kw - 1 - j, kw - 1 - j + w, axis=2)
           for i in range(kh) for j in range(kw)]
  return jnp.concatenate(views, axis=-1)


def weight_gradient(x: jax.Array, g: jax.Array, kernel_shape: Sequence[int],
                    strides: Sequence[int], padding: Any,
                    rhs_dilation: Sequence[int] = (1, 1), precision: Any = None,
                    method: str = 'auto') -> jax.Array:
  """d(sum(g * conv(x, w))) / dw for an NHWC / HWIO convolution, as one matrix product.

  ``method``: 'input' shifts the input (im2col), 'output' the output gradient
  (stride 1 and no dilation only), 'auto' whichever has fewer channels. The result is
  float32 (the products accumulate in float32 whatever the input dtype).
  """
  kh, kw, c, o = kernel_shape
  pads = _pads(x.shape, kernel_shape, strides, padding, rhs_dilation)
  shift_output = tuple(strides) == (1, 1) and tuple(rhs_dilation) == (1, 1)
  if method == 'auto':
    method = 'output' if shift_output and o < c else 'input'
  if method == 'output':
    if not shift_output:
      raise ValueError('shifting the output gradient needs stride 1 and no dilation')
    taps = _output_gradient_taps(g, x.shape, kernel_shape, pads)  # [N, H, W, T*O]
    # One product per image, summed: XLA CPU parallelises a long contraction into a
    # small result badly, but not a batch of them.
    n = x.shape[0]
    dw = lax.dot_general(x.reshape(n, -1, c), taps.reshape(n, -1, taps.shape[-1]),
                         (((1,), (1,)), ((0,), (0,))), precision=precision,
                         preferred_element_type=jnp.float32).sum(0)  # [C, T*O]
    return dw.reshape(c, kh, kw, o).transpose(1, 2, 0, 3)
  if method != 'input':
    raise ValueError(f"method must be 'auto', 'input' or 'output', got {method!r}")
  taps = _input_taps(x, g.shape, kernel_shape, strides, pads, rhs_dilation)  # [T, C, N, OH, OW]
  dw = lax.dot_general(taps, g, (((2, 3, 4), (0, 1, 2)), ((), ())), precision=precision,
                       preferred_element_type=jnp.float32)  # [T, C, O]
  return dw.reshape(kh, kw, c, o)


def _xla_conv(strides: Sequence[int], padding: Any, rhs_dilation: Sequence[int],
              precision: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """XLA's NHWC convolution of a layer, (input, kernel) -> output."""
  return functools.partial(lax.conv_general_dilated, window_strides=strides, padding=padding,
                           rhs_dilation=rhs_dilation, dimension_numbers=NHWC_DIMENSIONS,
                           precision=precision)


def _layer_weight_gradients(strides: Sequence[int], padding: Any,
                            rhs_dilation: Sequence[int],
                            precision: Any) -> conv_autotune.WeightGradients:
  """XLA's and the matmul weight gradient of one layer, as ``conv_autotune`` times them."""
  conv = _xla_conv(strides, padding, rhs_dilation, precision)
  return {
      'xla': lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0],
      'matmul': lambda x, w, g: weight_gradient(
          x, g, w.shape, strides, padding, rhs_dilation, precision).astype(w.dtype),
  }


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _matmul_vjp_conv(x: jax.Array, w: jax.Array, strides: tuple[int, ...], padding: Any,
                     rhs_dilation: tuple[int, ...], precision: Any, choice: str) -> jax.Array:
  del choice  # The backward pass's.
  return _xla_conv(strides, padding, rhs_dilation, precision)(x, w)


def _matmul_vjp_conv_fwd(x, w, strides, padding, rhs_dilation, precision, choice):
  return _matmul_vjp_conv(x, w, strides, padding, rhs_dilation, precision, choice), (x, w)


def _matmul_vjp_conv_bwd(strides, padding, rhs_dilation, precision, choice, residuals, g):
  x, w = residuals
  conv = _xla_conv(strides, padding, rhs_dilation, precision)
  if choice == conv_autotune.TIMED and not conv_autotune.measured_matmul_pays(
      _layer_weight_gradients(strides, padding, rhs_dilation, precision), x.shape, w.shape,
      g.shape, strides, padding, rhs_dilation, x.dtype, precision):
    return jax.vjp(conv, x, w)[1](g)  # XLA's input and weight gradients, as without it.
  _, input_vjp = jax.vjp(lambda x: conv(x, w), x)  # XLA's input gradient.
  dx, = input_vjp(g)
  dw = weight_gradient(x, g, w.shape, strides, padding, rhs_dilation, precision)
  return dx, dw.astype(w.dtype)


_matmul_vjp_conv.defvjp(_matmul_vjp_conv_fwd, _matmul_vjp_conv_bwd)


def _hashable_padding(padding: Any) -> Any:
  return padding if isinstance(padding, str) else tuple(tuple(p) for p in padding)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: Any, lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> jax.Array:
  """``lax.conv_general_dilated``, with the matmul weight gradient where it applies.

  It applies to 2-D NHWC / HWIO convolutions without input dilation or feature groups,
  as ``conv_autotune.weight_gradient_mode`` selects (by default: on CPUs, where it pays).
  """
  covered = (lhs.ndim == 4 and _is_nhwc(dimension_numbers)
             and all(d == 1 for d in (lhs_dilation or (1, 1)))
             and feature_group_count == 1 and batch_group_count == 1
             and preferred_element_type is None)
  choice = conv_autotune.weight_gradient_choice(rhs.shape, window_strides) if covered else None
  if choice is None:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type)
  return _matmul_vjp_conv(lhs, rhs, tuple(window_strides), _hashable_padding(padding),
                          tuple(rhs_dilation or (1, 1)), precision, choice)
