"""A ten-minute SRResNet on photographs that ship with scikit-image; beats bicubic.

Runs offline on 2 CPU cores (MEASURED_PLACEHOLDER). It trains on 12 of
scikit-image's bundled photographs and holds out three (chelsea, coffee, camera);
at the end it prints a table of the generator against bicubic interpolation on
those three and on Set5 when $SRGAN_DATASETS holds it.

Off the paper, to get there in minutes (each option is off in configs/default.py):
no BatchNorm in the generator (with BatchNorm, the running averages of small
training crops do not fit whole images: a brightness offset of several grey
levels), a cosine learning-rate decay to 0 from 1e-3, narrow and shallow widths.
No SRGAN phase: the discriminator would double the cost of a step, and an
adversarial phase lowers PSNR by design; configs/default.py and x4.py train it.

  python -m srgan_jax.main --config=configs/quickstart.py --workdir=runs/quickstart
"""

import os

import ml_collections
import skimage

from srgan_jax import paths
from srgan_jax.configs import default

_DATA = os.path.join(os.path.dirname(skimage.__file__), 'data')

# The photographs among scikit-image's bundled samples (its folder also holds
# charts, text, logos and synthetic images), split into training and held-out ones.
TRAIN_PHOTOS = tuple(os.path.join(_DATA, name) for name in (
    'astronaut.png', 'brick.png', 'coins.png', 'grass.png', 'gravel.png',
    'hubble_deep_field.jpg', 'ihc.png', 'moon.png', 'motorcycle_left.png',
    'motorcycle_right.png', 'retina.jpg', 'rocket.jpg'))
HELD_OUT_PHOTOS = tuple(os.path.join(_DATA, name) for name in (
    'camera.png', 'chelsea.png', 'coffee.png'))


def get_config() -> ml_collections.ConfigDict:
  """A narrow SRResNet without BatchNorm, a few thousand steps, cosine decay."""
  config = default.get_config()
  config.generator.num_blocks = 8
  config.generator.features = 32
  config.generator.upsample_features = 128
  config.generator.batch_norm = False
  config.discriminator.convs = tuple((channels // 4, stride)  # Quarter widths.
                                     for channels, stride in config.discriminator.convs)
  config.discriminator.dense_features = 128
  config.batch_size = 12  # One crop from each training photograph.
  config.data.folders = TRAIN_PHOTOS
  config.data.crop_size = 48
  config.srresnet.num_steps = 2000
  config.srresnet.learning_rate = 1e-3
  config.srresnet.schedule = 'cosine'
  config.srgan.num_steps = 0
  config.srgan.content_loss = 'mse'  # SRGAN-MSE (paper Table 1) if num_steps is raised.
  config.log_every_steps = 100
  config.checkpoint_every_steps = 1000
  # Evaluations at 1,800 and at the end (2,000): the last two, close together
  # where the decayed learning rate has settled the weights.
  config.eval_every_steps = 1800
  config.eval_folders = (paths.dataset('Set5'),) + HELD_OUT_PHOTOS
  config.profile_steps = 0
  return config
