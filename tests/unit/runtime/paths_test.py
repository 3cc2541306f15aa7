"""paths.py: the project's cache folder, the one place that computes it."""

import os

from srgan_jax.nn import conv_autotune
from srgan_jax.nn import lpips
from srgan_jax.nn import vgg19
from srgan_jax.runtime import paths


def test_cache_dir_is_the_environment_variable_else_under_home(monkeypatch, tmp_path):
  monkeypatch.setenv('SRGAN_JAX_CACHE', str(tmp_path))
  assert paths.cache_dir() == str(tmp_path)
  monkeypatch.setenv('SRGAN_JAX_CACHE', '')  # Empty: as if unset.
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  assert paths.cache_dir() == str(tmp_path / 'home' / '.cache' / 'srgan_jax')


def test_every_cached_file_is_in_the_cache_dir(monkeypatch, tmp_path):
  monkeypatch.setenv('SRGAN_JAX_CACHE', str(tmp_path))
  cached = (vgg19.default_path(), lpips.default_path('alex'), lpips.default_path('vgg'),
            conv_autotune.verdict_cache_path())
  assert {os.path.dirname(path) for path in cached} == {str(tmp_path)}
