"""Tests for srgan_jax.vgg19: features against Keras and torch, the weights file, the CLI."""

import os
import subprocess
import sys

os.environ.setdefault('KERAS_BACKEND', 'tensorflow')

import h5py  # pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
import conftest
from conftest import REPO
from srgan_jax.nn import vgg19


# relu{i}_{j} outputs of Keras' VGG19 are its block{i}_conv{j} layers (ReLU built in).
RELU_LAYERS = ('relu1_2', 'relu2_2', 'relu3_4', 'relu4_4', 'relu5_4')
def relative_error(actual, expected) -> float:
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@pytest.fixture(scope='module')
def images() -> np.ndarray:
  return np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)


@pytest.fixture(scope='module')
def keras_model():
  """Keras' VGG19 with He-scaled random kernels and nonzero biases (weights=None has zeros)."""
  model = keras.applications.VGG19(include_top=False, weights=None)
  rng = np.random.default_rng(1)
  for layer in model.layers:
    if layer.get_weights():
      kernel, bias = layer.get_weights()
      fan_in = np.prod(kernel.shape[:3])
      layer.set_weights([rng.normal(0, np.sqrt(2 / fan_in), kernel.shape).astype(np.float32),
                         rng.normal(0, 0.1, bias.shape).astype(np.float32)])
  return model


@pytest.fixture(scope='module')
def keras_params(keras_model):
  return vgg19.params_from_keras(keras_model)


def test_matches_keras_relu_outputs(keras_model, keras_params, images):
  names = [f'block{name[4]}_conv{name[6]}' for name in RELU_LAYERS]
  extractor = keras.Model(keras_model.input, [keras_model.get_layer(n).output for n in names])
  expected = extractor(keras.applications.vgg19.preprocess_input((images + 1) * 127.5))
  actual = vgg19.features(keras_params, images, RELU_LAYERS, preprocessing='caffe')
  for name, want in zip(RELU_LAYERS, expected):
    want = np.asarray(want)
    assert actual[name].shape == want.shape
    error = relative_error(actual[name], want)
    print(f'keras {name}: relative error {error:.2e}')
    assert error <= 1e-4, name


def test_matches_keras_pre_relu_outputs(keras_model, keras_params, images):
  """conv{i}_{j} is the Keras layer's convolution without its ReLU, applied to its input."""
  caffe_input = keras.applications.vgg19.preprocess_input((images + 1) * 127.5)
  inputs = {'conv1_1': caffe_input}
  for conv, previous in (('conv2_2', 'block2_conv1'), ('conv5_4', 'block5_conv3')):
    extractor = keras.Model(keras_model.input, keras_model.get_layer(previous).output)
    inputs[conv] = extractor(caffe_input)
  actual = vgg19.features(keras_params, images, tuple(inputs), preprocessing='caffe')
  for name, layer_input in inputs.items():
    kernel, bias = keras_model.get_layer(f'block{name[4]}_conv{name[6]}').get_weights()
    want = np.asarray(keras.ops.conv(layer_input, kernel, padding='same')) + bias
    assert np.min(want) < 0  # The ReLU is really left out.
    error = relative_error(actual[name], want)
    print(f'keras {name}: relative error {error:.2e}')
    assert error <= 1e-4, name


def test_matches_torch(images):
  torch, model = conftest.torch_vgg19()
  params = vgg19.params_from_torch_state_dict(model.state_dict())
  mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
  std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
  x = (torch.from_numpy(images).permute(0, 3, 1, 2) + 1) / 2
  x = (x - mean) / std
  expected, block, conv = {}, 1, 0
  with torch.no_grad():
    for layer in model.features:
      x = layer(x)
      if isinstance(layer, torch.nn.MaxPool2d):
        block, conv = block + 1, 0
      elif isinstance(layer, torch.nn.Conv2d):
        conv += 1
        expected[f'conv{block}_{conv}'] = x.permute(0, 2, 3, 1).numpy()
      else:
        expected[f'relu{block}_{conv}'] = x.permute(0, 2, 3, 1).numpy()
  names = ('conv1_1', 'relu1_2', 'conv2_2', 'relu2_2', 'relu3_4', 'relu4_4', 'conv5_4',
           'relu5_4')
  actual = vgg19.features(params, images, names, preprocessing='torch')
  for name in names:
    error = relative_error(actual[name], expected[name])
    print(f'torch {name}: relative error {error:.2e}')
    assert error <= 1e-4, name


def test_computes_only_up_to_deepest_output(keras_params, images):
  variables = jax.eval_shape(
      lambda: vgg19.VGG19().init(jax.random.key(0), images, ['relu2_2', 'conv1_2']))
  assert list(variables['params']) == ['conv1_1', 'conv1_2', 'conv2_1', 'conv2_2']
  jaxpr = jax.make_jaxpr(lambda p, x: vgg19.features(p, x, ['relu2_2']))(keras_params, images)
  assert str(jaxpr).count('conv_general_dilated') == 4


@pytest.mark.parametrize('outputs', [['relu6_1'], ['relu2_3'], ['pool1'], 'relu2_2', []])
def test_rejects_unknown_outputs(keras_params, images, outputs):
  with pytest.raises(ValueError):
    vgg19.features(keras_params, images, outputs)


def test_rejects_unknown_preprocessing(keras_params, images):
  with pytest.raises(ValueError, match='preprocessing'):
    vgg19.features(keras_params, images, ['relu1_1'], preprocessing='rgb')


def test_bfloat16_compute_float32_params(keras_params, images):
  images = images[:1, :16, :16]  # bfloat16 convolutions are slow on CPU.
  variables = jax.eval_shape(
      lambda: vgg19.VGG19(dtype=jnp.bfloat16).init(jax.random.key(0), images, ['relu5_4']))
  assert {p.dtype for p in jax.tree_util.tree_leaves(variables)} == {jnp.dtype(jnp.float32)}
  full = vgg19.features(keras_params, images, ['relu5_4'])['relu5_4']
  half = vgg19.features(keras_params, images, ['relu5_4'], dtype=jnp.bfloat16)['relu5_4']
  error = relative_error(half, full)
  print(f'bfloat16 relu5_4: relative error {error:.2e}')
  assert 0 < error < 0.05


def test_gradients_reach_input_not_params(keras_params, images):
  def loss(params, x):
    return jnp.mean(vgg19.features(params, x, ['relu2_2'])['relu2_2'] ** 2)

  params_grad, input_grad = jax.grad(loss, argnums=(0, 1))(keras_params, images[:1])
  assert np.all(np.isfinite(input_grad)) and np.any(input_grad != 0)
  assert all(not np.any(g) for g in jax.tree_util.tree_leaves(params_grad))


def test_save_load_round_trip(keras_params, tmp_path):
  path = str(tmp_path / 'sub' / 'vgg19.npz')
  vgg19.save_params(path, keras_params, 'torch')
  params, preprocessing = vgg19.load_params(path)
  assert preprocessing == 'torch'
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, keras_params)


def test_default_path_follows_environment(keras_params, tmp_path, monkeypatch):
  monkeypatch.setenv('SRGAN_JAX_CACHE', str(tmp_path))
  assert vgg19.default_path() == str(tmp_path / 'vgg19.npz')
  with pytest.raises(vgg19.VGG19WeightsNotFoundError) as error:
    vgg19.load_params()
  assert str(error.value).endswith(
      f'with: {vgg19.IMPORT_COMMAND} (or --source=PATH.h5 / --source=PATH.pth offline; '
      'see srgan_jax/nn/vgg19.py)')
  vgg19.save_params(vgg19.default_path(), keras_params, 'caffe')
  assert vgg19.load_params()[1] == 'caffe'


def test_missing_file_names_import_command(tmp_path):
  path = str(tmp_path / 'absent.npz')
  with pytest.raises(FileNotFoundError) as error:
    vgg19.load_params(path)
  assert isinstance(error.value, vgg19.VGG19WeightsError)
  assert path in str(error.value)
  assert f'python -m srgan_jax.vgg19 import --source=keras --output={path}' in str(error.value)


def _flat(params):
  return {f'{layer}/{kind}': v for layer, kinds in params.items() for kind, v in kinds.items()}


@pytest.mark.parametrize('change, problem', [
    (lambda a: a.update({'conv3_1/kernel': np.zeros((3, 3, 128, 128), np.float32)}),
     'conv3_1/kernel has shape (3, 3, 128, 128), expected (3, 3, 128, 256)'),
    (lambda a: a.pop('conv5_4/bias'), 'missing conv5_4/bias'),
    (lambda a: [a.pop('conv5_4/kernel'), a.pop('conv5_4/bias')], 'missing layer conv5_4'),
    (lambda a: a.update({'fc6/kernel': np.zeros(1)}), "unexpected layers ['fc6']"),
    (lambda a: a.pop('preprocessing'), "preprocessing 'missing'"),
])
def test_malformed_file_is_a_clear_error(keras_params, tmp_path, change, problem):
  path = str(tmp_path / 'vgg19.npz')
  arrays = dict(_flat(keras_params), preprocessing=np.array('caffe'))
  change(arrays)
  np.savez(path, **arrays)
  with pytest.raises(ValueError) as error:
    vgg19.load_params(path)
  assert isinstance(error.value, vgg19.VGG19WeightsInvalidError)
  message = str(error.value)
  assert problem in message and path in message
  assert f'{vgg19.IMPORT_COMMAND} --output={path}' in message


def test_unreadable_file_is_a_clear_error(tmp_path):
  path = tmp_path / 'vgg19.npz'
  path.write_bytes(b'not a zip file')
  with pytest.raises(vgg19.VGG19WeightsInvalidError, match='cannot read VGG19 weights'):
    vgg19.load_params(str(path))


def test_save_rejects_bad_trees(keras_params, tmp_path):
  path = str(tmp_path / 'vgg19.npz')
  with pytest.raises(vgg19.VGG19WeightsInvalidError, match='preprocessing'):
    vgg19.save_params(path, keras_params, 'bgr')
  with pytest.raises(vgg19.VGG19WeightsInvalidError, match='missing layer conv1_1'):
    vgg19.save_params(path, {k: v for k, v in keras_params.items() if k != 'conv1_1'}, 'caffe')
  assert not os.path.exists(path)


def _write_legacy_h5(model, path):
  """Weights in the legacy Keras HDF5 layout of Keras' downloaded VGG19 file."""
  layers = [layer for layer in model.layers if layer.get_weights()]
  with h5py.File(path, 'w') as f:
    f.attrs['layer_names'] = [layer.name.encode() for layer in layers]
    for layer in layers:
      group = f.create_group(layer.name)
      names = [f'{layer.name}_W_1:0', f'{layer.name}_b_1:0']
      group.attrs['weight_names'] = [name.encode() for name in names]
      for name, value in zip(names, layer.get_weights()):
        group.create_dataset(name, data=value)


@pytest.mark.system
def test_cli_imports_legacy_h5_to_default_cache(keras_model, keras_params, tmp_path, monkeypatch):
  source = tmp_path / 'vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5'
  _write_legacy_h5(keras_model, source)
  cache = tmp_path / 'cache'
  env = dict(os.environ, SRGAN_JAX_CACHE=str(cache), KERAS_BACKEND='tensorflow',
             PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))
  result = subprocess.run(
      [sys.executable, '-m', 'srgan_jax.vgg19', 'import', f'--source={source}'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  monkeypatch.setenv('SRGAN_JAX_CACHE', str(cache))
  params, preprocessing = vgg19.load_params()
  assert preprocessing == 'caffe'
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, keras_params)


def test_import_keras_weights_h5(keras_model, keras_params, tmp_path):
  source = str(tmp_path / 'vgg19.weights.h5')
  keras_model.save_weights(source)
  output = vgg19.import_weights(source, str(tmp_path / 'out.npz'))
  params, preprocessing = vgg19.load_params(output)
  assert preprocessing == 'caffe'
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, keras_params)


def test_import_torch_state_dict(tmp_path):
  torch, model = conftest.torch_vgg19()
  source = str(tmp_path / 'vgg19.pth')
  torch.save(model.state_dict(), source)
  params, preprocessing = vgg19.load_params(
      vgg19.import_weights(source, str(tmp_path / 'out.npz')))
  assert preprocessing == 'torch'
  np.testing.assert_array_equal(params['conv4_2']['kernel'],
                                model.features[21].weight.detach().numpy().transpose(2, 3, 1, 0))


def test_torch_state_dict_missing_layer():
  with pytest.raises(vgg19.VGG19WeightsInvalidError, match='features.34.weight'):
    vgg19.params_from_torch_state_dict(
        {f'features.{i}.{kind}': np.zeros(1) for i in range(34) for kind in ('weight', 'bias')})


def test_torch_state_dict_wrong_shape():
  with pytest.raises(vgg19.VGG19WeightsInvalidError, match=r'conv1_1/kernel has shape \(1,\)'):
    vgg19.params_from_torch_state_dict(
        {f'features.{i}.{kind}': np.zeros(1) for i in range(35) for kind in ('weight', 'bias')})


@pytest.mark.system
def test_import_does_not_load_heavy_frameworks():
  code = ('import sys, srgan_jax.vgg19; '
          'loaded = {"tensorflow", "keras", "torch"} & set(sys.modules); assert not loaded, loaded')
  subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True, timeout=120,
                 env=dict(os.environ, PYTHONPATH=str(REPO)))


# One layout: the training after the import is the same for both, and each layout's
# import is tested above (test_import_keras_weights_h5, test_import_torch_state_dict).
@pytest.mark.parametrize('layout', ['torchvision'])
def test_srgan_vgg54_end_to_end(layout, keras_model, tmp_path):
  """The paper's SRGAN-VGG54 path with a weight file in a layout users import
  (random values: the real ones cannot be downloaded here): import, train SRResNet
  then SRGAN steps with the relu5_4 content loss, evaluate the result."""
  from conftest import tiny_run_config, write_tiny_image_sets  # pylint: disable=g-import-not-at-top
  from srgan_jax.evaluation import scoring  # pylint: disable=g-import-not-at-top
  from srgan_jax.nn import upscalers  # pylint: disable=g-import-not-at-top
  from srgan_jax.training import checkpointing, config_rules, loop  # pylint: disable=g-import-not-at-top
  if layout == 'keras':
    source = tmp_path / 'vgg19.weights.h5'
    keras_model.save_weights(str(source))
  else:
    torch, model = conftest.torch_vgg19()
    source = tmp_path / 'vgg19.pth'
    torch.save(model.state_dict(), source)
  weights = vgg19.import_weights(str(source), str(tmp_path / 'vgg19.npz'))
  write_tiny_image_sets(tmp_path)
  config = tiny_run_config(tmp_path, srresnet_steps=2, srgan_steps=8)
  config.srgan.content_loss, config.srgan.vgg_weights = 'vgg54', str(weights)
  config_rules.validate(config)
  workdir = str(tmp_path / 'run')
  loop.train_and_evaluate(config, workdir)
  results = scoring.evaluate_beside_bicubic(
      upscalers.generator(*checkpointing.load_generator(workdir)[:2]),
      [str(tmp_path / 'eval')])['eval']
  assert results['images'] == 2 and np.isfinite(results['psnr']), results
  from srgan_jax.evaluation import curves  # pylint: disable=g-import-not-at-top
  content = curves.read_scalars(workdir)['train/srgan/content_loss'][1]
  assert len(content) == 4 and np.all(np.isfinite(content)) and np.all(content > 0), content
