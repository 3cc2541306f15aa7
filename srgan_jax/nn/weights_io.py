"""Weight files of pretrained feature networks (VGG19, LPIPS): .npz layers, checked.

A file is a {layer: {kind: array}} tree stored as ``layer/kind`` entries of an .npz,
written through a temporary file and a rename; a file that is missing, unreadable or
of the wrong shapes is an error naming the command that re-creates it.
"""

from collections.abc import Mapping, Sequence
import os
from typing import Any

import numpy as np

from srgan_jax.runtime import paths


def check_layer_shapes(params: Mapping[str, Any],
                       expected: Mapping[str, Mapping[str, tuple[int, ...]]],
                       strict_entries: bool = False
                       ) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
  """A {layer: {kind: array}} tree checked against ``expected`` shapes.

  Returns the tree as float32 NumPy and the problems found (missing or unexpected
  layers, missing entries, wrong shapes; with ``strict_entries``, unexpected entries
  in a layer too). Shared by the VGG19 and LPIPS weight files.
  """
  problems, checked = [], {}
  extra = sorted(set(params) - set(expected))
  if extra:
    problems.append(f'unexpected layers {extra}')
  for layer, shapes in expected.items():
    if layer not in params:
      problems.append(f'missing layer {layer}')
      continue
    checked[layer] = {}
    for kind, shape in shapes.items():
      if kind not in params[layer]:
        problems.append(f'missing {layer}/{kind}')
        continue
      value = np.asarray(params[layer][kind], np.float32)
      if value.shape != shape:
        problems.append(f'{layer}/{kind} has shape {value.shape}, expected {shape}')
      checked[layer][kind] = value
    extra = sorted(set(params[layer]) - set(shapes)) if strict_entries else []
    if extra:
      problems.append(f'unexpected entries {extra} in layer {layer}')
  return checked, problems


def raise_if_invalid(problems: Sequence[str], error: type[Exception], weights: str,
                     where: str, command: str | None = None) -> None:
  """Raises ``error`` listing every problem found in the ``weights`` read from
  ``where``, with the command that re-creates the file when there is one."""
  if problems:
    message = f'invalid {weights} weights in {where}: ' + '; '.join(problems)
    if command is not None:
      message += f'. Re-create the file with: {command}'
    raise error(message)


def write_layers_atomically(path: str, layers: Mapping[str, Mapping[str, np.ndarray]],
                            extra: Mapping[str, np.ndarray] | None = None) -> None:
  """Writes a {layer: {kind: array}} tree (plus ``extra`` entries) as ``layer/kind``
  entries of an .npz, through a temporary file and a rename, so that a reader never
  sees a half-written file."""
  arrays = {f'{layer}/{kind}': value
            for layer, kinds in layers.items() for kind, value in kinds.items()}
  arrays.update(extra or {})
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with paths.replacing(path) as temporary, open(temporary, 'wb') as file:
    np.savez(file, **arrays)


def read_npz(path: str, error: type[Exception], weights: str, command: str
             ) -> dict[str, np.ndarray]:
  """Every entry of the .npz at ``path``; an unreadable file raises ``error`` naming
  the ``command`` that re-creates it."""
  try:
    with np.load(path, allow_pickle=False) as data:
      return {key: data[key] for key in data.files}
  except (OSError, ValueError) as e:
    raise error(f'cannot read {weights} weights from {path} ({e}). '
                f'Re-create the file with: {command}') from e


def layers_from_entries(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
  """The {layer: {kind: array}} tree of ``layer/kind`` entries (write_layers_atomically's)."""
  layers = {}
  for key, value in arrays.items():
    layer, _, kind = key.partition('/')
    layers.setdefault(layer, {})[kind] = value
  return layers
