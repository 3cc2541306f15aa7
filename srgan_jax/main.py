"""Trains or evaluates SRGAN.

  python -m srgan_jax.main --config=configs/x4.py --workdir=gs://BUCKET/run
  python -m srgan_jax.main --config=configs/x4.py --workdir=W --mode=evaluate [--step=N]
  python -m srgan_jax.main --config=quickstart --workdir=runs/quickstart  # A shipped config.

Config fields can be overridden, e.g. --config.batch_size=32. Multi-host runs (a
Cloud TPU VM pod slice, or processes started with JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID set) start JAX's distributed runtime first
(see srgan_jax/runtime/distributed.py).

The config is checked as a whole (training/config_rules.py) before anything is created.
A workdir has one writer: a second training run on it refuses to start (workdir_lock).

Exit status (runtime/errors.py): 0 finished (also when SIGTERM arrives during the final
evaluation: training is done and saved); 75 preempted (SIGTERM): a checkpoint was saved,
rerun the same command to resume; 2 something to fix first, said in one line on stderr
(a bad flag or config field, a missing file, an incompatible checkpoint, a workdir in
use, a failed checkpoint write, a NaN loss); 1 a bug, with a traceback. --verbosity=1
shows tracebacks and the logs of other libraries.
"""

import contextlib

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from srgan_jax import configs
from srgan_jax.evaluation import scoring
from srgan_jax.inference import loading
from srgan_jax.runtime import cli
from srgan_jax.runtime import distributed
from srgan_jax.runtime import flag_checks
from srgan_jax.runtime import paths
from srgan_jax.runtime import signals
from srgan_jax.training import config_rules
from srgan_jax.training import loop
from srgan_jax.training import workdir_lock

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and logs (local or gs://).')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'evaluate'],
                          'train: run or resume training; evaluate: score a checkpoint.')
_STEP = flags.DEFINE_integer('step', None, 'With --mode=evaluate: the checkpoint step (default latest).')
config_flags.DEFINE_config_file(
    'config', None, 'Training configuration: a file, or the name of one that ships in '
    f'srgan_jax/configs ({", ".join(configs.names())}).', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # The same on every host: the flags alone.
  flag_checks.check_flags([('workdir', _WORKDIR.value, flag_checks.text()),
                           ('step', _STEP.value, flag_checks.integer(minimum=0))],
                          _STEP.value is not None and _MODE.value == 'train'
                          and '--step is for --mode=evaluate')
  distributed.initialize()  # Before any other JAX call.
  if _MODE.value == 'train':
    # From now on, not after compilation: SIGTERM during start-up saves the first step.
    stop = signals.Watcher(jax.process_count()).__enter__()  # Until the process ends.
  else:
    cli.stop_on_sigterm('main --mode=evaluate')
  config = flags.FLAGS.config
  # Relative paths are relative to where the command was started, once and for all.
  workdir = paths.absolute(_WORKDIR.value)
  paths.absolute_config_paths(config)
  logging.info('JAX process %d of %d, %d local / %d global devices (%s).',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform)
  with contextlib.ExitStack() as held:

    def check_this_host():
      """What this host must have, checked before any file or program is created."""
      # Training creates files in the workdir; evaluation only reads it.
      flag_checks.check_flags([], flag_checks.output_problem(
          _WORKDIR.value, folder=True, flag='--workdir') if _MODE.value == 'train'
                              else flag_checks.folder_problem(_WORKDIR.value, 'workdir'))
      config_rules.validate(config, jax.device_count(), check_files=_MODE.value == 'train',
                            process_count=jax.process_count())
      if _MODE.value == 'train':
        held.enter_context(workdir_lock.hold(workdir, enabled=jax.process_index() == 0))

    # Each host checks its own files (and process 0 takes the lock); one that refuses
    # stops all, with the same line, instead of leaving them waiting for it.
    distributed.check_on_every_process(check_this_host)
    if _MODE.value == 'evaluate':
      # The architecture and scale come from the checkpoint: the workdir is enough.
      scoring.evaluate_model(*loading.load_generator('srgan', workdir, _STEP.value),
                             config.eval_folders, metric_names=config.eval_metrics)
      return
    loop.train_and_evaluate(config, workdir, stop)
  if distributed.is_main_process():
    print(f'Checkpoints, TensorBoard logs and evaluation images are in {workdir}')


def named_config(arg: str) -> str:
  """A command-line argument, where --config=NAME names a config shipped in the package."""
  if arg.startswith('--config='):
    return '--config=' + configs.config_path(arg[len('--config='):])
  return arg


if __name__ == '__main__':
  cli.run(main, rewrite_arg=named_config)
