"""SRResNet and SRGAN training steps: states, metrics, optimizers and the jitted steps.

Pure functions of (states, metrics, batch, step): what the training loop
(``training/loop.py``) runs and the benchmark times. The states are replicated and
the batch split along the 'data' mesh axis (see ``runtime/sharding.py``), so
BatchNorm statistics and gradients cover the global batch. Nothing here imports
tensorflow or reads files.
"""

import dataclasses
import functools
from typing import Any, Callable

from clu import metrics
import flax
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import optax

from srgan_jax.nn import losses
from srgan_jax.nn import models
from srgan_jax.nn import upscalers

SRRESNET, SRGAN = 'srresnet', 'srgan'


class TrainState(train_state.TrainState):
  """A TrainState that also carries BatchNorm statistics and, optionally, an EMA and
  the spectral normalisation's power-iteration state.

  The EMA covers the BatchNorm running averages too (``ema_batch_stats``, with the
  weights' decay): the running averages follow the current weights over about ten
  steps, the EMA weights average about 1 / (1 - decay) steps, and evaluating the
  EMA weights with the current weights' statistics mixes two different networks.

  ``spectral``: the ``models.SPECTRAL`` collection ({} for a network without spectral
  normalisation), checkpointed and replicated with the rest of the state.
  """
  batch_stats: Any
  ema_params: Any = None
  ema_batch_stats: Any = None
  spectral: Any = None

  def eval_variables(self, ema: bool = True) -> dict[str, Any]:
    """Variables for ``apply``: the EMA weights with their statistics if kept."""
    if ema and self.ema_params is not None:
      return {'params': self.ema_params, 'batch_stats': self.ema_batch_stats}
    return {'params': self.params, 'batch_stats': self.batch_stats}


@flax.struct.dataclass
class FirstNonFinite(metrics.Metric):
  """The first step whose loss was NaN or infinite (-1 while all are finite)."""
  step: jax.Array

  @classmethod
  def from_model_output(cls, *, loss: jax.Array, step: jax.Array, **_) -> 'FirstNonFinite':
    return cls(jnp.where(jnp.isfinite(loss), -1, step).astype(jnp.int32))

  @classmethod
  def empty(cls) -> 'FirstNonFinite':
    return cls(jnp.array(-1, jnp.int32))

  def merge(self, other: 'FirstNonFinite') -> 'FirstNonFinite':
    return type(self)(jnp.where(self.step >= 0, self.step, other.step))

  def compute(self) -> jax.Array:
    return self.step


@flax.struct.dataclass
class SRResNetMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  learning_rate: metrics.LastValue.from_output('learning_rate')
  grad_norm: metrics.Average.from_output('grad_norm')
  first_nonfinite_step: FirstNonFinite


@flax.struct.dataclass
class SRGANMetrics(metrics.Collection):
  generator_loss: metrics.Average.from_output('generator_loss')
  content_loss: metrics.Average.from_output('content_loss')
  adversarial_loss: metrics.Average.from_output('adversarial_loss')
  ldl_loss: metrics.Average.from_output('ldl_loss')  # 0 unless srgan.ldl_weight > 0.
  discriminator_loss: metrics.Average.from_output('discriminator_loss')
  d_real: metrics.Average.from_output('d_real')  # Mean D(HR): near 1 when D wins.
  d_fake: metrics.Average.from_output('d_fake')  # Mean D(G(LR)).
  learning_rate: metrics.LastValue.from_output('learning_rate')
  generator_grad_norm: metrics.Average.from_output('generator_grad_norm')
  discriminator_grad_norm: metrics.Average.from_output('discriminator_grad_norm')
  first_nonfinite_step: FirstNonFinite


def compute_dtype(config: ml_collections.ConfigDict) -> Any:
  """The dtype the networks compute in (config.dtype). With bfloat16, only the
  convolutions and activations are bfloat16; float32 stays where bfloat16's 8-bit
  mantissa would change the training (notes/CONFIG_RESULTS.md measures bf16 against
  float32):
  - parameters, hence gradients and Adam's moments and updates: the optimizer's master
    weights, so that 1e-4 x Adam steps are not rounded away (create_train_state
    initializes them in float32, Flax's default ``param_dtype``);
  - BatchNorm statistics and running averages (Flax reduces in float32 and keeps the
    averages in the parameters' dtype): a mean of 16 x 96 x 96 values, and averages
    updated by 10% a step, would lose their low bits in bfloat16;
  - every loss (nn/losses.py casts its inputs): means of small squared differences;
  - the VGG content loss: its input in 0..255 (vgg19.preprocess) and its feature maps,
    cast to float32 before the 1/12.75 feature scale and the MSE (losses.make_content_loss).
  """
  return {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[config.dtype]


def create_generator(config: ml_collections.ConfigDict) -> models.SRResNet:
  """The generator to train, computing in the config's dtype."""
  return models.generator_from_config(config, compute_dtype(config))


def create_discriminator(config: ml_collections.ConfigDict) -> flax.linen.Module:
  """The discriminator to train, computing in the config's dtype."""
  return models.discriminator_from_config(config, compute_dtype(config))


DISCRIMINATOR = 'discriminator'  # create_optimizer's phase name for D's optimizer.


def create_optimizer(config: ml_collections.ConfigDict, phase: str) -> optax.GradientTransformation:
  """Adam (beta1 0.9) with the phase's schedule: constant 1e-4 for the SRResNet (or
  a cosine decay to 0 with srresnet.schedule='cosine'); 1e-4 then 1e-5 after
  srgan.decay_steps for SRGAN's generator, and for the discriminator (``DISCRIMINATOR``)
  the same, from srgan.discriminator_learning_rate when set."""
  if phase == DISCRIMINATOR:
    rate = config.srgan.discriminator_learning_rate or config.srgan.learning_rate
    schedule = optax.piecewise_constant_schedule(
        rate, {config.srgan.decay_steps: config.srgan.decay_factor})
  elif phase == SRRESNET and config.srresnet.schedule == 'constant':
    schedule = optax.constant_schedule(config.srresnet.learning_rate)
  elif phase == SRRESNET and config.srresnet.schedule == 'cosine':
    # The rate falls to zero at the end, so the last evaluations agree and the
    # running BatchNorm averages catch up with weights that no longer move.
    schedule = optax.cosine_decay_schedule(config.srresnet.learning_rate,
                                           max(config.srresnet.num_steps, 1))
  else:  # SRGAN; config_rules checked srresnet.schedule.
    schedule = optax.piecewise_constant_schedule(
        config.srgan.learning_rate, {config.srgan.decay_steps: config.srgan.decay_factor})
  # inject_hyperparams keeps the current learning rate in the optimizer state for logging.
  return optax.inject_hyperparams(optax.adam)(
      learning_rate=schedule, b1=config.adam_b1, b2=config.adam_b2)


def create_train_state(rng: jax.Array, model: flax.linen.Module, input_shape: tuple[int, ...],
                       tx: optax.GradientTransformation, ema: bool = False) -> TrainState:
  """Initializes a model's variables and wraps them with its optimizer."""
  variables = model.init(rng, jnp.zeros(input_shape, jnp.float32), train=False)
  params = variables['params']
  batch_stats = variables.get('batch_stats', {})  # {}: a generator without BatchNorm.
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx, batch_stats=batch_stats,
                           ema_params=params if ema else None,
                           ema_batch_stats=batch_stats if ema else None,
                           spectral=variables.get(models.SPECTRAL, {}))


def create_states(config: ml_collections.ConfigDict, phase: str) -> tuple[TrainState, TrainState]:
  """Freshly initialized generator and discriminator states for a phase."""
  crop = config.data.crop_size  # A multiple of scale and of 16: config_rules checked it.
  g_rng, d_rng = jax.random.split(jax.random.key(config.seed))
  lr_side = crop // config.scale
  generator = create_train_state(g_rng, create_generator(config), (1, lr_side, lr_side, 3),
                                 create_optimizer(config, phase), ema=config.ema_decay > 0)
  discriminator = create_train_state(d_rng, create_discriminator(config), (1, crop, crop, 3),
                                     create_optimizer(config, DISCRIMINATOR))
  return generator, discriminator


def start_srgan_phase(generator: TrainState, config: ml_collections.ConfigDict) -> TrainState:
  """The SRGAN generator: the SRResNet's weights with a fresh Adam on the SRGAN schedule."""
  tx = create_optimizer(config, SRGAN)
  ema = config.ema_decay > 0
  return TrainState.create(apply_fn=generator.apply_fn, params=generator.params, tx=tx,
                           batch_stats=generator.batch_stats,
                           ema_params=generator.params if ema else None,
                           ema_batch_stats=generator.batch_stats if ema else None,
                           spectral=generator.spectral)


def _update_generator(state: TrainState, grads: Any, batch_stats: Any,
                      ema_decay: float) -> TrainState:
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if ema_decay > 0:
    state = state.replace(
        ema_params=optax.incremental_update(state.params, state.ema_params,
                                            step_size=1 - ema_decay),
        ema_batch_stats=optax.incremental_update(state.batch_stats, state.ema_batch_stats,
                                                 step_size=1 - ema_decay))
  return state


def _learning_rate(state: TrainState) -> jax.Array:
  """The rate of the update just applied (inject_hyperparams stores it in the state)."""
  return state.opt_state.hyperparams['learning_rate']


def srresnet_train_step(state: TrainState, train_metrics: SRResNetMetrics,
                        batch: dict[str, jax.Array], step: jax.Array, *, ema_decay: float
                        ) -> tuple[TrainState, SRResNetMetrics]:
  """One SRResNet update: pixel MSE between G(LR) and HR, both in [-1, 1]."""
  def loss_fn(params):
    sr, updates = state.apply_fn({'params': params, 'batch_stats': state.batch_stats},
                                 batch['lr'], train=True, mutable=['batch_stats'])
    return losses.pixel_mse(sr, batch['hr']), updates['batch_stats']

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = _update_generator(state, grads, batch_stats, ema_decay)
  update = SRResNetMetrics.single_from_model_output(
      loss=loss, learning_rate=_learning_rate(state), grad_norm=optax.tree.norm(grads), step=step)
  return state, train_metrics.merge(update)


@dataclasses.dataclass(frozen=True)
class PerceptualLoss:
  """The SRGAN generator's loss (paper eq. 3): content + adversarial_weight x adversarial.

  Attributes:
    content_loss: 'mse' (pixels) or a VGG19 feature map, e.g. 'vgg54' (see
      ``nn/losses.CONTENT_LOSSES``).
    adversarial_weight: the paper's 1e-3.
    vgg_feature_scale: VGG features are multiplied by it before the MSE (the paper's
      1/12.75, which brings the VGG loss to the scale of the pixel MSE).
    vgg_preprocessing: that of the VGG19 weights, 'caffe' or 'torch' (see
      ``nn/vgg19.preprocess``).
    dtype: VGG19's compute dtype.
    gan_loss: 'standard' (the paper) or 'relativistic' (``nn/losses.GAN_LOSSES``).
    feature_matching_weight: of the L1 distance between D's features of SR and HR,
      added to G's loss (0 in the paper).
    chroma_weight: of the L1 distance between SR's and HR's chroma, added to G's
      loss (0 in the paper).
    ldl_weight: of LDL's artifact-weighted L1 loss (``nn/losses.ldl_loss``; 0 in the
      paper), which needs the generator's EMA.
  """
  content_loss: str
  adversarial_weight: float
  vgg_feature_scale: float
  vgg_preprocessing: str
  dtype: Any
  gan_loss: str = 'standard'
  feature_matching_weight: float = 0.0
  chroma_weight: float = 0.0
  ldl_weight: float = 0.0

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict,
                  vgg_preprocessing: str) -> 'PerceptualLoss':
    """The loss of ``config.srgan``, computing in ``config.dtype``."""
    return cls(content_loss=config.srgan.content_loss,
               adversarial_weight=config.srgan.adversarial_weight,
               vgg_feature_scale=config.srgan.vgg_feature_scale,
               vgg_preprocessing=vgg_preprocessing, dtype=compute_dtype(config),
               gan_loss=config.srgan.gan_loss,
               feature_matching_weight=config.srgan.feature_matching_weight,
               chroma_weight=config.srgan.chroma_weight,
               ldl_weight=config.srgan.ldl_weight)


def _discriminate(discriminator: TrainState, params: Any, batch_stats: Any,
                  images: jax.Array) -> tuple[jax.Array, Any, Any, list[jax.Array]]:
  """D in training mode on ``images``: its logits, its updated BatchNorm statistics,
  its updated spectral-normalisation state (one power iteration from the stored one,
  so every pass of a step normalises by the same estimate) and its feature maps (in
  layer order, for feature matching)."""
  variables = {'params': params, 'batch_stats': batch_stats,
               models.SPECTRAL: discriminator.spectral or {}}
  logits, updates = discriminator.apply_fn(
      variables, images, train=True, mutable=['batch_stats', 'intermediates', models.SPECTRAL])
  features = [value for _, (value,) in sorted(updates['intermediates'].items(),
                                              key=lambda item: int(item[0][8:]))]
  return (logits, updates.get('batch_stats', {}), updates.get(models.SPECTRAL, {}), features)


def _update_discriminator(discriminator: TrainState, hr: jax.Array, sr: jax.Array,
                          gan_loss: str) -> tuple[TrainState, dict[str, jax.Array]]:
  """D's update on real ``hr`` and fake ``sr`` (a constant for it), and its metrics'
  outputs (``SRGANMetrics``)."""
  def discriminator_loss_fn(params):
    # Real and fake batches pass separately, so each has its own BN statistics.
    real_logits, batch_stats, spectral, _ = _discriminate(discriminator, params,
                                                          discriminator.batch_stats, hr)
    # The same spectral state as the real pass's: its update is that one's.
    fake_logits, batch_stats, _, _ = _discriminate(discriminator, params, batch_stats,
                                                   jax.lax.stop_gradient(sr))
    d_loss = losses.discriminator_loss(real_logits, fake_logits, gan_loss)
    return d_loss, (real_logits, fake_logits, batch_stats, spectral)

  (d_loss, (real_logits, fake_logits, d_batch_stats, spectral)), d_grads = jax.value_and_grad(
      discriminator_loss_fn, has_aux=True)(discriminator.params)
  discriminator = discriminator.apply_gradients(grads=d_grads, batch_stats=d_batch_stats,
                                                spectral=spectral)
  return discriminator, {'discriminator_loss': d_loss,
                         'd_real': jnp.mean(jax.nn.sigmoid(real_logits)),
                         'd_fake': jnp.mean(jax.nn.sigmoid(fake_logits)),
                         'discriminator_grad_norm': optax.tree.norm(d_grads)}


def _perceptual_loss_fn(discriminator: TrainState, hr: jax.Array, vgg_params: Any,
                        loss: PerceptualLoss, sr_ema: jax.Array | None
                        ) -> Callable[[jax.Array], tuple]:
  """G's loss as a function of its output SR, judged by ``discriminator`` (the updated
  D): ``(total, (content, adversarial, ldl))``. ``sr_ema``: the EMA generator's output,
  for the LDL term (None without it)."""
  content_loss_fn = losses.make_content_loss(
      loss.content_loss, vgg_params, loss.vgg_preprocessing, loss.vgg_feature_scale, loss.dtype)
  # The updated D's view of HR, when G's loss needs it (constants for G).
  needs_real = loss.gan_loss == 'relativistic' or loss.feature_matching_weight > 0
  real_logits_now, _, _, real_features = (
      _discriminate(discriminator, discriminator.params, discriminator.batch_stats, hr)
      if needs_real else (None, None, None, None))

  def perceptual_loss_fn(sr):
    # The updated D judges G's output; its BN statistic updates from this pass are
    # not kept (D was already updated on this batch).
    logits, _, _, features = _discriminate(discriminator, discriminator.params,
                                           discriminator.batch_stats, sr)
    content = content_loss_fn(sr, hr)
    adversarial = losses.generator_adversarial_loss(logits, real_logits_now, loss.gan_loss)
    total = content + loss.adversarial_weight * adversarial
    if loss.feature_matching_weight > 0:
      total += loss.feature_matching_weight * losses.feature_matching(features, real_features)
    if loss.chroma_weight > 0:
      total += loss.chroma_weight * losses.chroma_l1(sr, hr)
    ldl = losses.ldl_loss(sr, hr, sr_ema) if loss.ldl_weight > 0 else jnp.zeros(())
    total += loss.ldl_weight * ldl
    return total, (content, adversarial, ldl)

  return perceptual_loss_fn


def srgan_train_step(generator: TrainState, discriminator: TrainState,
                     train_metrics: SRGANMetrics, batch: dict[str, jax.Array],
                     vgg_params: Any, step: jax.Array, *, loss: PerceptualLoss,
                     ema_decay: float) -> tuple[TrainState, TrainState, SRGANMetrics]:
  """One SRGAN update of D then G (k = 1), in one compiled program.

  G runs forward once; D is updated on (HR, G(LR)); G's perceptual loss (content +
  ``loss.adversarial_weight`` x adversarial, and the optional terms) is then taken
  against the updated D and pulled back through the saved forward pass. With LDL, the
  EMA generator (before this step's update, as the LDL authors' code) runs forward
  too, in evaluation mode.

  Args:
    generator, discriminator: the two networks' states (replicated).
    train_metrics: the metrics so far; this step's are merged into them.
    batch: ``{'lr', 'hr'}`` in [-1, 1], split over the devices.
    vgg_params: VGG19's weights for a VGG content loss (None for 'mse').
    step: the global step, for ``first_nonfinite_step``.
    loss: the generator's perceptual loss.
    ema_decay: of the generator's weight average (0: none kept).

  Returns:
    The updated generator, discriminator and metrics.
  """
  def generate(params):
    sr, updates = generator.apply_fn(
        {'params': params, 'batch_stats': generator.batch_stats}, batch['lr'], train=True,
        mutable=['batch_stats'])
    return sr, updates['batch_stats']

  sr, generator_vjp, generator_batch_stats = jax.vjp(generate, generator.params, has_aux=True)
  sr_ema = None
  if loss.ldl_weight > 0:
    if generator.ema_params is None:  # config_rules says so first, in one line.
      raise ValueError('srgan.ldl_weight > 0 needs the generator EMA (ema_decay > 0)')
    sr_ema = generator.apply_fn(generator.eval_variables(ema=True), batch['lr'], train=False)
  discriminator, d_outputs = _update_discriminator(discriminator, batch['hr'], sr,
                                                   loss.gan_loss)
  (g_loss, (content, adversarial, ldl)), sr_grads = jax.value_and_grad(
      _perceptual_loss_fn(discriminator, batch['hr'], vgg_params, loss, sr_ema),
      has_aux=True)(sr)
  (g_grads,) = generator_vjp(sr_grads)
  generator = _update_generator(generator, g_grads, generator_batch_stats, ema_decay)

  update = SRGANMetrics.single_from_model_output(
      generator_loss=g_loss, content_loss=content, adversarial_loss=adversarial, ldl_loss=ldl,
      learning_rate=_learning_rate(generator),  # D follows the same schedule.
      generator_grad_norm=optax.tree.norm(g_grads),
      loss=g_loss + d_outputs['discriminator_loss'], step=step, **d_outputs)
  return generator, discriminator, train_metrics.merge(update)


def sr_beside_hr(generator: TrainState, batch: dict[str, jax.Array], count: int) -> jax.Array:
  """G's SR of the batch's first ``count`` crops beside their HR crops: uint8
  ``[count, crop, 2 * crop, 3]``, for TensorBoard during the SRGAN phase."""
  sr = generator.apply_fn(generator.eval_variables(), batch['lr'][:count], train=False)
  pairs = jnp.concatenate([sr.astype(jnp.float32), batch['hr'][:count]], axis=2)
  return upscalers.to_pixels(pairs).astype(jnp.uint8)


def compile_steps(config: ml_collections.ConfigDict, vgg_preprocessing: str,
                  replicated: jax.sharding.NamedSharding, *, scanned: bool = False
                  ) -> tuple[Callable, Callable]:
  """The jitted SRResNet and SRGAN steps: states and metrics donated and replicated.

  What the training loop runs and the benchmark times. ``vgg_preprocessing`` is that
  of the content loss's VGG19 weights ('caffe' or 'torch', see nn/vgg19.preprocess); the
  SRGAN step's other settings come from ``config.srgan``, its compute dtype from
  ``config.dtype``. Call them under ``jax.set_mesh`` of the mesh of ``replicated``.
  ``scanned``: each call runs several steps (``scan_steps``, ``config.steps_per_call``),
  taking a stack of batches ``[n, batch, ...]`` and the first step's number.
  """
  srresnet_step = functools.partial(srresnet_train_step, ema_decay=config.ema_decay)
  srgan_step = functools.partial(srgan_train_step,
                                 loss=PerceptualLoss.from_config(config, vgg_preprocessing),
                                 ema_decay=config.ema_decay)
  if scanned:
    srresnet_step, srgan_step = scan_steps(srresnet_step, 2), scan_steps(srgan_step, 3)
  return (jax.jit(srresnet_step, donate_argnums=(0, 1), out_shardings=replicated),
          jax.jit(srgan_step, donate_argnums=(0, 1, 2), out_shardings=replicated))


def scan_steps(train_step: Callable[..., tuple], num_carried: int) -> Callable[..., tuple]:
  """``train_step`` run over a stack of batches in one program (``jax.lax.scan``).

  ``train_step(*carried, batch, *constants, step)`` returns the new ``carried`` (the
  states and metrics); the result takes ``(*carried, batches, *constants, first_step)``
  where every leaf of ``batches`` has a leading axis of n steps, and runs steps
  ``first_step .. first_step + n - 1`` in order, as n calls of ``train_step`` would:
  metrics merge on the device, and the host sees them only at the call's end. One
  dispatch for n steps: at the paper's batch an accelerator finishes a step sooner
  than the host can dispatch one (notes/PERFORMANCE.md).
  """
  def run(*args):
    carried, (batches, *constants, first_step) = args[:num_carried], args[num_carried:]
    count = jax.tree_util.tree_leaves(batches)[0].shape[0]

    def body(carry, batch_and_step):
      batch, step = batch_and_step
      return tuple(train_step(*carry, batch, *constants, step)), None

    step_numbers = jnp.asarray(first_step, jnp.int32) + jnp.arange(count, dtype=jnp.int32)
    carried, _ = jax.lax.scan(body, tuple(carried), (batches, step_numbers))
    return carried

  return run


def empty_metrics(phase: str, replicated: jax.sharding.NamedSharding) -> metrics.Collection:
  """Zeroed train metrics of a phase, replicated: the metrics argument of its step."""
  collection = SRResNetMetrics if phase == SRRESNET else SRGANMetrics
  # Made on the devices: device_put of host values onto a multi-host sharding first
  # checks that every host holds the same values (a collective per leaf).
  return jax.jit(collection.empty, out_shardings=replicated)()
