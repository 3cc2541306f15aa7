r"""Throughput of training and inference, optionally against the same model in PyTorch.

  python -m srgan_jax.benchmark --run=srresnet,srgan,inference --batch_sizes=16,128 \
      --dtype=bfloat16 --json=/tmp/benchmark.json
  python -m srgan_jax.benchmark --run=srresnet,inference --batch_sizes=16 --compare=torch
  python -m srgan_jax.benchmark --run=pipeline --batch_sizes=16      # tf.data alone
  python -m srgan_jax.benchmark --run=srresnet --batch_sizes=16 --compare=torch \
      --weight_gradients=xla,auto --rounds=20     # side by side, on a busy machine

What is timed (the configs come from srgan_jax/configs/default.py):

* ``srresnet``: the SRResNet (pixel MSE) train step, and ``srgan``: the full SRGAN
  step (D update on HR and G(LR), then G on VGG54 content + 1e-3 adversarial), both
  the jitted, sharded, state-donating steps of ``train.py`` at the paper's shape
  (96x96 HR crops, x4) for each ``--batch_sizes``. Batches are synthetic and already
  on the devices, so this is the step alone, without input. The VGG19 of the content
  loss has random weights in the real layout: the work is the same as with the
  trained weights, which timing does not need.
* ``inference``: jitted generator application (``train=False``) at each LR side of
  ``--inference_sizes``, on one device; reported as output megapixels per second.
* ``pipeline``: the tf.data input pipeline alone (HR crops per second), only when
  tensorflow is installed; it is the only part that imports it.

Each line is timed over ``--steps`` calls after compilation and ``--warmup`` calls,
with one host synchronisation at the end, not per step (``--rounds`` below times
otherwise). FLOPs per step come from XLA's cost analysis of the compiled program
(every op XLA counts; convolutions as 2 FLOPs per multiply-add, not counting kernel
taps on the zero padding); model FLOP utilisation (MFU) divides them by the step
time and the device's peak from chip_peaks.py (not reported where the peak is
unknown, e.g. CPUs).

``--weight_gradients=xla,auto`` times each JAX line once per mode of the
convolutions' weight gradient (conv.py: 'auto' is the matmul weight gradient on CPUs
where it pays, 'xla' XLA's own, 'matmul' the matmul one for every convolution);
the PyTorch line, timed once, is compared with each.

``--rounds=N`` times the variants of each line (each ``--weight_gradients`` mode and,
with ``--compare=torch``, PyTorch) side by side instead of one after the other: after
their warm-up, each round calls every variant once (synchronising after each call),
in the reverse order every other round, so that a shared machine's drifting load
slows all of them alike; ms/step is then the median call of N rounds, shown with the
fastest and slowest call and the range of the 1-minute load average over the rounds,
and the JAX/PyTorch ratio is that of the medians. ``--steps`` is not used then, and
the pipeline is timed as without rounds. ``--rounds=0`` (the default) times each
variant over ``--steps`` calls, one variant after the other.

``--compare=torch`` runs a PyTorch implementation of the same networks, losses and
steps (torch_reference.py; its losses equal the JAX ones on the same weights, see
tests/torch_reference_test.py), starting from the same weights, on the same kind of
device (CUDA when JAX is on GPUs, else CPU), channels_last, with bf16 autocast for
``--dtype=bfloat16`` and optionally ``torch.compile``, and prints the ratio of JAX to
PyTorch images per second on each line. torch is imported only then.
"""

from collections.abc import Callable, Iterator, Sequence
import functools
import importlib.util
import json
import os
import platform
import time
from typing import Any, NamedTuple

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from srgan_jax import chip_peaks
from srgan_jax import conv
from srgan_jax import paths
from srgan_jax import sharding
from srgan_jax import torch_reference
from srgan_jax import train
from srgan_jax import vgg19
from srgan_jax.configs import default
from srgan_jax.configs import validation

BENCHMARKS = ('srresnet', 'srgan', 'inference', 'pipeline')
ROUNDS_NOTE = ('ms/step: the median call of {rounds} rounds, each calling every variant of '
               'a line once (in the reverse order every other round); ms min/max: the '
               'fastest and slowest call; load: the 1-minute load average over the rounds; '
               'JAX/torch: the ratio of the medians.')
RANDOM_VGG_NOTE = ('VGG19 weights are random values in the real layout: the same work as '
                   'trained weights, which timing does not need.')


def benchmark_config(*, batch_size: int, crop_size: int = 96, dtype: str = 'float32',
                     widths: tuple[int, int] | None = None) -> ml_collections.ConfigDict:
  """srgan_jax/configs/default.py with the benchmark's batch, crop and dtype.

  ``widths = (num_blocks, features)`` narrows the generator (small test runs), with
  the paper's ratio of 4 between the upsampling and body widths.
  """
  config = default.get_config()
  config.batch_size = batch_size
  config.data.crop_size = crop_size
  config.dtype = dtype
  if widths:
    config.generator.num_blocks, config.generator.features = widths
    config.generator.upsample_features = 4 * widths[1]
  return config


def random_vgg_params(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
  """VGG19 parameters with random values in the layout of ``vgg19.param_shapes()``.

  He-normal kernels keep the activations of the 16 layers at a steady scale, so the
  losses stay finite and comparable between implementations.
  """
  rng = np.random.default_rng(seed)
  params = {}
  for name, shapes in vgg19.param_shapes().items():
    height, width, in_channels, _ = shapes['kernel']
    std = np.sqrt(2.0 / (height * width * in_channels))
    params[name] = {'kernel': rng.standard_normal(shapes['kernel'], np.float32) * std,
                    'bias': np.zeros(shapes['bias'], np.float32)}
  return params


def synthetic_batch(batch_size: int, crop_size: int, scale: int,
                    seed: int = 0) -> dict[str, np.ndarray]:
  """Random LR in [0, 1] and HR in [-1, 1], NHWC float32, as the input pipeline gives."""
  rng = np.random.default_rng(seed)
  lr_size = crop_size // scale
  return {'lr': rng.uniform(0, 1, (batch_size, lr_size, lr_size, 3)).astype(np.float32),
          'hr': rng.uniform(-1, 1, (batch_size, crop_size, crop_size, 3)).astype(np.float32)}


def compiled_flops(compiled: jax.stages.Compiled) -> float | None:
  """FLOPs per call on one device, from XLA's cost analysis (None if not given).

  JAX 0.10 returns a dict; older releases returned a list with one dict per program.
  The program is the per-device one after SPMD partitioning.
  """
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  flops = (cost or {}).get('flops')
  return float(flops) if flops and flops > 0 else None


class Loop(NamedTuple):
  """A call to time, ``carry = step(carry)``, and how the host waits for a carry."""
  step: Callable[[Any], Any]
  carry: Any
  sync: Callable[[Any], Any] = jax.block_until_ready


# A variant ready to time: its loop, and what turns seconds per call into result fields.
Prepared = tuple[Loop, Callable[[float], dict[str, Any]]]
TORCH = 'torch'  # The name of the PyTorch variant of a line.


def run_calls(loop: Loop, calls: int) -> tuple[float, Loop]:
  """Seconds of ``calls`` calls with one sync at the end, and the loop with the new carry."""
  carry = loop.carry
  start = time.perf_counter()
  for _ in range(calls):
    carry = loop.step(carry)
  loop.sync(carry)
  return time.perf_counter() - start, loop._replace(carry=carry)


def time_loop(loop: Loop, steps: int, warmup: int) -> float:
  """Seconds per call of ``carry = step(carry)`` after ``warmup`` calls.

  The host waits (``sync``) only before and after the timed calls, so device work
  queues up as it does in the training loop.
  """
  _, loop = run_calls(loop, warmup)
  seconds, _ = run_calls(loop, steps)
  return seconds / steps


def round_robin(loops: dict[str, Loop], rounds: int,
                warmup: int) -> tuple[dict[str, list[float]], list[float]]:
  """Seconds of each call of each loop, one call of each per round, after their warm-up.

  The order is reversed every other round, so that no loop always runs right after
  the same other one. Returns the seconds by loop and the 1-minute load average after
  each round.
  """
  loops = {name: run_calls(loop, warmup)[1] for name, loop in loops.items()}
  seconds = {name: [] for name in loops}
  loads = []
  names = list(loops)
  for index in range(rounds):
    for name in reversed(names) if index % 2 else names:
      elapsed, loops[name] = run_calls(loops[name], 1)
      seconds[name].append(elapsed)
    loads.append(os.getloadavg()[0])
  return seconds, loads


def measure(variants: dict[str, Callable[[], Prepared]], *, steps: int, warmup: int,
            rounds: int) -> Iterator[tuple[str, dict[str, Any]]]:
  """Prepares and times the variants of a line; yields (name, result fields) in order.

  ``rounds=0``: one after the other, each timed over ``steps`` calls right after its
  preparation and yielded as soon as timed. Otherwise all are prepared first, then
  timed by round_robin: the fields are those of the median call, with the fastest
  and slowest call (``ms_min``, ``ms_max``) and the load range (``load_1min``).
  """
  if not rounds:
    for name, prepare in variants.items():
      loop, fields = prepare()
      yield name, fields(time_loop(loop, steps, warmup))
    return
  prepared = {name: prepare() for name, prepare in variants.items()}
  seconds, loads = round_robin({name: loop for name, (loop, _) in prepared.items()},
                               rounds, warmup)
  for name, (_, fields) in prepared.items():
    yield name, {**fields(float(np.median(seconds[name]))),
                 'ms_min': min(seconds[name]) * 1e3, 'ms_max': max(seconds[name]) * 1e3,
                 'load_1min': [min(loads), max(loads)]}


def _rates(seconds: float, images: int, flops: float | None, peak: float | None,
           num_devices: int = 1) -> dict[str, Any]:
  """Timing fields of a result line; ``flops`` are per device."""
  tflops = flops / seconds / 1e12 if flops else None
  return {'ms_per_step': seconds * 1e3, 'images_per_s': images / seconds,
          'flops_per_step': flops * num_devices if flops else None,
          'tflops_per_s_per_device': tflops,
          'mfu': tflops / peak if tflops and peak else None}


def compile_train_step(config: ml_collections.ConfigDict, phase: str,
                       generator: train.TrainState, discriminator: train.TrainState,
                       batch: dict[str, jax.Array], vgg_params: Any,
                       replicated: jax.sharding.NamedSharding, *,
                       peak: float | None) -> Prepared:
  """train.py's jitted step of a phase, compiled; its calls donate (consume) the states."""
  srresnet_step, srgan_step = train.compile_steps(config, 'caffe', replicated)
  train_metrics = train.empty_metrics(phase, replicated)
  if phase == train.SRRESNET:
    jitted, carry, rest = srresnet_step, (generator, train_metrics), (batch, 0)
  else:
    jitted, carry, rest = srgan_step, (generator, discriminator, train_metrics), (
        batch, vgg_params, 0)
  start = time.perf_counter()
  compiled = jitted.lower(*carry, *rest).compile()
  compile_s = time.perf_counter() - start
  flops = compiled_flops(compiled)

  def fields(seconds: float) -> dict[str, Any]:
    return {'compile_s': compile_s,
            **_rates(seconds, config.batch_size, flops, peak, jax.device_count())}

  return Loop(lambda states: compiled(*states, *rest), carry), fields


def generator_variables(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Freshly initialised generator variables (host numpy), as the train state has them."""
  model = train.create_generator(config)
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(config.seed), jnp.zeros((1, 8, 8, 3), jnp.float32))
  return jax.device_get(variables)


def compile_inference(config: ml_collections.ConfigDict, variables: dict[str, Any],
                      lr_images: np.ndarray, *, peak: float | None) -> Prepared:
  """Jitted generator inference (``train=False``) on the first device, compiled."""
  device = jax.devices()[0]
  model = train.create_generator(config)
  variables = jax.device_put(variables, device)
  lr = jax.device_put(lr_images, device)
  start = time.perf_counter()
  compiled = jax.jit(functools.partial(model.apply, train=False)).lower(variables, lr).compile()
  compile_s = time.perf_counter() - start
  flops = compiled_flops(compiled)
  output_pixels = lr_images.shape[0] * lr_images.shape[1] * lr_images.shape[2] * config.scale**2

  def fields(seconds: float) -> dict[str, Any]:
    return {'compile_s': compile_s, **_rates(seconds, len(lr_images), flops, peak),
            'megapixels_per_s': output_pixels / seconds / 1e6}

  # Every output is kept so that the final sync waits for all of them.
  return Loop(lambda outputs: [*outputs, compiled(variables, lr)], []), fields


def time_pipeline(config: ml_collections.ConfigDict, *, steps: int,
                  warmup: int) -> dict[str, Any]:
  """Times the tf.data input pipeline alone: host batches of HR crops and their LR.

  The first timed calls may find batches already prefetched (``data.prefetch``):
  time many more steps than that.
  """
  from srgan_jax import input_pipeline  # pylint: disable=g-import-not-at-top  # Imports tensorflow.
  batches = input_pipeline.create_train_iterator(
      config.data, scale=config.scale, batch_size=config.batch_size, seed=config.seed,
      start_step=0)
  seconds = time_loop(Loop(lambda _: next(batches), None, lambda _: None), steps, warmup)
  return _rates(seconds, config.batch_size, None, None)


def _host_variables(state: train.TrainState) -> dict[str, Any]:
  """A state's variables as host numpy, the weights the PyTorch twin starts from."""
  return jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})


def _per_mode(compile_variant: Callable[[], Prepared],
              modes: Sequence[str]) -> dict[str, Callable[[], Prepared]]:
  """One JAX variant per weight gradient mode: ``compile_variant`` run under that mode."""
  def variant(mode: str) -> Prepared:
    with conv.weight_gradient_mode(mode):
      return compile_variant()
  return {mode: functools.partial(variant, mode) for mode in modes}


def _torch_variant(model: torch_reference.TorchSRGAN, step: Callable[..., Any],
                   *nhwc: np.ndarray) -> Prepared:
  """The PyTorch variant calling ``step`` on these images; it reports ms and images/s."""
  tensors = [model.images(images) for images in nhwc]

  def fields(seconds: float) -> dict[str, Any]:
    return {'ms_per_step': seconds * 1e3, 'images_per_s': len(nhwc[0]) / seconds}

  return Loop(lambda _: step(*tensors), None, model.synchronize), fields


def _with_torch(row: dict[str, Any], torch_fields: dict[str, Any]) -> dict[str, Any]:
  """A result line with the PyTorch timing and the JAX / PyTorch throughput ratio."""
  # Timed in the same rounds, PyTorch saw the load the row already carries.
  torch_rates = {key: value for key, value in torch_fields.items() if key != 'load_1min'}
  return {**row, 'torch': torch_rates,
          'jax_over_torch': row['images_per_s'] / torch_rates['images_per_s']}


def _time_line(line: dict[str, Any], jax_variants: dict[str, Callable[[], Prepared]],
               torch_variant: Callable[[], Prepared] | None,
               add: Callable[[dict[str, Any]], None], timing: dict[str, int]) -> None:
  """Times one benchmark line (``measure``); adds a result row per weight gradient mode.

  The PyTorch variant, if any, is timed last (or in the same rounds) and each row is
  compared with it, so rows are added once it is timed.
  """
  variants = {**jax_variants, **({TORCH: torch_variant} if torch_variant else {})}
  rows = []
  for name, fields in measure(variants, **timing):
    if name == TORCH:
      rows = [_with_torch(row, fields) for row in rows]
    else:
      rows.append({**line, 'weight_gradient': name, **fields})
      if not torch_variant:
        add(rows[-1])
  if torch_variant:
    for row in rows:
      add(row)


def _train_variants(config: ml_collections.ConfigDict, phase: str, mesh: jax.sharding.Mesh,
                    host_vgg: Any, device_vgg: Any, *, weight_gradients: Sequence[str],
                    torch_options: dict[str, Any], peak: float | None
                    ) -> tuple[dict[str, Callable[[], Prepared]], Callable[[], Prepared] | None]:
  """A train step line's JAX variants (one per mode, from the same states, on a
  synthetic batch) and its PyTorch variant (from the same weights; None without)."""
  replicated = jax.sharding.NamedSharding(mesh, jax.P())
  create_states = jax.jit(functools.partial(train.create_states, config, phase),
                          out_shardings=replicated)
  host_batch = synthetic_batch(config.batch_size, config.data.crop_size, config.scale)
  batch = sharding.shard_batch(host_batch, jax.sharding.NamedSharding(mesh, jax.P('data')))

  def compile_step() -> Prepared:
    generator, discriminator = create_states()  # The same states for each mode.
    with jax.set_mesh(mesh):
      return compile_train_step(config, phase, generator, discriminator, batch, device_vgg,
                                replicated, peak=peak)

  if not torch_options['device']:
    return _per_mode(compile_step, weight_gradients), None
  # Host copies of the weights: the JAX steps consume (donate) their states.
  generator, discriminator = create_states()
  initial = [_host_variables(generator)]
  if phase == train.SRGAN:
    initial += [_host_variables(discriminator), host_vgg]

  def torch_variant() -> Prepared:
    model = torch_reference.TorchSRGAN(config, phase, *initial, **torch_options)
    step = model.srresnet_step if phase == train.SRRESNET else model.srgan_step
    return _torch_variant(model, step, host_batch['lr'], host_batch['hr'])

  return _per_mode(compile_step, weight_gradients), torch_variant


def run_benchmarks(*, benchmarks: Sequence[str] = ('srresnet', 'srgan', 'inference'),
                   batch_sizes: Sequence[int] = (16,), crop_size: int = 96,
                   inference_sizes: Sequence[int] = (64, 128), inference_batch: int = 1,
                   dtype: str = 'float32', steps: int = 10, warmup: int = 2,
                   widths: tuple[int, int] | None = None, compare: str | None = None,
                   torch_compile: bool = False, torch_channels_last: bool = True,
                   data_folders: Sequence[str] | None = None,
                   weight_gradients: Sequence[str] = ('auto',), rounds: int = 0,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs the requested benchmarks; returns {'environment', 'notes', 'results'}.

  Each JAX line is timed once per mode of ``weight_gradients`` (conv.MODES). With
  ``rounds``, the variants of a line are timed side by side over that many rounds
  (``measure``). Each result line is logged as soon as it is measured.
  """
  unknown = set(benchmarks) - set(BENCHMARKS)
  if unknown:
    raise ValueError(f'unknown benchmarks {sorted(unknown)}; choose from {BENCHMARKS}')
  if compare not in (None, 'torch'):
    raise ValueError(f"compare must be None or 'torch', got {compare!r}")
  unknown = set(weight_gradients) - set(conv.MODES)
  if unknown or not weight_gradients:
    raise ValueError(f'weight_gradients must be among {conv.MODES}, got {weight_gradients}')
  if rounds < 0:
    raise ValueError(f'rounds must be >= 0, got {rounds}')
  device_kind = jax.devices()[0].device_kind
  peak = chip_peaks.peak_tflops(device_kind, dtype)
  environment = {
      'jax': jax.__version__, 'backend': jax.default_backend(), 'device_kind': device_kind,
      'device_count': jax.device_count(), 'dtype': dtype, 'peak_tflops_per_device': peak,
      'xla_flags': os.environ.get('XLA_FLAGS', ''), 'python': platform.python_version(),
      'steps': steps, 'warmup': warmup, 'widths': widths,
      'weight_gradients': list(weight_gradients), 'rounds': rounds}
  notes = []
  if rounds:
    notes.append(ROUNDS_NOTE.format(rounds=rounds))
  device = None  # Where PyTorch runs; None: no comparison.
  if compare == 'torch':
    import torch  # pylint: disable=g-import-not-at-top
    device = torch_reference.torch_device()
    environment.update(torch=torch.__version__, torch_device=device,
                       torch_threads=torch.get_num_threads(), torch_compile=torch_compile,
                       torch_channels_last=torch_channels_last)
  torch_options = {'device': device, 'channels_last': torch_channels_last,
                   'compile_networks': torch_compile}
  results = []

  def add(row: dict[str, Any]) -> None:
    results.append(row)
    log(format_row(row, bool(rounds)))

  mesh = sharding.create_mesh()
  timing = {'steps': steps, 'warmup': warmup, 'rounds': rounds}
  host_vgg = device_vgg = None
  if 'srgan' in benchmarks:
    notes.append(RANDOM_VGG_NOTE)
    host_vgg = random_vgg_params()
    device_vgg = jax.device_put(host_vgg, jax.sharding.NamedSharding(mesh, jax.P()))
  for phase in (train.SRRESNET, train.SRGAN):
    if phase not in benchmarks:
      continue
    for batch_size in batch_sizes:
      config = benchmark_config(batch_size=batch_size, crop_size=crop_size, dtype=dtype,
                                widths=widths)
      line = {'benchmark': f'{phase}_step', 'batch_size': batch_size, 'hr_size': crop_size}
      _time_line(line, *_train_variants(config, phase, mesh, host_vgg, device_vgg,
                                        weight_gradients=weight_gradients,
                                        torch_options=torch_options, peak=peak),
                 add, timing)
  if 'inference' in benchmarks:
    config = benchmark_config(batch_size=inference_batch, crop_size=crop_size, dtype=dtype,
                              widths=widths)
    variables = generator_variables(config)
    torch_model = (torch_reference.TorchSRGAN(config, train.SRRESNET, variables,
                                              **torch_options) if device else None)
    rng = np.random.default_rng(0)
    for size in inference_sizes:
      lr_images = rng.uniform(0, 1, (inference_batch, size, size, 3)).astype(np.float32)
      line = {'benchmark': 'inference', 'batch_size': inference_batch,
              'hr_size': size * config.scale}
      # The same forward under each mode; timed again to show it.
      compile_variant = functools.partial(compile_inference, config, variables, lr_images,
                                          peak=peak)
      torch_variant = (functools.partial(_torch_variant, torch_model, torch_model.generate,
                                         lr_images) if torch_model else None)
      _time_line(line, _per_mode(compile_variant, weight_gradients), torch_variant, add,
                 timing)
  if 'pipeline' in benchmarks:
    if importlib.util.find_spec('tensorflow') is None:
      notes.append('pipeline: skipped, tensorflow is not installed.')
      log(notes[-1])
    else:
      for batch_size in batch_sizes:
        config = benchmark_config(batch_size=batch_size, crop_size=crop_size, dtype=dtype)
        if data_folders:
          config.data.folders = list(data_folders)
        row = time_pipeline(config, steps=steps, warmup=warmup)
        add({'benchmark': 'pipeline', 'batch_size': batch_size, 'hr_size': crop_size, **row})
  return {'environment': environment, 'notes': notes, 'results': results}


_COLUMNS = (('benchmark', 'benchmark', '{}'), ('dW', 'weight_gradient', '{}'),
            ('batch', 'batch_size', '{}'),
            ('HR side', 'hr_size', '{}'), ('ms/step', 'ms_per_step', '{:.1f}'),
            ('ms min', 'ms_min', '{:.1f}'), ('ms max', 'ms_max', '{:.1f}'),
            ('images/s', 'images_per_s', '{:.2f}'), ('MP/s', 'megapixels_per_s', '{:.2f}'),
            ('TFLOP/s/dev', 'tflops_per_s_per_device', '{:.3f}'), ('MFU', 'mfu', '{:.1%}'),
            ('torch ms', ('torch', 'ms_per_step'), '{:.1f}'),
            ('torch min', ('torch', 'ms_min'), '{:.1f}'),
            ('torch max', ('torch', 'ms_max'), '{:.1f}'),
            ('torch img/s', ('torch', 'images_per_s'), '{:.2f}'),
            ('JAX/torch', 'jax_over_torch', '{:.2f}'),
            ('load', 'load_1min', '{0[0]:.2f}-{0[1]:.2f}'))
# Shown only for runs with rounds.
_ROUND_COLUMNS = frozenset({'ms min', 'ms max', 'torch min', 'torch max', 'load'})


def _columns(rounds: bool) -> list[tuple[str, Any, str]]:
  """The table's columns: those of the round statistics only for runs with rounds."""
  return [column for column in _COLUMNS if rounds or column[0] not in _ROUND_COLUMNS]


def format_row(row: dict[str, Any], rounds: bool = False) -> str:
  """One result line of the table ('-' for what was not measured)."""
  cells = []
  for _, key, fmt in _columns(rounds):
    value = row.get(key[0], {}).get(key[1]) if isinstance(key, tuple) else row.get(key)
    cells.append('-' if value is None else fmt.format(value))
  return ' | '.join(cells)


def format_table(report: dict[str, Any]) -> str:
  """The report as a Markdown table, with the environment and notes above it."""
  environment = ', '.join(f'{k}={v}' for k, v in report['environment'].items() if v)
  rounds = bool(report['environment'].get('rounds'))
  columns = _columns(rounds)
  lines = [environment, *report['notes'],
           ' | '.join(title for title, _, _ in columns),
           ' | '.join('---' for _ in columns)]
  lines += [format_row(row, rounds) for row in report['results']]
  return '\n'.join(lines)


def _define_flags() -> None:
  """The command-line flags, defined only when this module is the program."""
  flags.DEFINE_list('run', ['srresnet', 'srgan', 'inference'],
                    f'What to time, among {", ".join(BENCHMARKS)}.')
  flags.DEFINE_list('batch_sizes', ['16', '64'],
                    'Global batch sizes of the train steps (and the pipeline); 16 is the paper\'s.')
  flags.DEFINE_integer('crop_size', 96, 'HR crop side of the train steps (paper: 96).')
  flags.DEFINE_list('inference_sizes', ['64', '128', '256'], 'LR sides for generator inference.')
  flags.DEFINE_integer('inference_batch', 1, 'Images per generator inference call.')
  flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')
  flags.DEFINE_integer('steps', 20, 'Timed calls per line.')
  flags.DEFINE_integer('warmup', 3, 'Untimed calls after compilation.')
  flags.DEFINE_string('json', None, 'Write the report as JSON to this path.')
  flags.DEFINE_enum('compare', None, ['torch'], 'Also time the PyTorch implementation.')
  flags.DEFINE_bool('torch_compile', False, 'torch.compile the PyTorch networks.')
  flags.DEFINE_bool('torch_channels_last', True, 'PyTorch tensors in channels_last memory.')
  flags.DEFINE_list('widths', None, 'num_blocks,features of the generator (small test runs).')
  flags.DEFINE_list('weight_gradients', ['auto'],
                    f'Time each JAX line with these conv weight gradients, among '
                    f'{", ".join(conv.MODES)} (srgan_jax/conv.py); e.g. xla,auto.')
  flags.DEFINE_integer('rounds', 0, 'Time the variants of each line (--weight_gradients '
                       'modes, PyTorch) side by side: N rounds of one call each, in the reverse '
                       'order every other round; report the median, min and max call and the '
                       'load. 0: each variant over --steps calls, one after the other.')
  flags.DEFINE_list('data_folders', None, 'HR image folders for --run=pipeline '
                    '(default: srgan_jax/configs/default.py).')


def _integers(name: str, values: Sequence[str], minimum: int) -> list[int]:
  """A list flag's integers; errors.ConfigError naming the flag otherwise."""
  try:
    numbers = [int(value) for value in values]
  except ValueError:
    numbers = None
  validation.check_flags([], (numbers is None or any(n < minimum for n in numbers)) and
                         f'--{name} takes integers >= {minimum}, got {",".join(values)}')
  return numbers


def _check_flags(f: Any) -> tuple[list[int], list[int], tuple[int, int] | None]:
  """Every flag, before JAX starts: (batch sizes, inference sizes, widths)."""
  batch_sizes = _integers('batch_sizes', f.batch_sizes, 1)
  inference_sizes = _integers('inference_sizes', f.inference_sizes, 1)
  widths = tuple(_integers('widths', f.widths, 1)) if f.widths else None
  unknown = sorted(set(f.run) - set(BENCHMARKS))
  missing = [folder for folder in f.data_folders or () if not os.path.isdir(folder)]
  validation.check_flags(
      [('crop_size', f.crop_size, validation.integer(minimum=16)),
       ('inference_batch', f.inference_batch, validation.integer(minimum=1)),
       ('steps', f.steps, validation.integer(minimum=1)),
       ('warmup', f.warmup, validation.integer(minimum=0)),
       ('rounds', f.rounds, validation.integer(minimum=0))],
      unknown and f'--run: unknown {", ".join(unknown)}; choose from {", ".join(BENCHMARKS)}',
      f.crop_size % 16 and f'--crop_size must be a multiple of 16 (and of the scale 4), '
                           f'got {f.crop_size}',
      widths is not None and len(widths) != 2 and '--widths takes num_blocks,features',
      missing and f'--data_folders: no folder {", ".join(missing)}',
      any(b % jax.device_count() for b in batch_sizes) and
      f'--batch_sizes must be multiples of the {jax.device_count()} devices',
      f.json is not None and os.path.isdir(f.json) and f'--json={f.json} is a folder')
  return batch_sizes, inference_sizes, widths


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  batch_sizes, inference_sizes, widths = _check_flags(f)
  report = run_benchmarks(
      benchmarks=f.run, batch_sizes=batch_sizes, crop_size=f.crop_size,
      inference_sizes=inference_sizes, inference_batch=f.inference_batch,
      dtype=f.dtype, steps=f.steps, warmup=f.warmup, widths=widths, compare=f.compare,
      torch_compile=f.torch_compile, torch_channels_last=f.torch_channels_last,
      data_folders=f.data_folders and [paths.absolute(folder) for folder in f.data_folders],
      weight_gradients=f.weight_gradients, rounds=f.rounds)
  print(format_table(report))
  if f.json:
    output = paths.absolute(f.json)
    with open(output, 'w') as file:
      json.dump(report, file, indent=2)
    print(f'wrote {output}')


if __name__ == '__main__':
  from srgan_jax import cli  # pylint: disable=g-import-not-at-top

  _define_flags()
  cli.run(main)
