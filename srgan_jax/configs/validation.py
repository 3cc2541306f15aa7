"""The one check of a training config, before any work: every field, by name.

``validate(config)`` is called by ``srgan_jax.main`` before a workdir, a file or a
compiled program is created (and by ``train.train_and_evaluate`` for library users).
It checks every field of ``default.py`` for its type, range and allowed values, and
that no field is unknown (a misspelled override) or missing, and reports every
problem at once in a ``ConfigError``, one line long.

A field added to ``default.py`` needs a rule in ``RULES`` (a test checks that the
two agree). The rules' checkers (``integer``, ``number``, ``one_of``, ...) also check
the command-line flags of the other entry points, through ``check_flags``.
"""

import difflib
import math
import os
from typing import Any, Callable, Mapping, Sequence

from srgan_jax import errors
from srgan_jax import paths

# A checker returns None for a good value, else what is wrong ("must be ..., got X").
Checker = Callable[[Any], str | None]

SCALES = (2, 4, 8)
CONTENT_LOSSES = ('mse', 'vgg22', 'vgg54')
DATA_SOURCES = ('folders', 'tfds', 'device')
DTYPES = ('float32', 'bfloat16')
OUTPUT_ACTIVATIONS = ('none', 'tanh')
# perceptual.ALWAYS_COMPUTED + perceptual.METRICS (that module imports JAX; this one must not).
EVAL_METRICS = ('psnr', 'ssim', 'niqe', 'lpips', 'lpips_vgg')


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def integer(minimum: int | None = None, maximum: int | None = None) -> Checker:
  """An int (not a bool) in [minimum, maximum]."""
  def check(value):
    if not _is_int(value):
      return f'must be an integer, got {value!r}'
    if minimum is not None and value < minimum:
      return f'must be >= {minimum}, got {value}'
    if maximum is not None and value > maximum:
      return f'must be <= {maximum}, got {value}'
    return None
  return check


def number(minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, below: float | None = None) -> Checker:
  """A finite int or float in [minimum, maximum] and (above, below)."""
  def check(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
      return f'must be a finite number, got {value!r}'
    for bound, fails, word in ((minimum, lambda b: value < b, '>='),
                               (maximum, lambda b: value > b, '<='),
                               (above, lambda b: value <= b, '>'),
                               (below, lambda b: value >= b, '<')):
      if bound is not None and fails(bound):
        return f'must be {word} {bound}, got {value}'
    return None
  return check


def one_of(*allowed: Any) -> Checker:
  """One of the allowed values (listed in the message)."""
  def check(value):
    if isinstance(value, bool) or value not in allowed:
      return f'must be one of {", ".join(map(repr, allowed))}; got {value!r}'
    return None
  return check


def subset_of(*allowed: Any) -> Checker:
  """A tuple or list of allowed values (listed in the message)."""
  def check(value):
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
      return f'must be a tuple of names, e.g. ("niqe",), got {value!r}'
    unknown = [item for item in value if item not in allowed]
    if unknown:
      return f'may hold {", ".join(map(repr, allowed))}; got {unknown[0]!r}'
    return None
  return check


def boolean(value: Any) -> str | None:
  return None if isinstance(value, bool) else f'must be True or False, got {value!r}'


def text(optional: bool = False) -> Checker:
  """A non-empty string (or None when optional)."""
  def check(value):
    if value is None and optional:
      return None
    if not isinstance(value, str) or not value:
      return f'must be a non-empty string{" or unset" if optional else ""}, got {value!r}'
    return None
  return check


def path_list(non_empty: bool) -> Checker:
  """A tuple or list of non-empty path strings."""
  def check(value):
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
      return f'must be a tuple of paths, e.g. ("a", "b"), got {value!r}'
    if non_empty and not value:
      return 'must name at least one folder'
    bad = [item for item in value if not isinstance(item, str) or not item]
    return f'must hold paths (strings), got {bad[0]!r}' if bad else None
  return check


def _convs(value: Any) -> str | None:
  """The discriminator's (channels, stride) pairs."""
  example = 'e.g. ((64, 1), (64, 2))'
  if isinstance(value, str) or not isinstance(value, (tuple, list)) or not value:
    return f'must be a non-empty tuple of (channels, stride) pairs, {example}; got {value!r}'
  for conv in value:
    if (isinstance(conv, str) or not isinstance(conv, (tuple, list)) or len(conv) != 2
        or integer(minimum=1)(conv[0]) or one_of(1, 2)(conv[1])):
      return f'must hold (channels >= 1, stride 1 or 2) pairs, {example}; got {conv!r}'
  return None


# Every field of default.py, flattened, with its checker.
RULES: dict[str, Checker] = {
    'seed': integer(minimum=0),
    'scale': one_of(*SCALES),
    'generator.num_blocks': integer(minimum=1),
    'generator.batch_norm': boolean,
    'generator.icnr': boolean,
    'generator.bicubic_skip': boolean,
    'generator.features': integer(minimum=1),
    'generator.upsample_features': integer(minimum=1),
    'generator.output_activation': one_of(*OUTPUT_ACTIVATIONS),
    'discriminator.convs': _convs,
    'discriminator.dense_features': integer(minimum=1),
    'discriminator.negative_slope': number(minimum=0),
    'dtype': one_of(*DTYPES),
    'batch_size': integer(minimum=1),
    'data.source': one_of(*DATA_SOURCES),
    'data.folders': path_list(non_empty=False),
    'data.tfds_name': text(),
    'data.tfds_split': text(),
    'data.tfds_image_key': text(),
    'data.tfds_data_dir': text(optional=True),
    'data.crop_size': integer(minimum=16),
    'data.augment': boolean,
    'data.cache': boolean,
    'data.crops_per_image': integer(minimum=1),
    'data.prefetch': integer(minimum=0),
    'adam_b1': number(minimum=0, below=1),
    'adam_b2': number(minimum=0, below=1),
    'srresnet.num_steps': integer(minimum=0),
    'srresnet.learning_rate': number(above=0),
    'srresnet.schedule': one_of('constant', 'cosine'),
    'srgan.num_steps': integer(minimum=0),
    'srgan.learning_rate': number(above=0),
    'srgan.decay_steps': integer(minimum=0),
    'srgan.decay_factor': number(above=0),
    'srgan.content_loss': one_of(*CONTENT_LOSSES),
    'srgan.adversarial_weight': number(minimum=0),
    'srgan.vgg_feature_scale': number(above=0),
    'srgan.vgg_weights': text(optional=True),
    'srgan.init_from': text(optional=True),
    'ema_decay': number(minimum=0, below=1),
    'log_every_steps': integer(minimum=1),
    'checkpoint_every_steps': integer(minimum=1),
    'keep_checkpoints': integer(minimum=1),
    'eval_every_steps': integer(minimum=1),
    'eval_folders': path_list(non_empty=False),
    'eval_metrics': subset_of(*EVAL_METRICS),
    'num_summary_images': integer(minimum=0),
    'profile_steps': integer(minimum=0),
}


def _flatten(config: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'a.b': value} for the leaves of nested mappings (ConfigDicts)."""
  flat = {}
  for key, value in config.items():
    if hasattr(value, 'items') and f'{prefix}{key}' not in RULES:
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def _names(flat: Mapping[str, Any]) -> list[str]:
  """Unknown and missing field names."""
  problems = []
  for name in sorted(set(flat) - set(RULES)):
    close = difflib.get_close_matches(name, RULES, n=1)
    hint = f' (did you mean {close[0]}?)' if close else ''
    problems.append(f'unknown field {name}{hint}')
  problems += [f'missing field {name}' for name in RULES if name not in flat]
  return problems


def _relations(flat: Mapping[str, Any], device_count: int | None,
               check_files: bool) -> list[str]:
  """Checks between fields, and files that must exist before training starts."""
  problems = []
  scale, crop, batch = flat['scale'], flat['data.crop_size'], flat['batch_size']
  if crop % scale or crop % 16:
    problems.append(f'data.crop_size must be a multiple of scale ({scale}) and of 16 '
                    f'(the discriminator halves it four times), got {crop}')
  if device_count and batch % device_count:
    problems.append(f'batch_size must be a multiple of the {device_count} devices, got {batch}')
  if flat['srresnet.num_steps'] + flat['srgan.num_steps'] == 0:
    problems.append('srresnet.num_steps + srgan.num_steps must be >= 1, got 0')
  if not check_files:
    return problems
  if flat['data.source'] in ('folders', 'device'):
    if not flat['data.folders']:
      problems.append(f'data.folders must name at least one folder for data.source='
                      f'{flat["data.source"]!r}')
    missing = [folder for folder in flat['data.folders']
               if not paths.is_remote(folder) and not os.path.exists(folder)]
    if missing:
      problems.append(f'data.folders: {", ".join(missing)} not found')
  if flat['srgan.num_steps'] and flat['srgan.content_loss'] != 'mse':
    from srgan_jax import vgg19  # pylint: disable=g-import-not-at-top  # Imports jax.
    weights = flat['srgan.vgg_weights'] or vgg19.default_path()
    if not paths.is_remote(weights) and not os.path.isfile(weights):
      problems.append(f'srgan.content_loss={flat["srgan.content_loss"]!r} needs VGG19 weights, '
                      f'none at {weights}: run {vgg19.IMPORT_COMMAND}'
                      + (f' --output={weights}' if flat['srgan.vgg_weights'] else '')
                      + " (or set srgan.content_loss='mse')")
  init_from = flat['srgan.init_from']
  if init_from and not paths.is_remote(init_from) and not os.path.isdir(
      os.path.join(init_from, 'checkpoints')):
    problems.append(f'srgan.init_from: no checkpoints in {init_from}')
  return problems


def check(config: Mapping[str, Any], device_count: int | None = None,
          check_files: bool = True) -> list[str]:
  """Every problem of a training config, as 'field what is wrong' strings."""
  flat = _flatten(config)
  problems = _names(flat)
  for name, rule in RULES.items():
    problem = rule(flat[name]) if name in flat else None
    if problem:
      problems.append(f'{name} {problem}')
  if problems:  # The checks between fields assume each field is well-formed.
    return problems
  return _relations(flat, device_count, check_files)


def validate(config: Mapping[str, Any], device_count: int | None = None,
             check_files: bool = True) -> None:
  """Raises ConfigError naming every bad field of a training config.

  Args:
    config: the training config (a ConfigDict, or nested dicts).
    device_count: the number of devices the batch is split over (checked when given).
    check_files: also check that the files training reads exist (local data
      folders, VGG19 weights when the SRGAN phase needs them, srgan.init_from).
  """
  problems = check(config, device_count, check_files)
  if problems:
    raise errors.ConfigError(f'bad config: {"; ".join(problems)}')


def check_flags(checks: Sequence[tuple[str, Any, Checker]], *conditions: str | None) -> None:
  """Raises ConfigError for the command-line flags that fail their checker.

  Args:
    checks: (flag name, value, checker) triples; a None value (flag not given) passes.
    *conditions: further problems (strings); anything else (None, False) is none.
  """
  problems = [f'--{name} {problem}' for name, value, rule in checks
              if value is not None and (problem := rule(value))]
  problems += [condition for condition in conditions if isinstance(condition, str) and condition]
  if problems:
    raise errors.ConfigError('; '.join(problems))
