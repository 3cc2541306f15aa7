"""memory.py: the one translation of out-of-memory errors, and the up-front refusal."""

import jax
import pytest

from srgan_jax.runtime import errors
from srgan_jax.runtime import memory


def test_out_of_memory_is_one_line_naming_what_and_what_to_lower():
  xla = jax.errors.JaxRuntimeError(
      'RESOURCE_EXHAUSTED: Out of memory while trying to allocate 25769803776 bytes.\n'
      'BufferAssignment OOM Debugging.\n...')
  translated = memory.out_of_memory(xla, 'with --tile=2000', 'lower --tile or --batch')
  assert isinstance(translated, errors.UserError) and isinstance(translated, MemoryError)
  assert str(translated) == (
      'out of accelerator memory with --tile=2000 (RESOURCE_EXHAUSTED: Out of memory while '
      'trying to allocate 25769803776 bytes.): lower --tile or --batch')
  # CPU's wording of the same.
  cpu = jax.errors.JaxRuntimeError('INTERNAL: Failed to allocate 80000000000 bytes')
  assert str(memory.out_of_memory(cpu, 'x', 'y')).startswith('out of accelerator memory x (')
  # numpy's host MemoryError names the array.
  host = memory.out_of_memory(
      MemoryError('Unable to allocate 18.0 GiB for an array with shape (40000, 40000, 3)'),
      'scoring set Big', 'lower --tile')
  assert str(host) == ('out of host memory scoring set Big (Unable to allocate 18.0 GiB for an '
                       'array with shape (40000, 40000, 3)): lower --tile')
  assert '\n' not in str(translated) + str(host)


def test_other_errors_are_bugs_and_are_not_translated():
  assert memory.out_of_memory(jax.errors.JaxRuntimeError('INTERNAL: oops'), 'x', 'y') is None
  assert memory.out_of_memory(ValueError('RESOURCE_EXHAUSTED'), 'x', 'y') is None
  assert memory.out_of_memory(RuntimeError('out of memory'), 'x', 'y') is None  # Not XLA's.
  done = memory.OutOfMemoryError('out of host memory ...')
  assert memory.out_of_memory(done, 'x', 'y') is None  # Translated once, not twice.


def test_check_fits_refuses_before_allocating_and_states_the_memory_needed(monkeypatch):
  monkeypatch.setattr(memory, 'available_bytes', lambda: 3 * 2 ** 30)
  memory.check_fits(3 * 2 ** 30, 'an output', 'shrink it')  # Just fits.
  with pytest.raises(memory.OutOfMemoryError) as raised:
    memory.check_fits(18 * 2 ** 30 + 1, 'its 40000x40000 output', 'shrink it')
  assert str(raised.value) == ('its 40000x40000 output needs 18.0 GiB of host memory, 3.0 GiB '
                               'is available: shrink it')
  monkeypatch.setattr(memory, 'available_bytes', lambda: None)  # Unknown: not refused.
  memory.check_fits(2 ** 60, 'anything', 'x')


def test_available_bytes_is_this_machines_free_memory():
  available = memory.available_bytes()
  with open('/proc/meminfo') as file:
    total = int(next(line for line in file if line.startswith('MemTotal:')).split()[1]) * 1024
  assert 0 < available <= total
