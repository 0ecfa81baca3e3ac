"""Augmentation sets as Keras preprocessing layers, for training data on [0, 1] images, and
`TrainingAugmentation`, a set as a layer inside a model.

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
  independent horizontal and vertical flips (:class:`~histolib.layers.preprocessing.RandomFlips`), ``RandomBrightness(0.1)`` and
  ``RandomContrast(0.2)``, both with ``value_range=(0, 1)`` (their default is 0-255, which on
  [0, 1] images would make the brightness shift 255 times too small).
- ``"pcam"``: the better set. All 8 flips and 90-degree rotations of the square (the symmetry
  group of a patch, drawn uniformly: horizontal flip, vertical flip and a transpose, each with
  probability 1/2; Keras has no 90-degree rotation layer, hence :class:`~histolib.layers.preprocessing.RandomFlips`),
  stain jitter in haematoxylin-eosin-DAB space (:class:`~histolib.layers.preprocessing.RandomHEDJitter`, after Tellez et al.
  2018), then the seed's brightness and contrast.
- ``"pcam-strong"``: the same with Tellez et al.'s "HED-strong" stain jitter (scale and shift
  0.2 instead of 0.05), against the stain differences between hospitals and scanners.
- ``"subtype"``: what the ovarian seed's README promises and its code lacks: rotation (up to
  +-36 degrees), flips and zoom (+-10 %), reflecting at the borders.

Note: Keras 3's ``RandomFlip("horizontal_and_vertical")`` draws one coin per image and flips
both axes together, so it only ever gives the identity or a 180-degree rotation, and it is slow
on the CPU; the sets here flip with :class:`~histolib.layers.preprocessing.RandomFlips` (independent coins, row gathers).
"""

from __future__ import annotations

import keras

from histolib.layers.preprocessing import RandomFlips, RandomHEDJitter
from histolib.names import unknown_name

__all__ = ["NAMES", "TrainingAugmentation", "augmentation"]

NAMES = ("pcam-seed", "pcam", "pcam-strong", "subtype")
"""The augmentation sets :func:`augmentation` knows."""


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
    elif name in ("pcam", "pcam-strong"):
        hed = 0.05 if name == "pcam" else 0.2  # Tellez et al.'s HED-light and HED-strong
        layers = [RandomFlips(transpose=True, seed=_seed(seed, 0), **kw),
                  RandomHEDJitter(hed, hed, seed=_seed(seed, 3), **kw)] + colour
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

    Holds `augmentation` ``(augment, seed, dtype="float32")``. Called with ``training=True`` (as
    ``model.fit`` calls a model) it draws a fresh augmentation for every image of the batch,
    on the device the model runs on, under TensorFlow or JAX (in a ``jax.jit``-compiled step
    its random state is a model variable that advances each step). Called with
    ``training=False`` or without ``training`` (``predict``, ``evaluate``, ``model(x)``) it
    returns its input unchanged, so a saved model predicts as if the layer were not there.
    Its config is the set's name and seed, so a model holding it loads with
    ``keras.saving.load_model(..., safe_mode=True)`` once histolib's layers are imported.

    Args:
        augment: ``"pcam-seed"``, ``"pcam"`` or ``"subtype"`` (see `augmentation`).
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
