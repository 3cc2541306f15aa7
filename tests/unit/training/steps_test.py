"""Train-step tests: 8 devices equal 1, losses decrease, losses match their definitions."""

import functools
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from conftest import tiny_quickstart_config
from srgan_jax.nn import losses
from srgan_jax.nn import models
from srgan_jax.runtime import sharding
from srgan_jax.training import loop
from srgan_jax.training import steps


def tiny_config():
  return tiny_quickstart_config()


def _mesh(num_devices):
  return jax.make_mesh((num_devices,), ('data',), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:num_devices])


def _batch(seed=0, n=8, crop=32, scale=4):
  rng = np.random.default_rng(seed)
  hr = rng.uniform(-1, 1, size=(n, crop, crop, 3)).astype(np.float32)
  lr = rng.uniform(0, 1, size=(n, crop // scale, crop // scale, 3)).astype(np.float32)
  return {'lr': lr, 'hr': hr}


def _with_sgd(state, replicated):
  """The state with plain SGD. Adam turns float32 round-off in near-zero gradients
  (e.g. of conv biases that BatchNorm cancels) into full learning-rate steps, which
  would hide the comparison below in noise; SGD keeps updates proportional to the
  gradients, which is what the sharding must preserve."""
  tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.05)
  return state.replace(tx=tx, opt_state=jax.jit(tx.init, out_shardings=replicated)(state.params))


def _run_steps(config, num_devices, num_srresnet, num_srgan):
  """Runs the jitted steps on a mesh of num_devices; returns host copies of the states."""
  mesh = _mesh(num_devices)
  replicated = jax.sharding.NamedSharding(mesh, jax.P())
  data = jax.sharding.NamedSharding(mesh, jax.P('data'))
  generator, discriminator = jax.jit(
      functools.partial(steps.create_states, config, steps.SRRESNET),
      out_shardings=replicated)()
  generator, discriminator = _with_sgd(generator, replicated), _with_sgd(discriminator, replicated)
  srresnet_step, srgan_step = steps.compile_steps(config, 'caffe', replicated)
  with jax.set_mesh(mesh):
    metrics = steps.empty_metrics(steps.SRRESNET, replicated)
    for step in range(num_srresnet):
      generator, metrics = srresnet_step(generator, metrics, sharding.shard_batch(_batch(step), data),
                                         step)
    generator = _with_sgd(loop.initialize_srgan_generator(generator, config, replicated),
                          replicated)
    metrics = steps.empty_metrics(steps.SRGAN, replicated)
    for step in range(num_srresnet, num_srresnet + num_srgan):
      generator, discriminator, metrics = srgan_step(
          generator, discriminator, metrics, sharding.shard_batch(_batch(step), data), None, step)
  return jax.device_get((generator.params, generator.batch_stats, discriminator.params,
                         discriminator.batch_stats, discriminator.spectral, metrics.compute()))


def test_eight_devices_equal_one():
  """Same global batches on 8 simulated devices and on 1: same parameters after
  SRResNet and SRGAN steps (BatchNorm statistics cover the global batch)."""
  assert jax.device_count() == 8
  config = tiny_config()
  one = _run_steps(config, 1, num_srresnet=2, num_srgan=2)
  eight = _run_steps(config, 8, num_srresnet=2, num_srgan=2)
  for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(eight)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # The updates moved the weights (the comparison is not of initial values).
  initial, _ = jax.jit(functools.partial(steps.create_states, config, steps.SRRESNET))()
  moved = [np.max(np.abs(a - b)) for a, b in
           zip(jax.tree_util.tree_leaves(one[0]), jax.tree_util.tree_leaves(initial.params))]
  assert max(moved) > 1e-4


def test_eight_devices_equal_one_with_the_gan_options():
  """The U-Net discriminator (per-pixel logits, spectral normalisation) and the LDL
  loss (per-image artifact maps against the EMA generator), both on in one run (one
  compilation per mesh): the same parameters, spectral state and metrics on 8 devices
  as on 1, after SRGAN steps that each option changed."""
  config = tiny_config()
  config.ema_decay = 0.9
  config.discriminator.arch, config.discriminator.unet_features = 'unet', 4
  config.srgan.ldl_weight = 1.0
  one = _run_steps(config, 1, num_srresnet=0, num_srgan=2)
  eight = _run_steps(config, 8, num_srresnet=0, num_srgan=2)
  for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(eight), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # D's spectral state was there and moved; the LDL term was on (its map not all zero).
  _, initial = jax.jit(functools.partial(steps.create_states, config, steps.SRGAN))()
  before = jax.tree_util.tree_leaves(jax.device_get(initial.spectral))
  after = jax.tree_util.tree_leaves(one[4])
  assert len(after) == 16 and all(np.any(a != b) for a, b in zip(before, after))
  assert one[5]['ldl_loss'] > 0


def _losses_over_steps(config, phase, num_steps):
  mesh = _mesh(1)
  replicated = jax.sharding.NamedSharding(mesh, jax.P())
  data = jax.sharding.NamedSharding(mesh, jax.P('data'))
  generator, discriminator = jax.jit(
      functools.partial(steps.create_states, config, phase), out_shardings=replicated)()
  srresnet_step, srgan_step = steps.compile_steps(config, 'caffe', replicated)
  # A fixed batch of smooth images that the network can fit: HR is the exact
  # nearest-neighbour upsampling of LR, mapped to [-1, 1].
  rng = np.random.default_rng(0)
  lr = rng.uniform(0, 1, size=(8, 8, 8, 3)).astype(np.float32)
  hr = np.repeat(np.repeat(lr, 4, axis=1), 4, axis=2) * 2 - 1
  batch = sharding.shard_batch({'lr': lr, 'hr': hr}, data)
  history = []
  with jax.set_mesh(mesh):
    for step in range(num_steps):
      metrics = steps.empty_metrics(phase, replicated)
      if phase == steps.SRRESNET:
        generator, metrics = srresnet_step(generator, metrics, batch, step)
        history.append(float(metrics.compute()['loss']))
      else:
        generator, discriminator, metrics = srgan_step(generator, discriminator, metrics,
                                                       batch, None, step)
        values = metrics.compute()
        history.append((float(values['content_loss']), float(values['discriminator_loss'])))
  return history


def test_srresnet_overfits_one_batch():
  config = tiny_config()
  config.srresnet.learning_rate = 2e-3
  history = _losses_over_steps(config, steps.SRRESNET, 30)
  assert history[-1] < 0.6 * history[0], history


def test_srgan_overfits_one_batch():
  """Content loss falls and the discriminator learns to tell real from fake."""
  config = tiny_config()
  config.srgan.learning_rate = 2e-3
  history = _losses_over_steps(config, steps.SRGAN, 30)
  content, discriminator = zip(*history)
  assert content[-1] < 0.6 * content[0], content
  assert min(discriminator[-5:]) < discriminator[0], discriminator


def test_srgan_step_losses_follow_their_definitions():
  """The step's reported losses equal the paper's formulas computed here directly."""
  config = tiny_config()
  mesh = _mesh(1)
  replicated = jax.sharding.NamedSharding(mesh, jax.P())
  generator, discriminator = jax.jit(
      functools.partial(steps.create_states, config, steps.SRGAN), out_shardings=replicated)()
  batch = _batch(3)
  sr, _ = generator.apply_fn({'params': generator.params, 'batch_stats': generator.batch_stats},
                             batch['lr'], train=True, mutable=['batch_stats'])
  variables = {'params': discriminator.params, 'batch_stats': discriminator.batch_stats}
  real, updates = discriminator.apply_fn(variables, batch['hr'], train=True,
                                         mutable=['batch_stats'])
  fake, _ = discriminator.apply_fn({**variables, **updates}, sr, train=True,
                                   mutable=['batch_stats'])
  expected_d = np.mean(-np.log(jax.nn.sigmoid(real))) + np.mean(-np.log(1 - jax.nn.sigmoid(fake)))
  _, srgan_step = steps.compile_steps(config, 'caffe', replicated)
  with jax.set_mesh(mesh):
    _, _, metrics = srgan_step(generator, discriminator,
                               steps.empty_metrics(steps.SRGAN, replicated),
                               jax.device_put(batch, replicated), None, 0)
  # Python floats: test helpers are not asked to treat JAX arrays as NumPy ones.
  values = {name: float(value) for name, value in jax.device_get(metrics.compute()).items()}
  np.testing.assert_allclose(values['discriminator_loss'], expected_d, rtol=1e-4)
  np.testing.assert_allclose(values['content_loss'], np.mean((sr - batch['hr']) ** 2), rtol=1e-4)
  assert values['generator_loss'] == pytest.approx(
      values['content_loss'] + 1e-3 * values['adversarial_loss'], rel=1e-5)


def test_adversarial_losses_are_stable_for_extreme_logits():
  logits = np.array([-200.0, 200.0], np.float32)
  assert np.isfinite(losses.generator_adversarial_loss(logits))
  assert np.isfinite(losses.discriminator_loss(logits, logits))
  np.testing.assert_allclose(losses.generator_adversarial_loss(np.array([0.0])), np.log(2),
                             rtol=1e-6)


def test_srgan_learning_rate_schedule():
  """1e-4 for srgan.decay_steps updates, then 1e-5 (paper Sec. 3.2)."""
  config = tiny_config()
  config.srgan.learning_rate, config.srgan.decay_steps = 1e-4, 3
  tx = steps.create_optimizer(config, steps.SRGAN)
  params = {'w': np.ones(2, np.float32)}
  state = tx.init(params)
  rates = []
  for _ in range(5):
    _, state = tx.update({'w': np.ones(2, np.float32)}, state, params)
    rates.append(float(state.hyperparams['learning_rate']))
  np.testing.assert_allclose(rates, [1e-4] * 3 + [1e-5] * 2, rtol=1e-6)
  assert float(state.hyperparams['b1']) == pytest.approx(0.9)


@pytest.mark.system
def test_steps_import_without_tensorflow():
  """GPU/TPU machines that only benchmark or serve may lack tensorflow."""
  code = ('import sys, srgan_jax.training.steps, srgan_jax.training.loop, srgan_jax.evaluate, '
          'srgan_jax.super_resolve; '
          'assert "tensorflow" not in sys.modules, "tensorflow imported"')
  subprocess.run([sys.executable, '-c', code], check=True)


def _one_step_each(config, batch, sgd=False):
  """One SRResNet step and one SRGAN step from the same fresh generator (Adam at the
  same learning rate, or with ``sgd`` both ``_with_sgd``); returns (SRResNet params,
  SRGAN generator params, SRGAN metrics)."""
  mesh = _mesh(1)
  replicated = jax.sharding.NamedSharding(mesh, jax.P())
  generator, discriminator = jax.jit(
      functools.partial(steps.create_states, config, steps.SRRESNET), out_shardings=replicated)()
  srgan_generator = jax.jit(functools.partial(steps.start_srgan_phase, config=config),
                            out_shardings=replicated)(generator)
  if sgd:
    generator, srgan_generator = (_with_sgd(generator, replicated),
                                  _with_sgd(srgan_generator, replicated))
  srresnet_step, srgan_step = steps.compile_steps(config, 'caffe', replicated)
  batch = jax.device_put(batch, replicated)
  with jax.set_mesh(mesh):
    srresnet, _ = srresnet_step(generator, steps.empty_metrics(steps.SRRESNET, replicated),
                                batch, 0)
    srgan, _, metrics = srgan_step(srgan_generator, discriminator,
                                   steps.empty_metrics(steps.SRGAN, replicated), batch, None, 0)
  return jax.device_get(srresnet.params), jax.device_get(srgan.params), metrics


@pytest.mark.parametrize('gan_loss', ['standard', 'relativistic'])
def test_without_adversarial_loss_an_srgan_step_is_an_srresnet_step(gan_loss):
  config = tiny_config()
  config.srresnet.learning_rate = config.srgan.learning_rate = 1e-3
  config.srgan.content_loss, config.srgan.gan_loss = 'mse', gan_loss
  config.srgan.adversarial_weight = 0.0
  srresnet, srgan, _ = _one_step_each(config, _batch(5), sgd=True)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-9),
               srgan, srresnet)


@pytest.mark.parametrize('gan_loss,feature_matching_weight,gray_input', [
    ('standard', 0.0, False), ('relativistic', 0.0, True), ('standard', 1.0, False)])
def test_the_adversarial_gradient_reaches_every_generator_parameter(
    gan_loss, feature_matching_weight, gray_input):
  """Against the same step without it, each adversarial term moves every parameter of G
  (without BatchNorm, which cancels the gradients of the biases before it). SGD: Adam's
  first update is the learning rate times the gradient's sign, which hides changes
  that keep the sign (a PReLU's one slope)."""
  config = tiny_config()
  config.generator.batch_norm, config.generator.bicubic_skip = False, True  # As cpu_small.
  config.srresnet.learning_rate = config.srgan.learning_rate = 1e-3
  config.srgan.content_loss, config.srgan.gan_loss = 'mse', gan_loss
  config.discriminator.gray_input = gray_input
  config.srgan.adversarial_weight = 0.0
  without = _one_step_each(config, _batch(6), sgd=True)[1]
  config.srgan.adversarial_weight = 0.0 if feature_matching_weight else 1.0
  config.srgan.feature_matching_weight = feature_matching_weight
  _, with_it, metrics = _one_step_each(config, _batch(6), sgd=True)
  moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), with_it, without)
  still = [jax.tree_util.keystr(path) for path, leaf in jax.tree_util.tree_leaves_with_path(moved)
           if not leaf]
  assert not still, still
  assert np.isfinite(float(metrics.compute()['generator_loss']))


@pytest.mark.parametrize('gan_loss', ['standard', 'relativistic'])
def test_a_few_discriminator_steps_tell_real_from_fake(gan_loss):
  """G frozen (a learning rate too small to move it), D learns at 1e-3: after a few
  steps it scores the textured HR crops above the random generator's output. (The
  relativistic loss constrains only D(HR) - D(SR), so only the standard loss must also
  put D(HR) above one half and D(SR) below.)"""
  config = tiny_config()
  config.srgan.gan_loss = gan_loss
  config.srgan.learning_rate, config.srgan.discriminator_learning_rate = 1e-30, 1e-3
  mesh = _mesh(1)
  replicated = jax.sharding.NamedSharding(mesh, jax.P())
  generator, discriminator = jax.jit(
      functools.partial(steps.create_states, config, steps.SRGAN), out_shardings=replicated)()
  _, srgan_step = steps.compile_steps(config, 'caffe', replicated)
  history = []
  with jax.set_mesh(mesh):
    for step in range(12):
      metrics = steps.empty_metrics(steps.SRGAN, replicated)
      generator, discriminator, metrics = srgan_step(
          generator, discriminator, metrics, jax.device_put(_batch(step), replicated), None, step)
      values = jax.device_get(metrics.compute())
      history.append((float(values['d_real']), float(values['d_fake'])))
  d_real, d_fake = np.mean(history[-3:], axis=0)  # The last 3 steps: D's outputs wobble.
  assert d_real - d_fake > 0.2, history
  if gan_loss == 'standard':
    assert d_real > 0.5 > d_fake, history


def test_a_bfloat16_step_keeps_float32_weights_and_finite_losses():
  """config.dtype='bfloat16' computes in bf16 but keeps the float32 master weights,
  BatchNorm averages and Adam moments (steps.compute_dtype), and its losses finite."""
  config = tiny_config()
  config.dtype = 'bfloat16'
  mesh = _mesh(1)
  replicated = jax.sharding.NamedSharding(mesh, jax.P())
  generator, discriminator = jax.jit(
      functools.partial(steps.create_states, config, steps.SRGAN), out_shardings=replicated)()
  srgan_step = steps.compile_steps(config, 'caffe', replicated)[1]
  with jax.set_mesh(mesh):
    metrics = steps.empty_metrics(steps.SRGAN, replicated)
    batch = sharding.shard_batch(_batch(), jax.sharding.NamedSharding(mesh, jax.P('data')))
    generator, discriminator, metrics = srgan_step(generator, discriminator, metrics, batch,
                                                   None, 0)
  summary = jax.device_get(metrics.compute())
  assert summary['first_nonfinite_step'] == -1
  for name in ('generator_loss', 'discriminator_loss', 'adversarial_loss', 'content_loss'):
    assert np.isfinite(summary[name]), name
  states = jax.device_get((generator.params, generator.batch_stats, generator.opt_state,
                           discriminator.params, discriminator.batch_stats))
  dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves(states)
            if np.issubdtype(leaf.dtype, np.floating)}
  assert dtypes == {np.dtype(np.float32)}
  variables = {'params': generator.params, 'batch_stats': generator.batch_stats}
  lr = _batch()['lr']
  sr = np.asarray(generator.apply_fn(variables, lr, train=False))  # Float32 out, always.
  sr_float32 = np.asarray(models.generator_from_config(config).apply(variables, lr))
  # It did compute in bfloat16: bf16's rounding (8 bits of mantissa) shows, no more.
  assert not np.array_equal(sr, sr_float32)
  np.testing.assert_allclose(sr, sr_float32, atol=0.1)
