"""SRGAN at small scale: the adversarial phase from the shipped ``cpu_small`` SRResNet.

The paper's second phase (Ledig et al., section 3.2) on 2 CPU cores in minutes: it
starts from the pretrained generator ``cpu_small`` (by name, no workdir needed) and
trains generator and discriminator together on T91 + BSD200. The runs behind its
recipe, its time, and its scores beside cpu_small's and bicubic's, are in
notes/CONFIG_RESULTS.md; it ships as the pretrained model ``cpu_small_gan``.

Off the paper, each option off in configs/default.py and said why below: an L1 pixel
content loss (VGG19 ImageNet weights cannot be downloaded everywhere; with them, see
configs/x4.py's vgg54), the relativistic average GAN loss, a quarter-width
discriminator that sees luma only, Real-ESRGAN's U-Net form of it with spectral
normalisation (realism judged per pixel), its own (higher) learning rate, chroma taken
from the bicubic upsampling, and an exponential moving average of the generator. LDL
stays off here (--config.srgan.ldl_weight=1.0 switches it on): at this size it moved
the trade-off no further than stopping earlier (notes/GAN_OPTIONS.md).

  python -m srgan_jax.main --config=configs/cpu_small_gan.py --workdir=runs/cpu_small_gan
  python -m srgan_jax.evaluate --workdir=runs/cpu_small_gan --data=Set5 --data=Set14 \
    --data=BSD100 --metrics=niqe,luma_detail,chroma_detail,flat_texture,textured_detail
"""

import ml_collections

from srgan_jax.configs import cpu_small
from srgan_jax.runtime import paths


def get_config() -> ml_collections.ConfigDict:
  """cpu_small's generator, a quarter-width luma discriminator, the SRGAN phase only."""
  config = cpu_small.get_config()
  config.srresnet.num_steps = 0  # No SRResNet phase: the generator comes pretrained...
  config.srgan.init_from = 'cpu_small'  # ...as the shipped model (or a workdir).
  # Stop while the texture it adds where photographs are flat stays within 1.5x
  # theirs on every set: the generator adds detail at much the same rate everywhere,
  # so later steps buy NIQE with grain (measured: notes/GAN_OPTIONS.md, "Measured").
  config.srgan.num_steps = 2000
  config.srgan.decay_steps = 2000  # A constant rate: the paper's x0.1 step comes at the end.
  config.srgan.learning_rate = 1e-5  # The paper's final rate: fine-tuning a trained G.
  # D starts from scratch against a trained G, so it learns at 10x G's rate. It still
  # wins outright for stretches (the run warns); the EMA below keeps G's output from
  # turning to noise meanwhile.
  config.srgan.discriminator_learning_rate = 1e-4
  # L1 instead of MSE: MSE's gradient shrinks with the error, so near HR the
  # adversarial term would dominate; L1 holds the image to HR as firmly on fine errors
  # as on coarse ones.
  config.srgan.content_loss = 'l1'
  # Relativistic average GAN (Jolicoeur-Martineau 2018, as in ESRGAN): D judges whether
  # HR is more realistic than SR on average, and both terms reach G.
  config.srgan.gan_loss = 'relativistic'
  config.srgan.adversarial_weight = 1e-2  # Twice the 5e-3 that ESRGAN uses with VGG.
  # Colour speckle was what went wrong first: the discriminator sees luma only and the
  # output's chroma is the input's bicubic upsampling (as SRCNN's), so the generator
  # spends itself on luma detail and cannot add colour noise. A chroma loss instead
  # (srgan.chroma_weight=10) left BSD100 with more colour energy than its photographs
  # (notes/CONFIG_RESULTS.md).
  config.generator.chroma_from_bicubic = True
  config.discriminator.gray_input = True
  config.discriminator.convs = tuple((channels // 4, stride)
                                     for channels, stride in config.discriminator.convs)
  config.discriminator.dense_features = 256  # For --config.discriminator.arch=srgan.
  # Real-ESRGAN's U-Net discriminator (off in the paper config), at a quarter of its
  # width: a logit per pixel, so grain on a flat sky is judged where it is, not
  # averaged with the fur beside it. With the paper's D (arch='srgan') the same
  # 2,000 steps gave 2.7x the photographs' texture on flat regions.
  config.discriminator.arch = 'unet'
  config.discriminator.unet_features = 16
  config.ema_decay = 0.999  # Evaluate an average of G's last ~1000 steps: less noise.
  config.log_every_steps = 100
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 10
  config.eval_every_steps = 500  # The trade-off as it moves, at a small cost per 500 steps.
  config.eval_folders = (paths.dataset('Set5'), paths.dataset('Set14'))
  config.eval_metrics = ('niqe', 'luma_detail', 'chroma_detail', 'flat_texture',
                         'textured_detail')
  return config
