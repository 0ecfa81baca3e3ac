"""Unscaled softmax attention with below-uniform weights zeroed: the ovarian seed's layer."""

from __future__ import annotations

import keras
from keras import ops

from histolib.layers.tokens import QKVAttention, softmax_float32


@keras.saving.register_keras_serializable(package="histolib")
class ThresholdedAttention(QKVAttention):
    """Softmax attention that keeps only the above-uniform weights (the ovarian seed's layer).

    The ovarian-subtype seed called this layer "differential attention"; it is not the
    Differential Transformer's (that is `DifferentialAttention`). With tokens ``x`` of shape
    ``(batch, n, c)`` and ``k = key_dim``: ``Q``, ``K``, ``V`` are ``Dense(k)`` projections
    with bias, ``A = softmax(Q K^T)`` of shape ``(batch, n, n)`` with *no* ``1/sqrt(k)``
    scaling, every entry of ``A`` not above ``1/n`` is set to zero (no renormalisation), and
    the output is ``A V``, with no output projection.

    The seed thresholds at ``mean(A)`` taken over the whole batch tensor. Each row of a
    softmax sums to one, so that mean is exactly ``1/n`` whatever the batch holds: the rule
    keeps the weights above uniform, and no image depends on its batch companions. This layer
    uses ``1/n`` itself, which is the same rule without the float round-off of a batch mean.
    The kept rows sum to less than one, so the output shrinks where attention is diffuse.

    The missing ``1/sqrt(k)`` matters at the seed's widths (``k = c`` = 1024 or 2048): where
    the entries of ``q`` and ``k`` have unit variance, a logit ``q . k`` sums ``k`` such
    products and has a standard deviation of ``sqrt(k)`` (32 to 45) instead of 1, so the
    softmax is close to one-hot: each token attends to one other token, the threshold keeps
    little more than that one weight, and the gradients through the softmax all but vanish.

    A feature map ``(batch, h, w, c)`` is accepted too and flattened to ``h * w`` tokens in
    row-major order first (see `histolib.layers.to_tokens`).

    Args:
        key_dim: width of the query, key and value projections (the seed: the backbone's
            channel count, 2048 for InceptionV3 and Xception, 1024 for MobileNet).
        kernel_initializer: initializer of the three projection kernels.
        kernel_regularizer: regularizer of the three projection kernels.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Call arguments:
        inputs: tokens ``(batch, n, c)`` or a map ``(batch, h, w, c)``.
        mask: optional ``(batch, n)`` bool, True on real tokens: padded keys get no weight and
            ``n`` counts the real tokens (bags of different sizes, padded).
        return_attention_scores: if ``True``, also return the thresholded map.

    Returns:
        ``(batch, n, key_dim)`` in the compute dtype; with ``return_attention_scores=True``
        the tuple ``(output, A)`` with the thresholded ``A`` of shape ``(batch, n, n)`` in
        float32.
    """

    def __init__(self, key_dim: int, **kwargs):
        super().__init__(key_dim, **kwargs)
        self.supports_masking = True  # tokens in, the same tokens out: a padding mask passes through

    def call(self, inputs, mask=None, return_attention_scores=False):
        x, q, k, v = self.project(inputs)  # x (batch, n, c); q, k, v (batch, n, key_dim)
        n = x.shape[1] if x.shape[1] is not None else ops.shape(x)[1]
        attention = softmax_float32(ops.matmul(q, ops.transpose(k, (0, 2, 1))), mask)  # (batch, n, n)
        if mask is None:
            uniform = 1.0 / ops.cast(n, "float32")
        else:  # (batch, 1, 1): each bag's own count of real tokens
            uniform = 1.0 / ops.reshape(ops.sum(ops.cast(mask, "float32"), axis=-1), (-1, 1, 1))
        attention = ops.where(attention > uniform, attention, ops.zeros_like(attention))
        out = ops.matmul(ops.cast(attention, v.dtype), v)  # (batch, n, k)
        if return_attention_scores:
            return out, attention
        return out
