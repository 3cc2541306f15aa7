r"""Pretrained generators shipped inside the package, by name: where they are, what
they are.

A pretrained model is two files in ``srgan_jax/pretrained_models/``:

- ``<name>.msgpack``: the generator's variables for ``apply`` (``params``, the EMA
  weights when the run kept them, and ``batch_stats``), by ``flax.serialization``;
- ``<name>.json``: the training run's whole config, the command that trained it,
  its scores measured on export (bicubic beside them), the source workdir and
  checkpoint step, and the SHA-256 of the msgpack file.

``python -m srgan_jax.export`` writes them from a training workdir
(``inference/pretrained_export.py``); ``python -m srgan_jax.pretrained`` lists them;
``--model=NAME`` in the commands and the ``init_from=NAME`` fields name one, through
``training/model_reference.py``, the one place that tells a name from a workdir.
$SRGAN_PRETRAINED_DIR points all of this at another folder (tests use that).

Imports only the standard library (and ``errors``) at the top: listing names for a command's --help
must not start JAX.
"""

import hashlib
import json
import os
import pathlib
from typing import Any

from srgan_jax.runtime import errors

DIRECTORY_ENV = 'SRGAN_PRETRAINED_DIR'
# Names that the commands' --model flag already gives another meaning.
RESERVED_NAMES = frozenset({'bicubic', 'srgan'})


class UnknownModelError(errors.UserError, ValueError):
  """A --model that names no generator: not shipped, or srgan without a workdir."""


class DamagedModelError(errors.UserError, ValueError):
  """A shipped model's files that do not read as one: a card that is not JSON or
  lacks a field, weights that are not the ones it describes or do not fit its config."""


# The fields of a model card that loading and listing read, with their JSON types.
CARD_FIELDS = {'scale': int, 'config': dict, 'msgpack_sha256': str, 'scores': dict}
_FIX = 'restore the model\'s two files (reinstall the package, or export it again)'


def directory() -> pathlib.Path:
  """Where shipped models are: $SRGAN_PRETRAINED_DIR, else the package's folder."""
  override = os.environ.get(DIRECTORY_ENV)
  if override:
    return pathlib.Path(override).expanduser().resolve()
  return pathlib.Path(__file__).resolve().parent.parent / 'pretrained_models'


def names() -> list[str]:
  """The shipped models' names, sorted: those with both a .msgpack and a .json file."""
  folder = directory()
  if not folder.is_dir():
    return []
  return sorted(path.stem for path in folder.glob('*.json')
                if path.with_suffix('.msgpack').is_file())


def describe(name: str) -> dict[str, Any]:
  """The JSON record of a shipped model (config, command, scores, source)."""
  available = names()
  if name not in available:
    raise UnknownModelError(
        f'unknown model {name!r}; shipped models: {", ".join(available) or "none"} (in '
        f'{directory()}); built-in: {", ".join(sorted(RESERVED_NAMES))}')
  path = directory() / f'{name}.json'
  try:
    record = json.loads(path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as error:
    raise DamagedModelError(f'model card {path} is not valid JSON ({error}): {_FIX}') from None
  if not isinstance(record, dict):
    raise DamagedModelError(f'model card {path} holds a {type(record).__name__}, not an '
                            f'object: {_FIX}')
  wrong = [f'{field} ({"missing" if field not in record else "not " + kind.__name__})'
           for field, kind in CARD_FIELDS.items() if not isinstance(record.get(field), kind)]
  if wrong:
    raise DamagedModelError(f'model card {path} has bad fields: {", ".join(wrong)}: {_FIX}')
  return record


def load(name: str) -> tuple[Any, dict[str, Any], Any]:
  """A shipped generator, as ``checkpointing.load_generator`` returns a workdir's:
  ``(module, variables for apply, run config)``, variables on the first local device.

  Raises:
    UnknownModelError: no such model; the message lists the shipped ones.
    DamagedModelError: the weights file is not the one its record describes, or does
      not fit the config in it.
  """
  record = describe(name)  # First: an unknown name fails fast, before JAX starts.
  # Imported here: --help and the bicubic method need neither JAX nor Flax.
  import flax.serialization  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from srgan_jax.nn import models  # pylint: disable=g-import-not-at-top

  path = directory() / f'{name}.msgpack'
  data = path.read_bytes()
  if hashlib.sha256(data).hexdigest() != record['msgpack_sha256']:
    raise DamagedModelError(f'{path} is not the file that {path.with_suffix(".json")} '
                            f'describes (SHA-256 differs): {_FIX}')
  variables = flax.serialization.msgpack_restore(data)
  config = ml_collections.ConfigDict(record['config'])
  problem = models.weights_problem(config, variables)
  if problem:
    raise DamagedModelError(f'model card {path.with_suffix(".json")}: {problem}: {_FIX}')
  model = models.generator_from_config(config)
  return model, jax.device_put(variables, jax.local_devices()[0]), config
