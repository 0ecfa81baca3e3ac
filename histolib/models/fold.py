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

#: Convolutions a following BatchNormalization can be folded into.
FOLDABLE = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


@keras.saving.register_keras_serializable(package="histolib")
class FoldedBatchNorm(keras.layers.Layer):
    """Where a BatchNormalization was, after `fold_batch_norm`: passes its input through
    unchanged (it takes the ``training`` and ``mask`` arguments the batch norm was called with)."""

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


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
