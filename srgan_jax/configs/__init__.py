"""Training configurations: default.py holds the paper's numbers, the others override it.

They ship inside the package, so an installed srgan_jax trains without a checkout:
``--config=quickstart`` names ``srgan_jax/configs/quickstart.py``, and a path such as
``--config=configs/x4.py`` (the repository's ``configs`` links here) or any other
config file works as well.
"""

import os

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


def config_path(name_or_path: str) -> str:
  """The file of a config given by name (``quickstart``) or by path (kept as it is).

  A ``:argument`` suffix, which ml_collections passes to ``get_config``, is kept.
  """
  name, colon, argument = name_or_path.partition(':')
  if os.sep in name or name.endswith('.py') or os.path.exists(name):
    return name_or_path
  return os.path.join(CONFIG_DIR, f'{name}.py') + colon + argument


def names() -> list[str]:
  """The configs that ship with the package."""
  return sorted(entry[:-3] for entry in os.listdir(CONFIG_DIR)
                if entry.endswith('.py') and not entry.startswith('_'))
