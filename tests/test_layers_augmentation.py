"""Augmentation sets on [0, 1] images: ranges, the 8 symmetries, stain jitter, training data only."""

import keras
import numpy as np
import pytest

from histolib import data
from histolib.layers import augmentation as augment


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return rng.uniform(0.2, 0.8, (16, 24, 24, 3)).astype("float32")


@pytest.mark.parametrize("name", augment.NAMES)
def test_sets_keep_shape_and_range(batch, name):
    out = keras.ops.convert_to_numpy(augment.augmentation(name, seed=1)(batch, training=True))
    assert out.shape == batch.shape and out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - batch).mean() > 0.01


def test_pcam_seed_brightness_is_on_the_unit_scale(batch):
    """With Keras's default value_range (0-255) a +-0.1 shift on [0, 1] images would be ~0.0004."""
    layer = augment.augmentation("pcam-seed", seed=3).layers[1]
    shifts = keras.ops.convert_to_numpy(layer(batch, training=True)).mean(axis=(1, 2, 3)) - batch.mean(axis=(1, 2, 3))
    assert np.abs(shifts).max() > 0.03 and np.abs(shifts).max() <= 0.1 + 1e-6


def test_flips_and_transpose_give_all_eight_symmetries():
    image = np.arange(9, dtype="float32").reshape(1, 3, 3, 1).repeat(3, axis=-1) / 9
    images = np.repeat(image, 256, axis=0)
    out = augment.augmentation("pcam", seed=5).layers[0](images, training=True)
    seen = {tuple(np.round(o[..., 0] * 9).astype(int).ravel()) for o in keras.ops.convert_to_numpy(out)}
    d4 = set()
    for k in range(4):
        for flip in (False, True):
            g = np.rot90(image[0, ..., 0] * 9, k)
            d4.add(tuple(np.round(np.fliplr(g) if flip else g).astype(int).ravel()))
    assert seen == d4 and len(d4) == 8


def test_flips_off_at_inference_and_single_images(batch):
    layer = augment.RandomFlips(transpose=True, seed=0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(batch, training=False)), batch)
    one = keras.ops.convert_to_numpy(layer(batch[0], training=True))
    assert one.shape == batch[0].shape and np.isclose(np.sort(one.ravel()), np.sort(batch[0].ravel())).all()


def test_flips_cover_four_mirrorings_of_non_square_images():
    images = np.random.default_rng(1).uniform(size=(64, 4, 6, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(augment.RandomFlips(seed=2)(images, training=True))
    found = {next(i for i, v in enumerate([im, im[::-1], im[:, ::-1], im[::-1, ::-1]]) if np.array_equal(o, v))
             for o, im in zip(out, images)}
    assert found == {0, 1, 2, 3}


def test_hed_jitter_identity_at_zero_and_bounded(batch):
    still = augment.RandomHEDJitter(factor=0.0, bias=0.0, seed=0)(batch, training=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(still), batch, atol=1e-4)
    moved = keras.ops.convert_to_numpy(augment.RandomHEDJitter(0.2, 0.2, seed=0)(batch, training=True))
    assert moved.min() >= 0 and moved.max() <= 1 and np.abs(moved - batch).mean() > 0.01
    with pytest.raises(ValueError, match="factor"):
        augment.RandomHEDJitter(factor=-1)


@pytest.mark.parametrize("cls, kwargs", [(augment.RandomFlips, {"vertical": False, "transpose": True, "seed": 3}),
                                         (augment.RandomHEDJitter, {"factor": 0.1, "bias": 0.02, "seed": 3})])
def test_custom_layers_round_trip_config(cls, kwargs):
    layer = cls(**kwargs)
    clone = cls.from_config(layer.get_config())
    assert all(clone.get_config()[k] == v for k, v in kwargs.items())
    assert keras.saving.get_registered_object(f"histolib>{cls.__name__}") is cls


def test_unknown_set_and_training_only():
    with pytest.raises(ValueError, match="pcam-seed"):
        augment.augmentation("heavy")
    with pytest.raises(ValueError, match="training data only"):
        data.load("synthetic-pcam:16", "valid", augment="pcam")


def test_load_applies_augmentation_to_training_batches():
    plain = next(iter(data.load("synthetic-pcam:16", "train", batch_size=8)))[0].numpy()
    moved = next(iter(data.load("synthetic-pcam:16", "train", batch_size=8, augment="pcam", seed=2)))[0].numpy()
    assert moved.shape == plain.shape and np.abs(moved - plain).mean() > 0.01


def test_fresh_draws_per_batch_and_repeatable_by_seed(batch):
    import tensorflow as tf

    def run(seed):
        pipeline = augment.augmentation("pcam", seed=seed)
        ds = tf.data.Dataset.from_tensors(batch).repeat(2).map(lambda b: pipeline(b, training=True))
        return [b.numpy() for b in ds]

    first, again, other = run(4), run(4), run(5)
    assert not np.allclose(first[0], first[1])  # the random state advances between batches
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.allclose(first[0], other[0])


def _states(layer):
    return [keras.ops.convert_to_numpy(v).tolist() for v in layer.non_trainable_variables]


def test_training_augmentation_inside_the_model_is_identity_at_inference_and_saved(tmp_path):
    from histolib.evaluate import load_model
    from histolib.models import build_seed_pcam_model, with_augmentation

    keras.utils.set_random_seed(0)
    plain = build_seed_pcam_model((16, 16, 3), centre_inputs=True)
    model = with_augmentation(plain, "pcam", seed=1)
    assert [layer.name for layer in model.layers][:3] == ["image", "augment", "centre"]
    assert model.count_params() == plain.count_params()
    assert model.get_layer("conv1").output is not plain.get_layer("conv1").output  # copies, not shared
    x = np.random.default_rng(0).uniform(0.2, 0.8, (8, 16, 16, 3)).astype("float32")
    expected = plain.predict(x, verbose=0)
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), expected)  # no training flag
    layer = model.get_layer("augment")
    moved = keras.ops.convert_to_numpy(layer(x, training=True))
    assert moved.shape == x.shape and np.abs(moved - x).mean() > 0.05
    model.compile(optimizer="adam", loss="binary_crossentropy")
    before = _states(layer)
    model.train_on_batch(x, np.arange(8) % 2)
    assert _states(layer) != before  # the training step drew from the set's random state
    model.save(tmp_path / "augmented.keras")
    loaded = keras.saving.load_model(tmp_path / "augmented.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert isinstance(load_model(tmp_path / "augmented.keras").get_layer("augment"), augment.TrainingAugmentation)
    with pytest.raises(ValueError, match="already augments"):
        with_augmentation(model, "pcam")
    with pytest.raises(ValueError, match="augment"):
        with_augmentation(plain, "heavy")


def test_training_augmentation_computes_in_float32_inside_a_mixed_model():
    from histolib.models import build_seed_pcam_model, with_augmentation

    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = with_augmentation(build_seed_pcam_model((16, 16, 3)), "pcam", seed=0)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    layer = model.get_layer("augment")
    assert layer.compute_dtype == "float32"
    assert {sub.compute_dtype for sub in layer.pipeline.layers} == {"float32"}
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    x = np.random.default_rng(1).uniform(0.2, 0.8, (4, 16, 16, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    assert out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0
