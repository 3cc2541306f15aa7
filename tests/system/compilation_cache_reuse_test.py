"""The persistent compilation cache every command turns on (runtime/compilation_cache.py):
a second process compiles nothing the first one compiled, and corrupt entries cost a
compilation, not the command (where the folder is: tests/unit/runtime)."""

import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

pytestmark = pytest.mark.system

REPO = pathlib.Path(__file__).resolve().parents[2]
HITS, WRITES = '/jax/compilation_cache/cache_hits', '/jax/compilation_cache/cache_misses'
# super_resolve as `python -m` runs it, with JAX's cache events counted: a miss event
# is recorded when an entry is written (compiled, not found), a hit when one is read.
COUNTING_COMMAND = f"""
import atexit, sys
from jax import monitoring
events = []
monitoring.register_event_listener(lambda event, **_: events.append(event))
atexit.register(lambda: print('EVENTS', events.count({HITS!r}), events.count({WRITES!r})))
from srgan_jax import super_resolve
sys.argv = ['super_resolve'] + sys.argv[1:]
super_resolve.run()
"""


def _super_resolve(image: pathlib.Path, output: pathlib.Path, cache: pathlib.Path
                   ) -> tuple[subprocess.CompletedProcess, int, int]:
  """super_resolve --model=cpu_small in a new process: (result, cache hits, entries written)."""
  result = subprocess.run(
      [sys.executable, '-c', COUNTING_COMMAND, '--model=cpu_small', f'--input={image}',
       f'--output={output}', f'--compilation_cache={cache}'],
      cwd=REPO, env={**os.environ, 'PYTHONPATH': str(REPO)}, capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 0, result.stderr
  counts = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith('EVENTS')]
  return result, int(counts[0][0]), int(counts[0][1])


def test_second_process_reuses_the_first_ones_programs_and_survives_corrupt_entries(tmp_path):
  image, cache = tmp_path / 'in.png', tmp_path / 'xla'
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (19, 23, 3), dtype=np.uint8)).save(image)

  _, hits, written = _super_resolve(image, tmp_path / 'first.png', cache)
  entries = sorted(cache.glob('*-cache'))
  assert hits == 0 and written == len(entries) > 0  # An empty cache: all compiled.
  _, hits, written = _super_resolve(image, tmp_path / 'second.png', cache)
  assert (hits, written) == (len(entries), 0)  # Nothing compiled again.
  assert sorted(cache.glob('*-cache')) == entries

  for entry in entries:  # Cut short, as by a process killed while writing it.
    entry.write_bytes(entry.read_bytes()[:entry.stat().st_size // 2])
  result, hits, _ = _super_resolve(image, tmp_path / 'third.png', cache)
  assert hits == 0 and 'Error reading persistent compilation cache' in result.stderr
  first = np.asarray(Image.open(tmp_path / 'first.png'))
  assert first.shape == (19 * 4, 23 * 4, 3)
  for name in ('second.png', 'third.png'):  # The same program's output, bit for bit.
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / name)), first)
