"""Stop signals: one policy for every command, from its first line to its last.

SIGTERM is how the outside world stops a command: a preempted Cloud TPU VM or Spot
machine, a job scheduler's time limit, ``docker stop``. Every command handles it the
same way, through this module alone:

- while the command starts (imports, flag parsing: ``install`` runs when
  ``runtime/cli`` is imported by a command, before the heavy imports), it stops at
  once with one line and exit status 75 (``errors.EXIT_PREEMPTED``): there is
  nothing to save yet;
- while the command runs, it raises ``errors.Preempted`` in the main thread, which
  ``cli`` turns into one line and exit status 75; what was written stays (files are
  written whole, ``paths.replacing``);
- inside ``with Watcher(...)`` (training), it is only noted: the training loop asks
  ``Watcher.reached`` after every step, saves a checkpoint and then stops with 75.
  A flag, not an exception raised from the handler: one raised inside a library
  that catches broadly (logging does) would be lost, or leave a save half done.

On several processes JAX's distributed runtime takes SIGTERM over for its preemption
sync service, which makes every process agree on the step at which training stops;
``Watcher.reached`` asks it there. Commands that do not train call ``install``
again after ``distributed.initialize``, so that SIGTERM stops them too.

Imports only the standard library and ``errors``: it runs before anything heavy.
"""

import signal
import sys
import threading
from typing import Any

from srgan_jax.runtime import errors

# The signals that stop a command as preemption does.
STOP_SIGNALS = (signal.SIGTERM,)


class _State:
  """What the handler needs: the command's name once it runs, the signal received."""
  command: str | None = None  # None while the command starts (imports, flags).
  received: str | None = None  # 'SIGTERM' once one arrived.
  deferring: int = 0  # > 0 inside a Watcher.


def install() -> None:
  """Handles STOP_SIGNALS by this module's policy from now on (main thread only)."""
  if threading.current_thread() is not threading.main_thread():
    return  # Signals are only delivered to the main thread; leave them alone.
  for stop_signal in STOP_SIGNALS:
    signal.signal(stop_signal, _handle)


def started_as_command() -> bool:
  """Whether this program is ``python -m srgan_jax.<command>`` (the interpreter's own
  arguments, not the module's: a library user's program is left alone)."""
  argv = getattr(sys, 'orig_argv', [])
  if '-m' not in argv[:-1]:
    return False
  return argv[argv.index('-m') + 1].startswith('srgan_jax.')


def command_started(command: str) -> None:
  """From now on a stop signal raises ``errors.Preempted`` naming ``command``."""
  _State.command = command


def _handle(signum: int, frame: Any) -> None:
  del frame
  name = signal.Signals(signum).name
  _State.received = name
  if _State.deferring:
    # Imported here: logging is not needed to start, and absl's is the console's.
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.warning('%s received: saving a checkpoint at the end of this step.', name)
    return
  if _State.command is None:  # Still starting: nothing to save, nothing to clean.
    sys.stdout.flush()
    sys.stderr.write(f'preempted: stopped by {name} during start-up, before any work; '
                     'rerun the same command\n')
    sys.stderr.flush()
    raise SystemExit(errors.EXIT_PREEMPTED)
  raise errors.Preempted(f'{_State.command} stopped by {name} before it finished; rerun '
                         'the same command')


def received() -> str | None:
  """The name of the stop signal received so far ('SIGTERM'), or None."""
  return _State.received


class Watcher:
  """Within ``with Watcher(...)``, a stop signal is only noted, for training to save a
  checkpoint first; ``reached`` says after each step whether to save and stop.

  One process: this module's handler notes the signal (installed on entry if another
  was in place, the previous one restored on exit: a program that calls the training
  loop itself gets its own handler back). Several: JAX's preemption sync service,
  through the checkpoint manager, so that every process stops at the same step; its
  handler is left in place.
  """

  def __init__(self, process_count: int = 1):
    self._process_count = process_count
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> 'Watcher':
    if self._process_count == 1 and threading.current_thread() is threading.main_thread():
      self._previous = {stop_signal: signal.signal(stop_signal, _handle)
                        for stop_signal in STOP_SIGNALS}
    _State.deferring += 1
    _State.received = None  # A signal noted by an earlier Watcher of this process.
    return self

  def __exit__(self, *exc_info: Any) -> None:
    _State.deferring -= 1
    for stop_signal, previous in self._previous.items():
      signal.signal(stop_signal, previous)

  def reached(self, step: int, manager: Any) -> bool:
    """Whether a stop signal arrived (on any process: decided at ``step`` alike)."""
    if self._process_count > 1:
      return manager.reached_preemption(step)
    return _State.received is not None
