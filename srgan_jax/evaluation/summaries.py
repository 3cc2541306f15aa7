"""Where training's summaries go: TensorBoard event files, or JSON lines without tensorflow.

clu's writers write TensorBoard event files (``tensorboard --logdir``, ``srgan_jax.plot``),
but importing them imports tensorflow, and so does clu's progress hook. A machine
that has JAX but neither tensorflow nor tensorboard (an accelerator image, with
``pip install --no-deps -e .``) still trains, with ``data.source=device``. Its run
should leave the same record, readable without extra packages, so there:

- scalars go to ``WORKDIR/summaries.<start time>.jsonl``, one JSON object a line
  (``{"step": 100, "tag": "train/srresnet/loss", "value": 0.01}``), which
  ``srgan_jax.plot`` reads as it reads event files;
- images go to ``WORKDIR/summary_images/<tag>/<step>_<index>.png``;
- progress (steps/s) is logged and written as the ``steps_per_sec`` scalar, as clu's
  ``ReportProgress`` does, and ``profile_steps`` are traced with ``jax.profiler``.

One log line names the fallback when the run starts. A new file per start, as event
files are: a resumed run never rewrites what an earlier one wrote.
"""

import io
import json
import os
import time
from typing import Any, Callable, Mapping

from absl import logging
from etils import epath
import jax
import numpy as np
from PIL import Image

from srgan_jax.runtime import paths

SCALARS_GLOB = 'summaries.*.jsonl'
IMAGES_FOLDER = 'summary_images'
# What makes clu's writers unimportable, named in the fallback's log line.
TENSORBOARD_PACKAGES = 'tensorflow and tensorboard'


class JsonLinesWriter:
  """clu's ``MetricWriter`` methods that training uses, writing JSON lines and PNGs.

  ``just_logging`` (every process but the first) logs the scalars and writes nothing.
  """

  def __init__(self, workdir: str, just_logging: bool = False):
    self._workdir = epath.Path(workdir)
    self._just_logging = just_logging
    self._path = self._workdir / f'summaries.{time.time():.6f}.jsonl'
    self._pending: list[str] = []
    self._written: list[str] = []  # For remote workdirs, which cannot be appended to.

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    values = {tag: float(np.asarray(value)) for tag, value in scalars.items()}
    logging.info('[%d] %s', step, ', '.join(f'{tag}={value:.6g}' for tag, value in values.items()))
    self._pending += [json.dumps({'step': int(step), 'tag': tag, 'value': value}) + '\n'
                      for tag, value in values.items()]
    self.flush()  # A crash loses nothing already logged.

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    if self._just_logging:
      return
    for tag, batch in images.items():
      folder = self._workdir / IMAGES_FOLDER / tag.replace('/', '_')
      folder.mkdir(parents=True, exist_ok=True)
      for index, image in enumerate(np.asarray(batch)):
        if image.dtype != np.uint8:  # Floats in [0, 1], as TensorBoard takes them.
          image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
        png = io.BytesIO()
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(png, 'PNG')
        # Whole or not at all (paths.write_whole): a full disk leaves no half image.
        paths.write_whole(os.fspath(folder / f'{int(step)}_{index}.png'), png.getvalue())

  def flush(self) -> None:
    if self._just_logging or not self._pending:
      self._pending = []
      return
    if paths.is_remote(str(self._workdir)):  # Object stores rewrite whole files.
      self._written += self._pending
      self._path.write_text(''.join(self._written))
    else:
      with self._path.open('a') as file:
        file.write(''.join(self._pending))
    self._pending = []

  def close(self) -> None:
    self.flush()


class ProgressReporter:
  """Logs steps/s (and writes it as ``steps_per_sec``) every ``every_secs``: clu's
  ``ReportProgress``, for machines where clu's hooks cannot be imported."""

  def __init__(self, total_steps: int, writer: JsonLinesWriter, every_secs: float = 60.0):
    self._total_steps, self._writer, self._every_secs = total_steps, writer, every_secs
    self._last: tuple[int, float] | None = None

  def __call__(self, step: int) -> None:
    now = time.monotonic()
    if self._last is None:  # The first step includes compilation: time from after it.
      self._last = (step, now)
      return
    last_step, last_time = self._last
    if now - last_time < self._every_secs or step == last_step:
      return
    rate = (step - last_step) / (now - last_time)
    logging.info('Step %d of %d, %.3g steps/s, %.1f min left.', step, self._total_steps,
                 rate, (self._total_steps - step) / rate / 60)
    self._writer.write_scalars(step, {'steps_per_sec': rate})
    self._last = (step, now)


class Profiler:
  """One ``jax.profiler`` trace of ``steps`` steps from step ``first`` (clu's default),
  into the workdir: clu's ``Profile`` hook (which also repeats hourly), without clu's
  imports of tensorflow."""

  def __init__(self, workdir: str, steps: int, first: int = 10):
    self._workdir, self._steps, self._first = workdir, steps, first
    self._running = False

  def __call__(self, step: int) -> None:
    if step == self._first:
      jax.profiler.start_trace(self._workdir)
      self._running = True
    elif self._running and step >= self._first + self._steps:
      jax.profiler.stop_trace()
      self._running = False
      logging.info('Profile of steps %d-%d written to %s.', self._first + 1, step, self._workdir)


def create(workdir: str, total_steps: int, profile_steps: int,
           just_logging: bool) -> tuple[Any, list[Callable[[int], None]]]:
  """The run's summary writer and its per-step hooks (progress, and profiling when asked).

  clu's TensorBoard writer and hooks where tensorflow imports, else ``JsonLinesWriter``
  with ``ProgressReporter`` and ``Profiler``.
  """
  try:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    from clu import periodic_actions  # pylint: disable=g-import-not-at-top
  except ImportError:
    metric_writers = None
  if metric_writers:
    writer = metric_writers.create_default_writer(workdir, just_logging=just_logging)
    hooks = [periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)]
    if profile_steps and not just_logging:
      hooks.append(periodic_actions.Profile(num_profile_steps=profile_steps, logdir=workdir))
    return writer, hooks
  logging.warning('No TensorBoard summaries: clu\'s writer needs %s, not installed here; '
                  'scalars go to %s/%s (srgan_jax.plot reads them), images to %s/.',
                  TENSORBOARD_PACKAGES, workdir, SCALARS_GLOB, IMAGES_FOLDER)
  writer = JsonLinesWriter(workdir, just_logging=just_logging)
  hooks = [ProgressReporter(total_steps, writer)]
  if profile_steps and not just_logging:
    hooks.append(Profiler(workdir, profile_steps))
  return writer, hooks
