"""Checkpoints that cannot be read or written, and workdirs that change under a run.

A damaged latest checkpoint: training resumes from the newest one that reads (the
damaged ones moved aside, nothing deleted) and repeats the uninterrupted run;
evaluate and super_resolve say what is wrong in one line, without the asyncio
tracebacks Orbax's unfinished reads used to print after it.
"""

import errno
import logging
import os
import re
import shutil
import subprocess
import uuid

from conftest import tiny_run_config, write_tiny_image_sets
from preemption_test import Worker, assert_same_states, leaves, steps_on_disk
from preemption_test import tiny_config, write_images
import pytest
from user_errors_test import check_user_error, run_command, snapshot

from srgan_jax.runtime import errors
from srgan_jax.training import checkpointing
from srgan_jax.training import loop

# Runs commands in subprocesses: a system test (`pytest -m "not system"` skips it).
pytestmark = pytest.mark.system


def _config(root):
  """3 SRResNet then 3 SRGAN steps, checkpoints at 2 (SRResNet), 4 and 6 (SRGAN)."""
  config = tiny_run_config(root, srresnet_steps=3, srgan_steps=3)
  config.eval_folders = ()
  return config


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  """(root, workdir, final states) of the 6-step run."""
  root = tmp_path_factory.mktemp('checkpoint_faults')
  write_tiny_image_sets(root)
  workdir = root / 'uninterrupted'
  states = loop.train_and_evaluate(_config(root), str(workdir))
  assert steps_on_disk(workdir) == ['2', '4', '6']
  return root, workdir, states


def _truncate_arrays(step_dir):
  for path in (step_dir / 'generator' / 'd').iterdir():
    os.truncate(path, path.stat().st_size // 2)


def _zero_arrays(step_dir):
  for path in (step_dir / 'discriminator' / 'd').iterdir():
    path.write_bytes(bytes(path.stat().st_size))


def test_resume_falls_back_past_damaged_checkpoints_and_repeats_the_run(uninterrupted, tmp_path,
                                                                        caplog):
  """Before: "cannot be read ... delete this one", exit 2, until a person deleted it."""
  root, reference, states = uninterrupted
  workdir = tmp_path / 'run'
  shutil.copytree(reference, workdir)
  checkpoints = workdir / 'checkpoints'
  _truncate_arrays(checkpoints / '6')
  _zero_arrays(checkpoints / '4')
  damaged = {step: snapshot(checkpoints / step) for step in ('4', '6')}
  with caplog.at_level(logging.WARNING):
    resumed = loop.train_and_evaluate(_config(root), str(workdir))
  # Back to step 2, across the switch to the SRGAN phase, and on to the same weights.
  assert_same_states(leaves(resumed), leaves(states))
  warnings = [record.getMessage() for record in caplog.records
              if record.levelno == logging.WARNING and 'cannot be read' in record.getMessage()]
  assert len(warnings) == 1, warnings
  assert re.fullmatch(
      rf'checkpoint {re.escape(str(checkpoints))}/6 cannot be read \(ValueError: .*\); '
      r'resuming from step 2, the newest that reads \(kept aside as '
      rf'{re.escape(str(checkpoints))}/6.damaged, {re.escape(str(checkpoints))}/4.damaged\)\.',
      warnings[0]), warnings[0]
  # Nothing deleted: the damaged checkpoints are kept byte for byte beside the new ones.
  assert steps_on_disk(workdir) == ['2', '4', '4.damaged', '6', '6.damaged']
  assert {step: snapshot(checkpoints / f'{step}.damaged') for step in ('4', '6')} == damaged
  assert checkpointing.latest_step(str(workdir)) == 6
  checkpointing.load_generator(str(workdir))  # The new step 6 reads.


def test_resume_with_every_checkpoint_damaged_moves_nothing(uninterrupted, tmp_path):
  root, reference, _ = uninterrupted
  workdir = tmp_path / 'run'
  shutil.copytree(reference, workdir)
  for step in ('2', '4', '6'):
    _truncate_arrays(workdir / 'checkpoints' / step)
  before = snapshot(workdir / 'checkpoints')
  with pytest.raises(checkpointing.DamagedCheckpointError,
                     match=rf'checkpoint {re.escape(str(workdir))}/checkpoints/6 cannot be '
                           r'read: .*Other checkpoints in .*: \[2, 4\]'):
    loop.train_and_evaluate(_config(root), str(workdir))
  assert snapshot(workdir / 'checkpoints') == before


@pytest.mark.parametrize('command, args', [
    ('evaluate', ['--model=srgan', '--data=EVAL']),
    ('super_resolve', ['--model=srgan', '--input=EVAL', '--output=OUT']),
])
def test_damaged_checkpoint_read_by_a_command_is_one_line(uninterrupted, tmp_path, command,
                                                          args):
  """Before: the right line, then 2 to 8 "RuntimeError: Event loop is closed"
  tracebacks from TensorStore reads still in flight when Orbax closed its loop."""
  root, reference, _ = uninterrupted
  workdir = tmp_path / 'run'
  shutil.copytree(reference, workdir)
  _truncate_arrays(workdir / 'checkpoints' / '6')
  args = [arg.replace('EVAL', str(root / 'eval')).replace('OUT', str(tmp_path / 'sr'))
          for arg in args]
  result = run_command(command, f'--workdir={workdir}', *args)
  check_user_error(result, rf'checkpoint {re.escape(str(workdir))}/checkpoints/6 cannot be '
                           r'read: it is damaged, incomplete, or from other model code .*'
                           r'Other checkpoints in .*: \[2, 4\]; choose one of them with --step')
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert 'Event loop is closed' not in result.stderr
  assert steps_on_disk(workdir) == ['2', '4', '6']  # Reading moves nothing aside.


def test_orbax_waits_for_reads_in_flight_before_closing_its_event_loop():
  """The mechanism of the tracebacks above, made deterministic: one read fails while
  another is in flight; the other completes from its own thread (as TensorStore's
  do) after the coroutine ended. Before, Orbax had closed the loop by then, and the
  completion raised "RuntimeError: Event loop is closed" in that thread."""
  import asyncio  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  from orbax.checkpoint._src import asyncio_utils  # pylint: disable=g-import-not-at-top
  completions, threads = [], []

  async def read_in_flight():
    loop, future = asyncio.get_running_loop(), asyncio.get_running_loop().create_future()

    def complete():  # TensorStore's thread, 0.2 s later.
      try:
        loop.call_soon_threadsafe(future.set_result, 'read')
        completions.append('delivered')
      except RuntimeError as error:
        completions.append(str(error))

    timer = threading.Timer(0.2, complete)
    threads.append(timer)
    timer.start()
    return await future

  async def restore():
    asyncio.get_running_loop().create_task(read_in_flight())
    await asyncio.sleep(0)
    raise ValueError('OUT_OF_RANGE: the damaged read')

  with pytest.raises(ValueError, match='OUT_OF_RANGE'):
    asyncio_utils.run_sync(restore())
  # The loop may run the completion before the timer's thread records it: wait for that
  # thread, so that the record does not depend on which thread runs first.
  for thread in threads:
    thread.join()
  assert completions == ['delivered']


def _mount(*args: str) -> None:
  subprocess.run(['mount', *args], check=True, capture_output=True, text=True)


@pytest.fixture
def mountable(tmp_path):
  """Skips unless this process may mount (root with CAP_SYS_ADMIN, as in CI's container)."""
  probe = tmp_path / 'probe'
  probe.mkdir()
  try:
    _mount('--bind', str(probe), str(probe))
  except (OSError, subprocess.CalledProcessError) as error:
    pytest.skip(f'cannot mount here: {error}')
  subprocess.run(['umount', str(probe)], check=True)


def _read_only(workdir):
  """The workdir made read-only under the run: a read-only bind mount over it (root
  ignores file modes, not a read-only mount)."""
  _mount('--bind', str(workdir), str(workdir))
  _mount('-o', 'remount,ro,bind', str(workdir))


def _fill(workdir):
  """The workdir's file system full: it lives on a small tmpfs; a file takes the rest.

  Unbuffered: a buffered file's close would flush what the full disk refused, and
  raise again (CI failed so, depending on how much space the checkpoint had left)."""
  descriptor = os.open(workdir / 'filler', os.O_WRONLY | os.O_CREAT, 0o644)
  try:
    while True:  # The last write that fits is partial; the one after it fails.
      os.write(descriptor, bytes(1 << 20))
  except OSError as error:
    if error.errno != errno.ENOSPC:
      raise
  finally:
    os.close(descriptor)


@pytest.mark.parametrize('fault, message', [
    (_read_only, r'OSError: \[Errno 30\] Read-only file system'),
    (_fill, r'(OSError|ValueError): .*(\[Errno 28\] No space left on device|RESOURCE_EXHAUSTED|'
            r'No space)'),
], ids=['read-only', 'disk-full'])
def test_failed_checkpoint_write_ends_the_run_at_once(mountable, tmp_path, fault, message):
  """Before: the error line at once, then the process stayed up for Orbax's 300 s
  signalling timeout (its save threads waited for the one that had failed), and
  printed dozens of lines of warnings and tracebacks."""
  del mountable
  write_images(tmp_path / 'images')
  config = tiny_config(tmp_path / 'images', 20, 0)
  config.checkpoint_every_steps = 2
  # On its own small file system, so that filling it harms nothing else.
  workdir = tmp_path / 'run'
  workdir.mkdir()
  _mount('-t', 'tmpfs', '-o', 'size=64m', f'srgan-test-{uuid.uuid4().hex[:8]}', str(workdir))
  try:
    worker = Worker(tmp_path / 'worker', config, workdir, WORKER_PAUSE_AT='3')
    try:
      worker.wait_for('paused0')  # Checkpoint 2 saved and waited for (the first one).
      fault(workdir)
      (worker.out / 'resume').touch()
      try:
        code = worker.process.wait(timeout=240)  # The bug: over 300 s.
      except subprocess.TimeoutExpired:
        pytest.fail(f'still running 240 s after the save failed:\n{worker.log()[-3000:]}')
    finally:
      worker.stop()
    log = worker.log()
    assert code == errors.EXIT_USER_ERROR, log[-3000:]
    lines = log.strip().splitlines()
    assert re.fullmatch(rf'error: writing checkpoint 4 in {re.escape(str(workdir))}/checkpoints '
                        rf'failed \({message}.*\); the latest complete checkpoint is step 2',
                        lines[-1]), lines[-1]
    assert 'Traceback' not in log and 'never awaited' not in log, log[-3000:]
  finally:
    # The tmpfs, and the read-only bind mount on it at the same path: one at a time.
    for _ in range(3):
      if subprocess.run(['umount', str(workdir)], capture_output=True, check=False).returncode:
        break


def _delete(workdir):
  shutil.rmtree(workdir)


def _replace(workdir):
  shutil.rmtree(workdir)
  workdir.mkdir()
  (workdir / 'notes.txt').write_text('a new folder')


@pytest.mark.parametrize('change', [_delete, _replace], ids=['deleted', 'replaced'])
def test_run_stops_when_its_workdir_is_deleted_or_replaced(tmp_path, change):
  """Before: the run went on, recreated checkpoints in a new folder that nobody
  locked (a second run could lock it too) and exited 0."""
  write_images(tmp_path / 'images')
  config = tiny_config(tmp_path / 'images', 20, 0)
  config.checkpoint_every_steps = 2
  workdir = tmp_path / 'run'
  worker = Worker(tmp_path / 'worker', config, workdir, WORKER_PAUSE_AT='3')
  try:
    worker.wait_for('paused0')
    change(workdir)
    after = snapshot(workdir) if workdir.exists() else None
    (worker.out / 'resume').touch()
    code = worker.finish()
  finally:
    worker.stop()
  log = worker.log()
  assert code == errors.EXIT_USER_ERROR, log[-3000:]
  assert 'Traceback' not in log, log[-3000:]
  assert log.strip().splitlines()[-1] == (
      f'error: workdir {workdir} was deleted or replaced while this run wrote it (its lock is '
      'on the old folder); stopped at step 4 rather than write into a folder it does not '
      'hold. Find what removed it, then rerun (it resumes from the checkpoints there, if any)')
  # Nothing written into whatever is at the path now.
  assert (snapshot(workdir) if workdir.exists() else None) == after


def test_a_workdir_with_an_empty_checkpoints_folder_says_no_checkpoint_yet(tmp_path):
  """Before: "no checkpoint at step None in ...; steps present: []" (evaluate,
  super_resolve, export, main --mode=evaluate: all read through read_generator)."""
  (tmp_path / 'checkpoints').mkdir()
  with pytest.raises(checkpointing.CheckpointError) as raised:
    checkpointing.read_generator(str(tmp_path))
  assert str(raised.value) == (
      f'no checkpoint yet in {tmp_path}: its checkpoints/ folder holds none (the run has not '
      'saved one, or stopped before its first save); train it until it saves one '
      '(checkpoint_every_steps, and at the end), or name another --workdir')
  result = run_command('evaluate', f'--workdir={tmp_path}', f'--data={tmp_path}')
  check_user_error(result, rf'no checkpoint yet in {re.escape(str(tmp_path))}: ')


def test_the_latest_checkpoint_deleted_while_read_is_read_again(uninterrupted, tmp_path,
                                                                 monkeypatch):
  """Before: 1 read in 8 of a run that keeps one checkpoint failed with "damaged, move
  this one aside": the trainer had deleted the step being read. Deleted here at the
  moment its record is read, as the trainer's rotation would."""
  _, source, _ = uninterrupted
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  read_record, deleted = checkpointing.read_record, []

  def rotated_away(manager, step):
    if not deleted:
      shutil.rmtree(workdir / 'checkpoints' / str(step))
      deleted.append(step)
    return read_record(manager, step)

  monkeypatch.setattr(checkpointing, 'read_record', rotated_away)
  *_, step = checkpointing.read_generator(str(workdir))
  assert deleted == [6] and step == 4  # The newest left.
  # A step asked for by number is not replaced by another.
  shutil.rmtree(workdir / 'checkpoints' / '2', ignore_errors=True)
  deleted.clear()
  with pytest.raises(checkpointing.DamagedCheckpointError, match='checkpoints/4 cannot be read'):
    checkpointing.read_generator(str(workdir), step=4)
