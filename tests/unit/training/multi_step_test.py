"""Several train steps per compiled call (config.steps_per_call) equal one step per call.

The scanned steps (steps.scan_steps) against the same number of single calls, for both
phases, on 1 and 8 simulated devices; the device source's stacked batches against its
single ones; whole runs (with a resume, and across the phase switch) against
steps_per_call=1.
"""

import functools

from conftest import tiny_quickstart_config, tiny_run_config, write_tiny_image_sets
import jax
import numpy as np
import optax
import pytest

from srgan_jax.data import on_device
from srgan_jax.runtime import sharding
from srgan_jax.training import checkpointing
from srgan_jax.training import config_rules
from srgan_jax.training import loop
from srgan_jax.training import steps

COUNT = 3  # Steps per scanned call.
FIRST_STEP = 5  # Any step number: first_nonfinite_step reports it.


def _mesh(num_devices):
  return jax.make_mesh((num_devices,), ('data',), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:num_devices])


def _batches(count, n=8, crop=32, scale=4):
  rng = np.random.default_rng(0)
  return [{'lr': rng.uniform(0, 1, (n, crop // scale, crop // scale, 3)).astype(np.float32),
           'hr': rng.uniform(-1, 1, (n, crop, crop, 3)).astype(np.float32)}
          for _ in range(count)]


def _host(tree):
  return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(jax.device_get(tree))]


def _assert_trees_close(a, b, rtol=1e-6, atol=1e-7):
  a, b = _host(a), _host(b)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def _with_sgd(state, replicated):
  """The state with plain SGD (inject_hyperparams keeps the rate in its state). Adam
  turns round-off in gradients near zero (conv biases that BatchNorm cancels) into
  full learning-rate steps, so any reordering of float sums by the compiler would
  show as 1e-4 differences; SGD keeps differences proportional to the gradients'."""
  tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.05)
  return state.replace(tx=tx, opt_state=jax.jit(tx.init, out_shardings=replicated)(state.params))


def _train(phase, num_devices, scanned, batches, poison=None):
  """COUNT steps of a phase from fresh states, in one scanned call or COUNT single
  calls; returns host copies of (generator, discriminator, computed metrics)."""
  config = tiny_quickstart_config()
  config.ema_decay = 0.9  # The EMA update is part of what the scan must carry.
  mesh = _mesh(num_devices)
  replicated = jax.sharding.NamedSharding(mesh, jax.P())
  generator, discriminator = jax.jit(
      functools.partial(steps.create_states, config, steps.SRRESNET), out_shardings=replicated)()
  if phase == steps.SRGAN:
    generator = loop.initialize_srgan_generator(generator, config, replicated)
  generator, discriminator = _with_sgd(generator, replicated), _with_sgd(discriminator, replicated)
  train_step = steps.compile_steps(config, 'caffe', replicated, scanned=scanned)[
      phase == steps.SRGAN]
  states = (generator,) if phase == steps.SRRESNET else (generator, discriminator)
  vgg = () if phase == steps.SRRESNET else (None,)  # content_loss 'mse': no VGG19.
  with jax.set_mesh(mesh):
    train_metrics = steps.empty_metrics(phase, replicated)
    if scanned:
      stack = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *batches)
      stack = sharding.shard_batch(stack, jax.sharding.NamedSharding(mesh, jax.P(None, 'data')))
      *states, train_metrics = train_step(*states, train_metrics, stack, *vgg, FIRST_STEP)
    else:
      data = jax.sharding.NamedSharding(mesh, jax.P('data'))
      for offset, batch in enumerate(batches):
        *states, train_metrics = train_step(*states, train_metrics,
                                            sharding.shard_batch(batch, data), *vgg,
                                            FIRST_STEP + offset)
  return jax.device_get((states, train_metrics.compute()))


@pytest.mark.parametrize('num_devices', [1, 8])
@pytest.mark.parametrize('phase', [steps.SRRESNET, steps.SRGAN])
def test_scanned_steps_equal_single_calls(phase, num_devices):
  batches = _batches(COUNT)
  (scanned_states, scanned_metrics) = _train(phase, num_devices, True, batches)
  (single_states, single_metrics) = _train(phase, num_devices, False, batches)
  # Parameters, BatchNorm statistics, EMA, Adam's moments and step counts.
  _assert_trees_close(scanned_states, single_states)
  assert scanned_metrics.keys() == single_metrics.keys()
  for name in single_metrics:
    np.testing.assert_allclose(scanned_metrics[name], single_metrics[name], rtol=1e-6,
                               err_msg=name)
  assert int(scanned_states[0].step) == COUNT  # The scan ran every step...
  assert scanned_metrics['first_nonfinite_step'] == -1
  # ...and the steps moved the weights (a scan that skipped updates would not).
  fresh, _ = jax.device_get(jax.jit(functools.partial(
      steps.create_states, tiny_quickstart_config(), steps.SRRESNET))())
  assert max(np.max(np.abs(x - y)) for x, y in zip(
      _host(scanned_states[0].params), _host(fresh.params))) > 1e-6


def test_scanned_steps_report_the_first_nonfinite_step():
  batches = _batches(COUNT)
  batches[1] = {**batches[1], 'hr': np.full_like(batches[1]['hr'], np.nan)}
  _, scanned_metrics = _train(steps.SRRESNET, 1, True, batches)
  assert scanned_metrics['first_nonfinite_step'] == FIRST_STEP + 1


def test_device_source_stacked_batches_equal_single_batches(tmp_path):
  write_tiny_image_sets(tmp_path)
  config = tiny_quickstart_config()
  config.data.folders = (str(tmp_path / 'train'),)
  source = on_device.DeviceDataSource(config.data, scale=config.scale, seed=3)
  stack = jax.device_get(source.stacked_batches(7, 3, 4))
  for offset in range(3):
    single = jax.device_get(source.batch(7 + offset, 4))
    for key in ('lr', 'hr'):
      np.testing.assert_array_equal(stack[key][offset], single[key])
  assert not np.array_equal(stack['hr'][0], stack['hr'][1])  # Each step its own crops.


@pytest.mark.parametrize('step, expected', [(0, 2), (2, 1), (3, 1), (4, 2), (6, 1)])
def test_calls_stop_at_multiples_the_phase_switch_and_the_end(step, expected):
  config = tiny_quickstart_config()
  config.steps_per_call, config.srresnet.num_steps, config.srgan.num_steps = 2, 3, 4
  assert loop.steps_in_call(step, config) == expected


def test_intervals_that_are_not_multiples_of_steps_per_call_are_one_clear_error():
  config = tiny_quickstart_config()
  config.steps_per_call = 4
  config.log_every_steps, config.checkpoint_every_steps = 6, 8
  problems = config_rules.check(config, check_files=False)
  assert problems == ['log_every_steps=6 must be multiples of steps_per_call=4 (logs, '
                      'evaluations and checkpoints happen between calls)'], problems


@pytest.fixture(scope='module')
def data_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp('data')
  write_tiny_image_sets(root)
  return root


def _run_config(root, steps_per_call, source, srgan_steps=3):
  # 3 + 3 steps: with 2 per call, calls of 2, 1 | 1, 2 steps (split at the switch).
  config = tiny_run_config(root, srresnet_steps=3, srgan_steps=srgan_steps)
  config.steps_per_call = steps_per_call
  config.data.source = source
  # No BatchNorm in G (the quickstart's own choice): a conv bias that BatchNorm cancels
  # has a gradient of pure round-off, which Adam turns into full learning-rate steps
  # of either sign, so the two programs' round-off would show in those weights.
  config.generator.batch_norm = False
  return config


def _final_checkpoint(workdir):
  step = checkpointing.latest_step(workdir)
  return step, checkpointing.load_generator(workdir, step=step, ema=False)[1]


@pytest.mark.parametrize('source', ['device'])
def test_run_with_two_steps_per_call_equals_one(data_dirs, tmp_path, source):
  """Same final states and last checkpoint; the scanned run stopped at the phase
  switch and resumed. On the device source, whose batches the call itself samples; the
  folders source's stacked batches equal its step-by-step ones (inputs_test), and the
  steps they feed are the same."""
  single = loop.train_and_evaluate(_run_config(data_dirs, 1, source), str(tmp_path / 'one'))
  workdir = str(tmp_path / 'two')
  loop.train_and_evaluate(_run_config(data_dirs, 2, source, srgan_steps=0), workdir)
  assert checkpointing.latest_step(workdir) == 3
  scanned = loop.train_and_evaluate(_run_config(data_dirs, 2, source), workdir)
  # The generators (and through them what D told G at each step). D's own weights
  # keep BatchNorm-cancelled biases (see _run_config); test_scanned_steps_equal_single_
  # calls compares D's with SGD.
  generator_scanned, generator_single = scanned[0], single[0]
  _assert_trees_close((generator_scanned.params, generator_scanned.ema_params),
                      (generator_single.params, generator_single.ema_params),
                      rtol=1e-5, atol=1e-6)
  (step_a, variables_a), (step_b, variables_b) = (
      _final_checkpoint(str(tmp_path / 'one')), _final_checkpoint(workdir))
  assert step_a == step_b == 6
  _assert_trees_close(variables_a, variables_b, rtol=1e-5, atol=1e-6)
