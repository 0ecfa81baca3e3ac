"""Classifiers over tiles cut at native resolution: an image of any size in, one prediction out.

`build_tile_classifier` chains `histolib.layers.TileImage` (the image's tiles at native resolution,
an image smaller than a tile upscaled to fit), a frozen tile encoder on every tile
(`histolib.models.build_tile_encoder`, in a ``TimeDistributed`` layer named ``"encoder"``) and a
MIL head over the tiles' features (`histolib.models.build_mil_classifier`, a nested model named
``"head"``). Its input is ``(batch, height, width, 3)`` in [0, 1] with any height and width
(images of different sizes go one at a time), its output the class probabilities. The encoder is
frozen, so training needs only each tile's features once: `histolib.tiles.fit_on_tiles` caches
them and trains the head; the saved model then scores whole images (``histolib evaluate``).

Registry names (`histolib.models.build_model`): ``tiles-<encoder>+<pooling>`` with encoder
``mobilenet_025`` (ImageNet), ``pcam_mnet025`` (MobileNet 0.25 fine-tuned on PCam by this project)
or ``both`` (the two side by side), and pooling one of `histolib.models.POOLINGS`.
"""

from __future__ import annotations

import keras

from histolib.layers import TileImage
from histolib.models.mil import POOLINGS, build_mil_classifier, build_tile_encoder

__all__ = ["ENCODERS", "build_tile_classifier", "tile_settings"]

#: The tile encoders of the registry names: their backbones.
ENCODERS = {"mobilenet_025": ("mobilenet_025",), "pcam_mnet025": ("pcam_mnet025",),
            "both": ("mobilenet_025", "pcam_mnet025")}
#: MobileNet v1's pointwise blocks 3 to 13: texture (early) to parts (late), pooled each.
MOBILENET_BLOCKS = tuple(f"conv_pw_{i}_relu" for i in range(3, 14))


def build_tile_classifier(encoder: keras.Model, *, tile: int = 224, stride: int = 112, num_classes: int = 2,
                          head: dict | None = None) -> keras.Model:
    """An image classifier over tiles (see the module docstring).

    Args:
        encoder: a frozen model from tiles ``(batch, tile, tile, 3)`` to features ``(batch, c)``.
        tile, stride: `histolib.layers.TileImage`'s (pixels at native resolution).
        num_classes: classes, at least 2.
        head: keywords of `histolib.models.build_mil_classifier` (``pooling``, ``embedding``,
            ``dropout``, ``standardize``, ``l2``, ``units``).

    Returns:
        A ``keras.Model`` from ``(batch, None, None, 3)`` to ``(batch, num_classes)``, named
        ``tiles_<pooling>``, with layers ``"tiles"``, ``"encoder"`` and ``"head"``.
    """
    if tuple(encoder.input_shape[1:3]) != (tile, tile):
        raise ValueError(f"the encoder takes {encoder.input_shape[1:3]} tiles, not {tile} x {tile}. "
                         f"Received: tile={tile}")
    mil = build_mil_classifier(int(encoder.output_shape[-1]), num_classes=num_classes, **(head or {}))
    mil = keras.Model(mil.inputs, mil.outputs, name="head")
    image = keras.Input((None, None, 3), name="image")
    tiles, mask = TileImage(tile, stride, name="tiles")(image)
    features = keras.layers.TimeDistributed(encoder, name="encoder")(tiles)  # (batch, n, c)
    return keras.Model(image, mil({"features": features, "mask": mask}),
                       name=f"tiles_{(head or {}).get('pooling', 'gated')}")


def tile_settings(model: keras.Model) -> dict | None:
    """``{"tile", "stride", "encoder", "head"}`` of a `build_tile_classifier` model (or one loaded
    from a file), ``None`` for any other model."""
    names = {layer.name for layer in model.layers}
    if not {"tiles", "encoder", "head"} <= names or not isinstance(model.get_layer("tiles"), TileImage):
        return None
    tiles = model.get_layer("tiles")
    return {"tile": tiles.tile, "stride": tiles.stride, "encoder": model.get_layer("encoder").layer,
            "head": model.get_layer("head")}


def _linear_head(pooling: str) -> dict:
    """The head a pooling gets by default: a logistic regression on the standardised pooled
    features for mean, max and mean+max; an embedding with dropout before the attention ones."""
    if pooling in ("mean", "max", "meanmax"):
        return {"pooling": pooling, "embedding": None, "dropout": 0.0, "standardize": True, "l2": 1e-3}
    return {"pooling": pooling, "embedding": 64, "dropout": 0.25, "standardize": True, "l2": 0.0}


def registry_builder(encoder_name: str, pooling: str):
    """The registry's builder of ``tiles-<encoder_name>+<pooling>`` (options: ``tile``, ``stride``,
    ``layers`` (``"blocks"``: MobileNet's pointwise blocks 3-13, or ``"last"``), ``dihedral``,
    ``l2``, ``embedding``, ``dropout``)."""
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling. Valid: {', '.join(POOLINGS)}. Received: pooling={pooling!r}")

    def build(*, num_classes, input_shape, weights, tile=224, stride=112, layers="blocks", dihedral=True,
              l2=None, embedding=None, dropout=None):
        if input_shape is not None and tuple(input_shape)[:2] != (None, None):
            raise ValueError("a tile classifier takes images of any size: leave input_shape (and --image-size) "
                             f"unset. Received: input_shape={input_shape!r}")
        encoder = build_tile_encoder(ENCODERS[encoder_name], tile_size=tile, weights=weights,
                                     layers=MOBILENET_BLOCKS if layers == "blocks" else None, dihedral=dihedral)
        head = _linear_head(pooling)
        head.update({k: v for k, v in (("l2", l2), ("embedding", embedding), ("dropout", dropout)) if v is not None})
        return build_tile_classifier(encoder, tile=tile, stride=stride, num_classes=num_classes, head=head)

    return build
