"""Attention maps: how much attention each image token receives, drawn onto the image."""

from __future__ import annotations

import inspect

import keras
import numpy as np

from histolib.saliency.explain import check_images


def _takes_attention_scores(layer) -> bool:
    return (not isinstance(layer, keras.Model)
            and "return_attention_scores" in inspect.signature(layer.call).parameters)


def attention_map(model: keras.Model, images, *, layer: str | None = None,
                  batch_size: int = 64) -> np.ndarray:
    """Attention received per token of an attention layer, drawn onto the image.

    The layer (one of `histolib.layers`: ``SelfAttention``, ``ThresholdedAttention``,
    ``DifferentialAttention``) is called on its own input, computed by a sub-model of ``model``,
    with ``return_attention_scores=True``. Its scores ``(batch, n, n)`` or
    ``(batch, heads, n, n)`` (query by key) are averaged over heads and queries, giving how much
    attention each of the ``n = h' * w'`` tokens receives; that is reshaped to the feature grid
    (row-major, as `histolib.layers.tokens.to_tokens` flattens it), resized bilinearly to the
    image and scaled to [0, 1] per image. Differential attention's scores may be negative; the
    scaling maps the least attended token to 0 either way.

    Args:
        model: a model holding one attention layer (or several: name one with ``layer``).
        images: ``(batch, h, w, 3)`` float in [0, 1].
        layer: the attention layer's name; ``None`` when there is exactly one.
        batch_size: images per forward pass.

    Returns:
        ``(batch, h, w)`` float32 in [0, 1].

    Raises:
        ValueError: no (or more than one unnamed) attention layer; a token count that is not a
            square when the layer's input is already ``(batch, n, c)``.
    """
    images = check_images(images)
    candidates = [item for item in model.layers if _takes_attention_scores(item)]
    if layer is not None:
        candidates = [item for item in candidates if item.name == layer]
    if len(candidates) != 1:
        found = [item.name for item in model.layers if _takes_attention_scores(item)]
        raise ValueError(
            "Expected exactly one attention layer (a layer whose call takes "
            f"return_attention_scores) in model {model.name!r}. Received: layer={layer!r}; "
            f"attention layers found: {found}"
        )
    attention = candidates[0]
    features_in = attention.input[0] if isinstance(attention.input, (list, tuple)) else attention.input
    if len(features_in.shape) == 4:
        grid = tuple(features_in.shape[1:3])
    else:
        n = features_in.shape[1]
        side = int(round(np.sqrt(n)))
        if side * side != n:
            raise ValueError(
                f"Attention layer {attention.name!r} takes {n} tokens, not a square grid; feed it "
                f"a (batch, h, w, c) feature map. Received: input shape {tuple(features_in.shape)}"
            )
        grid = (side, side)
    features = keras.Model(model.input, features_in)
    maps = []
    for start in range(0, len(images), batch_size):
        x = features(images[start:start + batch_size], training=False)
        _, scores = attention(x, return_attention_scores=True)
        scores = keras.ops.convert_to_numpy(keras.ops.cast(scores, "float32"))
        if scores.ndim == 4:  # (b, heads, n, n) -> (b, n, n)
            scores = scores.mean(axis=1)
        received = scores.mean(axis=1).reshape(-1, *grid, 1)  # (b, n) -> (b, h', w', 1)
        resized = keras.ops.image.resize(received, images.shape[1:3], interpolation="bilinear", antialias=False)
        maps.append(keras.ops.convert_to_numpy(resized)[..., 0])
    maps = np.concatenate(maps)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)
