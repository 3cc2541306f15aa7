"""Benchmark tests: the PyTorch comparison does the same work, the CLI writes its report."""

import functools
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from srgan_jax import benchmark
from srgan_jax import models
from srgan_jax import train

# Tiny widths: one residual block of 8 features, 32x32 HR crops, batch 2.
WIDTHS = (1, 8)
CROP = 32
BATCH = 2
RTOL = 1e-4


def _config():
  return benchmark.benchmark_config(batch_size=BATCH, crop_size=CROP, widths=WIDTHS)


def _mesh():
  return jax.make_mesh((1,), ('data',), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:1])


@pytest.fixture(scope='module')
def initial_states():
  """Host copies of fresh SRResNet-phase states (made once: XLA takes long to compile
  the initialisation on CPU)."""
  replicated = jax.sharding.NamedSharding(_mesh(), jax.P())
  return jax.device_get(jax.jit(functools.partial(train.create_states, _config(), train.SRRESNET),
                                out_shardings=replicated)())


def _jax_and_torch_losses(phase, initial_states, num_steps=2):
  """Per-step losses of train.py's jitted steps and of benchmark.TorchSRGAN, from the
  same initial weights on the same batches."""
  config = _config()
  mesh = _mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.P())
  data = jax.sharding.NamedSharding(mesh, jax.P('data'))
  generator, discriminator = initial_states
  if phase == train.SRGAN:  # As the training loop starts the SRGAN phase.
    generator = train.start_srgan_phase(generator, config)
  generator, discriminator = jax.device_put((generator, discriminator), replicated)
  initial = [jax.device_get({'params': s.params, 'batch_stats': s.batch_stats})
             for s in (generator, discriminator)]
  vgg = benchmark.random_vgg_params()
  batches = [benchmark.synthetic_batch(BATCH, CROP, config.scale, seed=s) for s in range(num_steps)]
  srresnet_step, srgan_step = train._compile_steps(config, 'caffe', replicated)
  jax_losses = []
  with jax.set_mesh(mesh):
    for step, batch in enumerate(batches):
      metrics = train._empty_metrics(phase, replicated)
      batch = train.shard_batch(batch, data)
      if phase == train.SRRESNET:
        generator, metrics = srresnet_step(generator, metrics, batch, step)
      else:
        generator, discriminator, metrics = srgan_step(
            generator, discriminator, metrics, batch, jax.device_put(vgg, replicated), step)
      jax_losses.append(jax.device_get(metrics.compute()))
  model = benchmark.TorchSRGAN(config, phase, *initial, vgg)
  torch_losses = []
  for batch in batches:
    lr, hr = model.images(batch['lr']), model.images(batch['hr'])
    if phase == train.SRRESNET:
      torch_losses.append({'loss': model.srresnet_step(lr, hr).item()})
    else:
      torch_losses.append({k: v.item() for k, v in model.srgan_step(lr, hr).items()})
  return jax_losses, torch_losses


def test_srresnet_step_losses_equal(initial_states):
  """Same MSE at the first step (same weights) and the second (same Adam update,
  same BatchNorm, same pixel shuffle order)."""
  jax_losses, torch_losses = _jax_and_torch_losses(train.SRRESNET, initial_states)
  for jax_loss, torch_loss in zip(jax_losses, torch_losses):
    np.testing.assert_allclose(torch_loss['loss'], jax_loss['loss'], rtol=RTOL)
  assert jax_losses[1]['loss'] != jax_losses[0]['loss']


def test_srgan_step_losses_equal(initial_states):
  """D loss, VGG54 content loss, adversarial and total G loss at two SRGAN steps
  (the second after both networks were updated)."""
  jax_losses, torch_losses = _jax_and_torch_losses(train.SRGAN, initial_states)
  for jax_loss, torch_loss in zip(jax_losses, torch_losses):
    for name, value in torch_loss.items():
      np.testing.assert_allclose(value, jax_loss[name], rtol=RTOL, err_msg=name)
  assert jax_losses[0]['content_loss'] > 0


def test_torch_inference_equals_flax():
  """Generator inference on a non-square image: same SR image."""
  config = _config()
  variables = benchmark.generator_variables(config)
  lr = np.random.default_rng(0).uniform(0, 1, (1, 8, 12, 3)).astype(np.float32)
  expected = train.create_generator(config).apply(variables, lr, train=False)
  model = benchmark.TorchSRGAN(config, train.SRRESNET, variables)
  actual = model.generate(model.images(lr)).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-5)


def test_pixel_shuffle_channel_order():
  """torch's pixel_shuffle on reordered channels equals models.pixel_shuffle."""
  import torch  # pylint: disable=g-import-not-at-top
  x = np.random.default_rng(0).normal(size=(1, 3, 5, 12)).astype(np.float32)
  expected = models.pixel_shuffle(jnp.asarray(x), 2)
  reordered = x[..., benchmark._crd_channel_order(12)]
  actual = torch.nn.functional.pixel_shuffle(
      torch.from_numpy(reordered).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).numpy()
  np.testing.assert_array_equal(actual, expected)


def _conv_flops(side, kernel, in_channels, out_channels):
  """2 x multiply-adds of a stride-1 'SAME' conv on a square image, counting only the
  taps that fall inside the image (XLA does not count those on the zero padding)."""
  half = kernel // 2
  taps = sum(min(o + half, side - 1) - max(o - half, 0) + 1 for o in range(side))
  return 2 * taps**2 * in_channels * out_channels


def test_generator_flops_match_conv_count():
  """The paper's SRResNet at 24x24 -> 96x96: XLA's count is that of its convolutions
  plus under 1% for PReLU, BatchNorm and the skips."""
  config = benchmark.benchmark_config(batch_size=1)
  model = train.create_generator(config)
  variables = benchmark.generator_variables(config)
  compiled = jax.jit(functools.partial(model.apply, train=False)).lower(
      variables, jnp.zeros((1, 24, 24, 3))).compile()
  convs = (_conv_flops(24, 9, 3, 64) + 33 * _conv_flops(24, 3, 64, 64)
           + _conv_flops(24, 3, 64, 256) + _conv_flops(48, 3, 64, 256)
           + _conv_flops(96, 9, 64, 3))
  assert convs < benchmark.compiled_flops(compiled) < 1.01 * convs


@pytest.mark.parametrize('kind, dtype, peak', [
    ('NVIDIA H200', 'bfloat16', 989.0),
    ('NVIDIA H100 80GB HBM3', 'float32', 494.0),
    ('NVIDIA H100 PCIe', 'bfloat16', 756.0),
    ('TPU v5 lite', 'bfloat16', 197.0),
    ('TPU v5p', 'bfloat16', 459.0),
    ('TPU v6 lite', 'float32', 918.0),
    ('cpu', 'float32', None),
])
def test_peak_tflops(kind, dtype, peak):
  assert benchmark.peak_tflops(kind, dtype) == peak


@pytest.fixture(scope='module')
def cli_run(tmp_path_factory):
  """One tiny run of the command line (its flags and main) in a fresh process, with
  the PyTorch comparison; returns (JSON report, stdout)."""
  path = tmp_path_factory.mktemp('benchmark') / 'report.json'
  args = ['--run=srresnet,srgan,inference', f'--batch_sizes={BATCH}', f'--crop_size={CROP}',
          '--widths=1,8', '--inference_sizes=8', '--steps=1', '--warmup=0', '--compare=torch',
          '--weight_gradients=xla,matmul', f'--json={path}']
  code = textwrap.dedent(f"""
      import sys
      from absl import flags
      from srgan_jax import benchmark
      benchmark._define_flags()
      benchmark.main(flags.FLAGS(['benchmark', *{args}]))
      print('tensorflow imported:', 'tensorflow' in sys.modules)
      """)
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, timeout=900, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(path.read_text()), result.stdout


def test_cli_writes_json(cli_run):
  report, stdout = cli_run
  assert {'jax', 'backend', 'device_kind', 'dtype', 'torch'} <= set(report['environment'])
  assert benchmark.RANDOM_VGG_NOTE in report['notes']
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


def test_unknown_weight_gradient_mode_rejected():
  with pytest.raises(ValueError, match='weight_gradients'):
    benchmark.run_benchmarks(benchmarks=('inference',), weight_gradients=('fast',))


def test_benchmark_does_not_import_tensorflow(cli_run):
  """Machines that only benchmark or serve need not have tensorflow."""
  _, stdout = cli_run
  assert 'tensorflow imported: False' in stdout
