"""Dense peak TFLOP/s of accelerators, the denominator of model FLOP utilisation (MFU).

The benchmark divides each step's measured TFLOP/s by the peak of the device it ran
on; a chip missing here (CPUs, unlisted accelerators) has no MFU.
"""

# Dense peak TFLOP/s per device, by device_kind substring (first match, lower case).
# float32 is at JAX's default matmul precision: TF32 tensor cores on NVIDIA Ampere and
# later, one bf16 pass on TPUs (hence the same figure as bfloat16 there).
# Source: the vendors' spec sheets (dense, without sparsity). What is reachable in
# practice is lower: notes/PERFORMANCE.md, section 10.
PEAK_TFLOPS = (
    ('h100 pcie', {'bfloat16': 756.0, 'float32': 378.0}),
    ('h100', {'bfloat16': 989.0, 'float32': 494.0}),
    ('h200', {'bfloat16': 989.0, 'float32': 494.0}),
    ('a100', {'bfloat16': 312.0, 'float32': 156.0}),
    ('l4', {'bfloat16': 121.0, 'float32': 60.0}),
    ('tpu v4', {'bfloat16': 275.0, 'float32': 275.0}),
    ('tpu v5 lite', {'bfloat16': 197.0, 'float32': 197.0}),  # v5e.
    ('tpu v5', {'bfloat16': 459.0, 'float32': 459.0}),  # v5p.
    ('tpu v6 lite', {'bfloat16': 918.0, 'float32': 918.0}),  # v6e (Trillium).
)


def peak_tflops(device_kind: str, dtype: str) -> float | None:
  """The device's dense peak TFLOP/s for a compute dtype, or None when unknown."""
  kind = device_kind.lower()
  for name, peaks in PEAK_TFLOPS:
    if name in kind:
      return peaks[dtype]
  return None
