"""benchmark.py, the command: it writes its report (with the PyTorch line), and
--rounds times the variants of a line side by side."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO
from srgan_jax.benchmarking import workloads

# A tiny run: 32x32 HR crops, batch 2.
CROP = 32
BATCH = 2


# The tiny runs' arguments but --run (their programs are compiled once, then cached).
TINY_ARGS = [f'--batch_sizes={BATCH}', f'--crop_size={CROP}', '--widths=1,8',
             '--inference_sizes=8', '--warmup=0', '--weight_gradients=xla,matmul']


def _run_cli(folder, *args):
  """Runs the command line (its flags and main) in a fresh process with these
  arguments; returns (JSON report, stdout)."""
  path = folder / 'report.json'
  args = [*args, f'--json={path}']
  code = textwrap.dedent(f"""
      import sys
      from absl import flags
      from srgan_jax import benchmark
      benchmark._define_flags()
      flags.FLAGS(['benchmark', *{args}])
      benchmark.main()
      print('tensorflow imported:', 'tensorflow' in sys.modules)
      """)
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, timeout=900, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(path.read_text()), result.stdout


@pytest.fixture(scope='module')
def cli_run(tmp_path_factory):
  """One tiny run of the command line with the PyTorch comparison; (report, stdout)."""
  return _run_cli(tmp_path_factory.mktemp('benchmark'), '--run=srresnet,srgan,inference',
                  *TINY_ARGS, '--steps=1', '--compare=torch')


@pytest.mark.system
def test_cli_writes_json(cli_run):
  report, stdout = cli_run
  assert {'jax', 'backend', 'device_kind', 'dtype', 'torch'} <= set(report['environment'])
  assert workloads.RANDOM_VGG_NOTE in report['notes']
  assert report['environment']['weight_gradients'] == ['xla', 'matmul']
  by_mode = {(row['benchmark'], row['weight_gradient']): row for row in report['results']}
  assert set(by_mode) == {(line, mode) for line in ('srresnet_step', 'srgan_step', 'inference')
                          for mode in ('xla', 'matmul')}
  for line in ('srresnet_step', 'srgan_step', 'inference'):  # One PyTorch timing for both.
    assert by_mode[line, 'xla']['torch'] == by_mode[line, 'matmul']['torch']
  rows = {line: row for (line, mode), row in by_mode.items() if mode == 'matmul'}
  for row in by_mode.values():
    assert row['images_per_s'] > 0 and row['torch']['images_per_s'] > 0
    assert row['jax_over_torch'] == pytest.approx(
        row['images_per_s'] / row['torch']['images_per_s'])
    assert row['flops_per_step'] > 0
    assert row['mfu'] is None  # CPU: no known peak.
  # The SRGAN step runs G, D twice and VGG19 on top of the SRResNet step's work.
  assert rows['srgan_step']['flops_per_step'] > 2 * rows['srresnet_step']['flops_per_step']
  assert rows['inference']['hr_size'] == 32 and rows['inference']['megapixels_per_s'] > 0
  assert 'JAX/torch' in stdout and 'dW' in stdout


@pytest.mark.system
def test_benchmark_does_not_import_tensorflow(cli_run):
  """Machines that only benchmark or serve need not have tensorflow."""
  _, stdout = cli_run
  assert 'tensorflow imported: False' in stdout


@pytest.fixture(scope='module', params=['torch', 'jax'])
def rounds_run(request, tmp_path_factory):
  """A tiny --rounds=2 run of the command line, with and without the PyTorch
  comparison; (compared, report, stdout). The SRGAN step, slow and timed by the same
  code as the SRResNet step, is left out."""
  compared = request.param == 'torch'
  return (compared, *_run_cli(tmp_path_factory.mktemp('rounds'), '--run=srresnet,inference',
                              *TINY_ARGS, '--rounds=2', *['--compare=torch'] * compared))


@pytest.mark.system
def test_rounds_report_median_min_max_and_load(rounds_run):
  compared, report, stdout = rounds_run
  assert report['environment']['rounds'] == 2
  assert sorted((row['benchmark'], row['weight_gradient']) for row in report['results']) == (
      sorted((line, mode) for line in ('srresnet_step', 'inference')
             for mode in ('xla', 'matmul')))
  for row in report['results']:
    assert row['ms_min'] <= row['ms_per_step'] <= row['ms_max']
    assert 0 <= row['load_1min'][0] <= row['load_1min'][1]
    if compared:
      torch_row = row['torch']
      assert torch_row['ms_min'] <= torch_row['ms_per_step'] <= torch_row['ms_max']
      assert row['jax_over_torch'] == pytest.approx(
          torch_row['ms_per_step'] / row['ms_per_step'])
    else:
      assert 'torch' not in row and 'jax_over_torch' not in row
  header = next(line for line in stdout.splitlines() if line.startswith('benchmark |'))
  assert 'ms min' in header and 'torch max' in header and header.endswith('| load')
