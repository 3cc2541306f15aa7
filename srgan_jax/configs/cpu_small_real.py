"""``cpu_small`` fine-tuned on Real-ESRGAN-style degradations: for photographs that
carry JPEG artifacts and noise, not MATLAB bicubic's clean downsampling.

The same narrow SRResNet and crops as ``cpu_small`` (configs/cpu_small.py), started
from the shipped ``cpu_small`` (``srresnet.init_from``). Its LR inputs are made on
the device from each HR crop by Real-ESRGAN's second-order pipeline
(``data.degradation='realesrgan'``, data/realesrgan.py), which needs the device
source, with milder settings than the paper's (below: what a run with the paper's
ranges did is in notes/CONFIG_RESULTS.md, "configs/cpu_small_real.py"), and a share
of each batch keeps the clean MATLAB-bicubic LR, so that one network learns when not
to smooth.

  python -m srgan_jax.main --config=configs/cpu_small_real.py --workdir=runs/cpu_small_real
  python -m srgan_jax.evaluate --workdir=runs/cpu_small_real --data=Set14 --degrade=jpeg:40
"""

import ml_collections

from srgan_jax.configs import cpu_small


def realistic_inputs(config: ml_collections.ConfigDict) -> None:
  """The LR inputs of this config and cpu_small_real_gan.py: Real-ESRGAN's pipeline on
  the device, milder than the paper's, a quarter of each batch clean."""
  config.data.source = 'device'
  config.data.degradation = 'realesrgan'
  realistic = config.data.realesrgan
  realistic.clean_probability = 0.25  # A quarter of each batch: the clean bicubic LR.
  # Off the paper's ranges: the small network learned to sharpen the paper's blurs
  # (kernels up to 21 pixels) and resizes (down to 0.15x) and fell below bicubic.
  for order in (realistic.first, realistic.second):
    order.blur_probability = 0.0
    order.resize_probabilities = (0.0, 0.0, 1.0)  # Keep: only the final resize to LR.
    order.noise_probability = 0.5  # Some inputs carry JPEG alone.
  realistic.final_sinc_probability = 0.0
  realistic.second.noise_sigma = (1.0, 15.0)  # The paper's: up to 25 grey levels.
  realistic.second.poisson_scale = (0.05, 1.5)  # The paper's: up to 2.5.


def get_config() -> ml_collections.ConfigDict:
  """cpu_small's, from the shipped cpu_small, on the device source's degradations."""
  config = cpu_small.get_config()
  config.srresnet.init_from = 'cpu_small'  # A shipped model's name (or a workdir).
  config.srresnet.num_steps = 10_000
  config.srresnet.learning_rate = 5e-4  # Half cpu_small's: a fine-tuning, cosine to 0.
  realistic_inputs(config)
  return config
