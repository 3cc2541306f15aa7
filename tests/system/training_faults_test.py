"""Training runs that cannot start or go on: one line, the right exit status, nothing lost.

Each case runs ``python -m srgan_jax.main`` in a subprocess (``user_errors_test``'s
helpers). Training data that cannot fill a batch, a workdir that is a file, and a
config asking for fewer steps than the checkpoint holds are refused before anything
is written or compiled; SIGTERM during the final evaluation of a run that has
finished training is not a preemption.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

from conftest import REPO
import pytest
from user_errors_test import QUICKSTART, check_user_error, run_command, snapshot, write_image

from srgan_jax.configs import quickstart
from srgan_jax.runtime import errors

# Runs commands in subprocesses: a system test (`pytest -m "not system"` skips it).
pytestmark = pytest.mark.system

# The quickstart at test size (conftest.tiny_quickstart_config's widths), two steps,
# one checkpoint and one evaluation, both at the end.
TINY = ['--config.generator.num_blocks=1', '--config.generator.features=8',
        '--config.generator.upsample_features=32', '--config.data.crop_size=32',
        '--config.batch_size=2', '--config.srresnet.num_steps=2']


def _folder(root, name, sizes, extra=()):
  """A folder of images of the given (height, width) sizes and other named files."""
  folder = root / name
  folder.mkdir()
  for index, (height, width) in enumerate(sizes):
    write_image(folder / f'{index}.png', height, width, seed=index)
  for file in extra:
    (folder / file).write_text('not an image')
  return str(folder)


DATA_CASES = {
    'empty folder': (lambda root: _folder(root, 'empty', []), [],
                     r'data.folders: no image files \(.bmp, .*\) in \S+/empty: add training '
                     r'images'),
    'folder without images': (
        lambda root: _folder(root, 'notes', [], extra=['notes.txt', 'a.png.txt']), [],
        r'data.folders: no image files .* in \S+/notes: add training images'),
    # The quickstart's crop is 48 and its batch 10.
    'every image smaller than the crop': (
        lambda root: _folder(root, 'small', [(40, 56)] * 3), [],
        r'data.folders: \S+/small: 0 usable of 3 images \(3 smaller than data.crop_size=48 '
        r'on a side\), fewer than the 10 that one batch takes \(batch_size=10, each crop from '
        r'its own image\): add images of at least 48x48 pixels'),
    'fewer usable images than the batch': (
        lambda root: _folder(root, 'few', [(64, 64)] * 3, extra=['broken.png']), [],
        r'data.folders: \S+/few: 3 usable of 4 images \(1 unreadable\), fewer than the 10 '
        r'that one batch takes .*: lower batch_size to 3, or add images of at least 48x48'),
    'batch of 4096 crops of 512': (
        lambda root: None, ['--config.batch_size=4096', '--config.data.crop_size=512'],
        rf'data.folders: {len(quickstart.TRAIN_PHOTOS)} entries \(.*\): 5 usable of 10 images '
        r'\(5 smaller than data.crop_size=512 on a side\), fewer than the 4096 that one batch '
        r'takes .*: lower batch_size to 5, or add images of at least 512x512 pixels'),
}


@pytest.mark.parametrize('make_data, args, pattern', DATA_CASES.values(), ids=DATA_CASES.keys())
def test_training_data_without_a_batch_is_refused_before_any_work(tmp_path, make_data, args,
                                                                  pattern):
  folder = make_data(tmp_path)
  args = args + ([f"--config.data.folders=('{folder}',)"] if folder else [])
  before = snapshot(tmp_path)
  workdir = tmp_path / 'run'
  check_user_error(run_command('main', f'--config={QUICKSTART}', f'--workdir={workdir}', *args),
                   pattern)
  assert not workdir.exists()  # Decided in the config check: no workdir, nothing compiled.
  assert snapshot(tmp_path) == before


def test_workdir_that_is_a_file_is_refused_and_left_alone(tmp_path):
  workdir = tmp_path / 'run'
  workdir.write_bytes(b'my notes')
  before = snapshot(tmp_path)
  check_user_error(run_command('main', f'--config={QUICKSTART}', f'--workdir={workdir}'),
                   rf'--workdir={re.escape(str(workdir))} is a file, not a folder; choose '
                   r'another --workdir')
  assert snapshot(tmp_path) == before and workdir.read_bytes() == b'my notes'


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  """A run of TINY signalled with SIGTERM during its final evaluation: (workdir, exit
  status, stdout, stderr)."""
  root = tmp_path_factory.mktemp('finished')
  # Images big enough that the final evaluation lasts seconds: the signal lands in it.
  evaluation = _folder(root, 'eval', [(1600, 1600), (1600, 1560)])
  workdir = root / 'run'
  # The last step's training scalars are written just before the final evaluation.
  code, stdout, stderr = _sigterm_on_line(
      workdir, [*TINY, f"--config.eval_folders=('{evaluation}',)"], r'\[2\] train/srresnet/')
  return workdir, code, stdout, stderr


def test_sigterm_during_the_final_evaluation_is_not_a_preemption(finished_run):
  workdir, code, stdout, stderr = finished_run
  shown = f'exit {code}\nstdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}'
  assert code == 0, shown
  assert 'Traceback' not in stderr and 'preempted' not in stderr, shown
  assert ('SIGTERM received during the last step or the final evaluation: training finished '
          'and its checkpoint (step 2) is saved.') in stderr, shown
  assert 'this generator against bicubic' in stdout, shown  # The evaluation finished.
  assert sorted(path.name for path in (workdir / 'checkpoints').iterdir()) == ['2'], shown


def test_config_with_fewer_steps_than_the_checkpoint_is_refused(finished_run):
  workdir = finished_run[0]
  before, config_json = snapshot(workdir), (workdir / 'config.json').read_bytes()
  result = run_command('main', f'--config={QUICKSTART}', f'--workdir={workdir}',
                       *TINY[:-1], '--config.srresnet.num_steps=1')
  check_user_error(result, rf'the checkpoint in {re.escape(str(workdir))}/checkpoints is at '
                           r'step 2, but the config asks for 1 steps \(srresnet.num_steps=1 \+ '
                           r'srgan.num_steps=0\): ask for at least 2 to train on, or choose '
                           r'another --workdir for a shorter run')
  # Refused before the events file and config.json are written: nothing changed but
  # lock.json, which names the run that holds the workdir (this one, for a moment).
  after = snapshot(workdir)
  assert {**after, 'lock.json': None} == {**before, 'lock.json': None}
  assert (workdir / 'config.json').read_bytes() == config_json


def _signals_not_ignored():
  """In the child: stop signals at their defaults (a test run under nohup, or as a
  background job, ignores SIGHUP or SIGINT, and a command keeps them ignored)."""
  for stop_signal in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(stop_signal, signal.SIG_DFL)


def _sigterm_on_line(workdir, args, line_pattern, stop_signals=((None, signal.SIGTERM),)):
  """Runs main with the quickstart config and ``args`` and sends SIGTERM when stderr
  shows ``line_pattern``: (exit status, stdout, stderr). ``stop_signals``: (pattern,
  signal) pairs sent in turn instead, a pattern None meaning ``line_pattern``."""
  environment = {**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu'}
  environment.pop('SRGAN_JAX_DEBUG', None)
  process = subprocess.Popen(
      [sys.executable, '-m', 'srgan_jax.main', f'--config={QUICKSTART}', f'--workdir={workdir}',
       *args], cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, preexec_fn=_signals_not_ignored)
  stderr, to_send = [], list(stop_signals)
  deadline = time.monotonic() + 300  # Only against a hang.
  try:
    for line in process.stderr:
      stderr.append(line)
      if re.search(to_send[0][0] or line_pattern, line):
        process.send_signal(to_send.pop(0)[1])
        if not to_send:
          break
      assert time.monotonic() < deadline, ''.join(stderr)
    stdout, rest = process.communicate(timeout=300)
  finally:
    if process.poll() is None:
      process.kill()
  return process.returncode, stdout, ''.join(stderr) + rest


def _sigterm_when(workdir, line_pattern, stop_signals=((None, signal.SIGTERM),)):
  """TINY for 50 steps, SIGTERM when stderr shows ``line_pattern``: (exit status, stderr)."""
  code, _, stderr = _sigterm_on_line(
      workdir, [*TINY[:-1], '--config.srresnet.num_steps=50', '--config.eval_folders=()'],
      line_pattern, stop_signals)
  return code, stderr


@pytest.mark.parametrize('stop_signals, status, prefix', [
    # A closed terminal or a dropped ssh session: as SIGTERM.
    (((None, signal.SIGHUP),), errors.EXIT_PREEMPTED, 'preempted'),
    # Ctrl-C, and Ctrl-C again while the checkpoint is being saved: the save finishes.
    (((None, signal.SIGINT), ('received: saving a checkpoint', signal.SIGINT)),
     errors.EXIT_INTERRUPTED, 'interrupted'),
])
def test_sighup_and_ctrl_c_save_then_stop(tmp_path, stop_signals, status, prefix):
  """Before: SIGHUP killed the run (129) with nothing saved; Ctrl-C was swallowed
  ("Exception ignored in _xla_gc_callback") and training went on to exit 0, or gave
  a KeyboardInterrupt traceback; twice during a save, a threading traceback."""
  workdir = tmp_path / 'run'
  code, stderr = _sigterm_when(workdir, r'JAX process 0 of 1', stop_signals)
  assert code == status, stderr[-3000:]
  assert 'Traceback' not in stderr and 'Exception ignored' not in stderr, stderr[-3000:]
  if len(stop_signals) > 1:
    assert ('SIGINT (Ctrl-C) received again: stopping once the checkpoint of this step is '
            'saved') in stderr, stderr
  last = stderr.strip().splitlines()[-1]
  assert last == (f'{prefix}: saved step 1 in {workdir}/checkpoints; rerun the same command '
                  'to resume'), last
  assert sorted(path.name for path in (workdir / 'checkpoints').iterdir()) == ['1']


def test_sigterm_during_start_up_stops_with_75(tmp_path):
  """Before: killed by SIGTERM (exit -15 / 143, no message): the handler came after
  compilation. Now the first step is saved, then the run stops."""
  workdir = tmp_path / 'run'
  code, stderr = _sigterm_when(workdir, r'JAX process 0 of 1')
  assert code == errors.EXIT_PREEMPTED, stderr[-3000:]
  assert 'Traceback' not in stderr, stderr[-3000:]
  last = stderr.strip().splitlines()[-1]
  assert last == (f'preempted: saved step 1 in {workdir}/checkpoints; rerun the same command '
                  'to resume'), last
  assert sorted(path.name for path in (workdir / 'checkpoints').iterdir()) == ['1']


def test_sigterm_while_a_resumed_run_compiles_saves_and_stops_with_75(finished_run, tmp_path):
  """Before: killed by SIGTERM (exit -15 / 143) while the steps compiled."""
  workdir = tmp_path / 'run'
  shutil.copytree(finished_run[0], workdir)
  code, stderr = _sigterm_when(workdir, r'Resumed from \S+ at step 2\.')
  assert code == errors.EXIT_PREEMPTED, stderr[-3000:]
  assert 'Traceback' not in stderr, stderr[-3000:]
  last = stderr.strip().splitlines()[-1]
  saved = re.fullmatch(rf'preempted: saved step (\d+) in {re.escape(str(workdir))}/checkpoints; '
                       r'rerun the same command to resume', last)
  assert saved, last
  assert (workdir / 'checkpoints' / saved.group(1)).is_dir()
  assert 2 < int(saved.group(1)) < 50


def test_out_of_device_memory_in_a_step_is_one_line_naming_batch_and_crop():
  """XLA's RESOURCE_EXHAUSTED, as jaxlib raises it (a real out-of-memory needs an
  accelerator; on CPU the process swaps or is killed first). Before: a 54-line
  JaxRuntimeError traceback (exit 1)."""
  import jax  # pylint: disable=g-import-not-at-top
  from srgan_jax.training import loop  # pylint: disable=g-import-not-at-top
  config = quickstart.get_config()
  config.batch_size, config.data.crop_size = 16, 1024
  error = jax.errors.JaxRuntimeError(
      'RESOURCE_EXHAUSTED: Out of memory while trying to allocate 25769803776 bytes.\n'
      'BufferAssignment OOM Debugging.\n...')
  translated = loop.out_of_memory(error, config)
  assert isinstance(translated, errors.UserError)
  devices = jax.device_count()
  assert str(translated) == (
      f'out of accelerator memory in a training step with batch_size=16 ({16 // devices} per '
      f'device on {devices}), data.crop_size=1024 and generator.features=32 (RESOURCE_EXHAUSTED: '
      'Out of memory while trying to allocate 25769803776 bytes.): lower batch_size or '
      'data.crop_size (memory grows with batch x crop^2), or generator.features (x '
      'features^2), or use more devices')
  # Before: MemoryError from the CPU weight-gradient timing (generator.features=20000).
  assert str(loop.out_of_memory(MemoryError(), config)).startswith(
      'out of host memory in a training step with batch_size=16')
  # Other runtime errors are bugs and keep their traceback.
  assert loop.out_of_memory(jax.errors.JaxRuntimeError('INTERNAL: oops'), config) is None
  assert loop.out_of_memory(ValueError('RESOURCE_EXHAUSTED'), config) is None


@pytest.mark.parametrize('started, kept', [(False, ['notes.txt']),
                                           (True, ['checkpoints', 'config.json', 'events',
                                                   'lock.json', 'notes.txt'])])
def test_a_failure_once_training_ran_keeps_what_it_wrote(tmp_path, started, kept):
  """A start that fails (restore, input, compilation) leaves the workdir as it found it;
  once the first call of steps has run, a failure (a NaN at step 900, before the first
  checkpoint) keeps its config.json and logs: they show what went wrong."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  from srgan_jax import main  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'notes.txt').write_text('mine')
  ran = threading.Event()
  with pytest.raises(RuntimeError, match='NaN at step 900'):
    with contextlib.ExitStack() as held:
      main._hold_left_as_found(str(workdir), held, ran)  # pylint: disable=protected-access
      (workdir / 'checkpoints').mkdir()
      (workdir / 'config.json').write_text('{}')
      (workdir / 'events').write_text('losses')
      if started:
        ran.set()
      raise RuntimeError('NaN at step 900')
  assert sorted(os.listdir(workdir)) == kept
  assert (workdir / 'notes.txt').read_text() == 'mine'
