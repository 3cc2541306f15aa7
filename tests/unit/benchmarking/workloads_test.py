"""workloads.py: XLA's FLOP count of the generator, and the options' checks."""

import functools

import jax
import jax.numpy as jnp
import pytest

from srgan_jax.benchmarking import workloads
from srgan_jax.training import steps


def _conv_flops(side, kernel, in_channels, out_channels):
  """2 x multiply-adds of a stride-1 'SAME' conv on a square image, counting only the
  taps that fall inside the image (XLA does not count those on the zero padding)."""
  half = kernel // 2
  taps = sum(min(o + half, side - 1) - max(o - half, 0) + 1 for o in range(side))
  return 2 * taps**2 * in_channels * out_channels


def test_generator_flops_match_conv_count():
  """The paper's SRResNet at 24x24 -> 96x96: XLA's count is that of its convolutions
  plus under 1% for PReLU, BatchNorm and the skips."""
  config = workloads.benchmark_config(batch_size=1)
  model = steps.create_generator(config)
  variables = workloads.generator_variables(config)
  compiled = jax.jit(functools.partial(model.apply, train=False)).lower(
      variables, jnp.zeros((1, 24, 24, 3))).compile()
  convs = (_conv_flops(24, 9, 3, 64) + 33 * _conv_flops(24, 3, 64, 64)
           + _conv_flops(24, 3, 64, 256) + _conv_flops(48, 3, 64, 256)
           + _conv_flops(96, 9, 64, 3))
  assert convs < workloads.compiled_flops(compiled) < 1.01 * convs


def test_unknown_weight_gradient_mode_rejected():
  with pytest.raises(ValueError, match='weight_gradients'):
    workloads.BenchmarkOptions(benchmarks=('inference',), weight_gradients=('fast',))

