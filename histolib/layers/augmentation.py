"""`TrainingAugmentation`: an augmentation set of `histolib.data.augment` inside a model, active
only in training steps, so the host only decodes and the accelerator augments (TensorFlow or JAX).
`histolib.models.with_augmentation` puts one after a model's input."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="histolib")
class TrainingAugmentation(keras.layers.Layer):
    """An augmentation set inside a model: on in training steps, the identity otherwise.

    Holds `histolib.data.augment.augmentation` ``(augment, seed, dtype="float32")``. Called with ``training=True`` (as
    ``model.fit`` calls a model) it draws a fresh augmentation for every image of the batch,
    on the device the model runs on, under TensorFlow or JAX (in a ``jax.jit``-compiled step
    its random state is a model variable that advances each step). Called with
    ``training=False`` or without ``training`` (``predict``, ``evaluate``, ``model(x)``) it
    returns its input unchanged, so a saved model predicts as if the layer were not there.
    Its config is the set's name and seed, so a model holding it loads with
    ``keras.saving.load_model(..., safe_mode=True)`` once histolib's layers are imported.

    Args:
        augment: ``"pcam-seed"``, ``"pcam"`` or ``"subtype"`` (see `histolib.data.augment`).
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
        from histolib.data.augment import augmentation  # the sets; imported here, data imports layers

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
