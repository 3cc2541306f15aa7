"""One writer per workdir: a live holder refuses others; a dead holder's lock is taken over.

The local lock (flock) is tested against real processes; the remote one (a lock file
with a heartbeat, for gs://) on a local folder, with short timings.
"""

import json
import os
import re
import signal
import socket
import time

from conftest import start_lock_holder
import pytest

from srgan_jax.runtime import errors
from srgan_jax.training import workdir_lock

# Runs commands in subprocesses: a system test (`pytest -m "not system"` skips it).
pytestmark = pytest.mark.system


def test_live_holder_refuses_and_is_named(tmp_path):
  holder = start_lock_holder(tmp_path)
  try:
    with pytest.raises(workdir_lock.WorkdirInUseError,
                       match=f'in use by process {holder.pid} on host {socket.gethostname()}'):
      with workdir_lock.hold(str(tmp_path)):
        pytest.fail('a second holder got the lock')
    assert issubclass(workdir_lock.WorkdirInUseError, errors.UserError)
  finally:
    holder.kill()
    holder.wait()


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
  holder = start_lock_holder(tmp_path)
  holder.send_signal(signal.SIGKILL)  # No clean-up: the lock file stays.
  holder.wait()
  assert json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())['pid'] == holder.pid
  with workdir_lock.hold(str(tmp_path)):
    record = json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())
    assert record['pid'] == os.getpid()
  with workdir_lock.hold(str(tmp_path)):  # Released at the end of the block.
    pass


def test_disabled_lock_does_nothing(tmp_path):
  with workdir_lock.hold(str(tmp_path / 'run'), enabled=False):
    assert not (tmp_path / 'run').exists()


def _heartbeat(workdir, **timings):
  timings = {'heartbeat_seconds': 0.05, 'stale_seconds': 1.0, 'settle_seconds': 0.01, **timings}
  return workdir_lock._heartbeat_lock(str(workdir), **timings)  # pylint: disable=protected-access


def _write_record(workdir, **record):
  (workdir / workdir_lock.LOCK_NAME).write_text(json.dumps(
      {'host': 'other-host', 'pid': 1, 'token': 'theirs', 'heartbeat': time.time(), **record}))


def test_heartbeat_lock_refuses_while_fresh_and_beats(tmp_path):
  with _heartbeat(tmp_path):
    first = json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())['heartbeat']
    time.sleep(0.3)
    assert json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())['heartbeat'] > first
    with pytest.raises(workdir_lock.WorkdirInUseError, match=f'process {os.getpid()}'):
      with _heartbeat(tmp_path):
        pass
  assert not (tmp_path / workdir_lock.LOCK_NAME).exists()  # Removed when the run ends.


def test_heartbeat_lock_of_another_live_host_refuses(tmp_path):
  _write_record(tmp_path)
  with pytest.raises(workdir_lock.WorkdirInUseError, match='process 1 on host other-host'):
    with _heartbeat(tmp_path):
      pass


@pytest.mark.parametrize('record, why', [
    # Another host. Written an hour before collection: by the time the test runs, more.
    ({'heartbeat': time.time() - 3600}, r'no heartbeat for \d{4,} s'),
    ({'host': socket.gethostname(), 'pid': 2**22 + 12345}, 'that process has ended'),
    # This host under the same name, before a reboot (a Spot VM recreated after a
    # preemption killed the run mid-save), its pid reused by a live process.
    ({'host': socket.gethostname(), 'pid': os.getpid(), 'boot_id': 'an-earlier-boot'},
     'this host has rebooted since'),
], ids=['stale-heartbeat', 'dead-process', 'rebooted-host'])
def test_heartbeat_lock_of_a_gone_holder_is_taken_over_with_one_line(
    tmp_path, record, why, caplog):
  _write_record(tmp_path, **record)
  with caplog.at_level('WARNING'):
    with _heartbeat(tmp_path):
      taken = json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())
      assert taken['pid'] == os.getpid() and taken['token'] != 'theirs'
  (line,) = [logged.getMessage() for logged in caplog.records]
  assert re.fullmatch(f'Taking over the lock of workdir {re.escape(str(tmp_path))} from '
                      f'process {record.get("pid", 1)} on host [^ ]+: {why}\\.', line), line


def test_heartbeat_lock_of_this_boot_and_a_live_process_refuses(tmp_path):
  _write_record(tmp_path, host=socket.gethostname(), pid=os.getppid(),
                boot_id=workdir_lock._boot_id())  # pylint: disable=protected-access
  with pytest.raises(workdir_lock.WorkdirInUseError, match=f'process {os.getppid()}'):
    with _heartbeat(tmp_path):
      pass


def test_stale_lock_is_three_missed_heartbeats():
  assert workdir_lock.STALE_SECONDS == 3 * workdir_lock.HEARTBEAT_SECONDS


def test_heartbeat_lock_lost_to_a_concurrent_writer_refuses(tmp_path, monkeypatch):
  """Two runs taking over at once: the one whose token was overwritten backs off."""
  sleep = time.sleep

  def another_run_writes_meanwhile(seconds):
    _write_record(tmp_path, token='other-run')
    sleep(seconds)

  monkeypatch.setattr(workdir_lock.time, 'sleep', another_run_writes_meanwhile)
  with pytest.raises(workdir_lock.WorkdirInUseError, match='other-host'):
    with _heartbeat(tmp_path):
      pass


def test_heartbeat_rewrites_are_never_seen_half_written(tmp_path):
  """A reader racing the heartbeat sees a whole record every time: an empty file read
  as "no holder" would let a second run take a live lock."""
  path = tmp_path / workdir_lock.LOCK_NAME
  unreadable = reads = 0
  with _heartbeat(tmp_path, heartbeat_seconds=0.0005):
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
      reads += 1
      try:
        assert json.loads(path.read_text())['pid'] == os.getpid()
      except ValueError:
        unreadable += 1
  assert unreadable == 0, f'{unreadable} of {reads} reads found a half-written lock file'
  assert sorted(p.name for p in tmp_path.iterdir()) == []  # No temporary files left.


def test_heartbeat_lock_of_a_run_killed_mid_save_is_taken_over_by_the_next(tmp_path, caplog):
  """Issue 22, a Spot preemption: the run holding a gs://-style lock is SIGKILLed (its
  lock file stays, fresh); the run started next on this host takes it over at once
  instead of refusing for STALE_SECONDS."""
  holder = start_lock_holder(tmp_path, heartbeat=True)
  holder.send_signal(signal.SIGKILL)
  holder.wait()  # Reaped, as a preempted VM's processes are gone.
  left = json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())
  assert left['pid'] == holder.pid and time.time() - left['heartbeat'] < 60
  with caplog.at_level('WARNING'):
    with _heartbeat(tmp_path, stale_seconds=workdir_lock.STALE_SECONDS):
      assert json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())['pid'] == os.getpid()
  assert [logged.getMessage().rsplit(': ', 1)[-1] for logged in caplog.records] == [
      'that process has ended.']
