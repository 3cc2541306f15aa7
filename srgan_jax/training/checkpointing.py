"""Orbax checkpoints of a training run, in one place.

A checkpoint holds three items: the generator and discriminator TrainStates and a
JSON record of the run (global step, phase, and the whole config, so that evaluation
and inference need only the workdir). No RNG state is stored: crops, batches and
initialization are keyed by (config.seed, step), so step and config determine the rest.

Layout: ``WORKDIR/checkpoints/<step>/{generator,discriminator,run}``. Workdirs may be
local paths or gs:// URLs (Orbax writes through etils.epath). Orbax writes each
checkpoint under ``<step>.orbax-checkpoint-tmp`` and renames it when complete, so a
process killed mid-save leaves only that temporary directory: it is never taken for a
checkpoint, and the next training run deletes it.

Every failure here is a CheckpointError that names the checkpoint's path and says
what is wrong with it (a config whose shapes differ, a damaged directory, a failed
write); the Orbax or TensorStore error it comes from stays chained to it.
"""

from collections.abc import Callable, Iterator
import contextlib
import asyncio
import dataclasses
import json
import logging as std_logging
import threading
import warnings
import weakref
from typing import Any

from absl import logging
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
# Orbax internals, for the two work-arounds below (asyncio loops, failed saves). Each
# is skipped when an Orbax release moves what it relies on: the errors then stay one
# line, with Orbax's extra tracebacks or its 300 s wait back.
try:
  from orbax.checkpoint._src import asyncio_utils  # pylint: disable=g-import-not-at-top
except ImportError:
  asyncio_utils = None
try:
  from orbax.checkpoint._src.futures import future as orbax_future  # pylint: disable=g-import-not-at-top  # noqa: E501
except ImportError:
  orbax_future = None

from srgan_jax.nn import models
from srgan_jax.runtime import errors
from srgan_jax.runtime import paths

# What fixes the structure and shapes of the saved states, by config field: a run
# resumed with other values cannot restore them. The crop size sets the input width
# of the discriminator's dense layer; EMA weights are stored only when ema_decay > 0.
# The discriminator's are those of its arch (checkpoints from before arch: 'srgan').
_STRUCTURE_FIELDS = {
    'scale': lambda config: config['scale'],
    'generator': lambda config: config['generator'],
    'discriminator': lambda config: models.discriminator_layout(config['discriminator']),
    'data.crop_size': lambda config: config['data']['crop_size'],
    'ema_decay > 0': lambda config: config['ema_decay'] > 0,
}


_DRAIN_SECONDS = 30.0


def _run_sync_then_drain(coro: Any) -> Any:
  """Orbax's ``asyncio_utils._run_sync_via_new_loop``, which also waits for the loop's
  other tasks before closing it.

  Orbax runs each read or write in a new event loop and closes it as soon as the
  coroutine ends. When one TensorStore read of a damaged checkpoint fails, the
  coroutine ends with that error while the reads of the other arrays are still in
  flight; each one then completes onto the closed loop, and TensorStore prints
  "RuntimeError: Event loop is closed" with a traceback from its own thread, after
  the program's one-line error (2 to 50 of them). Waiting for those reads (they end
  in milliseconds) lets them complete where they started. Installed when this module
  is imported: every Orbax call of the package goes through it.
  """
  loop = asyncio.new_event_loop()
  try:
    asyncio.set_event_loop(loop)
    return loop.run_until_complete(coro)
  finally:
    try:
      pending = asyncio.all_tasks(loop)
      if pending:  # Bounded: a task that never ends must not keep the program up.
        done, _ = loop.run_until_complete(asyncio.wait(pending, timeout=_DRAIN_SECONDS))
        for task in done:  # Their errors repeat the one raised ("never retrieved" else).
          if not task.cancelled():
            task.exception()
    finally:
      asyncio.set_event_loop(None)
      loop.close()


if hasattr(asyncio_utils, '_run_sync_via_new_loop'):
  asyncio_utils._run_sync_via_new_loop = _run_sync_then_drain  # pylint: disable=protected-access


class CheckpointError(errors.UserError, RuntimeError):
  """A checkpoint directory that cannot be used, with the path and the reason."""


class DamagedCheckpointError(CheckpointError):
  """A checkpoint that Orbax cannot read although the config fits it."""


def checkpoint_dir(workdir: str) -> epath.Path:
  # Orbax and TensorStore refuse relative paths (and a relative path would change
  # meaning if the working directory did), so local workdirs are made absolute.
  return epath.Path(paths.absolute(workdir)) / 'checkpoints'


def _summary(error: Exception) -> str:
  """The first line of an error, without TensorStore's spec dump (kept in the chain)."""
  lines = str(error).strip().splitlines()
  text = lines[0].split(' [tensorstore_spec')[0] if lines else ''
  text = text if len(text) <= 300 else text[:300] + '...'
  return f'{type(error).__name__}: {text}' if text else type(error).__name__


def _damaged(manager: ocp.CheckpointManager, step: int,
             error: Exception) -> DamagedCheckpointError:
  """The error for a checkpoint that Orbax cannot read although the config fits."""
  others = [other for other in manager.all_steps() if other != step]
  return DamagedCheckpointError(
      f'checkpoint {manager.directory / str(step)} cannot be read: it is damaged, incomplete, '
      f'or from other model code ({_summary(error)}). Other checkpoints in '
      f'{manager.directory}: {others or "none"}; choose one of them with --step, or move '
      'this one aside (training resumes from the newest that reads by itself).')


def _item_handlers() -> dict[str, ocp.CheckpointHandler]:
  """Each item's Orbax handler (new ones for each manager)."""
  return {'generator': ocp.StandardCheckpointHandler(),
          'discriminator': ocp.StandardCheckpointHandler(),
          'run': ocp.JsonCheckpointHandler()}


def _saved_fields(state: Any, saved: Any) -> dict[str, Any]:
  """The state's array fields that a checkpoint holds (``saved``: the item's metadata),
  by name, as Orbax's restore target: a field added to the states since the
  checkpoint was written (``spectral``) keeps the template's value."""
  return {field.name: jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct,
                                             getattr(state, field.name))
          for field in dataclasses.fields(state)
          if field.metadata.get('pytree_node', True) and field.name in saved.keys()}


def create_manager(workdir: str, config: ml_collections.ConfigDict,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager saving every N steps and keeping the latest K checkpoints."""
  options = ocp.CheckpointManagerOptions(
      save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(
          config.checkpoint_every_steps),
      preservation_policy=ocp.checkpoint_managers.LatestN(config.keep_checkpoints),
      read_only=read_only,
      create=not read_only,
      # Left by a process killed while saving; ignored when listing steps either way.
      cleanup_tmp_directories=not read_only,
  )
  try:
    # The handlers let item_metadata list a state's saved fields before restoring it.
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 item_handlers=_item_handlers())
  except (OSError, ValueError) as error:
    raise CheckpointError(
        f'cannot use checkpoint directory {checkpoint_dir(workdir)}: {error}') from error


def run_record(step: int, phase: str, config: ml_collections.ConfigDict) -> dict[str, Any]:
  return {'step': step, 'phase': phase, 'config': json.loads(config.to_json_best_effort())}


# The step each manager saves (or last saved), for the error of a failed background write.
_step_saving: 'weakref.WeakKeyDictionary[ocp.CheckpointManager, int]' = (
    weakref.WeakKeyDictionary())


def _stop_threads_of_failed_save() -> None:
  """Cancels the background threads of a failed save that wait for its other threads.

  Orbax splits an asynchronous save among threads that wait for each other's
  signals (the step directory created, the arrays committed). One that fails does
  not send its signal, so the others wait for it until Orbax's timeout (300 s) and,
  not being daemons, keep the program up for that long after its one-line error
  (a read-only workdir, a full disk). Each waiting thread is cancelled and then sent
  the signals it waits for: it wakes, sees that it is cancelled, and returns without
  writing anything. Only one save is ever in flight (Orbax waits for the previous
  one), so every such thread belongs to the save that failed.
  """
  # pylint: disable=protected-access
  signaling_thread = getattr(orbax_future, '_SignalingThread', None)
  if signaling_thread is None or not hasattr(orbax_future, 'set_signals'):
    return
  for thread in threading.enumerate():
    if isinstance(thread, signaling_thread) and thread.is_alive():
      thread.cancel()
      orbax_future.set_signals(thread._receive_signals, operation_id=thread._operation_id)
  # The coroutines of the writes cancelled this way are never run; at exit Python
  # would print a warning for each ("coroutine ... was never awaited").
  warnings.filterwarnings('ignore', message="coroutine '.*' was never awaited",
                          category=RuntimeWarning)


def save(manager: ocp.CheckpointManager, step: int, generator: Any, discriminator: Any,
         record: dict[str, Any], force: bool = False) -> bool:
  """Saves (asynchronously) if the policy says so or ``force``; True when saved.

  Raises:
    CheckpointError: this save failed to start, or an earlier asynchronous one
      failed (Orbax reports a background failure at the next save).
  """
  _step_saving[manager] = step
  try:
    return manager.save(step, force=force, args=ocp.args.Composite(
        generator=ocp.args.StandardSave(generator),
        discriminator=ocp.args.StandardSave(discriminator),
        run=ocp.args.JsonSave(record)))
  except Exception as error:  # Disk full, permissions, quota: any failed write.
    _stop_threads_of_failed_save()
    raise CheckpointError(
        f'writing a checkpoint in {manager.directory} failed ({_summary(error)}; reported '
        f'at step {step}); the latest complete checkpoint is step {manager.latest_step()}'
    ) from error


def check_for_errors(manager: ocp.CheckpointManager) -> None:
  """Raises CheckpointError as soon as a background write has failed (non-blocking).

  Orbax itself reports a failed asynchronous save only at the next save, which
  would lose every step in between: its own ``check_for_errors`` misses it, because
  the thread that finalises a save logs the writer's error and keeps it to itself
  until it is joined. Once no save is in progress, joining returns at once, with
  that error if there was one.
  """
  if not manager.is_saving_in_progress():
    wait_until_finished(manager)


def wait_until_finished(manager: ocp.CheckpointManager) -> None:
  """Waits for the asynchronous save in flight; a failed write is a CheckpointError."""
  try:
    manager.wait_until_finished()
  except Exception as error:  # Disk full, permissions, quota: any failed write.
    _stop_threads_of_failed_save()
    step = _step_saving.get(manager)
    raise CheckpointError(
        f'writing checkpoint {step} in {manager.directory} failed ({_summary(error)}); the '
        f'latest complete checkpoint is step {manager.latest_step()}') from error


def read_record(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """The JSON run record of a checkpoint, with a clear error when unreadable."""
  try:
    restored = manager.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore()))
  except Exception as error:  # Orbax raises many types for a damaged directory.
    raise _damaged(manager, step, error) from error
  return restored['run']


def check_architecture(record: dict[str, Any], config: ml_collections.ConfigDict,
                       path: epath.Path) -> None:
  """Raises CheckpointError naming each config field that changes the saved shapes."""
  stored = record['config']
  current = json.loads(config.to_json_best_effort())
  differences = [f'{field}: checkpoint has {value(stored)!r}, config has {value(current)!r}'
                 for field, value in _STRUCTURE_FIELDS.items() if value(stored) != value(current)]
  if differences:
    raise CheckpointError(f'checkpoint {path} is from an incompatible config: '
                          + '; '.join(differences))


def restore(manager: ocp.CheckpointManager, step: int, generator: Any, discriminator: Any,
            config: ml_collections.ConfigDict) -> tuple[Any, Any, dict[str, Any]]:
  """Restores both states into the structure, shapes and shardings of the given ones
  (fields the checkpoint predates keep the given ones' values).

  Raises:
    CheckpointError: the checkpoint is from a config with other shapes (naming the
      fields), or is damaged.
  """
  path = manager.directory / str(step)
  record = read_record(manager, step)
  check_architecture(record, config, path)
  try:
    saved = manager.item_metadata(step)
    restored = manager.restore(step, args=ocp.args.Composite(
        generator=ocp.args.StandardRestore(_saved_fields(generator, saved['generator'])),
        discriminator=ocp.args.StandardRestore(
            _saved_fields(discriminator, saved['discriminator']))))
  except Exception as error:
    raise _damaged(manager, step, error) from error
  return (generator.replace(**restored['generator']),
          discriminator.replace(**restored['discriminator']), record)


def _move_aside(directory: epath.Path, step: int) -> epath.Path:
  """Renames checkpoint ``step`` to ``<step>.damaged`` (or ``.damaged.N``, never over
  another), a name Orbax neither lists as a step nor cleans up as a temporary one."""
  for attempt in range(1000):
    aside = directory / (f'{step}.damaged' + (f'.{attempt}' if attempt else ''))
    if not aside.exists():
      (directory / str(step)).rename(aside)
      return aside
  raise CheckpointError(f'cannot move damaged checkpoint {directory / str(step)} aside: '
                        f'{step}.damaged.0 to .999 exist; clean up {directory}')


def restore_newest_readable(manager: ocp.CheckpointManager,
                            templates: Callable[[int], tuple[Any, Any]],
                            config: ml_collections.ConfigDict
                            ) -> tuple[Any, Any, dict[str, Any]]:
  """``restore`` of the newest checkpoint that reads; newer damaged ones are moved aside.

  A checkpoint damaged on disk (a truncated or zeroed file, a missing item) would
  otherwise stop every resume until a person deleted it, although an older one is
  there. Each damaged checkpoint newer than the one restored is renamed to
  ``<step>.damaged`` (by process 0; nothing is deleted), so that the run saves that
  step again and Orbax's retention counts only readable ones. One warning line says
  which steps and why.

  Args:
    manager: the run's manager.
    templates: step -> (generator, discriminator) whose structure, shapes and
      shardings a checkpoint of that step restores into.
    config: the run's config.

  Returns:
    (generator, discriminator, record); ``record['step']`` is the step restored.

  Raises:
    CheckpointError: the config does not fit the newest checkpoint (no fallback: an
      older one would not fit either), or no checkpoint reads (the newest one's
      error; nothing is moved).
  """
  damaged = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = restore(manager, step, *templates(step), config)
    except DamagedCheckpointError as error:
      damaged.append((step, error))
      continue
    if damaged:
      moved = ([_move_aside(manager.directory, bad_step) for bad_step, _ in damaged]
               if jax.process_index() == 0 else [])
      if jax.process_count() > 1:  # Every process lists the steps after the renames.
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
        multihost_utils.sync_global_devices('srgan_jax damaged checkpoints moved aside')
      manager.reload()
      logging.warning(
          'checkpoint %s cannot be read (%s); resuming from step %d, the newest that reads%s.',
          manager.directory / str(damaged[0][0]), _summary(damaged[0][1].__cause__), step,
          f' (kept aside as {", ".join(str(path) for path in moved)})' if moved else '')
    return restored
  if damaged:
    raise damaged[0][1]
  raise CheckpointError(f'no checkpoints in {manager.directory}')


@contextlib.contextmanager
def _reader(directory: epath.Path, **kwargs: Any) -> Iterator[ocp.CheckpointManager]:
  """A manager that only reads the checkpoints in ``directory``.

  While it is open Orbax's warnings are hidden (its errors still raise): it warns
  that a read-only manager does not save, and that the items not asked for (the
  discriminator, when the generator is read alone) are not restored. Both intended.
  """
  absl_logger = std_logging.getLogger('absl')  # Orbax logs through absl.
  level = absl_logger.level
  absl_logger.setLevel(std_logging.ERROR)
  try:
    with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
        read_only=True, create=False), **kwargs) as manager:
      yield manager
  finally:
    absl_logger.setLevel(level)


def latest_step(workdir: str) -> int | None:
  """The newest complete checkpoint step in a workdir, or None."""
  directory = checkpoint_dir(workdir)
  if not directory.exists():
    return None
  with _reader(directory) as manager:
    return manager.latest_step()


def load_generator(workdir: str, step: int | None = None, ema: bool = True
                   ) -> tuple[models.SRResNet, dict[str, Any], ml_collections.ConfigDict]:
  """The trained generator of a workdir: (module, variables for apply, run config).

  Uses the latest checkpoint unless ``step`` is given, and the EMA weights when the
  run kept them and ``ema`` is True. The architecture comes from the checkpoint.
  """
  return read_generator(workdir, step, ema)[:3]


# How often the latest checkpoint is looked up again when it vanished while read.
_LATEST_TRIES = 5


def read_generator(workdir: str, step: int | None = None, ema: bool = True
                   ) -> tuple[models.SRResNet, dict[str, Any], ml_collections.ConfigDict, int]:
  """``load_generator``, with the step read (the latest, when ``step`` is None).

  The latest checkpoint of a run still training can be deleted while it is read (the
  run keeps ``keep_checkpoints`` and has just saved a newer one): then the newest is
  read instead, not reported as damaged.
  """
  directory = checkpoint_dir(workdir)
  if not directory.exists():
    raise CheckpointError(f'no checkpoints in {workdir} (expected {directory})')
  for _ in range(_LATEST_TRIES):
    try:
      return _read_generator_at(workdir, step, ema)
    except _Vanished:
      continue  # Rotated away by the training run: the newest now.
  raise CheckpointError(f'the latest checkpoint in {directory} was deleted while read, '
                        f'{_LATEST_TRIES} times (a run saving very often with '
                        'keep_checkpoints=1?): name one with --step, or retry once it stops')


class _Vanished(Exception):
  """The latest checkpoint was deleted while it was read."""


def _read_generator_at(workdir: str, step: int | None, ema: bool
                       ) -> tuple[models.SRResNet, dict[str, Any], ml_collections.ConfigDict, int]:
  """One try of ``read_generator``; raises _Vanished when the latest step it chose was
  deleted meanwhile."""
  directory = checkpoint_dir(workdir)
  # The handlers let item_metadata read the generator's shapes without restoring it.
  with _reader(directory, item_handlers={
      'generator': ocp.StandardCheckpointHandler(), 'run': ocp.JsonCheckpointHandler()}
               ) as manager:
    chosen = manager.latest_step() if step is None else step
    if chosen is None:
      raise CheckpointError(
          f'no checkpoint yet in {workdir}: its checkpoints/ folder holds none (the run '
          'has not saved one, or stopped before its first save); train it until it saves '
          'one (checkpoint_every_steps, and at the end), or name another --workdir')
    if chosen not in manager.all_steps():
      raise CheckpointError(f'no checkpoint at step {chosen} in {directory}; '
                            f'steps present: {list(manager.all_steps())}')
    # Onto this host's first device, whatever devices saved it: without a target,
    # Orbax restores onto the saving run's devices and fails on other machines.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    try:
      record = read_record(manager, chosen)
      target = jax.tree_util.tree_map(
          lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
          manager.item_metadata(chosen)['generator'])
      state = manager.restore(chosen, args=ocp.args.Composite(
          generator=ocp.args.StandardRestore(target)))['generator']
    except Exception as error:
      if step is None and not (directory / str(chosen)).exists():
        raise _Vanished() from error
      if isinstance(error, CheckpointError):
        raise
      raise _damaged(manager, chosen, error) from error
  config = ml_collections.ConfigDict(record['config'])
  problem = models.weights_problem(config, state)
  if problem:
    raise CheckpointError(
        f'checkpoint {directory / str(chosen)}: {problem}. Its run record was edited or '
        'written by other code: put back the config the run trained with, or choose '
        'another checkpoint with --step')
  model = models.generator_from_config(config)
  if ema and state.get('ema_params') is not None:
    # The EMA weights with the EMA of the BatchNorm statistics that belong to them.
    return model, {'params': state['ema_params'],
                   'batch_stats': state.get('ema_batch_stats') or {}}, config, chosen
  return (model, {'params': state['params'], 'batch_stats': state.get('batch_stats') or {}},
          config, chosen)
