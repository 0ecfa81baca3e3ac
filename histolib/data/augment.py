"""Augmentation sets as Keras preprocessing layers, for training data on [0, 1] images.

``augmentation(name, seed=0)`` returns a ``keras.layers.Pipeline`` that maps float32
``(batch, h, w, 3)`` images in [0, 1] to the same shape and range. Every layer is written with
the backend's ops and runs in two places, under TensorFlow and under JAX:

- on the host, inside a ``tf.data`` pipeline: :func:`histolib.data.load` applies it to the
  training split only (``augment=``);
- on the accelerator, inside the model's training step: :class:`TrainingAugmentation` holds a
  set as a layer that is active only when the model is called with ``training=True`` (in
  ``fit``) and passes images through unchanged otherwise (``predict``, ``evaluate``, a plain
  ``model(x)``); `histolib.models.with_augmentation` puts it after a model's input. The host
  then only decodes: on a CPU without AVX-512 the augmented stream measured a quarter of the
  plain one's images/s, which a TPU would otherwise wait on.

Sets:

- ``"pcam-seed"``: the PCam seed's README, "random flips, brightness +-0.1, contrast 0.8-1.2":
  independent horizontal and vertical flips (:class:`RandomFlips`), ``RandomBrightness(0.1)`` and
  ``RandomContrast(0.2)``, both with ``value_range=(0, 1)`` (their default is 0-255, which on
  [0, 1] images would make the brightness shift 255 times too small).
- ``"pcam"``: the better set. All 8 flips and 90-degree rotations of the square (the symmetry
  group of a patch, drawn uniformly: horizontal flip, vertical flip and a transpose, each with
  probability 1/2; Keras has no 90-degree rotation layer, hence :class:`RandomFlips`),
  stain jitter in haematoxylin-eosin-DAB space (:class:`RandomHEDJitter`, after Tellez et al.
  2018), then the seed's brightness and contrast.
- ``"subtype"``: what the ovarian seed's README promises and its code lacks: rotation (up to
  +-36 degrees), flips and zoom (+-10 %), reflecting at the borders.

Note: Keras 3's ``RandomFlip("horizontal_and_vertical")`` draws one coin per image and flips
both axes together, so it only ever gives the identity or a 180-degree rotation, and it is slow
on the CPU; the sets here flip with :class:`RandomFlips` (independent coins, row gathers).
"""

from __future__ import annotations

import keras
import numpy as np

from histolib.names import unknown_name

try:  # Keras >= 3.10
    from keras.src.layers.preprocessing.data_layer import DataLayer as _DataLayer
except ImportError:  # pragma: no cover - older Keras 3
    from keras.src.layers.preprocessing.tf_data_layer import TFDataLayer as _DataLayer

NAMES = ("pcam-seed", "pcam", "subtype")
"""The augmentation sets :func:`augmentation` knows."""

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


def _seed(seed, k):
    return None if seed is None else int(seed) + k


def augmentation(name: str, seed: int | None = 0, *, dtype=None) -> keras.layers.Pipeline:
    """The augmentation set ``name`` as a ``keras.layers.Pipeline`` of preprocessing layers.

    Args:
        name: ``"pcam-seed"``, ``"pcam"`` or ``"subtype"`` (see the module docstring).
        seed: base seed; layer ``k`` gets ``seed + k``. ``None`` draws fresh randomness.
        dtype: the layers' dtype policy; ``None`` takes the global one. `TrainingAugmentation`
            passes ``"float32"``, so the sets compute in float32 inside a mixed-precision model.

    Returns:
        A pipeline mapping float32 ``(batch, h, w, 3)`` in [0, 1] to the same shape and range.
    """
    kw = {} if dtype is None else {"dtype": dtype}
    colour = [keras.layers.RandomBrightness(0.1, value_range=(0, 1), seed=_seed(seed, 1), **kw),
              keras.layers.RandomContrast(0.2, value_range=(0, 1), seed=_seed(seed, 2), **kw)]
    if name == "pcam-seed":
        layers = [RandomFlips(seed=_seed(seed, 0), **kw)] + colour
    elif name == "pcam":
        layers = [RandomFlips(transpose=True, seed=_seed(seed, 0), **kw),
                  RandomHEDJitter(0.05, 0.05, seed=_seed(seed, 3), **kw)] + colour
    elif name == "subtype":
        layers = [RandomFlips(seed=_seed(seed, 0), **kw),
                  keras.layers.RandomRotation(0.1, fill_mode="reflect", seed=_seed(seed, 4), **kw),
                  keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=_seed(seed, 5), **kw)]
    else:
        raise unknown_name("augmentation set", name, NAMES, argument="augment")
    return keras.layers.Pipeline(layers, name=f"augment_{name.replace('-', '_')}")


@keras.saving.register_keras_serializable(package="histolib")
class TrainingAugmentation(keras.layers.Layer):
    """An augmentation set inside a model: on in training steps, the identity otherwise.

    Holds ``augmentation(augment, seed, dtype="float32")``. Called with ``training=True`` (as
    ``model.fit`` calls a model) it draws a fresh augmentation for every image of the batch,
    on the device the model runs on, under TensorFlow or JAX (in a ``jax.jit``-compiled step
    its random state is a model variable that advances each step). Called with
    ``training=False`` or without ``training`` (``predict``, ``evaluate``, ``model(x)``) it
    returns its input unchanged, so a saved model predicts as if the layer were not there.
    Its config is the set's name and seed, so a model holding it loads with
    ``keras.saving.load_model(..., safe_mode=True)`` once histolib's layers are imported.

    Args:
        augment: ``"pcam-seed"``, ``"pcam"`` or ``"subtype"`` (see the module docstring).
        seed: base seed of the set's layers.

    Call arguments:
        inputs: float ``(batch, h, w, 3)`` in [0, 1] (square images for ``"pcam"``).
        training: whether this is a training step (default ``False``).

    Returns:
        Same shape as ``inputs``, float32.
    """

    def __init__(self, augment: str = "pcam", seed: int | None = 0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.augment, self.seed = augment, seed
        self.pipeline = augmentation(augment, seed, dtype="float32")

    def build(self, input_shape):
        for layer in self.pipeline.layers:  # they have no weights, only random states
            layer.build(input_shape)
        self.pipeline.built = True

    def call(self, inputs, training=False):
        if not training:
            return inputs
        return self.pipeline(inputs, training=True)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "augment": self.augment, "seed": self.seed}
