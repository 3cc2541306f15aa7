"""Stop signals: one policy for every command, from its first line to its last.

SIGTERM is how the outside world stops a command: a preempted Cloud TPU VM or Spot
machine, a job scheduler's time limit, ``docker stop``. SIGHUP (a closed terminal, a
dropped ssh session) is treated exactly as SIGTERM, and Ctrl-C (SIGINT) by the same
policy with its own exit status (130, ``errors.EXIT_INTERRUPTED``, where the others
give 75, ``errors.EXIT_PREEMPTED``; ``exit_status``). Every command handles them
through this module alone:

- while the command starts (imports, flag parsing: ``install`` runs when the package
  is imported as a command, before the heavy imports), it ends the process at once
  with one line: there is nothing to save yet, and an exception raised there can be
  swallowed (Python ignores one raised inside a gc callback, which JAX registers)
  and the command would go on to the end;
- while the command runs, it raises ``errors.Preempted`` in the main thread, which
  ``cli`` turns into one line and the signal's exit status; what was written stays
  (files are written whole, ``paths.replacing``);
- inside ``with Watcher(...)`` (training), it is only noted: the training loop asks
  ``Watcher.reached`` after every step, saves a checkpoint and then stops.
  A flag, not an exception raised from the handler: one raised inside a library
  that catches broadly (logging does) would be lost, or leave a save half done.

A second signal: inside a Watcher it waits for the save (one log line), so that a
second Ctrl-C never breaks a checkpoint being written; elsewhere (a command already
cleaning up after the first, or training stopping after its save) it ends the
process at once with one line.

On several processes JAX's distributed runtime takes SIGTERM over for its preemption
sync service, which makes every process agree on the step at which training stops;
``Watcher.reached`` asks it there, and SIGHUP and SIGINT are passed on to it as
SIGTERM. Commands that do not train call ``install`` again after
``distributed.initialize``, so that SIGTERM stops them too.

Imports only the standard library and ``errors``: it runs before anything heavy.
"""

import os
import signal
import sys
import threading
from typing import Any

from srgan_jax.runtime import errors

# The signals that stop a command. SIGTERM (preemption, a scheduler, ``docker stop``)
# and SIGHUP (a closed terminal, a dropped ssh session: the same loss of the run if
# not saved) exit with 75; SIGINT (Ctrl-C) by the same policy, with its own status.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class _State:
  """What the handler needs: the command's name once it runs, the signal received."""
  command: str | None = None  # None while the command starts (imports, flags).
  received: str | None = None  # 'SIGTERM', 'SIGHUP' or 'SIGINT' once one arrived.
  deferring: int = 0  # > 0 inside a Watcher.
  forward: bool = False  # Inside a Watcher of several processes: JAX's service decides.
  stopping: bool = False  # A stop is under way (raised, or saved by a Watcher).


def _handled() -> tuple[signal.Signals, ...]:
  """STOP_SIGNALS but those the program was started ignoring: ``nohup`` ignores SIGHUP
  (launch/tpu_vm.sh starts training so, to outlive the ssh session), a shell's
  background job SIGINT; they stay ignored."""
  return tuple(stop_signal for stop_signal in STOP_SIGNALS
               if signal.getsignal(stop_signal) is not signal.SIG_IGN)


def install() -> None:
  """Handles STOP_SIGNALS by this module's policy from now on (main thread only)."""
  if threading.current_thread() is not threading.main_thread():
    return  # Signals are only delivered to the main thread; leave them alone.
  for stop_signal in _handled():
    signal.signal(stop_signal, _handle)


def started_as_command() -> bool:
  """Whether this program is ``python -m srgan_jax.<command>`` (the interpreter's own
  arguments, not the module's: a library user's program is left alone)."""
  argv = getattr(sys, 'orig_argv', [])
  if '-m' not in argv[:-1]:
    return False
  return argv[argv.index('-m') + 1].startswith('srgan_jax.')


def command_started(command: str | None) -> None:
  """From now on a stop signal raises ``errors.Preempted`` naming ``command``."""
  _State.command = command
  _State.received, _State.stopping = None, False


def exit_status(name: str | None = None) -> tuple[int, str]:
  """The exit status and the first word of the last line for the stop signal ``name``
  (default: the one received): Ctrl-C 130 'interrupted', the others 75 'preempted'."""
  if (name or _State.received) == 'SIGINT':
    return errors.EXIT_INTERRUPTED, 'interrupted'
  return errors.EXIT_PREEMPTED, 'preempted'


def _describe(name: str) -> str:
  return 'SIGINT (Ctrl-C)' if name == 'SIGINT' else name


def _exit_now(name: str, line: str) -> None:
  """Ends the process at once with one line: an exception raised from the handler can
  be swallowed (by a gc callback, say) and the command would go on."""
  status, prefix = exit_status(name)
  sys.stdout.flush()
  sys.stderr.write(f'{prefix}: {line}\n')
  sys.stderr.flush()
  os._exit(status)  # pylint: disable=protected-access


def _handle(signum: int, frame: Any) -> None:
  del frame
  name = signal.Signals(signum).name
  if _State.received is not None and _State.deferring:
    # A second Ctrl-C while training saves: the save finishes, then training stops.
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.warning('%s received again: stopping once the checkpoint of this step is '
                    'saved.', _describe(name))
    return
  if _State.stopping:  # Already stopping (cleaning up, or saved): stop at once.
    _exit_now(name, f'stopped at once by a second signal ({_describe(name)}); rerun the '
                    'same command')
  _State.received = name
  if _State.forward and signum != signal.SIGTERM:
    os.kill(os.getpid(), signal.SIGTERM)  # To JAX's preemption service: all stop alike.
    return
  if _State.deferring:
    # Imported here: logging is not needed to start, and absl's is the console's.
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.warning('%s received: saving a checkpoint at the end of this step.',
                    _describe(name))
    return
  if _State.command is None:  # Still starting: nothing to save, nothing to clean.
    _exit_now(name, f'stopped by {_describe(name)} during start-up, before any work; rerun '
                    'the same command')
  _State.stopping = True
  raise errors.Preempted(f'{_State.command} stopped by {_describe(name)} before it '
                         'finished; rerun the same command')


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
                        for stop_signal in _handled()}
    _State.deferring += 1
    _State.forward = self._process_count > 1
    # A signal noted by an earlier Watcher of this process.
    _State.received, _State.stopping = None, False
    return self

  def __exit__(self, *exc_info: Any) -> None:
    _State.deferring -= 1
    _State.forward = False
    # Saved and stopping: a later signal ends the process at once, never raised into
    # the interpreter's shutdown (which joins the checkpointer's threads).
    _State.stopping = _State.received is not None
    for stop_signal, previous in self._previous.items():
      signal.signal(stop_signal, previous)

  def reached(self, step: int, manager: Any) -> bool:
    """Whether a stop signal arrived (on any process: decided at ``step`` alike)."""
    if self._process_count > 1:
      return manager.reached_preemption(step)
    return _State.received is not None
