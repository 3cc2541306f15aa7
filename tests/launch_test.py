"""Tests of launch/tpu_vm.sh and launch/gpu_local.sh, without a cloud or a GPU.

Fakes of `gcloud` and `python3` come first on PATH. In dry runs they fail loudly if
called, which proves that a dry run only prints; elsewhere they record their
arguments, which shows that a real run executes exactly what the dry run prints.
The remote scripts the TPU launcher sends over ssh are parsed by bash, and the
training one is run here against a fake ~/srgan_venv.
"""

import os
import pathlib
import shlex
import signal
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
TPU_VM = REPO / 'launch' / 'tpu_vm.sh'
GPU_LOCAL = REPO / 'launch' / 'gpu_local.sh'
GCLOUD = ['gcloud', 'compute', 'tpus', 'tpu-vm']
TPU = {'TPU_NAME': 'sr-test', 'ZONE': 'us-central2-b', 'WORKDIR': 'gs://bucket/run'}
MAIN = 'python -m srgan_jax.main --config=configs/x4.py --workdir=gs://bucket/run'

# Called in a dry run: a bug. Says so, leaves a trace, and fails.
FAILING_FAKE = """#!/bin/bash
echo "fake $(basename "$0") was called: $*" >&2
touch "$FAKE_CALLED"
exit 97
"""

# Appends its name and arguments (NUL-separated, one record per line) to $FAKE_LOG,
# with the environment variables the launchers set; for `gcloud ... scp` also the
# files it was asked to copy, since the staged copy is deleted when the script ends.
RECORDING_FAKE = r"""#!/bin/bash
{
  printf '%s\0' "$(basename "$0")" "$@" "pwd=$PWD" "pid=$$" \
    "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}" \
    "XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION-unset}"
  printf '\n'
} >> "$FAKE_LOG"
if [ "$4" = scp ]; then (cd "$6" && find . -type f | sort) > "$FAKE_LOG.files"; fi
"""


def _environment(tmp_path: pathlib.Path, fake: str, **variables: str) -> dict[str, str]:
  """A clean environment: fakes first on PATH, HOME and TMPDIR inside tmp_path."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir(exist_ok=True)
  for name in ('gcloud', 'python3', 'python', 'pip'):
    (bin_dir / name).write_text(fake)
    (bin_dir / name).chmod(0o755)
  (tmp_path / 'tmp').mkdir(exist_ok=True)
  environment = {
      'PATH': f'{bin_dir}:{os.environ["PATH"]}',
      'HOME': str(tmp_path / 'home'),
      'TMPDIR': str(tmp_path / 'tmp'),
      'FAKE_CALLED': str(tmp_path / 'fake_called'),
      'FAKE_LOG': str(tmp_path / 'fake_log'),
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
  return [shlex.split(line[2:]) for line in lines]


def _recorded_calls(tmp_path: pathlib.Path) -> list[list[str]]:
  """The calls of RECORDING_FAKE: [name, *args, pwd=, pid=, CUDA_...=, XLA_...=]."""
  log = tmp_path / 'fake_log'
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


@pytest.mark.parametrize('accelerator, version', [
    ('v4-8', 'tpu-ubuntu2204-base'),
    ('v4-32', 'tpu-ubuntu2204-base'),
    ('v5litepod-8', 'v2-alpha-tpuv5-lite'),
    ('v5litepod-32', 'v2-alpha-tpuv5-lite'),
    ('v5p-8', 'v2-alpha-tpuv5'),
    ('v6e-8', 'v2-alpha-tpuv6e'),
])
def test_create_derives_runtime_version(tmp_path, accelerator, version):
  [argv] = _dry_run(tmp_path, TPU_VM, ['create'], ACCELERATOR_TYPE=accelerator, **TPU)
  assert argv == [*GCLOUD, 'create', 'sr-test', f'--accelerator-type={accelerator}',
                  f'--version={version}', '--zone=us-central2-b']


def test_create_options(tmp_path):
  [argv] = _dry_run(tmp_path, TPU_VM, ['create'], RUNTIME_VERSION='v2-alpha-custom',
                    PROJECT='my-project', SPOT='1', **TPU)
  assert argv[:6] == [*GCLOUD, 'create', 'sr-test']
  assert _flag(argv, '--accelerator-type') == 'v5litepod-8'  # The default.
  assert _flag(argv, '--version') == 'v2-alpha-custom'
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
  [argv] = _dry_run(tmp_path, TPU_VM, ['train'], TFDS_DATA_DIR='gs://bucket/tfds', **TPU)
  assert argv[:6] == [*GCLOUD, 'ssh', 'sr-test'] and _flag(argv, '--worker') == 'all'
  remote = _flag(argv, '--command')
  assert f'nohup ~/srgan_venv/bin/{MAIN} --config.data.tfds_data_dir=gs://bucket/tfds' in remote
  assert '>>~/srgan_train.log' in remote
  _check_remote_syntax(argv)


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
        '--workdir=gs://bucket/run', '--config.batch_size=32', '--config.name=a b',
        '--config.x=$(touch', f'{tmp_path}/x)', "it's"]
    assert (home / 'srgan_train.log').read_text() == 'training\n'
    second = subprocess.run(remote, env=environment, capture_output=True, text=True,
                            timeout=30, check=False)
    assert second.returncode == 1 and f'already training, pid {pid}' in second.stderr
  finally:
    os.kill(pid, signal.SIGTERM)
  assert not (tmp_path / 'x').exists()


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
  for path in ('./setup.py', './srgan_jax/models.py', './launch/tpu_vm.sh',
               './tests/launch_test.py'):
    assert path in staged
  assert not [path for path in staged if '/.git/' in path or path.endswith('.pyc')]


@pytest.mark.parametrize('command, variables, message', [
    ('create', {'ZONE': 'z'}, 'missing required variable(s): TPU_NAME'),
    ('delete', {}, 'missing required variable(s): TPU_NAME ZONE'),
    ('train', {'TPU_NAME': 't', 'ZONE': 'z'}, 'missing required variable(s): WORKDIR'),
    ('all', {'TPU_NAME': 't', 'ZONE': 'z'}, 'missing required variable(s): WORKDIR'),
    ('train', {**TPU, 'WORKDIR': '/tmp/run'}, 'WORKDIR must be a gs:// path'),
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
  install, vgg, train = _dry_run(tmp_path, GPU_LOCAL, ['--dry-run'], WORKDIR='w',
                                 GPUS='0,1', MEM_FRACTION='.9', INSTALL='1', PYTHON='py',
                                 TFDS_DATA_DIR='/tfds', EXTRA_ARGS="--c.x='a b' $(x)",
                                 CONFIG='configs/default.py')
  assert install == ['py', '-m', 'pip', 'install', '-e', '.[gpu]']
  assert vgg == ['py', '-m', 'srgan_jax.vgg19', 'import', '--source=keras']
  assert train == ['env', 'CUDA_VISIBLE_DEVICES=0,1', 'XLA_PYTHON_CLIENT_MEM_FRACTION=.9',
                   'py', '-m', 'srgan_jax.main', '--config=configs/default.py',
                   '--workdir=w', '--config.data.tfds_data_dir=/tfds', '--c.x=a b',
                   '$(x)']


def test_gpu_local_runs_what_dry_run_prints(tmp_path):
  variables = {'WORKDIR': 'w', 'GPUS': '1', 'MEM_FRACTION': '0.5', 'INSTALL': '1',
               'EXTRA_ARGS': "--c.x='a b'"}
  dry = _dry_run(tmp_path, GPU_LOCAL, [], **variables)
  process = subprocess.Popen(
      ['bash', str(GPU_LOCAL)], env=_environment(tmp_path, RECORDING_FAKE, **variables),
      cwd=tmp_path, stderr=subprocess.PIPE, text=True)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == 0, stderr
  calls = _recorded_calls(tmp_path)
  assert [call[:-4] for call in calls] == [dry[0], dry[1], dry[2][3:]]
  for call in calls:
    assert call[-4] == f'pwd={REPO}'  # Runs from the repository root.
  # Only the training job gets the GPU settings.
  assert calls[0][-2:] == ['CUDA_VISIBLE_DEVICES=unset', 'XLA_PYTHON_CLIENT_MEM_FRACTION=unset']
  assert calls[2][-2:] == ['CUDA_VISIBLE_DEVICES=1', 'XLA_PYTHON_CLIENT_MEM_FRACTION=0.5']
  # exec: the job replaces the script, so signals sent to the script reach it.
  assert calls[2][-3] == f'pid={process.pid}'


@pytest.mark.parametrize('variables, message', [
    ({}, 'missing required variable WORKDIR'),
    ({'WORKDIR': 'w', 'MEM_FRACTION': '1.5'}, 'MEM_FRACTION must be a number in (0, 1]'),
    ({'WORKDIR': 'w', 'MEM_FRACTION': '0'}, 'MEM_FRACTION must be a number in (0, 1]'),
    ({'WORKDIR': 'w', 'INSTALL': 'yes'}, 'INSTALL must be 0 or 1'),
    ({'WORKDIR': 'w', 'GPUS': '0, 1'}, 'GPUS must be comma-separated without spaces'),
    ({'WORKDIR': 'w', 'EXTRA_ARGS': '--a="b'}, 'cannot split EXTRA_ARGS'),
])
def test_gpu_local_errors(tmp_path, variables, message):
  result = _run(GPU_LOCAL, [], _environment(tmp_path, FAILING_FAKE, **variables), tmp_path)
  assert result.returncode != 0
  assert f'gpu_local.sh: error: {message}' in result.stderr
  assert not (tmp_path / 'fake_called').exists()
