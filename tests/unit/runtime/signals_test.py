"""Stop signals (srgan_jax/runtime/signals.py): one policy for every command."""

import os
import signal
import subprocess
import sys
import textwrap
import time

from conftest import REPO
import pytest

from srgan_jax.runtime import errors
from srgan_jax.runtime import signals

# Installed through PYTHONPATH: the command's `import jax` touches STALLED_AT and waits
# there, so that SIGTERM arrives during the heavy imports, whatever the machine's speed.
SITECUSTOMIZE = textwrap.dedent('''\
    import os, pathlib, sys, time

    class StallJax:
      def find_spec(self, name, path=None, target=None):
        if name == 'jax':
          pathlib.Path(os.environ['STALLED_AT']).touch()
          time.sleep(120)
        return None

    sys.meta_path.insert(0, StallJax())
    ''')


@pytest.fixture
def restored_handlers():
  """The test process's own SIGTERM handler and signals' state, back after the test."""
  previous = signal.getsignal(signal.SIGTERM)
  yield
  signal.signal(signal.SIGTERM, previous)
  signals.command_started(None)


def test_a_running_command_raises_preempted_and_a_watcher_only_notes_it(restored_handlers):
  signals.install()
  signals.command_started('evaluate')
  with pytest.raises(errors.Preempted, match='evaluate stopped by SIGTERM before it finished'):
    os.kill(os.getpid(), signal.SIGTERM)  # Handled before the next line runs.
  with signals.Watcher(process_count=1) as watcher:
    assert not watcher.reached(1, manager=None)  # An earlier signal is forgotten.
    os.kill(os.getpid(), signal.SIGTERM)
    assert signals.received() == 'SIGTERM' and watcher.reached(1, manager=None)


def test_a_watcher_gives_back_the_handler_it_found(restored_handlers):
  """A program that calls the training loop itself gets its own handler back."""
  mine = lambda signum, frame: None
  signal.signal(signal.SIGTERM, mine)
  with signals.Watcher(process_count=1):
    assert signal.getsignal(signal.SIGTERM) is not mine
  assert signal.getsignal(signal.SIGTERM) is mine


def test_several_processes_leave_sigterm_to_jax():
  """JAX's preemption sync service decides when several processes stop together."""

  class Manager:
    def reached_preemption(self, step):
      return step == 3

  previous = signal.getsignal(signal.SIGTERM)
  with signals.Watcher(process_count=2) as watcher:
    assert signal.getsignal(signal.SIGTERM) is previous
    assert [watcher.reached(step, Manager()) for step in (2, 3)] == [False, True]


def test_only_commands_install_the_handler_on_import():
  code = 'import signal, srgan_jax; print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)'
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, check=True, env={**os.environ, 'PYTHONPATH': str(REPO)})
  assert result.stdout.strip() == 'True'


@pytest.mark.parametrize('command, args', [
    ('main', ['--config=configs/quickstart.py', '--workdir=WORK/run']),
    ('evaluate', ['--model=cpu_small', '--data=Set5']),
    ('super_resolve', ['--model=cpu_small', '--input=WORK/none.png', '--output=WORK/sr.png']),
])
def test_sigterm_while_a_command_imports_jax_stops_it_with_75(tmp_path, command, args):
  """Before: killed by SIGTERM (143, no message) while JAX and TensorFlow imported."""
  (tmp_path / 'site').mkdir()
  (tmp_path / 'site' / 'sitecustomize.py').write_text(SITECUSTOMIZE)
  stalled_at = tmp_path / 'stalled'
  process = subprocess.Popen(
      [sys.executable, '-m', f'srgan_jax.{command}',
       *[arg.replace('WORK', str(tmp_path)) for arg in args]],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env={**os.environ, 'PYTHONPATH': f'{tmp_path / "site"}{os.pathsep}{REPO}',
           'STALLED_AT': str(stalled_at), 'JAX_PLATFORMS': 'cpu'})
  try:
    deadline = time.monotonic() + 120  # Only against a hang.
    while not stalled_at.exists():
      assert process.poll() is None, process.communicate()
      assert time.monotonic() < deadline, 'the command never imported jax'
      time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)  # It waits 120 s if SIGTERM kills nothing.
  finally:
    if process.poll() is None:
      process.kill()
  assert process.returncode == errors.EXIT_PREEMPTED, stderr
  assert stderr.strip() == ('preempted: stopped by SIGTERM during start-up, before any work; '
                            'rerun the same command'), stderr
  assert not stdout and not (tmp_path / 'run').exists()
