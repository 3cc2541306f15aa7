"""compilation_cache.py: where JAX's persistent cache is, and JAX's options for it
(that processes share it: tests/system/compilation_cache_reuse_test.py)."""

import pytest

from srgan_jax.runtime import compilation_cache
from srgan_jax.runtime import errors


def test_folder_is_the_flag_else_the_variables_else_under_the_cache_dir(monkeypatch, tmp_path):
  for name in (compilation_cache.ENV, compilation_cache.JAX_DIR_ENV):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv('SRGAN_JAX_CACHE', str(tmp_path / 'cache'))
  assert compilation_cache.directory() == str(tmp_path / 'cache' / 'xla')
  monkeypatch.setenv(compilation_cache.JAX_DIR_ENV, str(tmp_path / 'jax'))
  assert compilation_cache.directory() == str(tmp_path / 'jax')
  monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / 'ours'))
  assert compilation_cache.directory() == str(tmp_path / 'ours')
  assert compilation_cache.directory(str(tmp_path / 'flag')) == str(tmp_path / 'flag')
  assert compilation_cache.directory('OFF') is None
  monkeypatch.setenv(compilation_cache.ENV, 'off')
  assert compilation_cache.directory() is None
  assert compilation_cache.settings(None) == {'jax_enable_compilation_cache': False}
  with pytest.raises(errors.ConfigError, match='local folder'):
    compilation_cache.directory('gs://bucket/xla')


def test_settings_cache_cpu_programs_and_leave_the_users_jax_variables(monkeypatch):
  for name in ('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', 'JAX_COMPILATION_CACHE_MAX_SIZE'):
    monkeypatch.delenv(name, raising=False)
  chosen = compilation_cache.settings('/somewhere')
  assert chosen['jax_compilation_cache_dir'] == '/somewhere'
  assert chosen['jax_persistent_cache_min_compile_time_secs'] < 0.05  # JAX's default: 1 s.
  assert chosen['jax_compilation_cache_max_size'] > 0  # A bound: JAX then locks entries.
  monkeypatch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '3')
  assert 'jax_persistent_cache_min_compile_time_secs' not in compilation_cache.settings('/x')
  assert 'jax_compilation_cache_max_size' not in compilation_cache.settings('/x', own=False)
