"""Preemption and damaged checkpoints: SIGTERM, kill -9, corrupt or foreign checkpoints, full disks.

Training runs here are `python -m srgan_jax.main` subprocesses (through WORKER, which
adds test hooks) that are signalled or killed at a known step, then restarted; their
final weights are compared with an uninterrupted run of the same length in this
process. Batches depend only on (seed, step), so a resumed run must repeat it.
"""

import errno
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

from conftest import REPO, tiny_quickstart_config
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image
import pytest

from srgan_jax.data import inputs
from srgan_jax.runtime import errors
from srgan_jax.training import checkpointing
from srgan_jax.training import loop
from srgan_jax.training import steps

# Runs commands in subprocesses: a system test (`pytest -m "not system"` skips it).
pytestmark = pytest.mark.system

# `python -m srgan_jax.main` with hooks set by environment variables:
#   WORKER_DEVICES: simulated CPU devices (gloo collectives when multi-process);
#   WORKER_PAUSE_AT: at this step, touch OUT/paused<process> and wait for OUT/resume,
#     so that a test can signal the process at a known step;
#   WORKER_HANG_SAVE: hang just before Orbax renames this step's finished temporary
#     checkpoint directory into place, after touching OUT/hanging;
#   WORKER_SGD: plain SGD (learning rate 0.05) in place of Adam (multihost_test.sgd);
#   WORKER_GLOBAL_BATCHES: each process reads its rows of the batches a 1-process run
#     reads, so that runs on any number of processes train on the same global batches;
#   WORKER_HEARTBEAT_LOCK: the workdir lock of a bucket (heartbeat file, no flock) on
#     the local workdir: the code a gs:// workdir runs;
# and, when training returns, OUT/process<index>.npz holds the final states' leaves
# (state0, state1, ...) and the batches this process read (steps, lr, hr); after each
# evaluation, OUT/eval<index>.json its results so far ({step: TrainingEvaluator.run's}).
WORKER = '''\
import asyncio
import contextlib
import json
import os
import pathlib
import time

import jax

jax.config.update('jax_num_cpu_devices', int(os.environ['WORKER_DEVICES']))
if os.environ.get('JAX_COORDINATOR_ADDRESS'):
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')

import numpy as np
import optax
from orbax.checkpoint._src.path import atomicity

from srgan_jax import main
from srgan_jax.data import inputs
from srgan_jax.evaluation import during_training
from srgan_jax.runtime import errors
from srgan_jax.training import loop
from srgan_jax.training import steps
from srgan_jax.training import workdir_lock

OUT = pathlib.Path(os.environ['WORKER_OUT'])
PAUSE_AT = int(os.environ.get('WORKER_PAUSE_AT', -1))
HANG_SAVE = os.environ.get('WORKER_HANG_SAVE')
batches = {}
evaluations = {}


def wait_for(path):
  deadline = time.monotonic() + 300
  while not path.exists():
    assert time.monotonic() < deadline, f'{path} did not appear'
    time.sleep(0.05)


def hooked(iterator, start_step):
  for step, batch in enumerate(iterator, start_step):
    if step == PAUSE_AT:
      (OUT / f'paused{jax.process_index()}').touch()
      wait_for(OUT / 'resume')
    batches[step] = jax.device_get(batch)
    yield batch


def recorded_run(config, workdir, *args):
  try:
    states = run(config, workdir, *args)
  except errors.Preempted as preempted:  # Saved, then the command exits with 75.
    record(preempted.states)
    raise
  record(states)
  return states


def record(states):
  steps = sorted(batches)
  leaves = jax.tree_util.tree_leaves(jax.device_get(states))
  np.savez(OUT / f'process{jax.process_index()}.npz', steps=np.array(steps),
           lr=np.stack([batches[s]['lr'] for s in steps]),
           hr=np.stack([batches[s]['hr'] for s in steps]),
           **{f'state{i}': leaf for i, leaf in enumerate(leaves)})


def recorded_evaluation(evaluator, upscaler, step, **options):
  results = evaluate(evaluator, upscaler, step, **options)
  evaluations[step] = results
  (OUT / f'eval{jax.process_index()}.json').write_text(json.dumps(evaluations))
  return results


async def hanging_finalize(self):
  if self.get_final().name == HANG_SAVE:
    (OUT / 'hanging').touch()
    await asyncio.sleep(3600)
  await finalize(self)


def rows_of_global_batches(config, start_step):
  from srgan_jax.data import tf_pipeline
  rows = config.batch_size // jax.process_count()
  first = jax.process_index() * rows
  for batch in tf_pipeline.create_train_iterator(
      config.data, scale=config.scale, batch_size=config.batch_size, seed=config.seed,
      start_step=start_step):
    yield {key: value[first:first + rows] for key, value in batch.items()}


def heartbeat_lock(workdir, enabled=True):
  return workdir_lock._heartbeat_lock(workdir) if enabled else contextlib.nullcontext()


if os.environ.get('WORKER_GLOBAL_BATCHES'):
  inputs.create_input_iterator = rows_of_global_batches
if os.environ.get('WORKER_HEARTBEAT_LOCK'):
  workdir_lock.hold = heartbeat_lock
create_input_iterator, run = inputs.create_input_iterator, loop.train_and_evaluate
inputs.create_input_iterator = lambda config, step: hooked(create_input_iterator(config, step), step)
loop.train_and_evaluate = recorded_run
evaluate = during_training.TrainingEvaluator.run
during_training.TrainingEvaluator.run = recorded_evaluation
if os.environ.get('WORKER_SGD'):
  steps.create_optimizer = lambda config, phase: optax.inject_hyperparams(optax.sgd)(0.05)
finalize = atomicity.AtomicRenameTemporaryPath.finalize
atomicity.AtomicRenameTemporaryPath.finalize = hanging_finalize
main.run()
'''

# The config file given to main: the ConfigDict saved beside it as JSON.
JSON_CONFIG = '''\
import json
import pathlib

import ml_collections


def get_config():
  path = pathlib.Path(__file__).with_name('config.json')
  return ml_collections.ConfigDict(json.loads(path.read_text()))
'''

TIMEOUT = 600  # Seconds for any one training process (2 busy cores, cold compilation cache).


class Worker:
  """One training process (`python -m srgan_jax.main` through WORKER), logging to OUT/log.txt."""

  def __init__(self, out: pathlib.Path, config: ml_collections.ConfigDict, workdir: pathlib.Path,
               devices: int = 8, **env: str):
    out.mkdir(parents=True)
    (out / 'config.json').write_text(config.to_json_best_effort())
    (out / 'json_config.py').write_text(JSON_CONFIG)
    (out / 'worker.py').write_text(WORKER)
    self.out = out
    self._log = open(out / 'log.txt', 'w')  # pylint: disable=consider-using-with
    self.process = subprocess.Popen(
        [sys.executable, str(out / 'worker.py'), f'--config={out / "json_config.py"}',
         f'--workdir={workdir}'],
        cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
        env={**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu',
             'WORKER_DEVICES': str(devices), 'WORKER_OUT': str(out), **env})

  def stop(self) -> None:
    """Kills the process if it still runs (a test failed before it ended)."""
    if self.process.poll() is None:
      self.process.kill()
      self.process.wait()

  def log(self) -> str:
    return (self.out / 'log.txt').read_text()

  def wait_for(self, name: str) -> None:
    """Waits until the process creates OUT/name; fails if it exits first."""
    deadline = time.monotonic() + TIMEOUT
    while not (self.out / name).exists():
      if self.process.poll() is not None:
        pytest.fail(f'exited with {self.process.returncode} before {name}:\n{self.log()[-5000:]}')
      if time.monotonic() > deadline:
        pytest.fail(f'no {name} after {TIMEOUT} s:\n{self.log()[-5000:]}')
      time.sleep(0.1)

  def finish(self) -> int:
    """The exit status, once the process ends (killed after TIMEOUT)."""
    try:
      return self.process.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
      self.process.kill()
      pytest.fail(f'still running after {TIMEOUT} s:\n{self.log()[-5000:]}')
    finally:
      self._log.close()

  def finish_ok(self, status: int = 0) -> str:
    """Waits for an exit with ``status`` (0: finished; 75: preempted); returns the log."""
    returncode = self.finish()
    assert returncode == status, f'exit status {returncode}:\n{self.log()[-5000:]}'
    return self.log()

  def saved(self) -> dict[str, np.ndarray]:
    """What WORKER saved when training returned: 'steps', 'lr', 'hr', 'state0', ..."""
    (path,) = self.out.glob('process*.npz')
    with np.load(path) as saved:
      return dict(saved)

  def final_states(self) -> list[np.ndarray]:
    saved = self.saved()
    return [saved[f'state{i}'] for i in range(len(saved) - 3)]


def start_job(processes: int, out: pathlib.Path, config: ml_collections.ConfigDict,
              workdir: pathlib.Path, devices: int, **env: str) -> list[Worker]:
  """One training job of ``processes`` Workers (out/process<p>) with ``devices`` CPU
  devices each, started as a multi-host job starts them (one process: none of JAX's
  coordinator variables)."""
  if processes > 1:
    env.update(JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{free_port()}',
               JAX_NUM_PROCESSES=str(processes))
  return [Worker(out / f'process{p}', config, workdir, devices=devices, **env,
                 **({'JAX_PROCESS_ID': str(p)} if processes > 1 else {}))
          for p in range(processes)]


def finish_job(workers: list[Worker], status: int = 0) -> list[str]:
  """Each Worker's log, once all exited with ``status``; kills the rest on a failure
  (one process failing leaves the others waiting for it)."""
  try:
    return [worker.finish_ok(status) for worker in workers]
  finally:
    for worker in workers:
      worker.stop()


def write_images(folder: pathlib.Path, count: int = 10) -> None:
  """48x56 RGB images, red = 30 + 20 x number (so a crop names its image), random
  8x8 blocks in green and blue."""
  folder.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for i in range(count):
    image = np.kron(rng.integers(0, 256, (6, 7, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    image[..., 0] = 30 + 20 * i
    Image.fromarray(image).save(folder / f'img{i:02d}.png')


def tiny_config(data_dir: pathlib.Path, srresnet_steps: int,
                srgan_steps: int) -> ml_collections.ConfigDict:
  """The quickstart run at test size: tiny widths, 32x32 crops, batch 8, EMA on."""
  config = tiny_quickstart_config()
  config.data.source = 'folders'
  config.data.folders = [str(data_dir)]
  config.data.crop_size = 32
  config.srresnet.num_steps = srresnet_steps
  config.srgan.num_steps = srgan_steps
  config.srgan.decay_steps = srgan_steps // 2
  config.ema_decay = 0.9
  config.log_every_steps = 5
  config.checkpoint_every_steps = 10
  config.eval_every_steps = 10**6
  config.eval_folders = []
  return config


def leaves(states) -> list[np.ndarray]:
  return jax.tree_util.tree_leaves(jax.device_get(states))


def assert_same_states(actual: list[np.ndarray], expected: list[np.ndarray]) -> None:
  """Equal to float32 rounding: the same computation, maybe on other devices."""
  assert len(actual) == len(expected)
  for a, b in zip(actual, expected):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def steps_on_disk(workdir: pathlib.Path) -> list[str]:
  return sorted(path.name for path in (workdir / 'checkpoints').iterdir())


def wait_until(condition, what: str, timeout: float = TIMEOUT) -> None:
  deadline = time.monotonic() + timeout
  while not condition():
    assert time.monotonic() < deadline, f'timed out waiting for {what}'
    time.sleep(0.1)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp('preemption') / 'images'
  write_images(folder)
  return folder


@pytest.fixture(scope='module')
def uninterrupted(data_dir, tmp_path_factory):
  """(workdir, final states) of the 40-step reference run, in this process."""
  workdir = tmp_path_factory.mktemp('uninterrupted')
  states = loop.train_and_evaluate(tiny_config(data_dir, 15, 25), str(workdir))
  assert steps_on_disk(workdir) == ['20', '30', '40']  # keep_checkpoints = 3.
  return workdir, states


@pytest.fixture
def start_worker():
  """Worker(...), killing those still running when the test ends."""
  workers = []
  yield lambda *args, **kwargs: workers.append(Worker(*args, **kwargs)) or workers[-1]
  for worker in workers:
    worker.stop()


def test_sigterm_then_kill9_mid_save_then_resume_repeats_the_uninterrupted_run(
    data_dir, uninterrupted, tmp_path, start_worker):
  config = tiny_config(data_dir, 15, 25)
  workdir = tmp_path / 'run'

  # SIGTERM at step 13, once checkpoint 10 exists: step 13 ends, step 14 is saved
  # (not a multiple of checkpoint_every_steps = 10), and the process exits with 75
  # (preempted: rerun me), its last line saying so.
  first = start_worker(tmp_path / 'first', config, workdir, WORKER_PAUSE_AT='13')
  first.wait_for('paused0')
  wait_until(lambda: checkpointing.latest_step(str(workdir)) == 10, 'checkpoint 10')
  first.process.send_signal(signal.SIGTERM)
  (first.out / 'resume').touch()
  log = first.finish_ok(errors.EXIT_PREEMPTED)
  assert log.strip().splitlines()[-1].startswith('preempted: saved step 14 in ')
  assert 'Traceback' not in log
  # Other libraries' INFO lines (Orbax's dozens per save) are not on the console; their
  # warnings are (e.g. Orbax's "Waiting for previous save ... took 1.6 seconds" on a
  # loaded machine), one line each.
  assert not re.search(r'^I\d{4} .*checkpoint_manager\.py', log, re.MULTILINE), log
  assert 'Training steps 0..40' in log
  assert steps_on_disk(workdir) == ['10', '14']

  # Resumed at 14, then kill -9 while checkpoint 30 is written but not yet renamed
  # into place: the worst moment. Checkpoint 20 stays the latest, and readable.
  second = start_worker(tmp_path / 'second', config, workdir, WORKER_HANG_SAVE='30')
  second.wait_for('hanging')
  second.process.kill()
  assert second.finish() == -signal.SIGKILL
  assert 'at step 14' in second.log()
  assert steps_on_disk(workdir) == ['10', '14', '20', '30.orbax-checkpoint-tmp']
  assert checkpointing.latest_step(str(workdir)) == 20
  for step in (10, 14, 20):
    checkpointing.load_generator(str(workdir), step=step)

  third = start_worker(tmp_path / 'third', config, workdir)
  assert 'at step 20' in third.finish_ok()
  assert steps_on_disk(workdir) == ['20', '30', '40']  # The temporary directory is gone.
  assert_same_states(third.final_states(), leaves(uninterrupted[1]))


def _restore(workdir: pathlib.Path, config: ml_collections.ConfigDict, templates) -> None:
  """checkpointing.restore of the latest step, as a resumed run does it."""
  with checkpointing.create_manager(str(workdir), config, read_only=True) as manager:
    checkpointing.restore(manager, manager.latest_step(), *templates, config)


def _truncate_array_data(step_dir: pathlib.Path) -> None:
  for path in (step_dir / 'generator' / 'd').iterdir():
    os.truncate(path, path.stat().st_size // 2)


# Orbax's background reads of a damaged checkpoint log "Event loop is closed" after the error.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
@pytest.mark.parametrize('damage', [
    _truncate_array_data,
    lambda step_dir: (step_dir / 'generator' / '_METADATA').unlink(),
    lambda step_dir: shutil.rmtree(step_dir / 'run'),
], ids=['truncated-arrays', 'no-tree-metadata', 'no-run-record'])
def test_damaged_checkpoint_is_a_clear_error(data_dir, uninterrupted, tmp_path, damage):
  workdir = tmp_path / 'run'
  shutil.copytree(uninterrupted[0], workdir)
  damage(workdir / 'checkpoints' / '40')
  checkpoints = re.escape(str(workdir / 'checkpoints'))
  expected = (rf'checkpoint {checkpoints}/40 cannot be read: it is damaged.*'
              rf'Other checkpoints in {checkpoints}: \[20, 30\]')
  with pytest.raises(checkpointing.CheckpointError, match=expected) as error:
    _restore(workdir, tiny_config(data_dir, 15, 25), uninterrupted[1])
  assert 'tensorstore_spec' not in str(error.value) and len(str(error.value)) < 1000
  with pytest.raises(checkpointing.CheckpointError, match=expected):
    checkpointing.load_generator(str(workdir))


@pytest.mark.parametrize('field, value, message', [
    ('data.crop_size', 48, 'data.crop_size: checkpoint has 32, config has 48'),
    ('ema_decay', 0.0, 'ema_decay > 0: checkpoint has True, config has False'),
])
def test_incompatible_config_names_the_field(data_dir, uninterrupted, field, value, message):
  config = tiny_config(data_dir, 15, 25)
  config.update_from_flattened_dict({field: value})
  with pytest.raises(checkpointing.CheckpointError,
                     match=rf'checkpoint {re.escape(str(uninterrupted[0]))}/checkpoints/40 is '
                           rf'from an incompatible config: {re.escape(message)}$'):
    _restore(uninterrupted[0], config, uninterrupted[1])


def test_workdir_that_cannot_be_created_is_reported_at_start(data_dir, tmp_path):
  """A workdir below a regular file: tests run as root, whom chmod does not stop."""
  (tmp_path / 'file').write_text('')
  workdir = tmp_path / 'file' / 'run'
  config = tiny_config(data_dir, 2, 0)
  with pytest.raises(checkpointing.CheckpointError,
                     match=f'cannot use checkpoint directory {re.escape(str(workdir))}'):
    checkpointing.create_manager(str(workdir), config)
  # Whatever opens the workdir first reports it, before any training.
  with pytest.raises(Exception, match=f'(?i){re.escape(str(tmp_path / "file"))}.*not a directory'):
    loop.train_and_evaluate(config, str(workdir))


def test_disk_full_during_a_save_is_reported_and_leaves_no_checkpoint(data_dir, tmp_path,
                                                                      monkeypatch):
  """ENOSPC simulated in Orbax's background write of one checkpoint item."""
  save_json = ocp.JsonCheckpointHandler._save_fn  # pylint: disable=protected-access

  async def disk_full_at_step_4(self, record, directory):
    if record['step'] == 4:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    await save_json(self, record, directory)

  monkeypatch.setattr(ocp.JsonCheckpointHandler, '_save_fn', disk_full_at_step_4)
  config = tiny_config(data_dir, 6, 0)
  workdir = tmp_path / 'run'
  state = {'weights': np.arange(3.0)}
  with checkpointing.create_manager(str(workdir), config) as manager:
    for step in (2, 4):
      checkpointing.save(manager, step, state, state,
                         checkpointing.run_record(step, steps.SRRESNET, config), force=True)
    # Orbax reports the failed background write at the next save.
    with pytest.raises(checkpointing.CheckpointError,
                       match=rf'writing a checkpoint in {re.escape(str(workdir))}/checkpoints '
                             r'failed \(OSError: \[Errno 28\] No space left on device.*reported '
                             r'at step 6\); the latest complete checkpoint is step 2$'):
      checkpointing.save(manager, 6, state, state,
                         checkpointing.run_record(6, steps.SRRESNET, config), force=True)
  assert steps_on_disk(workdir) == ['2', '4.orbax-checkpoint-tmp']
  assert checkpointing.latest_step(str(workdir)) == 2
  with checkpointing.create_manager(str(workdir), config) as manager:  # Space freed: resume.
    checkpointing.save(manager, 6, state, state,
                       checkpointing.run_record(6, steps.SRRESNET, config), force=True)
  assert steps_on_disk(workdir) == ['2', '6']  # Orbax deleted the temporary directory.


def test_training_stops_at_a_failed_first_save_not_one_save_later(data_dir, tmp_path,
                                                                  monkeypatch):
  """The first write of a run is waited for, so a workdir Orbax cannot write to stops
  the run at that save (Orbax alone reports it one save later, steps lost between)."""
  save_json = ocp.JsonCheckpointHandler._save_fn  # pylint: disable=protected-access
  steps_seen = []

  async def disk_full_at_step_2(self, record, directory):
    steps_seen.append(record['step'])
    if record['step'] == 2:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    await save_json(self, record, directory)

  monkeypatch.setattr(ocp.JsonCheckpointHandler, '_save_fn', disk_full_at_step_2)
  workdir = tmp_path / 'run'
  config = tiny_config(data_dir, 6, 0)
  config.checkpoint_every_steps = 2
  with pytest.raises(checkpointing.CheckpointError,
                     match=r'No space left on device.*latest complete checkpoint is step None'
                     ) as error:
    loop.train_and_evaluate(config, str(workdir))
  assert 'reported at step' not in str(error.value)  # Not found by a later save.
  assert steps_seen == [2]
  assert steps_on_disk(workdir) == ['2.orbax-checkpoint-tmp']


def test_training_stops_soon_after_a_failed_background_save(data_dir, tmp_path, monkeypatch):
  """A later (asynchronous) save that fails stops the run before the next save."""
  save_json = ocp.JsonCheckpointHandler._save_fn  # pylint: disable=protected-access

  async def disk_full_at_step_4(self, record, directory):
    if record['step'] == 4:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    await save_json(self, record, directory)

  create, create_manager = inputs.create_input_iterator, checkpointing.create_manager
  managers = []

  def recorded_manager(*args, **kwargs):
    managers.append(create_manager(*args, **kwargs))
    return managers[-1]

  def batches_after_the_failed_save(config, start_step):
    """The batch of step 5 (whose end, step 6, saves again) only once the step-4
    save has ended: a run must then notice the failure before saving again, however
    long the save's threads took (a fixed delay made this pass only when the machine
    was idle enough)."""
    for step, batch in enumerate(create(config, start_step), start_step):
      if step == 5:
        deadline = time.monotonic() + 120  # Only against a hang.
        while managers[-1].is_saving_in_progress() and time.monotonic() < deadline:
          time.sleep(0.05)
      yield batch

  monkeypatch.setattr(ocp.JsonCheckpointHandler, '_save_fn', disk_full_at_step_4)
  monkeypatch.setattr(checkpointing, 'create_manager', recorded_manager)
  monkeypatch.setattr(inputs, 'create_input_iterator', batches_after_the_failed_save)
  config = tiny_config(data_dir, 12, 0)
  config.checkpoint_every_steps = 2
  workdir = tmp_path / 'run'
  with pytest.raises(checkpointing.CheckpointError,
                     match=r'No space left on device.*latest complete checkpoint is step 2'
                     ) as error:
    loop.train_and_evaluate(config, str(workdir))
  assert 'reported at step' not in str(error.value)  # Not found by the save at step 6.
  assert steps_on_disk(workdir) == ['2', '4.orbax-checkpoint-tmp']


# A command whose work never ends (the function named by WORKER_STALL, "module:name",
# touches OUT/started and then sleeps), run with JAX's distributed runtime started.
STALLED_COMMAND = '''\
import importlib
import os
import pathlib
import sys
import time

OUT = pathlib.Path(os.environ['WORKER_OUT'])
module_name, function = os.environ['WORKER_STALL'].split(':')


def stalled(*args, **kwargs):
  (OUT / 'started').touch()
  time.sleep(600)


setattr(importlib.import_module(module_name), function, stalled)
command = importlib.import_module(sys.argv[1])
sys.argv = sys.argv[1:]
command.run()
'''


def sigterm_once_started(tmp_path: pathlib.Path, hook: str, command: str, args: list[str],
                         **env: str) -> tuple[int, str]:
  """Runs ``command`` (a module) with ``args`` through the script ``hook`` (which
  patches the package, touches WORKER_OUT/started at the moment to stop, then runs
  ``command.run()``), sends SIGTERM once it is there: (exit status, stderr)."""
  (tmp_path / 'hooked.py').write_text(hook)
  process = subprocess.Popen(
      [sys.executable, str(tmp_path / 'hooked.py'), command, *args], cwd=REPO,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env={**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu',
           'WORKER_OUT': str(tmp_path), **env})
  try:
    wait_until(lambda: (tmp_path / 'started').exists() or process.poll() is not None,
               'the command to start working')
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
  finally:
    if process.poll() is None:
      process.kill()
  return process.returncode, stderr


@pytest.mark.parametrize('command, stall, args', [
    ('srgan_jax.super_resolve', 'srgan_jax.inference.super_resolve_files:super_resolve_paths',
     ['--model=cpu_small', '--input=IMAGES', '--output=OUT/sr']),
    ('srgan_jax.evaluate', 'srgan_jax.evaluation.scoring:evaluate_sets',
     ['--model=cpu_small', '--data=IMAGES']),
])
def test_sigterm_stops_commands_that_do_not_train(tmp_path, command, stall, args):
  """JAX's distributed runtime catches SIGTERM for training's preemption service; before,
  evaluate and super_resolve started with it ignored SIGTERM and ran on."""
  write_images(tmp_path / 'images', count=1)
  args = [arg.replace('IMAGES', str(tmp_path / 'images')).replace('OUT', str(tmp_path))
          for arg in args]
  # It sleeps 600 s if SIGTERM is ignored.
  returncode, stderr = sigterm_once_started(
      tmp_path, STALLED_COMMAND, command, args, WORKER_STALL=stall,
      # One process of a distributed run: JAX's runtime starts and catches SIGTERM.
      JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{free_port()}', JAX_NUM_PROCESSES='1',
      JAX_PROCESS_ID='0')
  assert returncode == errors.EXIT_PREEMPTED, stderr[-3000:]
  assert stderr.strip().splitlines()[-1] == (
      f'preempted: {command.split(".")[1]} stopped by SIGTERM before it finished; rerun the '
      'same command')


def free_port() -> int:
  """A TCP port free on this machine now (for a JAX coordinator)."""
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]
