"""When the distributed runtime starts, and with which arguments, in faked environments.

jax.distributed.initialize is replaced by a recorder: these tests check the decision
and the call. multihost_test starts real 2-process runs through the coordinator
variables; test_cloud_tpu_vm_pod_starts_from_the_metadata below runs JAX's own Cloud
TPU detection against a fake metadata server.
"""

import contextlib
import http.server
import os
import socket
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from conftest import REPO
from srgan_jax.runtime import distributed
from srgan_jax.runtime import errors

COORDINATOR = {'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234', 'JAX_NUM_PROCESSES': '4',
               'JAX_PROCESS_ID': '3'}
EXPLICIT = {'coordinator_address': '10.0.0.1:1234', 'num_processes': 4, 'process_id': 3,
            'cluster_detection_method': 'deactivate'}
# A task of `srun` on 2 nodes of 8 GPUs, one task per GPU (16 tasks) or per node (2).
SLURM_PER_GPU = {'SLURM_JOB_ID': '4242', 'SLURM_STEP_NODELIST': 'gpu[07-08]',
                 'SLURM_NTASKS': '16', 'SLURM_PROCID': '11', 'SLURM_LOCALID': '3',
                 'SLURM_STEP_NUM_NODES': '2', 'SLURM_GPUS_ON_NODE': '8'}
SLURM_PER_NODE = {**SLURM_PER_GPU, 'SLURM_NTASKS': '2', 'SLURM_PROCID': '1',
                  'SLURM_LOCALID': '0'}
# A process of `mpirun -np 8` on 2 hosts, 4 per host.
OPEN_MPI = {'OMPI_MCA_orte_hnp_uri': '1531576320.0;tcp://10.96.0.1,10.148.0.1:34911',
            'OMPI_COMM_WORLD_SIZE': '8', 'OMPI_COMM_WORLD_RANK': '5',
            'OMPI_COMM_WORLD_LOCAL_RANK': '1', 'OMPI_COMM_WORLD_LOCAL_SIZE': '4'}


@pytest.fixture
def calls(monkeypatch):
  """The keyword arguments of each jax.distributed.initialize call."""
  recorded = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kwargs: recorded.append(kwargs))
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: bool(recorded))
  return recorded


def _initialize(monkeypatch, environ, jax_found_tpu=False):
  monkeypatch.setattr(distributed, '_jax_found_cloud_tpu', lambda: jax_found_tpu)
  distributed.initialize(environ)


@pytest.mark.parametrize('environ, jax_found_tpu, expected', [
    # Processes started with the coordinator variables (GPU hosts, the tests).
    (COORDINATOR, False, EXPLICIT),
    # They win over a TPU VM's detection: CPU processes on a TPU VM.
    ({**COORDINATOR, 'SRGAN_CLOUD_TPU': '1'}, True, EXPLICIT),
    # ... and over a scheduler's: no narrowing to the local rank's GPU.
    ({**COORDINATOR, **SLURM_PER_GPU}, False, EXPLICIT),
    # Slurm, one task per GPU (srun --ntasks-per-node=8): JAX detects everything.
    (SLURM_PER_GPU, False, {}),
    # Slurm, one task per node driving its 8 GPUs (srun --ntasks-per-node=1).
    (SLURM_PER_NODE, False, {'local_device_ids': list(range(8))}),
    ({**SLURM_PER_NODE, 'SLURM_GPUS_ON_NODE': '', 'CUDA_VISIBLE_DEVICES': '4,5'}, False,
     {'local_device_ids': [0, 1]}),
    ({**SLURM_PER_NODE, 'JAX_LOCAL_DEVICE_IDS': '0'}, False, {}),  # Narrowed on purpose.
    # Open MPI (mpirun), one process per GPU, and one per node.
    (OPEN_MPI, False, {}),
    ({**OPEN_MPI, 'OMPI_COMM_WORLD_LOCAL_SIZE': '1', 'CUDA_VISIBLE_DEVICES': '0,1,2,3'},
     False, {'local_device_ids': [0, 1, 2, 3]}),
    # A TPU VM (gcloud compute tpus tpu-vm create): the worker list is in the VM
    # metadata, not in the environment; JAX reads it when given no arguments.
    ({'SRGAN_CLOUD_TPU': '1'}, False, {}),  # As launch/tpu_vm.sh runs it.
    ({}, True, {}),  # Started by hand on a TPU VM: detected.
    ({'TPU_WORKER_HOSTNAMES': 'w-0,w-1'}, False, {}),  # GKE.
    ({'TPU_WORKER_HOSTNAMES': 'w-0'}, False, {}),  # GKE, one host.
], ids=['coordinator', 'coordinator-on-tpu-vm', 'coordinator-under-slurm', 'slurm-per-gpu',
        'slurm-per-node', 'slurm-per-node-cuda-visible', 'slurm-narrowed', 'open-mpi-per-gpu',
        'open-mpi-per-node', 'launch-script', 'tpu-vm-detected', 'gke', 'gke-one-host'])
def test_starts_the_runtime(monkeypatch, calls, environ, jax_found_tpu, expected):
  _initialize(monkeypatch, environ, jax_found_tpu)
  assert calls == [expected]


@pytest.mark.parametrize('environ, expected', [
    (SLURM_PER_GPU, ('gpu07:5555', 16, 11, [3])),
    (SLURM_PER_NODE, ('gpu07:5555', 2, 1, list(range(8)))),
    (OPEN_MPI, ('10.96.0.1:5555', 8, 5, [1])),
], ids=['slurm-per-gpu', 'slurm-per-node', 'open-mpi-per-gpu'])
def test_jax_detection_with_these_arguments(monkeypatch, environ, expected):
  """JAX's own cluster detection, given what initialize passes: the coordinator, the
  process count and number it finds, and the GPUs this process drives."""
  from jax._src import clusters  # pylint: disable=g-import-not-at-top
  for name in [*distributed.SLURM_VARIABLES, distributed.OPEN_MPI_VARIABLE,
               'JAX_COORDINATOR_PORT', 'JAX_LOCAL_DEVICE_IDS']:
    monkeypatch.delenv(name, raising=False)
  for name, value in {**environ, 'JAX_COORDINATOR_PORT': '5555'}.items():
    monkeypatch.setenv(name, value)
  arguments = distributed.initialize_arguments(environ, jax_found_tpu=False)
  found = clusters.ClusterEnv.auto_detect_unset_distributed_params(
      None, None, None, arguments.get('local_device_ids'), None, 10)
  assert (found[0], found[1], found[2], list(found[3])) == expected


def test_coordinator_variables_keep_every_gpu_under_a_scheduler(monkeypatch):
  """Before: JAX's detection ran and set local_device_ids to [SLURM_LOCALID]."""
  for name, value in SLURM_PER_GPU.items():
    monkeypatch.setenv(name, value)
  arguments = distributed.initialize_arguments({**COORDINATOR, **SLURM_PER_GPU}, False)
  assert arguments['cluster_detection_method'] == 'deactivate'
  assert 'local_device_ids' not in arguments


@pytest.mark.parametrize('environ, jax_found_tpu', [
    ({}, False),  # One machine, not a TPU VM: a GPU box, a laptop, CI.
    ({**SLURM_PER_GPU, 'SLURM_NTASKS': '1', 'SLURM_STEP_NUM_NODES': '1'}, False),  # One task.
    ({**OPEN_MPI, 'OMPI_COMM_WORLD_SIZE': '1'}, False),  # mpirun -np 1.
    ({'TPU_WORKER_HOSTNAMES': ''}, False),
    ({'SRGAN_CLOUD_TPU': '0'}, True),  # Detection turned off.
    ({'SRGAN_CLOUD_TPU': '0', 'TPU_WORKER_HOSTNAMES': 'w-0,w-1'}, False),
    ({'JAX_PLATFORMS': 'cpu'}, True),  # CPU-only processes on a TPU VM (tests).
], ids=['one-machine', 'slurm-one-task', 'open-mpi-one-process', 'empty-worker-list', 'turned-off', 'turned-off-gke', 'cpu-on-tpu-vm'])
def test_one_machine_starts_nothing(monkeypatch, calls, environ, jax_found_tpu):
  _initialize(monkeypatch, environ, jax_found_tpu)
  assert not calls


def test_second_call_is_a_no_op(monkeypatch, calls):
  _initialize(monkeypatch, COORDINATOR)
  _initialize(monkeypatch, COORDINATOR)
  assert len(calls) == 1


@pytest.mark.parametrize('environ, message', [
    ({'JAX_COORDINATOR_ADDRESS': 'h:1', 'JAX_NUM_PROCESSES': '2'}, 'JAX_PROCESS_ID must be'),
    ({'JAX_COORDINATOR_ADDRESS': 'h:1'}, 'JAX_NUM_PROCESSES, JAX_PROCESS_ID must be'),
    ({'SRGAN_CLOUD_TPU': 'yes'}, 'SRGAN_CLOUD_TPU must be 0 or 1'),
])
def test_incomplete_environment_is_an_error(monkeypatch, calls, environ, message):
  with pytest.raises(ValueError, match=message):
    _initialize(monkeypatch, environ)
  assert not calls


def test_detection_reads_what_jax_found_at_import():
  """The flag JAX's own Cloud TPU cluster detection reads exists, and is False here."""
  from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
  assert cloud_tpu_init.running_in_cloud_tpu_vm is False
  assert distributed._jax_found_cloud_tpu() is False  # pylint: disable=protected-access


def test_on_every_process_is_the_values_on_one():
  assert distributed.on_every_process([True, False]) == [True, False]
  assert distributed.on_every_process([]) == []


def test_one_process_agrees_with_itself_without_a_collective(monkeypatch):
  def no_collective(*args, **kwargs):
    raise AssertionError('a collective in a run of one process')

  monkeypatch.setattr(distributed.multihost_utils, 'process_allgather', no_collective)
  monkeypatch.setattr(distributed.multihost_utils, 'broadcast_one_to_all', no_collective)
  parts = ['a.png', np.zeros((2, 3), np.uint8)]
  assert distributed.disagreement(parts, [3, 2]) is None
  assert distributed.same_on_every_process(*parts)
  assert distributed.from_main_process([True, False]) == [True, False]
  assert distributed.on_every_process([False]) == [False]


def test_fingerprint_tells_names_shapes_and_pixels_apart():
  pixels = np.arange(6, dtype=np.uint8).reshape(2, 3)
  digest = distributed.fingerprint('a.png', pixels)
  assert len(digest) == 32 and digest == distributed.fingerprint('a.png', pixels.copy())
  changed = pixels.copy()
  changed[1, 2] += 1
  for other in (distributed.fingerprint('b.png', pixels),
                distributed.fingerprint('a.png', pixels.reshape(3, 2)),
                distributed.fingerprint('a.png', changed),
                distributed.fingerprint('a.pn', 'g', pixels)):
    assert other != digest


# The Cloud TPU VM metadata a pod worker reads (keys as in jax._src.clusters.
# cloud_tpu_cluster); both workers on this machine.
METADATA = {'worker-network-endpoints': '127.0.0.1,127.0.0.1', 'tpu-env': "ACCELERATOR_TYPE: 'v4-16'"}

# A process on a faked Cloud TPU VM worker: JAX is told at import that it found TPU
# chips and the metadata server is a local fake; then srgan_jax.runtime.distributed starts
# the runtime as on a real pod (SRGAN_CLOUD_TPU=1, as launch/tpu_vm.sh sets it).
FAKE_TPU_WORKER = '''\
import os
import jax
from jax._src import cloud_tpu_init
from jax._src.clusters import cloud_tpu_cluster, cluster
jax.config.update('jax_num_cpu_devices', 2)
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
for module in (cloud_tpu_init, cloud_tpu_cluster, cluster):
  module.running_in_cloud_tpu_vm = True
os.environ.pop('TPU_SKIP_MDS_QUERY', None)  # Set at import: no TPU chips here.
from srgan_jax.runtime import distributed
distributed.initialize()
print('process', jax.process_index(), 'of', jax.process_count(), jax.device_count(), 'devices')
print('on every process:', distributed.on_every_process([True, jax.process_index() == 0]))
'''


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


def _metadata_server(worker: int) -> http.server.HTTPServer:
  """Serves METADATA and agent-worker-number = worker, as the GCE metadata server does."""
  values = {**METADATA, 'agent-worker-number': str(worker)}

  class Handler(http.server.BaseHTTPRequestHandler):

    def do_GET(self):  # pylint: disable=invalid-name
      key = self.path.rsplit('/', 1)[-1]
      if self.headers.get('Metadata-Flavor') != 'Google' or key not in values:
        self.send_error(404)
        return
      body = values[key].encode()
      self.send_response(200)
      self.send_header('Content-Length', str(len(body)))
      self.end_headers()
      self.wfile.write(body)

    def log_message(self, *args):
      del args

  server = http.server.HTTPServer(('127.0.0.1', 0), Handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return server


@pytest.mark.system
def test_cloud_tpu_vm_pod_starts_from_the_metadata(tmp_path):
  """Two faked pod workers find each other through JAX's reading of the metadata."""
  pytest.importorskip('requests')  # JAX's metadata client; jax[tpu] installs it.
  script = tmp_path / 'worker.py'
  script.write_text(FAKE_TPU_WORKER)
  port = str(_free_port())
  servers = [_metadata_server(worker) for worker in range(2)]
  processes = []
  try:
    for server in servers:
      environment = {
          key: value for key, value in os.environ.items()
          if not key.startswith(('JAX_COORDINATOR', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID',
                                 'TPU_', 'SRGAN_CLOUD_TPU'))}
      environment.update({
          'PYTHONPATH': str(REPO),
          'JAX_PLATFORMS': 'cpu', 'SRGAN_CLOUD_TPU': '1', 'JAX_COORDINATOR_PORT': port,
          'GCE_METADATA_IP': f'127.0.0.1:{server.server_address[1]}'})
      processes.append(subprocess.Popen(
          [sys.executable, str(script)], env=environment, stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT, text=True))
    outputs = [process.communicate(timeout=300)[0] for process in processes]
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
    for server in servers:
      server.shutdown()
  for worker, (process, output) in enumerate(zip(processes, outputs)):
    assert process.returncode == 0, output[-3000:]
    assert f'process {worker} of 2 4 devices' in output, output[-3000:]
    assert 'on every process: [True, False]' in output  # Process 1 says no to the second.


def _as_process(monkeypatch, index: int, others: list[np.ndarray]) -> None:
  """Makes this process number ``index`` of a run whose other processes contribute
  ``others`` to every allgather (in process order)."""
  monkeypatch.setattr(distributed, '_one_process', lambda: False)
  monkeypatch.setattr(jax, 'process_index', lambda: index)
  monkeypatch.setattr(jax, 'process_count', lambda: len(others) + 1)
  monkeypatch.setattr(distributed.multihost_utils, 'process_allgather',
                      lambda mine: np.stack([*others[:index], mine, *others[index:]]))


def _refusal_of(monkeypatch, index: int, message: str | None) -> np.ndarray:
  """What process ``index`` contributes to the allgather of check_on_every_process."""
  contributed = []

  def gather(mine):
    contributed.append(mine)
    return np.stack([mine])

  monkeypatch.setattr(distributed, '_one_process', lambda: False)
  monkeypatch.setattr(jax, 'process_index', lambda: index)
  monkeypatch.setattr(jax, 'process_count', lambda: 3)
  monkeypatch.setattr(distributed.multihost_utils, 'process_allgather', gather)

  def check():
    if message is not None:
      raise errors.ConfigError(message)

  with contextlib.suppress(distributed.RefusedOnAHostError):
    distributed.check_on_every_process(check)
  return contributed[0]


def test_check_on_every_process_gives_every_process_the_refusing_ones_line(monkeypatch):
  host = socket.gethostname()
  others = [_refusal_of(monkeypatch, 1, 'bad config: data.folders: /d not found'),
            _refusal_of(monkeypatch, 2, 'another reason ' + 'é' * 5000)]  # Cut.
  passed = []
  _as_process(monkeypatch, 0, others)
  with pytest.raises(distributed.RefusedOnAHostError) as refused:
    distributed.check_on_every_process(lambda: passed.append(True))
  assert passed == [True]
  assert str(refused.value) == (f'process 1 of 3 (host {host}): bad config: data.folders: '
                                '/d not found (process 2 refused as well)')
  # Process 2 has its own reason, but prints the same line as the others.
  _as_process(monkeypatch, 2, [others[0] * 0, others[0]])
  with pytest.raises(distributed.RefusedOnAHostError, match='^process 1 of 3 .* /d not found'):
    distributed.check_on_every_process(lambda: _raise(errors.ConfigError('another reason')))
  # None refused: nothing raised.
  _as_process(monkeypatch, 0, [others[0] * 0])
  distributed.check_on_every_process(lambda: None)


def test_check_on_every_process_keeps_a_bugs_traceback_on_its_process(monkeypatch):
  contributed = []
  _as_process(monkeypatch, 1, [np.zeros(distributed.REFUSAL_BYTES + 1, np.uint8)])
  gather = distributed.multihost_utils.process_allgather
  monkeypatch.setattr(distributed.multihost_utils, 'process_allgather',
                      lambda mine: contributed.append(mine) or gather(mine))
  with pytest.raises(ZeroDivisionError):
    distributed.check_on_every_process(lambda: 1 / 0)
  # The other process is told, and points at this one's traceback.
  _as_process(monkeypatch, 0, contributed)
  with pytest.raises(distributed.RefusedOnAHostError, match=(
      r"^process 1 of 2 \(host .*\): ZeroDivisionError \(a bug: its traceback is in that "
      r"process's output\)$")):
    distributed.check_on_every_process(lambda: None)
  line = _refusal_of(monkeypatch, 1, None)  # Passes: contributes no refusal.
  assert not line.any()


def test_check_on_every_process_in_one_process_raises_the_check_error_itself():
  with pytest.raises(errors.ConfigError, match='^bad$'):
    distributed.check_on_every_process(lambda: _raise(errors.ConfigError('bad')))


def _raise(error: Exception) -> None:
  raise error
