"""Where files are: user paths made absolute once, the benchmark image sets, and the
cache of converted weights and timings.

Paths given by a user (flags, config fields) may be relative to the directory the
command was started from. Orbax and TensorStore need absolute paths, and a path that
is resolved later, after something changed the working directory, means another
file; so every entry point turns local paths into absolute ones where they enter,
with ``absolute``. Remote paths (gs://, s3://, ...) are left as they are.
"""

import contextlib
import os
import pathlib
import secrets
import shutil
from typing import Any, Callable, Iterator

# The evaluation sets (Set5, Set14, BSD100, ...) and the training folders of the
# default config are looked up in this folder; see the README for where to get them.
DATASETS_ENV = 'SRGAN_DATASETS'
DEFAULT_DATASETS = os.path.join('..', 'shared', 'datasets')
# Converted VGG19 and LPIPS weights and the CPU weight-gradient verdicts are kept in
# this folder, else in ~/.cache/srgan_jax.
CACHE_ENV = 'SRGAN_JAX_CACHE'


def is_remote(path: str) -> bool:
  """True for URLs such as gs://bucket/run, which are not local files."""
  return '://' in path


def absolute(path: str | os.PathLike[str]) -> str:
  """``path`` as an absolute local path (``~`` expanded), or unchanged if remote."""
  path = os.fspath(path)
  if not path or is_remote(path):
    return path
  return os.path.abspath(os.path.expanduser(path))


def datasets_dir() -> str:
  """The folder holding the image sets: ``$SRGAN_DATASETS``, else ../shared/datasets."""
  return absolute(os.environ.get(DATASETS_ENV) or DEFAULT_DATASETS)


def cache_dir() -> str:
  """The project's cache folder: ``$SRGAN_JAX_CACHE``, else ``~/.cache/srgan_jax``."""
  return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser('~'), '.cache',
                                                   'srgan_jax')


def dataset(name: str) -> str:
  """The folder of one image set, e.g. ``dataset('Set5')``."""
  return os.path.join(datasets_dir(), name)


def is_set_name(name_or_path: str) -> bool:
  """Whether --data names a set in the datasets folder (``Set5``) rather than a path:
  no path separator, not remote, not '.', '..' or '~...'."""
  separators = {'/', os.sep} | ({os.altsep} if os.altsep else set())
  return not (is_remote(name_or_path) or any(s in name_or_path for s in separators)
              or name_or_path in ('', '.', '..') or name_or_path.startswith('~'))


def image_folder(name_or_path: str) -> str:
  """The folder --data means: a set name (``is_set_name``: ``Set5``) is always
  ``$SRGAN_DATASETS/Set5``; a path (``./Set5``, ``/x/Set5``, ``gs://b/Set5``) is that
  folder.

  Never ./Set5 for ``Set5``: a folder of SR outputs named after the set (``super_resolve
  --output=Set5``, ``evaluate --save_dir=.``) would be scored against itself.
  """
  if is_set_name(name_or_path):
    return dataset(name_or_path)
  return absolute(name_or_path)


# The help of every --data flag (evaluate, compare, export): how image_folder reads it.
DATA_FLAG_HELP = ('a set name without "/" (Set5) is always $SRGAN_DATASETS/Set5, never '
                  './Set5; a path (./Set5, /data/Set5, gs://bucket/Set5) is that folder')


# The config fields that hold user paths, as (section, field); tuples of paths too.
# (srresnet.init_from and srgan.init_from, a pretrained model's name or a workdir, are
# resolved where they are used: training/model_reference.py.)
CONFIG_PATH_FIELDS = (('data', 'folders'), ('data', 'tfds_data_dir'), (None, 'eval_folders'),
                      ('srgan', 'vgg_weights'))


def absolute_config_paths(config: Any) -> None:
  """Makes every local path of a training config absolute, in place.

  Values of the wrong type are left for the config's validation to report.
  """
  absolute_if_text = lambda value: absolute(value) if isinstance(value, str) else value
  for section, field in CONFIG_PATH_FIELDS:
    parent = config if section is None else config.get(section)
    if parent is None or field not in parent:
      continue
    value = parent[field]
    if isinstance(value, (tuple, list)):
      parent[field] = type(value)(absolute_if_text(path) for path in value)
    elif value:
      parent[field] = absolute_if_text(value)


def temporary_path(path: str | os.PathLike[str]) -> pathlib.Path:
  """A hidden name beside ``path`` to write it under before renaming it into place.

  Unique to each call (process id and a random part): processes writing the same
  folder at once would otherwise write, rename and delete each other's files.
  """
  path = pathlib.Path(path)
  return path.with_name(f'.{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial')


def discard(path: str | os.PathLike[str]) -> None:
  """Deletes the temporary file ``path`` if it is there, even if a stop signal (SIGTERM
  raises ``errors.Preempted`` in the main thread, Ctrl-C KeyboardInterrupt) interrupts
  the first try: the second try runs before that exception goes on."""
  path = pathlib.Path(path)
  try:
    path.unlink(missing_ok=True)
  except OSError:
    pass  # Never masks the error that is on its way.
  except BaseException:
    with contextlib.suppress(OSError):
      path.unlink(missing_ok=True)
    raise


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[pathlib.Path]:
  """Where to write ``path`` whole: a `temporary_path` beside it, renamed over
  ``path`` when the block ends, deleted when it raises (a full disk, a stop signal:
  no ``.partial`` file stays). A reader, or a later run after a crash mid-write, sees
  the old file or the new one, never half of one; and a symlink at ``path`` is
  replaced, never written through onto the file it points to."""
  temporary = temporary_path(path)
  try:
    yield temporary
    os.replace(temporary, path)
  finally:
    discard(temporary)  # Gone once renamed.


def write_whole(path: str | os.PathLike[str], content: str | bytes, *,
                sync: bool = False) -> None:
  """Writes ``content`` to ``path`` through `replacing`; ``sync``: on disk (fsync)
  before the rename, for files whose loss after a crash would mislead (the lock).
  A remote ``path`` (gs://...) is one object write, whole by itself."""
  if is_remote(os.fspath(path)):
    from etils import epath  # pylint: disable=g-import-not-at-top  # Remote files only.
    target = epath.Path(path)
    if isinstance(content, bytes):
      target.write_bytes(content)
    else:
      target.write_text(content)
    return
  with replacing(path) as temporary:
    with open(temporary, 'wb' if isinstance(content, bytes) else 'w') as file:
      file.write(content)
      if sync:
        file.flush()
        os.fsync(file.fileno())


def listing(folder: str) -> set[str] | None:
  """The names in local ``folder``, or None when there is no such folder."""
  return set(os.listdir(folder)) if os.path.isdir(folder) else None


@contextlib.contextmanager
def removed_if_failed(folder: str, before: set[str] | None,
                      keep: Callable[[], bool]) -> Iterator[None]:
  """What the block adds to local ``folder`` is removed again when the block raises
  and ``keep()`` is false, and ``folder`` itself if it was not there (``before``, its
  ``listing`` from before, is None): a command that fails at start-up leaves the
  folder as it found it. What ``before`` names is never touched; the caller makes
  sure that nothing else writes ``folder`` meanwhile (training holds its lock)."""
  try:
    yield
  except BaseException:
    if not is_remote(folder) and not keep():
      for name in sorted((listing(folder) or set()) - (before or set())):
        path = os.path.join(folder, name)
        with contextlib.suppress(OSError):
          if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
          else:
            os.unlink(path)
      if before is None:
        with contextlib.suppress(OSError):
          os.rmdir(folder)  # Only if empty: never more than was created.
    raise
