r"""Command: throughput of training and inference, optionally against the same model in
PyTorch (the workloads are ``srgan_jax/benchmarking/workloads.py``).

  python -m srgan_jax.benchmark --run=srresnet,srgan,inference --batch_sizes=16,128 \
      --dtype=bfloat16 --json=/tmp/benchmark.json
  python -m srgan_jax.benchmark --run=srresnet,inference --batch_sizes=16 --compare=torch
  python -m srgan_jax.benchmark --run=srresnet --batch_sizes=16 --steps_per_call=1,8
  python -m srgan_jax.benchmark --run=pipeline --batch_sizes=16      # tf.data alone
  python -m srgan_jax.benchmark --run=degradation --batch_sizes=16 --crop_size=64
  python -m srgan_jax.benchmark --run=srresnet --batch_sizes=16 --compare=torch \
      --weight_gradients=xla,auto --rounds=20     # side by side, on a busy machine

What is timed (the configs come from srgan_jax/configs/default.py):

* ``srresnet``: the SRResNet (pixel MSE) train step, and ``srgan``: the full SRGAN
  step (D update on HR and G(LR), then G on VGG54 content + 1e-3 adversarial), both
  the jitted, sharded, state-donating steps of ``training/steps.py`` at the paper's shape
  (96x96 HR crops, x4) for each ``--batch_sizes``. Batches are synthetic and already
  on the devices, so this is the step alone, without input. The VGG19 of the content
  loss has random weights in the real layout: the work is the same as with the
  trained weights, which timing does not need.
* ``inference``: jitted generator application (``train=False``) at each LR side of
  ``--inference_sizes``, on one device; reported as output megapixels per second.
* ``pipeline``: the tf.data input pipeline alone (HR crops per second), only when
  tensorflow is installed; it is the only part that imports it.
* ``degradation``: Real-ESRGAN's degradation (``data/realesrgan.py``, default.py's
  settings) of a batch of random ``--crop_size`` HR crops, jitted on one device, as
  ``data.degradation='realesrgan'`` adds it to each batch (images per second, ms per
  batch; its weight_gradient column reads 'realesrgan').

Each line is timed over ``--steps`` calls after compilation and ``--warmup`` calls,
with one host synchronisation at the end, not per step (``--rounds`` below times
otherwise). FLOPs per step come from XLA's cost analysis of the compiled program
(every op XLA counts; convolutions as 2 FLOPs per multiply-add, not counting kernel
taps on the zero padding); model FLOP utilisation (MFU) divides them by the step
time and the device's peak from chip_peaks.py (not reported where the peak is
unknown, e.g. CPUs).

``--weight_gradients=xla,auto`` times each JAX line once per mode of the
convolutions' weight gradient (conv_autotune.py: 'auto' is the matmul weight gradient on CPUs
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
tests/unit/benchmarking/torch_reference_test.py), starting from the same weights, on the same kind of
device (CUDA when JAX is on GPUs, else CPU), channels_last, with bf16 autocast for
``--dtype=bfloat16`` and optionally ``torch.compile``, and prints the ratio of JAX to
PyTorch images per second on each line. torch is imported only then.
"""
from collections.abc import Sequence
import json
import os
from typing import Any

from absl import flags
import jax

from srgan_jax.benchmarking import report_table
from srgan_jax.benchmarking import workloads
from srgan_jax.imaging import image_io
from srgan_jax.nn import conv_autotune
from srgan_jax.runtime import cli
from srgan_jax.runtime import flag_checks
from srgan_jax.runtime import memory
from srgan_jax.runtime import paths


def _define_flags() -> None:
  """The command-line flags, defined only when this module is the program."""
  flags.DEFINE_list('run', ['srresnet', 'srgan', 'inference'],
                    f'What to time, among {", ".join(workloads.BENCHMARKS)}.')
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
                    f'{", ".join(conv_autotune.MODES)} (srgan_jax/nn/conv.py); e.g. xla,auto.')
  flags.DEFINE_integer('rounds', 0, 'Time the variants of each line (--weight_gradients '
                       'modes, PyTorch) side by side: N rounds of one call each, in the reverse '
                       'order every other round; report the median, min and max call and the '
                       'load. 0: each variant over --steps calls, one after the other.')
  flags.DEFINE_list('steps_per_call', ['1'], 'Train steps per compiled call (jax.lax.scan over '
                    'a stack of batches, as config.steps_per_call): each train line once per '
                    'value; times are per step.')
  flags.DEFINE_list('data_folders', None, 'HR image folders for --run=pipeline '
                    '(default: srgan_jax/configs/default.py).')


def _integers(name: str, values: Sequence[str], minimum: int) -> list[int]:
  """A list flag's integers; errors.ConfigError naming the flag otherwise."""
  try:
    numbers = [int(value) for value in values]
  except ValueError:
    numbers = None
  flag_checks.check_flags([], (numbers is None or any(n < minimum for n in numbers)) and
                          f'--{name} takes integers >= {minimum}, got {",".join(values)}')
  return numbers


def _check_flags(f: Any) -> tuple[list[int], list[int], tuple[int, int] | None, list[int]]:
  """Every flag, before JAX starts: (batch sizes, inference sizes, widths, steps per call)."""
  batch_sizes = _integers('batch_sizes', f.batch_sizes, 1)
  steps_per_call = _integers('steps_per_call', f.steps_per_call, 1)
  inference_sizes = _integers('inference_sizes', f.inference_sizes, 1)
  widths = tuple(_integers('widths', f.widths, 1)) if f.widths else None
  unknown = sorted(set(f.run) - set(workloads.BENCHMARKS))
  batched = sorted(set(f.run) & {'srresnet', 'srgan', 'pipeline', 'degradation'})
  flag_checks.check_flags(
      [('crop_size', f.crop_size, flag_checks.integer(minimum=16)),
       ('inference_batch', f.inference_batch, flag_checks.integer(minimum=1)),
       ('steps', f.steps, flag_checks.integer(minimum=1)),
       ('warmup', f.warmup, flag_checks.integer(minimum=0)),
       ('rounds', f.rounds, flag_checks.integer(minimum=0)),
       ('weight_gradients', f.weight_gradients, flag_checks.subset_of(*conv_autotune.MODES))],
      not f.run and f'--run must name something to time, of {", ".join(workloads.BENCHMARKS)}',
      unknown and (f'--run: unknown {", ".join(unknown)}; '
                   f'choose from {", ".join(workloads.BENCHMARKS)}'),
      batched and not batch_sizes and f'--batch_sizes is empty; --run={",".join(batched)} '
                                      'needs at least one, e.g. 16',
      'inference' in f.run and not inference_sizes and '--inference_sizes is empty; '
                                                       '--run=inference needs one, e.g. 64',
      f.crop_size % 16 and f'--crop_size must be a multiple of 16 (and of the scale 4), '
                           f'got {f.crop_size}',
      widths is not None and len(widths) != 2 and '--widths takes num_blocks,features',
      *[flag_checks.folder_problem(folder, 'data_folders') for folder in f.data_folders or ()],
      any(b % jax.device_count() for b in batch_sizes) and
      f'--batch_sizes must be multiples of the {jax.device_count()} devices',
      # Before the timing, not after it: a report that cannot be written is lost.
      flag_checks.output_problem(f.json, flag='--json', suffix='.json'))
  if 'pipeline' in f.run and f.data_folders:
    flag_checks.check_flags([], *[
        not image_io.image_files(folder, recursive=True) and
        f'--data_folders: no image files ({", ".join(image_io.IMAGE_SUFFIXES)}) in {folder}'
        for folder in f.data_folders])
  return batch_sizes, inference_sizes, widths, steps_per_call


def main() -> None:
  f = flags.FLAGS
  batch_sizes, inference_sizes, widths, steps_per_call = _check_flags(f)
  try:
    report = _run(f, batch_sizes, inference_sizes, widths, steps_per_call)
  except (MemoryError, RuntimeError) as error:  # Host, or XLA's (a RuntimeError).
    raise memory.out_of_memory(
        error, 'while timing', 'lower --batch_sizes, --crop_size, --inference_sizes or '
        '--inference_batch') or error
  print(report_table.format_table(report))
  if f.json:
    output = paths.absolute(f.json)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    # Whole or not at all: a full disk leaves the previous report, not 0 bytes.
    paths.write_whole(output, json.dumps(report, indent=2))
    print(f'wrote {output}')


def _run(f: Any, batch_sizes: list[int], inference_sizes: list[int],
         widths: tuple[int, int] | None, steps_per_call: list[int]) -> dict[str, Any]:
  return workloads.run_benchmarks(workloads.BenchmarkOptions(
      benchmarks=tuple(f.run), batch_sizes=tuple(batch_sizes), crop_size=f.crop_size,
      inference_sizes=tuple(inference_sizes), inference_batch=f.inference_batch,
      dtype=f.dtype, steps=f.steps, warmup=f.warmup, widths=widths, compare=f.compare,
      torch_compile=f.torch_compile, torch_channels_last=f.torch_channels_last,
      data_folders=f.data_folders and tuple(paths.absolute(folder) for folder in f.data_folders),
      weight_gradients=tuple(f.weight_gradients), rounds=f.rounds,
      steps_per_call=tuple(steps_per_call)))


def run() -> None:
  """``python -m srgan_jax.benchmark`` through ``cli.run``."""
  cli.run(main, name='benchmark', define_flags=_define_flags)


if __name__ == '__main__':
  run()
