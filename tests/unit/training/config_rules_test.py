"""configs/config_rules.py agrees with the configs: every field has a rule, every config passes."""

import re

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
  from srgan_jax.evaluation import registry  # pylint: disable=g-import-not-at-top
  assert config_rules.EVAL_METRICS == registry.ALWAYS_COMPUTED + registry.METRICS


@pytest.mark.parametrize('field, value, expected', [
    ('data.crop_size', 18, 'data.crop_size must be a multiple of scale (4) and of 16'),
    ('data.crop_size', 36, 'data.crop_size must be a multiple of scale (4) and of 16'),
    ('data.crops_per_image', 0, 'data.crops_per_image must be >= 1'),
    ('srresnet.schedule', 'linear', 'srresnet.schedule must be one of'),
    ('batch_size', 12, 'batch_size must be a multiple of the 8 devices'),
])
def test_config_rules_are_the_only_check_of_what_training_relies_on(field, value, expected):
  """The training library (steps, loop, input pipelines) no longer re-checks these:
  the config is checked once, where it enters."""
  config = quickstart.get_config()
  section, _, name = field.rpartition('.')
  setattr(config[section] if section else config, name, value)
  with pytest.raises(errors.ConfigError, match=re.escape(expected)):
    config_rules.validate(config, device_count=8)
