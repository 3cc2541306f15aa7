"""Throughput: timing, the benchmark lines, the PyTorch twin and chip peaks."""
