"""Tests for srgan_jax.lpips: distances against the reference `lpips` package, the weights file.

The reference is the `lpips` package's own LPIPS code and linear weights, on a random
backbone (``pnet_rand=True``). It imports torchvision, whose PyPI builds do not load
beside a CPU build of torch; it only needs ``torchvision.models.alexnet/vgg16`` to
return modules with torchvision's ``features`` layout, so the test puts a stand-in
``torchvision`` with that layout (written out here, independently of srgan_jax)
in ``sys.modules`` before importing it.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

from conftest import REPO, image_set
from srgan_jax.imaging import bicubic
from srgan_jax.imaging import degradation
from srgan_jax.imaging import image_io
from srgan_jax.nn import lpips
from srgan_jax.runtime import errors

torch = pytest.importorskip('torch', reason='torch is not installed')
# torchvision's vgg16 'D' configuration.
VGG16_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M',
             512, 512, 512, 'M')


def _alexnet(pretrained=False, **unused_kwargs):
  """torchvision's ``alexnet()`` as far as LPIPS reads it: ``features``."""
  assert not pretrained, 'the stand-in has no pretrained weights'
  nn = torch.nn
  model = nn.Module()
  model.features = nn.Sequential(
      nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2),
      nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2),
      nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
      nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
      nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2))
  BACKBONES.append(model)
  return model


def _vgg16(pretrained=False, **unused_kwargs):
  """torchvision's ``vgg16()`` as far as LPIPS reads it: ``features``."""
  assert not pretrained, 'the stand-in has no pretrained weights'
  layers, channels = [], 3
  for v in VGG16_CFG:
    if v == 'M':
      layers.append(torch.nn.MaxPool2d(kernel_size=2, stride=2))
    else:
      layers += [torch.nn.Conv2d(channels, v, kernel_size=3, padding=1),
                 torch.nn.ReLU(inplace=True)]
      channels = v
  model = torch.nn.Module()
  model.features = torch.nn.Sequential(*layers)
  BACKBONES.append(model)
  return model


BACKBONES = []  # What the stand-in built, so that its weights can be exported.


@pytest.fixture(scope='module')
def reference_lpips():
  """The `lpips` package, imported with the stand-in torchvision."""
  if importlib.util.find_spec('lpips') is None:  # Found, not imported: see above.
    pytest.skip('the lpips package is not installed')
  saved = {name: sys.modules.get(name) for name in ('torchvision', 'torchvision.models')}
  stand_in = types.ModuleType('torchvision')
  stand_in.models = types.ModuleType('torchvision.models')
  stand_in.models.alexnet, stand_in.models.vgg16 = _alexnet, _vgg16
  sys.modules.update({'torchvision': stand_in, 'torchvision.models': stand_in.models})
  try:
    import lpips as reference  # pylint: disable=g-import-not-at-top
    yield reference
  finally:
    for name, module in saved.items():
      if module is None:
        sys.modules.pop(name, None)
      else:
        sys.modules[name] = module


@pytest.fixture(scope='module', params=lpips.NETS)
def reference(reference_lpips, request, tmp_path_factory):
  """(net, reference torch LPIPS model, our params imported through the command's code)."""
  net = request.param
  torch.manual_seed(0)
  model = reference_lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
  backbone = BACKBONES[-1]
  # torch's default init has small biases; larger ones exercise the bias path.
  with torch.no_grad():
    for layer in backbone.features:
      if isinstance(layer, torch.nn.Conv2d):
        torch.nn.init.normal_(layer.bias, std=0.1)
  folder = tmp_path_factory.mktemp(net)
  torch.save(backbone.state_dict(), folder / 'backbone.pth')
  path = lpips.import_weights(str(folder / 'backbone.pth'), net,
                              output=str(folder / 'lpips.npz'))
  return net, model, lpips.load_params(net, path)


def _images(shape, seed):
  """Pairs of smooth uint8 images, the second a degraded (blurred, noisy) first."""
  rng = np.random.default_rng(seed)
  height, width = shape
  noise = rng.uniform(0, 255, (height // 4 + 1, width // 4 + 1, 3))
  hr = np.clip(bicubic.imresize(noise, 4)[:height, :width], 0, 255)
  sr = bicubic.imresize(bicubic.imresize(hr, 0.5), 2)[:height, :width]
  sr = sr + rng.normal(0, 8, sr.shape)
  return (np.clip(np.round(sr), 0, 255).astype(np.uint8),
          np.round(hr).astype(np.uint8))


def _reference_distance(model, sr, hr):
  to_tensor = lambda x: torch.from_numpy(x.astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2)
  with torch.no_grad():
    return model(to_tensor(sr), to_tensor(hr)).numpy().reshape(-1).astype(np.float64)


@pytest.mark.parametrize('shape', [(64, 80), (71, 53)])
def test_matches_reference_package(reference, shape):
  net, model, params = reference
  pairs = [_images(shape, seed) for seed in range(3)]
  sr, hr = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
  expected = _reference_distance(model, sr, hr)
  actual = lpips.lpips(params, sr, hr, net)
  print(net, shape, actual, expected)
  assert np.all(expected > 1e-3)  # A real difference, not the trivial 0.
  np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)
  # Random backbones give small distances: also within 0.1 % of each.
  np.testing.assert_allclose(actual, expected, rtol=1e-3)
  np.testing.assert_allclose(lpips.lpips(params, hr, hr, net), 0, atol=1e-7)


def test_matches_reference_package_on_a_photograph(reference):
  net, model, params = reference
  hr = degradation.modcrop(image_io.load_uint8(image_set('Set5') / 'butterfly.png'), 4)[None]
  sr = bicubic.imresize(bicubic.imresize(hr[0], 0.25), 4)[None]
  expected = _reference_distance(model, sr, hr)
  np.testing.assert_allclose(lpips.lpips(params, sr, hr, net), expected, atol=1e-5, rtol=0)
  # The border shave and gray images follow the same code.
  np.testing.assert_allclose(lpips.lpips(params, sr, hr, net, shave=4),
                             _reference_distance(model, sr[:, 4:-4, 4:-4], hr[:, 4:-4, 4:-4]),
                             atol=1e-5, rtol=0)
  gray = lambda x: np.repeat(x[..., :1], 3, axis=-1)
  np.testing.assert_allclose(lpips.lpips(params, sr[..., :1], hr[..., :1], net),
                             _reference_distance(model, gray(sr), gray(hr)), atol=1e-5, rtol=0)


def test_packaged_linear_layers_are_the_reference_ones(reference):
  net, model, params = reference
  for k, layer in enumerate(model.lins):
    np.testing.assert_array_equal(params[f'lin{k}']['weight'],
                                  layer.model[-1].weight.detach().numpy().reshape(-1))
  assert pathlib.Path(lpips.packaged_linear_path(net)).parts[-3:] == ('weights', 'v0.1',
                                                                      f'{net}.pth')


def test_missing_file_names_import_command(tmp_path, monkeypatch):
  monkeypatch.setenv('SRGAN_JAX_CACHE', str(tmp_path))
  assert lpips.default_path('vgg') == str(tmp_path / 'lpips_vgg.npz')
  with pytest.raises(lpips.LPIPSWeightsNotFoundError) as error:
    lpips.load_params('alex')
  assert isinstance(error.value, FileNotFoundError)
  assert 'python -m srgan_jax.lpips import --backbone=' in str(error.value)
  other = str(tmp_path / 'x.npz')
  with pytest.raises(lpips.LPIPSWeightsNotFoundError,
                     match=f'import --net=vgg --backbone=.* --output={other}'):
    lpips.load_params('vgg', other)


def test_malformed_file_is_a_clear_error(tmp_path):
  path = tmp_path / 'lpips_alex.npz'
  np.savez(path, **{'conv0/kernel': np.zeros((3, 3, 3, 64), np.float32)})
  with pytest.raises(lpips.LPIPSWeightsInvalidError) as error:
    lpips.load_params('alex', str(path))
  message = str(error.value)
  assert 'conv0/kernel has shape (3, 3, 3, 64), expected (11, 11, 3, 64)' in message
  assert 'missing layer lin4' in message and 'python -m srgan_jax.lpips import' in message
  path.write_bytes(b'not a zip file')
  with pytest.raises(lpips.LPIPSWeightsInvalidError, match='cannot read LPIPS weights'):
    lpips.load_params('alex', str(path))


def test_wrong_state_dict_is_a_clear_error():
  with pytest.raises(lpips.LPIPSWeightsInvalidError, match='features.10.weight'):
    lpips.params_from_torch({}, {}, 'alex')


def test_import_of_what_is_not_a_state_dict_is_one_user_error(tmp_path):
  """Before: `lpips import` of a PNG, or of a state dict with other keys, ended in a
  traceback (vgg19 import already said it in one line)."""
  png = tmp_path / 'a.png'
  png.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(64))
  tensor, other_keys = tmp_path / 'tensor.pth', tmp_path / 'other.pth'
  torch.save(torch.zeros(3), tensor)
  torch.save({'weight': torch.zeros(3)}, other_keys)
  for path, pattern in [(png, rf'cannot read a torch state dict from {png} \(\w+: '),
                        (tensor, 'holds a Tensor, not a state dict'),
                        (other_keys, r"missing \['features.0.weight'")]:
    with pytest.raises(lpips.LPIPSWeightsInvalidError, match=pattern) as raised:
      lpips.import_weights(str(path), 'alex', linear=str(path), output=str(tmp_path / 'o.npz'))
    assert isinstance(raised.value, errors.UserError)
    assert 'python -m srgan_jax.lpips import --backbone=' in str(raised.value)
  assert not (tmp_path / 'o.npz').exists()


@pytest.mark.system
def test_cli_imports_to_the_cache(tmp_path):
  torch.manual_seed(1)
  backbone = tmp_path / 'alexnet.pth'
  torch.save(_alexnet().state_dict(), backbone)
  env = dict(os.environ, SRGAN_JAX_CACHE=str(tmp_path / 'cache'),
             PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))
  result = subprocess.run(
      [sys.executable, '-m', 'srgan_jax.lpips', 'import', f'--backbone={backbone}',
       f'--linear={lpips.packaged_linear_path("alex")}'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert (tmp_path / 'cache' / 'lpips_alex.npz').is_file()


@pytest.mark.system
def test_import_does_not_load_torch():
  code = 'import sys, srgan_jax.lpips; assert "torch" not in sys.modules'
  subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True, timeout=120,
                 env=dict(os.environ, PYTHONPATH=str(REPO)))
