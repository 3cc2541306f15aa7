"""python -m srgan_jax.export --format: a verified file and its card, or one line and exit 2."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from srgan_jax.inference import exports

pytestmark = pytest.mark.system

REPO = pathlib.Path(__file__).resolve().parents[2]


def _export(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'srgan_jax.export', *args], cwd=REPO,
                        env={**os.environ, 'PYTHONPATH': str(REPO)}, capture_output=True,
                        text=True, timeout=300)


def test_stablehlo_export_of_a_shipped_model_prints_its_verification(tmp_path):
  output = tmp_path / 'gan.stablehlo'
  result = _export('--model=cpu_small_gan', '--format=stablehlo', f'--output={output}')
  assert result.returncode == 0, result.stderr
  lines = [line for line in result.stdout.splitlines() if line.startswith('verified in')]
  assert len(lines) == 1 and 'on 67x45 and 128x96 inputs' in lines[0]
  card = json.loads((tmp_path / 'gan.stablehlo.json').read_text())
  assert card['verification'] == lines[0] and card['source'] == 'cpu_small_gan'
  assert card['config']['generator']['chroma_from_bicubic'] is True
  assert sorted(p.name for p in tmp_path.iterdir()) == ['gan.stablehlo', 'gan.stablehlo.json']


CASES = {
    'no output': (['--model=cpu_small', '--format=stablehlo'], r'--format needs --output=FILE'),
    'no model': (['--format=stablehlo', '--output=OUT'], r'--format needs --model=NAME or --workdir'),
    'both': (['--model=cpu_small', '--workdir=ROOT', '--format=stablehlo', '--output=OUT'],
             r'pass --model or --workdir, not both'),
    'bicubic': (['--model=bicubic', '--format=stablehlo', '--output=OUT'],
                r'--model=bicubic has no generator to export'),
    'unknown model': (['--model=nope', '--format=stablehlo', '--output=OUT'],
                      r"unknown model 'nope'; shipped models: cpu_small, cpu_small_gan, "),
}


@pytest.mark.parametrize('args, pattern', CASES.values(), ids=CASES.keys())
def test_bad_flags_are_one_line_and_write_nothing(tmp_path, args, pattern):
  args = [arg.replace('ROOT', str(tmp_path)).replace('OUT', str(tmp_path / 'x.onnx'))
          for arg in args]
  result = _export(*args)
  assert result.returncode == 2, result.stderr
  assert len(result.stderr.strip().splitlines()) == 1
  assert re.search(pattern, result.stderr), result.stderr
  assert not list(tmp_path.iterdir())


def test_onnx_without_the_extra_names_it(tmp_path):
  if not exports.missing_packages('onnx'):
    pytest.skip('the export extra is installed')
  result = _export('--model=cpu_small', '--format=onnx', f'--output={tmp_path / "x.onnx"}')
  assert result.returncode == 2
  assert result.stderr.strip().endswith('pip install -e ".[export]"'), result.stderr
