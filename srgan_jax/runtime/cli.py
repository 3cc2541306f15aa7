"""The one prelude of every command: flags, arguments, start-up, stop signals, errors.

Each command (``python -m srgan_jax.<command>``: main, evaluate, super_resolve,
compare, export, pretrained, plot, vgg19, lpips, benchmark, device_data) ends with

    def run() -> None:
      cli.run(main, name='evaluate', define_flags=_define_flags, ...)

    if __name__ == '__main__':
      run()

and ``run`` does, in this order, what each would otherwise repeat:

- stop signals (``signals``) are handled from the command's first line: the package
  installs the handler when it is imported as a command (``srgan_jax/__init__``),
  before the heavy imports; ``run`` installs it again where JAX's distributed
  runtime took SIGTERM over (commands that do not train);
- the flags are defined (``define_flags``) and parsed (``rewrite_arg`` first);
- the positional arguments are checked (none, or exactly one ``subcommand``);
- JAX's persistent compilation cache is turned on (``compilation_cache``; every
  command has ``--compilation_cache=DIR|off``), before anything compiles;
- JAX's distributed runtime starts when the command runs JAX (``starts_jax``), before
  any other JAX call (multi-host: ``distributed.initialize``);
- a bad flag, a ``UserError`` (``errors``) or an ``app.UsageError`` ends the program
  with ONE line on stderr, ``error: <what is wrong and how to fix it>``, and exit
  status 2 (``errors.EXIT_USER_ERROR``); other exceptions are bugs and keep their
  traceback. ``--verbosity=1`` (or ``SRGAN_JAX_DEBUG=1``) shows the full traceback
  of user errors too, and the logs of other libraries;
- ``errors.Preempted`` (a stop signal, ``signals``) exits with 75 (SIGTERM, SIGHUP;
  training saved: rerun to resume) or 130 (Ctrl-C); main's return value is the exit status;
- INFO lines of other libraries (Orbax, JAX) are hidden, and their warnings and
  errors are one line each, without traceback: the console shows this package's own
  lines (steps, steps/s, ETA, losses, evaluations, where files went, through clu's
  writers). (TensorFlow 2.21 prints two C++ start-up lines before any setting can
  hide them.)
"""

import functools
import logging as std_logging
import os
import sys
from typing import Any, Callable, NoReturn

# Before anything imports TensorFlow: its C++ start-up lines (oneDNN, CUDA probing).
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging  # pylint: disable=g-import-not-at-top,wrong-import-position

from srgan_jax.runtime import compilation_cache  # pylint: disable=g-import-not-at-top,wrong-import-position
from srgan_jax.runtime import errors  # pylint: disable=g-import-not-at-top,wrong-import-position
from srgan_jax.runtime import signals  # pylint: disable=g-import-not-at-top,wrong-import-position

DEBUG_ENV = 'SRGAN_JAX_DEBUG'
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # srgan_jax/
# Whose INFO lines the console shows: this package, and clu's progress and metric lines.
_OWN_LOG_SOURCES = (_PACKAGE_DIR + os.sep, f'{os.sep}clu{os.sep}')


def verbose(argv: list[str] | None = None) -> bool:
  """--verbosity >= 1 or $SRGAN_JAX_DEBUG: full tracebacks and every library's logs.

  ``argv``: look for --verbosity there (flags that failed to parse), not in FLAGS.
  """
  if os.environ.get(DEBUG_ENV, '') not in ('', '0'):
    return True
  if argv is not None:
    return any(arg.startswith(('--verbosity=', '-v=')) and arg.split('=')[1] not in ('0', '-1')
               for arg in argv)
  return flags.FLAGS['verbosity'].value >= 1


class _OwnLinesOnly(std_logging.Filter):
  """Keeps this package's and clu's lines, and one line per warning or error of others.

  Other libraries' tracebacks (Orbax logs one per background thread when a save
  fails) are dropped: the error that stops the program says what failed.
  """

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.pathname.startswith(_OWN_LOG_SOURCES[0]) or _OWN_LOG_SOURCES[1] in record.pathname:
      return True
    if record.levelno < std_logging.WARNING:
      return False
    record.exc_info, record.exc_text, record.stack_info = None, None, None
    return True


def quiet_other_libraries() -> None:
  """Hides other libraries' INFO lines (all absl and Python logging goes through root)."""
  root = std_logging.getLogger()
  handlers = root.handlers or [logging.get_absl_handler()]
  for handler in handlers:
    if not any(isinstance(f, _OwnLinesOnly) for f in handler.filters):
      handler.addFilter(_OwnLinesOnly())


def fail(message: str, code: int = errors.EXIT_USER_ERROR, prefix: str = 'error') -> NoReturn:
  """Ends the program with one line on stderr, ``prefix: message``."""
  sys.stdout.flush()
  line = ' '.join(str(message).split())  # One line, whatever the message held.
  sys.stderr.write(f'{prefix}: {line}\n')
  sys.stderr.flush()
  sys.exit(code)


def _message(error: BaseException) -> str:
  """The text of an error, unwrapped from the exceptions that carry it as an argument
  (ml_collections raises AttributeError(KeyError('...Did you mean ...?')))."""
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  if isinstance(error, (KeyError, AttributeError)) and error.args:
    return str(error.args[0])
  return str(error) or type(error).__name__


def _without_traceback(message: str) -> str:
  """A message that embeds a traceback (ml_collections does, for a config file that
  raises) cut to its first line and the exception line the traceback ends with."""
  marker = 'Traceback (most recent call last):'
  if marker not in message:
    return message
  before, _, trace = message.partition(marker)
  lines = [line.strip() for line in trace.splitlines() if line.strip()]
  return f'{before.strip()} {lines[-1] if lines else ""}'


def _check_config_files() -> None:
  """Raises the error of a config file that ml_collections could not load (it keeps
  an object that raises it only when used)."""
  for name in flags.FLAGS:
    value = flags.FLAGS[name].value
    if type(value).__name__ == '_ErrorConfig':
      value._ReportError()  # pylint: disable=protected-access


def _parse_flags(argv: list[str], rewrite_arg: Callable[[str], str] | None = None
                 ) -> list[str]:
  """Parses the flags (each first through ``rewrite_arg``, if given); a bad flag, or a
  config file that cannot be loaded or overridden (ml_collections raises many types),
  is one line, unless verbose."""
  try:
    remaining = flags.FLAGS([rewrite_arg(arg) for arg in argv] if rewrite_arg else argv)
    _check_config_files()
    return remaining
  except Exception as error:  # pylint: disable=broad-except
    if verbose(argv):
      raise
    if isinstance(error, flags.Error):
      fail(f'{_without_traceback(str(error))} (see --help)')
    fail(f'bad flags: {_message(error)} (see --help)')


def _check_arguments(argv: list[str], subcommand: str | None, usage: str | None) -> None:
  """Raises UsageError unless the positional arguments are none (or ``subcommand``)."""
  expected = [subcommand] if subcommand else []
  if list(argv[1:]) != expected:
    raise app.UsageError(usage or f'unexpected arguments: {argv[1:]}')


def _call(main: Callable[[], Any], argv: list[str], *, name: str, subcommand: str | None,
          usage: str | None, starts_jax: Callable[[], bool],
          trains: Callable[[], bool]) -> Any:
  """The command's main, once the flags are parsed, inside the one-line error policy."""
  if not verbose():
    quiet_other_libraries()
  signals.command_started(name)
  try:
    _check_arguments(argv, subcommand, usage)
    compilation_cache.configure(flags.FLAGS.compilation_cache)
    if starts_jax():
      # Imported here: JAX takes seconds to import, which --help and bicubic skip.
      from srgan_jax.runtime import distributed  # pylint: disable=g-import-not-at-top
      distributed.initialize()  # Before any other JAX call.
      if not trains():  # JAX's runtime took SIGTERM for its preemption service,
        signals.install()  # which only training consults (signals.Watcher).
    return main()
  except (errors.UserError, app.UsageError) as error:
    if verbose():
      raise
    fail(_message(error))
  except errors.Preempted as preempted:
    status, prefix = signals.exit_status()
    fail(str(preempted), status, prefix=prefix)
  except KeyboardInterrupt:
    if verbose():
      raise
    fail('interrupted (Ctrl-C)', errors.EXIT_INTERRUPTED)


def _define_common_flags() -> None:
  """The flags of every command (once per process: tests call ``run`` again)."""
  if 'compilation_cache' not in flags.FLAGS:
    flags.DEFINE_string(
        'compilation_cache', None,
        f'Folder of JAX\'s persistent compilation cache, or "{compilation_cache.OFF}" '
        f'(default: ${compilation_cache.ENV}, else $JAX_COMPILATION_CACHE_DIR, else '
        f'{compilation_cache.SUBFOLDER}/ under the cache folder, ~/.cache/srgan_jax).')


def run(main: Callable[[], Any], *, name: str,
        define_flags: Callable[[], None] | None = None,
        subcommand: str | None = None, usage: str | None = None,
        starts_jax: Callable[[], bool] = lambda: False,
        trains: Callable[[], bool] = lambda: False,
        rewrite_arg: Callable[[str], str] | None = None) -> None:
  """Runs a command's ``main()`` through the prelude above; its return value is the
  exit status.

  Args:
    main: the command, called with no arguments once the flags are parsed.
    name: the command's name, for messages ('evaluate').
    define_flags: defines the command's flags (absl), called before parsing.
    subcommand: the one positional argument the command takes ('import'), if any.
    usage: the one-line usage shown for wrong positional arguments.
    starts_jax: whether this invocation runs JAX (read from the parsed flags): JAX's
      distributed runtime then starts first.
    trains: whether this invocation trains (read from the parsed flags): SIGTERM is
      then left to JAX's preemption service on several processes, and noted by a
      ``signals.Watcher`` on one.
    rewrite_arg: maps each command-line argument before absl parses it (main uses
      it to let ``--config`` name a shipped config).
  """
  signals.install()  # Already in place when started as a command; for other callers.
  _define_common_flags()
  if define_flags is not None:
    define_flags()
  app.run(lambda argv: _call(main, argv, name=name, subcommand=subcommand, usage=usage,
                             starts_jax=starts_jax, trains=trains),
          flags_parser=functools.partial(_parse_flags, rewrite_arg=rewrite_arg))
