r"""Loading a generator: a training workdir's, or one shipped in the package by name
(``nn/shipped.py``).

Imports only the standard library at the top: listing names for a command's --help
must not start JAX.
"""

from typing import Any

from srgan_jax.nn import shipped


def load_generator(model: str, workdir: str | None = None, step: int | None = None,
                   ema: bool = True) -> tuple[Any, dict[str, Any], Any]:
  """The generator the commands' ``--model`` names: ``'srgan'`` is the one of
  ``workdir`` (``checkpointing.load_generator``), any other name a shipped model."""
  if model != 'srgan':
    return shipped.load(model)
  if not workdir:
    raise shipped.UnknownModelError(
        '--model=srgan needs --workdir (or name a shipped model: '
        f'{", ".join(shipped.names()) or "none shipped"})')
  from srgan_jax.training import checkpointing  # pylint: disable=g-import-not-at-top  # Orbax.
  return checkpointing.load_generator(workdir, step, ema)


def model_flag_help() -> str:
  """The --model help text of the commands, with the shipped names of this install."""
  return ('bicubic: MATLAB imresize; srgan: the generator of --workdir; or a shipped '
          f'model by name: {", ".join(shipped.names()) or "none in this install"} '
          '(python -m srgan_jax.pretrained lists them).')
