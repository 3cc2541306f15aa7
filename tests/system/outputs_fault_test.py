"""Outputs that cannot be written are refused before any work, and writers don't collide.

Issue 27: evaluate, super_resolve, export and plot used to find out that their output
could not be written only after all the work (a traceback, "not scored", every image
"failed"). Each command now checks with ``flag_checks.output_problem`` first: one
line, exit 2, nothing read or computed, nothing on disk changed. And two
super_resolve processes writing one folder no longer share a temporary file name.

The subprocess cases are system tests (``check_user_error``: user_errors_test.py);
the helpers' own tests run in-process.
"""

import contextlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from typing import Iterator

from conftest import datasets_root
from conftest import REPO
import numpy as np
from PIL import Image
import pytest
from preemption_test import sigterm_once_started
from user_errors_test import check_user_error
from user_errors_test import run_command
from user_errors_test import snapshot
from user_errors_test import write_image

from srgan_jax.imaging import image_io
from srgan_jax.runtime import flag_checks
from srgan_jax.runtime import paths


@contextlib.contextmanager
def read_only(folder: pathlib.Path) -> Iterator[None]:
  """Makes ``folder`` a place where this process cannot create files.

  A user: mode 0o555. Root ignores modes, so then the immutable attribute
  (``chattr +i``), which stops root too; skipped where the file system lacks it.
  """
  if os.geteuid() != 0:
    folder.chmod(0o555)
    try:
      yield
    finally:
      folder.chmod(0o755)
    return
  if not shutil.which('chattr') or subprocess.run(
      ['chattr', '+i', str(folder)], capture_output=True, check=False).returncode:
    pytest.skip('running as root, whom mode 0o555 does not stop, and chattr +i is not '
                'available on this file system')
  try:
    yield
  finally:
    subprocess.run(['chattr', '-i', str(folder)], check=True)


def _places(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  """A regular file (whose would-be children fail for root too) and an empty folder."""
  a_file = tmp_path / 'a_file'
  a_file.write_text('precious')
  (tmp_path / 'locked').mkdir()
  return a_file, tmp_path / 'locked'


def _check_refused(result: subprocess.CompletedProcess, pattern: str, tmp_path: pathlib.Path,
                   before: dict[str, tuple[int, int]]) -> None:
  """One line, exit 2, no traceback; nothing computed, nothing on disk changed."""
  check_user_error(result, pattern)
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert 'PSNR' not in result.stdout + result.stderr  # No image scored.
  assert 'written' not in result.stdout and 'failed' not in result.stdout  # None upscaled.
  assert snapshot(tmp_path) == before
  assert (tmp_path / 'a_file').read_text() == 'precious'


# ---------------------------------------------------------------------------------------
# The commands, in subprocesses. Paths: A_FILE/... lies under a regular file, LOCKED/...
# in a folder made read-only: denied to a user by its mode, to root by chattr +i.
DENIED = r'\((Permission denied|Operation not permitted)\)'

EVALUATE_CASES = {
    'output under a file': ('--output=A_FILE/results.json',
                            r'--output=\S+/a_file/results.json: \S+/a_file is a file, not a '
                            r'folder; choose another --output$'),
    'output in a read-only folder': ('--output=LOCKED/results.json',
                                     r'--output=\S+/locked/results.json: cannot create files in '
                                     rf'\S+/locked {DENIED}; choose another --output$'),
    'save_dir under a file': ('--save_dir=A_FILE/sr', r'--save_dir=\S+/a_file/sr: \S+/a_file is '
                                                      r'a file, not a folder; choose another '
                                                      r'--save_dir$'),
    'save_dir is a file': ('--save_dir=A_FILE', r'--save_dir=\S+/a_file is a file, not a folder; '
                                                r'choose another --save_dir$'),
    'save_dir in a read-only folder': ('--save_dir=LOCKED/sr',
                                       rf'--save_dir=\S+/locked/sr: cannot create files in '
                                       rf'\S+/locked {DENIED}; choose another --save_dir$'),
}


@pytest.mark.system
@pytest.mark.parametrize('arg, pattern', EVALUATE_CASES.values(), ids=EVALUATE_CASES.keys())
def test_evaluate_refuses_an_unwritable_output_before_scoring(tmp_path, arg, pattern):
  a_file, locked = _places(tmp_path)
  write_image(tmp_path / 'images' / 'a.png')
  arg = arg.replace('A_FILE', str(a_file)).replace('LOCKED', str(locked))
  before = snapshot(tmp_path)
  with read_only(locked) if str(locked) in arg else contextlib.nullcontext():
    result = run_command('evaluate', '--model=bicubic', f'--data={tmp_path / "images"}', arg)
  _check_refused(result, pattern, tmp_path, before)


SUPER_RESOLVE_CASES = {
    'folder under a file': ('IN', 'A_FILE/out', r'--output=\S+/a_file/out: \S+/a_file is a file, '
                                                r'not a folder; choose another --output$'),
    'png under a file': ('IN/a.png', 'A_FILE/sub/a_x4.png',
                         r'--output=\S+/a_file/sub/a_x4.png: \S+/a_file is a file, not a folder'),
    'folder is a file': ('IN/a.png', 'A_FILE', r'--output=\S+/a_file is a file, not a folder'),
    'read-only folder': ('IN', 'LOCKED', rf'--output=\S+/locked: cannot create files in '
                                         rf'\S+/locked {DENIED}; choose another --output$'),
}


@pytest.mark.system
@pytest.mark.parametrize('source, output, pattern', SUPER_RESOLVE_CASES.values(),
                         ids=SUPER_RESOLVE_CASES.keys())
def test_super_resolve_refuses_an_unwritable_output_before_any_image(tmp_path, source, output,
                                                                     pattern):
  a_file, locked = _places(tmp_path)
  for index in range(3):
    write_image(tmp_path / 'in' / f'{"abc"[index]}.png', 24, 24, seed=index)
  places = lambda arg: (arg.replace('A_FILE', str(a_file)).replace('LOCKED', str(locked))
                        .replace('IN', str(tmp_path / 'in')))
  before = snapshot(tmp_path)
  with read_only(locked) if output == 'LOCKED' else contextlib.nullcontext():
    result = run_command('super_resolve', '--model=bicubic', f'--input={places(source)}',
                         f'--output={places(output)}')
  _check_refused(result, pattern, tmp_path, before)


@pytest.mark.system
@pytest.mark.parametrize('models, pattern', [
    ('A_FILE/models', r'\$SRGAN_PRETRAINED_DIR=\S+/a_file/models: \S+/a_file is a file, not a '
                      r'folder; choose another \$SRGAN_PRETRAINED_DIR$'),
    ('LOCKED', rf'\$SRGAN_PRETRAINED_DIR=\S+/locked: cannot create files in \S+/locked '
               rf'{DENIED}; choose another \$SRGAN_PRETRAINED_DIR$'),
    # Before: written under a local folder named gs:/bucket/models (pathlib drops a slash).
    ('gs://bucket/models', r'\$SRGAN_PRETRAINED_DIR must be a local path, got '
                           r'gs://bucket/models: this command reads and writes local files only; '
                           r'copy them to or from the bucket \(gcloud storage cp -r\)$'),
], ids=['under a file', 'read-only folder', 'a bucket'])
def test_export_refuses_an_unwritable_models_folder_before_reading_the_run(tmp_path, models,
                                                                           pattern):
  a_file, locked = _places(tmp_path)
  models = models.replace('A_FILE', str(a_file)).replace('LOCKED', str(locked))
  before = snapshot(tmp_path)
  # The workdir has no checkpoints: the models folder is checked before it is read.
  with read_only(locked) if models == str(locked) else contextlib.nullcontext():
    result = run_command('export', f'--workdir={tmp_path / "run"}', '--name=tiny',
                         env={'SRGAN_PRETRAINED_DIR': models})
  _check_refused(result, pattern, tmp_path, before)
  assert 'checkpoints' not in result.stderr


@pytest.mark.system
@pytest.mark.parametrize('args, pattern', [
    (['--workdir=RUN', '--output=A_FILE/curve.png'],
     r'--output=\S+/a_file/curve.png: \S+/a_file is a file, not a folder; choose another '
     r'--output$'),
    (['--workdir=LOCKED'], rf'\S+/locked/learning_curve.png: cannot create files in \S+/locked '
                           rf'{DENIED}; pass --output$'),
], ids=['output under a file', 'default output in a read-only run'])
def test_plot_refuses_an_unwritable_output_before_reading_the_run(tmp_path, args, pattern):
  a_file, locked = _places(tmp_path)
  args = [arg.replace('A_FILE', str(a_file)).replace('LOCKED', str(locked))
          .replace('RUN', str(tmp_path / 'run')) for arg in args]
  before = snapshot(tmp_path)
  # No event files: the output is checked before they are read.
  with read_only(locked) if f'--workdir={locked}' in args else contextlib.nullcontext():
    result = run_command('plot', *args)
  _check_refused(result, pattern, tmp_path, before)
  assert 'scalars' not in result.stderr


# Writes one image into argv[1] 40 times once told to go, and prints each failure.
_WRITER = textwrap.dedent('''\
    import pathlib, sys
    import numpy as np
    from srgan_jax.imaging import image_io
    rgb = np.random.default_rng(0).random((96, 96, 3))
    print('ready', flush=True)
    sys.stdin.readline()
    for _ in range(40):
      try:
        image_io.save_image(pathlib.Path(sys.argv[1]), rgb)
      except OSError as error:
        print(f'failed: {error!r}', flush=True)
    ''')


@pytest.mark.system
def test_two_processes_writing_one_image_neither_fails_and_it_stays_whole(tmp_path):
  """What two super_resolve runs into one folder do to each output, started together."""
  target = tmp_path / 'a.png'
  environment = {**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu'}
  writers = [subprocess.Popen([sys.executable, '-c', _WRITER, str(target)], cwd=REPO,
                              env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
  try:
    for writer in writers:
      assert writer.stdout.readline().strip() == 'ready'
    for writer in writers:  # Both start writing at once.
      writer.stdin.write('go\n')
      writer.stdin.flush()
    outputs = [writer.communicate(timeout=120)[0] for writer in writers]
  finally:
    for writer in writers:
      writer.kill()
  for writer, output in zip(writers, outputs):
    assert writer.returncode == 0 and 'failed' not in output, output
  with Image.open(target) as image:
    image.load()  # Whole: a truncated PNG raises here.
    assert image.size == (96, 96)
  assert [path.name for path in tmp_path.iterdir()] == ['a.png']  # No temporary file left.


# ---------------------------------------------------------------------------------------
# The helpers, in-process.

def test_output_problem_accepts_what_can_be_created(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'folder').mkdir()
  (tmp_path / 'folder' / 'old.json').write_text('{}')
  for path, folder in [('new/deeper/x.json', False), ('x.json', False), ('folder/old.json', False),
                       ('folder', True), ('new/deeper', True),
                       ('gs://bucket/x.json', False), (None, False), ('', True)]:
    assert flag_checks.output_problem(path, folder=folder, flag='--output') is None, path
  # No probe file left behind.
  assert sorted(path.name for path in tmp_path.rglob('*')) == ['folder', 'old.json']


def test_output_problem_names_what_is_in_the_way(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  pathlib.Path('out').write_text('a file')
  pathlib.Path('folder').mkdir()
  pathlib.Path('dangling').symlink_to('nowhere')
  problem = lambda path, folder=False: flag_checks.output_problem(path, folder=folder,
                                                                  flag='--output')
  assert problem('out/x.json') == ('--output=out/x.json: out is a file, not a folder; '
                                   'choose another --output')
  assert problem('out/a/b/x.json') == ('--output=out/a/b/x.json: out is a file, not a folder; '
                                       'choose another --output')
  assert problem('out', folder=True) == ('--output=out is a file, not a folder; '
                                         'choose another --output')
  assert problem('./out/../out/x.png') == ('--output=./out/../out/x.png: out is a file, not a '
                                           'folder; choose another --output')
  assert problem('folder') == '--output=folder is a folder, not a file; choose another --output'
  assert problem('dangling/x.png') == ('--output=dangling/x.png: dangling is a broken link; '
                                       'choose another --output')
  assert flag_checks.output_problem('out/x', folder=True, fix='pass --to') == (
      'out/x: out is a file, not a folder; pass --to')


def test_output_problem_read_only_folder(tmp_path):
  (tmp_path / 'locked').mkdir()
  with read_only(tmp_path / 'locked'):
    problem = flag_checks.output_problem(str(tmp_path / 'locked' / 'new'), folder=True)
  root = re.escape(str(tmp_path))
  assert re.fullmatch(rf'{root}/locked/new: cannot create files in {root}/locked {DENIED}; '
                      'choose another path', problem), problem
  assert not any((tmp_path / 'locked').iterdir())


def test_temporary_paths_differ_for_each_write(tmp_path):
  target = tmp_path / 'a.png'
  names = {paths.temporary_path(target) for _ in range(100)}
  assert len(names) == 100
  for name in names:
    assert name.parent == tmp_path and name.name.startswith('.a.png.')
    assert name.name.endswith('.partial') and f'.{os.getpid()}.' in name.name


def test_concurrent_writers_of_one_image_all_succeed_and_leave_it_whole(tmp_path):
  """Threads (one process id) writing one target: each write whole, none failing."""
  target = tmp_path / 'a.png'
  rgb = np.random.default_rng(0).random((96, 96, 3))
  errors = []

  def write():
    try:
      for _ in range(25):
        image_io.save_image(target, rgb)
    except Exception as error:  # pylint: disable=broad-except
      errors.append(error)

  threads = [threading.Thread(target=write) for _ in range(4)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert not errors, errors
  np.testing.assert_array_equal(np.asarray(Image.open(target)), np.round(rgb * 255))
  assert [path.name for path in tmp_path.iterdir()] == ['a.png']  # No temporary file left.


def test_failed_write_leaves_no_temporary_file(tmp_path):
  target = tmp_path / 'a.png'
  target.mkdir()  # The rename onto a folder fails after the temporary file is written.
  with pytest.raises(OSError):
    image_io.save_image(target, np.zeros((4, 4, 3)))
  assert [path.name for path in tmp_path.iterdir()] == ['a.png'] and target.is_dir()
  assert not any('partial' in path.name for path in tmp_path.rglob('*'))


# ---------------------------------------------------------------------------------------
# Issue 37: a set name that read the wrong folder; writes stopped half-way.

def _command_in(cwd: pathlib.Path, module: str, *args: str) -> subprocess.CompletedProcess:
  """``python -m srgan_jax.<module> args`` started in ``cwd`` (where ./Set5 may be)."""
  environment = {**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu',
                 'SRGAN_DATASETS': str(datasets_root())}
  environment.pop('SRGAN_JAX_DEBUG', None)
  return subprocess.run([sys.executable, '-m', f'srgan_jax.{module}', *args], cwd=cwd,
                        env=environment, capture_output=True, text=True, timeout=300)


@pytest.mark.system
def test_a_set_name_scores_the_benchmark_set_not_a_folder_of_that_name_here(tmp_path):
  """The probe of issue 37: after `evaluate --save_dir=.` (or `super_resolve
  --output=Set5`) the working folder holds ./Set5 of SR images, and `--data=Set5` scored
  those against themselves (cpu_small: 53.22 dB, nothing said which folder was read).
  Now a name is always $SRGAN_DATASETS/NAME, and the table and results.json say so."""
  benchmark = str(datasets_root() / 'Set5')
  first = _command_in(tmp_path, 'evaluate', '--model=bicubic', '--data=Set5', '--metrics=',
                      '--save_dir=.', '--output=first.json')
  assert first.returncode == 0, first.stderr[-3000:]
  assert len(list((tmp_path / 'Set5').glob('*.png'))) == 5  # ./Set5 now holds SR images.
  second = _command_in(tmp_path, 'evaluate', '--model=bicubic', '--data=Set5', '--metrics=',
                       '--output=second.json')
  assert second.returncode == 0, second.stderr[-3000:]
  results = [json.loads((tmp_path / name).read_text())['Set5']
             for name in ('first.json', 'second.json')]
  for result in results:
    assert result['folder'] == benchmark and result['images'] == 5
    assert abs(result['psnr'] - 28.42) < 0.02 and abs(result['ssim'] - 0.8104) < 0.002
  assert results[0] == results[1]
  (row,) = [line for line in second.stdout.splitlines() if line.startswith('Set5 ')]
  assert row.split()[-1] == benchmark
  # A path is that folder: ./Set5 is read only when named so.
  local = _command_in(tmp_path, 'evaluate', '--model=bicubic', '--data=./Set5', '--metrics=',
                      '--output=local.json')
  assert local.returncode == 0, local.stderr[-3000:]
  assert json.loads((tmp_path / 'local.json').read_text())['Set5']['folder'] == str(
      tmp_path / 'Set5')


# Runs a command whose image writes stop half-way (50 bytes on disk) and wait there for
# SIGTERM: what is left in the output folder afterwards is what a preemption leaves.
STOPPED_IN_A_WRITE = '''
import importlib, os, pathlib, sys, time
from PIL import Image

real_save = Image.Image.save


def save(image, target, *args, **kwargs):
  real_save(image, target, *args, **kwargs)
  with open(target, 'r+b') as file:
    file.truncate(50)
  pathlib.Path(os.environ['WORKER_OUT'], 'started').touch()
  time.sleep(600)


Image.Image.save = save
command = importlib.import_module(sys.argv[1])
sys.argv = sys.argv[1:]
command.run()
'''


@pytest.mark.system
@pytest.mark.parametrize('command, args', [
    ('srgan_jax.super_resolve', ['--model=bicubic', '--input=IMAGES', '--output=OUT']),
    ('srgan_jax.evaluate', ['--model=bicubic', '--data=IMAGES', '--metrics=', '--save_dir=OUT',
                            '--compare']),
])
def test_sigterm_during_a_write_leaves_no_partial_or_half_file(tmp_path, command, args):
  """Issue 37: super_resolve SIGTERMed left .partial files; evaluate's SR and comparison
  images were written in place (a half-written PNG that looked finished)."""
  for index in range(2):
    write_image(tmp_path / 'images' / f'img{index}.png', 64, 64, seed=index)
  output = tmp_path / 'out'
  args = [arg.replace('IMAGES', str(tmp_path / 'images')).replace('OUT', str(output))
          for arg in args]
  returncode, stderr = sigterm_once_started(tmp_path, STOPPED_IN_A_WRITE, command, args)
  assert returncode == 75, stderr[-3000:]
  left = [path for path in output.rglob('*') if path.is_file()]
  assert not [path for path in left if 'partial' in path.name], left
  for path in left:  # Whatever is there is whole.
    with Image.open(path) as image:
      image.load()
