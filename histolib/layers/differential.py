"""Differential attention (Ye et al. 2024) for image tokens."""

from __future__ import annotations

import math

import keras
from keras import ops

from histolib.layers.tokens import dense, softmax_float32, to_tokens, token_shape


def lambda_init_for_depth(depth: int) -> float:
    """``0.8 - 0.6 * exp(-0.3 * depth)``, the paper's lambda_init, with depth counted from 0."""
    return 0.8 - 0.6 * math.exp(-0.3 * depth)


@keras.saving.register_keras_serializable(package="histolib")
class DifferentialAttention(keras.layers.Layer):
    """Differential attention: the difference of two softmax maps, per head pair.

    Ye et al. 2024, "Differential Transformer" (https://arxiv.org/abs/2410.05258), after the
    official code (microsoft/unilm, ``Diff-Transformer/multihead_diffattn.py``), for image
    tokens: no causal mask and no rotary embedding. With tokens ``x`` of shape
    ``(batch, n, c)``, ``h = num_heads`` and ``d = head_dim``:

    - ``q_proj``, ``k_proj``, ``v_proj`` are ``Dense(2 * h * d, use_bias=False)``; q and k
      are split into ``2h`` heads of width ``d``, v into ``h`` heads of width ``2d``. Head
      pair ``i`` is made of the q/k heads ``2i`` and ``2i + 1``, as in the official code, so
      weights compare one to one.
    - ``A_i = softmax(Q_2i K_2i^T / sqrt(d)) - lam * softmax(Q_2i+1 K_2i+1^T / sqrt(d))``
      (softmax in float32), with
      ``lam = exp(sum(lambda_q1 * lambda_k1)) - exp(sum(lambda_q2 * lambda_k2)) + lambda_init``,
      one ``lam`` shared by all heads. Each row of ``A_i`` sums to ``1 - lam``.
    - ``O_i = RMSNorm(A_i V_i) * (1 - lambda_init)``, the RMSNorm over the ``2d`` features
      (eps 1e-5) with one learnable scale ``subln_scale`` of shape ``(2d,)`` shared by all
      heads.
    - The heads are concatenated, ``(batch, n, 2 * h * d)``, and ``out_proj``
      (``Dense(c, use_bias=False)``) maps them back to ``c`` channels.

    Attributes:
        q_proj, k_proj, v_proj, out_proj: the ``Dense`` projections.
        lambda_q1, lambda_k1, lambda_q2, lambda_k2: float32 weights of shape ``(d,)``,
            initialised N(0, 0.1).
        subln_scale: the RMSNorm scale, shape ``(2d,)``, initialised to ones.
        lambda_init: the float ``0.8 - 0.6 * exp(-0.3 * depth)``.

    Args:
        num_heads: ``h``, the number of head pairs (attention maps returned).
        head_dim: ``d``; ``None`` gives the paper's ``c // num_heads // 2``.
        depth: the layer's index in a stack, from 0; sets ``lambda_init``.
        kernel_initializer: initializer of the four projection kernels.
        kernel_regularizer: regularizer of the four projection kernels.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Call arguments:
        inputs: tokens ``(batch, n, c)`` or a map ``(batch, h, w, c)`` (flattened to
            ``h * w`` tokens in row-major order, see `histolib.layers.to_tokens`).
        mask: optional ``(batch, n)`` bool, True on real tokens: padded keys get no weight.
        return_attention_scores: if ``True``, also return the differential maps.

    Returns:
        ``(batch, n, c)`` in the compute dtype; with ``return_attention_scores=True`` the
        tuple ``(output, A)`` with ``A`` of shape ``(batch, num_heads, n, n)`` in float32.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int | None = None,
        depth: int = 0,
        *,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.supports_masking = True  # tokens in, the same tokens out: a padding mask passes through
        if not isinstance(num_heads, int) or isinstance(num_heads, bool) or num_heads < 1:
            raise ValueError(
                f"num_heads must be a positive integer. Received: num_heads={num_heads!r}"
            )
        if head_dim is not None and (
            not isinstance(head_dim, int) or isinstance(head_dim, bool) or head_dim < 1
        ):
            raise ValueError(
                f"head_dim must be a positive integer or None. Received: head_dim={head_dim!r}"
            )
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
            raise ValueError(f"depth must be an integer >= 0. Received: depth={depth!r}")
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.depth = depth
        self.lambda_init = lambda_init_for_depth(depth)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        tokens = token_shape(input_shape)
        channels = tokens[-1]
        d = self.head_dim if self.head_dim is not None else channels // self.num_heads // 2
        if d < 1:
            raise ValueError(
                f"head_dim defaults to channels // num_heads // 2, which is 0 for "
                f"{channels} channels and {self.num_heads} heads; pass head_dim or fewer "
                f"heads. Received: num_heads={self.num_heads}, input_shape={tuple(input_shape)}"
            )
        self._d = d
        width = 2 * self.num_heads * d
        self.q_proj = dense(width, name="q_proj", use_bias=False, layer=self)
        self.k_proj = dense(width, name="k_proj", use_bias=False, layer=self)
        self.v_proj = dense(width, name="v_proj", use_bias=False, layer=self)
        self.out_proj = dense(channels, name="out_proj", use_bias=False, layer=self)
        for projection in (self.q_proj, self.k_proj, self.v_proj):
            projection.build(tokens)
        self.out_proj.build(tokens[:-1] + (width,))
        normal = keras.initializers.RandomNormal(mean=0.0, stddev=0.1)
        for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            setattr(
                self,
                name,
                self.add_weight(
                    name=name, shape=(d,), initializer=normal, dtype="float32", autocast=False
                ),
            )
        self.subln_scale = self.add_weight(
            name="subln_scale", shape=(2 * d,), initializer="ones", dtype="float32", autocast=False
        )
        self.built = True

    def lam(self):
        """The current ``lam`` (a float32 scalar tensor)."""
        return (
            ops.exp(ops.sum(self.lambda_q1 * self.lambda_k1))
            - ops.exp(ops.sum(self.lambda_q2 * self.lambda_k2))
            + self.lambda_init
        )

    def call(self, inputs, mask=None, return_attention_scores=False):
        x = to_tokens(inputs)  # (batch, n, c)
        n = x.shape[1] if x.shape[1] is not None else ops.shape(x)[1]
        h, d = self.num_heads, self._d
        # (batch, n, 2h*d) -> (batch, n, 2h, d) -> (batch, 2h, n, d): head j = columns j*d ...
        q = ops.transpose(ops.reshape(self.q_proj(x), (-1, n, 2 * h, d)), (0, 2, 1, 3))
        k = ops.transpose(ops.reshape(self.k_proj(x), (-1, n, 2 * h, d)), (0, 2, 1, 3))
        # (batch, n, 2h*d) -> (batch, n, h, 2d) -> (batch, h, n, 2d)
        v = ops.transpose(ops.reshape(self.v_proj(x), (-1, n, h, 2 * d)), (0, 2, 1, 3))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / math.sqrt(d)  # (b, 2h, n, n)
        weights = softmax_float32(scores, mask)  # padded keys (mask False) get no weight
        weights = ops.reshape(weights, (-1, h, 2, n, n))  # pair i = heads 2i, 2i+1
        attention = weights[:, :, 0] - self.lam() * weights[:, :, 1]  # (batch, h, n, n)
        heads = ops.matmul(attention, ops.cast(v, "float32"))  # (batch, h, n, 2d), float32
        rms = ops.sqrt(ops.mean(ops.square(heads), axis=-1, keepdims=True) + 1e-5)
        heads = heads / rms * self.subln_scale * (1.0 - self.lambda_init)
        # (batch, h, n, 2d) -> (batch, n, h, 2d) -> (batch, n, 2h*d)
        heads = ops.reshape(ops.transpose(heads, (0, 2, 1, 3)), (-1, n, 2 * h * d))
        out = self.out_proj(ops.cast(heads, self.compute_dtype))  # (batch, n, c)
        if return_attention_scores:
            return out, attention
        return out

    def get_config(self):
        base = super().get_config()
        config = {
            "num_heads": self.num_heads,
            "head_dim": self.head_dim,
            "depth": self.depth,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        }
        return {**base, **config}
