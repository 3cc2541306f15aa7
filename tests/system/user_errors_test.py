"""Bad input to every command ends in one line, a non-zero exit, and nothing lost.

Each case runs a command (python -m srgan_jax.main, .evaluate, .super_resolve,
.export, .compare, .plot, .pretrained, .vgg19 import, .benchmark) in a subprocess
with one bad flag, config field or file, and checks through ``check_user_error``: the exit status, that stderr ends with one
line naming the problem, that no traceback was printed, and that nothing on disk was
created, lost or changed. The flag and config cases fail before JAX compiles
anything (a few seconds each, mostly imports).

Exit statuses (srgan_jax/runtime/errors.py): 2 a mistake to fix; 1 some files could not be
processed (the others were); 75 preempted (preemption_test.py).
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap

from conftest import image_set, REPO, start_lock_holder
import numpy as np
from PIL import Image
import pytest

# Runs commands in subprocesses: a system test (`pytest -m "not system"` skips it).
pytestmark = pytest.mark.system

USER_ERROR, SOME_FAILED = 2, 1
QUICKSTART = str(REPO / 'srgan_jax' / 'configs' / 'quickstart.py')


def run_command(module: str, *args: str, env: dict[str, str] | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess:
  """``python -m srgan_jax.<module> args`` from the repository root, on CPU."""
  environment = {**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu', **(env or {})}
  environment.pop('SRGAN_JAX_DEBUG', None)
  return subprocess.run([sys.executable, '-m', f'srgan_jax.{module}', *args], cwd=REPO,
                        env=environment, capture_output=True, text=True, timeout=timeout)


def snapshot(root: pathlib.Path) -> dict[str, tuple[int, int]]:
  """{relative path: (size, mtime_ns)} of everything under root (empty if missing)."""
  if not root.exists():
    return {}
  return {str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
          for path in sorted(root.rglob('*'))}


def check_user_error(result: subprocess.CompletedProcess, pattern: str,
                     code: int = USER_ERROR) -> str:
  """Asserts the exit status, a one-line message matching ``pattern`` at the end of
  stderr and no traceback; returns that line."""
  shown = f'exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}'
  assert result.returncode == code, shown
  assert 'Traceback' not in result.stderr, shown
  lines = result.stderr.strip().splitlines()
  assert lines, shown
  assert re.match(rf'(error|preempted): .*{pattern}', lines[-1]), (
      f'last line {lines[-1]!r} !~ {pattern!r}\n{shown}')
  assert len(lines[-1]) < 1000, shown
  return lines[-1]


def write_image(path: pathlib.Path, height: int = 48, width: int = 40, seed: int = 0) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(path)


def _truncated(path: pathlib.Path, suffix: str) -> None:
  write_image(path.with_suffix(suffix), 64, 64)
  data = path.with_suffix(suffix).read_bytes()
  path.with_suffix(suffix).write_bytes(data[:len(data) // 2])


# Bad files of every kind, by name; each writer makes one under the given path stem.
BAD_FILES = {
    'empty.png': lambda p: p.write_bytes(b''),
    'text.png': lambda p: p.write_text('not an image'),
    'truncated.png': lambda p: _truncated(p, '.png'),
    'truncated.jpg': lambda p: _truncated(p, '.jpg'),
    'folder.png': lambda p: p.mkdir(),
    'tiny.png': lambda p: write_image(p, 8, 8),
}


def bad_and_good_folder(root: pathlib.Path) -> pathlib.Path:
  """Two good 48x40 images and one of each BAD_FILES kind."""
  for index in range(2):
    write_image(root / f'good{index}.png', seed=index)
  for name, write in BAD_FILES.items():
    write(root / name)
  return root


# ---------------------------------------------------------------------------------------
# Training: python -m srgan_jax.main, every config field and flag.

MAIN_CASES = {
    # Ranges: zero and negative counts, intervals, sizes.
    'keep_checkpoints=0': (['--config.keep_checkpoints=0'], r'keep_checkpoints must be >= 1, got 0'),
    'keep_checkpoints<0': (['--config.keep_checkpoints=-2'], r'keep_checkpoints must be >= 1'),
    'srresnet.num_steps<0': (['--config.srresnet.num_steps=-5'], r'srresnet.num_steps must be >= 0'),
    'srgan.num_steps<0': (['--config.srgan.num_steps=-1'], r'srgan.num_steps must be >= 0'),
    'no steps at all': (['--config.srresnet.num_steps=0', '--config.srgan.num_steps=0'],
                        r'num_steps must be >= 1, got 0'),
    'checkpoint_every_steps=0': (['--config.checkpoint_every_steps=0'],
                                 r'checkpoint_every_steps must be >= 1, got 0'),
    'log_every_steps=0': (['--config.log_every_steps=0'], r'log_every_steps must be >= 1'),
    'eval_every_steps=0': (['--config.eval_every_steps=0'], r'eval_every_steps must be >= 1'),
    'batch_size=0': (['--config.batch_size=0'], r'batch_size must be >= 1, got 0'),
    'batch_size<0': (['--config.batch_size=-16'], r'batch_size must be >= 1'),
    'crop_size not multiple of 16': (['--config.data.crop_size=40'],
                                     r'data.crop_size must be a multiple of scale \(4\) and of 16'),
    'crop_size=0': (['--config.data.crop_size=0'], r'data.crop_size must be >= 16'),
    'crops_per_image=0': (['--config.data.crops_per_image=0'], r'data.crops_per_image must be >= 1'),
    'prefetch<0': (['--config.data.prefetch=-1'], r'data.prefetch must be >= 0'),
    'seed<0': (['--config.seed=-1'], r'seed must be >= 0'),
    'num_blocks=0': (['--config.generator.num_blocks=0'], r'generator.num_blocks must be >= 1'),
    'features<0': (['--config.generator.features=-8'], r'generator.features must be >= 1'),
    'dense_features=0': (['--config.discriminator.dense_features=0'],
                         r'discriminator.dense_features must be >= 1'),
    'discriminator stride 3': (['--config.discriminator.convs=((8, 3),)'],
                               r'discriminator.convs must hold \(channels >= 1, stride 1 or 2\)'),
    'learning_rate=0': (['--config.srresnet.learning_rate=0'], r'srresnet.learning_rate must be > 0'),
    'learning_rate=nan': (['--config.srresnet.learning_rate=nan'],
                          r'srresnet.learning_rate must be a finite number, got nan'),
    'srgan learning_rate<0': (['--config.srgan.learning_rate=-1e-4'], r'srgan.learning_rate must be > 0'),
    'decay_factor=0': (['--config.srgan.decay_factor=0'], r'srgan.decay_factor must be > 0'),
    'decay_steps<0': (['--config.srgan.decay_steps=-1'], r'srgan.decay_steps must be >= 0'),
    'adam_b1=1.5': (['--config.adam_b1=1.5'], r'adam_b1 must be < 1'),
    'ema_decay=1': (['--config.ema_decay=1.0'], r'ema_decay must be < 1'),
    'adversarial_weight<0': (['--config.srgan.adversarial_weight=-1'],
                             r'srgan.adversarial_weight must be >= 0'),
    'vgg_feature_scale=0': (['--config.srgan.vgg_feature_scale=0'], r'vgg_feature_scale must be > 0'),
    'num_summary_images<0': (['--config.num_summary_images=-1'], r'num_summary_images must be >= 0'),
    'profile_steps<0': (['--config.profile_steps=-1'], r'profile_steps must be >= 0'),
    'every problem at once': (['--config.batch_size=0', '--config.keep_checkpoints=0'],
                              r'batch_size must be >= 1.*keep_checkpoints must be >= 1'),
    # Enumerations, with the allowed values in the message.
    'content_loss=foo': (['--config.srgan.content_loss=foo'],
                         r"srgan.content_loss must be one of 'mse', 'l1', 'vgg22', 'vgg54'; got 'foo'"),
    'scale=3': (['--config.scale=3'], r'scale must be one of 2, 4, 8; got 3'),
    'dtype=float16': (['--config.dtype=float16'], r"dtype must be one of 'float32', 'bfloat16'"),
    'data.source=nfs': (['--config.data.source=nfs'], r"data.source must be one of 'folders'"),
    'output_activation=sigmoid': (['--config.generator.output_activation=sigmoid'],
                                  r"generator.output_activation must be one of 'none', 'tanh'"),
    # Wrong types and misspelled names (ml_collections rejects them while parsing).
    'batch_size=1.5': (['--config.batch_size=1.5'], r'config.batch_size=1.5'),
    'batch_size=abc': (['--config.batch_size=abc'], r'config.batch_size=abc'),
    'misspelled field': (['--config.srgan.contnet_loss=mse'], r'Did you mean "content_loss"'),
    'misspelled section': (['--config.srgn.num_steps=5'], r'srgn'),
    # Files the config names.
    'data.folders missing': (["--config.data.folders=('/nonexistent/images',)"],
                             r'data.folders: /nonexistent/images not found'),
    # The quickstart has no SRGAN phase: one step of it needs the VGG19 weights.
    'no VGG19 weights': (['--config.srgan.num_steps=1', '--config.srgan.content_loss=vgg54',
                          '--config.srgan.vgg_weights=/nonexistent/vgg19.npz'],
                         r"srgan.content_loss='vgg54' needs VGG19 weights, none at "
                         r'/nonexistent/vgg19.npz: run python -m srgan_jax.vgg19 import'),
    # The paper's command without its data: checked by TFDS, before the workdir exists.
    'tfds data not prepared': (['--config.data.source=tfds',
                                '--config.data.tfds_data_dir=/nonexistent/tfds'],
                               r"TFDS dataset 'div2k/bicubic_x4' is not prepared in "
                               r'/nonexistent/tfds .*: prepare it once with `tfds build '
                               r'div2k/bicubic_x4 --data_dir=/nonexistent/tfds`'),
    'init_from without checkpoints': (['--config.srgan.init_from=/nonexistent/run'],
                                      r'srgan.init_from: no checkpoints in /nonexistent/run'),
    # The command's own flags.
    'config file missing': (['--config=/nonexistent/config.py'], r'/nonexistent/config.py'),
    'mode=foo': (['--mode=foo'], r'--mode=foo: value should be one of <train\|evaluate>'),
    'step with train': (['--step=3'], r'--step is for --mode=evaluate'),
    'step<0': (['--mode=evaluate', '--step=-1'], r'--step must be >= 0, got -1'),
    'positional argument': (['extra'], r"unexpected arguments: \['extra'\]"),
    'workdir empty': (['--workdir='], r'--workdir must be a non-empty string'),
    'unknown flag': (['--workdri=/tmp/x'], r'Unknown command line flag .workdri.'),
}


@pytest.mark.parametrize('args, pattern', MAIN_CASES.values(), ids=MAIN_CASES.keys())
def test_main_rejects_bad_config_before_any_work(tmp_path, args, pattern):
  workdir = tmp_path / 'run'
  flags = [f'--config={QUICKSTART}', f'--workdir={workdir}']
  flags = [flag for flag in flags if not any(arg.startswith(flag.split('=')[0] + '=')
                                             for arg in args)]
  check_user_error(run_command('main', *flags, *args), pattern)
  assert not workdir.exists()  # No workdir, checkpoints/ or events file.


def test_main_batch_size_must_divide_over_devices(tmp_path):
  result = run_command('main', f'--config={QUICKSTART}', f'--workdir={tmp_path / "run"}',
                       '--config.batch_size=12',
                       env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'})
  check_user_error(result, r'batch_size must be a multiple of the 8 devices, got 12')
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('content, pattern', [
    ("d['srgan']['contnet_loss'] = 'mse'", r'unknown field srgan.contnet_loss \(did you mean '
                                           r'srgan.content_loss\?\)'),
    ("del d['srgan']['content_loss']", r'missing field srgan.content_loss'),
    ("d['keep_checkpoints'] = '3'", r"keep_checkpoints must be an integer, got '3'"),
    ("d['batch_size'] = True", r'batch_size must be an integer, got True'),
    ("d['data']['folders'] = '/one/path'", r'data.folders must be a tuple of paths'),
    ("d['data']['augment'] = 'yes'", r"data.augment must be True or False, got 'yes'"),
    ("quickstart.get_config().keep_checkpoints = 'three'", r"keep_checkpoints.*cannot be casted"),
    ('raise RuntimeError("broken config file")', r'broken config file'),
], ids=['unknown-field', 'missing-field', 'string-for-int', 'bool-for-int', 'string-for-tuple',
        'string-for-bool', 'configdict-type-error', 'config-file-raises'])
def test_main_rejects_bad_config_file(tmp_path, content, pattern):
  """Config files that build their own ConfigDict can hold any name and type."""
  config_file = tmp_path / 'my_config.py'
  config_file.write_text(textwrap.dedent(f'''\
      import ml_collections
      from srgan_jax.configs import quickstart

      def get_config():
        d = quickstart.get_config().to_dict()
        {content}
        return ml_collections.ConfigDict(d)
      '''))
  workdir = tmp_path / 'run'
  result = run_command('main', f'--config={config_file}', f'--workdir={workdir}')
  check_user_error(result, pattern)
  assert not workdir.exists()


def test_main_damaged_vgg_weights_before_any_checkpoint(tmp_path):
  weights = tmp_path / 'vgg19.npz'
  weights.write_text('not a weights file')
  workdir = tmp_path / 'run'
  result = run_command('main', f'--config={QUICKSTART}', f'--workdir={workdir}',
                       '--config.srgan.num_steps=1', '--config.srgan.content_loss=vgg54',
                       f'--config.srgan.vgg_weights={weights}')
  check_user_error(result, rf'cannot read VGG19 weights from {re.escape(str(weights))}.*'
                           rf'Re-create the file with: python -m srgan_jax.vgg19 import')
  # Before: lock.json was left (and by other refusals config.json, an events file and
  # an empty checkpoints/, which later commands then met).
  assert not workdir.exists()
  assert weights.read_text() == 'not a weights file'


def test_a_start_that_fails_after_the_lock_leaves_the_workdir_as_it_was(tmp_path):
  """Refused at the SRGAN phase's start (init_from's generator does not fit), after the
  lock, checkpoints/, the events file and config.json were made: all are removed again;
  what the workdir held before is not touched."""
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'notes.txt').write_text('mine')
  before = snapshot(workdir)
  result = run_command('main', f'--config={QUICKSTART}', f'--workdir={workdir}',
                       '--config.generator.num_blocks=1', '--config.srresnet.num_steps=0',
                       '--config.srgan.num_steps=1', '--config.srgan.init_from=cpu_small')
  check_user_error(result, r'srgan.init_from=cpu_small has generator')
  assert snapshot(workdir) == before


def test_main_evaluate_without_checkpoints(tmp_path):
  result = run_command('main', f'--config={QUICKSTART}', f'--workdir={tmp_path}',
                       '--mode=evaluate')
  check_user_error(result, rf'no checkpoints in {re.escape(str(tmp_path))}')
  assert snapshot(tmp_path) == {}


def test_second_run_on_a_workdir_in_use_refuses_and_names_the_holder(tmp_path):
  """A process holding the workdir (as a training run does) makes a second run refuse."""
  workdir = tmp_path / 'run'
  (workdir / 'checkpoints' / '10').mkdir(parents=True)
  (workdir / 'checkpoints' / '10' / 'data').write_text('first run')
  holder = start_lock_holder(workdir)
  try:
    before = snapshot(workdir)
    result = run_command('main', f'--config={QUICKSTART}', f'--workdir={workdir}',
                         '--config.srresnet.num_steps=1', '--config.srgan.num_steps=0')
    check_user_error(result, rf'workdir {re.escape(str(workdir))} is in use by process '
                             rf'{holder.pid} on host \S+ .*choose another --workdir')
    assert snapshot(workdir) == before
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()


# ---------------------------------------------------------------------------------------
# Evaluation: python -m srgan_jax.evaluate.

EVALUATE_CASES = {
    'scale=0': (['--scale=0'], r'--scale must be >= 2, got 0'),
    'scale<0': (['--scale=-4'], r'--scale must be >= 2, got -4'),
    'scale=abc': (['--scale=abc'], r'--scale=abc'),
    'data missing': (['--data=/nonexistent/Set5'], r'--data: no folder /nonexistent/Set5'),
    'set name missing': (['--data=NoSuchSet'], r'--data: no folder NoSuchSet'),
    'data empty': (['--data='], r"--data must be a non-empty string, got ''"),
    'no data flag': (['NO_DATA'], r'Flag --data must have a value other than None'),
    'compare without save_dir': (['--compare'], r'--compare needs --save_dir'),
    'srgan without workdir': (['--model=srgan'], r'--model=srgan needs --workdir'),
    'workdir with bicubic': (['--model=bicubic', '--workdir=/tmp'], r'--workdir is for --model=srgan'),
    'step<0': (['--workdir=/tmp', '--step=-1'], r'--step must be >= 0, got -1'),
    'model=foo': (['--model=foo'], r"unknown model 'foo'; shipped models: .*; built-in: bicubic, srgan"),
    'positional argument': (['extra'], r"unexpected arguments: \['extra'\]"),
    'unknown flag': (['--sclae=4'], r'Unknown command line flag .sclae.'),
    'scale empty': (['--scale='], r'--scale='),
    # Before: tracebacks (ValueError), after or during the scoring.
    'crop not NAME:x,y,w,h': (['--save_dir=ROOT/sr', '--crop=a'],
                              r'--crop=a is not NAME:x,y,width,height'),
    'crop outside the image': (['--save_dir=ROOT/sr', '--crop=a:0,0,400,400'],
                               r'--crop=a:0,0,400,400 lies outside a \(40x48 HR pixels'),
    'crop without save_dir': (['--crop=a:0,0,8,8'], r'--crop needs --save_dir'),
    'zoom=0': (['--save_dir=ROOT/sr', '--crop=a:0,0,8,8', '--zoom=0'],
               r'--zoom must be >= 1, got 0'),
    'metrics=foo': (['--metrics=niqe,foo'], r"--metrics may hold 'niqe', .*; got 'foo'"),
    # Before: ignored without a word.
    'workdir with a shipped model': (['--model=cpu_small', '--workdir=/tmp'],
                                     r'--workdir is for --model=srgan'),
    'scale with a shipped model': (['--model=cpu_small', '--scale=2'],
                                   r'--scale is for --model=bicubic .*; leave --scale out'),
    # Before: "no checkpoints in W (expected W/checkpoints)".
    'workdir is a file': (['--workdir=IMAGES/a.png'],
                          r'--workdir=\S+/a.png is a file, not a folder; name a folder'),
    'workdir missing': (['--workdir=/nonexistent/run'], r'--workdir: no folder /nonexistent/run'),
    'data is a file': (['--data=IMAGES/a.png'], r'--data=\S+/a.png is a file, not a folder'),
    # Before: the input image replaced by the JSON results, or by its SR image.
    'output is an input image': (['--output=IMAGES/a.png'],
                                 r'--output=\S+/a.png is an existing file that is not .json, '
                                 r'which writing would replace; name a .json file'),
    'save_dir over the set': (['--save_dir=ROOT'],
                              r"--save_dir=\S+ would write the SR images of set 'images' "
                              r'over its own images'),
    # Before: one set's results replaced the other's (and the bicubic rows shifted).
    'two sets of one name': (['--data=IMAGES', '--data=ROOT/./images'],
                             r"--data \S+ and \S+ are both sets named 'images'"),
}


@pytest.mark.parametrize('args, pattern', EVALUATE_CASES.values(), ids=EVALUATE_CASES.keys())
def test_evaluate_rejects_bad_flags(tmp_path, args, pattern):
  images = tmp_path / 'images'
  write_image(images / 'a.png')
  output = tmp_path / 'out' / 'results.json'
  flags = [] if any(arg.startswith(('--data', 'NO_DATA')) for arg in args) else [
      f'--data={images}']
  flags += [] if any(arg.startswith('--output=') for arg in args) else [f'--output={output}']
  args = [arg.replace('IMAGES', str(images)).replace('ROOT', str(tmp_path))
          for arg in args if arg != 'NO_DATA']
  before = snapshot(tmp_path)
  result = run_command('evaluate', *flags, *args)
  check_user_error(result, pattern)
  assert snapshot(tmp_path) == before  # Nothing written, nothing overwritten.


def test_evaluate_workdir_without_checkpoints(tmp_path):
  result = run_command('evaluate', f'--workdir={tmp_path}', f'--data={tmp_path}')
  check_user_error(result, rf'no checkpoints in {re.escape(str(tmp_path))}')


def test_evaluate_skips_bad_files_by_name_and_writes_every_finished_set(tmp_path):
  mixed = bad_and_good_folder(tmp_path / 'mixed')
  empty = tmp_path / 'empty'
  empty.mkdir()
  (empty / 'notes.txt').write_text('no images here')
  output = tmp_path / 'new' / 'folder' / 'results.json'  # --output in a missing folder.
  result = run_command('evaluate', '--scale=4', f'--data={mixed}', f'--data={empty}',
                       f'--data={image_set("Set5")}', f'--output={output}')
  line = check_user_error(result, r'6 files skipped; sets not scored: empty', SOME_FAILED)
  results = json.loads(output.read_text())
  assert list(results) == ['mixed', 'empty', 'Set5']
  assert results['mixed']['images'] == 2 and results['Set5']['images'] == 5
  assert 'no image to score' in results['empty']['error']
  failed = ' '.join(results['mixed']['failed'])
  for name in BAD_FILES:  # Each bad file is named, in the results and on the console.
    assert name in failed and name in result.stderr, (name, failed)
  assert 'too small' in failed
  assert results['Set5']['psnr'] == pytest.approx(28.42, abs=0.02), line


# ---------------------------------------------------------------------------------------
# Super-resolution: python -m srgan_jax.super_resolve.

SUPER_RESOLVE_CASES = {
    'tile=0': (['--tile=0'], r'--tile must be >= 1, got 0'),
    'tile<0': (['--tile=-1'], r'--tile must be >= 1, got -1'),
    'overlap<0': (['--overlap=-1'], r'--overlap must be >= 0, got -1'),
    'batch=0': (['--batch=0'], r'--batch must be >= 1, got 0'),
    'tile <= 2 overlap': (['--tile=10', '--overlap=5'],
                          r'--tile=10 must be larger than twice the overlap \(5, --overlap\)'),
    'bicubic scale=0': (['--scale=0'], r'--scale must be >= 2, got 0'),
    'bicubic scale=1': (['--scale=1'], r'--scale must be >= 2, got 1'),
    'step<0': (['--model=srgan', '--workdir=/tmp', '--step=-1'], r'--step must be >= 0'),
    'srgan without workdir': (['--model=srgan'], r'--model=srgan needs --workdir'),
    'workdir with bicubic': (['--workdir=/tmp'], r'--workdir is for --model=srgan'),
    'model=foo': (['--model=foo'], r"unknown model 'foo'; shipped models: .*; built-in: bicubic, srgan"),
    'tile=abc': (['--tile=abc'], r'--tile=abc'),
    'tile empty': (['--tile='], r'--tile='),
    'unknown flag': (['--overwrit'], r'Unknown command line flag .overwrit.'),
    'input missing': (['--input=/nonexistent/photos'], r'no such input: /nonexistent/photos'),
    'input empty': (['--input='], r"--input must be a non-empty string, got ''"),
    'output is the input folder': (['--output=IN'], r'would overwrite the input'),
    'input inside the output': (['--output=ROOT'], r'would overwrite the input'),
    'output file is the input file': (['--input=IN/a.png', '--output=IN/a.png', '--overwrite'],
                                      r'would overwrite the input'),
    # Before: written to a local folder named gs:/bucket/sr (pathlib drops a slash).
    'output on gs://': (['--output=gs://bucket/sr'],
                        r'--output must be a local path, got gs://bucket/sr: this '
                        r'command reads and writes local files only; copy them to or from the '
                        r'bucket \(gcloud storage cp -r\)$'),
    'input on gs://': (['--input=gs://bucket/photos'],
                       r'--input must be a local path, got gs://bucket/photos'),
    # Before: a ValueError traceback.
    'folder into a .png name': (['--output=ROOT/x.png'],
                                r'--input \S+ is a folder, so --output must be a folder .*'
                                r'drop the .png suffix'),
    # Before: written into a new folder named x.jpg, exit 0.
    'output named .jpg': (['--input=IN/a.png', '--output=ROOT/x.jpg'],
                          r'names a .jpg file, but outputs are PNG; name a .png file or a folder'),
    # Before: "0 written, 0 skipped, 0 failed", exit 0.
    'input folder without images': (['--input=ROOT/empty'],
                                    r'no image files \(.bmp, .*\) in --input \S+/empty; name a '
                                    r'folder or file with images'),
    # Before: the model loaded, then "1 failed", exit 1.
    'input file not an image': (['--input=ROOT/notes.txt'],
                                r'notes.txt: UnidentifiedImageError'),
    # Before: "no checkpoints in W (expected W/checkpoints)".
    'workdir is a file': (['--model=srgan', '--workdir=ROOT/notes.txt'],
                          r'--workdir=\S+/notes.txt is a file, not a folder; name a folder'),
    'workdir missing': (['--model=srgan', '--workdir=/nonexistent/run'],
                        r'--workdir: no folder /nonexistent/run'),
}


@pytest.mark.parametrize('args, pattern', SUPER_RESOLVE_CASES.values(),
                         ids=SUPER_RESOLVE_CASES.keys())
def test_super_resolve_rejects_bad_flags_before_any_image(tmp_path, args, pattern):
  inputs = tmp_path / 'in'
  for index in range(3):
    write_image(inputs / f'{"abc"[index]}.png', 40, 40, seed=index)
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'notes.txt').write_text('not an image')
  args = [arg.replace('ROOT', str(tmp_path)).replace('IN', str(inputs)) for arg in args]
  model = [] if any(arg.startswith('--model') for arg in args) else ['--model=bicubic']
  defaults = [flag for flag in (f'--input={inputs}', f'--output={tmp_path / "out"}')
              if not any(arg.startswith(flag.split('=')[0] + '=') for arg in args)]
  before = snapshot(tmp_path)
  check_user_error(run_command('super_resolve', *model, *defaults, *args), pattern)
  assert snapshot(tmp_path) == before  # Nothing written, nothing overwritten.


def test_super_resolve_workdir_without_checkpoints(tmp_path):
  write_image(tmp_path / 'a.png')
  result = run_command('super_resolve', f'--workdir={tmp_path}', f'--input={tmp_path / "a.png"}',
                       f'--output={tmp_path / "out"}')
  check_user_error(result, rf'no checkpoints in {re.escape(str(tmp_path))}')
  assert not (tmp_path / 'out').exists()


# ---------------------------------------------------------------------------------------
# VGG19 weight import and the benchmark.

@pytest.mark.parametrize('args, pattern', [
    (['--source=keras'], r'usage: python -m srgan_jax.vgg19 import'),
    (['import'], r'--source'),
    (['import', '--source=weights.txt'], r"--source must be 'keras', a .h5 file or a .pth file"),
    (['import', '--source=/nonexistent/vgg19.h5'], r'no VGG19 weights file at /nonexistent/vgg19.h5'),
    (['import', '--source=TMP/garbage.pth'], r'cannot read VGG19 weights from \S+garbage.pth'),
    (['import', '--source=TMP/garbage.pth', '--output=TMP'], r'--output must name a file'),
], ids=['no-import-command', 'no-source', 'unknown-suffix', 'missing-file', 'garbage-file',
        'output-is-a-folder'])
def test_vgg19_import_rejects_bad_source(tmp_path, args, pattern):
  (tmp_path / 'garbage.pth').write_text('not a state dict')
  output = tmp_path / 'cache'
  args = [arg.replace('TMP', str(tmp_path)) for arg in args]
  before = snapshot(tmp_path)
  result = run_command('vgg19', *args, env={'SRGAN_JAX_CACHE': str(output)})
  check_user_error(result, pattern)
  assert snapshot(tmp_path) == before and not output.exists()


# ---------------------------------------------------------------------------------------
# The other commands that read and write files: export, compare, plot, pretrained.

EXPORT_CASES = {
    # Before: "no checkpoints in W (expected W/checkpoints)".
    'workdir is a file': (['--workdir=ROOT/notes.txt'],
                          r'--workdir=\S+/notes.txt is a file, not a folder; name a folder'),
    'workdir missing': (['--workdir=/nonexistent/run'], r'--workdir: no folder /nonexistent/run'),
    # Before: "no checkpoint at step -1".
    'step<0': (['--step=-1'], r'--step must be >= 0, got -1'),
    # Before: a warning, then the model shipped without scores, exit 0.
    'data missing': (['--data=/nonexistent/Set5'], r'--data: no folder /nonexistent/Set5'),
    'two sets of one name': (['--data=ROOT/images', '--data=ROOT/./images'],
                             r"both sets named 'images'"),
}


@pytest.mark.parametrize('args, pattern', EXPORT_CASES.values(), ids=EXPORT_CASES.keys())
def test_export_rejects_bad_flags_before_reading_the_run(tmp_path, args, pattern):
  write_image(tmp_path / 'images' / 'a.png')
  (tmp_path / 'notes.txt').write_text('not a run')
  (tmp_path / 'run').mkdir()  # No checkpoints: the checks come before they are read.
  models = tmp_path / 'models'
  args = [arg.replace('ROOT', str(tmp_path)) for arg in args]
  workdir = [] if any(arg.startswith('--workdir=') for arg in args) else [
      f'--workdir={tmp_path / "run"}']
  before = snapshot(tmp_path)
  result = run_command('export', *workdir, '--name=mine', *args,
                       env={'SRGAN_PRETRAINED_DIR': str(models)})
  check_user_error(result, pattern)
  assert snapshot(tmp_path) == before and not models.exists()


COMPARE_CASES = {
    # Before: tracebacks (ZeroDivisionError, ValueError), some after the generators ran.
    'scale=0': (['--scale=0'], r'--scale must be >= 2, got 0'),
    'scale of another model': (['--scale=2'],
                               r'--scale=2 but --model=cpu_small is x4; pass --scale=4'),
    'crop not NAME:x,y,w,h': (['--crop=a'], r'--crop=a is not NAME:x,y,width,height'),
    'output format unknown': (['--output=ROOT/figure.txt'],
                              r'--output=\S+/figure.txt: matplotlib cannot write .txt files; '
                              r'name a .*\.png.* file'),
    # Before: the figure replaced the input image a.png.
    'output in the data folder': (['--output=ROOT/images/a.png'],
                                  r'--output=\S+/a.png lies in the --data folder \S+/images, '
                                  r'whose images it would replace or join'),
    'data is a file': (['--data=ROOT/images/a.png'], r'--data=\S+/a.png is a file, not a folder'),
    # Before: "unknown model 'bicubic'; built-in: bicubic, srgan".
    'model=bicubic': (['--model=bicubic'], r"--model=bicubic: bicubic is always the figure's "
                                           r'first column; name only shipped generators'),
    # Before: a ValueError traceback (SSIM window) after the generators ran.
    'image too small': (['--crop=tiny:0,0,4,4'],
                        r'tiny.png: 16x16 pixels .* is too small to score'),
}


@pytest.mark.parametrize('args, pattern', COMPARE_CASES.values(), ids=COMPARE_CASES.keys())
def test_compare_rejects_bad_flags(tmp_path, args, pattern):
  write_image(tmp_path / 'images' / 'a.png')
  write_image(tmp_path / 'images' / 'tiny.png', 16, 16)
  args = [arg.replace('ROOT', str(tmp_path)) for arg in args]
  defaults = [flag for flag in (f'--data={tmp_path / "images"}', '--crop=a:0,0,8,8',
                                f'--output={tmp_path / "out" / "figure.png"}')
              if not any(arg.startswith(flag.split('=')[0] + '=') for arg in args)]
  before = snapshot(tmp_path)
  check_user_error(run_command('compare', '--model=cpu_small', *defaults, *args), pattern)
  assert snapshot(tmp_path) == before


PLOT_CASES = {
    # Before: "no eval/<set>/psnr scalars in the event files of W".
    'workdir missing': (['--workdir=/nonexistent/run'], r'--workdir: no folder /nonexistent/run'),
    # Before: "W/learning_curve.png: W is a file, not a folder; pass --output".
    'workdir is a file': (['--workdir=ROOT/notes.txt'],
                          r'--workdir=\S+/notes.txt is a file, not a folder; name a folder'),
    # Before: the same line, but after the event files were read.
    'output format unknown': (['--output=ROOT/curve.xyz'],
                              r'--output=\S+/curve.xyz: matplotlib cannot write .xyz files'),
}


@pytest.mark.parametrize('args, pattern', PLOT_CASES.values(), ids=PLOT_CASES.keys())
def test_plot_rejects_bad_flags(tmp_path, args, pattern):
  (tmp_path / 'notes.txt').write_text('not a run')
  args = [arg.replace('ROOT', str(tmp_path)) for arg in args]
  workdir = [] if any(arg.startswith('--workdir=') for arg in args) else [f'--workdir={tmp_path}']
  before = snapshot(tmp_path)
  check_user_error(run_command('plot', *workdir, *args), pattern)
  assert snapshot(tmp_path) == before


def test_pretrained_rejects_arguments():
  # Before: a ValueError traceback (absl's app.run).
  check_user_error(run_command('pretrained', 'extra'), r"unexpected arguments: \['extra'\]")


BENCHMARK_CASES = {
    'steps=0': (['--steps=0'], r'--steps must be >= 1, got 0'),
    'warmup<0': (['--warmup=-1'], r'--warmup must be >= 0'),
    'rounds<0': (['--rounds=-1'], r'--rounds must be >= 0, got -1'),
    'batch_sizes=0': (['--batch_sizes=0'], r'--batch_sizes takes integers >= 1, got 0'),
    'batch_sizes=abc': (['--batch_sizes=16,abc'], r'--batch_sizes takes integers >= 1, got 16,abc'),
    'crop_size not multiple of 16': (['--crop_size=50'], r'--crop_size must be a multiple of 16'),
    'inference_sizes<0': (['--inference_sizes=-1'], r'--inference_sizes takes integers >= 1'),
    'inference_batch=0': (['--inference_batch=0'], r'--inference_batch must be >= 1'),
    'run=foo': (['--run=srresnet,foo'], r'--run: unknown foo; choose from srresnet, srgan'),
    'widths one number': (['--widths=4'], r'--widths takes num_blocks,features'),
    'data_folders missing': (['--data_folders=/nonexistent/T91'],
                             r'--data_folders: no folder /nonexistent/T91'),
    'dtype=float16': (['--dtype=float16'], r'--dtype=float16: value should be one of'),
    'unknown flag': (['--step=3'], r'Unknown command line flag .step.'),
    # Before: a traceback after the timing, the report lost.
    'json under a file': (['--json=ROOT/notes.txt/report.json'],
                          r'--json=\S+/notes.txt/report.json: \S+/notes.txt is a file, not a '
                          r'folder; choose another --json'),
    # Before: the image replaced by the report.
    'json is an image': (['--json=ROOT/a.png'],
                         r'--json=\S+/a.png is an existing file that is not .json'),
    # Before: nothing timed, an empty report, exit 0.
    'run empty': (['--run='], r'--run must name something to time, of srresnet, srgan'),
    'batch_sizes empty': (['--run=srresnet', '--batch_sizes='],
                          r'--batch_sizes is empty; --run=srresnet needs at least one'),
    # Before: tracebacks (ValueError).
    'weight_gradients=foo': (['--weight_gradients=xla,foo'],
                             r"--weight_gradients may hold 'auto', .*; got 'foo'"),
    'data_folders without images': (['--run=pipeline', '--data_folders=ROOT/empty'],
                                    r'--data_folders: no image files \(.*\) in \S+/empty'),
}


def test_device_data_rejects_steps_below_one(tmp_path):
  """Before: --steps=-5 exited 0 printing "-3046110 crops/s"."""
  write_image(tmp_path / 'a.png')
  check_user_error(run_command('device_data', f'--folders={tmp_path}', '--steps=-5'),
                   r'--steps must be >= 1, got -5')


@pytest.mark.parametrize('args, pattern', BENCHMARK_CASES.values(), ids=BENCHMARK_CASES.keys())
def test_benchmark_rejects_bad_flags(tmp_path, args, pattern):
  output = tmp_path / 'report.json'
  (tmp_path / 'notes.txt').write_text('notes')
  write_image(tmp_path / 'a.png')
  (tmp_path / 'empty').mkdir()
  args = [arg.replace('ROOT', str(tmp_path)) for arg in args]
  json_flag = [] if any(arg.startswith('--json=') for arg in args) else [f'--json={output}']
  before = snapshot(tmp_path)
  check_user_error(run_command('benchmark', *args, *json_flag), pattern)
  assert snapshot(tmp_path) == before


def test_verbosity_shows_the_traceback(tmp_path):
  result = run_command('main', f'--config={QUICKSTART}', f'--workdir={tmp_path / "run"}',
                       '--config.keep_checkpoints=0', '--verbosity=1')
  assert result.returncode != 0 and 'Traceback' in result.stderr
  assert 'ConfigError: bad config: keep_checkpoints must be >= 1' in result.stderr
