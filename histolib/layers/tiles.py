"""Images larger than a backbone's input, seen whole: tiles cut at native resolution, and the
dihedral average of a tile encoder.

- `TileImage` cuts an image of any size into ``tile x tile`` tiles at a ``stride``, without
  shrinking it; an image smaller than a tile is upscaled to fit (its short side becomes ``tile``).
  The tiles are placed as `tile_grid` says, the same grid `histolib.data.bags.cover_boxes` gives,
  so a model over `TileImage` sees the tiles whose features were cached for training.
- `DihedralMean` runs a layer (a tile encoder) on the 8 flips and 90-degree rotations of its
  input and averages the outputs: features that do not depend on the tile's orientation.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["DihedralMean", "TileImage", "tile_grid"]


def tile_grid(height, width, tile: int, stride: int):
    """Where ``TileImage`` cuts: ``(side, row starts, column starts)``.

    ``side = min(tile, height, width)`` pixels of the image make one tile (a tile of an image
    smaller than ``tile`` is upscaled to ``tile``), the step is ``stride * side / tile`` pixels,
    and the starts are spread evenly from 0 to the last possible one, rounded, so the last tile
    ends on the image's edge: ``ceil((height - side) * tile / (stride * side)) + 1`` rows.
    Works on Python ints (NumPy) and on backend tensors alike.
    """
    side = ops.minimum(ops.minimum(height, width), tile)

    def starts(extent):
        steps = -ops.floor_divide(-(extent - side) * tile, stride * side)  # ceil, in integers
        step = ops.cast(extent - side, "float32") / ops.cast(ops.maximum(steps, 1), "float32")
        return ops.cast(ops.round(ops.cast(ops.arange(steps + 1), "float32") * step), "int32")

    return side, starts(height), starts(width)


@keras.saving.register_keras_serializable(package="histolib")
class TileImage(keras.layers.Layer):
    """Cuts images into tiles at native resolution (see `tile_grid`).

    Args:
        tile: the tile side in pixels, the encoder's input size.
        stride: the step between tiles, in pixels of a ``tile``-sized tile (``stride < tile``
            overlaps them).

    Call arguments:
        images: ``(batch, height, width, 3)``; images of different sizes go one at a time.

    Returns:
        ``(tiles, mask)``: tiles ``(batch, n, tile, tile, 3)`` and a boolean mask ``(batch, n)``,
        all True (every tile is a real one), in the form `histolib.models.build_mil_classifier`
        takes.
    """

    def __init__(self, tile: int = 224, stride: int = 112, **kwargs):
        super().__init__(**kwargs)
        if not (isinstance(tile, int) and tile > 0 and isinstance(stride, int) and stride > 0):
            raise ValueError(f"tile and stride must be positive integers. Received: tile={tile!r}, stride={stride!r}")
        self.tile, self.stride = tile, stride

    def call(self, images):
        shape = ops.shape(images)
        side, rows, cols = tile_grid(shape[1], shape[2], self.tile, self.stride)
        offsets = ops.arange(side, dtype="int32")
        row_index = ops.reshape(rows[:, None] + offsets[None, :], (-1,))  # (n_rows * side,)
        col_index = ops.reshape(cols[:, None] + offsets[None, :], (-1,))
        x = ops.take(ops.take(images, row_index, axis=1), col_index, axis=2)  # (b, n_r * side, n_c * side, 3)
        n_rows, n_cols = ops.shape(rows)[0], ops.shape(cols)[0]
        x = ops.reshape(x, (shape[0], n_rows, side, n_cols, side, shape[3]))
        x = ops.reshape(ops.transpose(x, (0, 1, 3, 2, 4, 5)), (-1, side, side, shape[3]))  # (b * n, side, side, 3)
        x = ops.image.resize(x, (self.tile, self.tile), interpolation="bilinear", antialias=True)
        tiles = ops.reshape(ops.clip(x, 0.0, 1.0), (shape[0], n_rows * n_cols, self.tile, self.tile, shape[3]))
        return tiles, ops.ones((shape[0], n_rows * n_cols), dtype="bool")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, self.tile, self.tile, input_shape[-1]), (input_shape[0], None)

    def get_config(self):
        return {**super().get_config(), "tile": self.tile, "stride": self.stride}


@keras.saving.register_keras_serializable(package="histolib")
class DihedralMean(keras.layers.Wrapper):
    """The mean of ``layer`` over the 8 dihedral views (flips and 90-degree rotations) of square
    images: an orientation-free tile encoder.

    Args:
        layer: a layer or model from ``(batch, s, s, 3)`` to ``(batch, ...)``.

    Call arguments:
        inputs: ``(batch, s, s, 3)`` square images.

    Returns:
        ``layer``'s output shape, the average over the 8 views.
    """

    def call(self, inputs):
        views = []
        for image in (inputs, ops.transpose(inputs, (0, 2, 1, 3))):
            for flipped in (image, ops.flip(image, axis=1)):
                views += [flipped, ops.flip(flipped, axis=2)]
        out = self.layer(ops.concatenate(views, axis=0))  # (8 * batch, ...)
        return ops.mean(ops.reshape(out, (8, -1, *ops.shape(out)[1:])), axis=0)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)
