"""The benchmark's workloads: what is timed (train steps, inference, the input
pipeline, Real-ESRGAN's degradation), at which shapes, against which PyTorch twin; each result is one row of
``report_table``.

The command and what each workload means: ``srgan_jax/benchmark.py``.
"""

from collections.abc import Callable, Sequence
import dataclasses
import functools
import importlib.util
import os
import platform
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from srgan_jax.benchmarking import chip_peaks
from srgan_jax.benchmarking import report_table
from srgan_jax.benchmarking import timing
from srgan_jax.benchmarking import torch_reference
from srgan_jax.configs import default
from srgan_jax.data import realesrgan
from srgan_jax.nn import conv_autotune
from srgan_jax.nn import vgg19
from srgan_jax.runtime import sharding
from srgan_jax.training import steps as train_steps

BENCHMARKS = ('srresnet', 'srgan', 'inference', 'pipeline', 'degradation')
ROUNDS_NOTE = ('ms/step: the median call of {rounds} rounds, each calling every variant of '
               'a line once (in the reverse order every other round); ms min/max: the '
               'fastest and slowest call; load: the 1-minute load average over the rounds; '
               'JAX/torch: the ratio of the medians.')
RANDOM_VGG_NOTE = ('VGG19 weights are random values in the real layout: the same work as '
                   'trained weights, which timing does not need.')


def benchmark_config(*, batch_size: int, crop_size: int = 96, dtype: str = 'float32',
                     widths: tuple[int, int] | None = None,
                     steps_per_call: int = 1) -> ml_collections.ConfigDict:
  """srgan_jax/configs/default.py with the benchmark's batch, crop and dtype.

  ``widths = (num_blocks, features)`` narrows the generator (small test runs), with
  the paper's ratio of 4 between the upsampling and body widths.
  """
  config = default.get_config()
  config.batch_size = batch_size
  config.data.crop_size = crop_size
  config.dtype = dtype
  config.steps_per_call = steps_per_call
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


def compile_train_step(config: ml_collections.ConfigDict, phase: str,
                       generator: train_steps.TrainState, discriminator: train_steps.TrainState,
                       batch: dict[str, jax.Array], vgg_params: Any,
                       replicated: jax.sharding.NamedSharding, *,
                       peak: float | None) -> timing.Prepared:
  """training/steps.py's jitted step of a phase, compiled; its calls donate (consume) the states.

  With ``config.steps_per_call`` k > 1, each call runs k steps (``scan_steps``) over a
  stack of k batches (``batch`` is that stack), as the training loop runs them; the
  fields are per step (seconds per call / k).
  """
  per_call = config.steps_per_call
  srresnet_step, srgan_step = train_steps.compile_steps(config, 'caffe', replicated,
                                                        scanned=per_call > 1)
  train_metrics = train_steps.empty_metrics(phase, replicated)
  if phase == train_steps.SRRESNET:
    jitted, carry, rest = srresnet_step, (generator, train_metrics), (batch, 0)
  else:
    jitted, carry, rest = srgan_step, (generator, discriminator, train_metrics), (
        batch, vgg_params, 0)
  start = time.perf_counter()
  compiled = jitted.lower(*carry, *rest).compile()
  compile_s = time.perf_counter() - start
  flops = compiled_flops(compiled)

  def fields(seconds: float) -> dict[str, Any]:
    # XLA's cost analysis counts a loop's body once (measured: a 3-step scan reports the
    # FLOPs of one step), so ``flops`` is already per step.
    return {'compile_s': compile_s, **timing.rates(
        seconds / per_call, config.batch_size, flops, peak, jax.device_count())}

  return timing.Loop(lambda states: compiled(*states, *rest), carry), fields


def generator_variables(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Freshly initialized generator variables (host numpy), as the train state has them."""
  model = train_steps.create_generator(config)
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(config.seed), jnp.zeros((1, 8, 8, 3), jnp.float32))
  return jax.device_get(variables)


def compile_inference(config: ml_collections.ConfigDict, variables: dict[str, Any],
                      lr_images: np.ndarray, *, peak: float | None) -> timing.Prepared:
  """Jitted generator inference (``train=False``) on the first device, compiled."""
  device = jax.devices()[0]
  model = train_steps.create_generator(config)
  variables = jax.device_put(variables, device)
  lr = jax.device_put(lr_images, device)
  start = time.perf_counter()
  compiled = jax.jit(functools.partial(model.apply, train=False)).lower(variables, lr).compile()
  compile_s = time.perf_counter() - start
  flops = compiled_flops(compiled)
  output_pixels = lr_images.shape[0] * lr_images.shape[1] * lr_images.shape[2] * config.scale**2

  def fields(seconds: float) -> dict[str, Any]:
    return {'compile_s': compile_s, **timing.rates(seconds, len(lr_images), flops, peak),
            'megapixels_per_s': output_pixels / seconds / 1e6}

  # Every output is kept so that the final sync waits for all of them.
  return timing.Loop(lambda outputs: [*outputs, compiled(variables, lr)], []), fields


def time_pipeline(config: ml_collections.ConfigDict, *, steps: int,
                  warmup: int) -> dict[str, Any]:
  """Times the tf.data input pipeline alone: host batches of HR crops and their LR.

  The first timed calls may find batches already prefetched (``data.prefetch``):
  time many more steps than that.
  """
  from srgan_jax.data import tf_pipeline  # pylint: disable=g-import-not-at-top  # Imports tensorflow.
  batches = tf_pipeline.create_train_iterator(
      config.data, scale=config.scale, batch_size=config.batch_size, seed=config.seed,
      start_step=0)
  seconds = timing.time_loop(timing.Loop(lambda _: next(batches), None, lambda _: None), steps, warmup)
  return timing.rates(seconds, config.batch_size, None, None)


def compile_degradation(config: ml_collections.ConfigDict) -> timing.Prepared:
  """Real-ESRGAN's degradation (``data/realesrgan.degrade``, default.py's settings) of
  a batch of ``config.batch_size`` HR crops on the first device, a new key per call;
  timed as ms per batch and images (LR made) per second."""
  settings = realesrgan.Settings.from_config(config.data.realesrgan)
  crop = config.data.crop_size
  hr = jax.device_put(np.random.default_rng(0).uniform(
      0, 1, (config.batch_size, crop, crop, 3)).astype(np.float32))

  @jax.jit
  def call(step):
    lr = realesrgan.degrade(jax.random.fold_in(jax.random.key(config.seed), step), hr,
                            settings, config.scale)
    return step + 1, lr

  compiled = call.lower(jnp.int32(0)).compile()
  loop = timing.Loop(lambda carry: compiled(carry[0]), (jnp.int32(0), None))
  return loop, lambda seconds: timing.rates(seconds, config.batch_size, None, None)


def _host_variables(state: train_steps.TrainState) -> dict[str, Any]:
  """A state's variables as host numpy, the weights the PyTorch twin starts from."""
  return jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})


def _per_mode(compile_variant: Callable[[], timing.Prepared],
              modes: Sequence[str]) -> dict[str, Callable[[], timing.Prepared]]:
  """One JAX variant per weight gradient mode: ``compile_variant`` run under that mode."""
  def variant(mode: str) -> timing.Prepared:
    with conv_autotune.weight_gradient_mode(mode):
      return compile_variant()
  return {mode: functools.partial(variant, mode) for mode in modes}


def _torch_variant(model: torch_reference.TorchSRGAN, step: Callable[..., Any],
                   *nhwc: np.ndarray) -> timing.Prepared:
  """The PyTorch variant calling ``step`` on these images; it reports ms and images/s."""
  tensors = [model.images(images) for images in nhwc]

  def fields(seconds: float) -> dict[str, Any]:
    return {'ms_per_step': seconds * 1e3, 'images_per_s': len(nhwc[0]) / seconds}

  return timing.Loop(lambda _: step(*tensors), None, model.synchronize), fields


def _with_torch(row: dict[str, Any], torch_fields: dict[str, Any]) -> dict[str, Any]:
  """A result line with the PyTorch timing and the JAX / PyTorch throughput ratio."""
  # Timed in the same rounds, PyTorch saw the load the row already carries.
  torch_rates = {key: value for key, value in torch_fields.items() if key != 'load_1min'}
  return {**row, 'torch': torch_rates,
          'jax_over_torch': row['images_per_s'] / torch_rates['images_per_s']}


def _time_line(line: dict[str, Any], jax_variants: dict[str, Callable[[], timing.Prepared]],
               torch_variant: Callable[[], timing.Prepared] | None,
               add: Callable[[dict[str, Any]], None], schedule: dict[str, int]) -> None:
  """Times one benchmark line (``measure``); adds a result row per weight gradient mode.

  The PyTorch variant, if any, is timed last (or in the same rounds) and each row is
  compared with it, so rows are added once it is timed.
  """
  variants = {**jax_variants, **({timing.TORCH: torch_variant} if torch_variant else {})}
  rows = []
  for name, fields in timing.measure(variants, **schedule):
    if name == timing.TORCH:
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
                    ) -> tuple[dict[str, Callable[[], timing.Prepared]], Callable[[], timing.Prepared] | None]:
  """A train step line's JAX variants (one per mode, from the same states, on a
  synthetic batch) and its PyTorch variant (from the same weights; None without)."""
  replicated = jax.sharding.NamedSharding(mesh, jax.P())
  create_states = jax.jit(functools.partial(train_steps.create_states, config, phase),
                          out_shardings=replicated)
  host_batch = synthetic_batch(config.batch_size, config.data.crop_size, config.scale)
  per_call = config.steps_per_call
  if per_call > 1:  # The same crops at each step of a call: the work does not depend on them.
    batch = sharding.shard_batch(
        {key: np.broadcast_to(value, (per_call, *value.shape))
         for key, value in host_batch.items()},
        jax.sharding.NamedSharding(mesh, jax.P(None, 'data')))
  else:
    batch = sharding.shard_batch(host_batch, jax.sharding.NamedSharding(mesh, jax.P('data')))

  def compile_step() -> timing.Prepared:
    generator, discriminator = create_states()  # The same states for each mode.
    with jax.set_mesh(mesh):
      return compile_train_step(config, phase, generator, discriminator, batch, device_vgg,
                                replicated, peak=peak)

  if not torch_options['device']:
    return _per_mode(compile_step, weight_gradients), None
  # Host copies of the weights: the JAX steps consume (donate) their states.
  generator, discriminator = create_states()
  initial = [_host_variables(generator)]
  if phase == train_steps.SRGAN:
    initial += [_host_variables(discriminator), host_vgg]

  def torch_variant() -> timing.Prepared:
    model = torch_reference.TorchSRGAN(config, phase, *initial, **torch_options)
    step = model.srresnet_step if phase == train_steps.SRRESNET else model.srgan_step
    return _torch_variant(model, step, host_batch['lr'], host_batch['hr'])

  return _per_mode(compile_step, weight_gradients), torch_variant


@dataclasses.dataclass(frozen=True)
class BenchmarkOptions:
  """What ``run_benchmarks`` times, and how (the command's flags, checked)."""
  benchmarks: tuple[str, ...] = ('srresnet', 'srgan', 'inference')  # Of BENCHMARKS.
  batch_sizes: tuple[int, ...] = (16,)  # Global batches of the train steps and pipeline.
  crop_size: int = 96  # HR crop side of the train steps (the paper's).
  inference_sizes: tuple[int, ...] = (64, 128)  # LR sides of generator inference.
  inference_batch: int = 1  # Images per inference call.
  dtype: str = 'float32'  # Compute dtype: 'float32' or 'bfloat16'.
  steps: int = 10  # Timed calls per variant (without rounds).
  warmup: int = 2  # Untimed calls after compilation.
  widths: tuple[int, int] | None = None  # (num_blocks, features) of a smaller generator.
  compare: str | None = None  # 'torch': also time the PyTorch twin.
  torch_compile: bool = False  # torch.compile the PyTorch networks.
  torch_channels_last: bool = True  # PyTorch tensors in channels_last memory.
  data_folders: tuple[str, ...] | None = None  # The pipeline's HR folders (default: config's).
  weight_gradients: tuple[str, ...] = ('auto',)  # Each JAX line once per conv_autotune.MODES mode.
  rounds: int = 0  # > 0: variants side by side over that many rounds (``timing.measure``).
  steps_per_call: tuple[int, ...] = (1,)  # Train steps per compiled call (``scan_steps``).

  def __post_init__(self):
    unknown = set(self.benchmarks) - set(BENCHMARKS)
    if unknown:
      raise ValueError(f'unknown benchmarks {sorted(unknown)}; choose from {BENCHMARKS}')
    if self.compare not in (None, 'torch'):
      raise ValueError(f"compare must be None or 'torch', got {self.compare!r}")
    unknown = set(self.weight_gradients) - set(conv_autotune.MODES)
    if unknown or not self.weight_gradients:
      raise ValueError(f'weight_gradients must be among {conv_autotune.MODES}, '
                       f'got {self.weight_gradients}')
    if self.rounds < 0:
      raise ValueError(f'rounds must be >= 0, got {self.rounds}')
    if not self.steps_per_call or min(self.steps_per_call) < 1:
      raise ValueError(f'steps_per_call must be >= 1, got {self.steps_per_call}')


def run_benchmarks(options: BenchmarkOptions = BenchmarkOptions(),
                   log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs the requested benchmarks; returns {'environment', 'notes', 'results'}.

  Each JAX line is timed once per mode of ``options.weight_gradients``. With
  ``options.rounds``, the variants of a line are timed side by side over that many
  rounds (``timing.measure``). Each result line is logged as soon as it is measured.
  """
  device_kind = jax.devices()[0].device_kind
  peak = chip_peaks.peak_tflops(device_kind, options.dtype)
  environment = _environment(options, device_kind, peak)
  notes = [ROUNDS_NOTE.format(rounds=options.rounds)] if options.rounds else []
  torch_options = _torch_options(options, environment)
  results = []

  def add(row: dict[str, Any]) -> None:
    results.append(row)
    log(report_table.format_row(row, bool(options.rounds)))

  if 'srgan' in options.benchmarks:
    notes.append(RANDOM_VGG_NOTE)
  _time_train_steps(options, peak, torch_options, add)
  if 'inference' in options.benchmarks:
    _time_inference(options, peak, torch_options, add)
  if 'pipeline' in options.benchmarks:
    _time_pipelines(options, notes, log, add)
  if 'degradation' in options.benchmarks:
    for batch_size in options.batch_sizes:
      config = benchmark_config(batch_size=batch_size, crop_size=options.crop_size)
      _time_line({'benchmark': 'degradation', 'batch_size': batch_size,
                  'hr_size': options.crop_size},
                 {'realesrgan': functools.partial(compile_degradation, config)}, None, add,
                 _schedule(options))
  return {'environment': environment, 'notes': notes, 'results': results}


def _environment(options: BenchmarkOptions, device_kind: str,
                 peak: float | None) -> dict[str, Any]:
  """The report's description of the machine and of the run's options."""
  return {
      'jax': jax.__version__, 'backend': jax.default_backend(), 'device_kind': device_kind,
      'cpu': conv_autotune.cpu_description(),  # The host's, also on accelerators: rows name it.
      'device_count': jax.device_count(), 'dtype': options.dtype, 'peak_tflops_per_device': peak,
      'xla_flags': os.environ.get('XLA_FLAGS', ''), 'python': platform.python_version(),
      'steps': options.steps, 'warmup': options.warmup, 'widths': options.widths,
      'weight_gradients': list(options.weight_gradients), 'rounds': options.rounds,
      'steps_per_call': list(options.steps_per_call)}


def _torch_options(options: BenchmarkOptions, environment: dict[str, Any]) -> dict[str, Any]:
  """The PyTorch twin's options (its ``device`` None: no comparison); with the
  comparison, imports torch and adds its version and settings to ``environment``."""
  device = None
  if options.compare == 'torch':
    import torch  # pylint: disable=g-import-not-at-top
    device = torch_reference.torch_device()
    environment.update(torch=torch.__version__, torch_device=device,
                       torch_threads=torch.get_num_threads(), torch_compile=options.torch_compile,
                       torch_channels_last=options.torch_channels_last)
  return {'device': device, 'channels_last': options.torch_channels_last,
          'compile_networks': options.torch_compile}


def _schedule(options: BenchmarkOptions) -> dict[str, int]:
  """How each line's variants are timed (``timing.measure``'s arguments)."""
  return {'steps': options.steps, 'warmup': options.warmup, 'rounds': options.rounds}


def _time_train_steps(options: BenchmarkOptions, peak: float | None,
                      torch_options: dict[str, Any],
                      add: Callable[[dict[str, Any]], None]) -> None:
  """Times the requested train steps (SRResNet, SRGAN) at every batch size and steps
  per call, on all devices."""
  mesh = sharding.create_mesh()
  host_vgg = device_vgg = None
  if 'srgan' in options.benchmarks:
    host_vgg = random_vgg_params()
    device_vgg = jax.device_put(host_vgg, jax.sharding.NamedSharding(mesh, jax.P()))
  for phase in (train_steps.SRRESNET, train_steps.SRGAN):
    if phase not in options.benchmarks:
      continue
    for batch_size in options.batch_sizes:
      for per_call in options.steps_per_call:
        config = benchmark_config(batch_size=batch_size, crop_size=options.crop_size,
                                  dtype=options.dtype, widths=options.widths,
                                  steps_per_call=per_call)
        line = {'benchmark': f'{phase}_step', 'batch_size': batch_size,
                'hr_size': options.crop_size, 'steps_per_call': per_call}
        _time_line(line, *_train_variants(config, phase, mesh, host_vgg, device_vgg,
                                          weight_gradients=options.weight_gradients,
                                          torch_options=torch_options, peak=peak),
                   add, _schedule(options))


def _time_inference(options: BenchmarkOptions, peak: float | None,
                    torch_options: dict[str, Any],
                    add: Callable[[dict[str, Any]], None]) -> None:
  """Times generator inference at every LR side of ``options.inference_sizes``."""
  config = benchmark_config(batch_size=options.inference_batch, crop_size=options.crop_size,
                            dtype=options.dtype, widths=options.widths)
  variables = generator_variables(config)
  torch_model = (torch_reference.TorchSRGAN(config, train_steps.SRRESNET, variables,
                                            **torch_options)
                 if torch_options['device'] else None)
  rng = np.random.default_rng(0)
  for size in options.inference_sizes:
    lr_images = rng.uniform(0, 1, (options.inference_batch, size, size, 3)).astype(np.float32)
    line = {'benchmark': 'inference', 'batch_size': options.inference_batch,
            'hr_size': size * config.scale}
    # The same forward under each mode; timed again to show it.
    compile_variant = functools.partial(compile_inference, config, variables, lr_images,
                                        peak=peak)
    torch_variant = (functools.partial(_torch_variant, torch_model, torch_model.generate,
                                       lr_images) if torch_model else None)
    _time_line(line, _per_mode(compile_variant, options.weight_gradients), torch_variant, add,
               _schedule(options))


def _time_pipelines(options: BenchmarkOptions, notes: list[str], log: Callable[[str], None],
                    add: Callable[[dict[str, Any]], None]) -> None:
  """Times the tf.data input pipeline at every batch size; without tensorflow, says
  so in a note (and the log) instead."""
  if importlib.util.find_spec('tensorflow') is None:
    notes.append('pipeline: skipped, tensorflow is not installed.')
    log(notes[-1])
    return
  for batch_size in options.batch_sizes:
    config = benchmark_config(batch_size=batch_size, crop_size=options.crop_size,
                              dtype=options.dtype)
    if options.data_folders:
      config.data.folders = list(options.data_folders)
    row = time_pipeline(config, steps=options.steps, warmup=options.warmup)
    add({'benchmark': 'pipeline', 'batch_size': batch_size, 'hr_size': options.crop_size, **row})
