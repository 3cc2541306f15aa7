"""paths.py: the project's cache folder, the one place that computes it; --data's one
reading (image_folder); the one write-then-rename (replacing, write_whole)."""

import errno
import json
import os
import pathlib

import pytest

import pytest

from srgan_jax.nn import conv_autotune
from srgan_jax.nn import lpips
from srgan_jax.nn import vgg19
from srgan_jax.runtime import errors
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
def test_a_set_name_is_always_the_datasets_folder_and_a_path_is_that_folder(monkeypatch,
                                                                             tmp_path):
  """Issue 37: `--data=Set5` read ./Set5 where one existed (a super_resolve --output or
  an evaluate --save_dir=. of that name): SR scored against itself, 53.22 dB."""
  datasets, here = tmp_path / 'datasets', tmp_path / 'here'
  (datasets / 'Set5').mkdir(parents=True)
  (here / 'Set5').mkdir(parents=True)  # The user's output folder, named like the set.
  monkeypatch.setenv(paths.DATASETS_ENV, str(datasets))
  monkeypatch.chdir(here)
  assert paths.image_folder('Set5') == str(datasets / 'Set5')
  assert paths.image_folder('NoSuchSet') == str(datasets / 'NoSuchSet')
  for path in ('./Set5', str(here / 'Set5'), 'Set5/', './Set5/../Set5'):
    assert paths.image_folder(path) == str(here / 'Set5'), path
  assert paths.image_folder('.') == str(here) and paths.image_folder('..') == str(tmp_path)
  assert paths.image_folder('gs://bucket/Set5') == 'gs://bucket/Set5'
  assert paths.image_folder('~/Set5') == os.path.join(os.path.expanduser('~'), 'Set5')


def _with_old_file(tmp_path):
  target = tmp_path / 'results.json'
  target.write_text('{"old": 1}\n')
  return target


def _leftovers(tmp_path):
  return sorted(path.name for path in tmp_path.iterdir() if path.name != 'results.json')


def test_write_whole_on_a_full_disk_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
  """Before (issue 37), evaluate's results.json became 4,096 bytes of invalid JSON, and
  plot and benchmark --json left 0-byte files; all now go through write_whole."""
  target = _with_old_file(tmp_path)

  class FullDisk:  # Takes the first 4,096 bytes, then ENOSPC, as a full disk does.
    def __init__(self, path, mode):
      self._file = open(path, mode)  # pylint: disable=consider-using-with

    def __enter__(self):
      return self

    def __exit__(self, *exc_info):
      self._file.close()

    def write(self, content):
      self._file.write(content[:4096])
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(paths, 'open', FullDisk, raising=False)
  with pytest.raises(OSError, match='No space left'):
    paths.write_whole(target, json.dumps({'new': list(range(5000))}))
  assert target.read_text() == '{"old": 1}\n' and _leftovers(tmp_path) == []


@pytest.mark.parametrize('stop', [errors.Preempted('stopped by SIGTERM'), KeyboardInterrupt()])
def test_replacing_stopped_mid_write_or_mid_cleanup_leaves_no_partial_file(tmp_path, monkeypatch,
                                                                            stop):
  """SIGTERM (errors.Preempted from the handler) or Ctrl-C while writing: the old file
  stays and no .partial is left, even when the stop lands in the clean-up's unlink."""
  target = _with_old_file(tmp_path)
  with pytest.raises(type(stop)):
    with paths.replacing(target) as temporary:
      temporary.write_text('half')
      raise stop
  assert target.read_text() == '{"old": 1}\n' and _leftovers(tmp_path) == []
  # The stop arrives again inside the clean-up's first unlink (a second signal).
  real_unlink, calls = pathlib.Path.unlink, []

  def unlink_stopped_once(self, missing_ok=False):
    calls.append(self)
    if len(calls) == 1:
      raise stop
    real_unlink(self, missing_ok=missing_ok)

  monkeypatch.setattr(pathlib.Path, 'unlink', unlink_stopped_once)
  with pytest.raises(type(stop)):
    with paths.replacing(target) as temporary:
      temporary.write_text('half')
      raise ValueError('the write failed')
  assert len(calls) == 2 and target.read_text() == '{"old": 1}\n'
  assert _leftovers(tmp_path) == []


def test_replacing_a_symlink_replaces_the_link_not_the_file_it_points_to(tmp_path):
  """evaluate --save_dir wrote through a symlink onto an HR image (issue 37)."""
  hr = tmp_path / 'hr.png'
  hr.write_bytes(b'HR pixels')
  link = tmp_path / 'sr.png'
  link.symlink_to(hr)
  paths.write_whole(link, b'SR pixels')
  assert hr.read_bytes() == b'HR pixels'
  assert not link.is_symlink() and link.read_bytes() == b'SR pixels'
