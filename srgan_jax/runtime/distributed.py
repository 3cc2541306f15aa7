"""Several processes, one program: starting JAX's distributed runtime, and the
decisions that every process must take alike.

When a run is one process of several, `initialize` starts the runtime (before any
other JAX call), as every entry point does first:

- ``JAX_COORDINATOR_ADDRESS`` set (several GPU hosts, a scheduler, the multi-host
  tests): ``jax.distributed.initialize`` with it, ``JAX_NUM_PROCESSES`` and
  ``JAX_PROCESS_ID``, and JAX's cluster detection turned off, so that a process sees
  all of its host's GPUs (under Slurm or Open MPI the detection would narrow them
  to the one numbered by the local rank). ``JAX_LOCAL_DEVICE_IDS=0,1`` narrows them
  on purpose (JAX reads it).
- A Slurm job step or an Open MPI (``mpirun``) job of several tasks:
  ``jax.distributed.initialize()`` detects the coordinator, the process count and
  this process's number, as JAX documents. One task per GPU: JAX gives each task the
  GPU of its local rank. One task per node: this process takes all of the node's
  GPUs (``SLURM_GPUS_ON_NODE``, else ``CUDA_VISIBLE_DEVICES``), which JAX's detection
  would otherwise narrow to GPU 0.
- A Cloud TPU VM: ``jax.distributed.initialize()`` with no arguments, as JAX documents
  for Cloud TPU; JAX reads the worker list and this worker's number from the VM
  metadata (GKE: from ``TPU_WORKER_HOSTNAMES``). Recognised by ``SRGAN_CLOUD_TPU=1``,
  which ``launch/tpu_vm.sh`` sets on every worker, or else detected: JAX found TPU
  chips and libtpu when it was imported, or GKE's ``TPU_WORKER_HOSTNAMES`` is set.
  ``SRGAN_CLOUD_TPU=0`` turns the detection off. A one-host TPU VM is initialized
  the same way (one process; harmless).
- Otherwise, one process on one machine: nothing to start.

Evaluation and super-resolution then run every computation on all processes alike
(``sharding.data_parallel`` splits a batch that every process holds over all
devices and gives every process the outputs); `on_every_process` makes decisions
(which folders exist) the same everywhere; `is_main_process` says who writes.

Anything decided from files must be decided alike on every process: hosts that read
their own disks may see different files, and a host that ran the data-parallel program
fewer times, or on other shapes, would leave the others waiting for it forever. So
`disagreement` compares a fingerprint of what each process read (its names, shapes
and pixels) before any computation, and `from_main_process` takes process 0's view
where process 0 alone acts on it (the outputs it writes). `check_on_every_process`
runs a host's own checks (its files, the workdir lock) and, when one host refuses,
stops every host with the same line naming that host and why. Each of these is a
collective: every process must call it, as often and in the same order. In a run of
one process they cost nothing (no JAX call at all when the runtime was not started).
"""

import dataclasses
import hashlib
import os
import socket
from typing import Any, Callable, Mapping, Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np

from srgan_jax.runtime import errors

COORDINATOR_VARIABLES = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID')
CLOUD_TPU_VARIABLE = 'SRGAN_CLOUD_TPU'
# What JAX's own cluster detection (jax._src.clusters) requires of each scheduler.
SLURM_VARIABLES = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID',
                   'SLURM_LOCALID')
OPEN_MPI_VARIABLE = 'OMPI_MCA_orte_hnp_uri'  # Set by mpirun / mpiexec.


def _jax_found_cloud_tpu() -> bool:
  """Whether JAX, at import, found TPU chips and libtpu (it then configures a TPU VM).

  A private flag of JAX's (the one its own Cloud TPU cluster detection reads); if a
  JAX version lacks it, only SRGAN_CLOUD_TPU and the GKE variables are used.
  """
  try:
    from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return bool(getattr(cloud_tpu_init, 'running_in_cloud_tpu_vm', False))


def on_cloud_tpu(environ: Mapping[str, str], jax_found_tpu: bool) -> bool:
  """Whether this process runs on a Cloud TPU VM (see the module docstring)."""
  explicit = environ.get(CLOUD_TPU_VARIABLE, '')
  if explicit in ('0', '1'):
    return explicit == '1'
  if explicit:
    raise ValueError(f'{CLOUD_TPU_VARIABLE} must be 0 or 1, got {explicit!r}')
  platforms = environ.get('JAX_PLATFORMS', '')
  if platforms and 'tpu' not in platforms.split(','):
    return False  # E.g. CPU tests on a TPU VM: not part of the slice.
  return jax_found_tpu or bool(environ.get('TPU_WORKER_HOSTNAMES'))


def _node_gpu_count(environ: Mapping[str, str]) -> int | None:
  """The GPUs the scheduler gave this node, if it says."""
  if environ.get('SLURM_GPUS_ON_NODE', '').isdigit():
    return int(environ['SLURM_GPUS_ON_NODE'])
  visible = [device for device in environ.get('CUDA_VISIBLE_DEVICES', '').split(',') if device]
  return len(visible) or None


def scheduler_tasks(environ: Mapping[str, str]) -> tuple[int, bool] | None:
  """(tasks in the job, whether one per node) under Slurm or Open MPI, else None."""
  if all(environ.get(name) for name in SLURM_VARIABLES):
    tasks = int(environ['SLURM_NTASKS'])
    nodes = int(environ.get('SLURM_STEP_NUM_NODES') or environ.get('SLURM_NNODES') or 1)
    return tasks, tasks == nodes  # Slurm spreads a step's tasks over all its nodes.
  if environ.get(OPEN_MPI_VARIABLE):
    return (int(environ.get('OMPI_COMM_WORLD_SIZE', 1)),
            environ.get('OMPI_COMM_WORLD_LOCAL_SIZE', '1') == '1')
  return None


def initialize_arguments(environ: Mapping[str, str],
                         jax_found_tpu: bool) -> dict[str, Any] | None:
  """The arguments of jax.distributed.initialize for this environment; None: do not call it."""
  if environ.get('JAX_COORDINATOR_ADDRESS'):
    missing = [name for name in COORDINATOR_VARIABLES if not environ.get(name)]
    if missing:
      raise ValueError(f'JAX_COORDINATOR_ADDRESS is set, so {", ".join(missing)} must be too')
    return {'coordinator_address': environ['JAX_COORDINATOR_ADDRESS'],
            'num_processes': int(environ['JAX_NUM_PROCESSES']),
            'process_id': int(environ['JAX_PROCESS_ID']),
            # Given explicitly: no detection, which would also narrow the devices.
            'cluster_detection_method': 'deactivate'}
  tasks = scheduler_tasks(environ)
  if tasks is not None and tasks[0] > 1:
    _, one_per_node = tasks
    gpus = _node_gpu_count(environ)
    if one_per_node and gpus and not environ.get('JAX_LOCAL_DEVICE_IDS'):
      return {'local_device_ids': list(range(gpus))}  # All of this node's GPUs.
    return {}  # JAX detects the cluster (one GPU per task: the local rank's).
  if on_cloud_tpu(environ, jax_found_tpu):
    return {}  # JAX reads the Cloud TPU metadata.
  return None


def initialize(environ: Mapping[str, str] | None = None) -> None:
  """Starts JAX's distributed runtime when this process is one of several.

  Call it before any other JAX call (jax.devices() included); calling it again is a
  no-op.
  """
  environ = os.environ if environ is None else environ
  arguments = initialize_arguments(environ, _jax_found_cloud_tpu())
  if arguments is None or jax.distributed.is_initialized():
    return
  jax.distributed.initialize(**arguments)
  if jax.process_count() > 1 and jax.default_backend() == 'cpu':
    _connect_cpu_collectives()


def _connect_cpu_collectives() -> None:
  """Connects the processes for JAX's CPU collectives (gloo) while they are in step.

  Gloo connects the processes of a group of devices at that group's first collective,
  and fails when one has not arrived within 30 s (fixed in XLA; no flag changes it):
  "Gloo context initialization failed: ... GetKeyValue() timed out". A host that
  compiles its first training step or evaluation more than 30 s after another (a
  loaded machine, a slower host) then ended the run. Once connected, a collective
  waits for a late process (measured: notes/BAD_INPUT_CASES.md). So the groups the
  programs use are connected here, right after ``jax.distributed.initialize``, which
  returns on every process at once: all devices (the data-parallel steps and
  evaluation), and those of ``multihost_utils`` (one device per process, at each
  local device index).
  """
  mesh = jax.sharding.Mesh(jax.devices(), ('devices',))
  local = np.zeros(jax.local_device_count(), np.float32)
  on_all = jax.make_array_from_process_local_data(
      jax.sharding.NamedSharding(mesh, jax.P('devices')), local)
  summed = jax.jit(lambda x: x.sum(), out_shardings=jax.sharding.NamedSharding(mesh, jax.P()))
  jax.block_until_ready(summed(on_all))
  multihost_utils.process_allgather(np.zeros(1, np.int32))
  multihost_utils.broadcast_one_to_all(np.zeros(1, np.int32))


class HostsDifferError(errors.UserError):
  """Processes read different files where they must read the same (one line, the same
  on every process, naming the set or the input and the fix)."""


def _one_process() -> bool:
  """Whether this run is one process (no collective is needed, or possible)."""
  # is_initialized first: jax.process_count() would start a backend (and take the
  # accelerators) in commands that never use one (--model=bicubic).
  return not jax.distributed.is_initialized() or jax.process_count() == 1


def several_processes() -> bool:
  """Whether this process is one of several (JAX's distributed runtime is started)."""
  return not _one_process()


def on_every_process(values: Sequence[bool]) -> list[bool]:
  """Each value and-ed over all processes (the same list on every process).

  For decisions every process must take alike, such as which folders to evaluate:
  computations over all devices hang or fail unless all processes run them.
  """
  values = np.asarray(values, bool)
  if not values.size or _one_process():
    return values.tolist()
  return multihost_utils.process_allgather(values).all(axis=0).tolist()


# The longest refusal one process tells the others (UTF-8 bytes; longer ones are cut).
REFUSAL_BYTES = 4096


class RefusedOnAHostError(errors.UserError):
  """A check failed on some process; every process raises it with the same line, which
  names that process, its host and its reason."""


def _first_refusal(message: str | None) -> tuple[int, str, list[int]] | None:
  """(process, its message, every refusing process) of the processes whose ``message``
  is not None, or None when there is none: one allgather of REFUSAL_BYTES per process
  (the same answer on all)."""
  mine = np.zeros(REFUSAL_BYTES + 1, np.uint8)
  if message is not None:
    text = message.encode()[:REFUSAL_BYTES]
    mine[0] = 1  # Refused (the message itself may be empty).
    mine[1:len(text) + 1] = np.frombuffer(text, np.uint8)
  every = np.asarray(multihost_utils.process_allgather(mine))
  refusing = np.flatnonzero(every[:, 0]).tolist()
  if not refusing:
    return None
  first = refusing[0]
  text = every[first, 1:].tobytes().rstrip(b'\0').decode(errors='ignore')  # Cut mid-character.
  return first, text, refusing


def check_on_every_process(check: Callable[[], None]) -> None:
  """Runs ``check`` (which raises a UserError for something to fix) on every process;
  when it raises on any, raises the same one-line RefusedOnAHostError on every one.

  For checks of what each host reads from its own disk (flags naming files, data
  folders, VGG weights, the workdir lock): a process that stopped alone would leave
  the others waiting for it, and its reason would be in its log only. The line names
  the first process that refused, its host and its message (and the others that
  refused too). A check that fails with another exception (a bug) keeps its traceback
  on its own process; the others raise the line, pointing at that traceback.
  """
  if _one_process():
    check()
    return
  problem = None
  try:
    check()
  except Exception as error:  # pylint: disable=broad-except  # Told to all, re-raised below.
    problem = error
  mine = None
  if problem is not None:
    reason = str(problem) if isinstance(problem, errors.UserError) else (
        f'{type(problem).__name__} (a bug: its traceback is in that process\'s output)')
    mine = (f'process {jax.process_index()} of {jax.process_count()} '
            f'(host {socket.gethostname()}): {" ".join(reason.split())}')
  refusal = _first_refusal(mine)
  if refusal is None:
    return
  first, line, refusing = refusal
  others = [str(process) for process in refusing if process != first]
  if others:
    line += f' (process{"es" if len(others) > 1 else ""} {", ".join(others)} refused as well)'
  if problem is not None and not isinstance(problem, errors.UserError):
    raise problem
  raise RefusedOnAHostError(line) from problem


def from_main_process(values: Sequence[bool]) -> list[bool]:
  """Process 0's values, on every process (all must pass as many).

  For what process 0 alone acts on, such as which outputs it will not overwrite: the
  other processes compute with it and must skip the same images.
  """
  values = np.asarray(values, bool)
  if not values.size or _one_process():
    return values.tolist()
  return np.asarray(multihost_utils.broadcast_one_to_all(values), bool).tolist()


def fingerprint(*parts: Any) -> bytes:
  """A sha256 digest of ``parts``: arrays by dtype, shape and bytes, the rest by repr."""
  digest = hashlib.sha256()
  for part in parts:
    if isinstance(part, np.ndarray):
      part = np.ascontiguousarray(part)
      digest.update(f'{part.dtype.str}{part.shape}'.encode())
      digest.update(part.data)
    else:
      digest.update(repr(part).encode())
    digest.update(b'\0')  # So that ('ab', 'c') and ('a', 'bc') differ.
  return digest.digest()


@dataclasses.dataclass(frozen=True)
class Disagreement:
  """Processes that read different things (the same on every process).

  Attributes:
    process: the first process whose fingerprint differs from process 0's.
    counts: each process's ``counts`` (as passed to `disagreement`), by process.
  """
  process: int
  counts: list[list[int]]


def disagreement(parts: Sequence[Any], counts: Sequence[int] = ()) -> Disagreement | None:
  """None when every process read the same ``parts`` (compared by `fingerprint`), else
  which differs; the same answer on every process.

  One allgather of fixed-size data: the sha256 of ``parts`` (32 bytes) and ``counts``,
  a few integers for the message (such as the files seen); every process must pass as
  many. A run of one process returns at once, without hashing anything.
  """
  if _one_process():
    return None
  digest = fingerprint(*parts)
  mine = np.concatenate([np.frombuffer(digest, np.uint8).astype(np.int32),
                         np.asarray(counts, np.int32).reshape(-1)])
  every = np.asarray(multihost_utils.process_allgather(mine))
  differs = np.flatnonzero(np.any(every[:, :len(digest)] != every[0, :len(digest)], axis=1))
  if not differs.size:
    return None
  return Disagreement(int(differs[0]), every[:, len(digest):].tolist())


def same_on_every_process(*parts: Any) -> bool:
  """Whether every process read the same ``parts`` (the same answer everywhere)."""
  return disagreement(parts) is None


def is_main_process() -> bool:
  """Whether this process writes the files and prints the results of a run (process 0)."""
  return jax.process_index() == 0

