"""The two seed projects' models, as published.

- `build_seed_pcam_model`: the PatchCamelyon seed, 494,337 parameters.
- `build_seed_subtype_model`: the ovarian-subtype seed over a frozen ImageNet backbone.
"""

from __future__ import annotations

import keras

from histolib.layers import SelfAttention, ThresholdedAttention
from histolib.models.backbones import get_backbone, seed_cnn_features
from histolib.models.classifier import backbone_features, check_input_shape

#: The PCam seed's published parameter count.
SEED_PCAM_PARAMS = 494_337


def build_seed_pcam_model(input_shape=(96, 96, 3), *, l2: float = 1e-4,
                          centre_inputs: bool = False) -> keras.Model:
    """The PCam seed's model: three conv blocks, single-head self-attention, a small head.

    Input ``(batch, 96, 96, 3)`` float32 in [0, 1] (the seed rescaled TFDS's uint8 by 1/255;
    the data front door already gives [0, 1], so there is no scaling layer). With
    ``centre_inputs=True`` a ``Rescaling(2, -1)`` layer named ``centre`` first maps [0, 1] to
    [-1, 1] (no parameters; not in the seed). Why: with Keras's default Glorot initialisation
    and no normalisation layer, [0, 1] inputs of low contrast give nearly the same activations
    for every image by the attention layer (spread over a batch about 0.002 on the built-in
    synthetic patches), and the seed model then sits at a constant prediction for hundreds of
    steps; centred inputs learn from the first epoch (chapter 5 shows both). Layers:
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
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="centre")(inputs) if centre_inputs else inputs
    x = seed_cnn_features(x, l2=l2)
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


def build_seed_subtype_model(
    backbone: str = "inception_v3",
    *,
    num_classes: int = 5,
    input_shape=(224, 224, 3),
    weights="imagenet",
) -> keras.Model:
    """The ovarian-subtype seed's model as published, on one ImageNet backbone.

    Input ``(batch, 224, 224, 3)`` float32 in [0, 1], fed to the frozen backbone as it is:
    the seed scaled its PNGs by 1/255 and skipped the backbone's ``preprocess_input``, and
    this builder keeps that. The cost: the ImageNet weights expect ``[-1, 1]`` (``2x - 1`` on
    [0, 1]), so every image arrives with its mean shifted by about +0.5 and its contrast halved
    in the backbone's units; the frozen BatchNorm statistics no longer match, the features are
    not the ones ImageNet training made, and a frozen backbone cannot adapt.
    `build_classifier` scales correctly.

    Layers: the frozen backbone without its top (``include_top=False``; 5x5x2048 for
    InceptionV3, 7x7x2048 Xception, 7x7x1024 MobileNet at 224), the map as tokens
    ``(batch, grid*grid, channels)``, ``ThresholdedAttention(key_dim=channels)``,
    ``GaussianNoise(0.25)``, ``GlobalAveragePooling1D``, ``Dense(512, relu)``,
    ``BatchNormalization``, ``GaussianNoise(0.25)``, ``Dropout(0.25)``,
    ``Dense(num_classes, softmax)`` in float32.

    Args:
        backbone: ``"inception_v3"``, ``"xception"`` or ``"mobilenet"``.
        num_classes: 5 in the seed (CC, EC, HGSC, LGSC, MC).
        input_shape: ``(h, w, 3)``; the seed used 224 x 224.
        weights: ``"imagenet"``, a weights file path, or ``None`` (see
            `histolib.models.weights`); the backbone is frozen when weights are given.

    Returns:
        A ``keras.Model`` named ``seed-subtype-<backbone>``, output ``(batch, num_classes)``
        softmax probabilities.
    """
    spec = get_backbone(backbone)
    if spec.constructor is None:
        raise ValueError(
            "The ovarian seed used ImageNet backbones: inception_v3, xception or mobilenet. "
            f"Received: backbone={backbone!r}"
        )
    inputs = keras.Input(check_input_shape(input_shape), name="image")
    x = backbone_features(spec, inputs, weights=weights, freeze=True, scale_inputs=False)
    _, h, w, c = x.shape
    x = keras.layers.Reshape((h * w, c), name="tokens")(x)  # (batch, h*w, c)
    x = ThresholdedAttention(key_dim=c, name="attention")(x)
    x = keras.layers.GaussianNoise(0.25, name="noise1")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    x = keras.layers.Dense(512, activation="relu", name="fc")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GaussianNoise(0.25, name="noise2")(x)
    x = keras.layers.Dropout(0.25, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name=f"seed-subtype-{backbone}")
