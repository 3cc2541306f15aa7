"""Seamless tiles: any image, of any size, through a generator of one static input shape.

The tiling arithmetic alone (``nn/upscalers`` runs a generator through it). Large
images are cut into overlapping tiles of one static shape (jit compiles once),
run in batches, and each output pixel is taken from the tile where it lies furthest
from a cut. With ``overlap >= models.generator_receptive_radius`` (the default) the
result equals whole-image inference; memory is bounded by the batch of tiles, not by
the image (apart from the assembled output).
"""

from typing import Callable

import numpy as np

from srgan_jax.runtime import flag_checks


def axis_tiles(length: int, tile: int, overlap: int) -> tuple[list[int], list[int], int]:
  """How one image axis is cut.

  Args:
    length: image size along the axis.
    tile: tile size; an axis shorter than that is one tile of its own length.
    overlap: context each tile keeps on either side of the part it contributes;
      neighbouring tiles share at least ``2 * overlap`` pixels.

  Returns:
    ``(starts, bounds, size)``: tile starts; ``bounds[i]:bounds[i + 1]`` is the part of
    the axis taken from tile ``i`` (at least ``overlap`` pixels away from any cut edge
    of that tile); the tile size.
  """
  if length <= tile:
    return [0], [0, length], length
  stride = tile - 2 * overlap
  if stride < 1:
    raise ValueError(f'tile ({tile}) must be larger than 2 * overlap ({2 * overlap})')
  # The last tile is shifted back inside the image rather than padded.
  starts = list(range(0, length - tile, stride)) + [length - tile]
  # Between two tiles, cut in the middle of what they share: each side keeps at least
  # half of it (>= overlap) as context.
  cuts = [b + (a + tile - b) // 2 for a, b in zip(starts, starts[1:])]
  return starts, [0] + cuts + [length], tile


def upscale_tiled(apply_fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, *, scale: int, tile: int,
                  overlap: int, batch_size: int,
                  progress: Callable[[int, int], None] | None = None) -> np.ndarray:
  """Super-resolves an image of any size tile by tile.

  Args:
    apply_fn: the generator on a batch, [n, th, tw, 3] LR in [0, 1] ->
      [n, th*scale, tw*scale, 3] SR; called with one static shape per image (the last
      batch is zero-padded), and asynchronously dispatched results are fine.
    image: float32 [H, W, 3] in [0, 1].
    scale: upscaling factor of ``apply_fn``.
    tile: LR tile side; an image side shorter than that makes tiles of its length.
    overlap: LR context pixels around the kept centre of each tile; at least
      ``models.generator_receptive_radius`` for a result equal to whole-image inference.
    batch_size: tiles per ``apply_fn`` call (fewer if the image has fewer tiles).
    progress: called after each batch with (tiles done, tiles in total).

  Returns:
    float32 [H*scale, W*scale, 3], in the generator's range ([-1, 1] for SRResNet).
  """
  height, width, _ = image.shape
  row_starts, row_bounds, tile_h = axis_tiles(height, tile, overlap)
  col_starts, col_bounds, tile_w = axis_tiles(width, tile, overlap)
  tiles = [(i, j) for i in range(len(row_starts)) for j in range(len(col_starts))]
  batch_size = min(batch_size, len(tiles))
  output = np.empty((height * scale, width * scale, 3), np.float32)

  def paste(result: np.ndarray, batch: list[tuple[int, int]]) -> None:
    result = np.asarray(result)  # Waits for the device here, not at dispatch.
    for sr, (i, j) in zip(result, batch):
      y0, y1 = row_bounds[i], row_bounds[i + 1]
      x0, x1 = col_bounds[j], col_bounds[j + 1]
      dy, dx = (y0 - row_starts[i]) * scale, (x0 - col_starts[j]) * scale
      output[y0 * scale:y1 * scale, x0 * scale:x1 * scale] = (
          sr[dy:dy + (y1 - y0) * scale, dx:dx + (x1 - x0) * scale])

  pending = None
  for first in range(0, len(tiles), batch_size):
    batch = tiles[first:first + batch_size]
    lr = np.zeros((batch_size, tile_h, tile_w, 3), np.float32)
    for k, (i, j) in enumerate(batch):
      lr[k] = image[row_starts[i]:row_starts[i] + tile_h, col_starts[j]:col_starts[j] + tile_w]
    result = apply_fn(lr)
    # Assemble the previous batch while the device computes this one.
    if pending is not None:
      paste(*pending)
      if progress is not None:
        progress(first, len(tiles))
    pending = (result, batch)
  paste(*pending)
  if progress is not None:
    progress(len(tiles), len(tiles))
  return output


def check_tiles(tile: int, overlap: int, source: str) -> None:
  """Raises errors.ConfigError unless ``tile`` exceeds twice ``overlap`` (named by
  ``source``), the --tile flag's rule."""
  flag_checks.check_flags([], tile <= 2 * overlap and (
      f'--tile={tile} must be larger than twice the overlap ({overlap}, {source}); '
      'raise --tile or lower --overlap'))
