"""Exporting a training run's generator as a pretrained model inside the package,
loadable by name (``nn/pretrained``).

The command is ``python -m srgan_jax.export`` (``srgan_jax/export.py``).
"""

import datetime
import hashlib
import json
import os
import pathlib
import re
from typing import Any, Sequence

import flax.serialization
import jax
import numpy as np

from srgan_jax.evaluation import scoring
from srgan_jax.nn import pretrained
from srgan_jax.nn import upscalers
from srgan_jax.runtime import paths
from srgan_jax.training import checkpointing

_NAME_PATTERN = re.compile(r'[a-z0-9][a-z0-9_.-]*')
# Scored on these benchmark sets when they are present and no folders are given.
DEFAULT_SCORE_SETS = ('Set5', 'Set14', 'BSD100')


def default_score_folders() -> list[str]:
  """The DEFAULT_SCORE_SETS that $SRGAN_DATASETS holds."""
  return [paths.dataset(name) for name in DEFAULT_SCORE_SETS
          if os.path.isdir(paths.dataset(name))]


def _parameter_count(variables: dict[str, Any]) -> int:
  return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(variables['params'])))


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
  # A model exists once its record does (written last): weights alone are what an
  # interrupted export left, replaced without --overwrite.
  if record_path.exists() and not overwrite:
    raise FileExistsError(f'model {name!r} exists ({record_path}); pass --overwrite to '
                          'replace it')
  # The step read is recorded (the latest, unless given).
  model, variables, config, step = checkpointing.read_generator(workdir, step, ema)
  data = flax.serialization.msgpack_serialize(jax.device_get(variables))
  shipped_variables = flax.serialization.msgpack_restore(data)
  folders = default_score_folders() if folders is None else list(folders)
  scores = (scoring.evaluate_beside_bicubic(upscalers.generator(model, shipped_variables),
                                            folders) if folders else {})
  record = {
      'name': name,
      'scale': config.scale,
      'parameters': _parameter_count(shipped_variables),
      'command': command,
      'source': {'workdir': workdir, 'step': step, 'ema': ema},
      'scores': scores,
      'scored_with': f'python -m srgan_jax.evaluate --model={name} --data=FOLDER ...',
      'exported': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'msgpack_sha256': hashlib.sha256(data).hexdigest(),
      'config': json.loads(config.to_json_best_effort()),
  }
  folder.mkdir(parents=True, exist_ok=True)
  # A reader never sees half a pair, and a full disk loses nothing: both files are
  # written to temporaries first (paths.replacing); then the old record goes (the model
  # is absent a moment, never old record beside new weights), the weights are renamed
  # into place, and the record naming their SHA-256 last (the inner block ends
  # first). pretrained.names() lists a model only once its record exists.
  with paths.replacing(record_path) as record_temporary, \
      paths.replacing(weights_path) as weights_temporary:
    weights_temporary.write_bytes(data)
    record_temporary.write_text(json.dumps(record, indent=2) + '\n')
    record_path.unlink(missing_ok=True)
  return record_path
