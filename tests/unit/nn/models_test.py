"""Tests for the SRGAN networks: shapes, parameter counts, BN modes, pixel shuffle."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from skimage import color

from srgan_jax.imaging import bicubic
from srgan_jax.nn import models


def _init(module, x, rng=0):
  return module.init(jax.random.key(rng), x, train=False)


@pytest.mark.parametrize('scale', [2, 4, 8])
@pytest.mark.parametrize('size', [(7, 9), (12, 12)])
def test_generator_shapes(scale, size):
  model = models.SRResNet(num_blocks=1, features=8, scale=scale, upsample_features=32)
  x = jnp.zeros((2, *size, 3))
  variables = _init(model, x)
  y = model.apply(variables, x, train=False)
  assert y.shape == (2, size[0] * scale, size[1] * scale, 3)
  assert y.dtype == jnp.float32


def test_generator_paper_parameter_count():
  """16 blocks, 64 features, x4, one PReLU slope per layer: 1,549,462 parameters."""
  variables = jax.eval_shape(
      lambda: _init(models.SRResNet(), jnp.zeros((1, 24, 24, 3))))
  assert models.count_params(variables['params']) == 1_549_462
  # Running mean and variance of the 16 x 2 + 1 BatchNorms of 64 channels.
  assert models.count_params(variables['batch_stats']) == 33 * 2 * 64


def test_discriminator_paper_shape_and_parameter_count():
  model = models.Discriminator()
  x = jnp.zeros((2, 96, 96, 3))
  variables = jax.eval_shape(lambda: _init(model, x))
  convs = sum(9 * cin * cout + cout for cin, cout in zip(
      [3, 64, 64, 128, 128, 256, 256, 512], [64, 64, 128, 128, 256, 256, 512, 512]))
  bns = 2 * sum([64, 128, 128, 256, 256, 512, 512])
  dense = (6 * 6 * 512 * 1024 + 1024) + (1024 + 1)
  assert models.count_params(variables['params']) == convs + bns + dense
  logits = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  assert logits.shape == (2,)


def test_discriminator_any_multiple_of_16():
  model = models.Discriminator(convs=((4, 1), (4, 2), (8, 1), (8, 2), (8, 1), (8, 2), (8, 1), (8, 2)),
                               dense_features=16)
  for side in (16, 48):
    x = jax.random.normal(jax.random.key(1), (3, side, side, 3))
    variables = _init(model, x)
    logits = model.apply(variables, x, train=False)
    assert logits.shape == (3,)
    assert np.all(np.isfinite(logits))


def test_discriminator_returns_unsquashed_logits():
  """The sigmoid belongs in the loss: outputs must reach outside [0, 1]."""
  model = models.Discriminator(convs=((4, 1), (4, 2), (8, 1), (8, 2), (8, 1), (8, 2), (8, 1), (8, 2)),
                               dense_features=16)
  x = 10 * jax.random.normal(jax.random.key(2), (16, 16, 16, 3))
  variables = _init(model, x)
  params = jax.tree_util.tree_map(lambda p: p * 4, variables['params'])
  logits = model.apply({**variables, 'params': params}, x, train=False)
  assert np.any(logits < 0) or np.any(logits > 1)


def test_pixel_shuffle_matches_numpy_depth_to_space():
  """Independent reference: the definition of TF's depth_to_space (DCR order)."""
  rng = np.random.default_rng(0)
  n, h, w, c, r = 2, 3, 4, 5, 2
  x = rng.normal(size=(n, h, w, c * r * r)).astype(np.float32)
  expected = np.zeros((n, h * r, w * r, c), np.float32)
  for i in range(r):
    for j in range(r):
      expected[:, i::r, j::r, :] = x[:, :, :, (i * r + j) * c:(i * r + j + 1) * c]
  np.testing.assert_array_equal(models.pixel_shuffle(jnp.asarray(x), r), expected)


def test_pixel_shuffle_matches_tf_depth_to_space():
  tf = pytest.importorskip('tensorflow')
  x = np.random.default_rng(1).normal(size=(1, 5, 3, 12)).astype(np.float32)
  np.testing.assert_array_equal(models.pixel_shuffle(jnp.asarray(x), 2),
                                tf.nn.depth_to_space(x, 2).numpy())


def test_batchnorm_train_uses_batch_stats_eval_uses_running_averages():
  model = models.SRResNet(num_blocks=1, features=8, scale=2, upsample_features=32)
  x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
  variables = _init(model, x)
  # Eval: each image's output depends only on that image.
  alone = model.apply(variables, x[:1], train=False)
  batched = model.apply(variables, x, train=False)
  np.testing.assert_allclose(alone[0], batched[0], atol=1e-5)
  # Train: batch statistics, so a different batch changes image 0's output,
  # and the running averages move.
  out_a, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  out_b, _ = model.apply(variables, jnp.concatenate([x[:1], x[1:] * 3]), train=True,
                         mutable=['batch_stats'])
  assert np.max(np.abs(out_a[0] - out_b[0])) > 1e-4
  before = jax.tree_util.tree_leaves(variables['batch_stats'])
  after = jax.tree_util.tree_leaves(updates['batch_stats'])
  assert any(np.max(np.abs(a - b)) > 0 for a, b in zip(before, after))


@pytest.mark.parametrize('icnr', [True, False])
def test_icnr_starts_sub_pixel_convs_as_nearest_neighbour_upsampling(icnr):
  """Right after init, each upsampling conv + pixel shuffle gives 2x2 blocks of equal
  pixels with ICNR (no checkerboard), and unequal ones with the default init."""
  model = models.SRResNet(num_blocks=1, features=8, upsample_features=32, scale=4, icnr=icnr)
  params = _init(model, jnp.zeros((1, 6, 6, 3)))['params']
  x = jax.random.normal(jax.random.key(1), (2, 5, 7, 8))
  for name in ('up0_conv', 'up1_conv'):
    kernel = params[name]['kernel']
    assert kernel.shape == (3, 3, 8, 32)
    conv = lambda inputs: jax.lax.conv_general_dilated(
        inputs, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    y = np.asarray(models.pixel_shuffle(conv(x), 2))
    blocks = y.reshape(2, 5, 2, 7, 2, 8)  # [n, h, i, w, j, c]: sub-pixel (i, j).
    equal = np.allclose(blocks, blocks[:, :, :1, :, :1], atol=1e-6)
    assert equal == icnr
    # ICNR keeps the default init's scale (same fan-in): comparable spread.
    assert 0.5 < np.std(kernel) / np.sqrt(1 / (9 * 8)) < 2


def test_generator_without_batchnorm():
  """batch_norm=False: no statistics, and train and eval modes compute the same."""
  model = models.SRResNet(num_blocks=2, features=8, upsample_features=32, batch_norm=False)
  x = jax.random.uniform(jax.random.key(2), (2, 6, 6, 3))
  variables = _init(model, x)
  assert 'batch_stats' not in variables
  np.testing.assert_allclose(model.apply(variables, x, train=True),
                             model.apply(variables, x, train=False), rtol=0, atol=0)


@pytest.mark.parametrize('bicubic_skip', [False, True])
def test_receptive_radius_bounds_influence(bicubic_skip):
  """A pixel change farther than the radius leaves the output unchanged; nearer does not."""
  model = models.SRResNet(num_blocks=1, features=8, scale=2, upsample_features=32,
                          bicubic_skip=bicubic_skip)
  radius = models.generator_receptive_radius(1, 2)
  size = 2 * radius + 12
  x = jax.random.uniform(jax.random.key(0), (1, size, size, 3))
  variables = _init(model, x)
  base = model.apply(variables, x, train=False)
  centre = size // 2
  far = x.at[0, centre, centre + radius + 1].add(1.0)
  near = x.at[0, centre, centre + radius - 3].add(1.0)
  window = np.s_[0, 2 * centre:2 * centre + 2, 2 * centre:2 * centre + 2]
  assert np.array_equal(model.apply(variables, far, train=False)[window], base[window])
  assert not np.allclose(model.apply(variables, near, train=False)[window], base[window])


@pytest.mark.parametrize('scale', [2, 4])
def test_bicubic_skip_adds_matlab_bicubic_upsampling(scale):
  """With bicubic_skip, output = network + 2 * imresize(lr) - 1, checked against the
  NumPy MATLAB-imresize reference with the same weights with and without the skip."""
  kwargs = dict(num_blocks=1, features=8, scale=scale, upsample_features=32, batch_norm=False)
  x = np.random.default_rng(scale).uniform(size=(2, 7, 9, 3)).astype(np.float32)
  plain = models.SRResNet(**kwargs)
  variables = _init(plain, x)
  with_skip = np.asarray(models.SRResNet(**kwargs, bicubic_skip=True).apply(variables, x))
  without = np.asarray(plain.apply(variables, x))
  reference = np.stack([2 * bicubic.imresize(image.astype(np.float64), scale) - 1
                        for image in x])
  np.testing.assert_allclose(with_skip - without, reference, atol=2e-5)


def test_chroma_from_bicubic_keeps_luma_and_takes_bicubic_chroma():
  """With chroma_from_bicubic, the output's BT.601 luma is the network's and its Cb/Cr
  are MATLAB bicubic's, both read by scikit-image's YCbCr (an independent conversion)."""
  kwargs = dict(num_blocks=1, features=8, scale=4, upsample_features=32, batch_norm=False,
                bicubic_skip=True)
  x = np.random.default_rng(1).uniform(0.3, 0.7, size=(2, 7, 9, 3)).astype(np.float32)
  network = models.SRResNet(**kwargs)
  variables = _init(network, x)
  own = (np.asarray(network.apply(variables, x)) + 1) / 2
  mixed = (np.asarray(models.SRResNet(**kwargs, chroma_from_bicubic=True).apply(
      variables, x)) + 1) / 2
  upsampled = np.stack([bicubic.imresize(image.astype(np.float64), 4) for image in x])
  ycbcr = [color.rgb2ycbcr(np.clip(images, 0, 1)) for images in (own, mixed, upsampled)]
  assert np.all((own > 0) & (own < 1) & (mixed > 0) & (mixed < 1))  # Unclipped above.
  np.testing.assert_allclose(ycbcr[1][..., 0], ycbcr[0][..., 0], atol=1e-3)  # 8-bit scale.
  np.testing.assert_allclose(ycbcr[1][..., 1:], ycbcr[2][..., 1:], atol=1e-3)
  assert np.abs(ycbcr[0][..., 1:] - ycbcr[2][..., 1:]).max() > 1  # The option changed them.


def test_weight_layout_ignores_output_only_options():
  """A generator trained without chroma_from_bicubic may start a run that uses it."""
  base = ml_collections.ConfigDict({'scale': 4, 'generator': {'features': 8,
                                                              'chroma_from_bicubic': False}})
  changed = ml_collections.ConfigDict(base.to_dict())
  changed.generator.chroma_from_bicubic = True
  assert models.weight_layout(base) == models.weight_layout(changed)
  changed.generator.features = 16
  assert models.weight_layout(base) != models.weight_layout(changed)


def test_bfloat16_compute_keeps_float32_params():
  model = models.SRResNet(num_blocks=1, features=8, scale=2, upsample_features=32,
                          dtype=jnp.bfloat16)
  x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
  variables = _init(model, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables))
  y = model.apply(variables, x, train=False)
  reference = models.SRResNet(num_blocks=1, features=8, scale=2, upsample_features=32).apply(
      variables, x, train=False)
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(y, reference, atol=0.1)


def test_tanh_output_in_range_and_bad_options_rejected():
  x = 5 * jax.random.normal(jax.random.key(0), (1, 6, 6, 3))
  model = models.SRResNet(num_blocks=1, features=8, scale=2, output_activation='tanh')
  y = model.apply(_init(model, x), x)
  assert np.all(np.abs(y) <= 1)
  with pytest.raises(ValueError, match='scale'):
    _init(models.SRResNet(num_blocks=1, features=8, scale=3), x)
  with pytest.raises(ValueError, match='output_activation'):
    _init(models.SRResNet(num_blocks=1, features=8, output_activation='sigmoid'), x)


@pytest.mark.system
def test_models_do_not_import_tensorflow():
  code = 'import sys, srgan_jax.nn.models; assert "tensorflow" not in sys.modules'
  subprocess.run([sys.executable, '-c', code], check=True)


def test_unet_discriminator_judges_every_pixel():
  """Real-ESRGAN's U-Net D: one logit per input pixel, any sides that are multiples
  of 8, and at their width (64) the 4,376,897 parameters of their UNetDiscriminatorSN
  (convs 1-8 spectrally normalised, without bias)."""
  model = models.UNetDiscriminator(features=4)
  for shape in ((2, 32, 32, 3), (1, 24, 40, 3)):
    x = jax.random.normal(jax.random.key(0), shape)
    variables = _init(model, x)
    logits = model.apply(variables, x, train=False)
    assert logits.shape == (*shape[:3], 1) and logits.dtype == jnp.float32
  with pytest.raises(ValueError, match='multiples of 8'):
    _init(model, jnp.zeros((1, 20, 24, 3)))
  variables = jax.eval_shape(
      lambda: _init(models.UNetDiscriminator(), jnp.zeros((1, 32, 32, 3))))
  assert models.count_params(variables['params']) == 4_376_897
  # A u vector (and sigma) per normalised kernel, in its own collection, no BatchNorm.
  assert set(variables) == {'params', models.SPECTRAL}
  assert len(jax.tree_util.tree_leaves(variables[models.SPECTRAL])) == 2 * 8


def test_spectral_norm_estimate_converges_to_the_largest_singular_value():
  """Repeated training passes (one power iteration each) bring every normalised
  kernel's sigma to NumPy's largest singular value of the kernel as a matrix
  [kh * kw * in, out], and only passes in training mode move the state."""
  model = models.UNetDiscriminator(features=4)
  x = jax.random.normal(jax.random.key(1), (1, 8, 8, 3))
  variables = _init(model, x)
  step = jax.jit(lambda v: model.apply(v, x, train=True, mutable=[models.SPECTRAL])[1])
  first = step(variables)[models.SPECTRAL]
  for _ in range(100):
    variables = {**variables, **step(variables)}
  evaluated = model.apply(variables, x, train=False, mutable=[models.SPECTRAL])[1]
  jax.tree.map(np.testing.assert_array_equal, evaluated,
               {models.SPECTRAL: variables[models.SPECTRAL]})
  for name in [f'conv{i}' for i in range(1, 9)]:
    kernel = np.asarray(variables['params'][name]['kernel'])
    largest = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
    state = variables[models.SPECTRAL][f'{name}_sn']
    np.testing.assert_allclose(state[f'{name}/kernel/sigma'], largest, rtol=1e-4)
    # One iteration from a random u is not there yet: the test sees the iteration work.
    assert abs(first[f'{name}_sn'][f'{name}/kernel/sigma'] - largest) > 1e-3 * largest, name


def test_discriminator_layout_reads_records_from_before_arch():
  """A checkpoint's record without discriminator.arch is the paper's D; the U-Net's
  layout ignores the paper D's fields (which do not shape its weights)."""
  from srgan_jax.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  record = config.discriminator.to_dict()
  del record['arch'], record['unet_features']
  assert models.discriminator_layout(record) == models.discriminator_layout(config.discriminator)
  unet = {**config.discriminator.to_dict(), 'arch': 'unet'}
  assert models.discriminator_layout(unet) == models.discriminator_layout(
      {**unet, 'convs': ((8, 1),), 'dense_features': 3})
  assert models.discriminator_layout(unet) != models.discriminator_layout(
      {**unet, 'unet_features': 32})
