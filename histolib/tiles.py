"""The tiles route: a tile classifier trained on its frozen encoder's features, computed once.

A `histolib.models.build_tile_classifier` model runs a frozen encoder on every tile of an image
cut at native resolution and a small head over the tiles' features. Training needs each tile's
features once: `fit_on_tiles` makes a bag of tiles of every image of a split
(`histolib.data.bags.image_bags`, the grid of `histolib.layers.TileImage`), computes or reads
their features from the user cache (`histolib.data.features.tile_features`), optionally in
``views`` stain-jittered views of the training tiles (each a cached view, every view of every
image a training bag), adapts the head's standardisation on the training tiles, and trains the
head with `histolib.train.fit` (``checkpoints=False``: a rerun trains the head afresh in seconds
from the cached features). The saved model is the whole image classifier.
`predict_split` scores a split the same way (cached features through the head) for tile
classifiers, and through the model on images for any other model.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from histolib import evaluate, files, train
from histolib.data.bags import cover_boxes, dataset, image_bags
from histolib.data.features import tile_features
from histolib.models.mil import attention_scores
from histolib.models.tiles import tile_settings

__all__ = ["fit_on_tiles", "predict_split", "split_bags", "split_features", "tile_attention"]


def split_bags(source, split: str, settings: dict):
    """The bags of ``split`` of the `histolib.data.DataSource` ``source``: one per image, cut
    with the tile classifier's ``settings`` (`histolib.models.tiles.tile_settings`)."""
    paths, labels = source.rows(split)
    return image_bags(paths, labels, source.info("train")["class_names"], tile=settings["tile"],
                      stride=settings["stride"])


def split_features(bags, settings: dict, view=None) -> np.ndarray:
    """Every tile's encoder features ``(tiles, c)`` (cached), in ``view`` (see `tile_features`)."""
    return tile_features(bags, settings["encoder"], batch_size=64, view=view)


def _training_views(bags, settings: dict, config):
    """The training bags and features: every image once as it is and ``views - 1`` times in a
    view of the augmentation set (``config.train.augment``), drawn with seed ``split_seed + v``."""
    views = config.train.views if config.train.augment else 1
    features = [split_features(bags, settings)]
    features += [split_features(bags, settings, view=(config.train.augment, config.data.split_seed + v))
                 for v in range(1, views)]
    offset = np.repeat(np.arange(views), len(bags.bag)) * len(bags)
    repeated = dataclasses.replace(bags, sources=np.tile(bags.sources, views), boxes=np.tile(bags.boxes, (views, 1)),
                                   bag=np.tile(bags.bag, views) + offset, labels=np.tile(bags.labels, views),
                                   tile_labels=np.tile(bags.tile_labels, views), groups=np.tile(bags.groups, views))
    return repeated, np.concatenate(features)


def _adapt_standardize(head, bags, features, batch: int) -> None:
    """Adapt the head's ``"standardize"`` layer, if any, on what reaches it from the training
    data: every training tile's features, or every training bag's pooled vector."""
    if "standardize" not in {layer.name for layer in head.layers}:
        return
    layer = head.get_layer("standardize")
    if len(layer.input.shape) == 3:  # on the instances: (1, tiles, c), the instances of one bag
        layer.adapt(features[None])
        return
    upstream = keras.Model(head.inputs, layer.input)
    layer.adapt(upstream.predict(dataset(bags, features, batch_size=batch).map(lambda x, y: x), verbose=0))


def fit_on_tiles(model, source, config, *, out_dir, record=None):
    """Train the head of the tile classifier ``model`` on ``source`` as ``config`` says (see the
    module docstring); ``out_dir/best.keras`` is then the whole image classifier.

    Returns:
        The `histolib.train.FitResult`, its ``model`` the whole classifier with the best weights.
    """
    settings = tile_settings(model)
    head = settings["head"]
    train_bags, train_features = _training_views(split_bags(source, "train", settings), settings, config)
    valid_bags = split_bags(source, "valid", settings)
    valid_features = split_features(valid_bags, settings)
    batch = config.train.batch_size
    _adapt_standardize(head, train_bags, train_features, batch)
    views = config.train.views if config.train.augment else 1
    record = {**(record or {}), "tiles": {"tile": settings["tile"], "stride": settings["stride"], "views": views,
                                          "train_bags": int(len(train_bags)), "train_tiles": int(len(train_bags.bag))}}
    result = train.fit(head, dataset(train_bags, train_features, batch_size=batch, shuffle=True, seed=config.train.seed),
                       dataset(valid_bags, valid_features, batch_size=batch),
                       config.replace(train={"checkpoints": False}), out_dir=out_dir, record=record,
                       class_counts=np.bincount(train_bags.labels, minlength=len(train_bags.class_names)))
    files.save_model(model, result.out_dir / "best.keras")
    return dataclasses.replace(result, model=model)


def predict_split(model, source, split: str, *, image_size=None) -> np.ndarray:
    """Class probabilities ``(n, k)`` of ``model`` on ``split`` of ``source``, in its rows' order:
    a tile classifier through its head on the tiles' cached features, any other model on the
    images (resized to ``image_size``)."""
    settings = tile_settings(model)
    if settings is None:
        return evaluate.predict(model, source.load(split, batch_size=64, image_size=image_size))[1]
    bags = split_bags(source, split, settings)
    return evaluate.predict(settings["head"], dataset(bags, split_features(bags, settings), batch_size=32))[1]


def tile_attention(model, image) -> tuple[np.ndarray, np.ndarray]:
    """Where a tile classifier's attention goes on one image: ``(boxes, weights)``, the tiles'
    ``(row, col, height, width)`` at native resolution and the head's attention weight of each
    (`histolib.models.attention_scores`; summing to 1), for `histolib.plots.bag_attention`.

    Args:
        model: a tile classifier whose pooling attends (gated, attention, thresholded, differential).
        image: ``(h, w, 3)`` uint8 or float in [0, 1].
    """
    settings = tile_settings(model)
    image = np.asarray(image)
    pixels = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    tiles, mask = model.get_layer("tiles")(pixels[None])
    features = settings["encoder"].predict(np.asarray(tiles)[0], batch_size=32, verbose=0)[None]
    weights = attention_scores(settings["head"], {"features": features, "mask": np.asarray(mask)})[0]
    return cover_boxes(*image.shape[:2], settings["tile"], settings["stride"]), weights
