"""Multi-host training, for real: two JAX processes on this machine, gloo collectives.

One 2-process run (`python -m srgan_jax.main` with JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID; 2 CPU devices each) is compared with a
1-process run in this pytest process (8 CPU devices).

What is compared: each host reads its own shard of the images and draws its own
crops (keyed by seed, process index and step), so a 1-process run of the same
config reads other batches by design. The 1-process reference is therefore fed the
global batches the two hosts build: at each step, process 0's batch followed by
process 1's, each made by `tf_pipeline.create_train_iterator` for that process.
The test checks that the hosts really read those batches, so equal weights mean
that the sharded training step computed the same thing on 4 devices in 2
processes as on 8 devices in 1, from the same data.

Both runs use plain SGD instead of Adam (see `sgd`), as train_steps_test does.

The 2-process run starts from the 1-process run's checkpoint at step 2, evaluates
on a folder of 2 images at step 3 (as both runs do), is sent SIGTERM on one host at
step 3, stops on both at a common step, and its checkpoint is then resumed by one
process to the end. That checkpoint is also scored by `main --mode=evaluate` and
super-resolved by `super_resolve` on 2 processes each, and by the same functions in
this process; the numbers and images must be the same.
"""

import copy
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import optax
from PIL import Image
from preemption_test import assert_same_states
from preemption_test import finish_job
from preemption_test import free_port
from preemption_test import leaves
from preemption_test import start_job
from preemption_test import tiny_config
from preemption_test import TIMEOUT
from preemption_test import Worker
from preemption_test import write_images
import pytest

from conftest import REPO
from srgan_jax.data import inputs
from srgan_jax.data import on_device
from srgan_jax.data import tf_pipeline
from srgan_jax.evaluation import during_training
from srgan_jax.evaluation import results_table
from srgan_jax.evaluation import scoring
from srgan_jax.inference import super_resolve_files
from srgan_jax.nn import upscalers
from srgan_jax.training import model_reference
from srgan_jax.runtime import errors
from srgan_jax.training import checkpointing
from srgan_jax.training import loop
from srgan_jax.training import steps

# Runs commands in subprocesses: a system test (`pytest -m "not system"` skips it).
pytestmark = pytest.mark.system

PROCESSES = 2
TOTAL_STEPS = 6
EVAL_STEP = 3  # The 2-process run evaluates here, after its first step.
# super_resolve: 32-pixel tiles with the tiny generator's receptive radius (10) as
# overlap make 9 tiles of a 48x56 image, in batches of 4 (the last one padded).
SUPER_RESOLVE_FLAGS = ['--tile=32', '--batch=4']


def process_batches(config, start_step: int, process_index: int):
  """One host's batches, as `inputs.create_input_iterator` makes them on that host."""
  return tf_pipeline.create_train_iterator(
      config.data, scale=config.scale, batch_size=config.batch_size // PROCESSES,
      seed=config.seed, start_step=start_step, process_index=process_index,
      process_count=PROCESSES)


def global_batches(config, start_step: int):
  """The global batch of every step of the 2-process run: the hosts' parts, in order."""
  for parts in zip(*(process_batches(config, start_step, p) for p in range(PROCESSES))):
    yield {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def sgd(config, phase) -> optax.GradientTransformation:
  """Plain SGD, in place of `steps.create_optimizer` in both runs (WORKER_SGD there).

  The two runs sum in different orders (8 devices; 2 x 2 with gloo). Adam turns that
  float32 round-off, in gradients that are zero in exact arithmetic (conv biases that
  BatchNorm cancels), into full learning-rate steps: those biases then differ by
  100%. SGD keeps updates proportional to the gradients, which the sharding must
  preserve. (Measured with Adam: only those biases, and what follows from them, such
  as their moments and the BatchNorm means, differed by more than 1e-4.)
  """
  del config, phase
  return optax.inject_hyperparams(optax.sgd)(0.05)


def _restore_leaves(workdir, step, config, templates) -> list[np.ndarray]:
  with checkpointing.create_manager(str(workdir), config, read_only=True) as manager:
    return leaves(checkpointing.restore(manager, step, *templates, config)[:2])


def _start_processes(module: str, args: list[str], out) -> list[subprocess.Popen]:
  """`python -m module args` as PROCESSES processes with 2 CPU devices each, as a
  multi-host job starts them; their output goes to out/<process>.txt."""
  out.mkdir()
  address = f'127.0.0.1:{free_port()}'
  processes = []
  for p in range(PROCESSES):
    with open(out / f'{p}.txt', 'w') as log:
      processes.append(subprocess.Popen(
          [sys.executable, '-m', module, *args], cwd=REPO, stdout=log,
          stderr=subprocess.STDOUT,
          env={**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu',
               'JAX_NUM_CPU_DEVICES': '2', 'JAX_CPU_COLLECTIVES_IMPLEMENTATION': 'gloo',
               'JAX_COORDINATOR_ADDRESS': address, 'JAX_NUM_PROCESSES': str(PROCESSES),
               'JAX_PROCESS_ID': str(p)}))
  return processes


def _finish_processes(processes: list[subprocess.Popen], out) -> list[str]:
  """Each process's output, once all exited with status 0."""
  try:
    for process in processes:
      process.wait(TIMEOUT)
  finally:  # One process failing leaves the other waiting for it.
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.wait()
  logs = [(out / f'{p}.txt').read_text() for p in range(PROCESSES)]
  for process, log in zip(processes, logs):
    assert process.returncode == 0, log[-5000:]
  return logs


def _record_evaluations(patch) -> dict[int, dict]:
  """Makes the training evaluator keep its results, by step, in the dict returned."""
  evaluations = {}
  evaluate = during_training.TrainingEvaluator.run

  def recorded(evaluator, upscaler, step, **options):
    evaluations[step] = evaluate(evaluator, upscaler, step, **options)
    return evaluations[step]

  patch.setattr(during_training.TrainingEvaluator, 'run', recorded)
  return evaluations


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Runs everything once; the tests below check the results."""
  root = tmp_path_factory.mktemp('multihost')
  write_images(root / 'images')
  write_images(root / 'eval', count=2)
  config = tiny_config(root / 'images', 3, TOTAL_STEPS - 3)
  config.checkpoint_every_steps = 1
  config.keep_checkpoints = TOTAL_STEPS
  config.log_every_steps = 100  # Each metrics reset costs cross-host transfers.
  config.eval_folders = [str(root / 'eval')]
  config.eval_every_steps = EVAL_STEP

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(inputs, 'create_input_iterator', global_batches)
    patch.setattr(steps, 'create_optimizer', sgd)
    reference_evaluations = _record_evaluations(patch)
    reference = loop.train_and_evaluate(config, str(root / 'reference'))

    shared = root / 'shared'  # The hosts' common workdir, as on a shared file system.
    shutil.copytree(root / 'reference' / 'checkpoints' / '2', shared / 'checkpoints' / '2')
    workers = start_job(PROCESSES, root, config, shared, devices=2, WORKER_PAUSE_AT='3',
                        WORKER_SGD='1')
    try:
      for p, worker in enumerate(workers):
        worker.wait_for(f'paused{p}')
      workers[1].process.send_signal(signal.SIGTERM)  # One host is preempted.
      for worker in workers:
        (worker.out / 'resume').touch()
      logs = [worker.finish_ok(errors.EXIT_PREEMPTED) for worker in workers]
    finally:  # One host failing leaves the other waiting for it.
      for worker in workers:
        worker.stop()
    stopped = checkpointing.latest_step(str(shared))

    resumed_dir = root / 'resumed'  # The 2-process checkpoint, resumed by one process.
    shutil.copytree(shared, resumed_dir)
    resumed = loop.train_and_evaluate(config, str(resumed_dir))

  # The 2-process checkpoint, scored and used on 2 processes (both jobs at once) and
  # in this one.
  evaluation_jobs = _start_processes(
      'srgan_jax.main', [f'--config={workers[0].out / "json_config.py"}',
                         f'--workdir={shared}', '--mode=evaluate'], root / 'evaluate')
  super_resolve_jobs = _start_processes(
      'srgan_jax.super_resolve', [f'--workdir={shared}', f'--input={root / "eval"}',
                                  f'--output={root / "sr2"}', *SUPER_RESOLVE_FLAGS],
      root / 'super_resolve')
  evaluation_logs = _finish_processes(evaluation_jobs, root / 'evaluate')
  super_resolve_logs = _finish_processes(super_resolve_jobs, root / 'super_resolve')
  model, variables, _ = model_reference.load(model_reference.from_flags('srgan', str(shared)))
  evaluation = scoring.evaluate_beside_bicubic(upscalers.generator(model, variables),
                                               config.eval_folders,
                                               metric_names=config.eval_metrics)  # As main does.
  model, variables, _ = checkpointing.load_generator(str(shared))
  upscaler = upscalers.generator(model, variables, tile=32, batch_size=4)
  super_resolve_files.super_resolve_paths(upscaler, root / 'eval', root / 'sr1')
  return {'config': config, 'reference': reference, 'reference_dir': root / 'reference',
          'workers': workers, 'logs': logs, 'shared': shared, 'stopped': stopped,
          'resumed': resumed, 'reference_evaluations': reference_evaluations,
          'evaluation': evaluation, 'evaluation_logs': evaluation_logs,
          'super_resolve_logs': super_resolve_logs, 'sr1': root / 'sr1', 'sr2': root / 'sr2'}


def test_sigterm_on_one_host_stops_both_at_one_step_with_a_checkpoint(runs):
  """Both exit with status 75 (checked in the fixture) after saving the same step."""
  stopped = runs['stopped']
  assert 3 < stopped < TOTAL_STEPS
  for log in runs['logs']:
    assert re.search(r'Resumed from \S+ at step 2\.', log)
    assert f'preempted: saved step {stopped} ' in log


def test_hosts_end_with_identical_states(runs):
  first, second = (worker.final_states() for worker in runs['workers'])
  assert len(first) == len(second)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a, b)


def test_hosts_read_disjoint_images_as_the_input_pipeline_shards_them(runs):
  images = []
  for p, worker in enumerate(runs['workers']):
    saved = worker.saved()
    steps, lr, hr = saved['steps'], saved['lr'], saved['hr']
    assert list(steps) == list(range(2, runs['stopped']))
    for step, expected in zip(steps, process_batches(runs['config'], 2, p)):
      np.testing.assert_array_equal(lr[step - 2], expected['lr'])
      np.testing.assert_array_equal(hr[step - 2], expected['hr'])
    red = np.round((hr[..., 0] + 1) * 127.5)  # Image i has red 30 + 20 i everywhere.
    assert np.all(red == red[..., :1, :1])
    images.append(set(((red[..., 0, 0] - 30) // 20).astype(int).ravel()))
  assert not images[0] & images[1]
  assert len(images[0] | images[1]) > 5  # Both hosts contribute images.


def test_two_hosts_train_like_one_process_given_the_same_global_batches(runs):
  stopped = runs['stopped']
  expected = _restore_leaves(runs['reference_dir'], stopped, runs['config'], runs['reference'])
  assert_same_states(runs['workers'][0].final_states(), expected)
  # The hosts' steps moved the weights: this is not a comparison of the restored ones.
  start = _restore_leaves(runs['reference_dir'], 2, runs['config'], runs['reference'])
  assert max(np.max(np.abs(a - b)) for a, b in zip(expected, start)) > 1e-3


def _train_on_one_then_two_processes(config, batches, tmp_path
                                     ) -> tuple[list[np.ndarray], list[Worker]]:
  """(final state leaves, workers): ``config`` trained here on the global batches
  ``batches(config, start_step)`` yields, then by `main` on 2 processes (each reading
  its own part, as in a real run) in tmp_path/two; both with plain SGD (see `sgd`)."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(inputs, 'create_input_iterator', batches)
    patch.setattr(steps, 'create_optimizer', sgd)
    expected = leaves(loop.train_and_evaluate(config, str(tmp_path / 'one')))
  workers = start_job(PROCESSES, tmp_path, config, tmp_path / 'two', devices=2, WORKER_SGD='1')
  finish_job(workers)
  return expected, workers


def test_init_from_on_two_hosts_trains_like_one_process(runs, tmp_path):
  """An SRGAN phase started from another workdir's generator (srgan.init_from), on 2
  processes. Before, both died at its start: jax.device_put of the restored weights
  (on each host's first device) onto the global sharding is a cross-host transfer."""
  config = copy.deepcopy(runs['config'])
  config.srresnet.num_steps, config.srgan.num_steps, config.srgan.decay_steps = 0, 2, 1
  config.srgan.init_from = str(runs['reference_dir'])
  config.eval_folders = []
  expected, workers = _train_on_one_then_two_processes(config, global_batches, tmp_path)
  for worker in workers:
    assert_same_states(worker.final_states(), expected)


def device_source_global_batches(config, start_step: int):
  """The global batches of a 2-process run with data.source='device': each host's
  DeviceDataSource batch (its images, its key), process 0's first."""
  sources = [on_device.DeviceDataSource(config.data, scale=config.scale, seed=config.seed,
                                        process_index=p, process_count=PROCESSES)
             for p in range(PROCESSES)]
  for step in itertools.count(start_step):
    parts = [np.asarray(jax.device_get(source.batch(step, config.batch_size // PROCESSES)[key]))
             for source in sources for key in ('lr', 'hr')]
    yield {'lr': np.concatenate(parts[0::2]), 'hr': np.concatenate(parts[1::2])}


def test_device_data_source_on_two_hosts_trains_like_one_process(tmp_path):
  """data.source='device' on 2 processes: each host decodes its share of the images
  onto its first device and the step's global batch is built from the hosts' parts.
  Equal to one process fed those global batches (made here by the same source, for
  each process), and the hosts read exactly their parts."""
  write_images(tmp_path / 'images')
  config = tiny_config(tmp_path / 'images', 3, 0)
  config.data.source = 'device'
  expected, workers = _train_on_one_then_two_processes(config, device_source_global_batches, tmp_path)
  rows = config.batch_size // PROCESSES
  for p, worker in enumerate(workers):
    saved = worker.saved()
    assert list(saved['steps']) == [0, 1, 2]
    for step, batch in zip(saved['steps'], device_source_global_batches(config, 0)):
      np.testing.assert_array_equal(saved['hr'][step], batch['hr'][p * rows:(p + 1) * rows])
      np.testing.assert_array_equal(saved['lr'][step], batch['lr'][p * rows:(p + 1) * rows])
    assert_same_states(worker.final_states(), expected)


def test_checkpoints_move_between_one_and_two_processes(runs):
  """1 -> 2 processes: the hosts resumed from the reference's step 2 (test above);
  2 -> 1: the 2-process checkpoint holds the hosts' states and resumes in one process."""
  in_checkpoint = _restore_leaves(runs['shared'], runs['stopped'], runs['config'],
                                  runs['reference'])
  for a, b in zip(in_checkpoint, runs['workers'][0].final_states()):
    np.testing.assert_array_equal(a, b)
  assert_same_states(leaves(runs['resumed']), leaves(runs['reference']))
  # For evaluation on another machine: saved from 2 x 2 devices, loaded onto this one's.
  model, variables, _ = checkpointing.load_generator(str(runs['shared']))
  lr = np.zeros((1, 8, 8, 3), np.float32)
  assert model.apply(variables, lr, train=False).shape == (1, 32, 32, 3)


def test_evaluation_during_training_on_two_hosts_equals_one_process(runs):
  """Both hosts score the same generator as the 1-process run at EVAL_STEP, and get
  the same numbers (equal to the uint8 rounding of weights equal to float32 rounding)."""
  expected = runs['reference_evaluations'][EVAL_STEP]['eval']
  assert expected['images'] == 2
  for p, worker in enumerate(runs['workers']):
    evaluations = json.loads((worker.out / f'eval{p}.json').read_text())
    assert list(evaluations) == [str(EVAL_STEP)]  # Preempted before any other.
    actual = evaluations[str(EVAL_STEP)]['eval']
    assert actual['images'] == 2
    assert abs(actual['psnr'] - expected['psnr']) < 1e-3
    assert abs(actual['ssim'] - expected['ssim']) < 1e-4
  # Evaluated at EVAL_STEP on both hosts, before the preemption (PAUSE_AT) step.
  for log in runs['logs']:
    assert re.search(rf'\[{EVAL_STEP}\] .*eval/eval/psnr=', log)


def test_evaluate_mode_on_two_processes_prints_the_one_process_table(runs):
  """`main --mode=evaluate` on 2 processes: process 0 prints the table this process
  computes from the same checkpoint; process 1 prints none."""
  header, row = results_table.format_table(runs['evaluation']).splitlines()
  first, second = runs['evaluation_logs']
  assert header in first and header not in second
  (printed,) = [line for line in first.splitlines() if line.startswith('eval ')]
  name, images, psnr, ssim, *bicubic = printed.split()
  expected = row.split()
  assert [name, images, *bicubic] == [expected[0], '2', *expected[4:]]
  # Devices in other processes may round float32 differently (XLA's CPU kernels
  # split work by threads per device): a pixel may round the other way.
  assert abs(float(psnr) - float(expected[2])) <= 2e-3
  assert abs(float(ssim) - float(expected[3])) <= 1e-4


def test_super_resolve_on_two_processes_writes_the_one_process_images(runs):
  names = sorted(path.name for path in runs['sr1'].iterdir())
  assert names == ['img00.png', 'img01.png']
  assert sorted(path.name for path in runs['sr2'].iterdir()) == names
  for name in names:
    with Image.open(runs['sr1'] / name) as one, Image.open(runs['sr2'] / name) as two:
      assert one.size == two.size == (56 * 4, 48 * 4)
      difference = np.abs(np.asarray(two, np.int16) - np.asarray(one, np.int16))
      # Float32 rounding on other devices (see above): measured, 2 of 129,024 values
      # of one image off by 1.
      assert difference.max() <= 1 and np.mean(difference > 0) < 1e-3
  first, second = runs['super_resolve_logs']
  assert '2 written, 0 skipped (existing), 0 failed' in first
  assert 'written' not in second  # Process 1 computes with process 0 and writes nothing.
