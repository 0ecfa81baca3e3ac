"""`FoldedBatchNorm`: what stands where a batch norm was, after `histolib.models.fold_batch_norm`."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="histolib")
class FoldedBatchNorm(keras.layers.Layer):
    """Where a BatchNormalization was, after `fold_batch_norm`: passes its input through
    unchanged (it takes the ``training`` and ``mask`` arguments the batch norm was called with)."""

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape
