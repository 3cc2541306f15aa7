"""The best SRResNet we could train on T91 + BSD200 in an hour on 2 CPU cores.

It ships as the pretrained model ``cpu_small``; its scores against bicubic, and the
runs behind them, are in notes/CONFIG_RESULTS.md.

Off the paper, to get there in an hour (each option is off in configs/default.py):
no BatchNorm in the generator, the bicubic skip (the network adds what bicubic
misses), a cosine learning-rate decay to 0 from 1e-3, 64-pixel crops, narrow widths
(8 blocks x 32 features). No SRGAN phase.

  python -m srgan_jax.main --config=configs/cpu_small.py --workdir=runs/cpu_small
  python -m srgan_jax.evaluate --workdir=runs/cpu_small --data=Set5 --data=Set14 --data=BSD100
"""

import ml_collections

from srgan_jax.configs import default
from srgan_jax.runtime import paths


def narrow_srresnet(config: ml_collections.ConfigDict) -> None:
  """The CPU configs' generator and schedule (this one and quickstart.py): 8 blocks x
  32 features, no BatchNorm, the bicubic skip, a cosine decay from 1e-3, no SRGAN phase."""
  config.generator.num_blocks = 8
  config.generator.features = 32
  config.generator.upsample_features = 128
  config.generator.batch_norm = False
  config.generator.bicubic_skip = True
  config.srresnet.learning_rate = 1e-3
  config.srresnet.schedule = 'cosine'
  config.srgan.num_steps = 0
  config.log_every_steps = 100
  config.checkpoint_every_steps = 1000
  config.profile_steps = 0


def get_config() -> ml_collections.ConfigDict:
  """T91 + BSD200 (the default folders), a narrow SRResNet without BatchNorm."""
  config = default.get_config()
  narrow_srresnet(config)
  config.data.crop_size = 64
  config.batch_size = 16
  config.srresnet.num_steps = 9000
  config.eval_every_steps = 1000
  config.eval_folders = (paths.dataset('Set5'),)
  return config
