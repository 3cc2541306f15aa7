"""What a model reference names, decided in one place: bicubic interpolation, a
pretrained model shipped in the package (``nn/pretrained``), or a training workdir.

Every place that takes a model by reference goes through here: the commands'
``--model`` / ``--workdir`` / ``--step`` / ``--ema`` flags (``from_flags``), and
``srresnet.init_from`` and ``srgan.init_from``, which take a pretrained model's name
or a workdir (``from_init_from``); ``load`` then reads the generator, and ``problem`` says in one
line why a reference names nothing, before anything is read.

The rule for a text that may be a name or a path (the ``init_from`` fields): a pretrained
model's name, unless a folder of that name is in the way (a folder wins); anything
else is a workdir, made absolute where it enters (relative to where the command was
started). Every host decides it from its own files, as it reads its own workdir.

Imports only the standard library and light modules at the top: listing names for a
command's --help must not start JAX.
"""

import dataclasses
import os
from typing import Any

from srgan_jax.nn import pretrained
from srgan_jax.runtime import paths

BICUBIC = 'bicubic'  # --model: MATLAB imresize, no weights.
WORKDIR = 'srgan'  # --model: the generator of --workdir.
# What a reference names.
KINDS = (BICUBIC, 'pretrained', 'workdir')


@dataclasses.dataclass(frozen=True)
class ModelReference:
  """A model by reference. ``location``: the pretrained model's name, or the workdir's
  absolute path (or URL); ``step``: a workdir's checkpoint step (None: the latest);
  ``ema``: the EMA weights when the run kept them."""
  kind: str
  location: str = ''
  step: int | None = None
  ema: bool = True

  def __str__(self) -> str:
    return self.location or self.kind


def from_flags(model: str, workdir: str | None = None, step: int | None = None,
               ema: bool = True) -> ModelReference:
  """The commands' ``--model`` (bicubic, srgan, or a pretrained model's name) with
  ``--workdir``, ``--step`` and ``--ema`` (``flag_problems`` first).

  Raises:
    pretrained.UnknownModelError: a name that no pretrained model has; the message
      lists those there are.
  """
  if model == BICUBIC:
    return ModelReference(BICUBIC)
  if model == WORKDIR:
    if not workdir:
      raise pretrained.UnknownModelError(
          '--model=srgan needs --workdir (or name a shipped model: '
          f'{", ".join(pretrained.names()) or "none shipped"})')
    return ModelReference('workdir', paths.absolute(workdir), step, ema)
  pretrained.describe(model)  # An unknown name fails here, listing the known ones.
  return ModelReference('pretrained', model)


def flag_problems(model: str, workdir: str | None, step: int | None) -> list[str | bool]:
  """What is wrong with the commands' model flags, as ``flag_checks.check_flags``
  takes it (a message, or False)."""
  in_workdir = model == WORKDIR
  return [in_workdir and not workdir and '--model=srgan needs --workdir',
          not in_workdir and bool(workdir) and '--workdir is for --model=srgan',
          not in_workdir and step is not None and '--step is for --model=srgan']


def from_init_from(text: str) -> ModelReference:
  """``srresnet.init_from`` or ``srgan.init_from``: a pretrained model's name, unless a
  folder of that name is in the way; else a workdir (its latest checkpoint, the raw
  weights: the phase continues training the generator, not its average)."""
  if text in pretrained.names() and not os.path.isdir(text):
    return ModelReference('pretrained', text, ema=False)
  return ModelReference('workdir', paths.absolute(text), ema=False)


def problem(reference: ModelReference) -> str | None:
  """Why ``reference`` names no model, in one line, or None (local files only: a
  remote workdir is checked where it is read)."""
  if reference.kind != 'workdir' or paths.is_remote(reference.location):
    return None
  if os.path.isdir(os.path.join(reference.location, 'checkpoints')):
    return None
  return (f'no checkpoints in {reference.location}, and no shipped model of that name '
          f'({", ".join(pretrained.names()) or "none shipped"})')


def scale(reference: ModelReference, bicubic_scale: int = 4) -> int:
  """The upscaling factor, read without loading weights where it can be."""
  if reference.kind == BICUBIC:
    return bicubic_scale
  if reference.kind == 'pretrained':
    return pretrained.describe(reference.location)['scale']
  return load(reference)[0].scale


def load(reference: ModelReference) -> tuple[Any, dict[str, Any], Any]:
  """The generator: ``(module, variables for apply, run config)``, the variables on
  this host's first device."""
  if reference.kind == 'pretrained':
    return pretrained.load(reference.location)
  if reference.kind == 'workdir':
    # Imported here: Orbax and JAX, which --help and bicubic do not need.
    from srgan_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
    return checkpointing.load_generator(reference.location, reference.step, reference.ema)
  raise ValueError(f'{reference.kind} has no weights to load')


def flag_help() -> str:
  """The --model help text of the commands, with the pretrained names of this install."""
  return ('bicubic: MATLAB imresize; srgan: the generator of --workdir; or a shipped '
          f'model by name: {", ".join(pretrained.names()) or "none in this install"} '
          '(python -m srgan_jax.pretrained lists them).')
