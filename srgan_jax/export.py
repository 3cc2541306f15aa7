r"""Ships a training run's generator inside the package, loadable by name (``pretrained``).

  python -m srgan_jax.export --workdir=runs/cpu_small --name=cpu_small \
      --command='python -m srgan_jax.main --config=configs/cpu_small.py --workdir=runs/cpu_small'

writes ``srgan_jax/pretrained_models/cpu_small.{msgpack,json}`` from the latest
checkpoint (or --step), with the EMA weights when the run kept them, scored on Set5,
Set14 and BSD100 where $SRGAN_DATASETS has them (or on the --data folders). An
existing name is kept unless --overwrite. Then ``--model=cpu_small`` works in
``srgan_jax.evaluate`` and ``srgan_jax.super_resolve``, and ``pip install .`` ships it.
"""

import datetime
import hashlib
import json
import os
import pathlib
import re
from typing import Any, Sequence

from absl import app
from absl import flags
import flax.serialization
import jax
import numpy as np

from srgan_jax import checkpointing
from srgan_jax import evaluate
from srgan_jax import paths
from srgan_jax import pretrained

_NAME_PATTERN = re.compile(r'[a-z0-9][a-z0-9_.-]*')
# Scored on these benchmark sets when they are present and no folders are given.
DEFAULT_SCORE_SETS = ('Set5', 'Set14', 'BSD100')


def default_score_folders() -> list[str]:
  """The DEFAULT_SCORE_SETS that $SRGAN_DATASETS holds."""
  return [paths.dataset(name) for name in DEFAULT_SCORE_SETS
          if os.path.isdir(paths.dataset(name))]


def _parameter_count(variables: dict[str, Any]) -> int:
  return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(variables['params'])))


def _write_atomically(path: pathlib.Path, content: bytes) -> None:
  temporary = path.with_name(path.name + '.tmp')
  temporary.write_bytes(content)
  os.replace(temporary, path)


def export(workdir: str, name: str, *, step: int | None = None, ema: bool = True,
           command: str | None = None, folders: Sequence[str] | None = None,
           overwrite: bool = False) -> pathlib.Path:
  """Writes ``<name>.msgpack`` and ``<name>.json`` into ``pretrained.directory()``.

  The scores are those of the variables read back from the serialized bytes, so
  they are the shipped file's.

  Args:
    workdir: the training run.
    name: lower-case letters, digits, '_', '-', '.'; not 'bicubic' or 'srgan'.
    step: checkpoint step (default: the latest).
    ema: ship the EMA weights when the run kept them.
    command: the command that trained the run, recorded in the JSON.
    folders: image sets to score it on (default: ``default_score_folders()``).
    overwrite: replace an existing model of that name.

  Returns:
    The path of the JSON record.

  Raises:
    FileExistsError: the name exists and not ``overwrite``.
  """
  if not _NAME_PATTERN.fullmatch(name) or name in pretrained.RESERVED_NAMES:
    raise ValueError(f'invalid model name {name!r}: use lower-case letters, digits, '
                     f'"_", "-", "."; not {", ".join(sorted(pretrained.RESERVED_NAMES))}')
  folder = pretrained.directory()
  weights_path, record_path = folder / f'{name}.msgpack', folder / f'{name}.json'
  existing = [str(path) for path in (weights_path, record_path) if path.exists()]
  if existing and not overwrite:
    raise FileExistsError(f'model {name!r} exists ({", ".join(existing)}); pass '
                          '--overwrite to replace it')
  step = checkpointing.latest_step(workdir) if step is None else step
  model, variables, config = checkpointing.load_generator(workdir, step, ema)
  data = flax.serialization.msgpack_serialize(jax.device_get(variables))
  shipped = flax.serialization.msgpack_restore(data)
  folders = default_score_folders() if folders is None else list(folders)
  scores = evaluate.evaluate_model(model, shipped, config, folders) if folders else {}
  record = {
      'name': name,
      'scale': config.scale,
      'parameters': _parameter_count(shipped),
      'command': command,
      'source': {'workdir': workdir, 'step': step, 'ema': ema},
      'scores': scores,
      'scored_with': f'python -m srgan_jax.evaluate --model={name} --data=FOLDER ...',
      'exported': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'msgpack_sha256': hashlib.sha256(data).hexdigest(),
      'config': json.loads(config.to_json_best_effort()),
  }
  folder.mkdir(parents=True, exist_ok=True)
  # Weights first: pretrained.names() lists a model only once its record exists.
  _write_atomically(weights_path, data)
  _write_atomically(record_path, (json.dumps(record, indent=2) + '\n').encode())
  return record_path


def _define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'The training workdir.')
  flags.DEFINE_string('name', None, 'The model name, e.g. cpu_small.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.DEFINE_bool('ema', True, 'Ship the EMA weights when the run kept them.')
  flags.DEFINE_string('command', None, 'The command that trained the run (recorded).')
  flags.DEFINE_multi_string('data', None, 'Image sets to score it on (default: '
                            f'{", ".join(DEFAULT_SCORE_SETS)} where present).')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing model of that name.')
  flags.mark_flags_as_required(['workdir', 'name'])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  options = flags.FLAGS
  folders = [paths.absolute(folder) for folder in options.data] if options.data else None
  try:
    record = export(paths.absolute(options.workdir), options.name, step=options.step,
                    ema=options.ema, command=options.command, folders=folders,
                    overwrite=options.overwrite)
  except (ValueError, FileExistsError) as error:
    raise app.UsageError(str(error)) from error
  print(f'Wrote {record} and {record.with_suffix(".msgpack")}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
