"""The errors a user can fix, and what each command's exit status means.

An exception of type ``UserError`` (or a subclass) is a mistake the user can fix: a
bad flag or config field, a missing file, an incompatible checkpoint, missing VGG19
weights. Its message names the thing and the fix, in one line. Commands (see
``cli.run``) print it as one line on stderr and exit with ``EXIT_USER_ERROR``; any
other exception is a bug and keeps its traceback.

This module imports nothing, so that every module can raise these errors.
"""

# Exit statuses of every command (python -m srgan_jax.main, .evaluate, ...).
EXIT_OK = 0  # Finished.
EXIT_FAILED = 1  # A bug (with a traceback), or some of the images could not be processed.
EXIT_USER_ERROR = 2  # Something to fix first (a UserError); one line on stderr says what.
# Stopped by SIGTERM or SIGHUP: training after saving a checkpoint (rerun the same command to
# resume); evaluate and super_resolve before finishing (rerun them). 75 is EX_TEMPFAIL
# of sysexits.h, "try again later".
EXIT_PREEMPTED = 75
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it; training saves first.


class UserError(Exception):
  """A mistake the user can fix; the message names the thing and the fix."""


class ConfigError(UserError, ValueError):
  """A config field or command-line flag with a wrong type, range or name."""


class Preempted(Exception):
  """Training stopped on SIGTERM after saving a checkpoint; rerunning resumes it.

  Attributes:
    states: what training had when it stopped (the states it saved), or None.
  """

  def __init__(self, message: str, states: object = None):
    super().__init__(message)
    self.states = states
