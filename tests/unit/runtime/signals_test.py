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


def _not_ignored() -> None:
  """Stop signals back to their defaults, in this process or a child before it starts
  (signals that a program starts ignoring stay ignored, by signals' policy)."""
  for stop_signal in signals.STOP_SIGNALS:
    signal.signal(stop_signal, signal.SIG_DFL)


@pytest.fixture
def restored_handlers():
  """The test process's own handlers and signals' state, back after the test."""
  previous = {stop_signal: signal.getsignal(stop_signal) for stop_signal in signals.STOP_SIGNALS}
  _not_ignored()  # Under nohup or as a background job, this process ignores some.
  yield
  for stop_signal, handler in previous.items():
    signal.signal(stop_signal, handler)
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


@pytest.mark.parametrize('stop_signal, status', [
    (signal.SIGHUP, errors.EXIT_PREEMPTED), (signal.SIGINT, errors.EXIT_INTERRUPTED)])
def test_sighup_and_ctrl_c_stop_as_sigterm_does(restored_handlers, stop_signal, status):
  """Before: SIGHUP killed the process (129, nothing saved) and Ctrl-C raised a
  KeyboardInterrupt wherever it fell (a library swallowed it: training went on)."""
  signals.install()
  signals.command_started('evaluate')
  with pytest.raises(errors.Preempted, match='evaluate stopped by SIG'):
    os.kill(os.getpid(), stop_signal)
  assert signals.exit_status() == (status, 'preempted' if status == 75 else 'interrupted')
  signals.command_started('main')
  with signals.Watcher(process_count=1) as watcher:
    os.kill(os.getpid(), stop_signal)  # Noted, not raised: training saves first.
    os.kill(os.getpid(), stop_signal)  # Again (a second Ctrl-C while saving): still noted.
    assert watcher.reached(1, manager=None)
    assert signals.exit_status()[0] == status


def test_signals_ignored_at_start_stay_ignored(restored_handlers):
  """`nohup` (launch/tpu_vm.sh trains so) ignores SIGHUP: the run outlives the session."""
  signal.signal(signal.SIGHUP, signal.SIG_IGN)
  signals.install()
  with signals.Watcher(process_count=1):
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
  assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
  assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL


def test_a_watcher_gives_back_the_handler_it_found(restored_handlers):
  """A program that calls the training loop itself gets its own handler back."""
  mine = lambda signum, frame: None
  signal.signal(signal.SIGTERM, mine)
  with signals.Watcher(process_count=1):
    assert signal.getsignal(signal.SIGTERM) is not mine
  assert signal.getsignal(signal.SIGTERM) is mine


_AFTER_A_SAVE = textwrap.dedent('''\
    import os, signal, sys
    from srgan_jax.runtime import signals
    signals.install()
    signals.command_started('main')
    try:
      with signals.Watcher(process_count=1):
        os.kill(os.getpid(), signal.SIGINT)
        raise RuntimeError('saved; stopping')  # As the loop raises Preempted.
    except RuntimeError:
      os.kill(os.getpid(), signal.SIGINT)  # While the interpreter would shut down.
    print('not reached')
    ''')


def test_a_second_signal_after_the_save_ends_the_process_at_once():
  """Before: Ctrl-C twice around a save printed a threading traceback at shutdown."""
  result = subprocess.run([sys.executable, '-c', _AFTER_A_SAVE], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, 'PYTHONPATH': str(REPO)}, timeout=60,
                          preexec_fn=_not_ignored)
  assert result.returncode == errors.EXIT_INTERRUPTED, result
  assert not result.stdout, result
  assert 'Traceback' not in result.stderr, result
  assert result.stderr.splitlines()[-1] == ('interrupted: stopped at once by a second signal '
                                            '(SIGINT (Ctrl-C)); rerun the same command'), result


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


@pytest.mark.parametrize('command, args, stop_signal', [
    ('main', ['--config=configs/quickstart.py', '--workdir=WORK/run'], signal.SIGTERM),
    ('evaluate', ['--model=cpu_small', '--data=Set5'], signal.SIGTERM),
    ('super_resolve', ['--model=cpu_small', '--input=WORK/none.png', '--output=WORK/sr.png'],
     signal.SIGTERM),
    ('main', ['--config=configs/quickstart.py', '--workdir=WORK/run'], signal.SIGHUP),
    ('main', ['--config=configs/quickstart.py', '--workdir=WORK/run'], signal.SIGINT),
])
def test_a_stop_signal_while_a_command_imports_jax_stops_it_with_one_line(
    tmp_path, command, args, stop_signal):
  """Before: killed by SIGTERM (143, no message) while JAX and TensorFlow imported;
  by SIGHUP (129); Ctrl-C there was swallowed by a gc callback and training went on."""
  (tmp_path / 'site').mkdir()
  (tmp_path / 'site' / 'sitecustomize.py').write_text(SITECUSTOMIZE)
  stalled_at = tmp_path / 'stalled'
  process = subprocess.Popen(
      [sys.executable, '-m', f'srgan_jax.{command}',
       *[arg.replace('WORK', str(tmp_path)) for arg in args]],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      preexec_fn=_not_ignored,
      env={**os.environ, 'PYTHONPATH': f'{tmp_path / "site"}{os.pathsep}{REPO}',
           'STALLED_AT': str(stalled_at), 'JAX_PLATFORMS': 'cpu'})
  try:
    deadline = time.monotonic() + 120  # Only against a hang.
    while not stalled_at.exists():
      assert process.poll() is None, process.communicate()
      assert time.monotonic() < deadline, 'the command never imported jax'
      time.sleep(0.01)
    process.send_signal(stop_signal)
    stdout, stderr = process.communicate(timeout=60)  # It waits 120 s if the signal kills nothing.
  finally:
    if process.poll() is None:
      process.kill()
  name = {signal.SIGTERM: 'SIGTERM', signal.SIGHUP: 'SIGHUP', signal.SIGINT: 'SIGINT (Ctrl-C)'}
  status, prefix = ((errors.EXIT_INTERRUPTED, 'interrupted') if stop_signal == signal.SIGINT
                    else (errors.EXIT_PREEMPTED, 'preempted'))
  assert process.returncode == status, stderr
  assert stderr.strip() == (f'{prefix}: stopped by {name[stop_signal]} during start-up, before '
                            'any work; rerun the same command'), stderr
  assert not stdout and not (tmp_path / 'run').exists()
