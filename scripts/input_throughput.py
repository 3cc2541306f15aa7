r"""Measures the training input pipeline in HR crops per second.

The paper's setting on the small training sets: T91 + BSD200 (from
``../shared/datasets``), batch 16, 96x96 HR crops, scale 4, augmented:

  python -m scripts.input_throughput [--datasets=../shared/datasets] [--nocache]

(from the repository root; ``python scripts/input_throughput.py`` works too once
the package is installed, ``pip install -e .``).

Prints the start-up time (listing and, when cached, decoding the images) and the
steady rate after a warm-up, on all of this machine's CPU cores.
"""

import os
import pathlib
import time

from absl import app
from absl import flags
import ml_collections

from srgan_jax import input_pipeline

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string('datasets', '../shared/datasets',
                      'Folder holding the image sets (relative to the working directory).')
  flags.DEFINE_list('sets', ['T91', 'BSD200'], 'Image sets (subfolders) to train on.')
  flags.DEFINE_bool('cache', True, 'Decode the images once into memory (else per step).')
  flags.DEFINE_integer('batch_size', 16, 'Crops per step.')
  flags.DEFINE_integer('crop_size', 96, 'HR crop side.')
  flags.DEFINE_integer('scale', 4, 'Super-resolution factor.')
  flags.DEFINE_integer('warmup_steps', 50, 'Batches fetched before timing.')
  flags.DEFINE_integer('steps', 500, 'Batches timed.')


def main(argv: list[str]) -> None:
  del argv
  folders = [str(pathlib.Path(FLAGS.datasets) / name) for name in FLAGS.sets]
  config = ml_collections.ConfigDict(dict(
      source='folders', folders=folders, tfds_name='', tfds_split='train',
      tfds_image_key='image', tfds_data_dir=None, crop_size=FLAGS.crop_size, augment=True,
      cache=FLAGS.cache, crops_per_image=1, prefetch=2))
  start = time.perf_counter()
  train_input = input_pipeline.TrainInput(config, scale=FLAGS.scale,
                                          batch_size=FLAGS.batch_size, seed=0)
  batches = train_input.iterator(0)
  next(batches)
  startup = time.perf_counter() - start
  for _ in range(FLAGS.warmup_steps):
    next(batches)
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    next(batches)
  seconds = time.perf_counter() - start
  print(f'{"+".join(FLAGS.sets)} ({train_input.num_images} images, '
        f'cache={FLAGS.cache}), batch {FLAGS.batch_size}, crop {FLAGS.crop_size}, '
        f'scale {FLAGS.scale}, {os.cpu_count()} CPU cores: '
        f'{FLAGS.steps * FLAGS.batch_size / seconds:.0f} crops/s '
        f'({FLAGS.steps / seconds:.0f} batches/s); start-up {startup:.1f} s')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
