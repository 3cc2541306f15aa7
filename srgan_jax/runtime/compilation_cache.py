"""JAX's persistent compilation cache, on for every command (``cli.run`` calls
`configure`): a program compiled once is read back from disk by the next process
that needs it, so a second ``evaluate`` or ``super_resolve`` starts in seconds.

Where, first that applies:

1. ``--compilation_cache=DIR`` (every command has the flag); ``--compilation_cache=off``
   turns the cache off;
2. ``$SRGAN_JAX_COMPILATION_CACHE`` (a folder, or ``off``);
3. JAX's own ``$JAX_COMPILATION_CACHE_DIR`` (JAX reads it at import; left as it is);
4. ``xla/`` under the project's cache folder (``paths.cache_dir()``).

JAX's thresholds are lowered so that CPU programs are cached too (JAX's default keeps
only programs that took a second to compile; most of a CPU evaluation's programs take
less): ``$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` and
``$JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES``, when set, win.

Several processes share the folder safely, by JAX's own code (read in jax 0.10.2,
``jax/_src/lru_cache.py`` and ``compiler.py``): an entry is written in place
(``Path.write_bytes``, no rename), but once the cache has a size bound, every read
and write holds a file lock on ``DIR/.lockfile`` (``filelock.FileLock``), so no
process reads an entry another is still writing; the least recently used entries go
beyond the bound (``MAX_BYTES``, or ``$JAX_COMPILATION_CACHE_MAX_SIZE``). Without the
``filelock`` package, or in a folder named by ``$JAX_COMPILATION_CACHE_DIR`` (which
other JAX programs may write without a bound), there is no bound and no lock. An entry that cannot be read
back (cut short by a killed process, corrupt) fails zlib's checksum: JAX warns and
compiles the program again (tests/system/compilation_cache_test.py). JAX does not
replace such an entry; deleting the folder clears it. An entry without its access-time
file (killed between the two writes) would stop every later write under the bound:
`configure` gives it one first (`repair_access_times`). Only process 0 of a multi-host
run writes entries (JAX's rule); the others read them.

The cache is trusted code: whoever can write the folder can make the commands run
what they wrote, so it lives under the user's own cache folder.
"""

import glob
import os
import sys

from srgan_jax.runtime import errors
from srgan_jax.runtime import paths

ENV = 'SRGAN_JAX_COMPILATION_CACHE'
JAX_DIR_ENV = 'JAX_COMPILATION_CACHE_DIR'
OFF = 'off'
SUBFOLDER = 'xla'
# A bound, so that JAX locks reads and writes (see above); what the commands and a
# training run compile takes tens of MB (notes/PERFORMANCE.md).
MAX_BYTES = 2 * 1024**3
# CPU programs: most of an evaluation's compile in well under JAX's default of 1 s.
# Every program is cached; reading an entry back costs less than compiling it.
MIN_COMPILE_SECONDS = 0.0
# JAX's file names in the folder (jax/_src/lru_cache.py): an entry, the time it was
# last used (8 bytes, nanoseconds, little-endian), and the lock.
_ENTRY_SUFFIX = '-cache'
_ACCESS_SUFFIX = '-atime'
_LOCK_NAME = '.lockfile'
_LOCK_SECONDS = 10.0
# JAX's options, and the environment variables that JAX reads at import for them
# (a user's setting of these wins over ours).
_OPTIONS = {
    'jax_persistent_cache_min_compile_time_secs': MIN_COMPILE_SECONDS,
    'jax_persistent_cache_min_entry_size_bytes': -1,  # No size limit, no override.
    'jax_compilation_cache_max_size': MAX_BYTES,
}


def directory(flag_value: str | None = None) -> str | None:
  """The cache folder (absolute), or None when turned off; see the module docstring.

  Raises:
    errors.ConfigError: the flag or variable names a remote folder.
  """
  for value, origin in ((flag_value, '--compilation_cache'), (os.environ.get(ENV), f'${ENV}')):
    if value:
      if value.lower() == OFF:
        return None
      if paths.is_remote(value):
        raise errors.ConfigError(f'{origin}={value}: the compilation cache must be a local '
                                 f'folder (or {OFF})')
      return paths.absolute(value)
  return paths.absolute(os.environ.get(JAX_DIR_ENV) or
                        os.path.join(paths.cache_dir(), SUBFOLDER))


def _has_filelock() -> bool:
  """Whether JAX can lock the cache (it needs the filelock package for a bound)."""
  try:
    import filelock  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


def settings(folder: str | None, own: bool = True) -> dict[str, object]:
  """JAX's options for ``folder`` (None: the cache off), without those the user's
  environment sets (JAX reads ``JAX_<OPTION>`` at import).

  ``own``: the folder is this project's (not ``$JAX_COMPILATION_CACHE_DIR``), so the
  size bound may be set: JAX's eviction reads an ``-atime`` file beside every entry,
  which entries written without a bound (other JAX programs) lack.
  """
  if folder is None:
    return {'jax_enable_compilation_cache': False}
  chosen = {'jax_enable_compilation_cache': True, 'jax_compilation_cache_dir': folder,
            **_OPTIONS}
  if not own or not _has_filelock():
    del chosen['jax_compilation_cache_max_size']
  user_set = {name for name in chosen
              if name != 'jax_compilation_cache_dir' and name.upper() in os.environ}
  return {name: value for name, value in chosen.items() if name not in user_set}


def repair_access_times(folder: str) -> int:
  """Gives every entry of ``folder`` that lacks one an access-time file (its
  modification time), and returns how many it wrote.

  With a size bound, each write first reads every entry's access time to choose what
  to evict; one entry without it (its process killed between the two writes, or
  written by a process without the bound) made every later write fail with a
  FileNotFoundError warning, and the cache stopped growing. Under JAX's lock, so that
  a process writing an entry at the same time is not caught between its two files.
  """
  entries = glob.glob(os.path.join(glob.escape(folder), '*' + _ENTRY_SUFFIX))
  missing = [entry for entry in entries
             if not os.path.exists(entry[:-len(_ENTRY_SUFFIX)] + _ACCESS_SUFFIX)]
  if not missing:
    return 0
  import filelock  # pylint: disable=g-import-not-at-top
  written = 0
  try:
    with filelock.FileLock(os.path.join(folder, _LOCK_NAME), timeout=_LOCK_SECONDS):
      for entry in missing:
        access = entry[:-len(_ENTRY_SUFFIX)] + _ACCESS_SUFFIX
        try:
          if os.path.exists(access):  # Written meanwhile by the entry's own process.
            continue
          used = os.stat(entry).st_mtime_ns
          with open(access, 'wb') as file:
            file.write(used.to_bytes(8, 'little'))
          written += 1
        except FileNotFoundError:  # Evicted meanwhile.
          continue
  except (filelock.Timeout, OSError):  # Busy or read-only: JAX's warnings stay.
    pass
  return written


def configure(flag_value: str | None = None) -> str | None:
  """Turns the cache on (or off) for this process before it compiles anything, and
  returns the folder (None: off).

  JAX is not imported for it (``--help`` and bicubic commands never import JAX):
  when it already is, its options are set; otherwise they go into the environment,
  which JAX reads when it is imported (and which the processes this one starts
  inherit).
  """
  folder = directory(flag_value)
  users_jax_folder = os.environ.get(JAX_DIR_ENV)
  own = not users_jax_folder or folder != paths.absolute(users_jax_folder)
  options = settings(folder, own=own)
  if folder is not None and own and _has_filelock():
    repair_access_times(folder)
  if 'jax' in sys.modules:
    import jax  # pylint: disable=g-import-not-at-top
    for name, value in options.items():
      jax.config.update(name, value)
  else:
    for name, value in options.items():
      os.environ[name.upper()] = str(value)
  return folder
