"""The PyTorch train steps (torch_reference.py, over nn/torch_twin.py) do the same work as
the JAX steps."""

import functools
import subprocess
import sys

import jax
import numpy as np
import pytest

from srgan_jax.benchmarking import torch_reference
from srgan_jax.benchmarking import workloads
from srgan_jax.runtime import sharding
from srgan_jax.training import steps

# Tiny widths: one residual block of 8 features, 32x32 HR crops, batch 2.
WIDTHS = (1, 8)
CROP = 32
BATCH = 2
RTOL = 1e-4


def _config():
  return workloads.benchmark_config(batch_size=BATCH, crop_size=CROP, widths=WIDTHS)


def _mesh():
  return jax.make_mesh((1,), ('data',), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:1])


@pytest.fixture(scope='module')
def initial_states():
  """Host copies of fresh SRResNet-phase states (made once: XLA takes long to compile
  the initialization on CPU)."""
  replicated = jax.sharding.NamedSharding(_mesh(), jax.P())
  return jax.device_get(jax.jit(functools.partial(steps.create_states, _config(), steps.SRRESNET),
                                out_shardings=replicated)())


def _jax_and_torch_losses(phase, initial_states, num_steps=2):
  """Per-step losses of steps.py's jitted steps and of torch_reference.TorchSRGAN, from the
  same initial weights on the same batches."""
  config = _config()
  mesh = _mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.P())
  data = jax.sharding.NamedSharding(mesh, jax.P('data'))
  generator, discriminator = initial_states
  if phase == steps.SRGAN:  # As the training loop starts the SRGAN phase.
    generator = steps.start_srgan_phase(generator, config)
  generator, discriminator = jax.device_put((generator, discriminator), replicated)
  initial = [jax.device_get({'params': s.params, 'batch_stats': s.batch_stats})
             for s in (generator, discriminator)]
  vgg = workloads.random_vgg_params()
  batches = [workloads.synthetic_batch(BATCH, CROP, config.scale, seed=s)
             for s in range(num_steps)]
  srresnet_step, srgan_step = steps.compile_steps(config, 'caffe', replicated)
  jax_losses = []
  with jax.set_mesh(mesh):
    for step, batch in enumerate(batches):
      metrics = steps.empty_metrics(phase, replicated)
      batch = sharding.shard_batch(batch, data)
      if phase == steps.SRRESNET:
        generator, metrics = srresnet_step(generator, metrics, batch, step)
      else:
        generator, discriminator, metrics = srgan_step(
            generator, discriminator, metrics, batch, jax.device_put(vgg, replicated), step)
      jax_losses.append(jax.device_get(metrics.compute()))
  model = torch_reference.TorchSRGAN(config, phase, *initial, vgg)
  torch_losses = []
  for batch in batches:
    lr, hr = model.images(batch['lr']), model.images(batch['hr'])
    if phase == steps.SRRESNET:
      torch_losses.append({'loss': model.srresnet_step(lr, hr).item()})
    else:
      torch_losses.append({k: v.item() for k, v in model.srgan_step(lr, hr).items()})
  return jax_losses, torch_losses


def test_srresnet_step_losses_equal(initial_states):
  """Same MSE at the first step (same weights) and the second (same Adam update,
  same BatchNorm, same pixel shuffle order)."""
  jax_losses, torch_losses = _jax_and_torch_losses(steps.SRRESNET, initial_states)
  for jax_loss, torch_loss in zip(jax_losses, torch_losses):
    np.testing.assert_allclose(torch_loss['loss'], jax_loss['loss'], rtol=RTOL)
  assert jax_losses[1]['loss'] != jax_losses[0]['loss']


def test_srgan_step_losses_equal(initial_states):
  """D loss, VGG54 content loss, adversarial and total G loss at two SRGAN steps
  (the second after both networks were updated)."""
  jax_losses, torch_losses = _jax_and_torch_losses(steps.SRGAN, initial_states)
  for jax_loss, torch_loss in zip(jax_losses, torch_losses):
    for name, value in torch_loss.items():
      np.testing.assert_allclose(value, jax_loss[name], rtol=RTOL, err_msg=name)
  assert jax_losses[0]['content_loss'] > 0


def test_torch_inference_equals_flax():
  """Generator inference on a non-square image: same SR image."""
  config = _config()
  variables = workloads.generator_variables(config)
  lr = np.random.default_rng(0).uniform(0, 1, (1, 8, 12, 3)).astype(np.float32)
  expected = steps.create_generator(config).apply(variables, lr, train=False)
  model = torch_reference.TorchSRGAN(config, steps.SRRESNET, variables)
  actual = model.generate(model.images(lr)).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-5)


@pytest.mark.system
def test_benchmark_imports_without_torch():
  """torch is imported only by --compare=torch and export --format=torch: the benchmark
  and the other exports run where it is absent."""
  code = ('import sys, srgan_jax.benchmark, srgan_jax.benchmarking.torch_reference, '
          'srgan_jax.nn.torch_twin, srgan_jax.export; '
          'assert "torch" not in sys.modules, "torch imported"')
  subprocess.run([sys.executable, '-c', code], check=True)
