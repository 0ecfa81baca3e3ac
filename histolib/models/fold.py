"""Inference copies of a model with batch normalisation folded into the convolutions before it.

At inference a ``BatchNormalization`` layer is a fixed per-channel affine map,
``y = s * (x - mean) + beta`` with ``s = gamma / sqrt(variance + epsilon)``. Where it directly
follows a convolution, the map can be moved into that convolution's kernel and bias, and the
layer disappears: the model computes the same function with one pass over each activation map
fewer. On a CPU under ``mixed_bfloat16`` the gain is large, because Keras's
``BatchNormalization`` upcasts its bfloat16 input to float32, normalises and casts back (three
passes over a map that a memory-bound depthwise layer has just written); ``bench/inference.py``
measures it on MobileNet. Training needs the unfolded model (the statistics and ``gamma`` are
learned there); fold a trained model for inference only.
"""

from __future__ import annotations

import keras
import numpy as np

from histolib.layers.folded import FoldedBatchNorm

#: Convolutions a following BatchNormalization can be folded into.
FOLDABLE = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


def _producer(layer):
    """The layer whose output ``layer`` takes as its single input, else None."""
    if len(layer._inbound_nodes) != 1:
        return None
    inputs = layer._inbound_nodes[0].input_tensors
    return inputs[0]._keras_history.operation if len(inputs) == 1 else None


def foldable_pairs(model: keras.Model) -> dict:
    """``{convolution name: batch-norm layer}`` for each BatchNormalization (over the last
    axis) whose only input is a channels-last convolution used by nothing else, in
    `FOLDABLE` (``Conv2D`` with ``groups=1``, ``DepthwiseConv2D``, ``SeparableConv2D``)."""
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or layer.axis not in (-1, 3):
            continue
        conv = _producer(layer)
        if (isinstance(conv, FOLDABLE) and conv.data_format == "channels_last"
                and getattr(conv, "groups", 1) == 1 and len(conv._outbound_nodes) == 1
                and len(conv._inbound_nodes) == 1):
            pairs[conv.name] = layer
    return pairs


def _folded_weights(conv, bn) -> list:
    """``conv``'s weights with ``bn`` folded in, in the order ``get_weights`` gives (bias last)."""
    variance = np.asarray(bn.moving_variance, np.float64)
    scale = (np.asarray(bn.gamma, np.float64) if bn.scale else 1.0) / np.sqrt(variance + bn.epsilon)
    beta = np.asarray(bn.beta, np.float64) if bn.center else 0.0
    mean = np.asarray(bn.moving_mean, np.float64)
    weights = [np.asarray(w, np.float64) for w in conv.get_weights()]
    bias = weights.pop() if conv.use_bias else np.zeros_like(mean)
    if isinstance(conv, keras.layers.DepthwiseConv2D):  # kernel (kh, kw, c_in, multiplier)
        weights[0] = weights[0] * scale.reshape(weights[0].shape[2:])
    else:  # Conv2D (kh, kw, c_in, c_out); SeparableConv2D: its pointwise kernel (1, 1, c, c_out)
        weights[-1] = weights[-1] * scale
    return [*weights, (bias - mean) * scale + beta]


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """A copy of the functional ``model`` for inference, each foldable BatchNormalization
    (see `foldable_pairs`) folded into the convolution before it and replaced by a
    `FoldedBatchNorm` (identity) layer of the same name; every other layer and weight copied unchanged.

    Same input and output shapes and dtype policy; the outputs agree with ``model(x,
    training=False)`` up to float round-off. ``model`` itself is not changed.

    Raises:
        ValueError: if ``model`` is not a functional ``keras.Model`` (a subclassed model has
            no graph to rewrite).
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "_operations"):
        raise ValueError(f"fold_batch_norm needs a functional keras.Model. Received: {model!r}")
    pairs = foldable_pairs(model)
    folded_bn = {bn.name for bn in pairs.values()}

    def clone(layer):
        if layer.name in folded_bn:
            return FoldedBatchNorm(name=layer.name, dtype=layer.dtype_policy)
        config = layer.get_config()
        if layer.name in pairs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.name in folded_bn or not layer.weights:
            continue
        weights = _folded_weights(layer, pairs[layer.name]) if layer.name in pairs else layer.get_weights()
        folded.get_layer(layer.name).set_weights(weights)
    return folded


def calibrate_batch_norm(model: keras.Model, images, *, until: str | None = None, freeze: bool = True) -> keras.Model:
    """Give a randomly initialised backbone's batch norms the statistics of ``images``.

    A batch norm that was never trained holds mean 0 and variance 1, so in inference mode (the
    mode of a frozen layer) it rescales nothing and a random backbone's signal shrinks layer by
    layer (MobileNet's pooled features end near 1e-20). One forward pass over ``images`` in
    training mode with momentum 0 makes each batch norm's moving statistics those of that batch;
    then, with ``freeze``, the layers up to ``until`` stop training. ``model`` is changed in
    place (momenta restored afterwards).

    Args:
        model: a functional ``keras.Model``.
        images: a batch ``(b, h, w, 3)`` as the model takes it (e.g. 64 training images).
        until: the name of the last layer to calibrate and freeze (e.g. the backbone's
            ``gradcam_layer``); ``None``: the whole model.
        freeze: set ``trainable = False`` on every layer up to ``until``.

    Returns:
        ``model``.
    """
    end = len(model.layers) if until is None else model.layers.index(model.get_layer(until)) + 1
    layers = model.layers[:end]
    norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0  # the moving statistics become this batch's
    keras.Model(model.inputs, layers[-1].output)(images, training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum
    if freeze:
        for layer in layers:
            layer.trainable = False
    return model

