"""``build_classifier``: a backbone, optional attention over its feature map, a softmax head."""

from __future__ import annotations

import logging
import math

import keras

from histolib.layers import DifferentialAttention, SelfAttention, ThresholdedAttention
from histolib.models.backbones import MIN_GRID, BackboneSpec, get_backbone, seed_cnn_features
from histolib.models.weights import copy_weights_from_model, resolve_weights
from histolib.names import unknown_name

log = logging.getLogger(__name__)

ATTENTIONS = (None, "self", "thresholded", "differential")
#: Head pairs of the differential attention in `build_classifier`.
DIFFERENTIAL_HEADS = 4


def check_input_shape(input_shape) -> tuple:
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[-1] != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(
            f"input_shape must be (height, width, 3) with positive integers. "
            f"Received: input_shape={input_shape!r}"
        )
    return shape


def backbone_features(spec: BackboneSpec, inputs, *, weights, freeze: bool, scale_inputs: bool = True,
                      backbone_size: int | None = None):
    """Apply backbone ``spec`` to ``inputs`` ``(batch, h, w, 3)`` in [0, 1], flat in the graph.

    Inserts ``Resizing`` to ``backbone_size`` x ``backbone_size`` when given (at least
    ``spec.min_size``), else to ``spec.min_size`` where ``h`` or ``w`` is smaller (so the map is at
    least `MIN_GRID` on each side), then ``Rescaling(spec.scale, spec.offset)`` where
    ``scale_inputs`` (the backbone's own ``preprocess_input``, on [0, 1] input), then the
    backbone without its top, its layers added to the caller's graph (not nested), so
    ``model.get_layer(spec.gradcam_layer)`` finds the Grad-CAM layer. With pretrained weights
    and ``freeze``, every backbone layer is frozen (BatchNorm then runs in inference mode).

    Returns:
        The feature map ``(batch, grid, grid, spec.channels)``.
    """
    _, h, w, _ = inputs.shape
    x, size = inputs, None
    if backbone_size is not None:
        if not isinstance(backbone_size, int) or backbone_size < spec.min_size:
            raise ValueError(
                f"backbone_size must be an integer of at least {spec.min_size} for {spec.name} (its map is "
                f"then at least {MIN_GRID}x{MIN_GRID}). Received: backbone_size={backbone_size!r}")
        size = (backbone_size, backbone_size)
    elif h < spec.min_size or w < spec.min_size:
        size = (max(h, spec.min_size), max(w, spec.min_size))
        log.info(
            "%s gives a feature map under %dx%d at %dx%d pixels; resizing inputs to %dx%d inside "
            "the model", spec.name, MIN_GRID, MIN_GRID, h, w, *size,
        )
    if size is not None and size != (h, w):
        x = keras.layers.Resizing(*size, interpolation="bilinear", name="resize")(x)
    if scale_inputs and (spec.scale, spec.offset) != (1.0, 0.0):
        x = keras.layers.Rescaling(spec.scale, spec.offset, name="scale")(x)
    if spec.constructor is None:  # seed_cnn: the PCam seed's trunk, trained from scratch
        if weights is not None:
            raise ValueError(
                "Backbone 'seed_cnn' has no pretrained weights; pass weights=None. "
                f"Received: weights={weights!r}"
            )
        return seed_cnn_features(x)
    resolved = resolve_weights(spec, weights, input_size=int(x.shape[1]) if x.shape[1] else None)
    from_model = resolved is not None and str(resolved).endswith(".keras")
    base = spec.constructor(include_top=False, weights=None if from_model else resolved, input_tensor=x)
    if from_model:
        copy_weights_from_model(base, resolved)
    if resolved is not None and freeze:
        for layer in base.layers:
            layer.trainable = False
    features = base.output
    if min(features.shape[1:3]) < MIN_GRID:  # the spec's min_size is wrong for this Keras
        raise ValueError(
            f"{spec.name} gave a {features.shape[1]}x{features.shape[2]} map, under "
            f"{MIN_GRID}x{MIN_GRID}. Received: input_shape={tuple(inputs.shape[1:])}"
        )
    return features


def attention_layer(kind: str, spec: BackboneSpec):
    """The attention layer ``kind`` sized for backbone ``spec``: width ``spec.attention_dim``
    (128 on seed_cnn, 256 on the ImageNet backbones) for all three, the differential one with
    `DIFFERENTIAL_HEADS` head pairs of ``attention_dim // (2 * heads)`` and output back to the
    backbone's channels."""
    if kind == "self":
        return SelfAttention(key_dim=spec.attention_dim, name="attention")
    if kind == "thresholded":
        return ThresholdedAttention(key_dim=spec.attention_dim, name="attention")
    if kind == "differential":
        return DifferentialAttention(
            DIFFERENTIAL_HEADS,
            head_dim=spec.attention_dim // (2 * DIFFERENTIAL_HEADS),
            name="attention",
        )
    raise unknown_name("attention", kind, [a for a in ATTENTIONS if a], argument="attention",
                       plural="attention kinds")


def build_classifier(
    backbone: str,
    *,
    attention: str | None = None,
    num_classes: int = 2,
    input_shape=(96, 96, 3),
    weights="imagenet",
    freeze: bool = True,
    backbone_size: int | None = None,
) -> keras.Model:
    """A classifier on a backbone, with or without attention over its feature map.

    Input ``(batch, h, w, 3)`` float32 in [0, 1]. The backbone (see `list_backbones`) gets its
    own input scaling inside the model and, where its map would be under 3 x 3 or where
    ``backbone_size`` asks, a resize (InceptionV3 below 139 px, MobileNet below 95 px; see
    `histolib.models.backbones`). Then:

    - ``attention=None``: ``GlobalAveragePooling2D``;
    - ``"self"`` / ``"thresholded"`` / ``"differential"``: the map as tokens
      ``(batch, grid*grid, channels)``, the attention layer named ``"attention"`` (see
      `attention_layer`), ``GlobalAveragePooling1D``;

    then ``Dropout(0.5)`` and ``Dense(num_classes, softmax)`` in float32.

    Args:
        backbone: ``"inception_v3"``, ``"xception"``, ``"mobilenet"`` or ``"seed_cnn"``.
        attention: ``None``, ``"self"``, ``"thresholded"`` or ``"differential"``.
        num_classes: number of classes, at least 2; the output is always a softmax
            ``(batch, num_classes)``, two columns for two classes (see `histolib.models`).
        input_shape: ``(h, w, 3)``.
        weights: ``"imagenet"``, a weights file path, or ``None`` (see
            `histolib.models.weights`); ``seed_cnn`` takes ``None`` only.
        freeze: freeze the pretrained backbone (ignored with ``weights=None``: freezing
            random weights would only hobble the model). ``False`` fine-tunes it: every layer
            trains, BatchNormalization included (its statistics then follow the new images).
        backbone_size: resize the images to ``backbone_size`` x ``backbone_size`` inside the
            model, before the backbone (e.g. 128 for 96-pixel PCam patches: a larger feature map
            for ImageNet filters learnt on larger objects); the model's input stays
            ``input_shape``. ``None``: resize only up to the backbone's minimum size.

    Returns:
        A ``keras.Model`` named ``backbone`` or ``backbone_attention``, output
        ``(batch, num_classes)`` softmax probabilities.
    """
    spec = get_backbone(backbone)
    if attention not in ATTENTIONS:
        raise unknown_name("attention", attention, [str(a) for a in ATTENTIONS], argument="attention",
                           plural="attention kinds")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            "num_classes must be an integer >= 2 (two classes give a two-column softmax). "
            f"Received: num_classes={num_classes!r}"
        )
    inputs = keras.Input(check_input_shape(input_shape), name="image")
    x = backbone_features(spec, inputs, weights=weights, freeze=freeze, backbone_size=backbone_size)
    if attention is None:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    else:
        _, h, w, c = x.shape
        x = keras.layers.Reshape((h * w, c), name="tokens")(x)  # (batch, h*w, c)
        x = attention_layer(attention, spec)(x)
        x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(x)
    # "+" (the command line's spelling) is not valid in a TensorFlow name scope, which
    # jit_compile and tf.function open with the model's name.
    name = backbone if attention is None else f"{backbone}_{attention}"
    return keras.Model(inputs, outputs, name=name)


def parameter_counts(model: keras.Model) -> dict:
    """``{"trainable": n, "frozen": m}``: the parameters a gradient reaches, and the rest
    (frozen layers' weights, and batch norm's moving statistics, which are never trained)."""
    return {"trainable": sum(int(math.prod(w.shape)) for w in model.trainable_weights),
            "frozen": sum(int(math.prod(w.shape)) for w in model.non_trainable_weights)}

