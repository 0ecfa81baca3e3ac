"""histolib.models.mil: MIL classifiers over features or tiles, trained with train.fit and scored
with evaluate, and the instance-level score of their attention."""

import keras
import numpy as np
import pytest

from histolib import evaluate, saliency, train
from histolib.config import TrainConfig
from histolib.data import bags as B
from histolib.models import POOLINGS, attention_scores, build_mil_classifier, build_tile_encoder


def synthetic_bags(n_bags, seed, *, n=(4, 10), c=8):
    """Bags of Gaussian instances; a positive instance has +3 on channel 0, and a positive bag
    holds one to three of them. Returns (features, mask, labels, instance_labels)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(n[0], n[1] + 1, n_bags)
    labels = np.arange(n_bags) % 2
    x = np.zeros((n_bags, n[1], c), "float32")
    mask = np.arange(n[1])[None] < sizes[:, None]
    instance = np.zeros((n_bags, n[1]), int)
    for i in range(n_bags):
        x[i, : sizes[i]] = rng.normal(0, 1, (sizes[i], c))
        if labels[i]:
            k = rng.choice(sizes[i], min(sizes[i], rng.integers(1, 4)), replace=False)
            x[i, k, 0] += 3.0
            instance[i, k] = 1
    return x, mask, labels, instance


def as_dataset(x, mask, labels, *, shuffle=False, seed=0):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(({"features": x, "mask": mask}, labels.astype("int32")))
    return (ds.shuffle(len(x), seed=seed) if shuffle else ds).batch(16)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_predictions_ignore_padding_and_instance_order(pooling):
    rng = np.random.default_rng(0)
    model = build_mil_classifier(8, pooling=pooling, num_classes=3)
    assert model.name == f"mil_{pooling}" and model.output_shape == (None, 3)
    bag = rng.normal(0, 1, (1, 5, 8)).astype("float32")
    alone = model({"features": bag, "mask": np.ones((1, 5), bool)})
    padded = np.concatenate([bag, rng.normal(0, 5, (1, 4, 8)).astype("float32")], axis=1)
    order = rng.permutation(5)
    with_padding = model({"features": padded, "mask": np.arange(9)[None] < 5})
    shuffled = model({"features": bag[:, order], "mask": np.ones((1, 5), bool)})
    alone = keras.ops.convert_to_numpy(alone)
    np.testing.assert_allclose(alone.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(with_padding), alone, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(shuffled), alone, atol=1e-6)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="exactly one of feature_dim"):
        build_mil_classifier()
    with pytest.raises(ValueError, match="exactly one of feature_dim"):
        build_mil_classifier(8, encoder=build_tile_encoder("seed_cnn", weights=None))
    with pytest.raises(ValueError, match="Valid: mean, max, meanmax, attention, gated, thresholded, differential. "
                                         "Received: pooling='sum'"):
        build_mil_classifier(8, pooling="sum")
    with pytest.raises(ValueError, match="Received: num_classes=1"):
        build_mil_classifier(8, num_classes=1)
    with pytest.raises(ValueError, match="Received: feature_dim=0"):
        build_mil_classifier(0)


def test_attention_scores_and_pooling_without_them():
    x, mask, _, _ = synthetic_bags(6, seed=1)
    scores = attention_scores(build_mil_classifier(8, pooling="attention"), {"features": x, "mask": mask})
    assert scores.shape == mask.shape
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(scores[~mask] == 0.0)
    with pytest.raises(ValueError, match="has no attention weights"):
        attention_scores(build_mil_classifier(8, pooling="mean"), {"features": x, "mask": mask})


def test_gated_mil_learns_bag_labels_and_finds_the_positive_instances(tmp_path, capsys):
    """Trained on bag labels only, through train.fit; scored with evaluate on other bags."""
    train_ds = as_dataset(*synthetic_bags(160, seed=2)[:3], shuffle=True)
    valid_ds = as_dataset(*synthetic_bags(40, seed=3)[:3])
    x, mask, labels, instance = synthetic_bags(60, seed=4)
    keras.utils.set_random_seed(0)  # fit seeds nothing
    config = TrainConfig(epochs=40, patience=8, learning_rate=1e-2, seed=0, checkpoints=False, verbose=0)
    result = train.fit(lambda: build_mil_classifier(8, pooling="gated", embedding=16), train_ds, valid_ds, config,
                       out_dir=tmp_path / "run")
    assert "restoring model weights" not in capsys.readouterr().out.lower()  # verbose=0: callbacks quiet too
    scores = evaluate.evaluate_model(result.model, as_dataset(x, mask, labels), threshold=result.threshold["threshold"])
    assert scores["auc"] > 0.9, scores["auc"]
    found = saliency.instance_auc(attention_scores(result.model, {"features": x, "mask": mask}), mask, instance, labels)
    assert found["auc"] > 0.8 and found["top1"] > found["chance_top1"] + 0.3, found
    assert found["n_bags"] == int(((instance * mask).sum(1) < mask.sum(1))[labels == 1].sum())


def test_instance_auc_on_known_scores():
    mask = np.array([[True, True, True, False], [True, True, True, True], [True, True, False, False]])
    labels = np.array([[0, 1, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]])
    scores = np.array([[0.1, 0.8, 0.1, 0.0], [0.4, 0.3, 0.2, 0.1], [0.5, 0.5, 0.0, 0.0]])
    found = saliency.instance_auc(scores, mask, labels, [1, 1, 0])
    assert found["auc"] == pytest.approx((1.0 + 0.5) / 2)  # bag 1: one positive ranked first, one last
    assert found["top1"] == 1.0 and found["n_bags"] == 2
    assert found["chance_top1"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    with pytest.raises(ValueError, match="Received: shapes"):
        saliency.instance_auc(scores[:, :3], mask, labels, [1, 1, 0])


def test_a_mil_classifier_on_tiles_matches_the_same_model_on_their_features():
    encoder = build_tile_encoder("seed_cnn", tile_size=32, weights=None)
    assert encoder.output_shape == (None, 256) and not encoder.trainable
    on_tiles = build_mil_classifier(encoder=encoder, pooling="gated")
    on_features = build_mil_classifier(256, pooling="gated")
    on_features.set_weights([w for layer in on_tiles.layers if layer.name != "encoder" for w in layer.get_weights()])
    rng = np.random.default_rng(5)
    tiles = rng.uniform(0, 1, (2, 3, 32, 32, 3)).astype("float32")
    mask = np.array([[True, True, False], [True, True, True]])
    features = keras.ops.convert_to_numpy(encoder(tiles.reshape(-1, 32, 32, 3))).reshape(2, 3, 256)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(on_tiles({"tiles": tiles, "mask": mask})),
        keras.ops.convert_to_numpy(on_features({"features": features, "mask": mask})), atol=1e-5)


def test_saved_mil_classifier_loads_with_safe_mode(tmp_path):
    x, mask, _, _ = synthetic_bags(4, seed=6)
    for pooling in ("max", "gated"):
        model = build_mil_classifier(8, pooling=pooling)
        model.save(tmp_path / f"{pooling}.keras")
        loaded = evaluate.load_model(tmp_path / f"{pooling}.keras")
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded({"features": x, "mask": mask})),
                                      keras.ops.convert_to_numpy(model({"features": x, "mask": mask})))


def test_real_encoder_on_real_patches(shared_data, monkeypatch):
    """MobileNet 0.25's ImageNet weights from ../shared: the features of tumour and normal PCam
    patches differ (a frozen encoder that sees no difference would make MIL pointless)."""
    weights = shared_data.parent / "weights"
    if not (weights / "mobilenet_2_5_224_tf_no_top.h5").is_file():
        pytest.skip(f"MobileNet 0.25 ImageNet weights not found in {weights}")
    monkeypatch.setenv("HISTOLIB_WEIGHTS_DIR", str(weights))
    from histolib.data import features as F

    encoder = build_tile_encoder("mobilenet_025")
    bags = B.pcam_bags(shared_data / "pcam-jpeg", "valid", n_bags=24, bag_size=8, positive_fraction=1.0, seed=0)
    vectors = F.tile_features(bags, encoder, cache=False)
    assert vectors.shape == (192, 256) and np.all(np.isfinite(vectors))
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    accuracy = cross_val_score(LogisticRegression(C=0.1, max_iter=5000), vectors, bags.tile_labels, cv=4).mean()
    assert accuracy > 0.7, accuracy


def test_the_registry_builds_mil_heads_by_name():
    from histolib.models import build_model, list_models

    assert {"mil-mean", "mil-max", "mil-attention", "mil-gated"} <= set(list_models())
    model = build_model("mil-gated", input_shape=(None, 16), num_classes=3, options={"units": 8, "embedding": None})
    assert model.name == "mil_gated" and model.output_shape == (None, 3)
    assert model.get_layer("pool").units == 8 and "embed" not in [layer.name for layer in model.layers]
    assert build_model("mil-max").input["features"].shape == (None, None, 256)  # MobileNet 0.25's features
    with pytest.raises(ValueError, match="Received: weights='imagenet'"):
        build_model("mil-mean", weights="imagenet")
    with pytest.raises(ValueError, match=r"\(instances, channels\).*Received: input_shape=\(96, 96, 3\)"):
        build_model("mil-mean", input_shape=(96, 96, 3))
    with pytest.raises(ValueError, match="heads"):
        build_model("mil-gated", options={"heads": 2})


def test_the_command_refuses_mil_heads_in_one_line(tmp_path, capsys):
    from histolib import cli

    argv = ["train", "--data", "synthetic-pcam:64", "--model", "mil-gated", "--epochs", "1", "--out", str(tmp_path / "a")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "bags of tile features" in err
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("pooling", ["thresholded", "differential"])
def test_token_attention_poolings_give_each_instance_a_weight(pooling):
    x, mask, _, _ = synthetic_bags(6, seed=1)
    scores = attention_scores(build_mil_classifier(8, pooling=pooling), {"features": x, "mask": mask})
    assert scores.shape == mask.shape and np.all(scores[~mask] == 0.0) and np.all(scores >= 0)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)


def test_tile_attention_weighs_the_tiles_of_a_whole_image():
    from histolib import tiles
    from histolib.data.bags import cover_boxes
    from histolib.models import build_tile_classifier

    keras.utils.set_random_seed(0)
    encoder = build_tile_encoder("mobilenet_025", tile_size=32, weights=None)
    model = build_tile_classifier(encoder, tile=32, stride=16, num_classes=3, head={"pooling": "gated"})
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    boxes, weights = tiles.tile_attention(model, image)
    np.testing.assert_array_equal(boxes, cover_boxes(50, 70, 32, 16))
    assert weights.shape == (len(boxes),) and weights.sum() == pytest.approx(1.0, abs=1e-5)
