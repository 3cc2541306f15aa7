"""The evaluation that training runs every ``config.eval_every_steps`` steps.

An evaluator in big_vision's sense: built once from the config, then ``run`` with the
current generator as an upscaler (``upscalers.generator``; the evaluator builds no
model); it scores ``config.eval_folders`` by the benchmark conventions (``scoring``),
writes the scores beside the bicubic baseline's to the metric writer (TensorBoard and
``srgan_jax.plot`` read them) and returns them.
"""

import dataclasses
from typing import Any, TYPE_CHECKING

from absl import logging
from etils import epath
import jax
import ml_collections

from srgan_jax.evaluation import named_metrics
from srgan_jax.evaluation import results_table
from srgan_jax.evaluation import scoring
from srgan_jax.nn import upscalers
from srgan_jax.runtime import distributed

if TYPE_CHECKING:  # clu's writers import tensorflow.
  from clu import metric_writers  # pylint: disable=g-bad-import-order


def existing_eval_folders(config: ml_collections.ConfigDict) -> list[str]:
  """The evaluation folders that exist (the benchmark sets are optional).

  All hosts evaluate the same folders, those that every host has (otherwise they
  would run different programs and wait for each other forever); every process
  must call this.
  """
  present = distributed.on_every_process(  # Folders, or single image files.
      [epath.Path(folder).exists() for folder in config.eval_folders])
  return [folder for folder, ok in zip(config.eval_folders, present) if ok]


class TrainingEvaluator:
  """Scores the generator being trained on the config's evaluation sets.

  PSNR/SSIM (Y channel, MATLAB conventions) and ``config.eval_metrics`` (NIQE,
  LPIPS), on the folders (or single image files) of ``config.eval_folders`` that
  every host has; absent ones are named once, when the evaluator is built. Every
  process builds it and runs it at the same steps (the scoring is data-parallel).
  """

  def __init__(self, config: ml_collections.ConfigDict,
               writer: 'metric_writers.MetricWriter'):
    self._config = config
    self._writer = writer
    self._folders = existing_eval_folders(config)
    self._metric_fns = named_metrics.metric_fns(config.eval_metrics, config.scale)
    self._baselines: dict[str, dict[str, Any]] = {}  # Bicubic's scores, by set name.
    missing = sorted(set(config.eval_folders) - set(self._folders))
    if missing:
      logging.warning('Evaluation set(s) not found (on this host or another), training '
                      'without evaluating on them: %s '
                      '(set $SRGAN_DATASETS or --config.eval_folders; see the README\'s '
                      '"Image sets").', ', '.join(missing))

  def _bicubic_baselines(self, folders: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The bicubic baseline's scores on each of ``folders`` (by set name), each computed
    once per run: the sets stay the same while training."""
    for name, folder in folders.items():
      if name not in self._baselines:
        self._baselines[name] = scoring.evaluate_folder(
            upscalers.bicubic(self._config.scale), folder, metric_fns=self._metric_fns)
    return {name: self._baselines[name] for name in folders}

  def run(self, upscaler: upscalers.Upscaler, step: int, final: bool = False
          ) -> dict[str, Any]:
    """Scores the generator at ``step`` and writes the scalars and sample images.

    Args:
      upscaler: the generator being trained (``upscalers.generator`` of its
        evaluation variables).
      step: the global step the scores are written at.
      final: also print a table beside bicubic's (process 0).

    Returns:
      ``scoring.evaluate_sets``'s results, keyed by set name.
    """
    config = self._config
    samples = []

    def upscale_and_keep(lr):
      sr = upscaler.upscale_batch(lr)
      samples.extend(sr[:config.num_summary_images - len(samples)])
      return sr

    results = scoring.evaluate_sets(dataclasses.replace(upscaler, batch_fn=upscale_and_keep),
                                    self._folders, metric_fns=self._metric_fns)
    scored = {name: folder for name, folder in zip(results, self._folders)
              if 'error' not in results[name]}  # A set that could not be scored is skipped.
    # The bicubic baseline too, as a flat line beside each curve in TensorBoard and in
    # srgan_jax.plot.
    baselines = self._bicubic_baselines(scored)
    self._writer.write_scalars(step, {
        f'eval/{name}/{prefix}{metric}': value
        for source, prefix in ((results, ''), (baselines, 'bicubic_'))
        for name, result in source.items() if name in scored
        for metric, value in result.items()
        if metric in (*named_metrics.ALWAYS_COMPUTED, *self._metric_fns)})
    for name in scored:
      logging.info('step %d, %s: SR - HR per channel (R, G, B) %s grey levels', step, name,
                   ', '.join(f'{b:+.2f}' for b in results[name]['bias']))
    if final and scored and jax.process_index() == 0:
      for name in scored:
        results[name]['bicubic'] = {key: value for key, value in baselines[name].items()
                                    if key not in ('images', 'failed', 'bias')}
      print(f'Step {step}, this generator against bicubic interpolation:\n'
            f'{results_table.format_table(results)}', flush=True)
    if samples:
      self._writer.write_images(
          step, {f'eval/sample{i}': sample[None] for i, sample in enumerate(samples)})
    return results
