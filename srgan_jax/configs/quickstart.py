"""A ten-minute SRResNet on photographs that ship with scikit-image.

Runs offline on 2 CPU cores. It trains on 10 of scikit-image's bundled photographs
and holds out two (camera, coins); at the end it prints a table of the generator
against bicubic interpolation on those two and on Set5 when $SRGAN_DATASETS holds
it (its scores and the measured runs: notes/CONFIG_RESULTS.md).

Off the paper, to get there in minutes (each option is off in configs/default.py):
no BatchNorm in the generator, the bicubic skip (the network adds what bicubic
misses), a cosine learning-rate decay to 0 from 1e-3, narrow widths (8 blocks x 32
features), 48-pixel crops. No SRGAN phase: the discriminator
would double the cost of a step, and an adversarial phase lowers PSNR by design;
configs/default.py and x4.py train it.

  python -m srgan_jax.main --config=configs/quickstart.py --workdir=runs/quickstart
"""

import os

import ml_collections
import skimage

from srgan_jax.configs import cpu_small
from srgan_jax.configs import default
from srgan_jax.runtime import paths

_DATA = os.path.join(os.path.dirname(skimage.__file__), 'data')

# The photographs among scikit-image's bundled samples (its folder also holds
# charts, text, logos and synthetic images), split into training and held-out ones.
# Six colour and four gray photographs. Left out: the microscope, telescope and
# fundus images (ihc, hubble_deep_field, retina), and two gray photographs held out
# for the final table. Six colour photographs, so that the generator learns colour
# without a cast (notes/CONFIG_RESULTS.md).
TRAIN_PHOTOS = tuple(os.path.join(_DATA, name) for name in (
    'astronaut.png', 'brick.png', 'chelsea.png', 'coffee.png', 'grass.png', 'gravel.png',
    'moon.png', 'motorcycle_left.png', 'motorcycle_right.png', 'rocket.jpg'))
HELD_OUT_PHOTOS = tuple(os.path.join(_DATA, name) for name in ('camera.png', 'coins.png'))


def get_config() -> ml_collections.ConfigDict:
  """A narrow SRResNet without BatchNorm, a few thousand steps, cosine decay."""
  config = default.get_config()
  cpu_small.narrow_srresnet(config)
  config.discriminator.convs = tuple((channels // 4, stride)  # Quarter widths.
                                     for channels, stride in config.discriminator.convs)
  config.discriminator.dense_features = 128
  config.batch_size = 10  # One crop from each training photograph.
  config.data.folders = TRAIN_PHOTOS
  config.data.crop_size = 48
  config.srresnet.num_steps = 5000
  config.srgan.content_loss = 'mse'  # SRGAN-MSE (paper Table 1) if num_steps is raised.
  # Evaluations at 4,500 and at the end (5,000): the last two, close together
  # where the decayed learning rate has settled the weights.
  config.eval_every_steps = 4500
  config.eval_folders = (paths.dataset('Set5'),) + HELD_OUT_PHOTOS
  # PSNR/SSIM only: compiling NIQE for each image size would take a large share of the
  # ten minutes (notes/CONFIG_RESULTS.md).
  config.eval_metrics = ()
  return config
