"""The README's commands, as printed: run from a fresh copy, installed, and in CI.

A newcomer copies the README's commands verbatim, relative paths included; these
tests read the commands out of README.md, so the two cannot drift apart.
"""

import ast
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

from absl import flags
import conftest
from conftest import REPO, image_set
import numpy as np
from PIL import Image
import pytest
from ml_collections import config_flags

from srgan_jax.training import checkpointing

# Runs commands in subprocesses: a system test (`pytest -m "not system"` skips it).
pytestmark = pytest.mark.system

README = (REPO / 'README.md').read_text()
# Step counts only: the command is otherwise the README's, relative workdir included.
SHORT_RUN = ['--config.srresnet.num_steps=4', '--config.srgan.num_steps=2',
             '--config.log_every_steps=2', '--config.checkpoint_every_steps=2',
             '--config.eval_every_steps=1000']


def readme_commands() -> list[str]:
  """The indented command lines of the README (code blocks), in order."""
  return [line.strip() for line in README.splitlines()
          if line.startswith('    ') and re.match(r'\s+(python|pip)', line)]


def readme_command(pattern: str) -> str:
  matches = [command for command in readme_commands() if re.search(pattern, command)]
  assert len(matches) == 1, f'expected one README command matching {pattern!r}: {matches}'
  return matches[0]


def _shell(command: str, cwd: pathlib.Path, env: dict[str, str] | None = None) -> str:
  """Runs a README command line as a user's shell would, with this Python's `python`."""
  path = os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH']
  result = subprocess.run(['bash', '-c', command], cwd=cwd, capture_output=True, text=True,
                          timeout=900, env={**os.environ, 'PATH': path, **(env or {})})
  assert result.returncode == 0, f'{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}'
  return result.stdout


def _run(argv: list[str], cwd: pathlib.Path, env: dict[str, str] | None = None) -> str:
  result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})})
  assert result.returncode == 0, f'{argv}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}'
  return result.stdout


def _fresh_copy(destination: pathlib.Path) -> pathlib.Path:
  """The repository's tracked files, as a fresh clone would have them."""
  listed = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, capture_output=True,
                          check=True).stdout.decode().split('\0')
  for name in filter(None, listed):
    source, target = REPO / name, destination / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
      target.symlink_to(os.readlink(source))
    elif source.is_file():
      shutil.copy2(source, target)
  return destination


def test_ci_runs_the_readme_set_up_and_test_commands_verbatim():
  ci_lines = [line.strip() for line in (REPO / '.ci' / 'run').read_text().splitlines()]
  for pattern in (r'venv', r'pytest'):
    assert readme_command(pattern) in ci_lines, pattern


def test_readme_main_job_verbatim_from_a_fresh_copy_then_evaluate_and_super_resolve(tmp_path):
  """The main job as printed (relative --workdir), only shortened; then the README's
  next commands on that relative workdir, from the same directory."""
  copy = _fresh_copy(tmp_path / 'srgan_jax_clone')
  set5 = image_set('Set5')
  main = readme_command(r'srgan_jax\.main --config=configs/quickstart\.py')
  assert main.endswith('--workdir=runs/quickstart')
  main = main.split('&&')[-1]  # Installed already, editable, as `pip install -e .` does.
  stdout = _shell(' '.join([main, *SHORT_RUN]), cwd=copy)
  workdir = copy / 'runs' / 'quickstart'
  assert str(workdir) in stdout
  assert checkpointing.latest_step(str(workdir)) == 6
  assert sorted(path.name for path in (workdir / 'checkpoints').iterdir()) == ['2', '4', '6']
  assert list(workdir.glob('events.out.tfevents.*'))

  # The README's next commands, verbatim, on the relative workdir.
  command = readme_command(r'srgan_jax\.super_resolve --workdir=runs/quickstart')
  _shell(command, cwd=copy)
  output = copy / re.search(r'--output=(\S+)', command)[1]
  with Image.open(output) as image:
    assert image.size == (4 * 451, 4 * 300)  # scikit-image's chelsea.png, x4.
  stdout = _shell(readme_command(r'srgan_jax\.evaluate --workdir=runs/quickstart'), cwd=copy,
                  env={'SRGAN_DATASETS': str(set5.parent)})
  assert 'Set5' in stdout and 'Set14' in stdout and 'bicubic PSNR' in stdout


def test_installed_package_works_from_any_directory(tmp_path):
  """`pip install .` (not editable): the entry points run with no checkout on sys.path."""
  site = tmp_path / 'site'
  _run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation',
        '--target', str(site), str(REPO)], cwd=tmp_path)
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  env = {'PYTHONPATH': str(site)}  # Ahead of the editable install of the test venv.
  where = _run([sys.executable, '-c', 'import srgan_jax; print(srgan_jax.__file__)'],
               cwd=elsewhere, env=env)
  assert where.startswith(str(site)), where
  images = elsewhere / 'images'
  images.mkdir()
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(images / 'a.png')

  # Training with a shipped config, by name and by path, with a relative workdir.
  _run([sys.executable, '-m', 'srgan_jax.main', '--config=quickstart', '--workdir=run',
        '--config.srresnet.num_steps=2', '--config.srgan.num_steps=0',
        '--config.generator.num_blocks=1', '--config.generator.features=8',
        '--config.generator.upsample_features=32', '--config.batch_size=2',
        '--config.data.crop_size=32', '--config.eval_folders=("images",)'],
       cwd=elsewhere, env=env)
  assert checkpointing.latest_step(str(elsewhere / 'run')) == 2
  stdout = _run([sys.executable, '-m', 'srgan_jax.main',
                 f'--config={site}/srgan_jax/configs/quickstart.py', '--workdir=run',
                 '--mode=evaluate', '--step=2', '--config.eval_folders=("images",)'],
                cwd=elsewhere, env=env)
  assert 'images' in stdout and 'bicubic PSNR' in stdout
  _run([sys.executable, '-m', 'srgan_jax.evaluate', '--workdir=run', '--data=./images',
        '--output=out/results.json', '--save_dir=evaluated', '--compare'], cwd=elsewhere, env=env)
  results = json.loads((elsewhere / 'out' / 'results.json').read_text())
  assert results['images']['images'] == 1 and 'bicubic' in results['images']
  with Image.open(elsewhere / 'evaluated' / 'images' / 'compare' / 'a.png') as comparison:
    assert comparison.size == (4 * 40, 32)  # LR | bicubic | SR | HR.
  _run([sys.executable, '-m', 'srgan_jax.super_resolve', '--workdir=run', '--input=images',
        '--output=sr'], cwd=elsewhere, env=env)
  assert (elsewhere / 'sr' / 'a.png').is_file()
  _run([sys.executable, '-m', 'srgan_jax.benchmark', '--run=inference', '--widths=1,8',
        '--inference_sizes=8', '--steps=1', '--warmup=0', '--json=bench.json'],
       cwd=elsewhere, env=env)
  assert (elsewhere / 'bench.json').is_file()

  torch, model = conftest.torch_vgg19()
  torch.save(model.state_dict(), elsewhere / 'vgg19.pth')
  stdout = _run([sys.executable, '-m', 'srgan_jax.vgg19', 'import', '--source=vgg19.pth',
                 '--output=weights/vgg19.npz'], cwd=elsewhere, env=env)
  assert (elsewhere / 'weights' / 'vgg19.npz').is_file(), stdout


def _documented_overrides() -> list[str]:
  """Every `--config.FIELD=VALUE` the README and the configs' docstrings show."""
  texts = [README] + [path.read_text() for path in (REPO / 'srgan_jax' / 'configs').glob('*.py')]
  found = set()
  for text in texts:
    found.update(re.findall(r'--config\.[a-z_.]+=(?:"[^"]*"|\'[^\']*\'|[^\s`,)]+)', text))
  # `--config.FIELD=...` describes the syntax; it is not an override to parse.
  return sorted(override for override in found if not override.endswith('=...'))


# Placeholders the README uses for a value of the user's: a real value of that kind.
_PLACEHOLDERS = {'OTHER_WORKDIR': 'runs/other', 'PATH': 'weights/vgg19.npz'}


def _expected(text: str, default: object) -> object:
  """What a flag value should become, given the type of the field's default."""
  if isinstance(default, bool):
    return text.lower() in ('true', '1')
  if isinstance(default, (int, float)):
    return type(default)(ast.literal_eval(text))
  if isinstance(default, tuple):
    return tuple(ast.literal_eval(text))
  if default is None and re.fullmatch(r'[0-9.e+-]+', text):  # An unset float field.
    return float(text)
  return text.strip('"\'')


@pytest.mark.parametrize('override', _documented_overrides())
def test_documented_override_parses_from_the_command_line(override):
  """Through the real flag parser, with the paper's config file, as main parses it."""
  (argument,) = shlex.split(override)  # As the shell passes it: quotes removed.
  field, value = argument[len('--config.'):].split('=', 1)
  value = _PLACEHOLDERS.get(value, value)
  path = str(REPO / 'configs' / 'x4.py')
  default = _field(_parse(['main', f'--config={path}']), field)
  for one in value.split('|'):  # `mse|vgg22|vgg54`: each alternative.
    parsed = _parse(['main', f'--config={path}', f'--config.{field}={one}'])
    assert _field(parsed, field) == _expected(one, default), (field, one)


def _parse(argv: list[str]):
  """The config that main's flag (same definition) makes of a command line."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def _field(config, dotted: str):
  for part in dotted.split('.'):
    config = config[part]
  return config


def test_documented_overrides_include_the_placeholder_fields():
  """vgg_weights, init_from and tfds_data_dir default to unset and still take a path."""
  overrides = ' '.join(_documented_overrides())
  for field in ('srgan.init_from', 'srresnet.init_from', 'srgan.vgg_weights',
                'data.tfds_data_dir'):
    assert f'--config.{field}=' in overrides, field
