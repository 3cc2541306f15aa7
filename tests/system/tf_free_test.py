"""The package works beside a JAX that has no TensorFlow, tensorflow-datasets or tensorboard.

An accelerator image (issue 25) ships JAX, flax, optax and orbax but none of those;
``pip install --no-deps -e .`` there must train with the device data source, evaluate,
super-resolve and benchmark. Each command here runs in a subprocess where the three
packages cannot be imported (``sys.modules[name] = None``, which is how Python marks
a module as absent: ``import`` raises ImportError, ``importlib.util.find_spec``
returns None), whether or not this machine has them.
"""

import json
import os
import pathlib
import subprocess
import sys

from conftest import REPO, write_tiny_image_sets
import numpy as np
from PIL import Image
import pytest

pytestmark = pytest.mark.system

BLOCKED = ('tensorflow', 'tensorflow_datasets', 'tensorboard')
# Runs `python -m MODULE ARGS` (argv[1:]) with BLOCKED unimportable, then checks that
# none of them, nor clu's TensorBoard writer, was imported after all.
LAUNCHER = f'''\
import runpy
import sys

for name in {BLOCKED!r}:
  sys.modules[name] = None
module, sys.argv = sys.argv[1], sys.argv[1:]
try:
  runpy.run_module(module, run_name='__main__', alter_sys=True)
finally:
  loaded = [name for name in sys.modules if name.split('.')[0] in {BLOCKED!r}
            and sys.modules[name] is not None]
  assert not loaded, f'imported {{loaded}}'
'''
# The core modules, imported all at once: none may need the blocked packages.
CORE_MODULES = (
    'srgan_jax.nn.models', 'srgan_jax.nn.conv', 'srgan_jax.nn.losses', 'srgan_jax.training.steps',
    'srgan_jax.training.loop', 'srgan_jax.training.checkpointing', 'srgan_jax.data.inputs',
    'srgan_jax.data.on_device', 'srgan_jax.evaluation.metrics', 'srgan_jax.evaluation.niqe',
    'srgan_jax.evaluation.curves', 'srgan_jax.evaluation.summaries', 'srgan_jax.benchmark',
    'srgan_jax.super_resolve', 'srgan_jax.evaluate', 'srgan_jax.main', 'srgan_jax.plot',
    'srgan_jax.device_data')
CONFIG = '''\
from conftest import tiny_run_config

def get_config():
  config = tiny_run_config(__import__('pathlib').Path({root!r}), srresnet_steps=2,
                           srgan_steps=2)
  config.data.source = {source!r}
  return config
'''


def run_blocked(module: str, *args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
  """``python -m module args`` with BLOCKED unimportable, on the CPU."""
  launcher = cwd / 'launcher.py'
  launcher.write_text(LAUNCHER)
  env = {**os.environ, 'PYTHONPATH': f'{REPO}{os.pathsep}{REPO / "tests"}',
         'JAX_PLATFORMS': 'cpu'}
  env.pop('SRGAN_JAX_DEBUG', None)
  return subprocess.run([sys.executable, str(launcher), module, *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=1500)  # Hangs only.


def shown(result: subprocess.CompletedProcess) -> str:
  return (f'exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\n'
          f'stderr:\n{result.stderr[-5000:]}')


def test_core_modules_import_without_tensorflow(tmp_path):
  script = tmp_path / 'imports.py'
  script.write_text(''.join(f'import {name}\n' for name in CORE_MODULES))
  result = run_blocked('imports', cwd=tmp_path)
  assert result.returncode == 0, shown(result)


def test_train_evaluate_super_resolve_and_plot_without_tensorflow(tmp_path):
  write_tiny_image_sets(tmp_path)
  (tmp_path / 'config.py').write_text(CONFIG.format(root=str(tmp_path), source='device'))
  workdir = tmp_path / 'run'
  result = run_blocked('srgan_jax.main', '--config=config.py', f'--workdir={workdir}',
                       cwd=tmp_path)
  assert result.returncode == 0, shown(result)
  assert 'No TensorBoard summaries' in result.stderr, shown(result)
  assert not list(workdir.glob('events.out.tfevents.*'))
  assert (workdir / 'checkpoints' / '4').is_dir(), sorted(workdir.rglob('*'))
  # Both phases' losses and the final evaluation, as TensorBoard would have had them.
  lines = [json.loads(line) for path in workdir.glob('summaries.*.jsonl')
           for line in path.read_text().splitlines()]
  tags = {(line['tag'], line['step']) for line in lines}
  assert {('train/srresnet/loss', 2), ('train/srgan/adversarial_loss', 4), ('eval/eval/psnr', 4),
          ('eval/eval/bicubic_psnr', 4)} <= tags, sorted(tags)
  assert all(np.isfinite(line['value']) for line in lines), lines
  assert list((workdir / 'summary_images').rglob('*.png')), 'no sample images'

  # PSNR and SSIM (NIQE, imported above, is JAX alone too, but slow to compile).
  result = run_blocked('srgan_jax.evaluate', f'--workdir={workdir}', f'--data={tmp_path / "eval"}',
                       '--metrics=', f'--output={tmp_path / "results.json"}', cwd=tmp_path)
  assert result.returncode == 0, shown(result)
  scores = json.loads((tmp_path / 'results.json').read_text())['eval']
  assert scores['images'] == 2 and np.isfinite([scores['psnr'], scores['ssim']]).all(), scores

  result = run_blocked('srgan_jax.super_resolve', f'--workdir={workdir}',
                       f'--input={tmp_path / "eval" / "img00.png"}',
                       f'--output={tmp_path / "sr.png"}', cwd=tmp_path)
  assert result.returncode == 0, shown(result)
  assert Image.open(tmp_path / 'sr.png').size == (160, 128)  # 40x32, x4.

  # The JSON-lines summaries are what srgan_jax.plot reads here.
  result = run_blocked('srgan_jax.plot', f'--workdir={workdir}', f'--output={tmp_path / "c.png"}',
                       cwd=tmp_path)
  assert result.returncode == 0, shown(result)
  assert Image.open(tmp_path / 'c.png').size[0] > 100


@pytest.mark.parametrize('source, missing', [('folders', 'tensorflow'),
                                             ('tfds', 'tensorflow and tensorflow_datasets')])
def test_tf_data_source_without_tensorflow_is_one_line(tmp_path, source, missing):
  write_tiny_image_sets(tmp_path)
  (tmp_path / 'config.py').write_text(CONFIG.format(root=str(tmp_path), source=source))
  result = run_blocked('srgan_jax.main', '--config=config.py', f'--workdir={tmp_path / "run"}',
                       cwd=tmp_path)
  assert result.returncode == 2, shown(result)
  assert 'Traceback' not in result.stderr, shown(result)
  last = result.stderr.strip().splitlines()[-1]
  assert f"data.source='{source}' reads through tf.data, which needs {missing}" in last, last
  assert "data.source='device'" in last, last
  assert not (tmp_path / 'run').exists()
