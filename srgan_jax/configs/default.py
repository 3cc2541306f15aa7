"""Default hyper-parameters for SRGAN training: the paper's, field by field.

Every number from Ledig et al. (CVPR 2017) lives here, with the section of the paper
or ../shared/REFERENCE.md it comes from. Variants (x4.py, quickstart.py) import this
file and override fields.

  python -m srgan_jax.main --config=configs/default.py --workdir=/tmp/srgan
"""

import ml_collections
from ml_collections import config_dict

from srgan_jax.runtime import paths


def _realesrgan_order(*, blur_probability: float, blur_sigma: tuple[float, float],
                      resize_probabilities: tuple[float, float, float],
                      resize_range: tuple[float, float], noise_sigma: tuple[float, float],
                      poisson_scale: tuple[float, float]) -> ml_collections.ConfigDict:
  """One order of Real-ESRGAN's degradation; the fields both orders share are set here."""
  order = ml_collections.ConfigDict()
  order.blur_probability = blur_probability  # Blur at all (else the next op directly).
  # Kernel families iso, aniso, generalized_iso, generalized_aniso, plateau_iso,
  # plateau_aniso (imaging/blur_kernels.FAMILIES), drawn with these probabilities...
  order.kernel_probabilities = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
  order.sinc_probability = 0.1  # ...unless a sinc (ringing) is drawn instead.
  order.blur_sigma = blur_sigma  # Gaussian sigma range, in pixels, along each axis.
  order.generalized_beta = (0.5, 4.0)  # Generalized Gaussian shape range.
  order.plateau_beta = (1.0, 2.0)  # Plateau shape range.
  order.resize_probabilities = resize_probabilities  # Up, down, keep.
  order.resize_range = resize_range  # Factor: up in [1, max], down in [min, 1].
  # Noise at all: Real-ESRGAN always adds it (off the paper when below 1).
  order.noise_probability = 1.0
  order.gaussian_noise_probability = 0.5  # Gaussian noise, else Poisson.
  order.noise_sigma = noise_sigma  # Gaussian sigma range, grey levels (0..255).
  order.poisson_scale = poisson_scale  # Poisson strength range.
  order.grey_noise_probability = 0.4  # One draw for R, G, B (else one per channel).
  order.jpeg_quality = (30.0, 95.0)  # JPEG quality range.
  return order


def get_config() -> ml_collections.ConfigDict:
  """The paper's SRGAN-VGG54 at x4, reading HR images from local folders."""
  config = ml_collections.ConfigDict()

  config.seed = 0  # Batches, crops and initialization depend only on this and the step.
  config.scale = 4  # Upscaling factor (2, 4 or 8); the paper's results are x4.

  # Generator: SRResNet (paper Fig. 4, top).
  config.generator = ml_collections.ConfigDict()
  config.generator.num_blocks = 16  # B residual blocks.
  config.generator.features = 64  # Width of every conv before upsampling.
  config.generator.upsample_features = 256  # conv 3x3 256 before each pixel shuffle x2.
  config.generator.output_activation = 'none'  # The paper has none; 'tanh' bounds it.
  # Off the paper when changed: False drops the generator's BatchNorm layers.
  config.generator.batch_norm = True
  # Off the paper when changed: ICNR initialization of the sub-pixel convolutions.
  config.generator.icnr = False
  # Off the paper when changed: True adds the input's bicubic upsampling to the
  # output (a global residual, as VDSR), so the network learns what bicubic misses.
  config.generator.bicubic_skip = False
  # Off the paper when changed: True keeps the output's luma and takes its chroma from
  # the input's bicubic upsampling (as SRCNN): no colour noise from the GAN phase.
  config.generator.chroma_from_bicubic = False

  # Discriminator (paper Fig. 4, bottom): (channels, stride) of its eight 3x3 convs,
  # k3n64s1, k3n64s2, k3n128s1, ... BN after all but the first.
  config.discriminator = ml_collections.ConfigDict()
  config.discriminator.convs = ((64, 1), (64, 2), (128, 1), (128, 2),
                                (256, 1), (256, 2), (512, 1), (512, 2))
  config.discriminator.dense_features = 1024
  config.discriminator.negative_slope = 0.2  # LeakyReLU alpha.
  # Off the paper when True: D sees gray images (the mean of R, G, B), so its
  # gradient cannot put colour noise into G's output.
  config.discriminator.gray_input = False
  # Off the paper when 'unet': Real-ESRGAN's U-Net discriminator with spectral
  # normalisation (Wang et al. 2021), one logit per pixel, of width unet_features
  # (their 64); convs and dense_features are then unused.
  config.discriminator.arch = 'srgan'
  config.discriminator.unet_features = 64

  # 'float32', or 'bfloat16' for bf16 compute with float32 parameters, BatchNorm
  # statistics and losses.
  config.dtype = 'float32'

  config.batch_size = 16  # Global minibatch: 16 crops, each from a different image.

  # Input pipeline (tf.data, or a device-resident source).
  config.data = ml_collections.ConfigDict()
  config.data.source = 'folders'  # 'folders', 'tfds', or 'device' (decoded once onto the accelerator).
  # Folders searched recursively for images (or single image files). Tuples, not
  # lists, so that --config.data.folders="('a', 'b')" can override them.
  # The image sets are looked up in $SRGAN_DATASETS (default ../shared/datasets).
  config.data.folders = (paths.dataset('T91'), paths.dataset('BSD200'))
  config.data.tfds_name = 'div2k/bicubic_x4'  # Used when source == 'tfds'.
  config.data.tfds_split = 'train'
  config.data.tfds_image_key = 'hr'  # The HR image feature ('image' for imagenet2012).
  # Unset: TFDS's default (~/tensorflow_datasets); a local path or gs://.
  config.data.tfds_data_dir = config_dict.placeholder(str)
  config.data.crop_size = 96  # HR crop side (paper: 96x96); a multiple of scale.
  config.data.augment = True  # Random flips and 90-degree rotations.
  config.data.cache = True  # Keep decoded images in memory (small sets: T91, BSD200).
  config.data.crops_per_image = 1  # Streaming sources: crops taken per decoded image.
  config.data.prefetch = 2  # Host batches prepared ahead.
  # How the LR input is made from an HR crop: 'bicubic' (the paper: MATLAB bicubic)
  # or, off the paper, 'realesrgan' (data/realesrgan.py: blur, resize, noise, JPEG,
  # twice; needs data.source='device'). The fields below are Real-ESRGAN's
  # (train_realesrnet_x4plus.yml, ../shared/REFERENCE.md section 7).
  config.data.degradation = 'bicubic'
  config.data.realesrgan = ml_collections.ConfigDict()
  config.data.realesrgan.kernel_size_range = (7, 21)  # Blur and sinc kernels: odd sizes.
  config.data.realesrgan.first = _realesrgan_order(
      blur_probability=1.0, blur_sigma=(0.2, 3.0), resize_probabilities=(0.2, 0.7, 0.1),
      resize_range=(0.15, 1.5), noise_sigma=(1.0, 30.0), poisson_scale=(0.05, 3.0))
  # The second order's JPEG quality is the final JPEG's.
  config.data.realesrgan.second = _realesrgan_order(
      blur_probability=0.8, blur_sigma=(0.2, 1.5), resize_probabilities=(0.3, 0.4, 0.3),
      resize_range=(0.3, 1.2), noise_sigma=(1.0, 25.0), poisson_scale=(0.05, 2.5))
  # Final: a sinc after the resize to the LR size with this probability, else none.
  config.data.realesrgan.final_sinc_probability = 0.8
  # Final: resize + sinc, then JPEG with this probability; else JPEG, then resize + sinc.
  config.data.realesrgan.final_resize_first_probability = 0.5
  # Off the paper when above 0: this share of each batch (per image) gets the clean
  # MATLAB-bicubic LR of data.degradation='bicubic' instead, so one network learns
  # both clean and degraded inputs.
  config.data.realesrgan.clean_probability = 0.0

  # Adam for both networks (paper Sec. 3.2): beta1 = 0.9.
  config.adam_b1 = 0.9
  config.adam_b2 = 0.999

  # Phase 1, SRResNet: pixel MSE on [-1, 1] images, lr 1e-4 for 10^6 updates.
  config.srresnet = ml_collections.ConfigDict()
  config.srresnet.num_steps = 1_000_000
  config.srresnet.learning_rate = 1e-4
  # 'constant' (the paper) or 'cosine' (off the paper: decays to 0 at num_steps).
  config.srresnet.schedule = 'constant'
  # Off the paper when set: start the SRResNet phase from a shipped model (a name) or
  # another run's generator (a workdir), as a fine-tuning does; unset = random weights.
  config.srresnet.init_from = config_dict.placeholder(str)

  # Phase 2, SRGAN: initialized from the SRResNet; 10^5 updates at lr 1e-4, then
  # 10^5 at 1e-5; D and G updated alternately (k = 1).
  config.srgan = ml_collections.ConfigDict()
  config.srgan.num_steps = 200_000
  config.srgan.learning_rate = 1e-4
  config.srgan.decay_steps = 100_000  # After this many SRGAN steps...
  config.srgan.decay_factor = 0.1  # ...the learning rate becomes 1e-5.
  # Off the paper when set: D's own rate (same schedule); unset = srgan.learning_rate.
  config.srgan.discriminator_learning_rate = config_dict.placeholder(float)
  # 'mse', 'vgg22' (relu2_2) or 'vgg54' (relu5_4); off the paper: 'l1' (pixels).
  config.srgan.content_loss = 'vgg54'
  config.srgan.adversarial_weight = 1e-3  # perceptual = content + 1e-3 x adversarial.
  # Off the paper when changed: 'relativistic' (ESRGAN's relativistic average GAN).
  config.srgan.gan_loss = 'standard'
  # Off the paper when > 0: adds this x the L1 distance between D's features of SR
  # and HR to G's loss (pix2pixHD's feature matching, a content loss without VGG).
  config.srgan.feature_matching_weight = 0.0
  # Off the paper when > 0: adds this x the L1 distance between the chroma (Cb, Cr)
  # of SR and HR to G's loss, against colour noise.
  config.srgan.chroma_weight = 0.0
  # Off the paper when > 0: adds this x LDL's artifact-weighted L1 loss (Liang et al.,
  # CVPR 2022; their weight is 1.0) to G's loss: an extra pixel loss where the
  # residual's local variance says G invents texture. Needs ema_decay > 0.
  config.srgan.ldl_weight = 0.0
  config.srgan.vgg_feature_scale = 1 / 12.75  # VGG maps rescaled to an MSE-like scale.
  # VGG19 weights converted by `python -m srgan_jax.vgg19 import`; unset = the cache.
  # (Placeholders: unset by default, yet --config.srgan.vgg_weights=PATH works.)
  config.srgan.vgg_weights = config_dict.placeholder(str)
  # Start the SRGAN phase from another run's SRResNet (a workdir) or a shipped model
  # (a name: python -m srgan_jax.pretrained lists them); unset = this run's.
  config.srgan.init_from = config_dict.placeholder(str)

  # Exponential moving average of generator weights; 0 disables it (the paper has none).
  # The BatchNorm running averages get their own EMA with the same decay, and
  # evaluation uses the EMA weights with it.
  config.ema_decay = 0.0

  # Train steps per compiled call (jax.lax.scan over a stack of batches). It changes
  # nothing of the training (same batches, same updates), only how often the host
  # dispatches: >1 keeps a fast accelerator busy at the paper's small batch. Logging,
  # evaluation and checkpoint intervals must be multiples of it; calls stop short at
  # the SRResNet -> SRGAN switch and at the last step.
  config.steps_per_call = 1

  # Logging, checkpoints, evaluation.
  config.log_every_steps = 100  # Metrics are fetched from the device this often.
  config.checkpoint_every_steps = 5_000
  config.keep_checkpoints = 3  # The latest K checkpoints are kept.
  config.eval_every_steps = 20_000
  config.eval_folders = (paths.dataset('Set5'), paths.dataset('Set14'))
  config.num_summary_images = 3  # SR images written to TensorBoard per evaluation.
  # Beside PSNR/SSIM, as evaluate's default (see srgan_jax/evaluation/named_metrics.py);
  # LPIPS only once its weights are imported. The detail ratios show the SRGAN phase
  # painting texture where the photographs are flat (training/gan_health.py warns).
  config.eval_metrics = ('niqe', 'lpips', 'luma_detail', 'flat_texture', 'textured_detail')
  config.profile_steps = 5  # Steps traced by the clu profiler once the run is warm (0: off).

  return config
