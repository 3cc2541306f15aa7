"""The one check of a training config, before any work: every field, by name.

``validate(config)`` is called by ``srgan_jax.main`` before a workdir, a file or a
compiled program is created (library users call it before ``loop.train_and_evaluate``).
It checks every field of ``default.py`` for its type, range and allowed values, and
that no field is unknown (a misspelled override) or missing, and reports every
problem at once in a ``ConfigError``, one line long.

A field added to ``default.py`` needs a rule in ``RULES`` (a test checks that the
two agree). The rules are made of ``runtime/flag_checks.py``'s checkers, which the
other commands use for their flags. The choice lists come from the modules that
implement the choices (content losses, evaluation metrics).
"""

import difflib
import importlib.util
import math
import os
from typing import Any, Mapping

from srgan_jax.data import realesrgan
from srgan_jax.data import sources
from srgan_jax.evaluation import named_metrics
from srgan_jax.imaging import image_io
from srgan_jax.nn import losses
from srgan_jax.nn import models
from srgan_jax.nn import vgg19
from srgan_jax.runtime import errors
from srgan_jax.runtime import flag_checks
from srgan_jax.runtime import paths
from srgan_jax.training import model_reference


SCALES = (2, 4, 8)
DATA_SOURCES = ('folders', 'tfds', 'device')
DTYPES = ('float32', 'bfloat16')
OUTPUT_ACTIVATIONS = ('none', 'tanh')
EVAL_METRICS = named_metrics.ALWAYS_COMPUTED + named_metrics.METRICS


def _convs(value: Any) -> str | None:
  """The discriminator's (channels, stride) pairs."""
  example = 'e.g. ((64, 1), (64, 2))'
  if isinstance(value, str) or not isinstance(value, (tuple, list)) or not value:
    return f'must be a non-empty tuple of (channels, stride) pairs, {example}; got {value!r}'
  for conv in value:
    if (isinstance(conv, str) or not isinstance(conv, (tuple, list)) or len(conv) != 2
        or flag_checks.integer(minimum=1)(conv[0]) or flag_checks.one_of(1, 2)(conv[1])):
      return f'must hold (channels >= 1, stride 1 or 2) pairs, {example}; got {conv!r}'
  return None


def _interval(minimum: float, maximum: float | None = None) -> flag_checks.Checker:
  """A (low, high) pair of numbers, minimum <= low <= high <= maximum."""
  bounds = flag_checks.number(minimum=minimum, maximum=maximum)

  def check(value):
    if isinstance(value, str) or not isinstance(value, (tuple, list)) or len(value) != 2:
      return f'must be a (low, high) pair, got {value!r}'
    problem = bounds(value[0]) or bounds(value[1])
    if problem or value[0] > value[1]:
      return problem or f'must have low <= high, got {tuple(value)}'
    return None
  return check


def _distribution(count: int) -> flag_checks.Checker:
  """``count`` probabilities summing to 1."""
  def check(value):
    if (isinstance(value, str) or not isinstance(value, (tuple, list)) or len(value) != count
        or any(flag_checks.number(minimum=0, maximum=1)(p) for p in value)
        or not math.isclose(sum(value), 1.0, abs_tol=1e-6)):
      return f'must be {count} probabilities in [0, 1] summing to 1, got {value!r}'
    return None
  return check


def _odd_sizes(value: Any) -> str | None:
  """Real-ESRGAN's kernel size range: odd (low, high) within the 21x21 kernels."""
  if _interval(1, 21)(value) or any(not float(v).is_integer() or int(v) % 2 == 0
                                    for v in value):
    return f'must be a (low, high) pair of odd sizes, 1 <= low <= high <= 21, got {value!r}'
  return None


_PROBABILITY = flag_checks.number(minimum=0, maximum=1)
# Each Real-ESRGAN order's fields (data.realesrgan.first.* and .second.*).
_REALESRGAN_ORDER_RULES: dict[str, flag_checks.Checker] = {
    'blur_probability': _PROBABILITY,
    'kernel_probabilities': _distribution(6),
    'sinc_probability': _PROBABILITY,
    'blur_sigma': _interval(1e-3),
    'generalized_beta': _interval(1e-3),
    'plateau_beta': _interval(1e-3),
    'resize_probabilities': _distribution(3),
    'resize_range': _interval(1e-3),
    'noise_probability': _PROBABILITY,
    'gaussian_noise_probability': _PROBABILITY,
    'noise_sigma': _interval(0),
    'poisson_scale': _interval(0),
    'grey_noise_probability': _PROBABILITY,
    'jpeg_quality': _interval(1, 100),
}


# Every field of default.py, flattened, with its checker.
RULES: dict[str, flag_checks.Checker] = {
    # jax.random.key takes a signed 64-bit seed (OverflowError above).
    'seed': flag_checks.integer(minimum=0, maximum=2**63 - 1),
    'scale': flag_checks.one_of(*SCALES),
    'generator.num_blocks': flag_checks.integer(minimum=1),
    'generator.batch_norm': flag_checks.boolean,
    'generator.icnr': flag_checks.boolean,
    'generator.bicubic_skip': flag_checks.boolean,
    'generator.chroma_from_bicubic': flag_checks.boolean,
    'generator.features': flag_checks.integer(minimum=1),
    'generator.upsample_features': flag_checks.integer(minimum=1),
    'generator.output_activation': flag_checks.one_of(*OUTPUT_ACTIVATIONS),
    'discriminator.convs': _convs,
    'discriminator.dense_features': flag_checks.integer(minimum=1),
    'discriminator.negative_slope': flag_checks.number(minimum=0),
    'discriminator.gray_input': flag_checks.boolean,
    'discriminator.arch': flag_checks.one_of(*models.DISCRIMINATOR_ARCHS),
    'discriminator.unet_features': flag_checks.integer(minimum=1),
    'dtype': flag_checks.one_of(*DTYPES),
    'batch_size': flag_checks.integer(minimum=1),
    'data.source': flag_checks.one_of(*DATA_SOURCES),
    'data.folders': flag_checks.path_list(non_empty=False),
    'data.tfds_name': flag_checks.text(),
    'data.tfds_split': flag_checks.text(),
    'data.tfds_image_key': flag_checks.text(),
    'data.tfds_data_dir': flag_checks.text(optional=True),
    'data.crop_size': flag_checks.integer(minimum=16),
    'data.augment': flag_checks.boolean,
    'data.cache': flag_checks.boolean,
    'data.crops_per_image': flag_checks.integer(minimum=1),
    'data.prefetch': flag_checks.integer(minimum=0),
    'data.degradation': flag_checks.one_of(*realesrgan.DEGRADATIONS),
    'data.realesrgan.kernel_size_range': _odd_sizes,
    'data.realesrgan.final_sinc_probability': _PROBABILITY,
    'data.realesrgan.final_resize_first_probability': _PROBABILITY,
    'data.realesrgan.clean_probability': _PROBABILITY,
    **{f'data.realesrgan.{order}.{name}': rule for order in ('first', 'second')
       for name, rule in _REALESRGAN_ORDER_RULES.items()},
    'adam_b1': flag_checks.number(minimum=0, below=1),
    'adam_b2': flag_checks.number(minimum=0, below=1),
    'srresnet.num_steps': flag_checks.integer(minimum=0),
    'srresnet.learning_rate': flag_checks.number(above=0),
    'srresnet.schedule': flag_checks.one_of('constant', 'cosine'),
    'srgan.num_steps': flag_checks.integer(minimum=0),
    'srgan.learning_rate': flag_checks.number(above=0),
    'srgan.discriminator_learning_rate': flag_checks.number(above=0, optional=True),
    'srgan.decay_steps': flag_checks.integer(minimum=0),
    'srgan.decay_factor': flag_checks.number(above=0),
    'srgan.content_loss': flag_checks.one_of(*losses.CONTENT_LOSSES),
    'srgan.adversarial_weight': flag_checks.number(minimum=0),
    'srgan.gan_loss': flag_checks.one_of(*losses.GAN_LOSSES),
    'srgan.feature_matching_weight': flag_checks.number(minimum=0),
    'srgan.chroma_weight': flag_checks.number(minimum=0),
    'srgan.ldl_weight': flag_checks.number(minimum=0),
    'srgan.vgg_feature_scale': flag_checks.number(above=0),
    'srgan.vgg_weights': flag_checks.text(optional=True),
    'srgan.init_from': flag_checks.text(optional=True),
    'srresnet.init_from': flag_checks.text(optional=True),
    'ema_decay': flag_checks.number(minimum=0, below=1),
    'steps_per_call': flag_checks.integer(minimum=1),
    'log_every_steps': flag_checks.integer(minimum=1),
    'checkpoint_every_steps': flag_checks.integer(minimum=1),
    'keep_checkpoints': flag_checks.integer(minimum=1),
    'eval_every_steps': flag_checks.integer(minimum=1),
    'eval_folders': flag_checks.path_list(non_empty=False),
    'eval_metrics': flag_checks.subset_of(*EVAL_METRICS),
    'num_summary_images': flag_checks.integer(minimum=0),
    'profile_steps': flag_checks.integer(minimum=0),
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


def _too_few_images(flat: Mapping[str, Any], device_count: int | None,
                    process_count: int) -> str | None:
  """Local training folders without a batch of images that fit the crop, and the fix."""
  folders, crop, batch = flat['data.folders'], flat['data.crop_size'], flat['batch_size']
  where = folders[0] if len(folders) == 1 else (  # One line, however many entries.
      f'{len(folders)} entries ({", ".join(folders[:2])}{", ..." if len(folders) > 2 else ""})')
  files = sources.list_image_files(folders)
  if not files:
    return (f'data.folders: no image files ({", ".join(image_io.IMAGE_SUFFIXES)}) in '
            f'{where}: add training images there or point data.folders at folders that hold them')
  per_host = batch // process_count
  shares = sources.short_shares(files, crop, per_host, process_count)
  if not shares:
    return None
  worst = min(shares, key=lambda share: share.usable)
  fixes = []
  # The largest batch that each host can fill, in whole crops per device.
  unit = device_count or 1
  largest_batch = worst.usable * process_count // unit * unit
  if largest_batch:
    fixes.append(f'lower batch_size to {largest_batch}')
  # The largest valid crop that leaves every short host a batch (their short sides
  # are all known: a short host's share was read to the end).
  unit = math.lcm(flat['scale'], 16)
  if all(len(share.short_sides) >= per_host for share in shares):
    largest_crop = min(sorted(share.short_sides, reverse=True)[per_host - 1]
                       for share in shares) // unit * unit
    if largest_crop >= unit:
      fixes.append(f'lower data.crop_size to {largest_crop}')
  fixes.append(f'add images of at least {crop}x{crop} pixels')
  smaller = len(worst.short_sides) - worst.usable
  why = [f'{smaller} smaller than data.crop_size={crop} on a side'] if smaller else []
  why += [f'{worst.unreadable} unreadable'] if worst.unreadable else []
  why = f' ({", ".join(why)})' if why else ''
  share, over = '', ''
  if process_count > 1:
    share = f' in the share of process {worst.process_index} of {process_count}'
    over = f' over {process_count} processes'
  fix = ', or '.join([', '.join(fixes[:-1]), fixes[-1]] if len(fixes) > 1 else fixes)
  return (f'data.folders: {where}: {worst.usable} usable of {worst.num_files} images'
          f'{share}{why}, fewer than the {per_host} that one batch takes '
          f'(batch_size={batch}{over}, each crop from its own image): {fix}')


# The packages each tf.data source imports ('device' needs none), and their pip names.
_INPUT_PACKAGES = {'folders': ('tensorflow',), 'tfds': ('tensorflow', 'tensorflow_datasets')}
_PIP_NAMES = {'tensorflow': 'tensorflow-cpu', 'tensorflow_datasets': 'tensorflow-datasets'}


def _missing_input_packages(source: str) -> str | None:
  """The problem when the data source needs packages this machine lacks (say,
  ``pip install --no-deps -e .`` beside an accelerator image's JAX), else None."""
  # find_spec looks for the package without importing it (tensorflow takes seconds).
  missing = [name for name in _INPUT_PACKAGES.get(source, ())
             if importlib.util.find_spec(name) is None]
  if not missing:
    return None
  return (f'data.source={source!r} reads through tf.data, which needs '
          f'{" and ".join(missing)} (not installed here): pip install '
          f'{" ".join(_PIP_NAMES[name] for name in missing)}, or train with '
          "data.source='device' (decoded once onto the accelerator, no tensorflow)")


def _relations(flat: Mapping[str, Any], device_count: int | None, process_count: int,
               check_files: bool) -> list[str]:
  """Checks between fields, and files that must exist before training starts."""
  problems = []
  scale, crop, batch = flat['scale'], flat['data.crop_size'], flat['batch_size']
  if crop % scale or crop % 16:
    problems.append(f'data.crop_size must be a multiple of scale ({scale}) and of 16 '
                    f'(the discriminator halves it four times), got {crop}')
  if device_count and batch % device_count:
    problems.append(f'batch_size must be a multiple of the {device_count} devices, got {batch}')
  if flat['data.degradation'] == 'realesrgan' and flat['data.source'] != 'device':
    problems.append(f"data.degradation='realesrgan' is made on the device: set "
                    f"data.source='device' (got {flat['data.source']!r})")
  for order in ('first', 'second'):
    if not flat[f'data.realesrgan.{order}.resize_range'][0] <= 1 <= flat[
        f'data.realesrgan.{order}.resize_range'][1]:
      problems.append(f'data.realesrgan.{order}.resize_range must hold 1 (down to low, up '
                      f'to high), got {flat[f"data.realesrgan.{order}.resize_range"]}')
  if flat['srgan.ldl_weight'] > 0 and flat['ema_decay'] == 0:
    problems.append('srgan.ldl_weight > 0 compares G with its EMA, which ema_decay=0 turns '
                    'off: set ema_decay (e.g. 0.999) or srgan.ldl_weight=0')
  if flat['srresnet.num_steps'] + flat['srgan.num_steps'] == 0:
    problems.append('srresnet.num_steps + srgan.num_steps must be >= 1, got 0')
  per_call = flat['steps_per_call']
  # Logs, evaluations and checkpoints happen between calls (training/loop.py).
  uneven = [f'{name}={flat[name]}' for name in (
      'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps') if flat[name] % per_call]
  if uneven:
    problems.append(f'{", ".join(uneven)} must be multiples of steps_per_call={per_call} '
                    '(logs, evaluations and checkpoints happen between calls)')
  if not check_files:
    return problems
  problem = _missing_input_packages(flat['data.source'])
  if problem:
    problems.append(problem)
  elif flat['data.source'] == 'tfds' and not paths.is_remote(flat['data.tfds_data_dir'] or ''):
    # Remote data dirs (gs://) are checked where reading starts, as remote folders are.
    problem = sources.tfds_problem(flat['data.tfds_name'], flat['data.tfds_data_dir'],
                                   flat['data.tfds_image_key'])
    if problem:
      problems.append(problem)
  if flat['data.source'] in ('folders', 'device'):
    if not flat['data.folders']:
      problems.append(f'data.folders must name at least one folder for data.source='
                      f'{flat["data.source"]!r}')
    missing = [folder for folder in flat['data.folders']
               if not paths.is_remote(folder) and not os.path.exists(folder)]
    if missing:
      problems.append(f'data.folders: {", ".join(missing)} not found')
    elif flat['data.folders'] and not any(map(paths.is_remote, flat['data.folders'])):
      # Remote folders are checked by the input pipeline, where reading starts anyway.
      problem = _too_few_images(flat, device_count, process_count)
      if problem:
        problems.append(problem)
  if flat['srgan.num_steps'] and flat['srgan.content_loss'] in losses.VGG_CONTENT_LAYERS:
    weights = flat['srgan.vgg_weights'] or vgg19.default_path()
    if not paths.is_remote(weights) and not os.path.isfile(weights):
      problems.append(f'srgan.content_loss={flat["srgan.content_loss"]!r} needs VGG19 weights, '
                      f'none at {weights}: run {vgg19.IMPORT_COMMAND}'
                      + (f' --output={weights}' if flat['srgan.vgg_weights'] else '')
                      + " (or set srgan.content_loss='mse')")
  for field in ('srresnet.init_from', 'srgan.init_from'):
    init_from = flat[field] and model_reference.problem(
        model_reference.from_init_from(flat[field]))
    if init_from:
      problems.append(f'{field}: {init_from}')
  return problems


def check(config: Mapping[str, Any], device_count: int | None = None,
          check_files: bool = True, process_count: int = 1) -> list[str]:
  """Every problem of a training config, as 'field what is wrong' strings."""
  flat = _flatten(config)
  problems = _names(flat)
  for name, rule in RULES.items():
    problem = rule(flat[name]) if name in flat else None
    if problem:
      problems.append(f'{name} {problem}')
  if problems:  # The checks between fields assume each field is well-formed.
    return problems
  return _relations(flat, device_count, process_count, check_files)


def validate(config: Mapping[str, Any], device_count: int | None = None,
             check_files: bool = True, process_count: int = 1) -> None:
  """Raises ConfigError naming every bad field of a training config.

  Args:
    config: the training config (a ConfigDict, or nested dicts).
    device_count: the number of devices the batch is split over (checked when given).
    check_files: also check that the files training reads exist (local data
      folders, VGG19 weights when the SRGAN phase needs them, the init_from fields),
      and that each host's share of local data folders fills a batch with
      images that fit the crop (read from image headers, not decoded).
    process_count: the number of hosts the images and the batch are split over.
  """
  problems = check(config, device_count, check_files, process_count)
  if problems:
    raise errors.ConfigError(f'bad config: {"; ".join(problems)}')
