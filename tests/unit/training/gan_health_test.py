"""Tests for srgan_jax.training.gan_health: which stretches are warned about, once."""

from srgan_jax.training import gan_health

HEALTHY = {'discriminator_loss': 0.9, 'd_real': 0.7, 'd_fake': 0.3}
D_WINS = {'discriminator_loss': 0.01, 'd_real': 0.999, 'd_fake': 0.004}
AT_CHANCE = {'discriminator_loss': 1.39, 'd_real': 0.501, 'd_fake': 0.495}


def test_diagnose():
  assert gan_health.diagnose(HEALTHY) is None
  assert gan_health.diagnose(D_WINS) == 'discriminator wins'
  assert gan_health.diagnose(AT_CHANCE) == 'discriminator at chance'
  # At chance by the loss alone is not enough: D(real) and D(fake) must agree too.
  assert gan_health.diagnose({**AT_CHANCE, 'd_real': 0.6, 'd_fake': 0.4}) is None


def test_a_sustained_stretch_is_warned_once_with_its_start():
  health = gan_health.GanHealth(patience=3)
  summaries = [HEALTHY, D_WINS, D_WINS, HEALTHY, D_WINS, D_WINS, D_WINS, D_WINS, D_WINS,
               AT_CHANCE, AT_CHANCE, AT_CHANCE]
  warned = [(step, message) for step, summary in enumerate(summaries, start=1)
            if (message := health.check(step * 100, summary))]
  # The first stretch (2 summaries) is too short; the second is warned once, at its
  # third summary, naming its first step; then the stretch at chance.
  assert [step for step, _ in warned] == [7, 12]
  assert 'discriminator wins since step 500' in warned[0][1]
  assert 'discriminator at chance since step 1000' in warned[1][1]
  assert health.warnings == [message for _, message in warned]


def test_texture_painted_on_flat_regions_is_warned_once_per_stretch():
  health = gan_health.GanHealth()
  limit = gan_health.FLAT_TEXTURE_LIMIT
  calm = {'Set5': {'psnr': 27.0, 'flat_texture': limit - 0.01},
          'Set14': {'psnr': 25.0, 'flat_texture': float('nan')}}  # NaN: no flat pixels.
  painted = {'Set5': {'psnr': 27.0, 'flat_texture': limit - 0.01},
             'Set14': {'psnr': 25.0, 'flat_texture': 3.43}}
  unmeasured = {'Set5': {'psnr': 27.0}, 'Set14': {'error': 'not scored'}}
  evaluations = [calm, unmeasured, painted, painted, calm, painted]
  warned = [(step, message) for step, results in enumerate(evaluations, start=1)
            if (message := health.check_evaluation(step * 500, results))]
  # Warned when it first passes the limit, not again while it stays over; again once
  # it has been under it.
  assert [step for step, _ in warned] == [3, 6]
  assert 'at step 1500' in warned[0][1] and '(Set14 3.43)' in warned[0][1]
  assert 'Set5' not in warned[0][1]
  assert health.warnings == [message for _, message in warned]
