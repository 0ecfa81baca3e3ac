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

from histolib import files

_TRAINING_BEHAVIOUR = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
                       keras.layers.GaussianNoise, keras.layers.GaussianDropout, keras.layers.AlphaDropout)


def _stops_prefix(layer) -> bool:
    """True for a layer that trains, or computes differently with ``training=True``."""
    return (bool(layer.trainable_weights) or isinstance(layer, _TRAINING_BEHAVIOUR)
            or hasattr(layer, "seed_generator") or type(layer).__name__ == "TrainingAugmentation")


def split_frozen(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """``(backbone, head)`` with ``head(backbone(x)) == model(x)`` at inference.

    The backbone runs ``model``'s longest prefix of layers (in graph order) that neither train
    nor change with ``training=True``; the head is ``keras.Model(prefix output, model.output)``,
    sharing ``model``'s layers.

    Raises:
        ValueError: when no layer with (frozen) weights comes before the first trainable one, or
            the rest of the model needs more than the prefix's last output.
    """
    layers = model.layers
    end = next((i for i, layer in enumerate(layers) if _stops_prefix(layer)), len(layers))
    if end == len(layers) or not any(layer.weights for layer in layers[:end]):
        raise ValueError(f"model {model.name!r} has no frozen backbone before its first trainable layer "
                         f"({layers[min(end, len(layers) - 1)].name!r}): nothing to compute once")
    cut = layers[end - 1].output
    try:
        head = keras.Model(cut, model.outputs[0], name=f"{model.name}_head")
    except ValueError as error:
        raise ValueError(f"model {model.name!r} cannot be cut after {layers[end - 1].name!r}: {error}") from error
    # Named after the cut, not the model: the features' cache key hashes the backbone's architecture
    # (names included), so heads over the same frozen prefix share one cache entry.
    return keras.Model(model.inputs[0], cut, name=f"frozen_to_{layers[end - 1].name}"), head


def _fingerprint(backbone: keras.Model) -> str:
    from histolib.data.features import encoder_fingerprint

    return encoder_fingerprint(backbone)


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
        key = files.files_key(paths, "backbone-features", backbone=_fingerprint(backbone), views=int(views),
                              augment=augment, seed=int(seed))
        stored = files.cached_array("backbone-features", key)
        if stored is not None:
            return stored
    from histolib.layers.augmentation import augmentation

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


def fit_on_features(model, spec: str, *, out_dir, epochs: int, batch_size: int = 64, image_size=None,
                    augment: str | None = None, views: int = 8, seed: int = 0, split_seed: int = 0,
                    group_by=None, oversample=None, use_cache: bool = True, extra_record=None, **fit_kwargs):
    """`histolib.train.fit` for a model with a frozen backbone, running the backbone once per
    image and view (see the module docstring).

    The training split's features come in ``views`` views when ``augment`` is given (one
    otherwise), drawn with ``split_seed`` (the data's seed, so runs with other training seeds
    read the same cached features); the valid split's in one. The head trains with ``fit(...,
    checkpoints=False)``: such a run does not resume (a rerun starts afresh, reading the features
    from the cache). ``out_dir/best.keras`` is then the whole model, images in.

    Args:
        model: a ``keras.Model`` (or a zero-argument callable returning one) that `split_frozen`
            can cut.
        spec: the data spec; ``image_size``, ``group_by``, ``oversample`` as in
            `histolib.data.load`, its ``seed`` being ``split_seed``.
        seed: the training seed: shuffling, the views drawn each epoch, recorded in ``run.json``.
        extra_record: more facts for ``run.json``; a ``"features"`` entry is added.
        **fit_kwargs: passed to `histolib.train.fit` (learning rate, patience, monitor ...).

    Returns:
        The `histolib.train.FitResult`, its ``model`` the whole model with the best weights.
    """
    from histolib import data, train

    if callable(model) and not isinstance(model, keras.Model):
        model = model()
    backbone, head = split_frozen(model)
    load = dict(seed=split_seed, group_by=group_by, oversample=oversample)
    started, features, labels = time.perf_counter(), {}, {}
    for split, count in (("train", views if augment else 1), ("valid", 1)):
        items, labels[split] = data.rows(spec, split, **load)
        paths = list(items) if items is not None and np.asarray(items).dtype.kind in "US" else None
        dataset = data.load(spec, split, batch_size=batch_size, image_size=image_size, **load)
        features[split] = feature_views(backbone, dataset, views=count, augment=augment if count > 1 else None,
                                        seed=split_seed, paths=paths, use_cache=use_cache)
    record = {**(extra_record or {}), "features": {
        "cut_after": backbone.layers[-1].name, "shape": list(backbone.output.shape[1:]),
        "train_views": int(features["train"].shape[0]), "augment": augment, "view_seed": int(split_seed),
        "seconds": round(time.perf_counter() - started, 1), "cache": bool(use_cache)}}
    result = train.fit(head, view_dataset(features["train"], labels["train"], batch_size=batch_size, shuffle=True,
                                          seed=seed),
                       view_dataset(features["valid"], labels["valid"], batch_size=batch_size),
                       out_dir=out_dir, epochs=epochs, seed=seed, checkpoints=False, extra_record=record, **fit_kwargs)
    files.save_model(model, result.out_dir / "best.keras")
    return dataclasses.replace(result, model=model)


def fit_spec(build, spec: str, *, batch_size: int, image_size=None, augment=None, features: str = "auto",
             views: int = 8, seed: int = 0, split_seed: int = 0, group_by=None, oversample=None,
             strategy_kind: str = "default", **fit_kwargs):
    """Train ``build`` on ``spec`` as ``histolib train`` does: on cached features
    (`fit_on_features`) when ``features="auto"``, one device trains (``strategy_kind``
    ``"default"``) and the model has a frozen backbone; else the whole model on images with
    `histolib.train.fit`. Every file of a folder source is decoded once first
    (`histolib.data.check`). Why features were not used goes into ``run.json`` (``"features"``).

    Args:
        build: a zero-argument callable returning the model.
        spec, batch_size, image_size, augment, group_by, oversample: as in `histolib.data.load`,
            whose ``seed`` is ``split_seed``; ``seed`` is the training seed.
        views: training views per image on the feature route (with ``augment``).
        **fit_kwargs: `histolib.train.fit`'s (``out_dir``, ``epochs``, ``strategy``, ``extra_record`` ...).
    """
    from histolib import data, strategy, train

    load = dict(seed=split_seed, group_by=group_by, oversample=oversample)
    record = fit_kwargs.setdefault("extra_record", {})
    data.check(spec)  # unreadable files end the run before any model is built
    if features == "auto" and strategy_kind == "default":
        build = build()  # once: to see whether its backbone is frozen
        try:
            split_frozen(build)
        except ValueError as why:
            record["features"] = {"used": False, "reason": str(why)}
        else:
            return fit_on_features(build, spec, batch_size=batch_size, image_size=image_size, augment=augment,
                                   views=views if augment else 1, seed=seed, split_seed=split_seed,
                                   group_by=group_by, oversample=oversample, **fit_kwargs)
    else:
        record["features"] = {"used": False, "reason": f"features={features!r}, strategy {strategy_kind!r}"}
    train_ds = data.load(spec, "train", batch_size=batch_size, image_size=image_size, shuffle=True,
                         augment=augment, **load)
    val_ds = data.load(spec, "valid", batch_size=batch_size, image_size=image_size, **load)
    counts = {s: len(data.rows(spec, s, **load)[1]) for s in ("train", "valid")}
    train_ds, val_ds = strategy.datasets_for_strategy(strategy_kind, train_ds, val_ds, batch_size=batch_size,
                                                      train_examples=counts["train"], valid_examples=counts["valid"])
    return train.fit(build, train_ds, val_ds, seed=seed, **fit_kwargs)
