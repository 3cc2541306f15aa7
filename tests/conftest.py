"""Shared test setup: 8 simulated CPU devices, and the benchmark image sets."""

import os
import pathlib

import jax
import pytest

# Sharding tests compare 8 devices with 1; must run before any JAX computation.
jax.config.update('jax_num_cpu_devices', 8)

REPO = pathlib.Path(__file__).resolve().parent.parent


def datasets_root() -> pathlib.Path:
  """Where ../shared/datasets is: $SRGAN_DATASETS, else beside the checkout."""
  return pathlib.Path(os.environ.get('SRGAN_DATASETS', REPO.parent / 'shared' / 'datasets'))


def image_set(name: str) -> pathlib.Path:
  """The folder of one image set; skips outside CI when absent, fails in CI."""
  path = datasets_root() / name
  if not path.is_dir():
    message = f'image set {name} not found at {path} (set SRGAN_DATASETS)'
    if os.environ.get('CI'):
      pytest.fail(message)
    pytest.skip(message)
  return path
