"""conftest.py: the suite's XLA CPU client has a spare thread for every simulated device.

With only one thread per device, an all-reduce across the 8 simulated devices can
deadlock on a 2-core machine until XLA aborts the process (see conftest.py).
"""

import os
import pathlib

from conftest import SIMULATED_DEVICES
import jax
import pytest


def _thread_names() -> list[str]:
  tasks = pathlib.Path('/proc/self/task')
  names = []
  for task in os.listdir(tasks):
    try:
      names.append((tasks / task / 'comm').read_text().strip())
    except FileNotFoundError:  # A thread that ended meanwhile (a finished background save).
      pass
  return names


@pytest.mark.skipif(not pathlib.Path('/proc/self/task').is_dir(), reason='needs /proc')
def test_cpu_client_threads_are_twice_the_devices():
  devices = jax.local_device_count()  # Creates the CPU client, and its thread pools.
  assert devices == SIMULATED_DEVICES
  # XLA sizes its intra-op pool and its launch pool alike (PJRT_NPROC when set);
  # only the intra-op one names its threads.
  intra_op = sum('XLAEigen' in name for name in _thread_names())
  assert intra_op >= 2 * devices, f'{intra_op} XLA threads for {devices} devices'
