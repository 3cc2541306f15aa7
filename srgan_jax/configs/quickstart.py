"""A few-minute SRResNet + SRGAN-MSE run on photographs that ship with scikit-image.

Runs offline on 2 CPU cores in about 5 minutes: a narrow SRResNet trained for 1,000
steps with MSE, then 200 SRGAN steps with the MSE content loss (no VGG19 download),
with evaluation on Set5 when ../shared/datasets is present. Same code path as
configs/x4.py. It shows the machinery, not the paper's quality: after 1,200 steps the
generator scores about 22 dB on Set5, below bicubic (28.4 dB); the paper's SRResNet
trains for 10^6 steps.

  python -m srgan_jax.main --config=configs/quickstart.py --workdir=runs/quickstart
"""

import os

import ml_collections
import skimage

from srgan_jax import paths
from srgan_jax.configs import default

# The photographs among scikit-image's bundled samples (its folder also holds
# charts, text, logos and synthetic images).
SAMPLE_PHOTOS = tuple(
    os.path.join(os.path.dirname(skimage.__file__), 'data', name) for name in (
        'astronaut.png', 'brick.png', 'camera.png', 'chelsea.png', 'coffee.png',
        'coins.png', 'grass.png', 'gravel.png', 'hubble_deep_field.jpg', 'ihc.png',
        'moon.png', 'motorcycle_left.png', 'motorcycle_right.png', 'retina.jpg',
        'rocket.jpg'))


def get_config() -> ml_collections.ConfigDict:
  """Small widths and step counts; everything else as in the paper."""
  config = default.get_config()
  config.generator.num_blocks = 4
  config.generator.features = 32
  config.generator.upsample_features = 128
  config.discriminator.convs = tuple((channels // 4, stride)  # Quarter widths.
                                     for channels, stride in config.discriminator.convs)
  config.discriminator.dense_features = 128
  config.batch_size = 8
  config.data.folders = SAMPLE_PHOTOS
  config.data.crop_size = 48
  config.srresnet.num_steps = 1000
  config.srresnet.learning_rate = 5e-4  # Higher than the paper's to get somewhere fast.
  config.srgan.num_steps = 200
  config.srgan.decay_steps = 100
  config.srgan.content_loss = 'mse'  # SRGAN-MSE (paper Table 1): no VGG weights needed.
  config.log_every_steps = 25
  config.checkpoint_every_steps = 250
  config.eval_every_steps = 500
  config.eval_folders = (paths.dataset('Set5'),)
  config.profile_steps = 0
  return config
