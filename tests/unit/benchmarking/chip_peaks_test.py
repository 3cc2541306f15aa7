"""Chip peaks: the first matching device kind gives the peak of the compute dtype."""

import pytest

from srgan_jax.benchmarking import chip_peaks


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
  assert chip_peaks.peak_tflops(kind, dtype) == peak
