"""The training loop: both phases of the paper in one workdir, resumable.

The two phases run with one global step counter: steps [0, srresnet.num_steps) train
the generator alone with pixel MSE; the next srgan.num_steps train it against the
discriminator (``steps``). Everything that varies between steps (crops,
augmentation) is keyed by (config.seed, step), so a resumed run repeats an
uninterrupted one exactly. The loop picks the input (``data/``), saves and restores
checkpoints, evaluates with ``evaluation/during_training``, and stops cleanly on
SIGTERM. Importing this module does not import tensorflow: the tf.data input
pipeline and clu's TensorBoard writer are imported when the loop runs, and a run
with ``data.source=device`` needs neither (``evaluation/summaries``).
"""

import functools
import signal
from typing import Any, Callable, Iterator

from absl import logging
from clu import metrics
from etils import epath
import jax
import ml_collections
import numpy as np

from srgan_jax.evaluation import during_training
from srgan_jax.evaluation import summaries
from srgan_jax.nn import losses
from srgan_jax.nn import models
from srgan_jax.nn import upscalers
from srgan_jax.nn import vgg19
from srgan_jax.runtime import errors
from srgan_jax.runtime import sharding
from srgan_jax.training import checkpointing
from srgan_jax.training import gan_health as gan_health_lib
from srgan_jax.training import model_reference
from srgan_jax.training import steps
from srgan_jax.training import workdir_lock


class NonFiniteLossError(errors.UserError, FloatingPointError):
  """Training produced a NaN or infinite loss."""


def _device_source(config: ml_collections.ConfigDict) -> Any:
  """This host's images decoded onto its first device (config.data.source='device')."""
  from srgan_jax.data import on_device  # pylint: disable=g-import-not-at-top  # This source only.
  return on_device.DeviceDataSource(
      config.data, scale=config.scale, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())


def create_input_iterator(config: ml_collections.ConfigDict,
                          start_step: int) -> Iterator[dict[str, np.ndarray]]:
  """This host's batches for steps start_step, start_step + 1, ..."""
  if config.data.source == 'device':  # No tensorflow: decoded once onto the accelerator.
    return _device_source(config).batches(start_step, config.batch_size // jax.process_count())
  # tf.data source only (it imports tensorflow).
  from srgan_jax.data import tf_pipeline  # pylint: disable=g-import-not-at-top
  return tf_pipeline.create_train_iterator(
      config.data, scale=config.scale, batch_size=config.batch_size // jax.process_count(),
      seed=config.seed, start_step=start_step, process_index=jax.process_index(),
      process_count=jax.process_count())


def create_stacked_input(config: ml_collections.ConfigDict,
                         start_step: int) -> Callable[[int], dict[str, Any]]:
  """``next_stack(count)``: this host's batches of the next ``count`` steps (from
  start_step on), stacked ``[count, b, ...]``, for calls of several steps.

  The device source makes the stack on the device in one dispatch; the others stack
  host batches, which then reach the devices in one transfer.
  """
  if config.data.source == 'device':
    source, next_step = _device_source(config), start_step

    def next_stack(count: int) -> dict[str, Any]:
      nonlocal next_step
      stack = source.stacked_batches(next_step, count, config.batch_size // jax.process_count())
      next_step += count
      return stack

    return next_stack
  batches = create_input_iterator(config, start_step)
  return lambda count: jax.tree_util.tree_map(
      lambda *steps_batches: np.stack(steps_batches), *[next(batches) for _ in range(count)])


def steps_in_call(step: int, config: ml_collections.ConfigDict) -> int:
  """How many steps the call starting at ``step`` runs: up to config.steps_per_call,
  ending at a multiple of it (where logs, evaluations and checkpoints fall), and never
  past the SRResNet -> SRGAN switch or the last step."""
  per_call, srresnet_steps = config.steps_per_call, config.srresnet.num_steps
  end = min(step - step % per_call + per_call, srresnet_steps + config.srgan.num_steps)
  return (min(end, srresnet_steps) if step < srresnet_steps else end) - step


def load_vgg(config: ml_collections.ConfigDict) -> tuple[Any, str]:
  """VGG19 parameters and preprocessing for a VGG content loss, else (None, 'caffe')."""
  if config.srgan.num_steps == 0 or config.srgan.content_loss not in losses.VGG_CONTENT_LAYERS:
    return None, 'caffe'
  return vgg19.load_params(config.srgan.vgg_weights)


def initialize_srgan_generator(generator: steps.TrainState, config: ml_collections.ConfigDict,
                               replicated: jax.sharding.NamedSharding) -> steps.TrainState:
  """The generator the SRGAN phase starts from (paper: the trained SRResNet).

  With srgan.init_from set, its weights come from that workdir's latest checkpoint,
  or from the shipped model of that name; otherwise from this run's SRResNet phase.
  """
  if config.srgan.init_from:
    _, variables, source_config = model_reference.load(
        model_reference.from_init_from(config.srgan.init_from))
    if models.weight_layout(source_config) != models.weight_layout(config):
      raise checkpointing.CheckpointError(
          f'srgan.init_from={config.srgan.init_from} has generator '
          f'{models.weight_layout(source_config)}, this config '
          f'{models.weight_layout(config)}')
    # Every process read the same weights onto one of its own devices.
    variables = sharding.replicate(variables, replicated)
    generator = generator.replace(params=variables['params'],
                                  batch_stats=variables.get('batch_stats', {}))
  elif config.srresnet.num_steps == 0:
    logging.warning('SRGAN phase starts from a random generator: the paper initializes '
                    'it from a trained SRResNet (set srgan.init_from).')
  return jax.jit(functools.partial(steps.start_srgan_phase, config=config),
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


# The watcher main installs at start-up, for the next train_and_evaluate.
_started_watcher: PreemptionWatcher | None = None


def watch_for_preemption() -> None:
  """Starts noticing SIGTERM now, for the next ``train_and_evaluate`` (main calls it
  before the config checks): SIGTERM during start-up, the restore or compilation
  (minutes on a large config) is then acted on at the end of the first step, which
  is saved, instead of killing the process (exit 143) with nothing said.

  A flag, not an exception raised from the handler: one raised there inside a
  library that catches broadly (logging does) would be lost.
  """
  global _started_watcher
  _started_watcher = PreemptionWatcher()


class OutOfMemoryError(errors.UserError, MemoryError):
  """A training step needs more accelerator memory than there is."""


def out_of_memory(error: Exception, config: ml_collections.ConfigDict
                  ) -> OutOfMemoryError | None:
  """The one-line error for XLA's RESOURCE_EXHAUSTED from a step (else None): what the
  step held and what to lower, instead of a 50-line JaxRuntimeError traceback."""
  if not isinstance(error, jax.errors.JaxRuntimeError) or 'RESOURCE_EXHAUSTED' not in str(error):
    return None
  detail = str(error).strip().splitlines()[0][:200]
  devices = jax.device_count()
  return OutOfMemoryError(
      f'out of accelerator memory in a training step with batch_size={config.batch_size} '
      f'({config.batch_size // devices} per device on {devices}) and data.crop_size='
      f'{config.data.crop_size} ({detail}): lower batch_size or data.crop_size (memory '
      'grows with batch x crop^2), or use more devices')


def _check_finite(train_metrics: metrics.Collection, manager: Any) -> None:
  """Raises NonFiniteLossError if any step since the last check had a bad loss."""
  bad_step = int(jax.device_get(train_metrics.first_nonfinite_step.compute()))
  if bad_step >= 0:
    checkpointing.wait_until_finished(manager)
    raise NonFiniteLossError(
        f'the training loss became NaN or infinite at step {bad_step}; stopped. The '
        f'latest checkpoint ({manager.latest_step()}) in {manager.directory} is from '
        'before it and intact.')


def _check_steps(done: int, config: ml_collections.ConfigDict, directory: Any) -> None:
  """Raises CheckpointError when a checkpoint is past the config's last step (the run
  would train nothing and record a config that does not describe its weights)."""
  total_steps = config.srresnet.num_steps + config.srgan.num_steps
  if done > total_steps:
    raise checkpointing.CheckpointError(
        f'the checkpoint in {directory} is at step {done}, but the config asks for '
        f'{total_steps} steps (srresnet.num_steps={config.srresnet.num_steps} + '
        f'srgan.num_steps={config.srgan.num_steps}): ask for at least {done} to train on, '
        'or choose another --workdir for a shorter run')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> tuple[steps.TrainState, steps.TrainState]:
  """Runs (or resumes) both phases in ``workdir``; returns the final states.

  ``config`` must have passed ``config_rules.validate`` (``srgan_jax.main`` checks it
  where the command line enters).

  Raises:
    errors.Preempted: SIGTERM arrived before the last step; a checkpoint was saved,
      and calling this again with the same arguments resumes from it (SIGTERM in the
      last step or the final evaluation only logs a warning: training is finished).
    checkpointing.CheckpointError: among others, the workdir's checkpoint is past
      the config's last step (checked before anything is written).
  """
  srresnet_steps, total_steps = config.srresnet.num_steps, (
      config.srresnet.num_steps + config.srgan.num_steps)
  # First: SIGTERM while the states are restored or the steps compile is acted on at
  # the end of the first step, which is then saved.
  global _started_watcher
  preemption, _started_watcher = _started_watcher or PreemptionWatcher(), None
  # Damaged VGG19 weights are reported before anything is written.
  vgg_params, vgg_preprocessing = load_vgg(config)
  manager = checkpointing.create_manager(workdir, config)  # Checks the workdir.
  start_step = manager.latest_step() or 0
  # Before the events file and config.json. Under the workdir lock (main), so a run
  # still writing this workdir is reported as that, not by its checkpoints.
  _check_steps(start_step, config, manager.directory)
  # After the checks: clu's TensorBoard writer imports tensorflow (seconds), which the
  # steps do not need; without tensorflow the summaries are JSON lines.
  writer, hooks = summaries.create(workdir, total_steps, config.profile_steps,
                                   just_logging=jax.process_index() > 0)
  mesh = sharding.create_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.P())
  data_sharding = jax.sharding.NamedSharding(mesh, jax.P('data'))
  # A fresh run starts in the SRResNet phase even with srresnet.num_steps = 0: the
  # switch at the top of the loop is what initializes the SRGAN generator
  # (srgan.init_from).
  phase_at = lambda step: steps.SRRESNET if step < srresnet_steps or not step else steps.SRGAN
  # The states a run at ``step`` starts from: the phase fixes the optimizer (and a
  # restored state keeps the template's).
  fresh_states = lambda step: jax.jit(functools.partial(
      steps.create_states, config, phase_at(step)), out_shardings=replicated)()
  phase = phase_at(start_step)
  generator, discriminator = fresh_states(start_step)
  if start_step:
    # The newest checkpoint that reads: damaged newer ones are moved aside (one line).
    generator, discriminator, record = checkpointing.restore_newest_readable(
        manager, fresh_states, config)
    start_step, phase = record['step'], phase_at(record['step'])
    logging.info('Resumed from %s at step %d.', manager.directory, start_step)
    if phase == steps.SRGAN and record['phase'] == steps.SRRESNET:  # Saved right at the switch.
      phase = steps.SRRESNET
  if jax.process_index() == 0:  # Lets evaluation and inference rebuild the run.
    (epath.Path(workdir) / 'config.json').write_text(config.to_json_best_effort(indent=2))

  vgg_params = jax.device_put(vgg_params, replicated)
  per_call = config.steps_per_call
  srresnet_step, srgan_step = steps.compile_steps(config, vgg_preprocessing, replicated,
                                                  scanned=per_call > 1)
  train_metrics = steps.empty_metrics(phase, replicated)
  if per_call > 1:  # Stacks [n, batch, ...], split over the devices along the batch.
    next_stack = create_stacked_input(config, start_step)
    data_sharding = jax.sharding.NamedSharding(mesh, jax.P(None, 'data'))
  else:
    batches = create_input_iterator(config, start_step)
  gan_health = gan_health_lib.GanHealth()
  sr_beside_hr = jax.jit(
      functools.partial(steps.sr_beside_hr,
                        count=min(config.num_summary_images, config.batch_size)),
      out_shardings=replicated)
  saved_once = False
  evaluator = during_training.TrainingEvaluator(config, writer)  # Names absent sets.
  logging.info('Training steps %d..%d (SRResNet until %d) on %d devices.',
               start_step, total_steps, srresnet_steps, jax.device_count())
  try:
    step = start_step
    while step < total_steps:  # One compiled call (of steps_in_call steps) per pass.
      if phase == steps.SRRESNET and step >= srresnet_steps:
        phase = steps.SRGAN
        generator = initialize_srgan_generator(generator, config, replicated)
        train_metrics = steps.empty_metrics(phase, replicated)
      count = steps_in_call(step, config)
      # Outside the mesh context: the device source makes each host's batch on one
      # of its devices before it joins the global batch.
      batch = sharding.shard_batch(next_stack(count) if per_call > 1 else next(batches),
                                   data_sharding)
      with jax.set_mesh(mesh), jax.profiler.StepTraceAnnotation('train', step_num=step):
        if phase == steps.SRRESNET:
          generator, train_metrics = srresnet_step(generator, train_metrics, batch, step)
        else:
          generator, discriminator, train_metrics = srgan_step(
              generator, discriminator, train_metrics, batch, vgg_params, step)
      if per_call > 1:
        batch = jax.tree_util.tree_map(lambda stack: stack[-1], batch)  # For sr_beside_hr.
      done = step = step + count
      for hook in hooks:
        hook(done)
      if done % config.log_every_steps == 0 or done in (srresnet_steps, total_steps):
        _check_finite(train_metrics, manager)
        summary = jax.device_get({k: v for k, v in train_metrics.compute().items()
                                  if k != 'first_nonfinite_step'})
        writer.write_scalars(done, {f'train/{phase}/{k}': v for k, v in summary.items()})
        train_metrics = steps.empty_metrics(phase, replicated)
        if phase == steps.SRGAN:
          gan_health.check(done, summary)
          if config.num_summary_images:  # What D judges: this batch's SR beside its HR.
            with jax.set_mesh(mesh):
              pairs = sr_beside_hr(generator, batch)
            writer.write_images(done, {'train/srgan/sr_beside_hr': jax.device_get(pairs)})
      if done % config.eval_every_steps == 0 or done == total_steps:
        evaluator.run(upscalers.generator(models.generator_from_config(config),
                                          generator.eval_variables()),
                      done, final=done == total_steps)
      workdir_lock.check_held(workdir, done)  # Deleted or replaced: stop before writing.
      checkpointing.check_for_errors(manager)  # A failed background write stops here.
      preempted = preemption.reached(done, manager)
      if preempted or manager.should_save(done) or done == total_steps:
        _check_finite(train_metrics, manager)
        checkpointing.save(manager, done, generator, discriminator,
                           checkpointing.run_record(done, phase, config), force=True)
        if not saved_once:  # The first write of a run is waited for: a workdir that
          checkpointing.wait_until_finished(manager)  # cannot be written fails now.
          saved_once = True
      if preempted and done == total_steps:
        # SIGTERM during the last step or the final evaluation: training is done and its
        # last checkpoint saved, so this is a finished run (exit 0). Reported as
        # preempted (75), a scheduler would rerun it only to find nothing left to do.
        checkpointing.wait_until_finished(manager)
        logging.warning('SIGTERM received during the last step or the final evaluation: '
                        'training finished and its checkpoint (step %d) is saved.', done)
      elif preempted:
        raise errors.Preempted(f'saved step {done} in {manager.directory}; rerun the '
                               'same command to resume', (generator, discriminator))
  except jax.errors.JaxRuntimeError as error:
    raise out_of_memory(error, config) or error
  finally:
    preemption.close()
    checkpointing.wait_until_finished(manager)
    writer.flush()
  return generator, discriminator
