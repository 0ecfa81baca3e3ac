"""The two seed projects' models, as published.

- `build_seed_pcam_model`: the PatchCamelyon seed, 494,337 parameters.
- `build_seed_subtype_model`: the ovarian-subtype seed over a frozen ImageNet backbone.
"""

from __future__ import annotations

import keras

from histolib.layers import SelfAttention, ThresholdedAttention

#: The PCam seed's published parameter count.
SEED_PCAM_PARAMS = 494_337
#: The name of the PCam seed's last convolution, for Grad-CAM.
SEED_PCAM_LAST_CONV = "conv3"


def seed_cnn_features(inputs, *, l2: float = 1e-4):
    """The PCam seed's convolutional trunk on ``inputs`` ``(batch, h, w, 3)`` in [0, 1].

    Three blocks of ``Conv2D(f, 3, padding="same", activation="relu")`` then
    ``MaxPooling2D(2)``, with ``f`` = 64, 128, 256 and L2 ``l2`` on the kernels. The
    convolutions are named ``conv1`` ... ``conv3`` (the last is Grad-CAM's layer). Returns the
    map ``(batch, h // 8, w // 8, 256)``: 12x12 at 96 pixels.
    """
    x = inputs
    for index, filters in enumerate((64, 128, 256), start=1):
        x = keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            activation="relu",
            kernel_regularizer=keras.regularizers.L2(l2),
            name=f"conv{index}",
        )(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
    return x


def build_seed_pcam_model(input_shape=(96, 96, 3), *, l2: float = 1e-4) -> keras.Model:
    """The PCam seed's model: three conv blocks, single-head self-attention, a small head.

    Input ``(batch, 96, 96, 3)`` float32 in [0, 1] (the seed rescaled TFDS's uint8 by 1/255;
    the data front door already gives [0, 1], so there is no scaling layer). Layers:
    `seed_cnn_features` (to ``(batch, 12, 12, 256)``), ``Reshape`` to 144 tokens
    ``(batch, 144, 256)``, ``SelfAttention(key_dim=128)`` (``(batch, 144, 128)``),
    ``GlobalAveragePooling1D``, ``Dense(64, relu)``, ``Dropout(0.5)``, ``Dense(1, sigmoid)``,
    with L2 ``l2`` on every kernel (convolutions, attention projections, dense layers).

    Parameters at 96x96: convolutions 1,792 + 73,856 + 295,168; attention 4 x Dense(128)
    = 3 x 32,896 + 16,512; head 8,256 + 65; total 494,337, the published count.

    Output: ``(batch, 1)`` float32, the sigmoid probability of class 1 (tumour); see
    `histolib.models.positive_probability`.
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[-1] != 3 or shape[0] is None or shape[0] % 8 or shape[1] % 8:
        raise ValueError(
            "input_shape must be (h, w, 3) with h and w multiples of 8 (the seed: (96, 96, 3)). "
            f"Received: input_shape={input_shape!r}"
        )
    regularizer = keras.regularizers.L2(l2)
    inputs = keras.Input(shape, name="image")
    x = seed_cnn_features(inputs, l2=l2)
    _, h, w, c = x.shape
    x = keras.layers.Reshape((h * w, c), name="tokens")(x)  # (batch, 144, 256) at 96 px
    x = SelfAttention(key_dim=128, kernel_regularizer=regularizer, name="attention")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool_tokens")(x)
    x = keras.layers.Dense(64, activation="relu", kernel_regularizer=regularizer, name="fc")(x)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    outputs = keras.layers.Dense(
        1, activation="sigmoid", kernel_regularizer=regularizer, dtype="float32", name="prob"
    )(x)
    return keras.Model(inputs, outputs, name="seed_pcam")
