r"""Learning curves of a training run: PSNR and SSIM against step, bicubic beside them;
and for a run with an SRGAN phase, a second row: G's content and adversarial losses,
D(real) and D(fake), NIQE (bicubic's dashed), and where the run measured them, the
luma texture over HR's where the photographs are flat and where they are textured
(``named_metrics``' flat_texture and textured_detail; HR's level, 1, dotted grey).

The command is ``python -m srgan_jax.plot`` (``srgan_jax/plot.py``).

Reads the ``eval/<set>/{psnr,ssim}`` scalars of the run's TensorBoard event files
and draws one colour per evaluation set, its bicubic baseline dashed in the same
colour. The baseline is the ``eval/<set>/bicubic_*`` scalars that training writes;
for runs from before those, it is computed from the sets' folders (the run's
config.json names them). A dotted line marks the switch from SRResNet to SRGAN.

Reads event files with TensorBoard's protocol buffers only: importing tensorflow
(which TensorBoard's own readers do when it is installed) would take seconds. A run
trained without tensorflow wrote JSON lines instead (``summaries``); they are read
too, and need no tensorboard.
"""

import json
import pathlib
import struct
from typing import Any, Iterator, Sequence

from absl import logging
from matplotlib import figure
from matplotlib import ticker
import numpy as np

from srgan_jax.evaluation import figures
from srgan_jax.evaluation import scoring
from srgan_jax.evaluation import summaries
from srgan_jax.nn import upscalers
from srgan_jax.runtime import errors
from srgan_jax.runtime import paths

METRICS = ('psnr', 'ssim')
_LABELS = {'psnr': 'PSNR (dB, Y channel)', 'ssim': 'SSIM (Y channel)'}
# Curve: (steps, values), both sorted by step.
Curve = tuple[np.ndarray, np.ndarray]


class DamagedRunFileError(errors.UserError, ValueError):
  """An events file or config.json of the run that does not read as one."""


def _damaged_events(path: pathlib.Path | None, position: int, size: int, why: str
                    ) -> DamagedRunFileError:
  return DamagedRunFileError(
      f'TensorBoard events file {path} is damaged at byte {position} of {size} ({why}): '
      'move it out of the workdir to plot the others (TensorBoard skips what follows '
      'the damage too)')


def _records(data: bytes, path: pathlib.Path | None = None) -> Iterator[bytes]:
  """The records of a TFRecord file: length (8 bytes), its CRC (4), data, data CRC (4).

  A record cut short at the end (a run still writing) ends the iteration. The length's
  CRC is checked (12 bytes a record; the data's CRC would cost a pure-Python pass over
  every image), so a length damaged mid-way is reported, never followed. ``path``:
  the file, for the message.

  Raises:
    DamagedRunFileError: a length whose CRC does not match.
  """
  # TensorBoard's own TFRecord CRC, without tensorflow.
  # pylint: disable-next=g-import-not-at-top
  from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
  position = 0
  while position + 12 <= len(data):
    header = data[position:position + 8]
    (length,), (length_crc,) = struct.unpack('<Q', header), struct.unpack(
        '<I', data[position + 8:position + 12])
    if pywrap_tensorflow.masked_crc32c(header) != length_crc:
      raise _damaged_events(path, position, len(data), 'a record length fails its CRC')
    end = position + 12 + length
    if end + 4 > len(data):
      return
    yield data[position + 12:end]
    position = end + 4


def read_scalars(workdir: str | pathlib.Path) -> dict[str, Curve]:
  """Every scalar of the run's event files, and of its JSON-lines summaries (a run
  without tensorflow, ``summaries``), by tag.

  A step written twice (a resumed run repeats the steps after its last checkpoint)
  keeps the value written last.
  """
  values: dict[str, dict[int, tuple[float, float]]] = {}
  for path in sorted(pathlib.Path(workdir).glob(summaries.SCALARS_GLOB)):
    # Named by start time, so read oldest first; a later line overwrites an earlier one.
    written = float(path.name.split('.', 1)[1].rsplit('.', 1)[0])
    for line in path.read_text().splitlines():
      try:
        entry = json.loads(line)
      except json.JSONDecodeError:  # A line cut short (a run still writing).
        continue
      if not (isinstance(entry, dict) and isinstance(entry.get('tag'), str)
              and isinstance(entry.get('step'), int)
              and isinstance(entry.get('value'), (int, float))):
        raise DamagedRunFileError(
            f'{path} holds a line that is not a scalar ({line[:80]!r}): move the file out '
            'of the workdir to plot the others')
      steps = values.setdefault(entry['tag'], {})
      steps[entry['step']] = (written, float(entry['value']))
  event_files = sorted(pathlib.Path(workdir).glob('events.out.tfevents.*'))
  if event_files:  # Only these need tensorboard's protocol buffers.
    from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
    from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
    from google.protobuf import message  # pylint: disable=g-import-not-at-top
  for path in event_files:
    data = path.read_bytes()
    for record in _records(data, path):
      try:
        event = event_pb2.Event.FromString(record)
      except message.DecodeError as error:
        raise _damaged_events(path, data.index(record), len(data),
                              f'a record is not an event: {error}') from None
      for value in event.summary.value:
        if value.HasField('simple_value'):
          number = value.simple_value
        elif value.HasField('tensor') and not value.tensor.tensor_shape.dim:
          number = float(tensor_util.make_ndarray(value.tensor))
        else:  # Images, histograms, text.
          continue
        steps = values.setdefault(value.tag, {})
        if event.step not in steps or event.wall_time >= steps[event.step][0]:
          steps[event.step] = (event.wall_time, number)
  return {tag: (np.array(sorted(steps)), np.array([steps[s][1] for s in sorted(steps)]))
          for tag, steps in values.items()}


def learning_curves(scalars: dict[str, Curve]) -> dict[str, dict[str, Curve]]:
  """``{set: {metric: curve}}`` from the ``eval/<set>/<metric>`` scalars."""
  curves: dict[str, dict[str, Curve]] = {}
  for tag, curve in scalars.items():
    parts = tag.split('/')
    if len(parts) == 3 and parts[0] == 'eval' and parts[2] in METRICS:
      curves.setdefault(parts[1], {})[parts[2]] = curve
  return curves


# The SRGAN phase's logged scalars drawn in the second row, by panel.
GAN_LOSSES = ('content_loss', 'adversarial_loss', 'ldl_loss')
GAN_OUTPUTS = ('d_real', 'd_fake')


def gan_curves(scalars: dict[str, Curve]) -> dict[str, Curve]:
  """The ``train/srgan/<name>`` curves of ``GAN_LOSSES + GAN_OUTPUTS`` that the run
  logged, by name ({} for a run without an SRGAN phase). A loss logged as 0 throughout
  is an option left off (ldl_loss without srgan.ldl_weight): not a curve."""
  return {name: scalars[f'train/srgan/{name}'] for name in GAN_LOSSES + GAN_OUTPUTS
          if f'train/srgan/{name}' in scalars
          and (name in GAN_OUTPUTS or np.any(scalars[f'train/srgan/{name}'][1] != 0))}


# The texture panel's curves: metric -> (legend suffix, line style).
TEXTURE_METRICS = {'flat_texture': ('flat', '-'), 'textured_detail': ('textured', ':')}


def metric_curves(scalars: dict[str, Curve], metric: str
                  ) -> dict[str, tuple[Curve, float | None]]:
  """``{set: (curve, bicubic's last value or None)}`` of one metric (e.g. 'niqe') from
  the eval scalars."""
  found = {}
  for tag, curve in scalars.items():
    parts = tag.split('/')
    if len(parts) == 3 and parts[0] == 'eval' and parts[2] == metric:
      baseline = scalars.get(f'eval/{parts[1]}/bicubic_{metric}')
      found[parts[1]] = (curve, None if baseline is None else float(baseline[1][-1]))
  return found


def _plot_texture(ax: Any, texture: dict[str, dict[str, tuple[Curve, float | None]]],
                  colours: dict[str, str]) -> None:
  """Each set's flat_texture (solid) and textured_detail (dotted), HR's level 1."""
  for metric, (suffix, style) in TEXTURE_METRICS.items():
    for name, (curve, _) in sorted(texture.get(metric, {}).items()):
      ax.plot(*curve, color=colours[name], linestyle=style, marker='o', markersize=3,
              label=f'{name} {suffix}')
  ax.axhline(1, color='grey', linestyle=':', linewidth=1, label='HR')
  ax.set_ylabel("luma texture over HR's")


def plot_gan_curves(fig: figure.Figure | figure.SubFigure, gan: dict[str, Curve],
                    niqe: dict[str, tuple[Curve, float | None]],
                    texture: dict[str, dict[str, tuple[Curve, float | None]]] | None = None
                    ) -> None:
  """The SRGAN row: losses (log scale), D's mean outputs, NIQE per set, and with
  ``texture`` (``{metric: metric_curves}`` of ``TEXTURE_METRICS``) a texture panel."""
  axes = fig.subplots(1, 4 if texture else 3)
  losses_ax, outputs_ax, niqe_ax = axes[:3]
  for ax, names in ((losses_ax, GAN_LOSSES), (outputs_ax, GAN_OUTPUTS)):
    for name in names:
      if name in gan:
        ax.plot(*gan[name], label=name.replace('_', ' '))
  losses_ax.set_yscale('log')
  losses_ax.set_ylabel("G's losses")
  outputs_ax.set_ylabel('mean D output (sigmoid)')
  outputs_ax.set_ylim(0, 1)
  texture = texture or {}
  # One colour per set in both panels.
  colours = {name: f'C{index}' for index, name in enumerate(
      sorted({name for curves in (niqe, *texture.values()) for name in curves}))}
  for name, (curve, baseline) in sorted(niqe.items()):
    niqe_ax.plot(*curve, color=colours[name], marker='o', markersize=3, label=name)
    if baseline is not None:
      niqe_ax.axhline(baseline, color=colours[name], linestyle='--', linewidth=1,
                      label=f'{name} bicubic')
  niqe_ax.set_ylabel('NIQE (lower: more natural)')
  if texture:
    _plot_texture(axes[3], texture, colours)
  for ax in axes:
    ax.set_xlabel('training step')
    ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=5, integer=True))  # Narrow panels.
    ax.grid(alpha=0.3)
    if ax.get_lines():
      ax.legend(fontsize='small')
  fig.suptitle('SRGAN phase')


def read_config(workdir: str | pathlib.Path) -> dict[str, Any]:
  """The run's config.json as a dict, or {} when absent.

  Raises:
    DamagedRunFileError: it is not JSON, or not an object.
  """
  path = pathlib.Path(workdir) / 'config.json'
  if not path.is_file():
    return {}
  fix = ('training writes it at the start of each run (resume the run to write it '
         'again), or move it aside')
  try:
    config = json.loads(path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as error:
    raise DamagedRunFileError(f'{path} is not valid JSON ({error}): {fix}') from None
  if not isinstance(config, dict):
    raise DamagedRunFileError(f'{path} holds a {type(config).__name__}, not a config: {fix}')
  return config


def _set_folder(name: str, config: dict[str, Any]) -> pathlib.Path | None:
  """The folder of evaluation set ``name``: the run's, else $SRGAN_DATASETS's."""
  for folder in [*config.get('eval_folders', ()), paths.dataset(name)]:
    if pathlib.Path(folder).name == name and pathlib.Path(folder).is_dir():
      return pathlib.Path(folder)
  return None


def bicubic_baselines(scalars: dict[str, Curve], sets: Sequence[str],
                      config: dict[str, Any]) -> dict[str, dict[str, float]]:
  """``{set: {metric: value}}``: the run's bicubic scalars, else computed from the folder.

  Sets with neither are left out (with a warning).
  """
  baselines = {}
  for name in sets:
    logged = {metric: scalars.get(f'eval/{name}/bicubic_{metric}') for metric in METRICS}
    if all(curve is not None for curve in logged.values()):
      baselines[name] = {metric: float(curve[1][-1]) for metric, curve in logged.items()}
      continue
    folder = _set_folder(name, config)
    if folder is None:
      logging.warning('No bicubic line for %s: not in the events, and no folder found.', name)
      continue
    scores = scoring.evaluate_folder(upscalers.bicubic(config.get('scale', 4)), folder)
    baselines[name] = {metric: scores[metric] for metric in METRICS}
  return baselines


def plot_learning_curves(curves: dict[str, dict[str, Curve]],
                         baselines: dict[str, dict[str, float]], title: str = '',
                         srgan_from: int | None = None) -> figure.Figure:
  """PSNR and SSIM panels: a solid line per set, its bicubic baseline dashed.

  Args:
    curves: ``learning_curves``' result.
    baselines: ``{set: {metric: value}}``; sets without one get no dashed line.
    title: the figure's title.
    srgan_from: the first SRGAN step, marked with a dotted vertical line.
  """
  # A Figure of its own, not pyplot: no global state, and no GUI backend is needed.
  fig = figure.Figure(figsize=(11, 4.2), layout='constrained')
  _draw_learning_curves(fig, curves, baselines, title, srgan_from)
  return fig


def _draw_learning_curves(fig: figure.Figure | figure.SubFigure,
                          curves: dict[str, dict[str, Curve]],
                          baselines: dict[str, dict[str, float]], title: str,
                          srgan_from: int | None) -> None:
  axes = fig.subplots(1, len(METRICS))
  for index, (name, set_curves) in enumerate(sorted(curves.items())):
    colour = f'C{index}'
    for ax, metric in zip(axes, METRICS):
      if metric not in set_curves:
        continue
      steps, values = set_curves[metric]
      ax.plot(steps, values, color=colour, marker='o', markersize=3, label=name)
      if metric in baselines.get(name, {}):
        ax.axhline(baselines[name][metric], color=colour, linestyle='--', linewidth=1,
                   label=f'{name} bicubic')
  for ax, metric in zip(axes, METRICS):
    if srgan_from is not None:
      ax.axvline(srgan_from, color='grey', linestyle=':', linewidth=1, label='SRGAN from here')
    ax.set_xlim(left=0)  # Where training started, for scale.
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel('training step')
    ax.set_ylabel(_LABELS[metric])
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize='small')
  if title:
    fig.suptitle(title)


def plot_workdir(workdir: str | pathlib.Path, output: str | pathlib.Path,
                 sets: Sequence[str] = ()) -> figure.Figure:
  """Plots a run's learning curves (all its sets, or ``sets``) into ``output``."""
  scalars = read_scalars(workdir)
  curves = learning_curves(scalars)
  if sets:
    missing = sorted(set(sets) - set(curves))
    if missing:
      raise ValueError(f'no evaluations of {missing} in {workdir}; it has {sorted(curves)}')
    curves = {name: curves[name] for name in sets}
  if not curves:
    raise ValueError(f'no eval/<set>/psnr scalars in the event files of {workdir}')
  config = read_config(workdir)
  srresnet_steps = config.get('srresnet', {}).get('num_steps')
  last_step = max(int(curve[0][-1]) for set_curves in curves.values()
                  for curve in set_curves.values())
  # No line at step 0: a run of the SRGAN phase alone (srgan.init_from) says so in its title.
  srgan_from = (srresnet_steps if config.get('srgan', {}).get('num_steps')
                and srresnet_steps and srresnet_steps < last_step else None)
  baselines = bicubic_baselines(scalars, list(curves), config)
  title = pathlib.Path(workdir).name
  init_from = config.get('srgan', {}).get('init_from')
  if init_from and not srresnet_steps:
    title += f' (SRGAN phase from {pathlib.Path(init_from).name})'
  gan = gan_curves(scalars)
  if gan:  # Two rows: the learning curves, then the SRGAN phase.
    fig = figure.Figure(figsize=(11, 8.4), layout='constrained')
    top, bottom = fig.subfigures(2, 1)
    _draw_learning_curves(top, curves, baselines, title, srgan_from)
    def chosen(metric):
      return {name: curve for name, curve in metric_curves(scalars, metric).items()
              if not sets or name in sets}
    texture = {metric: found for metric in TEXTURE_METRICS if (found := chosen(metric))}
    plot_gan_curves(bottom, gan, chosen('niqe'), texture)
  else:
    fig = plot_learning_curves(curves, baselines, title=title, srgan_from=srgan_from)
  pathlib.Path(output).parent.mkdir(parents=True, exist_ok=True)
  figures.save_figure(fig, output, dpi=120)
  return fig
