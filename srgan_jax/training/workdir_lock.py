"""One training run per workdir: ``WORKDIR/lock.json`` names the run that holds it.

A second run on a workdir in use refuses to start with a ``WorkdirInUseError`` that
names the host and process holding it; two runs writing one workdir would delete
each other's checkpoints and interleave their TensorBoard files.

What is guaranteed:

- Local workdirs (any POSIX file system with ``flock``, NFS included): exclusive.
  The run holds an ``flock`` on the lock file while it trains; the kernel releases it
  when the process ends in any way (exit, crash, ``kill -9``), so a lock left by a
  dead process is taken over at once and two live runs can never both hold it. The
  file is left in place (deleting it would let a waiting run lock a stale inode).
- Remote workdirs (gs://, ...), which have no atomic create or lock through
  ``etils.epath``: best effort, by heartbeat. The holder rewrites the file (host,
  pid, boot id, a random token, the time) every ``HEARTBEAT_SECONDS``. A file whose
  holder is provably gone is taken over, with one logged line: its heartbeat is
  older than ``STALE_SECONDS`` (three missed beats), or it names this host and a
  process that no longer runs, or this host before its last boot (a Spot TPU VM
  recreated under the same name after a preemption killed the run mid-save). A run writes its token, waits ``SETTLE_SECONDS`` and
  reads the file back: only the last writer of runs started within that window
  keeps it, so two runs starting within about a second of each other can, rarely,
  both start. A run whose heartbeat stops for ``STALE_SECONDS`` (a hung machine)
  can lose its lock to a new run. The file is deleted when the run ends.

Only process 0 of a multi-host run takes the lock (the caller says which).
"""

import contextlib
import errno
import json
import os
import socket
import threading
import time
import uuid
from typing import Any, Iterator

from absl import logging
from etils import epath

from srgan_jax.runtime import errors
from srgan_jax.runtime import paths

LOCK_NAME = 'lock.json'
HEARTBEAT_SECONDS = 60.0
# Three missed beats: a preempted run's lock is taken over by the time a recreated
# VM has installed and started (minutes), while a live run survives two failed writes.
STALE_SECONDS = 3 * HEARTBEAT_SECONDS
SETTLE_SECONDS = 2.0


class WorkdirInUseError(errors.UserError):
  """Another live run holds the workdir."""


def _boot_id() -> str | None:
  """This machine's boot id (Linux), which changes at every boot; None elsewhere."""
  try:
    with open('/proc/sys/kernel/random/boot_id') as file:
      return file.read().strip()
  except OSError:
    return None


class WorkdirGoneError(errors.UserError):
  """The workdir this run locked was deleted or replaced while the run wrote it."""


# The local workdirs this process holds: path -> (st_dev, st_ino) of the folder and of
# the lock file it locked, which ``check_held`` compares with what the path is now.
_held: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}


def _identity(path: str) -> tuple[int, int]:
  status = os.stat(path)
  return status.st_dev, status.st_ino


def check_held(workdir: str, step: int) -> None:
  """Raises WorkdirGoneError when the locked workdir was deleted or replaced.

  The flock belongs to the lock file's inode: after ``rm -rf WORKDIR`` this run
  still holds it on the deleted file, while a new run (or Orbax's next save, which
  creates folders as needed) would make a new WORKDIR that nobody locks. The loop
  calls this at each step, before it writes, so that it stops instead of writing
  into a folder it does not hold. A no-op for workdirs this process does not lock
  (remote ones, other processes of a multi-host run, tests that call the loop).
  """
  held = _held.get(workdir)
  if held is None:
    return
  try:
    now = (_identity(workdir), _identity(os.path.join(workdir, LOCK_NAME)))
  except OSError:
    now = None
  if now != held:
    raise WorkdirGoneError(
        f'workdir {workdir} was deleted or replaced while this run wrote it (its lock is on '
        f'the old folder); stopped at step {step} rather than write into a folder it does '
        'not hold. Find what removed it, then rerun (it resumes from the checkpoints '
        'there, if any)')


def _holder_record(token: str) -> dict[str, Any]:
  return {'host': socket.gethostname(), 'pid': os.getpid(), 'boot_id': _boot_id(),
          'token': token, 'heartbeat': time.time()}


def _describe(holder: dict[str, Any] | None, workdir: str) -> str:
  who = ('another process' if not holder else
         f'process {holder.get("pid")} on host {holder.get("host")}')
  return (f'workdir {workdir} is in use by {who} (lock file {workdir}/{LOCK_NAME}); '
          'wait for it to end or stop it, or choose another --workdir')


def _read(path: Any) -> dict[str, Any] | None:
  """The holder's record, or None when there is none or it cannot be parsed.

  Every write of the heartbeat lock replaces the file whole (``_write``), so a reader
  never sees one half-written; the flock's file, written in place, is only read for
  the refusal's message, where "another process" is enough.
  """
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


def _write(path: Any, record: dict[str, Any]) -> None:
  """Replaces the lock file in one step: a concurrent reader sees the old or the new
  record, never an empty file (which would read as "no holder" and let a second run
  take a live lock). Object stores (gs://) write objects whole already."""
  text = json.dumps(record)
  if paths.is_remote(str(path)):
    path.write_text(text)
    return
  # A unique name per write: two runs taking over at once never share a temp file.
  paths.write_whole(str(path), text, sync=True)


def _process_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Exists, owned by someone else.
    return True
  return True


@contextlib.contextmanager
def _flock(workdir: str) -> Iterator[None]:
  """Holds an exclusive flock on the local lock file."""
  import fcntl  # pylint: disable=g-import-not-at-top  # POSIX only.
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_NAME)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
      if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
        raise
      raise WorkdirInUseError(_describe(_read(epath.Path(path)), workdir)) from None
    # In place: the flock belongs to this inode, which os.replace would swap out.
    # Written, then cut to length, so the file is never empty while held.
    record = json.dumps(_holder_record(uuid.uuid4().hex)).encode()
    os.pwrite(fd, record, 0)
    os.ftruncate(fd, len(record))
    status = os.fstat(fd)
    _held[workdir] = (_identity(workdir), (status.st_dev, status.st_ino))
    yield
  finally:
    _held.pop(workdir, None)
    os.close(fd)  # Releases the flock.


def _why_gone(holder: dict[str, Any] | None, stale_seconds: float) -> str | None:
  """Why the holder of a heartbeat lock is provably gone, or None if it may be alive."""
  if not holder:
    return 'no holder recorded'
  silent = time.time() - float(holder.get('heartbeat', 0))
  if silent > stale_seconds:
    return f'no heartbeat for {silent:.0f} s'
  if holder.get('host') != socket.gethostname():
    return None  # Another machine's processes cannot be asked.
  if holder.get('boot_id') and holder['boot_id'] != _boot_id():
    return 'this host has rebooted since'
  if not _process_alive(int(holder['pid'])):
    return 'that process has ended'
  return None


@contextlib.contextmanager
def _heartbeat_lock(workdir: str, heartbeat_seconds: float = HEARTBEAT_SECONDS,
                    stale_seconds: float = STALE_SECONDS,
                    settle_seconds: float = SETTLE_SECONDS) -> Iterator[None]:
  """A lock file kept fresh by a heartbeat thread (remote workdirs)."""
  path = epath.Path(workdir) / LOCK_NAME
  path.parent.mkdir(parents=True, exist_ok=True)
  holder = _read(path) if path.exists() else None
  if holder:
    gone = _why_gone(holder, stale_seconds)
    if not gone:
      raise WorkdirInUseError(_describe(holder, workdir))
    logging.warning('Taking over the lock of workdir %s from process %s on host %s: %s.',
                    workdir, holder.get('pid'), holder.get('host'), gone)
  token = uuid.uuid4().hex
  _write(path, _holder_record(token))
  time.sleep(settle_seconds)  # Another run that started as well writes in this time.
  holder = _read(path)
  if not holder or holder.get('token') != token:
    raise WorkdirInUseError(_describe(holder, workdir))
  stop = threading.Event()

  def beat():
    while not stop.wait(heartbeat_seconds):
      try:
        _write(path, _holder_record(token))
      except Exception:  # pylint: disable=broad-except  # A blip; the next beat retries.
        pass

  thread = threading.Thread(target=beat, name='workdir-lock-heartbeat', daemon=True)
  thread.start()
  try:
    yield
  finally:
    stop.set()
    thread.join()
    with contextlib.suppress(Exception):
      if (_read(path) or {}).get('token') == token:
        path.unlink()


def hold(workdir: str, enabled: bool = True) -> contextlib.AbstractContextManager[None]:
  """Holds the workdir's lock for the ``with`` block, or does nothing if not enabled.

  Raises:
    WorkdirInUseError: another live run holds it (the message names it).
  """
  if not enabled:
    return contextlib.nullcontext()
  if paths.is_remote(workdir):
    return _heartbeat_lock(workdir)
  return _flock(workdir)
