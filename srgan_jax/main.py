"""Trains or evaluates SRGAN.

  python -m srgan_jax.main --config=configs/x4.py --workdir=gs://BUCKET/run
  python -m srgan_jax.main --config=configs/x4.py --workdir=W --mode=evaluate [--step=N]
  python -m srgan_jax.main --config=quickstart --workdir=runs/quickstart  # A shipped config.

Config fields can be overridden, e.g. --config.batch_size=32. Multi-host runs (a
Cloud TPU VM pod slice, or processes started with JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID set) start JAX's distributed runtime first
(see srgan_jax/runtime/distributed.py).

--mode=evaluate scores the workdir's checkpoint on the config's eval_folders by the
same code as ``python -m srgan_jax.evaluate --model=srgan --workdir=W``.

The config is checked as a whole (training/config_rules.py) before anything is created,
and a start that fails later, before the run saves a checkpoint, leaves the workdir as
it found it.
A workdir has one writer: a second training run on it refuses to start (workdir_lock).

Exit status (runtime/errors.py): 0 finished (also when SIGTERM arrives during the final
evaluation: training is done and saved); 75 preempted (SIGTERM): a checkpoint was saved,
rerun the same command to resume; 2 something to fix first, said in one line on stderr
(a bad flag or config field, a missing file, an incompatible checkpoint, a workdir in
use, a failed checkpoint write, a NaN loss); 1 a bug, with a traceback. --verbosity=1
shows tracebacks and the logs of other libraries.
"""

import contextlib
import os
import threading

from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from srgan_jax import configs
from srgan_jax.evaluation import scoring
from srgan_jax.nn import upscalers
from srgan_jax.runtime import cli
from srgan_jax.runtime import distributed
from srgan_jax.runtime import flag_checks
from srgan_jax.runtime import paths
from srgan_jax.runtime import signals
from srgan_jax.training import config_rules
from srgan_jax.training import loop
from srgan_jax.training import model_reference
from srgan_jax.training import workdir_lock


def _define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints and logs (local or gs://).')
  flags.DEFINE_enum('mode', 'train', ['train', 'evaluate'],
                    'train: run or resume training; evaluate: score a checkpoint.')
  flags.DEFINE_integer('step', None, 'With --mode=evaluate: the checkpoint step (default latest).')
  config_flags.DEFINE_config_file(
      'config', None, 'Training configuration: a file, or the name of one that ships in '
      f'srgan_jax/configs ({", ".join(configs.names())}).', lock_config=True)
  flags.mark_flags_as_required(['config', 'workdir'])


def _training() -> bool:
  return flags.FLAGS.mode == 'train'


def main() -> None:
  options = flags.FLAGS
  # The same on every host: the flags alone.
  flag_checks.check_flags([('workdir', options.workdir, flag_checks.text()),
                           ('step', options.step, flag_checks.integer(minimum=0))],
                          options.step is not None and _training()
                          and '--step is for --mode=evaluate')
  # From now on, not after compilation: SIGTERM during start-up, the restore or the
  # compilation is acted on at the end of the first step, which is saved.
  started = threading.Event()  # Set once training's first call of steps has run.
  with (signals.Watcher(jax.process_count()) if _training() else contextlib.nullcontext()
        ) as stop, contextlib.ExitStack() as held:
    config = options.config
    # Relative paths are relative to where the command was started, once and for all.
    workdir = paths.absolute(options.workdir)
    paths.absolute_config_paths(config)
    logging.info('JAX process %d of %d, %d local / %d global devices (%s).',
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count(), jax.devices()[0].platform)
    # Each host checks its own files (and process 0 takes the lock); one that refuses
    # stops all, with the same line, instead of leaving them waiting for it.
    distributed.check_on_every_process(lambda: _check_this_host(config, held, started))
    if not _training():  # The one code path of `evaluate --model=srgan --workdir=W`.
      model, variables, _ = model_reference.load(
          model_reference.from_flags('srgan', workdir, options.step))
      scoring.evaluate_beside_bicubic(upscalers.generator(model, variables),
                                      config.eval_folders, metric_names=config.eval_metrics)
      return
    loop.train_and_evaluate(config, workdir, stop, started.set)
  if distributed.is_main_process():
    print(f'Checkpoints, TensorBoard logs and evaluation images are in {workdir}')


def _check_this_host(config: ml_collections.ConfigDict, held: contextlib.ExitStack,
                     started: threading.Event) -> None:
  """What this host must have, checked before any file or program is created; process
  0 takes the workdir lock (held until ``held`` closes)."""
  workdir = flags.FLAGS.workdir
  # Training creates files in the workdir; evaluation only reads it.
  flag_checks.check_flags([], flag_checks.output_problem(
      workdir, folder=True, flag='--workdir') if _training()
                          else flag_checks.folder_problem(workdir, 'workdir'))
  config_rules.validate(config, jax.device_count(), check_files=_training(),
                        process_count=jax.process_count())
  if _training():
    workdir, first = paths.absolute(workdir), jax.process_index() == 0
    if first and not paths.is_remote(workdir):
      _hold_left_as_found(workdir, held, started)
    else:
      held.enter_context(workdir_lock.hold(workdir, enabled=first))


def _hold_left_as_found(workdir: str, held: contextlib.ExitStack,
                        started: threading.Event) -> None:
  """Takes the lock of local ``workdir``; a start that fails before training's first
  call of steps has run or a checkpoint is saved (the restore, the input, the
  compilation) then leaves the workdir as it found it: no lock.json, config.json,
  events file or empty checkpoints/ of its own. Once training runs, what it wrote
  stays (a NaN at step 900 keeps its logs)."""
  before_lock = paths.listing(workdir)  # What the lock creates: the workdir, lock.json.
  held.enter_context(workdir_lock.hold(workdir))
  # The rest is listed once the lock is held: nothing else writes the workdir now.
  before = None if before_lock is None else (
      paths.listing(workdir) - ({workdir_lock.LOCK_NAME} - before_lock))
  checkpoints = os.path.join(workdir, 'checkpoints')
  saved_before = paths.listing(checkpoints) or set()
  held.enter_context(paths.removed_if_failed(
      workdir, before, keep=lambda: started.is_set() or bool(
          (paths.listing(checkpoints) or set()) - saved_before)))


def named_config(arg: str) -> str:
  """A command-line argument, where --config=NAME names a config shipped in the package."""
  if arg.startswith('--config='):
    return '--config=' + configs.config_path(arg[len('--config='):])
  return arg


def run() -> None:
  """``python -m srgan_jax.main``: training (or --mode=evaluate) through ``cli.run``."""
  cli.run(main, name='main', define_flags=_define_flags, starts_jax=lambda: True,
          trains=_training, rewrite_arg=named_config)


if __name__ == '__main__':
  run()
