"""SRGAN at small scale: the adversarial phase from the shipped ``cpu_small`` SRResNet.

Draft: recipe under measurement (issue 21).

  python -m srgan_jax.main --config=configs/cpu_small_gan.py --workdir=runs/cpu_small_gan
"""

import ml_collections

from srgan_jax.configs import cpu_small
from srgan_jax.runtime import paths


def get_config() -> ml_collections.ConfigDict:
  """cpu_small's generator, a quarter-width discriminator, the SRGAN phase only."""
  config = cpu_small.get_config()
  config.srresnet.num_steps = 0
  config.srgan.init_from = 'cpu_small'
  config.srgan.num_steps = 4000
  config.srgan.decay_steps = 3000
  config.srgan.content_loss = 'l1'
  config.srgan.gan_loss = 'relativistic'
  config.srgan.adversarial_weight = 5e-3
  config.srgan.feature_matching_weight = 1.0
  config.ema_decay = 0.999
  config.discriminator.convs = tuple((channels // 4, stride)
                                     for channels, stride in config.discriminator.convs)
  config.discriminator.dense_features = 256
  config.eval_every_steps = 1000
  config.eval_folders = (paths.dataset('Set5'), paths.dataset('Set14'))
  config.eval_metrics = ('niqe', 'luma_detail', 'chroma_detail')
  config.checkpoint_every_steps = 500
  return config
