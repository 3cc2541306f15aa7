"""The training loop: both phases of the paper in one workdir, resumable.

The two phases run with one global step counter: steps [0, srresnet.num_steps) train
the generator alone with pixel MSE; the next srgan.num_steps train it against the
discriminator (``steps``). Everything that varies between steps (crops,
augmentation) is keyed by (config.seed, step), so a resumed run repeats an
uninterrupted one exactly. The loop takes its batches from ``data/inputs``, saves and
restores checkpoints, evaluates with ``evaluation/during_training``, and on SIGTERM
(noted by a ``runtime/signals.Watcher``) saves and stops. Importing this module does
not import tensorflow: the tf.data input pipeline and clu's TensorBoard writer are
imported when the loop runs, and a run with ``data.source=device`` needs neither
(``evaluation/summaries``).
"""

import dataclasses
import functools
from typing import Any, Callable

from absl import logging
from clu import metrics
import jax
import ml_collections

from srgan_jax.data import inputs
from srgan_jax.evaluation import during_training
from srgan_jax.evaluation import summaries
from srgan_jax.nn import losses
from srgan_jax.nn import models
from srgan_jax.nn import upscalers
from srgan_jax.nn import vgg19
from srgan_jax.runtime import errors
from srgan_jax.runtime import memory
from srgan_jax.runtime import paths
from srgan_jax.runtime import sharding
from srgan_jax.runtime import signals
from srgan_jax.training import checkpointing
from srgan_jax.training import gan_health as gan_health_lib
from srgan_jax.training import model_reference
from srgan_jax.training import steps
from srgan_jax.training import workdir_lock


class NonFiniteLossError(errors.UserError, FloatingPointError):
  """Training produced a NaN or infinite loss."""


def steps_in_call(step: int, config: ml_collections.ConfigDict) -> int:
  """How many steps the call starting at ``step`` runs: up to config.steps_per_call,
  ending at a multiple of it (where logs, evaluations and checkpoints fall), and never
  past the SRResNet -> SRGAN switch or the last step."""
  per_call, srresnet_steps = config.steps_per_call, config.srresnet.num_steps
  end = min(step - step % per_call + per_call, num_steps(config))
  return (min(end, srresnet_steps) if step < srresnet_steps else end) - step


def load_vgg(config: ml_collections.ConfigDict) -> tuple[Any, str]:
  """VGG19 parameters and preprocessing for a VGG content loss, else (None, 'caffe')."""
  if config.srgan.num_steps == 0 or config.srgan.content_loss not in losses.VGG_CONTENT_LAYERS:
    return None, 'caffe'
  return vgg19.load_params(config.srgan.vgg_weights)


def generator_from(init_from: str, generator: steps.TrainState, field: str,
                   config: ml_collections.ConfigDict,
                   replicated: jax.sharding.NamedSharding) -> steps.TrainState:
  """``generator`` with the weights of ``init_from`` (a workdir's latest checkpoint or
  a shipped model's name; ``field`` is the config field that named it), replicated.

  Raises:
    checkpointing.CheckpointError: that generator's layout is not this config's.
  """
  _, variables, source_config = model_reference.load(model_reference.from_init_from(init_from))
  if models.weight_layout(source_config) != models.weight_layout(config):
    raise checkpointing.CheckpointError(
        f'{field}={init_from} has generator {models.weight_layout(source_config)}, '
        f'this config {models.weight_layout(config)}')
  logging.info('Generator from %s (%s).', init_from, field)
  # Every process read the same weights onto one of its own devices.
  variables = sharding.replicate(variables, replicated)
  return generator.replace(params=variables['params'],
                           batch_stats=variables.get('batch_stats', {}))


def initialize_srgan_generator(generator: steps.TrainState, config: ml_collections.ConfigDict,
                               replicated: jax.sharding.NamedSharding) -> steps.TrainState:
  """The generator the SRGAN phase starts from (paper: the trained SRResNet).

  With srgan.init_from set, its weights come from that workdir's latest checkpoint,
  or from the shipped model of that name; otherwise from this run's SRResNet phase.
  """
  if config.srgan.init_from:
    generator = generator_from(config.srgan.init_from, generator, 'srgan.init_from', config,
                               replicated)
  elif config.srresnet.num_steps == 0 and not config.srresnet.init_from:
    logging.warning('SRGAN phase starts from a random generator: the paper initializes '
                    'it from a trained SRResNet (set srgan.init_from).')
  return jax.jit(functools.partial(steps.start_srgan_phase, config=config),
                 out_shardings=replicated)(generator)


def out_of_memory(error: BaseException, config: ml_collections.ConfigDict
                  ) -> memory.OutOfMemoryError | None:
  """The one-line error for an out-of-memory ``error`` from a step, or from its tracing
  (the CPU weight-gradient timing allocates the layers' arrays), else None: what the
  step held and what to lower, instead of a 50-line traceback."""
  devices = jax.device_count()
  return memory.out_of_memory(
      error, f'in a training step with batch_size={config.batch_size} '
      f'({config.batch_size // devices} per device on {devices}), data.crop_size='
      f'{config.data.crop_size} and generator.features={config.generator.features}',
      'lower batch_size or data.crop_size (memory grows with batch x crop^2), or '
      'generator.features (x features^2), or use more devices')


def _check_finite(train_metrics: metrics.Collection, manager: Any) -> None:
  """Raises NonFiniteLossError if any step since the last check had a bad loss."""
  bad_step = int(jax.device_get(train_metrics.first_nonfinite_step.compute()))
  if bad_step >= 0:
    checkpointing.wait_until_finished(manager)
    raise NonFiniteLossError(
        f'the training loss became NaN or infinite at step {bad_step}; stopped. The '
        f'latest checkpoint ({manager.latest_step()}) in {manager.directory} is from '
        'before it and intact.')


def num_steps(config: ml_collections.ConfigDict) -> int:
  """The run's last step: both phases'."""
  return config.srresnet.num_steps + config.srgan.num_steps


def _check_steps(manager: Any, config: ml_collections.ConfigDict) -> None:
  """Raises CheckpointError when the latest checkpoint is past the config's last step
  (the run would train nothing and record a config that does not describe its weights)."""
  done = manager.latest_step() or 0
  if done > num_steps(config):
    raise checkpointing.CheckpointError(
        f'the checkpoint in {manager.directory} is at step {done}, but the config asks for '
        f'{num_steps(config)} steps (srresnet.num_steps={config.srresnet.num_steps} + '
        f'srgan.num_steps={config.srgan.num_steps}): ask for at least {done} to train on, '
        'or choose another --workdir for a shorter run')


def phase_at(step: int, config: ml_collections.ConfigDict) -> str:
  """The phase of the states a run at ``step`` starts from.

  A fresh run starts in the SRResNet phase even with srresnet.num_steps = 0: the
  switch at the top of the loop (``enter_srgan_phase``) is what initializes the SRGAN
  generator (srgan.init_from).
  """
  return steps.SRRESNET if step < config.srresnet.num_steps or not step else steps.SRGAN


@dataclasses.dataclass(frozen=True)
class Progress:
  """Where training stands between two compiled calls.

  Attributes:
    step: the number of steps done (the next step's number).
    phase: steps.SRRESNET or steps.SRGAN.
    generator, discriminator: the states (replicated).
    train_metrics: the phase's metrics since the last log.
  """
  step: int
  phase: str
  generator: steps.TrainState
  discriminator: steps.TrainState
  train_metrics: metrics.Collection


def restore_progress(config: ml_collections.ConfigDict, manager: Any,
                     replicated: jax.sharding.NamedSharding) -> Progress:
  """The states of the workdir's newest readable checkpoint (damaged newer ones are
  moved aside, one line each), or fresh ones when it has none: the generator's from
  srresnet.init_from when set (its optimizer's state fresh)."""
  # The states a run at ``step`` starts from: the phase fixes the optimizer (and a
  # restored state keeps the template's).
  fresh_states = lambda step: jax.jit(functools.partial(
      steps.create_states, config, phase_at(step, config)), out_shardings=replicated)()
  start_step = manager.latest_step() or 0
  phase = phase_at(start_step, config)
  generator, discriminator = fresh_states(start_step)
  if start_step:
    generator, discriminator, record = checkpointing.restore_newest_readable(
        manager, fresh_states, config)
    start_step, phase = record['step'], phase_at(record['step'], config)
    logging.info('Resumed from %s at step %d.', manager.directory, start_step)
    if phase == steps.SRGAN and record['phase'] == steps.SRRESNET:  # Saved right at the switch.
      phase = steps.SRRESNET
  elif config.srresnet.init_from:  # A fresh run only: a resumed one has its own weights.
    generator = generator_from(config.srresnet.init_from, generator, 'srresnet.init_from',
                               config, replicated)
  return Progress(start_step, phase, generator, discriminator,
                  steps.empty_metrics(phase, replicated))


def enter_srgan_phase(progress: Progress, config: ml_collections.ConfigDict,
                      replicated: jax.sharding.NamedSharding) -> Progress:
  """At the SRGAN phase's first step (the top of the loop), its generator
  (``initialize_srgan_generator``) and zeroed SRGAN metrics; else ``progress``."""
  if progress.phase == steps.SRGAN or progress.step < config.srresnet.num_steps:
    return progress
  return dataclasses.replace(
      progress, phase=steps.SRGAN,
      generator=initialize_srgan_generator(progress.generator, config, replicated),
      train_metrics=steps.empty_metrics(steps.SRGAN, replicated))


@dataclasses.dataclass(frozen=True)
class Programs:
  """A run's compiled programs, the mesh they run on and their constant input.

  Attributes:
    replicated: the sharding of the states: whole on every device of the mesh.
    srresnet_step, srgan_step: one call of config.steps_per_call steps at most
      (``steps.compile_steps``).
    sr_beside_hr: G's SR of a batch's first crops beside their HR, for TensorBoard.
    vgg_params: VGG19's weights for a VGG content loss (replicated), else None.
  """
  replicated: jax.sharding.NamedSharding
  srresnet_step: Callable[..., Any]
  srgan_step: Callable[..., Any]
  sr_beside_hr: Callable[..., jax.Array]
  vgg_params: Any

  @property
  def mesh(self) -> jax.sharding.Mesh:
    return self.replicated.mesh


def compile_programs(config: ml_collections.ConfigDict, replicated: jax.sharding.NamedSharding,
                     vgg_params: Any, vgg_preprocessing: str) -> Programs:
  """The run's programs (compiled on first use) and VGG19's weights on every device."""
  srresnet_step, srgan_step = steps.compile_steps(config, vgg_preprocessing, replicated,
                                                  scanned=config.steps_per_call > 1)
  sr_beside_hr = jax.jit(
      functools.partial(steps.sr_beside_hr,
                        count=min(config.num_summary_images, config.batch_size)),
      out_shardings=replicated)
  return Programs(replicated, srresnet_step, srgan_step, sr_beside_hr,
                  jax.device_put(vgg_params, replicated))


def train_call(progress: Progress, batch: dict[str, jax.Array], count: int,
               programs: Programs) -> Progress:
  """One compiled call: ``count`` steps of the phase on ``batch`` (``CallBatch.steps``)."""
  step, generator, discriminator = progress.step, progress.generator, progress.discriminator
  with jax.set_mesh(programs.mesh), jax.profiler.StepTraceAnnotation('train', step_num=step):
    if progress.phase == steps.SRRESNET:
      generator, train_metrics = programs.srresnet_step(
          generator, progress.train_metrics, batch, step)
    else:
      generator, discriminator, train_metrics = programs.srgan_step(
          generator, discriminator, progress.train_metrics, batch, programs.vgg_params, step)
  return Progress(step + count, progress.phase, generator, discriminator, train_metrics)


def log_metrics(progress: Progress, last_batch: dict[str, jax.Array],
                config: ml_collections.ConfigDict, programs: Programs, writer: Any,
                manager: Any, gan_health: gan_health_lib.GanHealth) -> Progress:
  """At log steps (and the end of each phase): writes the metrics since the last log,
  checked for NaN first, and zeroes them. In the SRGAN phase, also warns of an
  unhealthy GAN and shows G's SR of ``last_batch`` (the call's last step's) beside
  its HR: what D judges. Else returns ``progress``."""
  done = progress.step
  if not (done % config.log_every_steps == 0
          or done in (config.srresnet.num_steps, num_steps(config))):
    return progress
  _check_finite(progress.train_metrics, manager)
  summary = jax.device_get({k: v for k, v in progress.train_metrics.compute().items()
                            if k != 'first_nonfinite_step'})
  writer.write_scalars(done, {f'train/{progress.phase}/{k}': v for k, v in summary.items()})
  progress = dataclasses.replace(
      progress, train_metrics=steps.empty_metrics(progress.phase, programs.replicated))
  if progress.phase == steps.SRGAN:
    gan_health.check(done, summary)
    if config.num_summary_images:
      with jax.set_mesh(programs.mesh):
        pairs = programs.sr_beside_hr(progress.generator, last_batch)
      writer.write_images(done, {'train/srgan/sr_beside_hr': jax.device_get(pairs)})
  return progress


def evaluate(progress: Progress, config: ml_collections.ConfigDict,
             evaluator: during_training.TrainingEvaluator,
             gan_health: gan_health_lib.GanHealth) -> None:
  """At evaluation steps and the last: scores the generator on config.eval_folders;
  in the SRGAN phase, warns of texture invented where the photographs are flat."""
  generator, done, total_steps = progress.generator, progress.step, num_steps(config)
  if done % config.eval_every_steps == 0 or done == total_steps:
    results = evaluator.run(upscalers.generator(models.generator_from_config(config),
                                                generator.eval_variables()),
                            done, final=done == total_steps)
    if progress.phase == steps.SRGAN:
      gan_health.check_evaluation(done, results)


def save_or_stop(progress: Progress, config: ml_collections.ConfigDict, workdir: str,
                 manager: Any, stop: signals.Watcher, first: bool) -> bool:
  """After each call: saves a checkpoint where one is due (config.checkpoint_every_steps,
  the last step, or a stop signal on any process), then stops if signalled.

  ``first``: this run saved nothing yet; this save is waited for, so that a workdir
  that cannot be written fails now. Returns whether it saved.

  Raises:
    errors.Preempted: a stop signal arrived before the last step; saved.
  """
  done, total_steps = progress.step, num_steps(config)
  workdir_lock.check_held(workdir, done)  # Deleted or replaced: stop before writing.
  checkpointing.check_for_errors(manager)  # A failed background write stops here.
  preempted = stop.reached(done, manager)
  save = preempted or manager.should_save(done) or done == total_steps
  if save:
    _check_finite(progress.train_metrics, manager)
    checkpointing.save(manager, done, progress.generator, progress.discriminator,
                       checkpointing.run_record(done, progress.phase, config), force=True)
    if first:
      checkpointing.wait_until_finished(manager)
  if preempted and done == total_steps:
    # SIGTERM during the last step or the final evaluation: training is done and its
    # last checkpoint saved, so this is a finished run (exit 0). Reported as
    # preempted (75), a scheduler would rerun it only to find nothing left to do.
    checkpointing.wait_until_finished(manager)
    logging.warning('%s received during the last step or the final evaluation: '
                    'training finished and its checkpoint (step %d) is saved.',
                    signals.received() or 'SIGTERM', done)
  elif preempted:
    raise errors.Preempted(f'saved step {done} in {manager.directory}; rerun the same '
                           'command to resume', (progress.generator, progress.discriminator))
  return save


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop: signals.Watcher | None = None,
                       started: Callable[[], None] = lambda: None
                       ) -> tuple[steps.TrainState, steps.TrainState]:
  """Runs (or resumes) both phases in ``workdir``; returns the final states.

  ``config`` must have passed ``config_rules.validate`` (``srgan_jax.main`` checks it
  where the command line enters). ``stop``: the watcher of stop signals, entered by
  the caller (main enters it at start-up, so that SIGTERM while the states are
  restored or the steps compile is acted on at the end of the first step, which is
  saved); None enters one for this call. ``started`` is called once, when the first
  call of steps has run: the start-up (restore, input, compilation) is over.

  Raises:
    errors.Preempted: SIGTERM arrived before the last step; a checkpoint was saved,
      and calling this again with the same arguments resumes from it (SIGTERM in the
      last step or the final evaluation only logs a warning: training is finished).
    checkpointing.CheckpointError: among others, the workdir's checkpoint is past
      the config's last step (checked before anything is written).
  """
  if stop is None:
    with signals.Watcher(jax.process_count()) as watcher:
      return train_and_evaluate(config, workdir, watcher, started)
  total_steps = num_steps(config)
  # Damaged VGG19 weights are reported before anything is written.
  vgg_params, vgg_preprocessing = load_vgg(config)
  manager = checkpointing.create_manager(workdir, config)  # Checks the workdir.
  # Before the events file and config.json. Under the workdir lock (main), so a run
  # still writing this workdir is reported as that, not by its checkpoints.
  _check_steps(manager, config)
  # After the checks: clu's TensorBoard writer imports tensorflow (seconds), which the
  # steps do not need; without tensorflow the summaries are JSON lines.
  writer, hooks = summaries.create(workdir, total_steps, config.profile_steps,
                                   just_logging=jax.process_index() > 0)
  # From the states on: out of memory in their creation, the compilation (the CPU
  # weight-gradient timing) or a step is one line.
  try:
    replicated = jax.sharding.NamedSharding(sharding.create_mesh(), jax.P())
    progress = restore_progress(config, manager, replicated)
    if jax.process_index() == 0:  # Lets evaluation and inference rebuild the run.
      paths.write_whole(f'{workdir}/config.json', config.to_json_best_effort(indent=2))
    programs = compile_programs(config, replicated, vgg_params, vgg_preprocessing)
    next_call_batch = inputs.create_call_batches(config, progress.step, programs.mesh)
    gan_health, saved, first_step = gan_health_lib.GanHealth(), False, progress.step
    evaluator = during_training.TrainingEvaluator(config, writer)  # Names absent sets.
    logging.info('Training steps %d..%d (SRResNet until %d) on %d devices.',
                 progress.step, total_steps, config.srresnet.num_steps, jax.device_count())
    while progress.step < total_steps:  # One compiled call (of steps_in_call steps) per pass.
      progress = enter_srgan_phase(progress, config, replicated)
      count = steps_in_call(progress.step, config)
      batch = next_call_batch(count)
      progress = train_call(progress, batch.steps, count, programs)
      if progress.step == count + first_step:
        started()
      for hook in hooks:
        hook(progress.step)
      progress = log_metrics(progress, batch.last, config, programs, writer, manager, gan_health)
      evaluate(progress, config, evaluator, gan_health)
      saved |= save_or_stop(progress, config, workdir, manager, stop, first=not saved)
  except (jax.errors.JaxRuntimeError, MemoryError) as error:
    raise out_of_memory(error, config) or error
  finally:
    checkpointing.wait_until_finished(manager)
    writer.flush()
  return progress.generator, progress.discriminator
