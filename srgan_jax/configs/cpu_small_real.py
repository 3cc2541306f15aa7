"""``cpu_small`` trained on Real-ESRGAN's degradations: for photographs that carry
JPEG artifacts, noise and blur, not MATLAB bicubic's clean downsampling.

The same narrow SRResNet, crops and schedule as ``cpu_small`` (configs/cpu_small.py);
the LR inputs are made on the device from each HR crop by Real-ESRGAN's second-order
pipeline (``data.degradation='realesrgan'``, data/realesrgan.py, with the paper's
ranges and probabilities from configs/default.py), which needs the device source.
Not shipped yet: trained so, the network falls below bicubic on clean inputs
(notes/CONFIG_RESULTS.md, "configs/cpu_small_real.py").

  python -m srgan_jax.main --config=configs/cpu_small_real.py --workdir=runs/cpu_small_real
  python -m srgan_jax.evaluate --workdir=runs/cpu_small_real --data=Set14 --degrade=jpeg:40
"""

import ml_collections

from srgan_jax.configs import cpu_small


def get_config() -> ml_collections.ConfigDict:
  """cpu_small's, with data.source='device' and data.degradation='realesrgan'."""
  config = cpu_small.get_config()
  config.data.source = 'device'
  config.data.degradation = 'realesrgan'
  return config
