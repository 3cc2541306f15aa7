"""Tests of launch/tpu_vm.sh and launch/gpu_local.sh, without a cloud or a GPU.

Fakes of `gcloud` and the Python interpreters come first on PATH. In dry runs they
fail loudly if called, which proves that a dry run only prints; elsewhere they record
their arguments, which shows that a real run executes exactly what the dry run
prints. Every gcloud command a dry run prints is checked against the flags and TPU
software versions of Google's documentation (GCLOUD_SYNOPSES, RUNTIME_VERSIONS:
copied from the documentation, not from the script). The remote scripts the TPU
launcher sends over ssh are parsed by bash; the install one is run in a fake worker's
home folder (apt-get, sudo and the interpreters faked, git real), the training one
against a fake ~/srgan_venv.
"""

import ast
import contextlib
import json
import os
import pathlib
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, image_set
from srgan_jax.runtime import distributed

# Runs commands in subprocesses: a system test (`pytest -m "not system"` skips it).
pytestmark = pytest.mark.system

TPU_VM = REPO / 'launch' / 'tpu_vm.sh'
ACCELERATOR_CHECK = REPO / 'launch' / 'accelerator_check.sh'
GPU_LOCAL = REPO / 'launch' / 'gpu_local.sh'
GCLOUD = ['gcloud', 'compute', 'tpus', 'tpu-vm']
QUEUED = ['gcloud', 'compute', 'tpus', 'queued-resources']
TPU = {'TPU_NAME': 'sr-test', 'ZONE': 'us-central2-b', 'WORKDIR': 'gs://bucket/run',
       'TFDS_DATA_DIR': 'gs://bucket/tfds'}
MAIN = ('python -m srgan_jax.main --config=configs/x4.py --workdir=gs://bucket/run '
        '--config.data.tfds_data_dir=gs://bucket/tfds')

# The SYNOPSIS of each `gcloud compute tpus tpu-vm COMMAND`, from
# https://cloud.google.com/sdk/gcloud/reference/compute/tpus/tpu-vm/COMMAND:
# (positional arguments, flags that take =VALUE, flags that take none).
GCLOUD_SYNOPSES = {
    'create': ('TPU', {'--zone', '--version', '--boot-disk', '--data-disk', '--description',
                       '--labels', '--metadata', '--metadata-from-file', '--network',
                       '--queue-count', '--range', '--scopes', '--service-account',
                       '--subnetwork', '--tags', '--accelerator-type', '--topology', '--type'},
               {'--async', '--internal-ips', '--preemptible', '--reserved',
                '--shielded-secure-boot', '--spot'}),
    'delete': ('TPU', {'--zone'}, {'--async'}),
    'ssh': ('[USER@]TPU', {'--ssh-flag', '--ssh-key-file', '--strict-host-key-checking',
                           '--worker', '--zone', '--command', '--output-directory',
                           '--ssh-key-expiration', '--ssh-key-expire-after'},
            {'--dry-run', '--force-key-file-overwrite', '--internal-ip', '--plain'}),
    'scp': ('[[USER@]INSTANCE:]SRC ... [[USER@]INSTANCE:]DEST',
            {'--scp-flag', '--ssh-key-file', '--strict-host-key-checking', '--worker', '--zone',
             '--ssh-key-expiration', '--ssh-key-expire-after'},
            {'--compress', '--dry-run', '--force-key-file-overwrite', '--internal-ip',
             '--plain', '--recurse'}),
}
# The same for `gcloud compute tpus queued-resources COMMAND`, from
# https://cloud.google.com/sdk/gcloud/reference/compute/tpus/queued-resources/COMMAND.
QUEUED_SYNOPSES = {
    'create': ('QUEUED_RESOURCE', {'--zone', '--runtime-version', '--accelerator-type',
                                   '--topology', '--type', '--node-id', '--node-count',
                                   '--node-prefix', '--boot-disk', '--data-disk',
                                   '--description', '--labels', '--metadata',
                                   '--metadata-from-file', '--network', '--range', '--scopes',
                                   '--service-account', '--subnetwork', '--tags',
                                   '--valid-after-duration', '--valid-after-time',
                                   '--valid-until-duration', '--valid-until-time'},
               {'--async', '--guaranteed', '--internal-ips', '--reserved',
                '--shielded-secure-boot', '--spot'}),
    'delete': ('QUEUED_RESOURCE', {'--zone'}, {'--async', '--force'}),
}
# GCLOUD_WIDE_FLAGS (https://cloud.google.com/sdk/gcloud/reference): those used here.
GCLOUD_WIDE_VALUE_FLAGS = {'--project', '--account', '--configuration', '--format',
                           '--verbosity'}
GCLOUD_WIDE_FLAGS = {'--quiet', '--help', '--log-http'}
# "TPU software versions" for JAX, https://cloud.google.com/tpu/docs/runtimes:
# Trillium (v6e) v2-alpha-tpuv6e, v5p v2-alpha-tpuv5, v5e v2-alpha-tpuv5-lite, v4 and
# older tpu-ubuntu2204-base. Accelerator types are named VERSION-CORES_OR_CHIPS, v5e's
# v5litepod-N (https://cloud.google.com/tpu/docs/v5e, /v6e, /v5p, /v4).
RUNTIME_VERSIONS = {'v6e': 'v2-alpha-tpuv6e', 'v5p': 'v2-alpha-tpuv5',
                    'v5litepod': 'v2-alpha-tpuv5-lite', 'v4': 'tpu-ubuntu2204-base',
                    'v3': 'tpu-ubuntu2204-base', 'v2': 'tpu-ubuntu2204-base'}


def check_gcloud(argv: list[str]) -> None:
  """Fails unless argv is a `gcloud compute tpus tpu-vm` or `... queued-resources`
  command as documented."""
  assert argv[:4] in (GCLOUD, QUEUED), argv
  command, args = argv[4], argv[5:]
  synopses = GCLOUD_SYNOPSES if argv[:4] == GCLOUD else QUEUED_SYNOPSES
  positional, value_flags, plain_flags = synopses[command]
  positionals = []
  for arg in args:
    if not arg.startswith('-'):
      positionals.append(arg)
      continue
    name, has_value, value = arg.partition('=')
    if name in value_flags | GCLOUD_WIDE_VALUE_FLAGS:
      assert has_value and value, f'{name} needs a value: {argv}'
    else:
      assert name in plain_flags | GCLOUD_WIDE_FLAGS, f'{command}: undocumented {arg}: {argv}'
      assert not has_value, f'{name} takes no value: {argv}'
  if command == 'scp':  # Sources, then the destination; the TPU ones as INSTANCE:PATH.
    assert len(positionals) >= 2 and any(':' in arg for arg in positionals), argv
  else:
    assert len(positionals) == 1, f'{command} takes {positional}: {argv}'
  zone = [arg for arg in args if arg.startswith('--zone=')]
  assert len(zone) == 1, argv  # Not in a gcloud configuration here: always given.
  workers = [arg.split('=', 1)[1] for arg in args if arg.startswith('--worker=')]
  assert all(worker == 'all' or worker.isdigit() for worker in workers), argv
  if command == 'create':
    accelerator = _flag(argv, '--accelerator-type')
    assert re.fullmatch(r'(v2|v3|v4|v5p|v5litepod|v6e)-\d+', accelerator), accelerator
    # The version for JAX of this TPU, or one for TensorFlow (tpu-vm-tf-x.y.z[-pod][-api]).
    version = _flag(argv, '--version' if argv[:4] == GCLOUD else '--runtime-version')
    assert (version == RUNTIME_VERSIONS[accelerator.split('-')[0]] or
            re.fullmatch(r'tpu-vm-tf-\d+\.\d+\.\d+(-pod)?(-[a-z]+)?', version)), version


# A version probe (`python -c ...`, which changes nothing) is answered by every fake
# interpreter: yes (>= 3.11) if its name is in $FAKE_PYTHON_OK, or always when that
# is unset; an absent interpreter says no.
PROBE = r"""
if [ "$1" = -c ]; then
  case " ${FAKE_PYTHON_OK-$(basename "$0")} " in
    *" $(basename "$0") "*) exit 0 ;;
    *) exit 1 ;;
  esac
fi
"""

# Called in a dry run: a bug. Says so, leaves a trace, and fails.
FAILING_FAKE = '#!/bin/bash\n' + PROBE + """
echo "fake $(basename "$0") was called: $*" >&2
touch "$FAKE_CALLED"
exit 97
"""

# Appends its name and arguments (NUL-separated, one record per line) to $FAKE_LOG,
# with the environment variables the launchers set; for `gcloud ... scp` also the
# files it was asked to copy, since the staged copy is deleted when the script ends.
# `-m venv DIR` makes DIR/bin/python and pip, copies of itself ($FAKE_VENV_FAILS: fails).
RECORDING_FAKE = '#!/bin/bash\n' + PROBE + r"""
{
  printf '%s\0' "$(basename "$0")" "$@" "pwd=$PWD" "pid=$$" \
    "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}" \
    "XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION-unset}"
  printf '\n'
} >> "$FAKE_LOG"
if [ "$4" = scp ]; then (cd "$6" && find . -type f | sort) > "$FAKE_LOG.files"; fi
if [ "$1 $2" = '-m venv' ]; then
  if [ -n "$FAKE_VENV_FAILS" ]; then echo 'Error: ensurepip is not available' >&2; exit 1; fi
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && cp "$0" "$3/bin/pip"
fi
"""
FAKE_NAMES = ('gcloud', 'python3', 'python3.11', 'python3.12', 'python3.13', 'python', 'pip',
              'py')


def _environment(tmp_path: pathlib.Path, fake: str, **variables: str) -> dict[str, str]:
  """A clean environment: fakes first on PATH, HOME and TMPDIR inside tmp_path, and
  gpu_local.sh's virtual environment in tmp_path/venv."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir(exist_ok=True)
  for name in FAKE_NAMES:
    (bin_dir / name).write_text(fake)
    (bin_dir / name).chmod(0o755)
  (tmp_path / 'tmp').mkdir(exist_ok=True)
  environment = {
      'PATH': f'{bin_dir}:{os.environ["PATH"]}',
      'HOME': str(tmp_path / 'home'),
      'TMPDIR': str(tmp_path / 'tmp'),
      'FAKE_CALLED': str(tmp_path / 'fake_called'),
      'FAKE_LOG': str(tmp_path / 'fake_log'),
      'VENV': str(tmp_path / 'venv'),
  }
  environment.update(variables)
  return environment


def _run(script: pathlib.Path, args: list[str], environment: dict[str, str],
         cwd: pathlib.Path) -> subprocess.CompletedProcess:
  """Runs a launcher with bash from a directory outside the repository."""
  return subprocess.run(['bash', str(script), *args], env=environment, cwd=cwd,
                        capture_output=True, text=True, timeout=60, check=False)


def _dry_run(tmp_path: pathlib.Path, script: pathlib.Path, args: list[str],
             **variables: str) -> list[list[str]]:
  """The commands a dry run prints, as argv lists; checks that none ran."""
  result = _run(script, args, _environment(tmp_path, FAILING_FAKE, DRY_RUN='1', **variables),
                tmp_path)
  assert result.returncode == 0, result.stderr
  assert not (tmp_path / 'fake_called').exists(), result.stderr
  lines = result.stdout.splitlines()
  assert lines and all(line.startswith('+ ') for line in lines), result.stdout
  commands = [shlex.split(line[2:]) for line in lines]
  for argv in commands:
    if argv[0] == 'gcloud':
      check_gcloud(argv)
  return commands


def _recorded_calls(tmp_path: pathlib.Path, name: str = 'fake_log') -> list[list[str]]:
  """The calls of RECORDING_FAKE: [name, *args, pwd=, pid=, CUDA_...=, XLA_...=]."""
  log = tmp_path / name
  if not log.exists():
    return []
  return [record.split('\0')[:-1] for record in log.read_text().splitlines()]


def _flag(argv: list[str], name: str) -> str:
  """The value of the one --name=value in argv."""
  values = [arg.split('=', 1)[1] for arg in argv if arg.startswith(f'{name}=')]
  assert len(values) == 1, (name, argv)
  return values[0]


def _check_remote_syntax(argv: list[str]) -> None:
  """The --command of a gcloud ssh parses as a bash script."""
  result = subprocess.run(['bash', '-n', '-c', _flag(argv, '--command')],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr


@pytest.mark.parametrize('script', [TPU_VM, GPU_LOCAL])
def test_scripts_parse(script):
  result = subprocess.run(['bash', '-n', str(script)], capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stderr
  assert script.read_text().splitlines()[0] == '#!/usr/bin/env bash'
  assert 'set -euo pipefail' in script.read_text()
  assert os.access(script, os.X_OK)


# Accelerator types of each documented TPU version, one host and a pod slice.
@pytest.mark.parametrize('accelerator', ['v2-8', 'v3-32', 'v4-8', 'v4-32', 'v5litepod-8',
                                         'v5litepod-32', 'v5p-8', 'v5p-16', 'v6e-8', 'v6e-16'])
def test_create_uses_the_documented_runtime_version(tmp_path, accelerator):
  [argv] = _dry_run(tmp_path, TPU_VM, ['create'], ACCELERATOR_TYPE=accelerator, **TPU)
  version = RUNTIME_VERSIONS[accelerator.split('-')[0]]
  assert argv == [*GCLOUD, 'create', 'sr-test', f'--accelerator-type={accelerator}',
                  f'--version={version}', '--zone=us-central2-b']


def test_documentation_check_catches_wrong_commands():
  """check_gcloud, which every dry run above goes through, fails for wrong commands."""
  good = [*GCLOUD, 'create', 't', '--accelerator-type=v4-8', '--version=tpu-ubuntu2204-base',
          '--zone=z']
  check_gcloud(good)
  for wrong in ([*good[:-1], '--region=z'],  # Not a create flag.
                [*good, '--spot=true'],  # A flag without value.
                [*good[:5], '--accelerator-type=v4-8', '--version=v2-alpha-tpuv5-lite', '--zone=z'],
                [*good[:5], '--accelerator-type=v5e-8', '--version=v2-alpha-tpuv5-lite', '--zone=z'],
                [*GCLOUD, 'ssh', 't', '--zone=z', '--workers=all', '--command=ls'],
                [*GCLOUD, 'ssh', 't', '--zone=z', '--worker=every', '--command=ls'],
                [*GCLOUD, 'scp', '--recurse', 'dir', 't:', '--zone=z', '--worker=all', '--quiet=1']):
    with pytest.raises(AssertionError):
      check_gcloud(wrong)


def test_create_options(tmp_path):
  # A TensorFlow version (named tpu-vm-tf-x.y.z[-pod][-device_api] in the documentation).
  [argv] = _dry_run(tmp_path, TPU_VM, ['create'], RUNTIME_VERSION='tpu-vm-tf-2.16.1-pjrt',
                    PROJECT='my-project', SPOT='1', **TPU)
  assert argv[:6] == [*GCLOUD, 'create', 'sr-test']
  assert _flag(argv, '--accelerator-type') == 'v5litepod-8'  # The default.
  assert _flag(argv, '--version') == 'tpu-vm-tf-2.16.1-pjrt'
  assert _flag(argv, '--project') == 'my-project'
  assert '--spot' in argv and '--preemptible' not in argv
  [argv] = _dry_run(tmp_path, TPU_VM, ['create'], PREEMPTIBLE='1', **TPU)
  assert '--preemptible' in argv and '--spot' not in argv
  assert not any(arg.startswith('--project') for arg in argv)


def test_install_copies_checkout_to_all_workers(tmp_path):
  scp, ssh = _dry_run(tmp_path, TPU_VM, ['install'], **TPU)
  assert scp[:6] == [*GCLOUD, 'scp', '--recurse']
  assert scp[6].endswith('/srgan_jax') and scp[7] == 'sr-test:'
  assert _flag(scp, '--worker') == 'all' and _flag(scp, '--zone') == 'us-central2-b'
  assert ssh[:6] == [*GCLOUD, 'ssh', 'sr-test'] and _flag(ssh, '--worker') == 'all'
  remote = _flag(ssh, '--command')
  assert "pip install -q -e '.[tpu]'" in remote
  assert 'srgan_jax.vgg19 import --source=keras' in remote
  assert 'git clone' not in remote
  _check_remote_syntax(ssh)
  [ssh] = _dry_run(tmp_path, TPU_VM, ['install'], VGG_SOURCE='', **TPU,
                   REPO_URL='https://example.com/srgan jax.git', REPO_REF='v1.0')
  remote = _flag(ssh, '--command')
  assert r'git clone --quiet https://example.com/srgan\ jax.git ~/srgan_jax' in remote
  assert 'fetch --quiet origin v1.0' in remote and 'vgg19' not in remote
  _check_remote_syntax(ssh)


def test_train_runs_main_on_all_workers(tmp_path):
  [argv] = _dry_run(tmp_path, TPU_VM, ['train'], **TPU)
  assert argv[:6] == [*GCLOUD, 'ssh', 'sr-test'] and _flag(argv, '--worker') == 'all'
  remote = _flag(argv, '--command')
  # The variable by which srgan_jax.runtime.distributed knows a Cloud TPU VM.
  assert f'{distributed.CLOUD_TPU_VARIABLE}=1 nohup ~/srgan_venv/bin/{MAIN} >>' in remote
  assert '>>~/srgan_train.log' in remote
  _check_remote_syntax(argv)
  [argv] = _dry_run(tmp_path, TPU_VM, ['train'], **{**TPU, 'TFDS_DATA_DIR': 'config'})
  assert 'tfds_data_dir' not in _flag(argv, '--command')


def test_train_remote_script_starts_one_job(tmp_path):
  """Runs what a worker would run, with a fake python in ~/srgan_venv."""
  # Quotes group words; $(...) is not expanded, here nor on the workers.
  extra = f'--config.batch_size=32 --config.name=\'a b\' --config.x=$(touch {tmp_path}/x) "it\'s"'
  [argv] = _dry_run(tmp_path, TPU_VM, ['train'], EXTRA_ARGS=extra, **TPU)
  home = tmp_path / 'home'
  (home / 'srgan_jax').mkdir(parents=True)
  (home / 'srgan_venv' / 'bin').mkdir(parents=True)
  python = home / 'srgan_venv' / 'bin' / 'python'
  python.write_text('#!/bin/bash\nprintf "%s\\0" "$PWD" "$@" > "$HOME/argv"\n'
                    'echo "SRGAN_CLOUD_TPU=$SRGAN_CLOUD_TPU" > "$HOME/env"\n'
                    'echo training; exec sleep 30\n')
  python.chmod(0o755)
  environment = {'PATH': os.environ['PATH'], 'HOME': str(home)}
  remote = ['bash', '-c', _flag(argv, '--command')]
  first = subprocess.run(remote, env=environment, capture_output=True, text=True,
                         timeout=30, check=False)
  assert first.returncode == 0, first.stderr
  pid = int((home / 'srgan_train.pid').read_text())
  try:
    for _ in range(100):
      log = home / 'srgan_train.log'
      if (home / 'argv').exists() and log.exists() and log.read_text():
        break
      time.sleep(0.05)
    assert (home / 'argv').read_text().split('\0')[:-1] == [
        str(home / 'srgan_jax'), '-m', 'srgan_jax.main', '--config=configs/x4.py',
        '--workdir=gs://bucket/run', '--config.data.tfds_data_dir=gs://bucket/tfds',
        '--config.batch_size=32', '--config.name=a b', '--config.x=$(touch',
        f'{tmp_path}/x)', "it's"]
    assert (home / 'env').read_text() == 'SRGAN_CLOUD_TPU=1\n'
    assert (home / 'srgan_train.log').read_text() == 'training\n'
    second = subprocess.run(remote, env=environment, capture_output=True, text=True,
                            timeout=30, check=False)
    assert second.returncode == 1 and f'already training, pid {pid}' in second.stderr
  finally:
    os.kill(pid, signal.SIGTERM)
  assert not (tmp_path / 'x').exists()


# A worker's sudo: runs the command with the VAR=value words before it in its environment.
FAKE_SUDO = """#!/bin/bash
while [[ $1 == *=* ]]; do export "$1"; shift; done
exec "$@"
"""


def _fake_worker(tmp_path: pathlib.Path, python_ok: str) -> dict[str, str]:
  """The environment of a fake TPU VM worker: HOME is tmp_path/vm; sudo, apt-get and
  the interpreters are fakes (those named in python_ok are >= 3.11); git is real."""
  bin_dir = tmp_path / 'vm_bin'
  bin_dir.mkdir()
  for name in ('apt-get', 'python3', 'python3.11'):
    (bin_dir / name).write_text(RECORDING_FAKE)
    (bin_dir / name).chmod(0o755)
  (bin_dir / 'sudo').write_text(FAKE_SUDO)
  (bin_dir / 'sudo').chmod(0o755)
  (tmp_path / 'vm').mkdir()
  return {'PATH': f'{bin_dir}:{os.environ["PATH"]}', 'HOME': str(tmp_path / 'vm'),
          'FAKE_LOG': str(tmp_path / 'vm_log'), 'FAKE_PYTHON_OK': python_ok,
          'GIT_CONFIG_NOSYSTEM': '1'}


def _run_install(tmp_path: pathlib.Path, worker: dict[str, str], **variables: str) -> list:
  """Runs the install command's remote script on the fake worker; its recorded calls."""
  (tmp_path / 'vm_log').unlink(missing_ok=True)
  ssh = _dry_run(tmp_path, TPU_VM, ['install'], **TPU, **variables)[-1]
  result = subprocess.run(['bash', '-c', _flag(ssh, '--command')], env=worker,
                          cwd=worker['HOME'], capture_output=True, text=True, timeout=60,
                          check=False)
  assert result.returncode == 0, result.stderr
  return [call[:-4] for call in _recorded_calls(tmp_path, 'vm_log')]


@pytest.mark.parametrize('python_ok, base', [
    ('python3.11', 'python3.11'),  # Ubuntu 22.04 images (tpu-ubuntu2204-base): 3.10.
    ('python3 python3.11', 'python3'),  # Newer images.
])
def test_install_on_a_fake_worker(tmp_path, python_ok, base):
  worker = _fake_worker(tmp_path, python_ok)
  home = pathlib.Path(worker['HOME'])
  (home / 'srgan_jax').mkdir()  # What `gcloud ... scp` copied there.
  calls = _run_install(tmp_path, worker)
  assert calls == [
      ['apt-get', '-qq', '-o', 'DPkg::Lock::Timeout=600', 'update'],
      ['apt-get', '-qq', '-o', 'DPkg::Lock::Timeout=600', 'install', '-y', f'{base}-venv'],
      [base, '-m', 'venv', str(home / 'srgan_venv')],
      ['pip', 'install', '-q', '-U', 'pip'],
      ['pip', 'install', '-q', '-e', '.[tpu]'],
      ['python', '-m', 'srgan_jax.vgg19', 'import', '--source=keras'],
  ]
  records = _recorded_calls(tmp_path, 'vm_log')
  assert records[4][-4] == f'pwd={home / "srgan_jax"}'  # pip install -e from the checkout.
  # Installing again reuses the virtual environment.
  again = _run_install(tmp_path, worker)
  assert [call[0] for call in again] == ['apt-get', 'apt-get', 'pip', 'pip', 'python']


def test_install_from_git_replaces_an_earlier_copy(tmp_path):
  """REPO_URL after an install that copied the checkout: the copy gives way to a clone."""
  remote = tmp_path / 'remote'
  remote.mkdir()
  (remote / 'setup.py').write_text('# the project\n')
  git = ['git', '-c', 'user.name=t', '-c', 'user.email=t@example.com', '-C', str(remote)]
  for command in (['init', '-q'], ['add', '.'], ['commit', '-qm', 'one']):
    subprocess.run(git + command, check=True, capture_output=True)
  worker = _fake_worker(tmp_path, 'python3')
  home = pathlib.Path(worker['HOME'])
  (home / 'srgan_jax').mkdir()
  (home / 'srgan_jax' / 'copied.txt').write_text('from an earlier scp\n')
  calls = _run_install(tmp_path, worker, REPO_URL=str(remote), VGG_SOURCE='')
  assert (home / 'srgan_jax' / 'setup.py').read_text() == '# the project\n'
  assert not (home / 'srgan_jax' / 'copied.txt').exists()
  assert [call[:2] for call in calls][-2:] == [['pip', 'install']] * 2
  # A new commit, installed again: fetched and checked out in the same clone.
  (remote / 'setup.py').write_text('# the project, changed\n')
  subprocess.run(git + ['commit', '-qam', 'two'], check=True, capture_output=True)
  _run_install(tmp_path, worker, REPO_URL=str(remote), VGG_SOURCE='')
  assert (home / 'srgan_jax' / 'setup.py').read_text() == '# the project, changed\n'


def test_logs_and_delete(tmp_path):
  [argv] = _dry_run(tmp_path, TPU_VM, ['logs'], **TPU)
  assert argv[:6] == [*GCLOUD, 'ssh', 'sr-test'] and _flag(argv, '--worker') == '0'
  assert _flag(argv, '--command') == 'tail -n 100 -F ~/srgan_train.log'
  [argv] = _dry_run(tmp_path, TPU_VM, ['delete'], PROJECT='p', **TPU)
  assert argv == [*GCLOUD, 'delete', 'sr-test', '--quiet', '--zone=us-central2-b',
                  '--project=p']


def test_dry_run_flag_equals_variable(tmp_path):
  environment = _environment(tmp_path, FAILING_FAKE, **TPU)
  flag = _run(TPU_VM, ['--dry-run', 'create'], environment, tmp_path)
  variable = _run(TPU_VM, ['create'], {**environment, 'DRY_RUN': '1'}, tmp_path)
  assert flag.returncode == 0 and flag.stdout == variable.stdout
  assert not (tmp_path / 'fake_called').exists()


def test_all_runs_exactly_what_dry_run_prints(tmp_path):
  """`all` is create, scp, install, train; a real run calls gcloud with the same args."""
  dry = _dry_run(tmp_path, TPU_VM, ['all'], SPOT='1', **TPU)
  assert [argv[4] for argv in dry] == ['create', 'scp', 'ssh', 'ssh']
  assert 'pip install' in _flag(dry[2], '--command')
  assert MAIN in _flag(dry[3], '--command')
  result = _run(TPU_VM, ['all'], _environment(tmp_path, RECORDING_FAKE, SPOT='1', **TPU),
                tmp_path)
  assert result.returncode == 0, result.stderr
  calls = [call[:-4] for call in _recorded_calls(tmp_path)]
  # The staging folder is a fresh temporary one each time.
  assert calls[1][6] != dry[1][6] and pathlib.Path(calls[1][6]).name == 'srgan_jax'
  calls[1][6] = dry[1][6]
  assert calls == dry
  # Real runs show the commands on stderr, as the dry run does on stdout.
  assert [line for line in result.stderr.splitlines() if line.startswith('+ ')]
  assert not list((tmp_path / 'tmp').iterdir())  # The staging folder is removed.
  staged = (tmp_path / 'fake_log.files').read_text().split()
  for path in ('./setup.py', './srgan_jax/nn/models.py', './launch/tpu_vm.sh',
               './tests/system/launch_test.py'):
    assert path in staged
  assert not [path for path in staged if '/.git/' in path or path.endswith('.pyc')]


@pytest.mark.parametrize('command, variables, message', [
    ('create', {'ZONE': 'z'}, 'missing required variable(s): TPU_NAME'),
    ('delete', {}, 'missing required variable(s): TPU_NAME ZONE'),
    ('train', {'TPU_NAME': 't', 'ZONE': 'z'},
     'missing required variable(s): WORKDIR TFDS_DATA_DIR'),
    ('all', {'TPU_NAME': 't', 'ZONE': 'z', 'TFDS_DATA_DIR': 'config'},
     'missing required variable(s): WORKDIR'),
    ('train', {**TPU, 'WORKDIR': '/tmp/run'}, 'WORKDIR must be a gs:// path'),
    # Every worker of a pod reads the data: a local folder would exist on one at most.
    ('train', {**TPU, 'TFDS_DATA_DIR': '/data/tfds'},
     "TFDS_DATA_DIR must be a gs:// path (read by every worker) or 'config', got '/data/tfds'"),
    ('create', {**TPU, 'SPOT': '1', 'PREEMPTIBLE': '1'}, 'set SPOT=1 or PREEMPTIBLE=1, not both'),
    ('create', {**TPU, 'SPOT': 'yes'}, 'SPOT must be 0 or 1'),
    ('create', {**TPU, 'ACCELERATOR_TYPE': 'v9-8'},
     'no default RUNTIME_VERSION for ACCELERATOR_TYPE=v9-8; set RUNTIME_VERSION'),
    ('train', {**TPU, 'EXTRA_ARGS': "--a='b"}, 'cannot split EXTRA_ARGS'),
    ('launch', TPU, "unknown argument 'launch'"),
    ('--dry-run', TPU, 'no command given'),
])
@pytest.mark.parametrize('dry_run', ['0', '1'])
def test_tpu_vm_errors(tmp_path, command, variables, message, dry_run):
  result = _run(TPU_VM, [command],
                _environment(tmp_path, FAILING_FAKE, DRY_RUN=dry_run, **variables), tmp_path)
  assert result.returncode != 0
  assert f'tpu_vm.sh: error: {message}' in result.stderr
  assert '+ ' not in result.stdout
  assert not (tmp_path / 'fake_called').exists()


def test_gpu_local_dry_run(tmp_path):
  [argv] = _dry_run(tmp_path, GPU_LOCAL, [], WORKDIR='/data/run', GPUS='0')
  assert argv == ['env', 'CUDA_VISIBLE_DEVICES=0', 'python3', '-m', 'srgan_jax.main',
                  '--config=configs/x4.py', '--workdir=/data/run']
  [argv] = _dry_run(tmp_path, GPU_LOCAL, [], WORKDIR='gs://b/r')
  assert argv == ['env', 'python3', '-m', 'srgan_jax.main', '--config=configs/x4.py',
                  '--workdir=gs://b/r']  # All GPUs: CUDA_VISIBLE_DEVICES untouched.
  # Ubuntu 22.04: python3 is 3.10, python3.11 installed beside it.
  venv = tmp_path / 'venv'
  create, pip, install, vgg, train = _dry_run(
      tmp_path, GPU_LOCAL, ['--dry-run'], WORKDIR='w', GPUS='0,1', MEM_FRACTION='.9',
      INSTALL='1', FAKE_PYTHON_OK='python3.11', TFDS_DATA_DIR='/tfds',
      EXTRA_ARGS="--c.x='a b' $(x)", CONFIG='configs/default.py')
  python = f'{venv}/bin/python'
  assert create == ['python3.11', '-m', 'venv', str(venv)]
  assert pip == [python, '-m', 'pip', 'install', '-U', 'pip']
  assert install == [python, '-m', 'pip', 'install', '-e', '.[gpu]']
  assert vgg == [python, '-m', 'srgan_jax.vgg19', 'import', '--source=keras']
  assert train == ['env', 'CUDA_VISIBLE_DEVICES=0,1', 'XLA_PYTHON_CLIENT_MEM_FRACTION=.9',
                   python, '-m', 'srgan_jax.main', '--config=configs/default.py',
                   '--workdir=w', '--config.data.tfds_data_dir=/tfds', '--c.x=a b', '$(x)']
  # The newest suitable interpreter; CUDA 12 wheels for older drivers; PYTHON chosen.
  create, _, install, _ = _dry_run(tmp_path, GPU_LOCAL, [], WORKDIR='w', INSTALL='1',
                                   CUDA='12', VGG_SOURCE='')
  assert create[0] == 'python3.13' and install[-1] == '.[gpu-cuda12]'
  [create, *_] = _dry_run(tmp_path, GPU_LOCAL, [], WORKDIR='w', INSTALL='1', PYTHON='py')
  assert create == ['py', '-m', 'venv', str(venv)]
  # Once it exists, the virtual environment is used, not made again.
  (venv / 'bin').mkdir(parents=True)
  (venv / 'bin' / 'python').write_text(FAILING_FAKE)
  (venv / 'bin' / 'python').chmod(0o755)
  [argv] = _dry_run(tmp_path, GPU_LOCAL, [], WORKDIR='w')
  assert argv == ['env', python, '-m', 'srgan_jax.main', '--config=configs/x4.py', '--workdir=w']
  assert [argv[0] for argv in _dry_run(tmp_path, GPU_LOCAL, [], WORKDIR='w', INSTALL='1')] == [
      python] * 3 + ['env']  # pip -U, pip install, vgg19; no venv.


def test_gpu_install_extras_exist(tmp_path):
  """What gpu_local.sh installs is in setup.py: JAX's CUDA 13 wheels (what JAX recommends),
  CUDA 12 ones for older drivers."""
  setup = ast.parse((REPO / 'setup.py').read_text())
  [call] = [node for node in ast.walk(setup) if isinstance(node, ast.Call)
            and getattr(node.func, 'attr', '') == 'setup']
  extras = ast.literal_eval([k.value for k in call.keywords if k.arg == 'extras_require'][0])
  assert extras['gpu'][0].startswith('jax[cuda13]')
  assert extras['gpu-cuda12'][0].startswith('jax[cuda12]')


def test_gpu_local_runs_what_dry_run_prints(tmp_path):
  variables = {'WORKDIR': 'w', 'GPUS': '1', 'MEM_FRACTION': '0.5', 'INSTALL': '1',
               'EXTRA_ARGS': "--c.x='a b'", 'FAKE_PYTHON_OK': 'python3.12 python'}
  dry = _dry_run(tmp_path, GPU_LOCAL, [], **variables)
  process = subprocess.Popen(
      ['bash', str(GPU_LOCAL)], env=_environment(tmp_path, RECORDING_FAKE, **variables),
      cwd=tmp_path, stderr=subprocess.PIPE, text=True)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == 0, stderr
  calls = _recorded_calls(tmp_path)
  # The fakes record their own name: the venv's python is a copy named python.
  assert [call[1:-4] for call in calls] == [dry[0][1:], *(argv[1:] for argv in dry[1:4]),
                                            dry[4][4:]]
  assert [call[0] for call in calls] == ['python3.12'] + ['python'] * 4
  for call in calls:
    assert call[-4] == f'pwd={REPO}'  # Runs from the repository root.
  # Only the training job gets the GPU settings.
  assert calls[0][-2:] == ['CUDA_VISIBLE_DEVICES=unset', 'XLA_PYTHON_CLIENT_MEM_FRACTION=unset']
  assert calls[4][-2:] == ['CUDA_VISIBLE_DEVICES=1', 'XLA_PYTHON_CLIENT_MEM_FRACTION=0.5']
  # exec: the job replaces the script, so signals sent to the script reach it.
  assert calls[4][-3] == f'pid={process.pid}'


@pytest.mark.parametrize('variables, message', [
    ({}, 'missing required variable WORKDIR'),
    ({'WORKDIR': 'w', 'MEM_FRACTION': '1.5'}, 'MEM_FRACTION must be a number in (0, 1]'),
    ({'WORKDIR': 'w', 'MEM_FRACTION': '0'}, 'MEM_FRACTION must be a number in (0, 1]'),
    ({'WORKDIR': 'w', 'INSTALL': 'yes'}, 'INSTALL must be 0 or 1'),
    ({'WORKDIR': 'w', 'CUDA': '11'}, 'CUDA must be 13 or 12'),
    ({'WORKDIR': 'w', 'GPUS': '0, 1'}, 'GPUS must be comma-separated without spaces'),
    ({'WORKDIR': 'w', 'EXTRA_ARGS': '--a="b'}, 'cannot split EXTRA_ARGS'),
    # A fresh Ubuntu 22.04: python3 is 3.10, nothing newer.
    ({'WORKDIR': 'w', 'INSTALL': '1', 'FAKE_PYTHON_OK': ''},
     'no Python >= 3.11 found (JAX needs it) to create {venv}: install one (Ubuntu 22.04: '
     'sudo apt install python3.11 python3.11-venv) or set PYTHON'),
    ({'WORKDIR': 'w', 'INSTALL': '1', 'PYTHON': 'py', 'FAKE_PYTHON_OK': 'python3'},
     'PYTHON=py is not Python >= 3.11, which JAX needs'),
    ({'WORKDIR': 'w', 'FAKE_PYTHON_OK': ''},
     'python3 is not Python >= 3.11 (JAX needs it): run with INSTALL=1 to create {venv}, or '
     'set PYTHON'),
])
def test_gpu_local_errors(tmp_path, variables, message):
  result = _run(GPU_LOCAL, [], _environment(tmp_path, FAILING_FAKE, **variables), tmp_path)
  assert result.returncode != 0
  lines = [line for line in result.stderr.splitlines() if 'gpu_local.sh: error:' in line]
  assert len(lines) == 1, result.stderr  # One line says what is wrong.
  assert lines[0].startswith(f'gpu_local.sh: error: {message.format(venv=tmp_path / "venv")}')
  assert not (tmp_path / 'fake_called').exists()


def test_gpu_local_says_when_it_cannot_make_the_virtual_environment(tmp_path):
  """Debian and Ubuntu ship venv separately (python3.X-venv); without it, one line says so."""
  result = _run(GPU_LOCAL, [], _environment(tmp_path, RECORDING_FAKE, WORKDIR='w',
                                            INSTALL='1', FAKE_PYTHON_OK='python3.12',
                                            FAKE_VENV_FAILS='1'), tmp_path)
  assert result.returncode == 1
  assert result.stderr.splitlines()[-1] == (
      f'gpu_local.sh: error: cannot create the virtual environment {tmp_path / "venv"} with '
      'python3.12 (Debian/Ubuntu: sudo apt install python3.12-venv)')
  assert [call[0] for call in _recorded_calls(tmp_path)] == ['python3.12']  # Nothing after.


# Spot TPUs through queued resources, whose startup script installs and trains.
QUEUED_TPU = {**TPU, 'QUEUED': '1', 'SPOT': '1', 'REPO_URL': 'https://example.com/srgan.git'}


def _as_root(command: str) -> str:
  """The remote script a QUEUED=1 launcher sends to root's shell (the job's owner)."""
  words = shlex.split(command)
  assert words[:4] == ['sudo', '-H', 'bash', '-c'] and len(words) == 5, command
  return words[4]


def test_queued_spot_create_sends_a_startup_script_that_installs_and_trains(tmp_path):
  [argv] = _dry_run(tmp_path, TPU_VM, ['create'], **QUEUED_TPU)
  script = pathlib.Path(_flag(argv, '--metadata-from-file').removeprefix('startup-script='))
  assert argv == [*QUEUED, 'create', 'sr-test', '--accelerator-type=v5litepod-8',
                  '--runtime-version=v2-alpha-tpuv5-lite', '--node-id=sr-test', '--spot',
                  f'--metadata-from-file=startup-script={script}', '--zone=us-central2-b']
  assert script.parent == tmp_path / 'tmp'  # A dry run leaves it there, for reading.
  # The same install and train scripts that `install` and `train` send (tested on a
  # fake worker above), run as root at every boot.
  install = _flag(_dry_run(tmp_path, TPU_VM, ['install'], **TPU, REPO_URL=QUEUED_TPU['REPO_URL'])
                  [-1], '--command')
  train = _flag(_dry_run(tmp_path, TPU_VM, ['train'], **TPU)[-1], '--command')
  assert 'git clone --quiet https://example.com/srgan.git ~/srgan_jax' in install
  assert MAIN in train
  lines = script.read_text().splitlines()
  assert lines[0] == '#!/bin/bash' and all(line.startswith('# ') for line in lines[1:4])
  assert lines[4:] == ['export HOME=/root', 'cd "$HOME"',
                       'rm -f ~/srgan_train.pid  # A job of an earlier boot: its pid may be '
                       'reused now.', f'( {install} )', f'( {train} )']
  result = subprocess.run(['bash', '-n', str(script)], capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stderr


def test_queued_all_only_creates_and_recreate_deletes_first(tmp_path):
  """The queued VM comes when Google grants it: its startup script does the rest."""
  dry = _dry_run(tmp_path, TPU_VM, ['all'], **QUEUED_TPU)
  assert [argv[3:5] for argv in dry] == [['queued-resources', 'create']]
  delete, create = _dry_run(tmp_path, TPU_VM, ['recreate'], PROJECT='p', **QUEUED_TPU)
  assert delete == [*QUEUED, 'delete', 'sr-test', '--force', '--quiet', '--zone=us-central2-b',
                    '--project=p']
  assert create[:6] == [*QUEUED, 'create', 'sr-test']
  # Without QUEUED: the TPU VM itself.
  delete, create = _dry_run(tmp_path, TPU_VM, ['recreate'], SPOT='1', **TPU)
  assert delete == [*GCLOUD, 'delete', 'sr-test', '--quiet', '--zone=us-central2-b']
  assert create[:6] == [*GCLOUD, 'create', 'sr-test'] and '--spot' in create


def test_logs_of_any_or_all_workers(tmp_path):
  follow = 'tail -n 100 -F ~/srgan_train.log'
  [argv] = _dry_run(tmp_path, TPU_VM, ['logs', '--worker=3'], **TPU)
  assert argv == [*GCLOUD, 'ssh', 'sr-test', '--worker=3', f'--command={follow}',
                  '--zone=us-central2-b']
  [argv] = _dry_run(tmp_path, TPU_VM, ['--worker=all', 'logs'], **TPU)
  prefixed = f'{follow} 2>&1 | sed -u "s/^/$(hostname): /"'
  assert argv == [*GCLOUD, 'ssh', 'sr-test', '--worker=all', f'--command={prefixed}',
                  '--zone=us-central2-b']
  # Each line gets its worker's name.
  result = subprocess.run(['bash', '-c', prefixed.replace(follow, 'printf "a\\nb\\n"')],
                          capture_output=True, text=True, check=True)
  host = socket.gethostname()
  assert result.stdout == f'{host}: a\n{host}: b\n'
  # A queued VM's job belongs to root.
  [argv] = _dry_run(tmp_path, TPU_VM, ['logs', '--worker=all'], **QUEUED_TPU)
  assert _as_root(_flag(argv, '--command')) == prefixed


def test_stop_ends_the_job_on_every_worker_after_its_checkpoint(tmp_path):
  [argv] = _dry_run(tmp_path, TPU_VM, ['stop'], **TPU)
  assert argv[:7] == [*GCLOUD, 'ssh', 'sr-test', '--worker=all']
  remote = _flag(argv, '--command')
  [queued] = _dry_run(tmp_path, TPU_VM, ['stop'], **QUEUED_TPU)
  assert _as_root(_flag(queued, '--command')) == remote
  # On a fake worker: a job that takes a while to save when it gets SIGTERM, started
  # in the background as `train` starts it (not a child of this process, which would
  # leave it a zombie that `kill -0` still finds).
  home = tmp_path / 'vm'
  home.mkdir()
  job = ('trap "sleep 1; echo saved > saved; exit 75" TERM; touch started; '
         'while :; do sleep 0.1; done')
  started = subprocess.run(['bash', '-c', f'nohup bash -c {shlex.quote(job)} >/dev/null 2>&1 '
                            '</dev/null & echo $!'], cwd=home, capture_output=True, text=True,
                           check=True)
  pid = int(started.stdout)
  try:
    (home / 'srgan_train.pid').write_text(f'{pid}\n')
    deadline = time.monotonic() + 30
    while not (home / 'started').exists() and time.monotonic() < deadline:
      time.sleep(0.05)
    result = subprocess.run(['bash', '-c', remote], env={**os.environ, 'HOME': str(home)},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    host = socket.gethostname()
    assert result.stdout == (f'{host}: SIGTERM sent to pid {pid}; waiting for its '
                             f'checkpoint\n{host}: stopped\n')
    assert (home / 'saved').read_text() == 'saved\n'  # Returned after the job ended.
  finally:
    with contextlib.suppress(ProcessLookupError):
      os.kill(pid, signal.SIGKILL)
  again = subprocess.run(['bash', '-c', remote], env={**os.environ, 'HOME': str(home)},
                         capture_output=True, text=True, timeout=60, check=True)
  assert again.stdout == f'{socket.gethostname()}: not training\n'


@pytest.mark.parametrize('args, variables, message', [
    (['create'], {**QUEUED_TPU, 'REPO_URL': ''}, 'missing required variable(s): REPO_URL '
     f'(see {TPU_VM} --help)'),
    (['install'], {**QUEUED_TPU, 'REPO_URL': ''}, 'missing required variable(s): REPO_URL '
     f'(see {TPU_VM} --help)'),
    (['all'], {**QUEUED_TPU, 'WORKDIR': ''},
     f'missing required variable(s): WORKDIR (see {TPU_VM} --help)'),
    (['create'], {**QUEUED_TPU, 'EXTRA_ARGS': "--a='b"},
     'cannot split EXTRA_ARGS (unbalanced quotes?)'),
    (['create'], {**QUEUED_TPU, 'SPOT': '0', 'PREEMPTIBLE': '1'},
     'QUEUED=1 takes SPOT=1, not PREEMPTIBLE=1'),
    (['create'], {**TPU, 'QUEUED': 'yes'}, "QUEUED must be 0 or 1, got 'yes'"),
    (['stop', '--worker=1'], TPU, '--worker is for logs, not stop'),
    (['logs', '--worker=first'], TPU, "--worker must be a worker number or all, got 'first'"),
])
def test_queued_stop_and_logs_errors(tmp_path, args, variables, message):
  result = _run(TPU_VM, args, _environment(tmp_path, FAILING_FAKE, DRY_RUN='1', **variables),
                tmp_path)
  assert result.returncode != 0
  assert result.stderr.splitlines()[-1] == f'tpu_vm.sh: error: {message}', result.stderr
  assert '+ ' not in result.stdout


def test_accelerator_check_tiny_writes_every_output(tmp_path):
  """launch/accelerator_check.sh --tiny: every stage ends well, and what it writes
  parses (the device run writes the same files at full size)."""
  for name in ('T91', 'BSD200', 'Set5'):
    image_set(name)
  output = tmp_path / 'check'
  environment = {**os.environ, 'PYTHON': sys.executable}
  result = subprocess.run(['bash', str(ACCELERATOR_CHECK), '--tiny', str(output)], cwd=tmp_path,
                          env=environment, capture_output=True, text=True, timeout=4 * 3600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  summary = json.loads((output / 'summary.json').read_text())
  stages = {stage['stage']: stage for stage in summary['stages']}
  benchmarks = [f'benchmark_{run}_8_{dtype}' for run in ('srresnet', 'srgan')
                for dtype in ('float32', 'bfloat16')]
  benchmarks += [f'benchmark_inference_{dtype}' for dtype in ('float32', 'bfloat16')]
  assert set(stages) == {'environment', 'tests', 'train', 'eval_set5', *benchmarks}
  failed = {name: stage for name, stage in stages.items() if stage['rc']}
  assert not failed, (failed, {name: (output / 'logs' / f'{name}.log').read_text()[-2000:]
                               for name in failed})
  assert json.loads((output / 'environment.json').read_text())['backend'] == 'cpu'
  assert 'failures="0"' in (output / 'tests.xml').read_text()
  for name in benchmarks:
    report = json.loads((output / f'{name}.json').read_text())
    rows = report['results']
    assert rows and all(row['images_per_s'] > 0 and row['torch']['images_per_s'] > 0
                        for row in rows), name
    if 'inference' not in name:  # 1 and K=2 steps per call.
      assert sorted(row['steps_per_call'] for row in rows) == [1, 2], name
  assert (output / 'train' / 'config.json').is_file()
  assert [path.name for path in (output / 'train' / 'checkpoints').iterdir()
          if path.name.isdigit()] == ['4']
  evaluation = json.loads((output / 'eval_set5.json').read_text())
  assert 'psnr' in json.dumps(evaluation).lower()
