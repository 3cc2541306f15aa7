"""conv_autotune.py: the modes select the weight gradient; 'auto' times each layer on
first use and keeps the verdict."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srgan_jax.nn import conv
from srgan_jax.nn import conv_autotune


def _uses_custom_vjp(mode, x_shape=(2, 8, 8, 4), kernel_shape=(3, 3, 4, 8)):
  """Whether conv.conv_general_dilated, traced under ``mode``, takes the custom VJP."""
  with conv_autotune.weight_gradient_mode(mode):
    jaxpr = jax.make_jaxpr(lambda x, w: conv.conv_general_dilated(
        x, w, (1, 1), 'SAME', dimension_numbers=conv.NHWC_DIMENSIONS))(
            jnp.zeros(x_shape), jnp.zeros(kernel_shape))
  return 'custom_vjp' in str(jaxpr)


def test_modes_select_the_weight_gradient():
  # conftest sets SRGAN_JAX_WEIGHT_GRADIENTS=rule.
  assert conv_autotune.weight_gradient_mode_now() == 'rule'
  assert _uses_custom_vjp('matmul')
  assert not _uses_custom_vjp('xla')
  with conv_autotune.weight_gradient_mode('xla'):
    assert conv_autotune.weight_gradient_mode_now() == 'xla'
  assert conv_autotune.weight_gradient_mode_now() == 'rule'  # Restored.
  with pytest.raises(ValueError, match='mode'):
    conv_autotune.set_weight_gradient_mode('fast')


@pytest.mark.parametrize('mode', ['auto', 'rule'])
def test_cpu_modes_are_off_outside_cpus(monkeypatch, mode):
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  monkeypatch.setattr(conv_autotune, 'time_weight_gradients', None)  # Nothing is timed.
  assert not _uses_custom_vjp(mode, (16, 48, 48, 64), (3, 3, 64, 256))


def test_rule_mode_on_cpu_for_the_upsampling_convolutions():
  """The layers where it measured faster on 2 Zen 3 cores (notes/PERFORMANCE.md)."""
  assert jax.default_backend() == 'cpu'
  assert _uses_custom_vjp('rule', (16, 48, 48, 64), (3, 3, 64, 256))
  assert not _uses_custom_vjp('rule', (16, 24, 24, 64), (3, 3, 64, 64))


def _gradient_uses_matmul(mode, x_shape, kernel_shape):
  """Whether the kernel's gradient is the matmul (a dot_general; XLA's is a convolution)."""
  x = jnp.zeros(x_shape)
  with conv_autotune.weight_gradient_mode(mode):
    jaxpr = jax.make_jaxpr(jax.grad(lambda w: conv.conv_general_dilated(
        x, w, (1, 1), 'SAME', dimension_numbers=conv.NHWC_DIMENSIONS).sum()))(
            jnp.zeros(kernel_shape))
  return 'dot_general' in str(jaxpr)


@pytest.fixture
def verdict_cache(monkeypatch, tmp_path):
  """An empty verdict cache in tmp_path, never the user's."""
  monkeypatch.setenv('SRGAN_JAX_CACHE', str(tmp_path))
  monkeypatch.setattr(conv_autotune, '_verdicts', {})
  return tmp_path / 'conv_weight_gradients.json'


def test_auto_mode_times_each_layer_once_and_keeps_the_verdict(monkeypatch, verdict_cache):
  timed = []

  def fake_timing(unused_gradients, x_shape, kernel_shape, *unused_args):
    timed.append((tuple(x_shape), tuple(kernel_shape)))
    # The widening layer: the matmul is twice as fast; the body: 5% faster, within
    # MATMUL_MARGIN, so XLA's is kept.
    return {'xla': 1.0, 'matmul': 0.5 if kernel_shape[3] > kernel_shape[2] else 0.95}

  monkeypatch.setattr(conv_autotune, 'time_weight_gradients', fake_timing)
  widening, body = ((2, 8, 8, 4), (3, 3, 4, 16)), ((2, 8, 8, 4), (3, 3, 4, 4))
  assert _uses_custom_vjp('auto', *widening)  # Forward only (inference): nothing timed.
  assert not timed
  assert _gradient_uses_matmul('auto', *widening)
  assert not _gradient_uses_matmul('auto', *body)
  assert _gradient_uses_matmul('auto', *widening)  # Known: not timed again.
  assert timed == [widening, body]
  assert _gradient_uses_matmul('matmul', *body) and not _gradient_uses_matmul('xla', *widening)
  saved = json.loads(verdict_cache.read_text())
  cpu = f'{conv_autotune.cpu_description()}; jax {jax.__version__}'
  assert list(saved) == [cpu]
  assert sorted(verdict['matmul'] for verdict in saved[cpu].values()) == [False, True]
  # A new process reads the file: nothing is timed.
  monkeypatch.setattr(conv_autotune, '_verdicts', {})
  monkeypatch.setattr(conv_autotune, 'time_weight_gradients', None)
  assert _gradient_uses_matmul('auto', *widening) and not _gradient_uses_matmul('auto', *body)


@pytest.mark.parametrize('content', ['[1, 2]', '{"cpu": [1]}', '{"cpu": {"layer": 3}}', '{"a'])
def test_a_damaged_verdict_cache_is_ignored_and_rewritten(monkeypatch, verdict_cache, content):
  """Before: a cache file holding [1, 2] raised AttributeError while tracing the step."""
  verdict_cache.write_text(content)
  monkeypatch.setattr(conv_autotune, 'time_weight_gradients',
                      lambda *unused_args: {'xla': 1.0, 'matmul': 0.5})
  assert _gradient_uses_matmul('auto', (2, 8, 8, 4), (3, 3, 4, 16))
  saved = json.loads(verdict_cache.read_text())
  cpu = f'{conv_autotune.cpu_description()}; jax {jax.__version__}'
  assert list(saved) == [cpu] and [v['matmul'] for v in saved[cpu].values()] == [True]


def test_auto_mode_times_real_calls_while_tracing(verdict_cache):
  """The timing runs in the middle of a trace (in a thread of its own)."""
  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 8))
  with conv_autotune.weight_gradient_mode('auto'):
    grad = jax.jit(jax.grad(lambda w: conv.conv_general_dilated(
        x, w, (1, 1), 'SAME', dimension_numbers=conv.NHWC_DIMENSIONS).sum()))(w)
  np.testing.assert_allclose(grad[1, 1, 0, 0], 2 * 8 * 8)
  (verdict,) = next(iter(json.loads(verdict_cache.read_text()).values())).values()
  assert verdict['xla_ms'] > 0 and verdict['matmul_ms'] > 0
