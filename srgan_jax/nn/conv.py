"""A convolution whose weight gradient is a matrix product: fast training on CPUs.

Why: XLA's CPU backend lowers the weight gradient of an NHWC convolution to another
convolution that contracts over the batch alone (``dim_labels=b01f_01io->b01f`` with
the whole image as "window"), which YNNPACK runs with inner products as long as the
batch (16). It takes 3-6x the time of the forward convolution and makes the JAX
training step half as fast as PyTorch's on the same CPU (notes/PERFORMANCE.md).

What: ``conv_general_dilated`` has ``lax.conv_general_dilated``'s signature and values,
and, where selected, a custom VJP. Its forward and input gradient stay XLA's own
convolutions; its weight gradient is one matrix product whose contraction runs over
batch x height x width (length 9,216-147,456 instead of 16): the kernel taps' shifted
(and strided) views of the padded input (im2col, built by slicing, not by a patch
convolution) times the output gradient. Where the output has fewer channels than the
input (the generator's 9x9 tail, 64 -> 3) the output gradient is the one shifted,
which copies 21x fewer bytes. The values are those of ``jax.grad`` of
``lax.conv_general_dilated`` up to float32 round-off (tests/unit/nn/conv_test.py).

When (``weight_gradient_mode``): 'auto', the default, selects it when the function is
traced on the CPU backend (``jax.default_backend()``) for the layers where it is faster
*on this CPU*, and keeps XLA's convolution everywhere else, notably on GPUs and TPUs,
whose weight-gradient convolutions are fast. Which layers pay depends on the CPU: on 2
Zen 3 cores the matmul won for the layers ``matmul_pays_on_cpu`` names (whole SRResNet
step 1.15-1.42x), while on an AVX-512/AMX Xeon the same rule made the step 0.88x of
XLA's. So 'auto' times both weight gradients of a layer the first time its gradient
is traced at a new shape (a fraction of a second to a few seconds each; forward-only
programs, such as inference, time nothing), takes the matmul only where it is at least
``MATMUL_MARGIN`` faster, and keeps the verdicts in a JSON file per CPU model, core
count and jax version (``verdict_cache_path``), so later runs trace without timing. 'rule'
is ``matmul_pays_on_cpu`` on CPUs without timing (deterministic: the tests use it),
'matmul' and 'xla' force it on or off. ``SRGAN_JAX_WEIGHT_GRADIENTS`` sets the mode a
process starts in. A mode applies to functions traced while it is set (jitted
functions keep what they were traced with). Convolutions it does not cover (other
layouts, input dilation, feature groups) always use XLA's.

What it does not fix: on the same 2 cores, XLA's CPU convolutions and matrix products
reach about half of PyTorch's (oneDNN's) FLOP rate in the small 64-channel layers;
see notes/PERFORMANCE.md.
"""

from collections.abc import Sequence
import concurrent.futures
import contextlib
import functools
import json
import os
import statistics
import threading
import time
from typing import Any, Iterator

from absl import logging
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from srgan_jax.runtime import paths

NHWC_DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')

MODES = ('auto', 'rule', 'matmul', 'xla')
MODE_VARIABLE = 'SRGAN_JAX_WEIGHT_GRADIENTS'
# The matmul is taken only where its median time is below this fraction of XLA's: a
# layer where the two are within the noise of a shared machine keeps XLA's.
MATMUL_MARGIN = 0.9
# Timed calls of each weight gradient per layer, interleaved, after one warm-up call.
TIMING_ROUNDS = 5


def _initial_mode() -> str:
  mode = os.environ.get(MODE_VARIABLE, 'auto')
  if mode not in MODES:
    raise ValueError(f'{MODE_VARIABLE} must be one of {MODES}, got {mode!r}')
  return mode


_mode = _initial_mode()


def set_weight_gradient_mode(mode: str) -> None:
  """'auto' (the default: timed on this CPU), 'rule' (``matmul_pays_on_cpu`` on CPUs),
  'matmul' (wherever covered) or 'xla' (never)."""
  global _mode
  if mode not in MODES:
    raise ValueError(f'weight gradient mode must be one of {MODES}, got {mode!r}')
  _mode = mode


def weight_gradient_mode_now() -> str:
  """The mode that functions traced now use."""
  return _mode


@contextlib.contextmanager
def weight_gradient_mode(mode: str) -> Iterator[None]:
  """``set_weight_gradient_mode`` for the functions traced inside a ``with`` block."""
  previous = _mode
  set_weight_gradient_mode(mode)
  try:
    yield
  finally:
    set_weight_gradient_mode(previous)


def matmul_pays_on_cpu(kernel_shape: Sequence[int], strides: Sequence[int]) -> bool:
  """Whether the matmul weight gradient measured faster than XLA's on a CPU.

  Per layer on 2 Zen 3 cores (notes/PERFORMANCE.md, section 7), it was 1.15-1.8x
  faster for the stride-1 convolutions whose input and output channel counts differ
  by 2x or more (the generator's upsampling and 9x9 tail, the discriminator's widening
  layers; even for the 9x9 head), and slower for the generator's 64 -> 64 body (XLA
  3.7x faster) and the stride-2 layers (XLA up to 1.25x faster). In whole SRResNet
  steps this choice was 1.15-1.42x faster than XLA's weight gradient everywhere, and
  1.02-1.20x faster than the matmul everywhere (three runs).
  """
  in_channels, out_channels = kernel_shape[2:]
  return (tuple(strides) == (1, 1)
          and max(in_channels, out_channels) >= 2 * min(in_channels, out_channels))


def cpu_description() -> str:
  """This CPU as the verdicts are keyed: model name, logical CPUs, vector extensions."""
  model, flags = 'unknown CPU', set()
  try:
    with open('/proc/cpuinfo') as cpuinfo:
      for line in cpuinfo:
        name, _, value = line.partition(':')
        if name.strip() == 'model name':
          model = value.strip()
        elif name.strip() == 'flags':
          flags = set(value.split())
        if model != 'unknown CPU' and flags:
          break
  except OSError:  # Not Linux: the platform's own name.
    import platform  # pylint: disable=g-import-not-at-top
    model = platform.processor() or platform.machine() or model
  # A VM may call every Xeon the same; what decides XLA's kernels is told apart here.
  extensions = sorted(f for f in flags if f in ('avx2', 'fma', 'avx512f', 'avx512_bf16',
                                                'amx_tile', 'amx_bf16', 'sve', 'asimd'))
  return f'{model}; {os.cpu_count()} CPUs; {" ".join(extensions) or "-"}'


def verdict_cache_path() -> str:
  """``$SRGAN_JAX_CACHE/conv_weight_gradients.json``, else under ``~/.cache/srgan_jax``."""
  cache = os.environ.get('SRGAN_JAX_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'srgan_jax')
  return os.path.join(cache, 'conv_weight_gradients.json')


def time_weight_gradients(x_shape: Sequence[int], kernel_shape: Sequence[int],
                          strides: Sequence[int], padding: Any, rhs_dilation: Sequence[int],
                          dtype: Any, precision: Any = None) -> dict[str, float]:
  """Median seconds of XLA's and the matmul weight gradient of one layer on this CPU:
  {'xla': ..., 'matmul': ...}, over ``TIMING_ROUNDS`` calls each, interleaved so that
  a load that comes and goes slows both alike."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(x_shape), dtype)
  w = jnp.asarray(rng.standard_normal(kernel_shape), dtype)
  conv = functools.partial(lax.conv_general_dilated, window_strides=strides, padding=padding,
                           rhs_dilation=rhs_dilation, dimension_numbers=NHWC_DIMENSIONS,
                           precision=precision)
  g = jnp.asarray(rng.standard_normal(jax.eval_shape(conv, x, w).shape), dtype)
  functions = {
      'xla': jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0]),
      'matmul': jax.jit(lambda x, w, g: weight_gradient(
          x, g, w.shape, strides, padding, rhs_dilation, precision).astype(w.dtype)),
  }
  times: dict[str, list[float]] = {name: [] for name in functions}
  for name, function in functions.items():  # Compiles, and warms up.
    function(x, w, g).block_until_ready()
  for round_index in range(TIMING_ROUNDS):
    for name in sorted(functions, reverse=bool(round_index % 2)):
      start = time.perf_counter()
      functions[name](x, w, g).block_until_ready()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(values) for name, values in times.items()}


_verdicts_lock = threading.Lock()
_verdicts: dict[str, dict[str, Any]] = {}  # The cache file's contents, by its path.


def _layer_key(x_shape, kernel_shape, strides, padding, rhs_dilation, dtype, precision) -> str:
  return (f'x{list(x_shape)} w{list(kernel_shape)} s{list(strides)} p{padding} '
          f'd{list(rhs_dilation)} {jnp.dtype(dtype).name} {precision}')


def measured_matmul_pays(x_shape: Sequence[int], kernel_shape: Sequence[int],
                         strides: Sequence[int], padding: Any, rhs_dilation: Sequence[int],
                         dtype: Any, precision: Any = None) -> bool:
  """Whether the matmul weight gradient is faster on this CPU for this layer: from the
  verdict cache, else timed once (``time_weight_gradients``) and added to it."""
  path = verdict_cache_path()
  cpu = f'{cpu_description()}; jax {jax.__version__}'
  layer = _layer_key(x_shape, kernel_shape, strides, padding, rhs_dilation, dtype, precision)
  with _verdicts_lock:
    if path not in _verdicts:
      try:
        with open(path) as file:
          _verdicts[path] = json.load(file)
      except (OSError, ValueError):  # None yet, or unreadable: timed again.
        _verdicts[path] = {}
    known = _verdicts[path].get(cpu, {}).get(layer)
    if known is not None:
      return known['matmul']
    # In a thread of its own: this runs while a function is being traced, and JAX's
    # tracing state is per thread, so the timed calls run as ordinary computations.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      seconds = pool.submit(time_weight_gradients, x_shape, kernel_shape, strides, padding,
                            rhs_dilation, dtype, precision).result()
    pays = seconds['matmul'] < MATMUL_MARGIN * seconds['xla']
    logging.info('Weight gradient of %s on this CPU: XLA %.2f ms, matmul %.2f ms: %s '
                 '(kept in %s).', layer, 1e3 * seconds['xla'], 1e3 * seconds['matmul'],
                 'matmul' if pays else 'XLA', path)
    _verdicts[path].setdefault(cpu, {})[layer] = {
        'matmul': pays, 'xla_ms': round(1e3 * seconds['xla'], 3),
        'matmul_ms': round(1e3 * seconds['matmul'], 3)}
    try:  # Written whole, then renamed: a reader never sees half a file.
      os.makedirs(os.path.dirname(path), exist_ok=True)
      paths.write_whole(path, json.dumps(_verdicts[path], indent=1, sort_keys=True))
    except OSError as error:  # A read-only home: timed again by the next process.
      logging.warning('Could not keep the weight-gradient verdicts in %s: %s', path, error)
    return pays


# Weight gradients of the custom VJP: the matmul, or the verdict timed for its shapes.
MATMUL, TIMED = 'matmul', 'timed'


def _weight_gradient_choice(kernel_shape: Sequence[int], strides: Sequence[int]) -> str | None:
  """MATMUL, TIMED (decided when the gradient is traced) or None (XLA's, no custom VJP)."""
  if _mode in ('matmul', 'xla'):
    return MATMUL if _mode == 'matmul' else None
  if jax.default_backend() != 'cpu':
    return None
  if _mode == 'rule':
    return MATMUL if matmul_pays_on_cpu(kernel_shape, strides) else None
  if jax.process_count() > 1:  # Every process must trace the same program: no timing.
    return None
  # Timed only where a gradient is taken (not for inference or initialization), for
  # the shapes it is taken at.
  return TIMED


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _matmul_vjp_conv(x: jax.Array, w: jax.Array, strides: tuple[int, ...], padding: Any,
                     rhs_dilation: tuple[int, ...], precision: Any, choice: str) -> jax.Array:
  del choice  # The backward pass's.
  return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=rhs_dilation,
                                  dimension_numbers=NHWC_DIMENSIONS, precision=precision)


def _matmul_vjp_conv_fwd(x, w, strides, padding, rhs_dilation, precision, choice):
  return _matmul_vjp_conv(x, w, strides, padding, rhs_dilation, precision, choice), (x, w)


def _matmul_vjp_conv_bwd(strides, padding, rhs_dilation, precision, choice, residuals, g):
  x, w = residuals
  conv = functools.partial(lax.conv_general_dilated, window_strides=strides, padding=padding,
                           rhs_dilation=rhs_dilation, dimension_numbers=NHWC_DIMENSIONS,
                           precision=precision)
  if choice == TIMED and not measured_matmul_pays(x.shape, w.shape, strides, padding,
                                                  rhs_dilation, x.dtype, precision):
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
  as ``weight_gradient_mode`` selects (by default: on CPUs, where it pays).
  """
  covered = (lhs.ndim == 4 and _is_nhwc(dimension_numbers)
             and all(d == 1 for d in (lhs_dilation or (1, 1)))
             and feature_group_count == 1 and batch_group_count == 1
             and preferred_element_type is None)
  choice = _weight_gradient_choice(rhs.shape, window_strides) if covered else None
  if choice is None:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type)
  return _matmul_vjp_conv(lhs, rhs, tuple(window_strides), _hashable_padding(padding),
                          tuple(rhs_dilation or (1, 1)), precision, choice)
