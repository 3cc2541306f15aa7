"""exports.py: generators written as StableHLO, ONNX and PyTorch files, run in their own
runtimes on odd sizes and batches and compared with JAX; altered or cut files refused."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srgan_jax.inference import exports
from srgan_jax.nn import models
from srgan_jax.nn import pretrained
from srgan_jax.training import model_reference

# Paper-size generators are slow on CPU: small odd sizes, two batch sizes.
SMALL_SIZES = ((2, 13, 11), (1, 7, 18))


def _needs(fmt: str) -> None:
  missing = exports.missing_packages(fmt)
  if missing:
    pytest.skip(f'{", ".join(missing)} not installed ({exports.extra_hint(fmt)})')


def _random_generator(**options):
  """A generator with random weights (BatchNorm statistics too, when it has them)."""
  model = models.SRResNet(**options)
  variables = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 8, 8, 3)))
  if 'batch_stats' in variables:  # Not the identity of a fresh model.
    leaves, tree = jax.tree_util.tree_flatten(variables['batch_stats'])
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    variables = {**variables, 'batch_stats': jax.tree_util.tree_unflatten(
        tree, [leaf + 0.1 * jnp.abs(jax.random.normal(k, leaf.shape))
               for leaf, k in zip(leaves, keys)])}
  return model, variables


GENERATORS = {
    'paper': dict(),  # 16 blocks x 64, BatchNorm, no skip.
    'cpu_small shape, bicubic skip': dict(num_blocks=8, features=32, upsample_features=128,
                                          batch_norm=False, bicubic_skip=True),
    'chroma from bicubic, tanh, x2': dict(num_blocks=2, features=16, upsample_features=64,
                                          scale=2, chroma_from_bicubic=True,
                                          output_activation='tanh'),
}


@pytest.mark.parametrize('fmt', exports.FORMATS)
@pytest.mark.parametrize('options', GENERATORS.values(), ids=GENERATORS.keys())
def test_random_generator_export_runs_in_its_runtime_as_in_jax(tmp_path, fmt, options):
  _needs(fmt)
  model, variables = _random_generator(**options)
  function = exports.unit_range_function(model, variables)
  path = tmp_path / f'g.{fmt}'
  exports._WRITERS[fmt](model, variables, path)  # pylint: disable=protected-access
  line = exports.verify(path, fmt, function, SMALL_SIZES)
  assert line.startswith('verified in ') and '11x13 and 18x7' in line
  # Independently of verify: the runtime's output against the model's own (other
  # pixels, a size verify used: compiled programs are reused).
  run, _ = exports._RUNNERS[fmt](path)  # pylint: disable=protected-access
  x = np.random.default_rng(5).uniform(0, 1, (2, 13, 11, 3)).astype(np.float32)
  expected = (np.asarray(jax.jit(model.apply)(variables, x)) + 1) / 2
  got = run(x)
  assert got.shape == (2, 13 * model.scale, 11 * model.scale, 3)
  np.testing.assert_allclose(got, expected, atol=exports.TOLERANCES[fmt] *
                             max(1.0, np.abs(expected).max()), rtol=0)


@pytest.mark.parametrize('fmt', exports.FORMATS)
# cpu_small_gan: bicubic skip and chroma from bicubic (cpu_small's skip alone is the
# random 'cpu_small shape' above; each export costs seconds).
@pytest.mark.parametrize('name', ['cpu_small_gan'])
def test_shipped_model_export_is_verified_with_its_card(tmp_path, fmt, name):
  _needs(fmt)
  model, variables, config = pretrained.load(name)
  path = tmp_path / f'{name}.{fmt}'
  line = exports.export(model, variables, config, fmt, str(path), source=name,
                        record=pretrained.describe(name))
  assert line.startswith('verified in ') and '67x45 and 128x96' in line
  card = json.loads((tmp_path / f'{name}.{fmt}.json').read_text())
  assert card['verification'] == line and card['scale'] == 4
  assert card['shipped_scores']['Set5']['psnr'] == pretrained.describe(name)['scores']['Set5']['psnr']
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, f'{path.name}.json'])


@pytest.mark.parametrize('fmt', exports.FORMATS)
def test_altered_or_truncated_export_is_refused(tmp_path, fmt):
  _needs(fmt)
  model, variables, _ = pretrained.load('cpu_small')
  function = exports.unit_range_function(model, variables)
  # Another model's file: tail bias moved by 1e-3 (5e-4 of the [0, 1] output).
  altered = jax.tree_util.tree_map(lambda x: x, variables)
  altered['params']['tail_conv']['bias'] = altered['params']['tail_conv']['bias'] + 1e-3
  path = tmp_path / 'altered'
  exports._WRITERS[fmt](model, altered, path)  # pylint: disable=protected-access
  with pytest.raises(exports.ExportError, match=r'differs from JAX .* max \|difference\| [45]\.\de-04'):
    exports.verify(path, fmt, function, SMALL_SIZES)
  exports._WRITERS[fmt](model, variables, path)  # pylint: disable=protected-access
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])  # (Whole, it passes:
  # test_shipped_model_export_is_verified_with_its_card.)
  with pytest.raises(exports.ExportError, match='the .* runtime could not run the export'):
    exports.verify(path, fmt, function, SMALL_SIZES)


def test_failed_verification_leaves_no_file(tmp_path, monkeypatch):
  monkeypatch.setitem(exports.TOLERANCES, 'stablehlo', -1.0)  # Nothing passes.
  model, variables, config = pretrained.load('cpu_small')
  with pytest.raises(exports.ExportError, match=r'/g\.stablehlo differs from JAX'):
    exports.export(model, variables, config, 'stablehlo', str(tmp_path / 'g.stablehlo'),
                   source='cpu_small', sizes=SMALL_SIZES)
  assert not list(tmp_path.iterdir())


@pytest.mark.parametrize('fmt, extra', [('onnx', 'export'), ('litert', 'litert'),
                                         ('torch', 'torch')])
def test_missing_packages_name_the_extra(monkeypatch, fmt, extra):
  monkeypatch.setitem(exports._PACKAGES, fmt, {'no_such_module_x': 'no-such-package'})  # pylint: disable=protected-access
  with pytest.raises(exports.ExportError, match=rf'--format={fmt} needs no-such-package: '
                     rf'pip install -e "\.\[{extra}\]"'):
    exports.check_packages(fmt)


def test_training_run_export_is_its_generator(tmp_path, tiny_run):
  """A workdir's generator (the paper's BatchNorm, EMA weights), as the command loads it."""
  workdir, _ = tiny_run
  reference = model_reference.from_flags(model_reference.WORKDIR, str(workdir))
  model, variables, config = model_reference.load(reference)
  line = exports.export(model, variables, config, 'stablehlo', str(tmp_path / 'run.stablehlo'),
                        source=str(reference), sizes=SMALL_SIZES)
  assert line.startswith('verified in jax.export')
  card = json.loads((tmp_path / 'run.stablehlo.json').read_text())
  assert card['source'] == str(workdir) and card['shipped_scores'] == {}
  assert card['config']['generator']['batch_norm'] is True
