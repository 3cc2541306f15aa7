"""The eight symmetries of the square (flips and quarter turns), numbered once.

Symmetry ``which`` (0..7) of an image, by its bits:

=====  ==========================================
bit    transform, applied in this order
=====  ==========================================
4      transpose (swap rows and columns)
1      flip vertically (reverse the rows)
2      flip horizontally (reverse the columns)
=====  ==========================================

So 0 is the identity, 1 and 2 the flips, 3 a half turn, 4 the transpose, 5 a
quarter turn anticlockwise (``np.rot90``), 6 one clockwise and 7 the
anti-transpose.
The training input applies it to NumPy crops (``which`` a Python int: views, no
copies) and the device-resident data to JAX crops (``which`` a traced integer,
selected with ``jnp.where``): the same index gives the same transform in both.
"""

from collections.abc import Callable
from typing import Any


def _python_select(condition: Any, if_true: Any, if_false: Any) -> Any:
  return if_true if condition else if_false


def dihedral(image: Any, which: Any,
             select: Callable[[Any, Any, Any], Any] = _python_select) -> Any:
  """Symmetry ``which`` (module docstring) of a square ``[H, W, ...]`` image.

  Args:
    image: a NumPy or JAX array, square in its first two axes.
    which: 0..7: a Python int, or an integer array with ``select=jnp.where``.
    select: ``(condition, if_true, if_false) -> value``; ``jnp.where`` under jit.

  Returns:
    The transformed image (a view of a NumPy ``image``).
  """
  image = select(which & 4 != 0, image.swapaxes(0, 1), image)
  image = select(which & 1 != 0, image[::-1], image)
  return select(which & 2 != 0, image[:, ::-1], image)
