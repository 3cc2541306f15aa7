"""Multi-host training, for real: two JAX processes on this machine, gloo collectives.

One 2-process run (`python -m srgan_jax.main` with JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID; 2 CPU devices each) is compared with a
1-process run in this pytest process (8 CPU devices).

What is compared: each host reads its own shard of the images and draws its own
crops (keyed by seed, process index and step), so a 1-process run of the same
config reads other batches by design. The 1-process reference is therefore fed the
global batches the two hosts build: at each step, process 0's batch followed by
process 1's, each made by `input_pipeline.create_train_iterator` for that process.
The test checks that the hosts really read those batches, so equal weights mean
that the sharded training step computed the same thing on 4 devices in 2
processes as on 8 devices in 1, from the same data.

Both runs use plain SGD instead of Adam (see `sgd`), as train_steps_test does.

The 2-process run starts from the 1-process run's checkpoint at step 2, is sent
SIGTERM on one host at step 3, stops on both at a common step, and its checkpoint
is then resumed by one process to the end.
"""

import re
import shutil
import signal
import socket

import numpy as np
import optax
from preemption_test import assert_same_states
from preemption_test import leaves
from preemption_test import tiny_config
from preemption_test import Worker
from preemption_test import write_images
import pytest

from srgan_jax import checkpointing
from srgan_jax import errors
from srgan_jax import input_pipeline
from srgan_jax import train

PROCESSES = 2
TOTAL_STEPS = 6


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


def process_batches(config, start_step: int, process_index: int):
  """One host's batches, as `train.create_input_iterator` makes them on that host."""
  return input_pipeline.create_train_iterator(
      config.data, scale=config.scale, batch_size=config.batch_size // PROCESSES,
      seed=config.seed, start_step=start_step, process_index=process_index,
      process_count=PROCESSES)


def global_batches(config, start_step: int):
  """The global batch of every step of the 2-process run: the hosts' parts, in order."""
  for parts in zip(*(process_batches(config, start_step, p) for p in range(PROCESSES))):
    yield {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def sgd(config, phase) -> optax.GradientTransformation:
  """Plain SGD, in place of `train.create_optimizer` in both runs (WORKER_SGD there).

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


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Runs everything once; the tests below check the results."""
  root = tmp_path_factory.mktemp('multihost')
  write_images(root / 'images')
  config = tiny_config(root / 'images', 3, TOTAL_STEPS - 3)
  config.checkpoint_every_steps = 1
  config.keep_checkpoints = TOTAL_STEPS
  config.log_every_steps = 100  # Each metrics reset costs cross-host transfers.

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(train, 'create_input_iterator', global_batches)
    patch.setattr(train, 'create_optimizer', sgd)
    reference = train.train_and_evaluate(config, str(root / 'reference'))

    shared = root / 'shared'  # The hosts' common workdir, as on a shared file system.
    shutil.copytree(root / 'reference' / 'checkpoints' / '2', shared / 'checkpoints' / '2')
    address = f'127.0.0.1:{_free_port()}'
    workers = [Worker(root / f'process{p}', config, shared, devices=2,
                      JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES=str(PROCESSES),
                      JAX_PROCESS_ID=str(p), WORKER_PAUSE_AT='3', WORKER_SGD='1')
               for p in range(PROCESSES)]
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
    resumed = train.train_and_evaluate(config, str(resumed_dir))
  return {'config': config, 'reference': reference, 'reference_dir': root / 'reference',
          'workers': workers, 'logs': logs, 'shared': shared, 'stopped': stopped,
          'resumed': resumed}


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
