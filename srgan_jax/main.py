"""Trains or evaluates SRGAN.

  python -m srgan_jax.main --config=configs/x4.py --workdir=gs://BUCKET/run
  python -m srgan_jax.main --config=configs/x4.py --workdir=W --mode=evaluate [--step=N]
  python -m srgan_jax.main --config=quickstart --workdir=runs/quickstart  # A shipped config.

Config fields can be overridden, e.g. --config.batch_size=32. Multi-host runs (a
Cloud TPU VM pod slice, or processes started with JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID set) start JAX's distributed runtime first
(see srgan_jax/distributed.py).
"""

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from srgan_jax import configs
from srgan_jax import distributed
from srgan_jax import evaluate
from srgan_jax import paths
from srgan_jax import train

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
  distributed.initialise()  # Before any other JAX call.
  logging.info('JAX process %d of %d, %d local / %d global devices (%s).',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform)
  config = flags.FLAGS.config
  # Relative paths are relative to where the command was started, once and for all.
  workdir = paths.absolute(_WORKDIR.value)
  paths.absolute_config_paths(config)
  if _MODE.value == 'train':
    train.train_and_evaluate(config, workdir)
    if distributed.is_main_process():
      print(f'Checkpoints, TensorBoard logs and evaluation images are in {workdir}')
  else:
    evaluate.evaluate_workdir(workdir, config.eval_folders, step=_STEP.value,
                              metric_names=config.eval_metrics)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, where --config may also name a config shipped in the package."""
  def named(arg: str) -> str:
    if arg.startswith('--config='):
      return '--config=' + configs.config_path(arg[len('--config='):])
    return arg
  return flags.FLAGS([named(arg) for arg in argv])


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
