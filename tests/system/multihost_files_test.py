"""Hosts that read their own copies of the images, and copies that differ (issue 22).

Two JAX processes on this machine (2 CPU devices each, gloo collectives), as in
multihost_test, run `evaluate` and `super_resolve` with the shipped cpu_small
generator; each process reads its own folder (its own $SRGAN_DATASETS, or its own
working directory for relative paths), as the hosts of a TPU pod read their own
disks. Where the copies differ, both processes must end (each run is killed after
RUN_TIMEOUT) with the same exit status and the same line: before, a host with an
image more called the data-parallel program once more than the other, and waited
for it forever.
"""

import contextlib
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time

from PIL import Image
from preemption_test import free_port
from preemption_test import write_images
import pytest

from conftest import REPO
from srgan_jax.runtime import errors
from srgan_jax.training import workdir_lock

# Runs commands in subprocesses: a system test (`pytest -m "not system"` skips it).
pytestmark = pytest.mark.system

PROCESSES = 2
RUN_TIMEOUT = 120  # Seconds for both processes of one command (measured: under 30).
DIFFER = 'the hosts do not see the same images'


def _run_on_two_hosts(module: str, args: list[str], hosts: list[pathlib.Path],
                      **env: str) -> list[tuple[int | None, str]]:
  """(exit status, output) of `python -m module args` as 2 processes of one job, the
  p-th started in hosts[p] with SRGAN_DATASETS=hosts[p]; None for one still running
  after RUN_TIMEOUT (then killed)."""
  address = f'127.0.0.1:{free_port()}'
  processes, logs = [], []
  for p, host in enumerate(hosts):
    logs.append(open(host / 'log.txt', 'w'))  # pylint: disable=consider-using-with
    processes.append(subprocess.Popen(
        [sys.executable, '-m', module, *args], cwd=host, stdout=logs[-1],
        stderr=subprocess.STDOUT,
        env={**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu',
             'JAX_NUM_CPU_DEVICES': '2', 'JAX_CPU_COLLECTIVES_IMPLEMENTATION': 'gloo',
             'JAX_COORDINATOR_ADDRESS': address, 'JAX_NUM_PROCESSES': str(PROCESSES),
             'JAX_PROCESS_ID': str(p), 'SRGAN_DATASETS': str(host), **env}))
  deadline = time.monotonic() + RUN_TIMEOUT
  statuses = []
  for process in processes:
    try:
      statuses.append(process.wait(max(deadline - time.monotonic(), 0.1)))
    except subprocess.TimeoutExpired:
      statuses.append(None)
  for process, log in zip(processes, logs):
    if process.poll() is None:  # Waiting for the other host: what the fix prevents.
      process.kill()
      process.wait()
    log.close()
  return [(status, (host / 'log.txt').read_text()) for status, host in zip(statuses, hosts)]


def _lines(log: str, text: str) -> list[str]:
  return [line for line in log.splitlines() if text in line]


def _errors(log: str) -> list[str]:
  """The command's error lines (Gloo's C++ lines may come after them)."""
  return [line for line in log.splitlines() if line.startswith('error: ')]


def _same_outcome(results, status: int) -> None:
  """Both ended with ``status``; returns nothing, fails with both logs' tails."""
  report = '\n'.join(f'--- process {p}: exit {code}\n{log[-3000:]}'
                     for p, (code, log) in enumerate(results))
  assert [code for code, _ in results] == [status] * PROCESSES, report


@pytest.fixture
def hosts(tmp_path) -> list[pathlib.Path]:
  """One folder per host, each with the same 'good' and 'differs' sets of 2 images."""
  folders = [tmp_path / f'host{p}' for p in range(PROCESSES)]
  for folder in folders:
    for name in ('good', 'extra', 'truncated'):
      write_images(folder / name, count=2)
  return folders


def test_evaluate_skips_the_sets_that_differ_on_every_host_alike(hosts):
  """One host has an image more in one set, the other a truncated copy of an image
  of another set: both skip those two sets with the same line, and score the third."""
  shutil.copy(hosts[0] / 'extra' / 'img00.png', hosts[0] / 'extra' / 'img09.png')
  damaged = hosts[1] / 'truncated' / 'img01.png'
  damaged.write_bytes(damaged.read_bytes()[:200])
  results = _run_on_two_hosts('srgan_jax.evaluate', [
      '--model=cpu_small', '--data=./extra', '--data=./good', '--data=./truncated', '--metrics='],
      hosts)
  _same_outcome(results, errors.EXIT_FAILED)
  extra = ('extra: the hosts do not see the same images (process 1: 2 files, 2 readable; '
           'process 0: 3 files, 3 readable); give every host identical copies of the set')
  truncated = ('truncated: the hosts do not see the same images (process 1: 2 files, '
               '1 readable; process 0: 2 files, 2 readable); give every host identical '
               'copies of the set')
  for _, log in results:
    for name, line in (('extra', extra), ('truncated', truncated)):
      assert len(_lines(log, f'Set {name} not scored: {line}')) == 1, log[-3000:]
    assert _errors(log) == ['error: sets not scored: extra, truncated (named above)']
  table = results[0][1]
  (good,) = [line for line in table.splitlines() if line.startswith('good ')]
  assert good.split()[1] == '2'  # Scored on both hosts (process 0 prints the table).


def test_evaluate_crop_of_an_image_one_host_lacks_is_refused_by_both(hosts):
  """Before, only process 0 checked --crop (with a traceback); process 1 went on alone."""
  (hosts[1] / 'good' / 'img01.png').rename(hosts[1] / 'good' / 'only1.png')
  (hosts[0] / 'good' / 'img01.png').rename(hosts[0] / 'good' / 'only0.png')
  results = _run_on_two_hosts('srgan_jax.evaluate', [
      '--model=cpu_small', '--data=./good', '--metrics=', '--save_dir=sr',
      '--crop=only1:0,0,8,8'], hosts)
  _same_outcome(results, errors.EXIT_USER_ERROR)
  for _, log in results:
    assert _errors(log) == [
        "error: crops name images that are in none of the sets: ['only1'] (on every host)"]


def test_super_resolve_refuses_inputs_that_differ_on_every_host_alike(hosts):
  write_images(hosts[1] / 'good' / 'more', count=1)  # One input more, on process 1.
  results = _run_on_two_hosts('srgan_jax.super_resolve', [
      '--model=cpu_small', '--input=good', '--output=sr'], hosts)
  _same_outcome(results, errors.EXIT_USER_ERROR)
  for _, log in results:
    assert _errors(log) == [
        'error: --input: the hosts do not see the same images (process 1: 3 files; '
        'process 0: 2); give every host identical copies']


def test_super_resolve_keeps_the_outputs_process_0_has(hosts):
  """Process 0 writes, so its existing outputs are the ones kept; process 1 (which
  writes nothing, so has none on its own disk) skips the same image."""
  (hosts[0] / 'sr').mkdir()
  Image.new('RGB', (8, 8)).save(hosts[0] / 'sr' / 'img00.png')
  results = _run_on_two_hosts('srgan_jax.super_resolve', [
      '--model=cpu_small', '--input=good', '--output=sr'], hosts)
  _same_outcome(results, errors.EXIT_OK)
  assert '1 written, 1 skipped (existing), 0 failed' in results[0][1]
  with Image.open(hosts[0] / 'sr' / 'img00.png') as kept:
    assert kept.size == (8, 8)
  with Image.open(hosts[0] / 'sr' / 'img01.png') as written:
    assert written.size == (56 * 4, 48 * 4)
  assert not (hosts[1] / 'sr').exists()


def test_evaluate_of_a_set_one_host_lacks_is_refused_by_both(hosts):
  """A flag check that fails on one host only (its --data folder is missing): before,
  that host exited and the other waited for it in JAX's distributed start-up; then the
  other said only that another host refused. Now both print the refusing host's line."""
  shutil.rmtree(hosts[1] / 'extra')
  results = _run_on_two_hosts('srgan_jax.evaluate', [
      '--model=cpu_small', '--data=./extra', '--metrics='], hosts)
  _same_outcome(results, errors.EXIT_USER_ERROR)
  lines = [_errors(log) for _, log in results]
  assert lines[0] == lines[1] and len(lines[0]) == 1, lines
  assert lines[0][0].startswith(
      f'error: process 1 of 2 (host {socket.gethostname()}): --data: no folder ')


# A tiny training config whose data folder and VGG19 weights are relative paths:
# each process (started in its own host folder) checks its own copies.
TRAIN_CONFIG = '''\
from srgan_jax.configs import quickstart


def get_config():
  config = quickstart.get_config()
  config.data.folders = ('train',)
  config.data.crop_size = 32
  config.batch_size = 4  # 2 crops per host, 1 per device.
  config.srresnet.num_steps = 1
  config.srgan.num_steps = 1
  config.srgan.content_loss = 'vgg54'
  config.srgan.vgg_weights = 'vgg19.npz'
  config.eval_folders = ()
  return config
'''


@pytest.mark.parametrize('fault', ['no_vgg_weights', 'too_few_images', 'lock_held'])
def test_training_refused_by_one_host_stops_every_host_with_its_line(hosts, tmp_path, fault):
  """Issue 22, test B. Before, the host that failed its start-up checks exited alone
  and the other waited in its first collective until killed (JAX's own shutdown
  barrier gives up after 300 s); now both exit 2 with the same line, which names the
  host that refused and why, before anything is compiled."""
  workdir = tmp_path / 'run'  # Shared, as a gs:// workdir is.
  for host in hosts:
    write_images(host / 'train', count=4)  # 2 per host's share: a batch.
    (host / 'vgg19.npz').write_bytes(b'')  # Validation only checks that it exists.
    (host / 'config.py').write_text(TRAIN_CONFIG)
  refusing = 1
  if fault == 'no_vgg_weights':
    (hosts[1] / 'vgg19.npz').unlink()
    reason = "bad config: srgan.content_loss='vgg54' needs VGG19 weights, none at " + str(
        hosts[1] / 'vgg19.npz')
  elif fault == 'too_few_images':
    (hosts[1] / 'train' / 'img03.png').unlink()  # A share of 1 on host 1.
    reason = f'bad config: data.folders: {hosts[1] / "train"}: '
  else:
    refusing = 0  # Process 0 takes the lock.
    reason = f'workdir {workdir} is in use by process {os.getpid()} on host '
  with contextlib.ExitStack() as stack:
    if fault == 'lock_held':
      stack.enter_context(workdir_lock.hold(str(workdir)))
    results = _run_on_two_hosts('srgan_jax.main', ['--config=config.py', f'--workdir={workdir}'],
                                hosts)
  _same_outcome(results, errors.EXIT_USER_ERROR)
  lines = [_errors(log) for _, log in results]
  assert lines[0] == lines[1] and len(lines[0]) == 1, lines
  prefix = f'error: process {refusing} of 2 (host {socket.gethostname()}): '
  assert lines[0][0].startswith(prefix + reason), lines[0][0]
  for _, log in results:
    assert 'Compiling' not in log and 'step 1' not in log
  assert not (workdir / 'checkpoints').exists()


def test_evaluation_during_training_skips_the_set_that_differs_on_every_host_alike(hosts,
                                                                                   tmp_path):
  """Issue 22, test A, in training: host 0 has an image more in one evaluation set.
  Before, host 0 ran the evaluation program once more than host 1, which waited for
  it in its next training step forever; now both skip that set with the same line,
  score the other alike and finish."""
  for host in hosts:
    write_images(host / 'train', count=4)
    (host / 'config.py').write_text(TRAIN_CONFIG.replace(
        "config.eval_folders = ()", "config.eval_folders = ('good', 'extra')").replace(
        "config.srgan.num_steps = 1", "config.srgan.num_steps = 0").replace(
        "config.srgan.content_loss = 'vgg54'", "config.srgan.content_loss = 'mse'"))
  shutil.copy(hosts[0] / 'extra' / 'img00.png', hosts[0] / 'extra' / 'img09.png')
  results = _run_on_two_hosts('srgan_jax.main', ['--config=config.py',
                                                 f'--workdir={tmp_path / "run"}'], hosts)
  _same_outcome(results, errors.EXIT_OK)
  skipped = ('Set extra not scored: extra: the hosts do not see the same images (process 1: 2 '
             'files, 2 readable; process 0: 3 files, 3 readable)')
  scores = []
  for _, log in results:
    assert len(_lines(log, skipped)) == 1, log[-3000:]
    (score,) = _lines(log, 'eval/good/psnr=')
    scores.append(re.search(r'eval/good/psnr=(\S+?),', score).group(1))
  assert scores[0] == scores[1]
