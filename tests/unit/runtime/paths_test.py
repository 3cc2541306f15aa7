"""paths.py: the project's cache folder, the one place that computes it."""

import os

import pytest

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


def test_removed_if_failed_leaves_a_folder_as_it_found_it(tmp_path):
  """What a failed block added goes, what was there stays; kept when keep() says so."""
  folder = tmp_path / 'run'
  folder.mkdir()
  (folder / 'mine.txt').write_text('mine')
  (folder / 'old').mkdir()
  with pytest.raises(RuntimeError):
    with paths.removed_if_failed(str(folder), paths.listing(str(folder)), keep=lambda: False):
      (folder / 'config.json').write_text('{}')
      (folder / 'checkpoints').mkdir()
      (folder / 'old' / 'new.txt').write_text('inside an old folder: left')
      raise RuntimeError('start-up failed')
  assert sorted(os.listdir(folder)) == ['mine.txt', 'old']
  assert (folder / 'mine.txt').read_text() == 'mine'
  # A folder the block created goes too; kept, nothing goes.
  new = tmp_path / 'new'
  with pytest.raises(RuntimeError):
    with paths.removed_if_failed(str(new), paths.listing(str(new)), keep=lambda: False):
      (new / 'checkpoints').mkdir(parents=True)
      raise RuntimeError('start-up failed')
  assert not new.exists()
  with pytest.raises(RuntimeError):
    with paths.removed_if_failed(str(new), None, keep=lambda: True):
      (new / 'checkpoints').mkdir(parents=True)
      raise RuntimeError('after a checkpoint')
  assert (new / 'checkpoints').is_dir()
