"""Trains or evaluates SRGAN. The only module with flags.

  python -m srgan_jax.main --config=configs/x4.py --workdir=gs://BUCKET/run
  python -m srgan_jax.main --config=configs/x4.py --workdir=W --mode=evaluate [--step=N]

Config fields can be overridden, e.g. --config.batch_size=32. Multi-host runs (a
Cloud TPU VM pod slice, or processes started with JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID set) call jax.distributed.initialize() first.

The config is checked as a whole (configs/validation.py) before anything is created.
A workdir has one writer: a second training run on it refuses to start (workdir_lock).

Exit status (errors.py): 0 finished; 75 preempted (SIGTERM): a checkpoint was saved,
rerun the same command to resume; 2 something to fix first, said in one line on stderr
(a bad flag or config field, a missing file, an incompatible checkpoint, a workdir in
use, a failed checkpoint write, a NaN loss); 1 a bug, with a traceback. --verbosity=1
shows tracebacks and the logs of other libraries.
"""

import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from srgan_jax import cli
from srgan_jax import evaluate
from srgan_jax import paths
from srgan_jax import train
from srgan_jax import workdir_lock
from srgan_jax.configs import validation

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and logs (local or gs://).')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'evaluate'],
                          'train: run or resume training; evaluate: score a checkpoint.')
_STEP = flags.DEFINE_integer('step', None, 'With --mode=evaluate: the checkpoint step (default latest).')
config_flags.DEFINE_config_file('config', None, 'Training configuration file.', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def _initialise_distributed() -> None:
  """Starts JAX's multi-host runtime when this is one process of several."""
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    jax.distributed.initialize(
        coordinator_address=os.environ['JAX_COORDINATOR_ADDRESS'],
        num_processes=int(os.environ['JAX_NUM_PROCESSES']),
        process_id=int(os.environ['JAX_PROCESS_ID']))
  elif ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''):  # A Cloud TPU pod slice.
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  validation.check_flags([('workdir', _WORKDIR.value, validation.text()),
                          ('step', _STEP.value, validation.integer(minimum=0))],
                         _STEP.value is not None and _MODE.value == 'train'
                         and '--step is for --mode=evaluate')
  _initialise_distributed()
  validation.validate(flags.FLAGS.config, jax.device_count(),  # Before any file or program.
                      check_files=_MODE.value == 'train')
  logging.info('JAX process %d of %d, %d local / %d global devices (%s).',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform)
  config = flags.FLAGS.config
  # Relative paths are relative to where the command was started, once and for all.
  workdir = paths.absolute(_WORKDIR.value)
  paths.absolute_config_paths(config)
  if _MODE.value == 'train':
    with workdir_lock.hold(workdir, enabled=jax.process_index() == 0):
      train.train_and_evaluate(config, workdir)
    print(f'Checkpoints, TensorBoard logs and evaluation images are in {workdir}')
  else:
    evaluate.evaluate_workdir(workdir, config.eval_folders, step=_STEP.value)


if __name__ == '__main__':
  cli.run(main)
