"""A frozen backbone cut off, its features computed once per image and view, one view per epoch."""

import numpy as np
import pytest

import keras

from histolib import data, frozen
from histolib.data import synthetic
from histolib.layers import ThresholdedAttention


def _model(attention=True):
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=4, name="conv", trainable=False)(inputs)
    x = keras.layers.BatchNormalization(name="bn", trainable=False)(x)
    if attention:
        x = keras.layers.Reshape((-1, 8), name="tokens")(x)
        x = ThresholdedAttention(key_dim=8, name="attention")(x)
        x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="probs")(x))


def test_split_at_the_first_trainable_or_random_layer():
    model = _model()
    backbone, head = frozen.split_frozen(model)
    assert backbone.output.shape[1:] == (64, 8) and [l.name for l in head.layers[1:]] == [
        "attention", "pool", "dropout", "probs"]
    assert head.get_layer("attention") is model.get_layer("attention")  # training the head trains the model
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(head(backbone(x)), model(x), atol=1e-6)
    pooled, _ = frozen.split_frozen(_model(attention=False))
    assert pooled.output.shape[1:] == (8,)  # stops before the dropout, which trains differently


def test_unsplittable_models_say_why():
    inputs = keras.Input((8, 8, 3))
    trainable = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="no frozen backbone before its first trainable layer"):
        frozen.split_frozen(trainable)
    from histolib.models import with_augmentation

    with pytest.raises(ValueError, match="no frozen backbone"):
        frozen.split_frozen(with_augmentation(_model(), "pcam-seed"))


def _model_with_other_head():
    model = _model()
    x = keras.layers.Dense(4, name="other")(model.get_layer("pool").output)
    return keras.Model(model.inputs, x, name="other_head")


@pytest.fixture()
def folder(tmp_path):
    images, labels, _ = synthetic.pcam_patches(10, seed=2)
    synthetic.write_folder(tmp_path, images[:, :32, :32], labels, ["0", "1"])
    return tmp_path


def test_views_computed_once_and_cached(folder, monkeypatch, tmp_path):
    monkeypatch.setenv("HISTOLIB_CACHE", str(tmp_path / "cache"))
    backbone, _ = frozen.split_frozen(_model())
    ds = data.load(f"folder:{folder}", "train", batch_size=4, fractions=(1.0, 0.0, 0.0))
    paths = sorted(str(p) for p in folder.glob("*/*.png"))
    first = frozen.feature_views(backbone, ds, views=3, augment="subtype", seed=5, paths=paths)
    images = np.concatenate([np.asarray(x) for x, _ in ds])
    assert first.shape == (3, 10, 64, 8) and first.dtype == np.float16
    np.testing.assert_allclose(first[0], backbone.predict(images, verbose=0), rtol=2e-3, atol=2e-3)
    assert not np.allclose(first[1], first[0]) and not np.allclose(first[2], first[1])
    assert len(list((tmp_path / "cache" / "backbone-features").glob("*.npy"))) == 1
    monkeypatch.setattr(backbone, "predict_on_batch", lambda x: pytest.fail("computed again"))
    np.testing.assert_array_equal(frozen.feature_views(backbone, ds, views=3, augment="subtype", seed=5,
                                                       paths=paths), first)
    with pytest.raises(ValueError, match="views must be 1, or more with an augmentation set"):
        frozen.feature_views(backbone, ds, views=2)


def test_heads_over_one_frozen_prefix_share_the_cached_features(folder, monkeypatch, tmp_path):
    monkeypatch.setenv("HISTOLIB_CACHE", str(tmp_path / "cache"))
    ds = data.load(f"folder:{folder}", "train", batch_size=4, fractions=(1.0, 0.0, 0.0))
    paths = sorted(str(p) for p in folder.glob("*/*.png"))
    keras.utils.set_random_seed(1)
    first, _ = frozen.split_frozen(_model())
    stored = frozen.feature_views(first, ds, paths=paths)
    keras.utils.set_random_seed(1)  # the same frozen weights, another head after the attention
    other, _ = frozen.split_frozen(_model_with_other_head())
    monkeypatch.setattr(other, "predict_on_batch", lambda x: pytest.fail("computed again"))
    np.testing.assert_array_equal(frozen.feature_views(other, ds, paths=paths), stored)
    keras.utils.set_random_seed(2)  # other frozen weights: other features
    changed, _ = frozen.split_frozen(_model())
    assert not np.allclose(frozen.feature_views(changed, ds, paths=paths), stored)


def test_one_view_per_image_redrawn_every_epoch():
    views, n = 8, 12
    features = np.array([[[10 * i + v] for i in range(n)] for v in range(views)], dtype=np.float16)
    labels = np.arange(n)
    ds = frozen.view_dataset(features, labels, batch_size=5, shuffle=True, seed=3)
    epochs = []
    for _ in range(3):
        x, y = (np.concatenate(a) for a in zip(*[(np.asarray(b[0])[:, 0], np.asarray(b[1])) for b in ds]))
        assert sorted(y) == list(range(n)) and np.array_equal(x // 10, y)  # each image once, its own row
        epochs.append(dict(zip(y, x % 10)))
    assert epochs[0] != epochs[1] != epochs[2] and len({v for e in epochs for v in e.values()}) > 4
    plain = frozen.view_dataset(features, labels, batch_size=5)
    np.testing.assert_array_equal(np.concatenate([np.asarray(b[0])[:, 0] for b in plain]), 10 * labels)
