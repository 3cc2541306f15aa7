"""Training-loop tests: resume equals uninterrupted, NaN stops cleanly, the device source.

The quickstart end to end is in readme_test.py, run as the README prints it.
"""

import functools
import pathlib
from typing import Any

from conftest import tiny_quickstart_config, tiny_run_config, write_blocky_images, write_tiny_image_sets
from flax.training import train_state as flax_train_state
import jax
import numpy as np
from PIL import Image
import pytest

from srgan_jax.data import inputs
from srgan_jax.evaluation import during_training
from srgan_jax.nn import models
from srgan_jax.nn import pretrained
from srgan_jax.nn import upscalers
from srgan_jax.training import model_reference
from srgan_jax.training import checkpointing
from srgan_jax.training import gan_health
from srgan_jax.training import loop
from srgan_jax.training import steps


@pytest.fixture(scope='module')
def data_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp('data')
  write_tiny_image_sets(root)
  return root


def _leaves(states):
  return jax.tree_util.tree_leaves(jax.device_get(
      [(s.params, s.batch_stats, s.ema_params) for s in states]))


def test_resume_equals_uninterrupted(data_dirs, tmp_path):
  """Stopped at the phase switch and mid-SRGAN, then resumed: the same final weights."""
  uninterrupted = loop.train_and_evaluate(tiny_run_config(data_dirs), str(tmp_path / 'a'))
  workdir = str(tmp_path / 'b')
  loop.train_and_evaluate(tiny_run_config(data_dirs, srgan_steps=0), workdir)  # Stops at 4.
  assert checkpointing.latest_step(workdir) == 4
  loop.train_and_evaluate(tiny_run_config(data_dirs, srgan_steps=2), workdir)  # 4 -> 6.
  assert checkpointing.latest_step(workdir) == 6
  resumed = loop.train_and_evaluate(tiny_run_config(data_dirs), workdir)  # 6 -> 8.
  a, b = _leaves(uninterrupted), _leaves(resumed)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
  # The run trained: SRGAN moved the weights away from the SRResNet's.
  srresnet = checkpointing.load_generator(workdir, step=4, ema=False)[1]['params']
  final = jax.device_get(resumed[0].params)
  assert max(np.max(np.abs(x - y)) for x, y in zip(
      jax.tree_util.tree_leaves(srresnet), jax.tree_util.tree_leaves(final))) > 1e-5


def _all_leaves(states):
  """Every array of the states: weights, statistics, EMA, spectral state, Adam moments."""
  return jax.tree_util.tree_leaves(jax.device_get(
      [(s.params, s.batch_stats, s.ema_params, s.ema_batch_stats, s.spectral, s.opt_state)
       for s in states]))


def test_unet_discriminator_and_ldl_resume_bit_identically(tmp_path):
  """SRGAN steps with the U-Net D and LDL: the spectral normalisation's u vectors are
  checkpointed and restored bit for bit, and steps continued from the restored states
  end exactly where uninterrupted steps do. (The steps' program directly, not
  train_and_evaluate: three runs of it compile the U-Net D three times, minutes.)"""
  config = tiny_quickstart_config()
  config.discriminator.arch, config.discriminator.unet_features = 'unet', 4
  config.srgan.ldl_weight, config.ema_decay = 1.0, 0.9
  replicated = jax.sharding.NamedSharding(
      jax.make_mesh((1,), ('data',), devices=jax.devices()[:1]), jax.P())
  fresh = jax.jit(functools.partial(steps.create_states, config, steps.SRGAN),
                  out_shardings=replicated)
  srgan_step = steps.compile_steps(config, 'caffe', replicated)[1]
  rng = np.random.default_rng(0)
  batches = [{'hr': rng.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32),
              'lr': rng.uniform(0, 1, (8, 8, 8, 3)).astype(np.float32)} for _ in range(4)]

  def run(states, first, last):
    with jax.set_mesh(replicated.mesh):
      metrics = steps.empty_metrics(steps.SRGAN, replicated)
      for step in range(first, last):
        *states, metrics = srgan_step(*states, metrics, batches[step], None, step)
    return states

  uninterrupted = run(fresh(), 0, 4)
  stopped = run(fresh(), 0, 2)
  manager = checkpointing.create_manager(str(tmp_path), config)
  checkpointing.save(manager, 2, *stopped, checkpointing.run_record(2, steps.SRGAN, config),
                     force=True)
  checkpointing.wait_until_finished(manager)
  manager = checkpointing.create_manager(str(tmp_path), config)  # As a resumed run's.
  restored = checkpointing.restore(manager, 2, *fresh(), config)[:2]
  assert len(jax.tree_util.tree_leaves(restored[1].spectral)) == 16
  jax.tree.map(np.testing.assert_array_equal, _all_leaves(restored), _all_leaves(stopped))
  resumed = run(restored, 2, 4)
  jax.tree.map(np.testing.assert_array_equal, _all_leaves(resumed), _all_leaves(uninterrupted))
  # The steps trained D: its spectral state moved from its initial values.
  assert all(np.any(a != b) for a, b in zip(
      jax.tree_util.tree_leaves(jax.device_get(fresh()[1].spectral)),
      jax.tree_util.tree_leaves(jax.device_get(resumed[1].spectral))))


class _StateBeforeSpectral(flax_train_state.TrainState):
  """steps.TrainState as it was before its ``spectral`` field."""
  batch_stats: Any
  ema_params: Any = None
  ema_batch_stats: Any = None


def test_checkpoints_from_before_the_spectral_state_restore(tmp_path):
  """A checkpoint written before states had ``spectral`` and before
  ``discriminator.arch`` existed restores exactly, its ``spectral`` empty (else every
  run in progress would read as damaged after the upgrade)."""
  config = tiny_quickstart_config()
  generator, discriminator = steps.create_states(config, steps.SRGAN)
  old = lambda state: _StateBeforeSpectral(
      step=state.step, apply_fn=state.apply_fn, params=state.params, tx=state.tx,
      opt_state=state.opt_state, batch_stats=state.batch_stats, ema_params=state.ema_params,
      ema_batch_stats=state.ema_batch_stats)
  record = checkpointing.run_record(2, steps.SRGAN, config)
  del record['config']['discriminator']['arch'], record['config']['discriminator']['unet_features']
  manager = checkpointing.create_manager(str(tmp_path), config)
  checkpointing.save(manager, 2, old(generator), old(discriminator), record, force=True)
  checkpointing.wait_until_finished(manager)
  manager = checkpointing.create_manager(str(tmp_path), config)  # As a resumed run's.
  restored = checkpointing.restore(manager, 2, generator, discriminator, config)[:2]
  assert restored[1].spectral == {}
  jax.tree.map(np.testing.assert_array_equal, _all_leaves(restored),
               _all_leaves((generator, discriminator)))


def test_resume_with_another_architecture_is_a_clear_error(data_dirs, tmp_path):
  workdir = str(tmp_path / 'w')
  loop.train_and_evaluate(tiny_run_config(data_dirs, srresnet_steps=2, srgan_steps=0), workdir)
  config = tiny_run_config(data_dirs, srresnet_steps=4, srgan_steps=0)
  config.generator.features = 16
  with pytest.raises(checkpointing.CheckpointError, match=r'incompatible config.*generator'):
    loop.train_and_evaluate(config, workdir)


def test_nan_loss_stops_with_step_and_keeps_good_checkpoints(data_dirs, tmp_path, monkeypatch):
  create = inputs.create_input_iterator

  def poisoned(config, start_step):
    for step, batch in enumerate(create(config, start_step), start_step):
      if step == 5:
        batch = {**batch, 'hr': np.full_like(batch['hr'], np.nan)}
      yield batch

  monkeypatch.setattr(inputs, 'create_input_iterator', poisoned)
  workdir = str(tmp_path / 'nan')
  with pytest.raises(loop.NonFiniteLossError, match='at step 5'):
    loop.train_and_evaluate(tiny_run_config(data_dirs), workdir)
  assert checkpointing.latest_step(workdir) == 4
  _, variables, _ = checkpointing.load_generator(workdir)
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(variables))


def test_loading_a_workdir_without_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(checkpointing.CheckpointError, match='no checkpoints'):
    model_reference.load(model_reference.from_flags('srgan', str(tmp_path)))


def test_device_source_trains_on_eight_devices(data_dirs, tmp_path):
  """data.source='device': each host's batch is made on one of its devices, then
  joins the global batch sharded over all eight."""
  config = tiny_run_config(data_dirs, srresnet_steps=2, srgan_steps=2)
  config.data.source = 'device'
  workdir = str(tmp_path / 'device')
  generator, _ = loop.train_and_evaluate(config, workdir)
  assert checkpointing.latest_step(workdir) == 4
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(generator.params))


class _RecordingWriter:
  """The two MetricWriter methods the training evaluator calls."""

  def __init__(self):
    self.scalars, self.images = {}, {}

  def write_scalars(self, step, scalars):
    self.scalars.update({(step, k): v for k, v in scalars.items()})

  def write_images(self, step, images):
    self.images.update({(step, k): v for k, v in images.items()})


def test_evaluation_writes_each_metric_to_tensorboard(data_dirs, tmp_path, monkeypatch):
  monkeypatch.setenv('SRGAN_JAX_CACHE', str(tmp_path / 'cache'))  # No LPIPS weights: skipped.
  write_blocky_images(tmp_path / 'bench', 1, (112, 104), seed=2)  # One 96x96 NIQE block.
  config = tiny_run_config(data_dirs)
  config.eval_folders = (str(tmp_path / 'bench'),)
  config.eval_metrics = ('niqe', 'lpips')
  generator, _ = steps.create_states(config, 'srresnet')
  writer = _RecordingWriter()
  upscaler = upscalers.generator(models.generator_from_config(config),
                                 generator.eval_variables())
  results = during_training.TrainingEvaluator(config, writer).run(upscaler, 7)
  # The model's scores, and the bicubic baseline's beside them.
  assert sorted(writer.scalars) == [(7, f'eval/bench/{prefix}{metric}')
                                    for prefix in ('bicubic_', '')
                                    for metric in ('niqe', 'psnr', 'ssim')]
  assert writer.scalars[7, 'eval/bench/niqe'] == results['bench']['niqe']
  assert np.isfinite(results['bench']['niqe'])


class _CannedEvaluator:
  """A TrainingEvaluator that returns the same results at every step it runs."""

  def __init__(self, results):
    self.results, self.steps = results, []

  def run(self, upscaler, step, final=False):
    del upscaler, final
    self.steps.append(step)
    return self.results


class _Generator:
  def eval_variables(self):
    return {}


def test_srgan_evaluations_warn_of_texture_where_photographs_are_flat():
  config = tiny_quickstart_config()
  config.srresnet.num_steps, config.srgan.num_steps, config.eval_every_steps = 4, 4, 2
  evaluator = _CannedEvaluator({'Set5': {'psnr': 27.0, 'flat_texture': 3.25}})
  health = gan_health.GanHealth()
  def evaluate(step, phase):
    loop.evaluate(loop.Progress(step, phase, _Generator(), None, None), config,
                  evaluator, health)
  evaluate(4, steps.SRRESNET)  # The SRResNet phase's evaluations are not the GAN's.
  assert evaluator.steps == [4] and not health.warnings
  evaluate(5, steps.SRGAN)  # Not an evaluation step.
  evaluate(6, steps.SRGAN)
  assert evaluator.steps == [4, 6]
  assert len(health.warnings) == 1 and 'at step 6' in health.warnings[0]


def _bright_images(folder: pathlib.Path, count: int, seed: int) -> None:
  """Smooth colour images far brighter than mid-grey in every channel, each with its
  own tint, so that a generator that has not learnt the mean is off by far more
  than a grey level."""
  folder.mkdir(parents=True)
  rng = np.random.default_rng(seed)
  for i in range(count):
    coarse = rng.uniform(150, 250, (5, 6, 3))
    image = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((48, 40), Image.BICUBIC))
    Image.fromarray(image).save(folder / f'bright{i:02d}.png')


def _crop_bias(generator: steps.TrainState, config, step_range) -> np.ndarray:
  """Mean SR - HR per channel, in grey levels, over the training crops of the steps of
  ``step_range``, with the generator as evaluation runs it (train=False)."""
  batches = inputs.create_input_iterator(config, step_range[0])
  differences = []
  for _ in step_range:
    batch = next(batches)
    sr = generator.apply_fn({'params': generator.params, 'batch_stats': generator.batch_stats},
                            batch['lr'], train=False)
    differences.append(np.mean(np.asarray(sr) - batch['hr'], axis=(0, 1, 2)) * 127.5)
  return np.mean(differences, axis=0)


def test_short_run_is_unbiased_on_its_training_crops(tmp_path):
  """The brightness offset of issue 12: after a short quickstart-style run the
  generator's mean output over its own training crops matches theirs per channel."""
  _bright_images(tmp_path / 'bright', 10, seed=3)
  config = tiny_quickstart_config()
  config.generator.batch_norm = False  # As the quickstart trains it.
  # Without the quickstart's bicubic skip, which anchors the output's mean to the
  # input's: the network itself must learn to be unbiased.
  config.generator.bicubic_skip = False
  config.data.folders = (str(tmp_path / 'bright'),)
  config.srresnet.num_steps = 150
  config.srgan.num_steps = 0
  config.log_every_steps = config.checkpoint_every_steps = config.eval_every_steps = 1000
  config.eval_folders = ()
  untrained, _ = steps.create_states(config, steps.SRRESNET)
  assert np.all(np.abs(_crop_bias(untrained, config, range(1000, 1004))) > 20)
  generator, _ = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  bias = _crop_bias(generator, config, range(1000, 1004))  # Steps it did not train on.
  # Within 2 grey levels after 150 steps of a 1-block, 8-feature generator (measured:
  # -0.5, -1.6, -1.6); the BatchNorm generator was 4 to 8 levels off.
  assert np.all(np.abs(bias) < 2.0), bias


@pytest.mark.parametrize('source', ['workdir', 'shipped'])
def test_srgan_phase_alone_starts_from_init_from(data_dirs, tmp_path, monkeypatch, source):
  """srresnet.num_steps = 0 with srgan.init_from (a workdir, or a shipped model's name):
  the SRGAN phase starts from that generator. Before, a run with no SRResNet steps
  skipped the switch that loads it and trained a random generator."""
  source_dir = tmp_path / 'source'
  loop.train_and_evaluate(tiny_run_config(data_dirs, srresnet_steps=2, srgan_steps=0),
                          str(source_dir))
  _, expected, _ = checkpointing.load_generator(str(source_dir), ema=False)
  config = tiny_run_config(data_dirs, srresnet_steps=0, srgan_steps=1)
  config.ema_decay = 0.0
  config.srgan.learning_rate = 1e-30  # One step that cannot move the weights.
  config.srgan.init_from = str(source_dir)
  if source == 'shipped':
    from srgan_jax.inference import pretrained_export  # pylint: disable=g-import-not-at-top
    monkeypatch.setenv(pretrained.DIRECTORY_ENV, str(tmp_path / 'models'))
    pretrained_export.export(str(source_dir), 'tiny', command='train it', folders=[], ema=False)
    config.srgan.init_from = 'tiny'
    monkeypatch.chdir(tmp_path)  # No folder named 'tiny' here: the name is a model's.
  generator, _ = loop.train_and_evaluate(config, str(tmp_path / 'gan'))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(generator.params),
               jax.device_get(expected['params']))
  # The phase's TensorBoard images: this batch's SR beside its HR.
  assert 'train/srgan/sr_beside_hr' in _event_tags(tmp_path / 'gan')


def test_srresnet_phase_starts_from_init_from(data_dirs, tmp_path):
  """srresnet.init_from: the SRResNet phase's first step starts from that generator
  (a fine-tuning), not from random weights."""
  source_dir = tmp_path / 'source'
  loop.train_and_evaluate(tiny_run_config(data_dirs, srresnet_steps=2, srgan_steps=0),
                          str(source_dir))
  _, expected, _ = checkpointing.load_generator(str(source_dir), ema=False)
  config = tiny_run_config(data_dirs, srresnet_steps=1, srgan_steps=0)
  config.srresnet.learning_rate = 1e-30  # One step that cannot move the weights.
  config.srresnet.init_from = str(source_dir)
  generator, _ = loop.train_and_evaluate(config, str(tmp_path / 'tuned'))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(generator.params),
               jax.device_get(expected['params']))


def _event_tags(workdir: pathlib.Path) -> set[str]:
  """Every tag (scalars, images) in a run's TensorBoard event files."""
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
  from srgan_jax.evaluation import curves  # pylint: disable=g-import-not-at-top
  return {value.tag for path in workdir.glob('events.out.tfevents.*')
          for record in curves._records(path.read_bytes())  # pylint: disable=protected-access
          for value in event_pb2.Event.FromString(record).summary.value}
