"""Orbax checkpoints of a training run, in one place.

A checkpoint holds three items: the generator and discriminator TrainStates and a
JSON record of the run (global step, phase, and the whole config, so that evaluation
and inference need only the workdir). No RNG state is stored: crops, batches and
initialisation are keyed by (config.seed, step), so step and config determine the rest.

Layout: ``WORKDIR/checkpoints/<step>/{generator,discriminator,run}``. Workdirs may be
local paths or gs:// URLs (Orbax writes through etils.epath).
"""

import json
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from srgan_jax import models

# Config fields that fix the shapes in a checkpoint: a run resumed or evaluated with
# other values cannot use it.
ARCHITECTURE_FIELDS = ('scale', 'generator', 'discriminator')


class CheckpointError(RuntimeError):
  """A checkpoint directory that cannot be used, with the path and the reason."""


def checkpoint_dir(workdir: str) -> epath.Path:
  return epath.Path(workdir) / 'checkpoints'


def create_manager(workdir: str, config: ml_collections.ConfigDict,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager saving every N steps and keeping the latest K checkpoints."""
  options = ocp.CheckpointManagerOptions(
      save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(
          config.checkpoint_every_steps),
      preservation_policy=ocp.checkpoint_managers.LatestN(config.keep_checkpoints),
      read_only=read_only,
      create=not read_only,
  )
  try:
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)
  except (OSError, ValueError) as error:
    raise CheckpointError(
        f'cannot use checkpoint directory {checkpoint_dir(workdir)}: {error}') from error


def run_record(step: int, phase: str, config: ml_collections.ConfigDict) -> dict[str, Any]:
  return {'step': step, 'phase': phase, 'config': json.loads(config.to_json_best_effort())}


def save(manager: ocp.CheckpointManager, step: int, generator: Any, discriminator: Any,
         record: dict[str, Any], force: bool = False) -> bool:
  """Saves (asynchronously) if the policy says so or ``force``; True when saved."""
  return manager.save(step, force=force, args=ocp.args.Composite(
      generator=ocp.args.StandardSave(generator),
      discriminator=ocp.args.StandardSave(discriminator),
      run=ocp.args.JsonSave(record)))


def read_record(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """The JSON run record of a checkpoint, with a clear error when unreadable."""
  try:
    restored = manager.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore()))
  except Exception as error:  # Orbax raises many types for a damaged directory.
    raise CheckpointError(
        f'checkpoint {manager.directory / str(step)} is unreadable: {error}') from error
  return restored['run']


def check_architecture(record: dict[str, Any], config: ml_collections.ConfigDict,
                       path: epath.Path) -> None:
  """Raises CheckpointError naming each architecture field that differs."""
  stored = record['config']
  current = json.loads(config.to_json_best_effort())
  differences = [f'{field}: checkpoint has {stored.get(field)!r}, config has {current[field]!r}'
                 for field in ARCHITECTURE_FIELDS if stored.get(field) != current[field]]
  if differences:
    raise CheckpointError(f'checkpoint {path} is from an incompatible config: '
                          + '; '.join(differences))


def restore(manager: ocp.CheckpointManager, step: int, generator: Any, discriminator: Any,
            config: ml_collections.ConfigDict) -> tuple[Any, Any, dict[str, Any]]:
  """Restores both states into the structure, shapes and shardings of the given ones."""
  path = manager.directory / str(step)
  record = read_record(manager, step)
  check_architecture(record, config, path)
  abstract = lambda tree: jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        generator=ocp.args.StandardRestore(abstract(generator)),
        discriminator=ocp.args.StandardRestore(abstract(discriminator))))
  except Exception as error:
    raise CheckpointError(f'checkpoint {path} could not be restored: {error}') from error
  return restored['generator'], restored['discriminator'], record


def latest_step(workdir: str) -> int | None:
  """The newest complete checkpoint step in a workdir, or None."""
  directory = checkpoint_dir(workdir)
  if not directory.exists():
    return None
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      read_only=True, create=False)) as manager:
    return manager.latest_step()


def load_generator(workdir: str, step: int | None = None, ema: bool = True
                   ) -> tuple[models.SRResNet, dict[str, Any], ml_collections.ConfigDict]:
  """The trained generator of a workdir: (module, variables for apply, run config).

  Uses the latest checkpoint unless ``step`` is given, and the EMA weights when the
  run kept them and ``ema`` is True. The architecture comes from the checkpoint.
  """
  directory = checkpoint_dir(workdir)
  if not directory.exists():
    raise CheckpointError(f'no checkpoints in {workdir} (expected {directory})')
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      read_only=True, create=False)) as manager:
    step = manager.latest_step() if step is None else step
    if step is None or step not in manager.all_steps():
      raise CheckpointError(f'no checkpoint at step {step} in {directory}; '
                            f'steps present: {list(manager.all_steps())}')
    record = read_record(manager, step)
    try:
      state = manager.restore(step, args=ocp.args.Composite(
          generator=ocp.args.StandardRestore()))['generator']
    except Exception as error:
      raise CheckpointError(
          f'checkpoint {directory / str(step)} could not be restored: {error}') from error
  config = ml_collections.ConfigDict(record['config'])
  model = models.SRResNet(scale=config.scale, **config.generator)
  params = state['params']
  if ema and state.get('ema_params') is not None:
    params = state['ema_params']
  return model, {'params': params, 'batch_stats': state['batch_stats']}, config
