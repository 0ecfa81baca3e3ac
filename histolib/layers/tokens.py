"""What the attention layers share: feature maps as token sequences, the float32 softmax,
their ``Dense`` projections, and `QKVAttention`, the base of the two seed layers.

A convolutional feature map ``(batch, h, w, c)`` becomes ``(batch, h * w, c)`` tokens in
row-major order (token ``i * w + j`` is pixel ``(i, j)``), the order ``keras.layers.Reshape``
gives, so a token's attention can be drawn back onto the grid with ``reshape(h, w)``.
"""

from __future__ import annotations

import keras
from keras import ops


def _rank_3_or_4(shape, name: str) -> tuple:
    shape = tuple(shape)
    if len(shape) not in (3, 4):
        raise ValueError(
            "Expected tokens (batch, n, channels) or a feature map (batch, h, w, channels). "
            f"Received: {name}={shape}"
        )
    return shape


def to_tokens(x):
    """Flatten a feature map ``(batch, h, w, c)`` to tokens ``(batch, h * w, c)``.

    Tokens ``(batch, n, c)`` pass through unchanged. ``h``, ``w`` and ``c`` must be known
    statically (they are for any convolutional backbone with a fixed input size); the batch
    may be dynamic.

    Raises:
        ValueError: for any other rank, or a map with unknown spatial size.
    """
    shape = _rank_3_or_4(x.shape, "inputs.shape")
    if len(shape) == 3:
        return x
    _, h, w, c = shape
    if h is None or w is None or c is None:
        raise ValueError(
            "A feature map needs a static height, width and channel count to become tokens. "
            f"Received: inputs.shape={shape}"
        )
    return ops.reshape(x, (-1, h * w, c))  # (batch, h, w, c) -> (batch, h*w, c)


def token_shape(input_shape) -> tuple:
    """The token shape ``(batch, n, c)`` for an input shape of rank 3 or 4 (see `to_tokens`)."""
    shape = _rank_3_or_4(input_shape, "input_shape")
    if len(shape) == 3:
        return shape
    _, h, w, c = shape
    return (shape[0], None if h is None or w is None else h * w, c)


def softmax_float32(scores, key_mask=None):
    """Softmax over the last axis computed in float32, whatever the compute dtype.

    Under ``mixed_bfloat16`` the scores arrive in bfloat16, whose 8-bit mantissa makes
    ``exp`` and the normalising sum lose the small weights; the result stays float32 and
    the caller casts it back where it meets the values. ``key_mask`` ``(batch, n)``, True on
    real tokens, gives padded keys no weight (scores ``(batch, ..., n)``).
    """
    scores = ops.cast(scores, "float32")
    if key_mask is not None:
        shape = (ops.shape(key_mask)[0],) + (1,) * (len(scores.shape) - 2) + (ops.shape(key_mask)[-1],)
        scores = ops.where(ops.reshape(ops.cast(key_mask, "bool"), shape), scores, -1e9)
    return ops.softmax(scores, axis=-1)


def dense(units, *, name, use_bias, layer):
    """A ``Dense`` sublayer that inherits ``layer``'s dtype policy and kernel settings.

    The initializer is cloned per sublayer (as ``keras.layers.MultiHeadAttention`` does), so
    the projections never share one initializer object.
    """
    return keras.layers.Dense(
        units,
        use_bias=use_bias,
        kernel_initializer=layer.kernel_initializer.__class__.from_config(
            layer.kernel_initializer.get_config()
        ),
        kernel_regularizer=layer.kernel_regularizer,
        dtype=layer.dtype_policy,
        name=name,
    )


class QKVAttention(keras.layers.Layer):
    """Base of `SelfAttention` and `ThresholdedAttention`: ``key_dim``, the kernel settings,
    the ``query``, ``key`` and ``value`` projections (``Dense(key_dim)`` with bias, built on
    tokens ``(batch, n, c)``), an ``output_dense`` one where ``OUTPUT_PROJECTION`` is true,
    and the config. Subclasses write ``call``; `project` gives them ``(x, q, k, v)``.
    """

    OUTPUT_PROJECTION = False

    def __init__(self, key_dim: int, *, kernel_initializer="glorot_uniform", kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(key_dim, int) or isinstance(key_dim, bool) or key_dim < 1:
            raise ValueError(f"key_dim must be a positive integer. Received: key_dim={key_dim!r}")
        self.key_dim = key_dim
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        tokens = token_shape(input_shape)
        self.query = dense(self.key_dim, name="query", use_bias=True, layer=self)
        self.key = dense(self.key_dim, name="key", use_bias=True, layer=self)
        self.value = dense(self.key_dim, name="value", use_bias=True, layer=self)
        for projection in (self.query, self.key, self.value):
            projection.build(tokens)
        if self.OUTPUT_PROJECTION:
            self.output_dense = dense(self.key_dim, name="output_dense", use_bias=True, layer=self)
            self.output_dense.build(tokens[:-1] + (self.key_dim,))
        self.built = True

    def project(self, inputs):
        """Tokens ``x`` ``(batch, n, c)`` and their projections ``q``, ``k``, ``v`` ``(batch, n, key_dim)``."""
        x = to_tokens(inputs)
        return x, self.query(x), self.key(x), self.value(x)

    def get_config(self):
        return {
            **super().get_config(),
            "key_dim": self.key_dim,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        }
