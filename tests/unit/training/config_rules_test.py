"""configs/config_rules.py agrees with the configs: every field has a rule, every config passes."""

import os
import re

from PIL import Image
import pytest

from srgan_jax.configs import cpu_small
from srgan_jax.configs import cpu_small_gan
from srgan_jax.configs import cpu_small_real
from srgan_jax.configs import cpu_small_real_gan
from srgan_jax.configs import default
from srgan_jax.configs import quickstart
from srgan_jax.configs import x4
from srgan_jax.runtime import errors
from srgan_jax.training import config_rules


def test_every_default_field_has_a_rule():
  flat = config_rules._flatten(default.get_config())  # pylint: disable=protected-access
  assert sorted(flat) == sorted(config_rules.RULES)


@pytest.mark.parametrize('module, devices', [
    (default, 8), (quickstart, 1), (cpu_small, 1), (cpu_small_gan, 1), (cpu_small_real, 1),
    (cpu_small_real_gan, 1), (x4, 8)], ids=[
        'default', 'quickstart', 'cpu_small', 'cpu_small_gan', 'cpu_small_real',
        'cpu_small_real_gan', 'x4'])
def test_shipped_configs_are_valid(module, devices, tmp_path):
  """On one device (the CPU configs: quickstart's batch is one crop per photograph)
  or eight (the accelerator configs)."""
  config = module.get_config()
  weights = tmp_path / 'vgg19.npz'  # Only its existence is checked up front.
  weights.write_bytes(b'')
  config.srgan.vgg_weights = str(weights)
  # A batch of images of the crop size: the check reads their headers.
  for index in range(config.batch_size):
    Image.new('RGB', (config.data.crop_size,) * 2).save(tmp_path / f'{index}.png')
  config.data.folders = (str(tmp_path),)
  config.eval_folders = ()
  if config.data.source == 'tfds':  # x4's ImageNet, prepared by TFDS's own record of it.
    config.data.tfds_data_dir = str(_prepared_tfds(tmp_path / 'tfds', config.data.tfds_name))
  config_rules.validate(config, device_count=devices)


def _prepared_tfds(data_dir, name):
  """``data_dir`` holding what TFDS writes when it prepares ``name`` (its dataset_info.json
  and features.json, no examples: nothing downloaded)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(name, data_dir=str(data_dir))
  os.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)
  return data_dir


def _tfds_config(tmp_path, **data):
  config = quickstart.get_config()
  config.data.source, config.data.tfds_name = 'tfds', 'div2k/bicubic_x4'
  config.data.tfds_image_key = 'hr'
  config.data.tfds_data_dir = str(tmp_path / 'tfds')
  config.data.update(data)
  return config


def test_tfds_data_must_be_prepared(tmp_path):
  """Before: the loop's input pipeline failed with a 56-line traceback advising
  `tfds convert_format` (or a 62-line AssertionError), after the workdir was made."""
  (tmp_path / 'tfds').mkdir()
  with pytest.raises(errors.ConfigError) as raised:
    config_rules.validate(_tfds_config(tmp_path))
  assert str(raised.value) == (
      f"bad config: TFDS dataset 'div2k/bicubic_x4' is not prepared in {tmp_path}/tfds (no "
      f'{tmp_path}/tfds/div2k/bicubic_x4/2.0.0/dataset_info.json): prepare it once with '
      f'`tfds build div2k/bicubic_x4 --data_dir={tmp_path}/tfds`, set data.tfds_data_dir to '
      'where it is prepared, or train from image folders: --config.data.source=folders '
      '--config.data.folders=DIR')
  assert os.listdir(tmp_path / 'tfds') == []  # Asked, not created or downloaded.
  _prepared_tfds(tmp_path / 'tfds', 'div2k/bicubic_x4')
  config_rules.validate(_tfds_config(tmp_path))  # The same, prepared: no problem.
  assert config_rules.check(_tfds_config(tmp_path, tfds_image_key='image')) == [
      "data.tfds_image_key='image' is not a feature of div2k/bicubic_x4 (it has hr, lr)"]
  # A dataset that needs a manual download says so.
  imagenet = config_rules.check(_tfds_config(tmp_path, tfds_name='imagenet2012'))
  assert 'needs its files downloaded by hand first, into --manual_dir' in imagenet[0]
  assert config_rules.check(_tfds_config(tmp_path, tfds_name='no_such_dataset')) == [
      "data.tfds_name='no_such_dataset' is not a TFDS dataset: name one of "
      'https://www.tensorflow.org/datasets/catalog, or train from image folders: '
      '--config.data.source=folders --config.data.folders=DIR']


def test_every_problem_in_one_line():
  config = quickstart.get_config()
  config.batch_size, config.scale, config.srgan.content_loss = 0, 3, 'vgg'
  with pytest.raises(errors.ConfigError) as error:
    config_rules.validate(config)
  message = str(error.value)
  assert '\n' not in message
  assert message == ("bad config: scale must be one of 2, 4, 8; got 3; batch_size must be "
                     ">= 1, got 0; srgan.content_loss must be one of 'mse', 'l1', 'vgg22', 'vgg54'; "
                     "got 'vgg'")


def test_eval_metric_names_are_those_evaluation_knows():
  from srgan_jax.evaluation import named_metrics  # pylint: disable=g-import-not-at-top
  assert config_rules.EVAL_METRICS == named_metrics.ALWAYS_COMPUTED + named_metrics.METRICS


@pytest.mark.parametrize('field, value, expected', [
    ('data.crop_size', 18, 'data.crop_size must be a multiple of scale (4) and of 16'),
    ('data.crop_size', 36, 'data.crop_size must be a multiple of scale (4) and of 16'),
    ('data.crops_per_image', 0, 'data.crops_per_image must be >= 1'),
    ('srresnet.schedule', 'linear', 'srresnet.schedule must be one of'),
    ('batch_size', 12, 'batch_size must be a multiple of the 8 devices'),
    # Before: OverflowError from jax.random.key in the first step, after the workdir was made.
    ('seed', 2**63, 'seed must be <= 9223372036854775807, got 9223372036854775808'),
    ('srgan.ldl_weight', 1.0, 'srgan.ldl_weight > 0 compares G with its EMA, which '
     'ema_decay=0 turns off'),
    ('discriminator.arch', 'patch', "discriminator.arch must be one of"),
    ('srresnet.init_from', '/nonexistent/run',
     'srresnet.init_from: no checkpoints in /nonexistent/run'),
])
def test_config_rules_are_the_only_check_of_what_training_relies_on(field, value, expected):
  """The training library (steps, loop, input pipelines) no longer re-checks these:
  the config is checked once, where it enters."""
  config = quickstart.get_config()
  section, _, name = field.rpartition('.')
  setattr(config[section] if section else config, name, value)
  with pytest.raises(errors.ConfigError, match=re.escape(expected)):
    config_rules.validate(config, device_count=8)


def test_each_hosts_share_of_the_training_images_must_fill_its_batch(tmp_path):
  """Host p trains on images p, p + P, ... (data/sources): with 3 images on 2 hosts,
  host 1 has one image, fewer than its 2 crops of a batch of 4; the largest crop that
  gives every host a batch is suggested too."""
  for index, side in enumerate((80, 64, 70)):
    Image.new('RGB', (side, 100)).save(tmp_path / f'{index}.png')
  config = quickstart.get_config()
  config.data.folders, config.data.crop_size, config.batch_size = (str(tmp_path),), 48, 2
  assert not config_rules.check(config, device_count=2, process_count=1)
  config.batch_size = 4
  problems = config_rules.check(config, device_count=2, process_count=2)
  assert problems == [
      f'data.folders: {tmp_path}: 1 usable of 1 images in the share of process 1 of 2, fewer '
      'than the 2 that one batch takes (batch_size=4 over 2 processes, each crop from its own '
      'image): lower batch_size to 2, or add images of at least 48x48 pixels']
  # Too big for all; with a batch of 2, a crop of 64 fits (70, the second longest of the
  # shorter sides, rounded down to a multiple of 16).
  config.data.crop_size = 96
  problems = config_rules.check(config, device_count=2, process_count=1)
  assert problems == [
      f'data.folders: {tmp_path}: 0 usable of 3 images (3 smaller than data.crop_size=96 on a '
      'side), fewer than the 4 that one batch takes (batch_size=4, each crop from its own '
      'image): add images of at least 96x96 pixels']
  config.batch_size = 2
  assert 'lower data.crop_size to 64, or add images' in config_rules.check(config, 2)[0]


@pytest.mark.parametrize('change, expected', [
    (lambda c: setattr(c.data, 'degradation', 'realesrgan'),
     "data.degradation='realesrgan' is made on the device: set data.source='device' "
     "(got 'folders')"),
    (lambda c: setattr(c.data.realesrgan.first, 'kernel_probabilities', (0.5, 0.5, 0, 0, 0, 0.1)),
     'data.realesrgan.first.kernel_probabilities must be 6 probabilities in [0, 1] summing to 1'),
    (lambda c: setattr(c.data.realesrgan.second, 'jpeg_quality', (95, 30)),
     'data.realesrgan.second.jpeg_quality must have low <= high, got (95, 30)'),
    (lambda c: setattr(c.data.realesrgan, 'kernel_size_range', (6, 21)),
     'data.realesrgan.kernel_size_range must be a (low, high) pair of odd sizes'),
    (lambda c: setattr(c.data.realesrgan.first, 'resize_range', (1.1, 1.5)),
     'data.realesrgan.first.resize_range must hold 1'),
    (lambda c: setattr(c.data.realesrgan.second, 'noise_probability', 1.5),
     'data.realesrgan.second.noise_probability must be <= 1'),
    (lambda c: setattr(c.data.realesrgan, 'clean_probability', -0.1),
     'data.realesrgan.clean_probability must be >= 0'),
])
def test_realesrgan_fields_are_checked_in_one_line(change, expected):
  config = quickstart.get_config()
  change(config)
  with pytest.raises(errors.ConfigError, match=re.escape(expected)) as raised:
    config_rules.validate(config, check_files=False)
  assert '\n' not in str(raised.value)
