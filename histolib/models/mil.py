"""Multiple-instance classifiers: tiles (or their features) pooled into one bag prediction.

- `build_tile_encoder(backbone)`: a frozen backbone with global average pooling, tile ->
  feature vector, the encoder whose outputs `histolib.data.features.tile_features` caches.
- `build_mil_classifier(feature_dim)` or ``(encoder=...)``: instance embedding, a pooling over
  the bag (mean, max, attention or gated attention), a softmax head.
- `attention_scores(model, inputs)`: the attention pooling's weight of every instance.
"""

from __future__ import annotations

import keras
import numpy as np

from histolib.layers import (
    AttentionMILPooling,
    DifferentialAttention,
    DihedralMean,
    MaskedGlobalMaxPooling1D,
    ThresholdedAttention,
)
from histolib.models.backbones import get_backbone
from histolib.models.classifier import backbone_features, check_input_shape
from histolib.models.weights import pretrained_weights

#: The poolings `build_mil_classifier` offers: masked mean, masked max, both side by side
#: (``"meanmax"``), Ilse et al.'s attention (``"attention"``: plain, ``"gated"``: gated), and the
#: masked mean after token attention across the instances: the ovarian seed's mean-thresholded
#: softmax (``"thresholded"``) or Ye et al.'s differential attention (``"differential"``).
POOLINGS = ("mean", "max", "meanmax", "attention", "gated", "thresholded", "differential")
#: Poolings that attend across the instances (token attention, masked) before a masked mean.
TOKEN_ATTENTION = ("thresholded", "differential")


def _pooled_layers(backbone: str, inputs, weights, layers) -> list:
    """``GlobalAveragePooling2D`` of the backbone's last map, or of each layer named in ``layers``."""
    spec = get_backbone(backbone)
    weights = pretrained_weights(spec) if weights == "auto" else weights
    last = backbone_features(spec, inputs, weights=weights, freeze=True)
    if not layers:
        return [keras.layers.GlobalAveragePooling2D(name=f"{backbone}_features")(last)]
    graph = keras.Model(inputs, last)
    return [keras.layers.GlobalAveragePooling2D(name=f"{backbone}_{name}_mean")(graph.get_layer(name).output)
            for name in layers]


def build_tile_encoder(backbone="mobilenet_025", *, tile_size: int = 96, weights="imagenet", layers=None,
                       dihedral: bool = False) -> keras.Model:
    """A frozen backbone (or several) from tiles to feature vectors.

    Input ``(batch, tile_size, tile_size, 3)`` float32 in [0, 1]; each backbone's own scaling
    inside (see `histolib.models.classifier.backbone_features`), every backbone layer frozen,
    then ``GlobalAveragePooling2D`` of its last map (256 channels for ``mobilenet_025``), or of
    each layer named in ``layers`` (middle layers keep texture that the last one has pooled away),
    all concatenated: output ``(batch, channels)``.

    Args:
        backbone: a name of `histolib.models.list_backbones`, or a tuple of them (their features
            side by side, e.g. ImageNet's MobileNet 0.25 and this project's PCam-tuned one,
            ``("mobilenet_025", "pcam_mnet025")``).
        tile_size: the tile side in pixels.
        weights: ``"imagenet"``, ``"auto"`` (each backbone's own pretrained weights:
            `histolib.models.weights.pretrained_weights`), a weights file, or ``None`` (random,
            for tests only: a random encoder's features say little about tissue).
        layers: names of the layers to pool (the same in every backbone), or ``None``.
        dihedral: average the features over the tile's 8 flips and rotations
            (`histolib.layers.DihedralMean`): 8 passes per tile.
    """
    names = (backbone,) if isinstance(backbone, str) else tuple(backbone)
    shape = check_input_shape((tile_size, tile_size, 3))
    encoders = []
    for name in names:  # each backbone its own model: their layers' names would clash in one graph
        inputs = keras.Input(shape, name="tile")
        pooled = _pooled_layers(name, inputs, weights, layers)
        encoders.append(keras.Model(inputs, pooled[0] if len(pooled) == 1 else
                                    keras.layers.Concatenate(name="features")(pooled), name=f"{name}_tile_encoder"))
    encoder = encoders[0]
    if len(encoders) > 1 or dihedral:
        tile = keras.Input(shape, name="tile")
        both = [DihedralMean(e, name=f"{e.name}_dihedral")(tile) if dihedral else e(tile) for e in encoders]
        out = both[0] if len(both) == 1 else keras.layers.Concatenate(name="features")(both)
        encoder = keras.Model(tile, out, name=f"{'_'.join(names)}_tile_encoder{'_dihedral' if dihedral else ''}")
    encoder.trainable = False
    return encoder


def _pool(pooling: str, x, mask, units: int):
    """The pooling layer(s) over instances ``x`` ``(batch, n, c)``; the last is named ``"pool"``."""
    if pooling == "mean":
        return keras.layers.GlobalAveragePooling1D(name="pool")(x, mask=mask)
    if pooling == "max":
        return MaskedGlobalMaxPooling1D(name="pool")(x, mask=mask)
    if pooling == "meanmax":
        mean = keras.layers.GlobalAveragePooling1D(name="pool_mean")(x, mask=mask)
        return keras.layers.Concatenate(name="pool")([mean, MaskedGlobalMaxPooling1D(name="pool_max")(x, mask=mask)])
    if pooling in TOKEN_ATTENTION:
        attend = (ThresholdedAttention(int(x.shape[-1]), name="attention") if pooling == "thresholded"
                  else DifferentialAttention(num_heads=2, name="attention"))
        return keras.layers.GlobalAveragePooling1D(name="pool")(attend(x, mask=mask), mask=mask)
    return AttentionMILPooling(units, gated=pooling == "gated", name="pool")(x, mask=mask)


def build_mil_classifier(
    feature_dim: int | None = None,
    *,
    encoder: keras.Model | None = None,
    pooling: str = "gated",
    num_classes: int = 2,
    units: int = 128,
    embedding: int | None = 64,
    dropout: float = 0.25,
    standardize: bool = False,
    l2: float = 0.0,
) -> keras.Model:
    """A bag classifier: instances, an embedding, a pooling over the bag, a softmax head.

    Ilse et al. 2018 (https://arxiv.org/abs/1802.04712): each instance ``h_k`` is embedded,
    the bag is pooled to one vector, and a head classifies it. Inputs are a dict:

    - with ``feature_dim``: ``{"features": (batch, n, feature_dim), "mask": (batch, n)}``,
      precomputed tile features (`histolib.data.bags.dataset` gives exactly this);
    - with ``encoder``: ``{"tiles": (batch, n, h, w, 3), "mask": (batch, n)}``, images in
      [0, 1], each tile passed through ``encoder`` (``TimeDistributed``) first.

    ``mask`` is boolean, True on real instances and False on padding. Then ``Dense(embedding,
    relu)`` on each instance (skipped when ``embedding`` is ``None``), ``Dropout(dropout)``, the
    pooling (its layer named ``"pool"``), and ``Dense(num_classes, softmax)`` in float32 with an
    L2 penalty ``l2`` on its kernel: the output is ``(batch, num_classes)``, two columns for two
    classes, as `histolib.models` expects, so `histolib.train.fit` and `histolib.evaluate` take
    the model as they take any other. With ``standardize``, a ``Normalization`` layer named
    ``"standardize"`` (to be adapted on the training data before training:
    `histolib.tiles.fit_on_tiles` does) standardises the pooled vector for the mean and max
    poolings, each instance for the attention ones. With ``standardize``, no embedding, no dropout
    and ``"meanmax"``, the head is a multinomial logistic regression on the standardised pooled
    features.

    Args:
        feature_dim: channels of precomputed features (give this or ``encoder``).
        encoder: a model from tiles ``(batch, h, w, 3)`` to ``(batch, c)``, e.g.
            `build_tile_encoder`; trained along unless frozen.
        pooling: one of `POOLINGS`: ``"mean"`` (Keras's masked ``GlobalAveragePooling1D``),
            ``"max"`` (`histolib.layers.MaskedGlobalMaxPooling1D`), ``"meanmax"`` (both,
            concatenated), ``"attention"`` or ``"gated"`` (`histolib.layers.AttentionMILPooling`),
            ``"thresholded"`` or ``"differential"`` (token attention across the instances, padded
            ones masked, then the masked mean).
        num_classes: classes of the bag label, at least 2.
        units: width of the attention's ``V`` and ``U`` (attention poolings only).
        embedding: width of the instance embedding, or ``None`` for none.
        dropout: dropout rate on the instance embeddings.
        standardize: standardise each instance's features first (a ``Normalization`` layer).
        l2: L2 penalty on the output layer's kernel.

    Returns:
        A ``keras.Model`` named ``mil_<pooling>``.
    """
    if (feature_dim is None) == (encoder is None):
        raise ValueError("Give exactly one of feature_dim (precomputed features) and encoder (tiles). "
                         f"Received: feature_dim={feature_dim!r}, encoder={getattr(encoder, 'name', encoder)!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling. Valid: {', '.join(POOLINGS)}. Received: pooling={pooling!r}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2. Received: num_classes={num_classes!r}")
    mask = keras.Input((None,), dtype="bool", name="mask")
    if encoder is None:
        if not isinstance(feature_dim, int) or feature_dim < 1:
            raise ValueError(f"feature_dim must be a positive integer. Received: feature_dim={feature_dim!r}")
        instances = keras.Input((None, feature_dim), name="features")
        inputs, x = {"features": instances, "mask": mask}, instances
    else:
        instances = keras.Input((None, *encoder.input_shape[1:]), name="tiles")
        inputs = {"tiles": instances, "mask": mask}
        x = keras.layers.TimeDistributed(encoder, name="encoder")(instances)  # (batch, n, c)
    pooled_standardize = standardize and pooling in ("mean", "max", "meanmax")
    if standardize and not pooled_standardize:
        x = keras.layers.Normalization(axis=-1, name="standardize")(x)
    if embedding:
        x = keras.layers.Dense(embedding, activation="relu", name="embed")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = _pool(pooling, x, mask, units)
    if pooled_standardize:
        x = keras.layers.Normalization(axis=-1, name="standardize")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs",
                                 kernel_regularizer=keras.regularizers.L2(l2) if l2 else None)(x)
    return keras.Model(inputs, outputs, name=f"mil_{pooling}")


def attention_scores(model: keras.Model, inputs) -> np.ndarray:
    """The attention weight of every instance, from a `build_mil_classifier` model.

    For ``"attention"`` and ``"gated"`` pooling, the pooling's own weights. For
    ``"thresholded"`` and ``"differential"`` (token attention across the instances, then the
    mean), the attention each instance receives: its column of the attention map averaged over
    the real instances that attend (and over heads), rescaled to sum to 1.

    Args:
        model: a MIL classifier with one of those poolings.
        inputs: its input dict (``features`` or ``tiles``, and ``mask``), as arrays.

    Returns:
        ``(batch, n)`` float32: each bag's weights sum to 1 over its real instances and are 0
        on padding.
    """
    names = {layer.name for layer in model.layers}
    pool = model.get_layer("pool")
    if not isinstance(pool, AttentionMILPooling) and "attention" not in names:
        raise ValueError(f"{model.name} pools by {type(pool).__name__}, which has no attention weights. "
                         "Received: a model built with pooling='mean', 'max' or 'meanmax'")
    # The instances as the pooling sees them, (batch, n, c), then the pooling (or the attention)
    # itself, both called eagerly: calling a layer again inside the graph, on the tensor it already
    # takes, is not a model Keras builds, and a predict function per call would be traced anew.
    mask = np.asarray(inputs["mask"], bool)
    instances = keras.Model(model.input, model.get_layer("dropout").output)(inputs, training=False)
    if isinstance(pool, AttentionMILPooling):
        return keras.ops.convert_to_numpy(pool(instances, mask=mask, return_attention_scores=True)[1])
    _, maps = model.get_layer("attention")(instances, mask=mask, return_attention_scores=True)
    maps = keras.ops.convert_to_numpy(maps).reshape(len(mask), -1, mask.shape[1], mask.shape[1])  # (b, heads, n, n)
    received = np.einsum("bhqk,bq->bk", np.abs(maps), mask.astype(np.float32)) * mask
    return (received / received.sum(axis=1, keepdims=True)).astype(np.float32)
