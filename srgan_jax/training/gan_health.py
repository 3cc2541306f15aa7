"""GAN health: one warning when one network wins outright for a sustained stretch.

The training loop passes each logged summary of the SRGAN phase (means over the
last ``log_every_steps`` steps) to ``GanHealth.check``. Two failures are named:

* the discriminator wins outright: its loss stays below ``D_WINS_LOSS`` (it tells
  every SR image from HR with near certainty), so the adversarial gradient G gets is
  that of a saturated classifier, which usually puts noise into G's output;
* the discriminator is at chance: its loss stays within ``CHANCE_TOLERANCE`` of
  2 ln 2 (what a D that cannot tell SR from HR scores) and D(real) ~ D(fake), so
  the adversarial loss no longer guides G.

Each is warned about once per stretch of ``PATIENCE`` consecutive summaries, with
the step it started at; a healthy summary ends the stretch.

The loop also passes each evaluation of the SRGAN phase to ``GanHealth.check_evaluation``:
when an evaluation set's ``flat_texture`` (``evaluation/named_metrics``: SR's luma
Laplacian over HR's where the photograph is flat) exceeds ``FLAT_TEXTURE_LIMIT``,
G paints texture the photographs do not have, which NIQE rewards; warned about once,
until every set is back under the limit. Only when ``config.eval_metrics`` has it.
"""

import math
from typing import Mapping

from absl import logging

D_WINS_LOSS = 0.05
CHANCE_LOSS = 2 * math.log(2)
CHANCE_TOLERANCE = 0.05  # Relative, of CHANCE_LOSS.
CHANCE_GAP = 0.02  # Most |D(real) - D(fake)| at chance.
PATIENCE = 3  # Consecutive summaries.
# Half as much again as the photograph's texture where it is flat: the bound issue 35
# sets for a shipped GAN. Blur keeps cpu_small and bicubic below 1, while the
# visible crosshatch of the cpu_small_gan shipped before it was above 1.5 on Set5,
# Set14 and BSD100 (notes/CONFIG_RESULTS.md, "Texture where the photograph is flat").
FLAT_TEXTURE_LIMIT = 1.5


def diagnose(summary: Mapping[str, float]) -> str | None:
  """'discriminator wins', 'discriminator at chance', or None for one summary with
  ``discriminator_loss``, ``d_real`` and ``d_fake``."""
  loss = summary['discriminator_loss']
  if loss < D_WINS_LOSS:
    return 'discriminator wins'
  if (abs(loss - CHANCE_LOSS) < CHANCE_TOLERANCE * CHANCE_LOSS
      and abs(summary['d_real'] - summary['d_fake']) < CHANCE_GAP):
    return 'discriminator at chance'
  return None


_ADVICE = {
    'discriminator wins': ('G gets the gradient of a saturated classifier, which tends to '
                           'add noise; try a lower srgan.discriminator_learning_rate, a '
                           'smaller discriminator, a stronger content loss, or (with the '
                           "standard loss) srgan.gan_loss='relativistic'"),
    'discriminator at chance': ('it no longer tells SR from HR, so the adversarial loss '
                                'does not guide G; try a larger discriminator or a higher '
                                'srgan.adversarial_weight'),
}


class GanHealth:
  """Watches the SRGAN phase's logged summaries and evaluations; warns once per
  unhealthy stretch."""

  def __init__(self, patience: int = PATIENCE):
    self._patience = patience
    self._state: str | None = None
    self._since = 0
    self._count = 0
    self.warnings: list[str] = []  # What was warned, for tests and callers.
    self._texture_warned = False

  def check(self, step: int, summary: Mapping[str, float]) -> str | None:
    """Records one summary (logged at ``step``); returns the warning if one is due."""
    state = diagnose(summary)
    if state != self._state:
      self._state, self._since, self._count = state, step, 0
    self._count += 1
    if state is None or self._count != self._patience:
      return None
    message = (f'SRGAN: {state} since step {self._since} (D loss '
               f'{summary["discriminator_loss"]:.3f}, D(real) {summary["d_real"]:.3f}, '
               f'D(fake) {summary["d_fake"]:.3f}): {_ADVICE[state]}.')
    logging.warning('%s', message)
    self.warnings.append(message)
    return message

  def check_evaluation(self, step: int, results: Mapping[str, Mapping[str, object]]
                       ) -> str | None:
    """Records one evaluation (``evaluation/during_training``'s results by set, at
    ``step``); returns the warning if the flat-region texture just passed the limit."""
    over = {name: result['flat_texture'] for name, result in results.items()
            if isinstance(result.get('flat_texture'), float)
            and result['flat_texture'] > FLAT_TEXTURE_LIMIT}  # NaN is never over.
    if not over:
      self._texture_warned = False
      return None
    if self._texture_warned:
      return None
    self._texture_warned = True
    sets = ', '.join(f'{name} {value:.2f}' for name, value in over.items())
    message = (f'SRGAN: at step {step}, texture where the photographs are flat is over '
               f'{FLAT_TEXTURE_LIMIT}x theirs ({sets}): G paints a grain they do not '
               'have, which NIQE rewards; try an earlier checkpoint, a lower '
               'srgan.adversarial_weight or srgan.discriminator_learning_rate.')
    logging.warning('%s', message)
    self.warnings.append(message)
    return message
