"""``with_augmentation``: a model that augments its own training batches, on its own device.

Augmenting in ``tf.data`` keeps the host busy: on a CPU without AVX-512 the augmented stream of
PCam patches measured about a quarter of the plain one's images/s, and an accelerator fed by a
few host cores waits on it. `with_augmentation` moves the augmentation into the model, right
after its input, as a `histolib.layers.TrainingAugmentation` layer: it runs inside the
compiled training step (TensorFlow or JAX), is the identity at inference, and is saved with
the model.
"""

from __future__ import annotations

import keras

from histolib.layers.augmentation import NAMES, TrainingAugmentation


def with_augmentation(model: keras.Model, augment: str, *, seed: int | None = 0,
                      name: str = "augment") -> keras.Model:
    """``model`` with the augmentation set ``augment`` applied to its input in training steps.

    The model is cloned with ``keras.models.clone_model`` (the same layers by config, so the
    same names, dtype policies and frozen layers) on a fresh input, every use of the input fed
    the output of a `TrainingAugmentation` layer instead, and each layer's weights are copied
    from ``model``. The layers are copies, not shared: a shared layer's ``output`` would still
    be its tensor in ``model``'s graph, which Grad-CAM and attention maps read. The result stays
    flat: ``[image, augment, <the model's layers>...]``, so ``get_layer`` finds the same names.
    Call it before ``compile``, inside the strategy or distribution scope the model is trained
    under, and train the result (not ``model``).

    Args:
        model: a functional model with one image input ``(batch, h, w, 3)`` in [0, 1].
        augment: ``"pcam-seed"``, ``"pcam"`` or ``"subtype"`` (`histolib.layers.augmentation`).
        seed: base seed of the set's layers.
        name: the augmentation layer's name.

    Returns:
        A new ``keras.Model`` with the same name, input, output and weights: identical
        predictions, augmented training.

    Raises:
        ValueError: an unknown set, a model with several inputs, or one that already augments.
    """
    if augment not in NAMES:
        raise ValueError(f"augment must be one of {NAMES}. Received: augment={augment!r}")
    if len(model.inputs) != 1:
        raise ValueError(f"with_augmentation needs a model with one image input. Received: {len(model.inputs)} inputs")
    if any(isinstance(layer, TrainingAugmentation) for layer in model.layers):
        raise ValueError(f"model {model.name!r} already augments its input (a TrainingAugmentation layer)")
    source = model.inputs[0]
    image = keras.Input(batch_shape=source.shape, dtype=source.dtype, name=source.name)
    augmented = TrainingAugmentation(augment, seed, name=name)(image)

    def call_function(layer, *args, **kwargs):
        args = [augmented if arg is image else arg for arg in args]
        return layer(*args, **kwargs)

    clone = keras.models.clone_model(model, input_tensors=image, call_function=call_function)
    for layer in model.layers[1:]:
        clone.get_layer(layer.name).set_weights(layer.get_weights())
    return clone
