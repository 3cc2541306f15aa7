"""Running out of memory, outside training as inside it: one line naming what to lower.

XLA reports an accelerator allocation that does not fit as a ``JaxRuntimeError``
whose text holds RESOURCE_EXHAUSTED (on CPU sometimes "Out of memory" or "failed to
allocate"); numpy and Python raise ``MemoryError`` for host arrays. ``out_of_memory``
is the one place that recognises both and turns them into an ``OutOfMemoryError``, a
``UserError`` that ``cli`` prints as one line: what was being done and what to lower.
Every command that computes uses it (training, evaluate, super_resolve, benchmark).

``check_fits`` refuses a host allocation before it is made, where its size is known
in advance (a huge output image), stating the memory it needs.

Imports only the standard library and ``errors``: it must not start JAX.
"""

from srgan_jax.runtime import errors

_GIB = 2 ** 30
# Text of XLA runtime errors that mean an allocation did not fit.
_XLA_SIGNS = ('resource_exhausted', 'out of memory', 'failed to allocate',
              'allocation failure')


class OutOfMemoryError(errors.UserError, MemoryError):
  """Something needs more accelerator or host memory than there is."""


def _kind(error: BaseException) -> str | None:
  """'host' for a MemoryError, 'accelerator' for XLA's out-of-memory, else None."""
  if isinstance(error, OutOfMemoryError):
    return None  # Already translated.
  if isinstance(error, MemoryError):
    return 'host'
  # By name: importing jax here would start it for commands that do not use it.
  runtime_error = any(cls.__name__ in ('JaxRuntimeError', 'XlaRuntimeError')
                      for cls in type(error).__mro__)
  text = str(error).lower()
  if runtime_error and any(sign in text for sign in _XLA_SIGNS):
    return 'accelerator'
  return None


def out_of_memory(error: BaseException, doing: str, lower: str) -> OutOfMemoryError | None:
  """The one-line error for an out-of-memory ``error`` (else None, a bug to keep).

  Args:
    error: what was raised.
    doing: what needed the memory, e.g. 'in a training step with batch_size=16'.
    lower: the fix, e.g. 'lower --tile or --batch'.
  """
  kind = _kind(error)
  if kind is None:
    return None
  detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
  return OutOfMemoryError(f'out of {kind} memory {doing} ({detail}): {lower}')


def available_bytes() -> int | None:
  """Host memory that can still be allocated (Linux's MemAvailable), or None if unknown."""
  try:
    with open('/proc/meminfo') as file:
      for line in file:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return None


def _size(count: int) -> str:
  """A byte count in GiB, or in MiB below one GiB."""
  return f'{count / _GIB:.1f} GiB' if count >= _GIB else f'{count / 2 ** 20:.1f} MiB'


def check_fits(needed: int, what: str, fix: str) -> None:
  """Raises OutOfMemoryError, stating ``needed``, when it exceeds ``available_bytes``."""
  available = available_bytes()
  if available is not None and needed > available:
    raise OutOfMemoryError(f'{what} needs {_size(needed)} of host memory, {_size(available)} '
                           f'is available: {fix}')
