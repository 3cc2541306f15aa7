"""Tests for srgan_jax.imaging.symmetry: one numbering of the 8 symmetries, NumPy and JAX."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srgan_jax.imaging import symmetry

IMAGE = np.arange(4 * 4 * 3).reshape(4, 4, 3)


@pytest.mark.parametrize('which', range(8))
def test_numpy_and_jax_agree(which):
  expected = symmetry.dihedral(IMAGE, which)
  traced = jax.jit(lambda image, w: symmetry.dihedral(image, w, jnp.where))
  np.testing.assert_array_equal(np.asarray(traced(jnp.asarray(IMAGE), which)), expected)


def test_numbering():
  turn = lambda k: np.rot90(IMAGE, k)
  # As the module docstring numbers them; 7 is the anti-transpose.
  expected = [IMAGE, IMAGE[::-1], IMAGE[:, ::-1], turn(2), IMAGE.swapaxes(0, 1), turn(1),
              turn(-1), turn(2).swapaxes(0, 1)]
  for which, image in enumerate(expected):
    np.testing.assert_array_equal(symmetry.dihedral(IMAGE, which), image, err_msg=str(which))
  # All eight differ: each index is a different symmetry.
  assert len({symmetry.dihedral(IMAGE, which).tobytes() for which in range(8)}) == 8


def test_numpy_gives_views():
  assert all(np.shares_memory(symmetry.dihedral(IMAGE, which), IMAGE) for which in range(8))
