"""Checkers of values by name and range, and one-line errors for command-line flags.

A checker returns None for a good value, else what is wrong ("must be ..., got X").
The training config's rules (``training/config_rules.py``) are made of them, and each
command checks its flags with ``check_flags`` before any work, and where its outputs
go with ``output_problem``, so that a result is never computed only to be lost.
"""

import math
import os
from typing import Any, Callable, Sequence

from srgan_jax.runtime import errors
from srgan_jax.runtime import paths

# A checker returns None for a good value, else what is wrong ("must be ..., got X").
Checker = Callable[[Any], str | None]


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def integer(minimum: int | None = None, maximum: int | None = None) -> Checker:
  """An int (not a bool) in [minimum, maximum]."""
  def check(value):
    if not _is_int(value):
      return f'must be an integer, got {value!r}'
    if minimum is not None and value < minimum:
      return f'must be >= {minimum}, got {value}'
    if maximum is not None and value > maximum:
      return f'must be <= {maximum}, got {value}'
    return None
  return check


def number(minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, below: float | None = None,
           optional: bool = False) -> Checker:
  """A finite int or float in [minimum, maximum] and (above, below) (or None when
  optional)."""
  def check(value):
    if value is None and optional:
      return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
      return f'must be a finite number, got {value!r}'
    for bound, fails, word in ((minimum, lambda b: value < b, '>='),
                               (maximum, lambda b: value > b, '<='),
                               (above, lambda b: value <= b, '>'),
                               (below, lambda b: value >= b, '<')):
      if bound is not None and fails(bound):
        return f'must be {word} {bound}, got {value}'
    return None
  return check


def one_of(*allowed: Any) -> Checker:
  """One of the allowed values (listed in the message)."""
  def check(value):
    if isinstance(value, bool) or value not in allowed:
      return f'must be one of {", ".join(map(repr, allowed))}; got {value!r}'
    return None
  return check


def subset_of(*allowed: Any) -> Checker:
  """A tuple or list of allowed values (listed in the message)."""
  def check(value):
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
      return f'must be a tuple of names, e.g. ("niqe",), got {value!r}'
    unknown = [item for item in value if item not in allowed]
    if unknown:
      return f'may hold {", ".join(map(repr, allowed))}; got {unknown[0]!r}'
    return None
  return check


def boolean(value: Any) -> str | None:
  return None if isinstance(value, bool) else f'must be True or False, got {value!r}'


def text(optional: bool = False) -> Checker:
  """A non-empty string (or None when optional)."""
  def check(value):
    if value is None and optional:
      return None
    if not isinstance(value, str) or not value:
      return f'must be a non-empty string{" or unset" if optional else ""}, got {value!r}'
    return None
  return check


def local_path(value: Any) -> str | None:
  """A path on this machine, not a URL (gs://...), for what only local files support."""
  if isinstance(value, str) and paths.is_remote(value):
    return (f'must be a local path, got {value}: this command reads and writes local files '
            'only; copy them to or from the bucket (gcloud storage cp -r)')
  return None


def path_list(non_empty: bool) -> Checker:
  """A tuple or list of non-empty path strings."""
  def check(value):
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
      return f'must be a tuple of paths, e.g. ("a", "b"), got {value!r}'
    if non_empty and not value:
      return 'must name at least one folder'
    bad = [item for item in value if not isinstance(item, str) or not item]
    return f'must hold paths (strings), got {bad[0]!r}' if bad else None
  return check


def check_flags(checks: Sequence[tuple[str, Any, Checker]], *conditions: str | None) -> None:
  """Raises ConfigError for the command-line flags that fail their checker.

  Args:
    checks: (flag name, value, checker) triples; a None value (flag not given) passes.
    *conditions: further problems (strings); anything else (None, False) is none.
  """
  problems = [f'--{name} {problem}' for name, value, rule in checks
              if value is not None and (problem := rule(value))]
  problems += [condition for condition in conditions if isinstance(condition, str) and condition]
  if problems:
    raise errors.ConfigError('; '.join(problems))


def _write_problem(folder: str) -> str | None:
  """Why no file can be created in the existing ``folder`` (strerror), or None.

  Tried rather than asked: os.access says yes to root in a folder of mode 0o555 and
  misses what only a real write meets (an immutable folder, ACLs, network file
  systems), and gives no reason. The probe's name is one no other writer uses.
  """
  probe = paths.temporary_path(os.path.join(folder, 'srgan_jax_write_check'))
  try:
    with open(probe, 'xb'):
      pass
  except OSError as error:
    return error.strerror or type(error).__name__
  finally:
    paths.discard(probe)  # Even when a stop signal lands here.
  return None


def folder_problem(path: str | None, flag: str, hint: str = '',
                   location: str | None = None) -> str | None:
  """What stops reading the folder ``path`` (given by ``--flag``), or None.

  The one check of every folder a command reads (--workdir, --data, ...), before any
  work: missing, or a file. None or '' passes (``text()`` checks those).

  Args:
    path: the folder as the user gave it.
    flag: the flag's name, to quote in the message.
    hint: what follows a missing folder's message (where names are looked up).
    location: where ``path`` is looked up (``paths.image_folder`` of a set name),
      local or remote (gs://, through etils.epath); default ``path``.
  """
  if not path:
    return None
  location = location or path
  if paths.is_remote(location):
    from etils import epath  # pylint: disable=g-import-not-at-top  # Only for gs:// paths.
    return None if epath.Path(location).is_dir() else f'--{flag}: no folder {path}{hint}'
  location = os.path.expanduser(location)
  if os.path.isdir(location):
    return None
  if os.path.lexists(location):
    kind = 'a file' if os.path.isfile(location) else 'not a folder'
    return f'--{flag}={path} is {kind}, not a folder; name a folder'
  return f'--{flag}: no folder {path}{hint}'


def output_problem(path: str | None, *, folder: bool = False, flag: str | None = None,
                   fix: str | None = None, suffix: str | None = None) -> str | None:
  """What stops a command from creating the output ``path``, in one line, or None.

  Checked before any work, since a result computed and then not written is lost:
  the nearest existing ancestor of the folder that will hold the output must be a
  folder, and one this process can create files in. Remote paths (gs://) are not
  checked.

  Args:
    path: the output as the user gave it (relative to the working directory); None
      or '' passes (``text()`` checks those).
    folder: ``path`` is a folder to write into, not a file.
    flag: the flag that named it (``--output``), to quote in the message.
    fix: what to do instead (default: choose another ``flag``, or path).
    suffix: the kind of file written (``'.json'``): an existing file of another kind
      (an image, say) is refused, since writing would replace it.
  """
  if not path or paths.is_remote(path):
    return None
  given = os.path.normpath(os.path.expanduser(path))
  what = f'{flag}={path}' if flag else path
  fix = fix or f'choose another {flag or "path"}'
  if not folder and os.path.isdir(given):
    return f'{what} is a folder, not a file; {fix}'
  if (not folder and suffix and os.path.isfile(given)
      and not given.lower().endswith(suffix.lower())):
    return (f'{what} is an existing file that is not {suffix}, which writing would '
            f'replace; name a {suffix} file')
  target = given if folder else os.path.dirname(given) or os.curdir
  nearest = target
  while not os.path.lexists(nearest):  # The first ancestor that exists; mkdir makes the rest.
    parent = os.path.dirname(nearest) or os.curdir
    if parent == nearest:
      break
    nearest = parent
  if not os.path.isdir(nearest):
    kind = ('a file, not a folder' if os.path.isfile(nearest) else
            'a broken link' if os.path.islink(nearest) else 'not a folder')
    where = what if nearest == given else f'{what}: {nearest}'
    return f'{where} is {kind}; {fix}'
  reason = _write_problem(nearest)
  if reason:
    return f'{what}: cannot create files in {nearest} ({reason}); {fix}'
  return None


def sets_problem(folders: Sequence[str], save_dir: str | None = None) -> str | None:
  """What stops scoring the local ``folders`` as sets of their own, in one line, or None.

  Sets are keyed by folder name (results, ``save_dir/<set>/``): two sets of one name
  would overwrite each other's scores and images; and ``save_dir/<set>`` must not be
  the set's own folder, whose images the SR images would replace.
  """
  from etils import epath  # pylint: disable=g-import-not-at-top  # Names of gs:// paths too.
  names: dict[str, str] = {}
  for folder in folders:
    name = epath.Path(folder).name
    if name in names:
      return (f'--data {names[name]} and {folder} are both sets named {name!r}, whose '
              'results would overwrite each other; name each set once, from folders of '
              'distinct names')
    names[name] = folder
    if (save_dir and not paths.is_remote(save_dir) and not paths.is_remote(folder)
        and os.path.realpath(os.path.join(save_dir, name)) == os.path.realpath(folder)):
      return (f'--save_dir={save_dir} would write the SR images of set {name!r} over its '
              f'own images in {folder}; choose another --save_dir')
  return None
