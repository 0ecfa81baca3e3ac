"""Single-head scaled dot-product self-attention: the PCam seed's block."""

from __future__ import annotations

import math

import keras
from keras import ops

from histolib.layers.tokens import QKVAttention, softmax_float32


@keras.saving.register_keras_serializable(package="histolib")
class SelfAttention(QKVAttention):
    """Single-head self-attention over image tokens, as in the PCam seed.

    Vaswani et al. 2017, "Attention Is All You Need" (https://arxiv.org/abs/1706.03762),
    with one head. With tokens ``x`` of shape ``(batch, n, c)`` (``n`` tokens of ``c``
    channels) and ``k = key_dim``, the layer computes ``Q = x W_q + b_q``, ``K = x W_k + b_k``,
    ``V = x W_v + b_v`` (each ``Dense(k)`` with bias), the map
    ``A = softmax(Q K^T / sqrt(k))`` of shape ``(batch, n, n)`` (the softmax in float32
    whatever the dtype policy), and returns ``(A V) W_o + b_o`` with ``W_o`` a ``Dense(k)``.
    Every row of ``A`` sums to one. The output has ``key_dim`` channels, not ``c``.

    A feature map ``(batch, h, w, c)`` is accepted too and flattened to ``h * w`` tokens in
    row-major order first (see `histolib.layers.to_tokens`).

    Args:
        key_dim: width of the query, key, value and output projections (the seed: 128).
        kernel_initializer: initializer of the four projection kernels.
        kernel_regularizer: regularizer of the four projection kernels (the seed: L2 1e-4).
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Call arguments:
        inputs: tokens ``(batch, n, c)`` or a map ``(batch, h, w, c)``.
        return_attention_scores: if ``True``, also return the attention map.

    Returns:
        ``(batch, n, key_dim)`` in the compute dtype; with ``return_attention_scores=True``
        the tuple ``(output, A)`` with ``A`` of shape ``(batch, n, n)`` in float32.
    """

    OUTPUT_PROJECTION = True

    def __init__(self, key_dim: int = 128, **kwargs):
        super().__init__(key_dim, **kwargs)

    def call(self, inputs, return_attention_scores=False):
        _, q, k, v = self.project(inputs)  # each (batch, n, key_dim)
        scores = ops.matmul(q, ops.transpose(k, (0, 2, 1))) / math.sqrt(self.key_dim)
        attention = softmax_float32(scores)  # (batch, n, n), float32
        out = self.output_dense(ops.matmul(ops.cast(attention, v.dtype), v))  # (batch, n, k)
        if return_attention_scores:
            return out, attention
        return out
