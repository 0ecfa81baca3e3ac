"""Pooling a bag of instances into one vector: attention-based MIL, and a masked max pooling.

A *bag* is a set of instances (tiles of a slide or an image), each a feature vector; bags of
different sizes are padded to one length ``n`` and come with a boolean mask ``(batch, n)``
that is True on real instances. Both layers here accept that mask as a call argument or
through Keras masking (a ``keras.layers.Masking`` or an ``Embedding(mask_zero=True)`` before
them), and give padding no weight at all. Keras's own ``GlobalAveragePooling1D`` is the
masked mean; its ``GlobalMaxPooling1D`` ignores masks, hence `MaskedGlobalMaxPooling1D`.
"""

from __future__ import annotations

import keras
from keras import ops

from histolib.layers.tokens import dense, softmax_float32

#: The logit given to padding before the softmax: exp(-1e9 - max) is exactly 0 in float32.
_PADDING_LOGIT = -1e9


def _check_bag_shape(input_shape) -> tuple:
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[-1] is None:
        raise ValueError(
            "Expected bags of instances (batch, instances, channels) with a known channel count. "
            f"Received: input_shape={shape}"
        )
    return shape


def _bool_mask(mask):
    return None if mask is None else ops.cast(mask, "bool")


@keras.saving.register_keras_serializable(package="histolib")
class AttentionMILPooling(keras.layers.Layer):
    """Attention-based multiple-instance pooling: a learnt weighted mean over a bag.

    Ilse, Tomczak and Welling 2018, "Attention-based Deep Multiple Instance Learning"
    (https://arxiv.org/abs/1802.04712), equations 8 and 9. With a bag ``h`` of shape
    ``(batch, n, c)`` (``n`` instances of ``c`` channels), ``V`` and ``U`` ``Dense(units)``
    layers and ``w`` a ``Dense(1)`` layer, each with a bias, the layer scores every instance,

    - plain (``gated=False``): ``e_k = w^T tanh(V h_k)``;
    - gated (``gated=True``): ``e_k = w^T (tanh(V h_k) * sigmoid(U h_k))``, the sigmoid gate
      letting the score depend on more than tanh's near-linear range;

    turns the scores into weights with a softmax over the bag's real instances (in float32,
    whatever the dtype policy), ``a_k = exp(e_k) / sum_j exp(e_j)``, with ``a_k = 0`` exactly
    on padding, and returns ``z = sum_k a_k h_k`` of shape ``(batch, c)``. The weights do not
    depend on the order of the instances, so neither does ``z`` (permutation invariance), and
    padded instances change nothing.

    Args:
        units: width of ``V`` and ``U`` (the paper: 128).
        gated: use the gated score (the paper's better variant) instead of the plain one.
        kernel_initializer: initializer of the ``V``, ``U`` and ``w`` kernels.
        kernel_regularizer: regularizer of the ``V``, ``U`` and ``w`` kernels.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Call arguments:
        inputs: a bag ``(batch, n, c)``.
        mask: optional boolean ``(batch, n)``, True on real instances, False on padding;
            Keras's own mask is used when none is given. A bag with no real instance pools
            to zeros, with zero weights.
        return_attention_scores: if ``True``, also return the weights ``a``.

    Returns:
        ``(batch, c)`` in the compute dtype; with ``return_attention_scores=True`` the tuple
        ``(pooled, scores)`` with ``scores`` of shape ``(batch, n)`` in float32, summing to 1
        over each bag's real instances and exactly 0 on padding.
    """

    def __init__(self, units: int = 128, gated: bool = True, *, kernel_initializer="glorot_uniform",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, int) or isinstance(units, bool) or units < 1:
            raise ValueError(f"units must be a positive integer. Received: units={units!r}")
        if not isinstance(gated, bool):
            raise ValueError(f"gated must be True or False. Received: gated={gated!r}")
        self.units = units
        self.gated = gated
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.supports_masking = True

    def build(self, input_shape):
        shape = _check_bag_shape(input_shape)
        self.attention_v = dense(self.units, name="attention_v", use_bias=True, layer=self)
        self.attention_v.build(shape)
        if self.gated:
            self.attention_u = dense(self.units, name="attention_u", use_bias=True, layer=self)
            self.attention_u.build(shape)
        self.attention_w = dense(1, name="attention_w", use_bias=True, layer=self)
        self.attention_w.build(shape[:-1] + (self.units,))
        self.built = True

    def call(self, inputs, mask=None, return_attention_scores=False):
        hidden = ops.tanh(self.attention_v(inputs))  # (batch, n, units)
        if self.gated:
            hidden = hidden * ops.sigmoid(self.attention_u(inputs))
        logits = ops.cast(ops.squeeze(self.attention_w(hidden), axis=-1), "float32")  # (batch, n)
        mask = _bool_mask(mask)
        if mask is not None:
            logits = ops.where(mask, logits, _PADDING_LOGIT)
        scores = softmax_float32(logits)  # (batch, n), float32
        if mask is not None:  # exact zeros, also in a bag that is all padding
            scores = ops.where(mask, scores, 0.0)
        weights = ops.expand_dims(ops.cast(scores, inputs.dtype), axis=1)  # (batch, 1, n)
        pooled = ops.squeeze(ops.matmul(weights, inputs), axis=1)  # (batch, 1, c) -> (batch, c)
        if return_attention_scores:
            return pooled, scores
        return pooled

    def compute_mask(self, inputs, mask=None):
        return None  # the instance axis is pooled away

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "gated": self.gated,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        }


@keras.saving.register_keras_serializable(package="histolib")
class MaskedGlobalMaxPooling1D(keras.layers.Layer):
    """The channel-wise maximum over a bag's real instances (max-pooling MIL).

    ``keras.layers.GlobalMaxPooling1D`` takes every position, padding included; this layer
    takes the maximum ``z_c = max_k h_kc`` over the instances where ``mask`` is True only, and
    gives zeros for a bag with no real instance. Like `AttentionMILPooling`, it is invariant
    to the order of the instances and to padding.

    Args:
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Call arguments:
        inputs: a bag ``(batch, n, c)``.
        mask: optional boolean ``(batch, n)``, True on real instances; Keras's own mask is
            used when none is given.

    Returns:
        ``(batch, c)`` in the compute dtype.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def build(self, input_shape):
        _check_bag_shape(input_shape)
        self.built = True

    def call(self, inputs, mask=None):
        mask = _bool_mask(mask)
        if mask is None:
            return ops.max(inputs, axis=1)
        real = ops.expand_dims(mask, axis=-1)  # (batch, n, 1)
        pooled = ops.max(ops.where(real, inputs, float("-inf")), axis=1)  # (batch, c)
        return ops.where(ops.any(mask, axis=1, keepdims=True), pooled, ops.zeros_like(pooled))

    def compute_mask(self, inputs, mask=None):
        return None
