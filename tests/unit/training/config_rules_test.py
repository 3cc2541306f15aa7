"""configs/config_rules.py agrees with the configs: every field has a rule, every config passes."""

import re

from PIL import Image
import pytest

from srgan_jax.configs import cpu_small
from srgan_jax.configs import default
from srgan_jax.configs import quickstart
from srgan_jax.configs import x4
from srgan_jax.runtime import errors
from srgan_jax.training import config_rules


def test_every_default_field_has_a_rule():
  flat = config_rules._flatten(default.get_config())  # pylint: disable=protected-access
  assert sorted(flat) == sorted(config_rules.RULES)


@pytest.mark.parametrize('module, devices', [(default, 8), (quickstart, 1), (cpu_small, 1), (x4, 8)],
                         ids=['default', 'quickstart', 'cpu_small', 'x4'])
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
  config_rules.validate(config, device_count=devices)


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
    ('srgan.ldl_weight', 1.0, 'srgan.ldl_weight > 0 compares G with its EMA, which '
     'ema_decay=0 turns off'),
    ('discriminator.arch', 'patch', "discriminator.arch must be one of"),
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
