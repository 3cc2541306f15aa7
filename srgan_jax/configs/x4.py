"""The paper's configuration: SRResNet then SRGAN-VGG54 at x4 on ImageNet.

350k ImageNet training images, 96x96 HR crops, batch 16, 10^6 SRResNet updates, then
10^5 SRGAN updates at 1e-4 and 10^5 at 1e-5 (Ledig et al. 2017, Sec. 3.2). Needs the
VGG19 weights once (`python -m srgan_jax.vgg19 import --source=keras`) and TFDS
imagenet2012 prepared under tfds_data_dir (or use div2k/bicubic_x4 with image key 'hr').

  python -m srgan_jax.main --config=configs/x4.py --workdir=gs://BUCKET/srgan_x4 \
      --config.data.tfds_data_dir=gs://BUCKET/tensorflow_datasets
"""

import ml_collections

from srgan_jax.configs import default
from srgan_jax.runtime import paths


def get_config() -> ml_collections.ConfigDict:
  """SRGAN-VGG54 x4 as in the paper."""
  config = default.get_config()
  config.data.source = 'tfds'
  config.data.tfds_name = 'imagenet2012'
  config.data.tfds_image_key = 'image'
  config.data.cache = False  # ImageNet does not fit in memory.
  config.data.crops_per_image = 1  # Each crop of a batch from a different image.
  config.eval_folders = tuple(paths.dataset(name) for name in ('Set5', 'Set14', 'BSD100'))
  return config
