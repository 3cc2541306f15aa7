"""Shared test setup: 8 simulated CPU devices, and the benchmark image sets."""

import contextlib
import os
import pathlib
import subprocess
import sys
import tempfile

import jax
import pytest

# Sharding tests compare 8 devices with 1; must run before any JAX computation.
SIMULATED_DEVICES = 8
jax.config.update('jax_num_cpu_devices', SIMULATED_DEVICES)
# Threads for XLA's CPU client, read from PJRT_NPROC when the client is made (here and
# in every subprocess a test starts). Without it, the pool that launches and runs each
# device's share of a program has max(cores, devices) threads (xla/pjrt/cpu/
# cpu_client.cc: "We only created enough threads for one collective to complete"):
# on 2 cores, exactly one per simulated device. A device whose launch waits for an
# earlier computation on it to finish (the per-device in-flight limit) then holds
# the last thread while that computation waits for a free one, and the other 7 wait
# in the all-reduce until XLA aborts the process after 40 s. Seen with gdb on a stuck
# run of train_test.py beside 2 niced busy loops: 7 pool threads in AllReduceThunk,
# the 8th in Semaphore::Acquire of device 7's launch, the process at 0% CPU (a longer
# XLA timeout only left it stuck longer). With twice as many threads as devices the
# earlier computations find a free thread; the same files then passed 5 runs of 5
# beside the same busy loops.
os.environ.setdefault('PJRT_NPROC', str(2 * max(SIMULATED_DEVICES, os.cpu_count() or 1)))
# Compilation dominates the suite on 2 cores, and many tests build the same programs
# (a resumed run compiles what the first run did): keep compiled programs on disk,
# also for the subprocesses the tests start (JAX reads these variables at import).
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'srgan_jax_test_xla_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)

# The CPU weight gradient by conv_autotune.py's fixed rule, in this process and the commands
# tests start: 'auto' would time layers on first use (results that vary with the
# machine's load, written to the user's cache), and tests compare runs bit for bit.
os.environ.setdefault('SRGAN_JAX_WEIGHT_GRADIENTS', 'rule')

REPO = pathlib.Path(__file__).resolve().parent.parent


def datasets_root() -> pathlib.Path:
  """Where ../shared/datasets is: $SRGAN_DATASETS, else beside the checkout."""
  return pathlib.Path(os.environ.get('SRGAN_DATASETS', REPO.parent / 'shared' / 'datasets'))


def image_set(name: str) -> pathlib.Path:
  """The folder of one image set; skips outside CI when absent, fails in CI."""
  path = datasets_root() / name
  if not path.is_dir():
    message = f'image set {name} not found at {path} (set SRGAN_DATASETS)'
    if os.environ.get('CI'):
      pytest.fail(message)
    pytest.skip(message)
  return path


def tiny_quickstart_config():
  """The quickstart config at test size: tiny widths, 32x32 crops, batch 8 (one crop
  per simulated device). Tests share it, so they also share compiled programs."""
  from srgan_jax.configs import quickstart  # pylint: disable=g-import-not-at-top
  config = quickstart.get_config()
  config.generator.num_blocks = 1
  config.generator.features = 8
  config.generator.upsample_features = 32
  config.discriminator.convs = ((8, 1), (8, 2), (16, 1), (16, 2), (16, 1), (16, 2), (32, 1), (32, 2))
  config.discriminator.dense_features = 16
  config.data.crop_size = 32
  config.batch_size = 8
  # The paper's generator (the quickstart drops BatchNorm and adds the bicubic skip),
  # so that the tests that share this config cover BatchNorm statistics and their
  # EMA; the process-count equality tests' tolerances hold for this configuration
  # (see notes/CONFIG_RESULTS.md).
  config.generator.batch_norm = True
  config.generator.bicubic_skip = False
  return config


def write_blocky_images(folder: pathlib.Path, count: int, size: tuple[int, int],
                        seed: int) -> None:
  """``count`` random RGB PNGs of ``size`` (height, width), made of 8x8 flat blocks."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  folder.mkdir(parents=True)
  rng = np.random.default_rng(seed)
  for i in range(count):
    coarse = rng.uniform(0, 255, (size[0] // 8, size[1] // 8, 3))
    Image.fromarray(np.kron(coarse, np.ones((8, 8, 1))).astype(np.uint8)).save(
        folder / f'img{i:02d}.png')


def write_tiny_image_sets(root: pathlib.Path) -> None:
  """``root/train``: ten 48x56 blocky images; ``root/eval``: two 32x40 ones."""
  write_blocky_images(root / 'train', 10, (48, 56), seed=0)
  write_blocky_images(root / 'eval', 2, (32, 40), seed=1)


def tiny_run_config(root: pathlib.Path, srresnet_steps: int = 4, srgan_steps: int = 4):
  """``tiny_quickstart_config`` training on ``write_tiny_image_sets(root)``: logs and
  checkpoints every 2 steps, EMA weights kept, evaluation only at the end."""
  config = tiny_quickstart_config()
  config.data.folders = (str(root / 'train'),)
  config.srresnet.num_steps = srresnet_steps
  config.srgan.num_steps = srgan_steps
  config.srgan.decay_steps = 2
  config.log_every_steps = 2
  config.checkpoint_every_steps = 2
  config.eval_every_steps = 1000
  config.eval_folders = (str(root / 'eval'),)
  config.ema_decay = 0.9
  return config


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
  """A tiny trained run, shared by the tests of what reads runs (export, plots):
  (workdir, its evaluation folder). 4 SRResNet steps with EMA weights, evaluated at
  steps 2 and 4 on two 32x40 images."""
  from srgan_jax.training import loop  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('tiny_run')
  write_tiny_image_sets(root)
  config = tiny_run_config(root, srresnet_steps=4, srgan_steps=0)
  config.eval_every_steps = 2
  loop.train_and_evaluate(config, str(root / 'workdir'))
  return root / 'workdir', root / 'eval'


@contextlib.contextmanager
def fake_bucket(root: pathlib.Path, bucket: str = 'gs://bucket'):
  """``gs://bucket/...`` served from the local folder ``root``: epath's mock backend,
  so the code under test goes through epath's remote-path code as on GCS."""
  local = lambda path: os.fspath(path).replace(bucket, str(root))
  mapped = lambda fn, path, *args, **kwargs: fn(local(path), *args, **kwargs)

  def walk(fn, top, **kwargs):
    for directory, folders, names in fn(local(top), **kwargs):
      yield os.fspath(directory).replace(str(root), bucket), folders, names

  # pylint: disable=g-import-not-at-top
  from unittest import mock
  from etils.epath import gpath
  from etils.epath import testing
  # With tensorflow installed, epath sends gs:// to tf.io.gfile past the mock backend.
  with mock.patch.object(gpath, '_is_tf_installed', lambda: False), testing.mock_epath(
      exists=mapped, isdir=mapped, listdir=mapped, open=mapped, stat=mapped, glob=mapped,
      walk=walk):
    yield


# torchvision's vgg19 'E' configuration, written out independently of the module.
TORCHVISION_VGG19_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M',
                         512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M')


def torch_vgg19():
  """A torch module with torchvision's ``vgg19().features`` layout, random He weights (for the
  VGG19 import tests: unit and README)."""
  torch = pytest.importorskip('torch', reason='torch is not installed')
  layers, channels = [], 3
  for v in TORCHVISION_VGG19_CFG:
    if v == 'M':
      layers.append(torch.nn.MaxPool2d(kernel_size=2, stride=2))
    else:
      layers += [torch.nn.Conv2d(channels, v, kernel_size=3, padding=1), torch.nn.ReLU()]
      channels = v
  model = torch.nn.Module()
  model.features = torch.nn.Sequential(*layers)
  torch.manual_seed(0)
  for layer in model.features:
    if isinstance(layer, torch.nn.Conv2d):
      torch.nn.init.kaiming_normal_(layer.weight, nonlinearity='relu')
      torch.nn.init.normal_(layer.bias, std=0.1)
  return torch, model


def start_lock_holder(workdir: pathlib.Path, heartbeat: bool = False) -> subprocess.Popen:
  """A process holding ``workdir``'s lock until killed, as a training run does (with
  ``heartbeat``: the lock of a gs:// workdir, a heartbeat file); returns once held."""
  take = (f'workdir_lock._heartbeat_lock({str(workdir)!r}, settle_seconds=0.01)' if heartbeat
          else f'workdir_lock.hold({str(workdir)!r})')
  process = subprocess.Popen(
      [sys.executable, '-c', 'import time\nfrom srgan_jax.training import workdir_lock\n'
       f'with {take}:\n  print("held", flush=True)\n  time.sleep(600)'],
      cwd=REPO, env={**os.environ, 'PYTHONPATH': str(REPO)}, stdout=subprocess.PIPE, text=True)
  if process.stdout.readline().strip() != 'held':
    process.kill()
    process.wait()
    pytest.fail(f'the lock holder ended with {process.returncode} before holding {workdir}')
  return process
