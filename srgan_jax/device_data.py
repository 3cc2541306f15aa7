"""Command: times the device-resident training data source on this machine's device.

  python -m srgan_jax.device_data [--folders=...] [--batch_size=16] [--steps=200]

Prints crops per second after compilation. The source is ``srgan_jax/data/on_device.py``.
"""

import time

from absl import flags
import jax
import ml_collections

from srgan_jax.data import on_device
from srgan_jax.runtime import cli
from srgan_jax.runtime import flag_checks
from srgan_jax.runtime import paths


def _define_flags() -> None:
  flags.DEFINE_list('folders', [paths.dataset('T91'), paths.dataset('BSD200')],
                    'Training image folders (default: in $SRGAN_DATASETS).')
  flags.DEFINE_integer('batch_size', 16, 'Crops per step.')
  flags.DEFINE_integer('crop_size', 96, 'HR crop side.')
  flags.DEFINE_integer('scale', 4, 'Super-resolution factor.')
  flags.DEFINE_integer('steps', 200, 'Timed steps, after one warm-up step.')


def main() -> None:
  """Prints this device's crops per second, after compilation."""
  options = flags.FLAGS
  flag_checks.check_flags(
      [('batch_size', options.batch_size, flag_checks.integer(minimum=1)),
       ('crop_size', options.crop_size, flag_checks.integer(minimum=1)),
       ('scale', options.scale, flag_checks.integer(minimum=2)),
       ('steps', options.steps, flag_checks.integer(minimum=1))],
      *[flag_checks.folder_problem(folder, 'folders') for folder in options.folders])
  config = ml_collections.ConfigDict(
      {'folders': [paths.absolute(folder) for folder in flags.FLAGS.folders], 'crop_size': flags.FLAGS.crop_size, 'augment': True})
  source = on_device.DeviceDataSource(config, scale=flags.FLAGS.scale, seed=0)
  batch_size, steps = flags.FLAGS.batch_size, flags.FLAGS.steps
  jax.block_until_ready(source.batch(0, batch_size))
  start = time.perf_counter()
  jax.block_until_ready([source.batch(step, batch_size) for step in range(1, steps + 1)])
  seconds = time.perf_counter() - start
  print(f'{source.num_images} images ({source.nbytes / 2**20:.0f} MB) on '
        f'{jax.local_devices()[0].device_kind}: {steps * batch_size / seconds:.0f} crops/s '
        f'({seconds / steps * 1e3:.2f} ms per batch of {batch_size})')


def run() -> None:
  """``python -m srgan_jax.device_data`` through ``cli.run``."""
  cli.run(main, name='device_data', define_flags=_define_flags)


if __name__ == '__main__':
  run()
