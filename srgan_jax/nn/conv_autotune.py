"""Which weight gradient each convolution takes on this CPU: the modes, the fixed rule,
and the timing on first use with its cache of verdicts.

``conv.py`` computes a convolution's weight gradient either as XLA's convolution or as
one matrix product; which is faster depends on the layer and on the CPU (the rule
that won on one CPU lost on another: notes/PERFORMANCE.md, sections 7 and 9). This
module decides, per layer, when its gradient is traced (``weight_gradient_choice``):

- 'auto', the default: on the CPU backend, times both weight gradients of a layer the
  first time its gradient is traced at a new shape (forward-only programs, such as
  inference, time nothing), takes the matmul only where it is at least
  ``MATMUL_MARGIN`` faster, and keeps the verdicts in a JSON file per CPU model, core
  count and jax version (``verdict_cache_path``), so later runs trace without timing;
  on GPUs and TPUs, whose weight-gradient convolutions are fast, XLA's.
- 'rule': ``matmul_pays_on_cpu`` on CPUs, without timing (deterministic: the tests
  use it).
- 'matmul' and 'xla' force the matmul on or off.

``SRGAN_JAX_WEIGHT_GRADIENTS`` sets the mode a process starts in. A mode applies to
functions traced while it is set (jitted functions keep what they were traced with).
"""

from collections.abc import Callable, Mapping, Sequence
import concurrent.futures
import contextlib
import json
import os
import statistics
import threading
import time
from typing import Any, Iterator

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from srgan_jax.runtime import paths

MODES = ('auto', 'rule', 'matmul', 'xla')
MODE_VARIABLE = 'SRGAN_JAX_WEIGHT_GRADIENTS'
# The matmul is taken only where its median time is below this fraction of XLA's: a
# layer where the two are within the noise of a shared machine keeps XLA's.
MATMUL_MARGIN = 0.9
# Timed calls of each weight gradient per layer, interleaved, after one warm-up call.
TIMING_ROUNDS = 5
VERDICT_FILE = 'conv_weight_gradients.json'

# Weight gradients of conv.py's custom VJP: the matmul, or the verdict timed for its shapes.
MATMUL, TIMED = 'matmul', 'timed'

# One layer's weight gradients by name ('xla', 'matmul'): (input, kernel, output
# gradient) -> kernel gradient, in the kernel's dtype.
WeightGradients = Mapping[str, Callable[[jax.Array, jax.Array, jax.Array], jax.Array]]


def _initial_mode() -> str:
  """The mode of ``SRGAN_JAX_WEIGHT_GRADIENTS``, else 'auto'."""
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
  """Whether the matmul weight gradient measured faster than XLA's on a CPU (2 Zen 3
  cores; the per-layer and whole-step measurements: notes/PERFORMANCE.md, section 7).

  It paid for the stride-1 convolutions whose input and output channel counts differ
  by 2x or more (the generator's upsampling and 9x9 tail, the discriminator's widening
  layers, the 9x9 head), and not for the generator's 64 -> 64 body or the stride-2
  layers.
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
  """``conv_weight_gradients.json`` in the project's cache folder (``paths.cache_dir``:
  ``$SRGAN_JAX_CACHE``, else ``~/.cache/srgan_jax``)."""
  return os.path.join(paths.cache_dir(), VERDICT_FILE)


def time_weight_gradients(gradients: WeightGradients, x_shape: Sequence[int],
                          kernel_shape: Sequence[int], out_shape: Sequence[int],
                          dtype: Any) -> dict[str, float]:
  """Median seconds of each of one layer's weight gradients on this CPU ({'xla': ...,
  'matmul': ...}), over ``TIMING_ROUNDS`` calls each on random arrays of the layer's
  shapes, interleaved so that a load that comes and goes slows all of them alike."""
  rng = np.random.default_rng(0)
  x, w, g = (jnp.asarray(rng.standard_normal(shape), dtype)
             for shape in (x_shape, kernel_shape, out_shape))
  functions = {name: jax.jit(gradient) for name, gradient in gradients.items()}
  times: dict[str, list[float]] = {name: [] for name in functions}
  for function in functions.values():  # Compiles, and warms up.
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
  """A layer's entry in the verdict cache."""
  return (f'x{list(x_shape)} w{list(kernel_shape)} s{list(strides)} p{padding} '
          f'd{list(rhs_dilation)} {jnp.dtype(dtype).name} {precision}')


def _read_verdicts(path: str) -> dict[str, Any]:
  """The verdict cache file's contents, read once per process (empty when there is
  none yet or it is unreadable: its layers are timed again).

  The file is ours: whatever is not ``{cpu: {layer: {'matmul': bool, ...}}}`` (a
  damaged or hand-edited file) is dropped, and the file rewritten without it with
  the next verdict.
  """
  if path not in _verdicts:
    try:
      with open(path) as file:
        loaded = json.load(file)
    except (OSError, ValueError):
      loaded = {}
    kept = {cpu: {layer: verdict for layer, verdict in layers.items()
                  if isinstance(verdict, dict) and isinstance(verdict.get('matmul'), bool)}
            for cpu, layers in (loaded.items() if isinstance(loaded, dict) else ())
            if isinstance(layers, dict)}
    _verdicts[path] = {cpu: layers for cpu, layers in kept.items() if layers}
  return _verdicts[path]


def _write_verdicts(path: str) -> None:
  """Writes the verdicts whole, then renames: a reader never sees half a file."""
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    paths.write_whole(path, json.dumps(_verdicts[path], indent=1, sort_keys=True))
  except OSError as error:  # A read-only home: timed again by the next process.
    logging.warning('Could not keep the weight-gradient verdicts in %s: %s', path, error)


def measured_matmul_pays(gradients: WeightGradients, x_shape: Sequence[int],
                         kernel_shape: Sequence[int], out_shape: Sequence[int],
                         strides: Sequence[int], padding: Any, rhs_dilation: Sequence[int],
                         dtype: Any, precision: Any = None) -> bool:
  """Whether the matmul weight gradient is faster on this CPU for this layer: from the
  verdict cache, else ``gradients`` timed once (``time_weight_gradients``) and the
  verdict added to the cache."""
  path = verdict_cache_path()
  cpu = f'{cpu_description()}; jax {jax.__version__}'
  layer = _layer_key(x_shape, kernel_shape, strides, padding, rhs_dilation, dtype, precision)
  with _verdicts_lock:
    verdicts = _read_verdicts(path)
    known = verdicts.get(cpu, {}).get(layer)
    if known is not None:
      return known['matmul']
    # In a thread of its own: this runs while a function is being traced, and JAX's
    # tracing state is per thread, so the timed calls run as ordinary computations.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      seconds = pool.submit(time_weight_gradients, gradients, x_shape, kernel_shape,
                            out_shape, dtype).result()
    pays = seconds['matmul'] < MATMUL_MARGIN * seconds['xla']
    logging.info('Weight gradient of %s on this CPU: XLA %.2f ms, matmul %.2f ms: %s '
                 '(kept in %s).', layer, 1e3 * seconds['xla'], 1e3 * seconds['matmul'],
                 'matmul' if pays else 'XLA', path)
    verdicts.setdefault(cpu, {})[layer] = {
        'matmul': pays, 'xla_ms': round(1e3 * seconds['xla'], 3),
        'matmul_ms': round(1e3 * seconds['matmul'], 3)}
    _write_verdicts(path)
    return pays


def weight_gradient_choice(kernel_shape: Sequence[int], strides: Sequence[int]) -> str | None:
  """The weight gradient of a covered convolution traced now: MATMUL, TIMED (decided
  by ``measured_matmul_pays`` when its gradient is traced) or None (XLA's)."""
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
