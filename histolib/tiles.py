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
With ``solver="lbfgs"`` a linear head is instead fitted as the multinomial logistic regression it
is (`fit_logistic`). `predict_split` scores a split the same way (cached features through the head) for tile
classifiers, and through the model on images for any other model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from threadpoolctl import threadpool_limits

from histolib import evaluate, files, train
from histolib.data.bags import cover_boxes, dataset, image_bags
from histolib.data.features import tile_features
from histolib.models.mil import attention_scores
from histolib.models.tiles import tile_settings

__all__ = ["fit_logistic", "fit_on_tiles", "pooled_features", "predict_split", "split_bags", "split_features", "tile_attention"]

#: The inverse L2 strengths ``C`` that `fit_logistic` chooses from (scikit-learn's convention).
C_GRID = tuple(float(c) for c in np.logspace(-3, 1, 9))


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


def _input_of(head, layer: str, bags, features, batch: int = 64) -> np.ndarray:
    """What reaches the head's layer ``layer`` from each of ``bags`` (with their tiles' ``features``),
    as float32 (under mixed_bfloat16 the head computes in bfloat16, which scikit-learn cannot read)."""
    upstream = keras.Model(head.inputs, head.get_layer(layer).input)
    reached = upstream.predict(dataset(bags, features, batch_size=batch).map(lambda x, y: x), verbose=0)
    return np.asarray(reached, dtype=np.float32)


def _adapt_standardize(head, bags, features, batch: int) -> None:
    """Adapt the head's ``"standardize"`` layer, if any, on what reaches it from the training
    data: every training tile's features, or every training bag's pooled vector."""
    if "standardize" not in {layer.name for layer in head.layers}:
        return
    layer = head.get_layer("standardize")
    if len(layer.input.shape) == 3:  # on the instances: (1, tiles, c), the instances of one bag
        layer.adapt(features[None])
        return
    layer.adapt(_input_of(head, "standardize", bags, features, batch))


def pooled_features(head, bags, features) -> np.ndarray:
    """What reaches a linear head's output layer: each bag's pooled, standardised vector ``(b, c)``
    (``bags`` with their tiles' ``features``), float32."""
    return _input_of(head, "probs", bags, features)


def fit_logistic(head, train_set, valid_set, *, seed: int = 0) -> dict:
    """Fit the output layer of a linear MIL head (pooling, standardisation, ``Dense`` softmax:
    no embedding, no dropout) as a multinomial logistic regression with scikit-learn's L-BFGS:
    ``C`` chosen from `C_GRID` by log loss on ``valid_set``, then refitted on both sets.

    Args:
        head: a `histolib.models.build_mil_classifier` head, its standardisation adapted.
        train_set, valid_set: ``(bags, features)`` each (`histolib.data.bags.Bags`, ``(tiles, c)``).

    Returns:
        ``{"C", "valid_log_loss": {C: loss}, "iterations"}``; the head's ``"probs"`` layer
        holds the fitted weights.
    """
    trained_before = [layer.name for layer in head.layers if layer.trainable_weights and layer.name != "probs"]
    if trained_before or head.get_layer("dropout").rate:  # an embedding or an attention would stay untrained
        raise ValueError(f"solver 'lbfgs' fits a linear head (mean, max or meanmax pooling, no embedding, no "
                         f"dropout); {head.name} is not one. Received: trainable layers {trained_before} before "
                         f"the output, dropout {head.get_layer('dropout').rate}")
    (x_train, y_train), (x_valid, y_valid) = [(pooled_features(head, *part), part[0].labels) for part in (train_set, valid_set)]
    classes = np.arange(head.outputs[0].shape[-1])

    def logistic(c, x, y):
        with threadpool_limits(limits=1):  # a small problem: more BLAS threads only fight TensorFlow's
            return LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(x, y)

    losses = {c: float(log_loss(y_valid, logistic(c, x_train, y_train).predict_proba(x_valid), labels=classes))
              for c in C_GRID}
    chosen = min(losses, key=losses.get)
    final = logistic(chosen, np.concatenate([x_train, x_valid]), np.concatenate([y_train, y_valid]))
    kernel, bias = final.coef_.T, final.intercept_
    if len(classes) == 2:  # scikit-learn keeps one logit z for two classes: softmax([-z/2, z/2]) = sigmoid(z)
        kernel, bias = np.concatenate([-kernel, kernel], axis=1) / 2, np.concatenate([-bias, bias]) / 2
    head.get_layer("probs").set_weights([kernel.astype("float32"), bias.astype("float32")])
    return {"C": chosen, "valid_log_loss": {f"{c:g}": v for c, v in losses.items()}, "iterations": int(final.n_iter_[0])}


def _logistic_result(model, head, train_set, valid_set, config, *, out_dir, record) -> train.FitResult:
    """`fit_logistic` as a finished run in ``out_dir``: ``best.keras``, and ``run.json`` with the choice."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    choice = fit_logistic(head, train_set, valid_set, seed=config.train.seed)
    files.write_json(out_dir / "run.json", {**record, "config": config.to_json(), "status": "finished",
                                            "solver": {"name": "lbfgs", **choice}})
    files.save_model(model, out_dir / "best.keras")
    return train.FitResult(model=model, history=[], threshold={"threshold": None}, out_dir=out_dir, best_epoch=0,
                           epochs_done=0, resumed_from=0, already_finished=False, stopped_early=False)


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
    if config.train.solver == "lbfgs":
        return _logistic_result(model, head, (train_bags, train_features), (valid_bags, valid_features), config,
                                out_dir=out_dir, record=record)
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
