"""SRGAN at small scale on real photographs' degradations: ``cpu_small_gan``'s
adversarial phase, from the shipped ``cpu_small_real``, on ``cpu_small_real``'s inputs.

The recipe of configs/cpu_small_gan.py (its options and why, each off in the paper
config) with the LR inputs of configs/cpu_small_real.py (Real-ESRGAN's degradations
made on the device, a quarter of each batch clean). The runs behind it are in
notes/CONFIG_RESULTS.md.

  python -m srgan_jax.main --config=configs/cpu_small_real_gan.py --workdir=runs/cpu_small_real_gan
  python -m srgan_jax.evaluate --workdir=runs/cpu_small_real_gan --data=Set14 --data=BSD100 \
    --degrade=jpeg:40 --metrics=niqe,luma_detail,flat_texture,jpeg_grid
"""

import ml_collections

from srgan_jax.configs import cpu_small_gan
from srgan_jax.configs import cpu_small_real


def get_config() -> ml_collections.ConfigDict:
  """cpu_small_gan's, from cpu_small_real, on cpu_small_real's inputs."""
  config = cpu_small_gan.get_config()
  config.srgan.init_from = 'cpu_small_real'  # The shipped model (or a workdir).
  cpu_small_real.realistic_inputs(config)
  return config
