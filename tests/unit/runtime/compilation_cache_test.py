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


def test_an_entry_without_its_access_time_no_longer_stops_every_later_write(tmp_path):
  """JAX's own bounded cache, as every command uses it: one entry without its
  access-time file (its process killed between the two writes) made each later write
  fail in the eviction scan, so the cache stopped growing. Repaired, writes go on."""
  from jax._src import lru_cache  # pylint: disable=g-import-not-at-top
  cache = lru_cache.LRUCache(str(tmp_path), max_size=1 << 20)
  cache.put('first', b'program one')
  cache.put('killed', b'program two')
  (tmp_path / 'killed-atime').unlink()  # Its process died before writing it.
  with pytest.raises(FileNotFoundError, match='killed-atime'):
    cache.put('third', b'program three')
  assert compilation_cache.repair_access_times(str(tmp_path)) == 1
  assert compilation_cache.repair_access_times(str(tmp_path)) == 0
  # Its access time is its entry's modification time: as old as the entry, not new.
  assert (int.from_bytes((tmp_path / 'killed-atime').read_bytes(), 'little') ==
          (tmp_path / 'killed-cache').stat().st_mtime_ns)
  cache.put('third', b'program three')
  assert cache.get('third') == b'program three'
  assert cache.get('killed') == b'program two'


def test_configure_repairs_the_projects_folder_and_not_a_folder_jax_was_given(monkeypatch,
                                                                              tmp_path):
  for folder in ('ours', 'theirs'):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / 'entry-cache').write_bytes(b'program')
  monkeypatch.setenv(compilation_cache.JAX_DIR_ENV, str(tmp_path / 'theirs'))
  monkeypatch.delenv(compilation_cache.ENV, raising=False)
  for name in list(compilation_cache._OPTIONS) + ['jax_enable_compilation_cache',  # pylint: disable=protected-access
                                                  'jax_compilation_cache_dir']:
    monkeypatch.delenv(name.upper(), raising=False)
  import jax  # pylint: disable=g-import-not-at-top
  previous = {name: getattr(jax.config, name) for name in (
      'jax_enable_compilation_cache', 'jax_compilation_cache_dir',
      *compilation_cache._OPTIONS)}  # pylint: disable=protected-access
  try:
    compilation_cache.configure()
    assert not (tmp_path / 'theirs' / 'entry-atime').exists()  # Other programs' folder.
    compilation_cache.configure(str(tmp_path / 'ours'))
    assert (tmp_path / 'ours' / 'entry-atime').exists()
  finally:
    for name, value in previous.items():
      jax.config.update(name, value)
