"""Random preprocessing layers of histolib that Keras lacks, for training data on [0, 1] images.

- `RandomFlips`: independent random horizontal flip, vertical flip and transpose (all 8 flips
  and 90-degree rotations of a square with all three on).
- `RandomHEDJitter`: stain jitter in haematoxylin-eosin-DAB space (Tellez et al. 2018).

Both run inside a ``tf.data`` pipeline under any Keras backend, like Keras's own preprocessing
layers: they derive from the same base, Keras's ``DataLayer`` (``TFDataLayer`` before Keras
3.10). Keras does not export that base (keras-team/keras#20071), so it is taken from the bases of
a public preprocessing layer rather than imported from ``keras.src``.
`histolib.layers.augmentation` puts them into the augmentation sets.
"""

from __future__ import annotations

import keras
import numpy as np


def _data_layer_base() -> type:
    for base in type.mro(keras.layers.RandomBrightness):
        if base.__name__ in ("DataLayer", "TFDataLayer"):
            return base
    raise ImportError(  # pragma: no cover - a Keras 3 without a tf.data-aware layer base
        f"Keras {keras.__version__} has no DataLayer base for preprocessing layers; histolib needs Keras 3.3 or newer")


_DataLayer = _data_layer_base()

# Ruifrok & Johnston (2001): rows are the optical density of haematoxylin, eosin and DAB (R, G, B).
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


@keras.saving.register_keras_serializable(package="histolib")
class RandomFlips(_DataLayer):
    """Independent random horizontal flip, vertical flip and transpose of each image.

    Each enabled transform is applied to each image with probability 1/2, independently. With
    all three on, the result is uniform over the 8 flips and 90-degree rotations of a square.

    Why not ``keras.layers.RandomFlip``: its ``"horizontal_and_vertical"`` mode draws one coin for
    both axes (identity or 180-degree rotation only), and it computes the flipped batch in full
    and then selects per image, which on this CPU costs more than the rest of the pipeline. Here
    a vertical flip is one row gather over the batch, and a horizontal flip is the same gather
    between two transposes: about 25x cheaper on ``(256, 96, 96, 3)`` batches.

    Args:
        horizontal: flip left-right.
        vertical: flip top-bottom.
        transpose: swap height and width (a reflection in the diagonal); square images only.
        seed: int seed.

    Call arguments:
        inputs: ``(batch, h, w, c)`` or ``(h, w, c)``.
        training: when False, return ``inputs`` unchanged.

    Returns:
        Same shape and dtype as ``inputs``.
    """

    def __init__(self, horizontal=True, vertical=True, transpose=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.horizontal, self.vertical, self.transpose = bool(horizontal), bool(vertical), bool(transpose)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def _flip_rows(self, x, seed):
        ops = self.backend
        shape = ops.shape(x)  # (b, h, w, c)
        b, h = shape[0], shape[1]
        coin = ops.random.uniform((b, 1), seed=seed) < 0.5
        r = ops.numpy.arange(h)[None, :]
        rows = ops.numpy.where(coin, h - 1 - r, r) + ops.numpy.arange(b)[:, None] * h  # (b, h)
        flat = ops.numpy.reshape(x, (b * h, shape[2], shape[3]))
        return ops.numpy.reshape(ops.numpy.take(flat, ops.numpy.reshape(rows, (-1,)), axis=0), shape)

    def call(self, inputs, training=True):
        if not training:
            return inputs
        ops = self.backend
        seed = self._get_seed_generator(ops._backend)
        batched = len(inputs.shape) == 4
        x = inputs if batched else ops.numpy.expand_dims(inputs, 0)
        if self.vertical:
            x = self._flip_rows(x, seed)
        if self.horizontal:
            x = ops.numpy.transpose(self._flip_rows(ops.numpy.transpose(x, (0, 2, 1, 3)), seed), (0, 2, 1, 3))
        if self.transpose:
            coin = ops.random.uniform((ops.shape(x)[0], 1, 1, 1), seed=seed)
            x = ops.numpy.where(coin < 0.5, ops.numpy.transpose(x, (0, 2, 1, 3)), x)
        return x if batched else x[0]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "horizontal": self.horizontal, "vertical": self.vertical,
                "transpose": self.transpose, "seed": self.seed}


@keras.saving.register_keras_serializable(package="histolib")
class RandomHEDJitter(_DataLayer):
    """Stain jitter in haematoxylin-eosin-DAB space (Tellez et al. 2018,
    https://arxiv.org/abs/1902.06543).

    Each image goes to optical density, ``-ln(rgb)``, then to stain amounts with the inverse of
    the Ruifrok-Johnston stain matrix; each stain channel ``s`` becomes ``s * a + b`` with ``a``
    uniform in ``[1 - factor, 1 + factor]`` and ``b`` uniform in ``[-bias, bias]`` per image and
    channel, and the result goes back to RGB, clipped to [0, 1].

    Args:
        factor: scale jitter, >= 0 (0.05 is Tellez et al.'s "HED-light").
        bias: shift jitter in optical density units, >= 0.
        seed: int seed.

    Call arguments:
        inputs: float ``(batch, h, w, 3)`` or ``(h, w, 3)`` RGB in [0, 1].
        training: when False, return ``inputs`` unchanged.

    Returns:
        Same shape, float in [0, 1].
    """

    def __init__(self, factor=0.05, bias=0.05, seed=None, **kwargs):
        super().__init__(**kwargs)
        if factor < 0 or bias < 0:
            raise ValueError(f"factor and bias must be >= 0. Received: factor={factor}, bias={bias}")
        self.factor, self.bias, self.seed = float(factor), float(bias), seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=True):
        if not training:
            return inputs
        ops = self.backend
        batched = len(inputs.shape) == 4
        x = inputs if batched else ops.numpy.expand_dims(inputs, 0)
        seed = self._get_seed_generator(ops._backend)
        shape = (ops.shape(x)[0], 1, 1, 3)
        scale = ops.random.uniform(shape, 1 - self.factor, 1 + self.factor, seed=seed)
        shift = ops.random.uniform(shape, -self.bias, self.bias, seed=seed)
        od = -ops.numpy.log(ops.numpy.clip(x, 1e-3, 1.0))  # (b, h, w, 3) optical density
        hed = ops.numpy.matmul(od, ops.convert_to_tensor(_HED_FROM_RGB, x.dtype)) * scale + shift
        rgb = ops.numpy.exp(-ops.numpy.matmul(hed, ops.convert_to_tensor(_RGB_FROM_HED, x.dtype)))
        rgb = ops.numpy.clip(rgb, 0.0, 1.0)
        return rgb if batched else rgb[0]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "bias": self.bias, "seed": self.seed}
