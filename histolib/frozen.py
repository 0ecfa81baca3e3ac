"""A head over a frozen backbone, trained on the backbone's features computed once.

With a frozen pretrained backbone (``build_classifier(..., weights="imagenet")``) almost all of a
training step is the backbone's forward pass, and it gives the same answer for the same image
every epoch. So:

1. :func:`split_frozen` cuts a model where its frozen part ends: the backbone is every layer up
   to the first one that has trainable weights or behaves differently in training (dropout,
   augmentation); the head is the rest. The head shares its layers with the model, so training
   the head trains the model.
2. :func:`feature_views` runs the backbone once per image and *view*: view 0 is the image as
   loaded, views 1 ... V-1 the augmentation set applied with fixed seeds (``seed + view``).
   Results go to the user cache (:mod:`histolib.files`, ``backbone-features``), keyed by the
   backbone's architecture and weights, the image files (paths, sizes, times) and these
   settings, stored as float16; a second run, another training seed or another head over the
   same backbone reads them back.
3. :func:`view_dataset` streams one view per image per epoch, drawn afresh each epoch (seeded),
   to train the head with `histolib.train.fit`.

What changes: augmentation draws come from V fixed draws per image instead of a fresh draw every
step (exact only for a set with at most V distinct outcomes; the ``subtype`` set's rotations and
zooms are continuous, so this is an approximation), and the head trains on float16-rounded
features. Models whose augmentation sits inside the model, or with nothing frozen, cannot be
split (:func:`split_frozen` says why). The speed-up is measured in ``bench/frozen_features.py``.
"""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf

from histolib import files, train
from histolib.data.features import encoder_fingerprint
from histolib.layers.augmentation import TrainingAugmentation, augmentation
from histolib.models.tiles import tile_settings

_TRAINING_BEHAVIOUR = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
                       keras.layers.GaussianNoise, keras.layers.GaussianDropout, keras.layers.AlphaDropout)


def _stops_prefix(layer) -> bool:
    """True for a layer that trains, or computes differently with ``training=True``."""
    return (bool(layer.trainable_weights) or isinstance(layer, _TRAINING_BEHAVIOUR)
            or hasattr(layer, "seed_generator") or isinstance(layer, TrainingAugmentation))


def frozen_prefix(model: keras.Model) -> tuple[int | None, str]:
    """Where ``model``'s frozen part ends: ``(number of layers in it, why)``, or ``(None, why
    not)`` when no layer with (frozen) weights comes before the first trainable one."""
    layers = model.layers
    end = next((i for i, layer in enumerate(layers) if _stops_prefix(layer)), len(layers))
    if end == len(layers) or not any(layer.weights for layer in layers[:end]):
        return None, (f"model {model.name!r} has no frozen backbone before its first trainable layer "
                      f"({layers[min(end, len(layers) - 1)].name!r}): nothing to compute once")
    return end, f"frozen through {layers[end - 1].name!r} ({end} layers), computed once per image and view"


def split_frozen(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """``(backbone, head)`` with ``head(backbone(x)) == model(x)`` at inference.

    The backbone runs ``model``'s longest prefix of layers (in graph order) that neither train
    nor change with ``training=True`` (`frozen_prefix`); the head is ``keras.Model(prefix
    output, model.output)``, sharing ``model``'s layers.

    Raises:
        ValueError: when there is no frozen prefix, or the rest of the model needs more than the
            prefix's last output.
    """
    end, why = frozen_prefix(model)
    if end is None:
        raise ValueError(why)
    layers = model.layers
    cut = layers[end - 1].output
    try:
        head = keras.Model(cut, model.outputs[0], name=f"{model.name}_head")
    except ValueError as error:
        raise ValueError(f"model {model.name!r} cannot be cut after {layers[end - 1].name!r}: {error}") from error
    # Named after the cut, not the model: the features' cache key hashes the backbone's architecture
    # (names included), so heads over the same frozen prefix share one cache entry.
    return keras.Model(model.inputs[0], cut, name=f"frozen_to_{layers[end - 1].name}"), head


@dataclasses.dataclass(frozen=True)
class Route:
    """How a run trains: ``"features"`` (the head on cached backbone features, `fit_on_features`),
    ``"tiles"`` (a tile classifier's head on cached tile features, `histolib.tiles.fit_on_tiles`)
    or ``"images"`` (the whole model every step), and why. ``resumable`` says whether a killed
    run goes on from its last epoch (the features route starts the head afresh: it trains in
    seconds once the features are cached)."""

    name: str
    reason: str

    @property
    def resumable(self) -> bool:
        return self.name == "images"  # the others retrain their head from the cache


def choose_route(config, strategy_kind: str, model: keras.Model | None = None) -> Route:
    """The route of a run with `histolib.config.TrainConfig` ``config`` under a strategy of
    ``strategy_kind``, decided before anything trains: features only with ``features="auto"``,
    augmentation (if any) in the data pipeline, one device, and a model with a frozen prefix.
    A pure function of its arguments (``model`` is inspected, not changed)."""
    if config.features == "off":
        return Route("images", "features='off'")
    if config.augment is not None and config.augment_in == "model":
        return Route("images", "the augmentation runs inside the model's training step")
    if strategy_kind != "default":
        return Route("images", f"strategy {strategy_kind!r}: the feature route trains on one device")
    if tile_settings(model) is not None:
        return Route("tiles", "a tile classifier: its frozen encoder runs once per tile (cached), the head trains "
                     "on the tiles' features")
    end, why = frozen_prefix(model)
    return Route("images" if end is None else "features", why)


def feature_views(backbone: keras.Model, dataset, *, views: int = 1, augment: str | None = None, seed: int = 0,
                  paths=None, use_cache: bool = True) -> np.ndarray:
    """The backbone's output for every image of ``dataset`` and ``views`` views of it.

    Args:
        backbone: the first model of `split_frozen`.
        dataset: unshuffled, unaugmented batches ``(images (b, h, w, 3) in [0, 1], labels)``,
            e.g. ``histolib.data.load(spec, "train", shuffle=False)``.
        views: 1 (the images as they are) or more; views 1 ... ``views - 1`` apply ``augment``.
        augment: an augmentation set of :mod:`histolib.layers.augmentation` (needed when ``views > 1``).
        seed: view ``v`` draws its augmentation with seed ``seed + v``.
        paths: the image files in ``dataset``'s order, for the cache key; ``None`` disables the
            cache (sources without files).
        use_cache: read and write the user cache.

    Returns:
        float16 ``(views, n, *backbone.output.shape[1:])``.
    """
    if views < 1 or (views > 1 and augment is None):
        raise ValueError(f"views must be 1, or more with an augmentation set. Received: views={views!r}, "
                         f"augment={augment!r}")
    key = None
    if use_cache and paths is not None:
        key = files.files_key(paths, "backbone-features", {"backbone": encoder_fingerprint(backbone),
                                                           "views": int(views), "augment": augment, "seed": int(seed)})
        stored = files.cached_array("backbone-features", key)
        if stored is not None:
            return stored
    augmenters = [augmentation(augment, seed + view) for view in range(1, views)]

    def all_views(images, _):  # (b, h, w, 3) -> (views * b, h, w, 3), view-major
        return tf.concat([images] + [a(images, training=True) for a in augmenters], axis=0)

    batches = []
    for stacked in dataset.map(all_views, num_parallel_calls=tf.data.AUTOTUNE):  # each image decoded once
        out = np.asarray(backbone.predict_on_batch(stacked), dtype=np.float32).astype(np.float16)
        batches.append(out.reshape(views, -1, *out.shape[1:]))
    features = np.concatenate(batches, axis=1)
    if key is not None:
        files.store_array("backbone-features", key, features)
    return features


def view_dataset(features, labels, *, batch_size: int, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Batches ``(features float32 (b, ...), labels int32 (b,))``, one view per image.

    Args:
        features: ``(views, n, ...)`` from `feature_views`; labels: ``(n,)``.
        shuffle: reshuffle the images and redraw each image's view every epoch (seeded); without
            it, view 0 (the images as they are) in order, for validation and testing.
    """
    features = np.asarray(features)
    labels = np.asarray(labels, dtype=np.int32)
    if features.shape[1] != len(labels):
        raise ValueError(f"features hold {features.shape[1]} images and labels {len(labels)}")
    if not shuffle:
        ds = tf.data.Dataset.from_tensor_slices((features[0], labels))
        return ds.map(lambda x, y: (tf.cast(x, tf.float32), y)).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    views = features.shape[0]
    per_image = np.moveaxis(features, 0, 1)  # (n, views, ...)
    pairs = tf.data.Dataset.from_tensor_slices((per_image, labels))
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip(pairs, draws).shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda xy, r: (tf.cast(tf.gather(xy[0], r % views), tf.float32), xy[1]))
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _split_features(backbone, source, config, split: str, views: int) -> np.ndarray:
    """`feature_views` of one split of the `histolib.data.DataSource` ``source`` (cached)."""
    items, _ = source.rows(split)
    paths = list(items) if items is not None and np.asarray(items).dtype.kind in "US" else None
    dataset = source.load(split, batch_size=config.train.batch_size, image_size=config.data.image_size)
    return feature_views(backbone, dataset, views=views, augment=config.train.augment if views > 1 else None,
                         seed=source.seed, paths=paths)


def fit_on_features(model, source, config, *, out_dir, record=None):
    """`histolib.train.fit` for a model with a frozen backbone, running the backbone once per
    image and view (see the module docstring).

    The training split's features come in ``config.train.views`` views when it augments (one
    otherwise), drawn with the split seed (so runs with other training seeds read the same
    cached features); the valid split's in one. The head trains with ``checkpoints=False``: such
    a run does not resume (a rerun starts the head afresh, reading the features from the cache),
    and its recorded config says so. ``out_dir/best.keras`` is then the whole model, images in.

    Args:
        model: a ``keras.Model`` that `split_frozen` can cut.
        source: the `histolib.data.DataSource` (split as ``config.data`` says).
        config: the `histolib.config.RunConfig`.
        out_dir: the run folder; record: more facts for ``run.json`` (``"features"`` is added).

    Returns:
        The `histolib.train.FitResult`, its ``model`` the whole model with the best weights.
    """
    backbone, head = split_frozen(model)
    started, views = time.perf_counter(), config.train.views if config.train.augment else 1
    features = {"train": _split_features(backbone, source, config, "train", views),
                "valid": _split_features(backbone, source, config, "valid", 1)}
    labels = {split: source.rows(split)[1] for split in features}
    record = {**(record or {}), "features": {
        "cut_after": backbone.layers[-1].name, "shape": list(backbone.output.shape[1:]),
        "train_views": int(features["train"].shape[0]), "augment": config.train.augment,
        "view_seed": int(source.seed), "seconds": round(time.perf_counter() - started, 1)}}
    batch, seed = config.train.batch_size, config.train.seed
    result = train.fit(head, view_dataset(features["train"], labels["train"], batch_size=batch, shuffle=True, seed=seed),
                       view_dataset(features["valid"], labels["valid"], batch_size=batch),
                       config.replace(train={"checkpoints": False}), out_dir=out_dir, record=record,
                       class_counts=np.bincount(labels["train"], minlength=len(source.info("train")["counts"])))
    files.save_model(model, result.out_dir / "best.keras")
    return dataclasses.replace(result, model=model)
