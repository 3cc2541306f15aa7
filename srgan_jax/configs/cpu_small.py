"""The best SRResNet we could train on T91 + BSD200 in an hour on 2 CPU cores.

Measured (2 CPU cores, Intel Xeon; uptime load 2.0-2.9 from niced test runs beside
it): 9,000 steps in 39 min 42 s wall-clock including start-up and nine Set5
evaluations (13:19 to 13:59, 3.7 steps/s). Then the evaluate command below (79 s):

  set     PSNR (dB)  SSIM    NIQE    bicubic PSNR  bicubic SSIM  SR - HR (R, G, B) grey levels
  Set5    30.3807    0.8611  8.1452  28.4314       0.8113        +0.00  +0.03  +0.04
  Set14   27.3826    0.7507  6.9082  25.9973       0.7031        -0.03  +0.01  +0.00
  BSD100  26.8859    0.7116  7.0068  25.9634       0.6682        -0.03  -0.01  -0.00

Set5 during training: 28.92, 29.40, 29.47, 29.85, 30.18, 30.27, 30.34, 30.35, 30.38
dB at steps 1k..9k (the last two 0.03 dB apart). The same network without the
bicubic skip, 5,000 steps, reached 29.33 dB on Set5 and was 0.8 grey levels too
dark in red.

Off the paper, to get there in an hour (each option is off in configs/default.py):
no BatchNorm in the generator, the bicubic skip (the network adds what bicubic
misses), a cosine learning-rate decay to 0 from 1e-3, 64-pixel crops, narrow widths
(8 blocks x 32 features). No SRGAN phase.

  python -m srgan_jax.main --config=configs/cpu_small.py --workdir=runs/cpu_small
  python -m srgan_jax.evaluate --workdir=runs/cpu_small --data=Set5 --data=Set14 --data=BSD100
"""

import ml_collections

from srgan_jax import paths
from srgan_jax.configs import default


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
