"""SRResNet and SRGAN training: states, jitted sharded steps, and the training loop.

The two phases of the paper run in one workdir with one global step counter:
steps [0, srresnet.num_steps) train the generator alone with pixel MSE; the next
srgan.num_steps train it against the discriminator. Everything that varies between
steps (crops, augmentation) is keyed by (config.seed, step), so a resumed run repeats
an uninterrupted one exactly.

Sharding: one 'data' mesh axis over every device of every host; batches are split
along it and the states are replicated, so BatchNorm statistics and gradients cover
the global batch. Importing this module does not import tensorflow: the tf.data
input pipeline and clu's TensorBoard writer are imported by the training loop only.
"""

import functools
import signal
from typing import Any, Callable, Iterator, TYPE_CHECKING

from absl import logging
from clu import metrics
from etils import epath
import flax
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from srgan_jax import checkpointing
from srgan_jax import distributed
from srgan_jax import errors
from srgan_jax import evaluate
from srgan_jax import losses
from srgan_jax import models
from srgan_jax import perceptual
from srgan_jax import sharding
from srgan_jax import vgg19
from srgan_jax.configs import validation

if TYPE_CHECKING:  # clu's writers and periodic actions import tensorflow.
  from clu import metric_writers  # pylint: disable=g-bad-import-order

SRRESNET, SRGAN = 'srresnet', 'srgan'


class TrainState(train_state.TrainState):
  """A TrainState that also carries BatchNorm statistics and, optionally, an EMA.

  The EMA covers the BatchNorm running averages too (``ema_batch_stats``, with the
  weights' decay): the running averages follow the current weights over about ten
  steps, the EMA weights average about 1 / (1 - decay) steps, and evaluating the
  EMA weights with the current weights' statistics mixes two different networks.
  """
  batch_stats: Any
  ema_params: Any = None
  ema_batch_stats: Any = None

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
  discriminator_loss: metrics.Average.from_output('discriminator_loss')
  d_real: metrics.Average.from_output('d_real')  # Mean D(HR): near 1 when D wins.
  d_fake: metrics.Average.from_output('d_fake')  # Mean D(G(LR)).
  learning_rate: metrics.LastValue.from_output('learning_rate')
  generator_grad_norm: metrics.Average.from_output('generator_grad_norm')
  discriminator_grad_norm: metrics.Average.from_output('discriminator_grad_norm')
  first_nonfinite_step: FirstNonFinite


class NonFiniteLossError(errors.UserError, FloatingPointError):
  """Training produced a NaN or infinite loss."""


def compute_dtype(config: ml_collections.ConfigDict) -> Any:
  return {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[config.dtype]


def create_generator(config: ml_collections.ConfigDict) -> models.SRResNet:
  """The generator to train, computing in the config's dtype."""
  return models.generator_from_config(config, compute_dtype(config))


def create_discriminator(config: ml_collections.ConfigDict) -> models.Discriminator:
  """The discriminator to train, computing in the config's dtype."""
  return models.discriminator_from_config(config, compute_dtype(config))


def create_optimizer(config: ml_collections.ConfigDict, phase: str) -> optax.GradientTransformation:
  """Adam (beta1 0.9) with the phase's schedule: constant 1e-4 for the SRResNet (or
  a cosine decay to 0 with srresnet.schedule='cosine'); 1e-4 then 1e-5 after
  srgan.decay_steps for SRGAN (both networks)."""
  if phase == SRRESNET and config.srresnet.schedule == 'constant':
    schedule = optax.constant_schedule(config.srresnet.learning_rate)
  elif phase == SRRESNET and config.srresnet.schedule == 'cosine':
    # The rate falls to zero at the end, so the last evaluations agree and the
    # running BatchNorm averages catch up with weights that no longer move.
    schedule = optax.cosine_decay_schedule(config.srresnet.learning_rate,
                                           max(config.srresnet.num_steps, 1))
  elif phase == SRRESNET:
    raise ValueError(f"srresnet.schedule must be 'constant' or 'cosine', not "
                     f'{config.srresnet.schedule!r}')
  else:
    schedule = optax.piecewise_constant_schedule(
        config.srgan.learning_rate, {config.srgan.decay_steps: config.srgan.decay_factor})
  # inject_hyperparams keeps the current learning rate in the optimizer state for logging.
  return optax.inject_hyperparams(optax.adam)(
      learning_rate=schedule, b1=config.adam_b1, b2=config.adam_b2)


def create_train_state(rng: jax.Array, model: flax.linen.Module, input_shape: tuple[int, ...],
                       tx: optax.GradientTransformation, ema: bool = False) -> TrainState:
  """Initialises a model's variables and wraps them with its optimizer."""
  variables = model.init(rng, jnp.zeros(input_shape, jnp.float32), train=False)
  params = variables['params']
  batch_stats = variables.get('batch_stats', {})  # {}: a generator without BatchNorm.
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx, batch_stats=batch_stats,
                           ema_params=params if ema else None,
                           ema_batch_stats=batch_stats if ema else None)


def create_states(config: ml_collections.ConfigDict, phase: str) -> tuple[TrainState, TrainState]:
  """Freshly initialised generator and discriminator states for a phase."""
  crop = config.data.crop_size
  if crop % config.scale or crop % 16:
    raise ValueError(f'data.crop_size {crop} must be a multiple of scale {config.scale} '
                     'and of 16 (the discriminator halves it four times)')
  g_rng, d_rng = jax.random.split(jax.random.key(config.seed))
  lr_side = crop // config.scale
  generator = create_train_state(g_rng, create_generator(config), (1, lr_side, lr_side, 3),
                                 create_optimizer(config, phase), ema=config.ema_decay > 0)
  discriminator = create_train_state(d_rng, create_discriminator(config), (1, crop, crop, 3),
                                     create_optimizer(config, SRGAN))
  return generator, discriminator


def start_srgan_phase(generator: TrainState, config: ml_collections.ConfigDict) -> TrainState:
  """The SRGAN generator: the SRResNet's weights with a fresh Adam on the SRGAN schedule."""
  tx = create_optimizer(config, SRGAN)
  ema = config.ema_decay > 0
  return TrainState.create(apply_fn=generator.apply_fn, params=generator.params, tx=tx,
                           batch_stats=generator.batch_stats,
                           ema_params=generator.params if ema else None,
                           ema_batch_stats=generator.batch_stats if ema else None)


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


def srgan_train_step(generator: TrainState, discriminator: TrainState,
                     train_metrics: SRGANMetrics, batch: dict[str, jax.Array],
                     vgg_params: Any, step: jax.Array, *, content_loss: str,
                     adversarial_weight: float, vgg_feature_scale: float,
                     vgg_preprocessing: str, ema_decay: float, dtype: Any
                     ) -> tuple[TrainState, TrainState, SRGANMetrics]:
  """One SRGAN update of D then G (k = 1), in one compiled program.

  G runs forward once; D is updated on (HR, G(LR)); G's perceptual loss (content +
  1e-3 x adversarial) is then taken against the updated D and pulled back through the
  saved forward pass.
  """
  lr, hr = batch['lr'], batch['hr']

  def generate(params):
    sr, updates = generator.apply_fn(
        {'params': params, 'batch_stats': generator.batch_stats}, lr, train=True,
        mutable=['batch_stats'])
    return sr, updates['batch_stats']

  sr, generator_vjp, generator_batch_stats = jax.vjp(generate, generator.params, has_aux=True)

  def discriminate(params, batch_stats, images):
    logits, updates = discriminator.apply_fn(
        {'params': params, 'batch_stats': batch_stats}, images, train=True,
        mutable=['batch_stats'])
    return logits, updates['batch_stats']

  def discriminator_loss_fn(params):
    # Real and fake batches pass separately, so each has its own BN statistics.
    real_logits, batch_stats = discriminate(params, discriminator.batch_stats, hr)
    fake_logits, batch_stats = discriminate(params, batch_stats, jax.lax.stop_gradient(sr))
    loss = losses.discriminator_loss(real_logits, fake_logits)
    return loss, (real_logits, fake_logits, batch_stats)

  (d_loss, (real_logits, fake_logits, d_batch_stats)), d_grads = jax.value_and_grad(
      discriminator_loss_fn, has_aux=True)(discriminator.params)
  discriminator = discriminator.apply_gradients(grads=d_grads, batch_stats=d_batch_stats)

  content_loss_fn = losses.make_content_loss(
      content_loss, vgg_params, vgg_preprocessing, vgg_feature_scale, dtype)

  def perceptual_loss_fn(sr):
    # The updated D judges G's output; its BN statistic updates from this pass are
    # not kept (D was already updated on this batch).
    logits, _ = discriminate(discriminator.params, discriminator.batch_stats, sr)
    content = content_loss_fn(sr, hr)
    adversarial = losses.generator_adversarial_loss(logits)
    return content + adversarial_weight * adversarial, (content, adversarial)

  (g_loss, (content, adversarial)), sr_grads = jax.value_and_grad(
      perceptual_loss_fn, has_aux=True)(sr)
  (g_grads,) = generator_vjp(sr_grads)
  generator = _update_generator(generator, g_grads, generator_batch_stats, ema_decay)

  update = SRGANMetrics.single_from_model_output(
      generator_loss=g_loss, content_loss=content, adversarial_loss=adversarial,
      discriminator_loss=d_loss, d_real=jnp.mean(jax.nn.sigmoid(real_logits)),
      d_fake=jnp.mean(jax.nn.sigmoid(fake_logits)),
      learning_rate=_learning_rate(generator),  # D follows the same schedule.
      generator_grad_norm=optax.tree.norm(g_grads),
      discriminator_grad_norm=optax.tree.norm(d_grads),
      loss=g_loss + d_loss, step=step)
  return generator, discriminator, train_metrics.merge(update)


def create_input_iterator(config: ml_collections.ConfigDict,
                          start_step: int) -> Iterator[dict[str, np.ndarray]]:
  """This host's batches for steps start_step, start_step + 1, ..."""
  if config.batch_size % jax.device_count():
    raise ValueError(f'batch_size {config.batch_size} must be a multiple of the '
                     f'{jax.device_count()} devices')
  if config.data.source == 'device':  # No tensorflow: decoded once onto the accelerator.
    from srgan_jax import device_data  # pylint: disable=g-import-not-at-top  # This source only.
    source = device_data.DeviceDataSource(
        config.data, scale=config.scale, seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count())
    return source.batches(start_step, config.batch_size // jax.process_count())
  from srgan_jax import input_pipeline  # pylint: disable=g-import-not-at-top  # tf.data source only.
  return input_pipeline.create_train_iterator(
      config.data, scale=config.scale, batch_size=config.batch_size // jax.process_count(),
      seed=config.seed, start_step=start_step, process_index=jax.process_index(),
      process_count=jax.process_count())


def load_vgg(config: ml_collections.ConfigDict) -> tuple[Any, str]:
  """VGG19 parameters and preprocessing for a VGG content loss, else (None, 'caffe')."""
  if config.srgan.num_steps == 0 or config.srgan.content_loss == 'mse':
    return None, 'caffe'
  return vgg19.load_params(config.srgan.vgg_weights)


def initialise_srgan_generator(generator: TrainState, config: ml_collections.ConfigDict,
                               replicated: jax.sharding.NamedSharding) -> TrainState:
  """The generator the SRGAN phase starts from (paper: the trained SRResNet).

  With srgan.init_from set, its weights come from that workdir's latest checkpoint;
  otherwise from this run's SRResNet phase.
  """
  if config.srgan.init_from:
    _, variables, source_config = checkpointing.load_generator(
        config.srgan.init_from, ema=False)
    if (source_config.generator.to_dict(), source_config.scale) != (
        config.generator.to_dict(), config.scale):
      raise checkpointing.CheckpointError(
          f'srgan.init_from={config.srgan.init_from} has generator '
          f'{source_config.generator.to_dict()} x{source_config.scale}, this config '
          f'{config.generator.to_dict()} x{config.scale}')
    variables = jax.device_put(variables, replicated)
    generator = generator.replace(params=variables['params'],
                                  batch_stats=variables['batch_stats'])
  elif config.srresnet.num_steps == 0:
    logging.warning('SRGAN phase starts from a random generator: the paper initialises '
                    'it from a trained SRResNet (set srgan.init_from).')
  return jax.jit(functools.partial(start_srgan_phase, config=config),
                 out_shardings=replicated)(generator)


class PreemptionWatcher:
  """Notices SIGTERM (preemption, job schedulers) so the loop can save and stop.

  One process: a signal handler. Several: JAX's preemption sync service, which makes
  every process agree on the step at which to stop.
  """

  def __init__(self):
    self._signalled = False
    self._previous = None
    if jax.process_count() == 1:
      try:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
      except ValueError:  # Not the main thread: leave signals alone.
        pass

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint at the end of this step.')
    self._signalled = True

  def reached(self, step: int, manager: Any) -> bool:
    if jax.process_count() > 1:
      return manager.reached_preemption(step)
    return self._signalled

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def compile_steps(config: ml_collections.ConfigDict, vgg_preprocessing: str,
                  replicated: jax.sharding.NamedSharding) -> tuple[Callable, Callable]:
  """The jitted SRResNet and SRGAN steps: states and metrics donated and replicated.

  What the training loop runs and the benchmark times. ``vgg_preprocessing`` is that
  of the content loss's VGG19 weights ('caffe' or 'torch', see vgg19.preprocess); the
  SRGAN step's other settings come from ``config.srgan``, its compute dtype from
  ``config.dtype``. Call them under ``jax.set_mesh`` of the mesh of ``replicated``.
  """
  srresnet_step = jax.jit(
      functools.partial(srresnet_train_step, ema_decay=config.ema_decay),
      donate_argnums=(0, 1), out_shardings=replicated)
  srgan_step = jax.jit(
      functools.partial(
          srgan_train_step, content_loss=config.srgan.content_loss,
          adversarial_weight=config.srgan.adversarial_weight,
          vgg_feature_scale=config.srgan.vgg_feature_scale,
          vgg_preprocessing=vgg_preprocessing, ema_decay=config.ema_decay,
          dtype=compute_dtype(config)),
      donate_argnums=(0, 1, 2), out_shardings=replicated)
  return srresnet_step, srgan_step


def empty_metrics(phase: str, replicated: jax.sharding.NamedSharding) -> metrics.Collection:
  """Zeroed train metrics of a phase, replicated: the metrics argument of its step."""
  collection = SRResNetMetrics if phase == SRRESNET else SRGANMetrics
  # Made on the devices: device_put of host values onto a multi-host sharding first
  # checks that every host holds the same values (a collective per leaf).
  return jax.jit(collection.empty, out_shardings=replicated)()


def _check_finite(train_metrics: metrics.Collection, manager: Any) -> None:
  """Raises NonFiniteLossError if any step since the last check had a bad loss."""
  bad_step = int(jax.device_get(train_metrics.first_nonfinite_step.compute()))
  if bad_step >= 0:
    checkpointing.wait_until_finished(manager)
    raise NonFiniteLossError(
        f'the training loss became NaN or infinite at step {bad_step}; stopped. The '
        f'latest checkpoint ({manager.latest_step()}) in {manager.directory} is from '
        'before it and intact.')


def existing_eval_folders(config: ml_collections.ConfigDict) -> list[str]:
  """The evaluation folders that exist (the benchmark sets are optional).

  All hosts evaluate the same folders, those that every host has (otherwise they
  would run different programs and wait for each other forever); every process
  must call this.
  """
  present = distributed.on_every_process(  # Folders, or single image files.
      [epath.Path(folder).exists() for folder in config.eval_folders])
  return [folder for folder, ok in zip(config.eval_folders, present) if ok]


def _report_missing_eval_folders(config: ml_collections.ConfigDict) -> None:
  """One line naming the evaluation sets that are absent and how to provide them."""
  missing = sorted(set(config.eval_folders) - set(existing_eval_folders(config)))
  if missing:
    logging.warning('Evaluation set(s) not found (on this host or another), training '
                    'without evaluating on them: %s '
                    '(set $SRGAN_DATASETS or --config.eval_folders; see the README\'s '
                    '"Image sets").', ', '.join(missing))


def evaluate_generator(generator: TrainState, config: ml_collections.ConfigDict,
                       writer: 'metric_writers.MetricWriter', step: int,
                       final: bool = False) -> dict[str, Any]:
  """PSNR/SSIM (Y channel, MATLAB conventions) and ``config.eval_metrics`` (NIQE,
  LPIPS) on the config's evaluation folders (or single image files). ``final``: also
  prints a table beside bicubic's, with the mean SR - HR offset per channel logged."""
  variables = generator.eval_variables()
  model = models.generator_from_config(config)
  samples = []
  upscale = evaluate.generator_upscale_fn(model, variables)
  folders = existing_eval_folders(config)  # Missing ones were reported at the start.

  def upscale_and_keep(lr):
    sr = upscale(lr)
    samples.extend(sr[:config.num_summary_images - len(samples)])
    return sr

  metric_fns = perceptual.metric_fns(config.eval_metrics, config.scale)
  results = evaluate.evaluate_sets(upscale_and_keep, folders, config.scale, metric_fns=metric_fns)
  scored = {name: folder for name, folder in zip(results, folders)
            if 'error' not in results[name]}  # A set that could not be scored is skipped.
  # The bicubic baseline (computed once per process) too, as a flat line beside each
  # curve in TensorBoard and in srgan_jax.plot.
  baselines = {name: evaluate.bicubic_scores(folder, config.scale, metric_fns)
               for name, folder in scored.items()}
  writer.write_scalars(step, {f'eval/{name}/{prefix}{metric}': value
                              for source, prefix in ((results, ''), (baselines, 'bicubic_'))
                              for name, result in source.items() if name in scored
                              for metric, value in result.items()
                              if metric in ('psnr', 'ssim', *metric_fns)})
  for name in scored:
    logging.info('step %d, %s: SR - HR per channel (R, G, B) %s grey levels', step, name,
                 ', '.join(f'{b:+.2f}' for b in results[name]['bias']))
  if final and scored and jax.process_index() == 0:
    for name in scored:
      results[name]['bicubic'] = {key: value for key, value in baselines[name].items()
                                  if key not in ('images', 'failed', 'bias')}
    print(f'Step {step}, this generator against bicubic interpolation:\n'
          f'{evaluate.format_table(results)}', flush=True)
  if samples:
    writer.write_images(step, {f'eval/sample{i}': sample[None] for i, sample in enumerate(samples)})
  return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> tuple[TrainState, TrainState]:
  """Runs (or resumes) both phases in ``workdir``; returns the final states.

  Raises:
    errors.ConfigError: a bad config field (before anything is written).
    errors.Preempted: SIGTERM arrived; a checkpoint was saved, and calling this
      again with the same arguments resumes from it.
  """
  validation.validate(config, jax.device_count())
  # Imported here: they import tensorflow (for TensorBoard), which the steps do not need.
  from clu import metric_writers  # pylint: disable=g-import-not-at-top,redefined-outer-name
  from clu import periodic_actions  # pylint: disable=g-import-not-at-top
  srresnet_steps, total_steps = config.srresnet.num_steps, (
      config.srresnet.num_steps + config.srgan.num_steps)
  # Damaged VGG19 weights are reported before anything is written.
  vgg_params, vgg_preprocessing = load_vgg(config)
  manager = checkpointing.create_manager(workdir, config)  # Checks the workdir.
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  mesh = sharding.create_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.P())
  data_sharding = jax.sharding.NamedSharding(mesh, jax.P('data'))
  start_step = manager.latest_step() or 0
  phase = SRRESNET if start_step < srresnet_steps else SRGAN

  generator, discriminator = jax.jit(
      functools.partial(create_states, config, phase), out_shardings=replicated)()
  if start_step:
    generator, discriminator, record = checkpointing.restore(
        manager, start_step, generator, discriminator, config)
    logging.info('Resumed from %s at step %d.', manager.directory, start_step)
    if phase == SRGAN and record['phase'] == SRRESNET:  # Saved right at the switch.
      phase = SRRESNET
  if jax.process_index() == 0:  # Lets evaluation and inference rebuild the run.
    (epath.Path(workdir) / 'config.json').write_text(config.to_json_best_effort(indent=2))

  vgg_params = jax.device_put(vgg_params, replicated)
  srresnet_step, srgan_step = compile_steps(config, vgg_preprocessing, replicated)
  train_metrics = empty_metrics(phase, replicated)
  batches = create_input_iterator(config, start_step)
  hooks = [periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)]
  if jax.process_index() == 0 and config.profile_steps:
    hooks.append(periodic_actions.Profile(num_profile_steps=config.profile_steps,
                                          logdir=workdir))
  preemption = PreemptionWatcher()
  saved_once = False
  _report_missing_eval_folders(config)
  logging.info('Training steps %d..%d (SRResNet until %d) on %d devices.',
               start_step, total_steps, srresnet_steps, jax.device_count())
  try:
    for step in range(start_step, total_steps):
      if phase == SRRESNET and step >= srresnet_steps:
        phase = SRGAN
        generator = initialise_srgan_generator(generator, config, replicated)
        train_metrics = empty_metrics(phase, replicated)
      # Outside the mesh context: the device source makes each host's batch on one
      # of its devices before it joins the global batch.
      batch = sharding.shard_batch(next(batches), data_sharding)
      with jax.set_mesh(mesh), jax.profiler.StepTraceAnnotation('train', step_num=step):
        if phase == SRRESNET:
          generator, train_metrics = srresnet_step(generator, train_metrics, batch, step)
        else:
          generator, discriminator, train_metrics = srgan_step(
              generator, discriminator, train_metrics, batch, vgg_params, step)
      done = step + 1
      for hook in hooks:
        hook(done)
      if done % config.log_every_steps == 0 or done in (srresnet_steps, total_steps):
        _check_finite(train_metrics, manager)
        summary = {f'train/{phase}/{k}': v for k, v in train_metrics.compute().items()
                   if k != 'first_nonfinite_step'}
        writer.write_scalars(done, jax.device_get(summary))
        train_metrics = empty_metrics(phase, replicated)
      if done % config.eval_every_steps == 0 or done == total_steps:
        evaluate_generator(generator, config, writer, done, final=done == total_steps)
      checkpointing.check_for_errors(manager)  # A failed background write stops here.
      preempted = preemption.reached(done, manager)
      if preempted or manager.should_save(done) or done == total_steps:
        _check_finite(train_metrics, manager)
        checkpointing.save(manager, done, generator, discriminator,
                           checkpointing.run_record(done, phase, config), force=True)
        if not saved_once:  # The first write of a run is waited for: a workdir that
          checkpointing.wait_until_finished(manager)  # cannot be written fails now.
          saved_once = True
      if preempted:
        raise errors.Preempted(f'saved step {done} in {manager.directory}; rerun the '
                               'same command to resume', (generator, discriminator))
  finally:
    preemption.close()
    checkpointing.wait_until_finished(manager)
    writer.flush()
  return generator, discriminator
