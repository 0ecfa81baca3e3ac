"""histolib.layers.tiles: images cut into tiles at native resolution, and the dihedral mean."""

import keras
import numpy as np
import pytest

from histolib.data import bags
from histolib.data.features import encode
from histolib.layers import DihedralMean, TileImage


def _encoder(size=32):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="tiny_encoder")


@pytest.mark.parametrize("shape", [(70, 110), (32, 32), (20, 45)], ids=["large", "one tile", "smaller than a tile"])
def test_tiles_in_the_model_are_the_boxes_whose_features_are_cached(shape, tmp_path):
    """TileImage cuts the grid of data.bags.cover_boxes, resized as features.encode resizes: a model
    over TileImage sees exactly the tiles whose cached features trained its head."""
    import cv2

    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    path = tmp_path / "image.png"
    cv2.imwrite(str(path), image[..., ::-1])
    boxes = bags.cover_boxes(*shape, 32, 16)
    cached = encode(np.array([str(path)] * len(boxes)), boxes, _encoder())
    tiles, mask = TileImage(32, 16)(image[None].astype("float32") / 255.0)
    assert tiles.shape == (1, len(boxes), 32, 32, 3) and np.asarray(mask).all()
    in_model = np.asarray(_encoder()(np.asarray(tiles)[0]))
    np.testing.assert_allclose(in_model, cached, atol=1e-5)


def test_dihedral_mean_is_the_same_for_every_orientation_and_saves():
    layer = DihedralMean(_encoder(8))
    x = np.random.default_rng(2).uniform(0, 1, (3, 8, 8, 3)).astype("float32")
    turned, mirrored = np.rot90(x, axes=(1, 2)).copy(), x[:, :, ::-1].copy()
    np.testing.assert_allclose(layer(turned), layer(x), atol=1e-6)
    np.testing.assert_allclose(layer(mirrored), layer(x), atol=1e-6)
    views = [np.asarray(_encoder(8)(v)) for v in (x, x[:, ::-1], x[:, :, ::-1], x[:, ::-1, ::-1])]
    transposed = x.transpose(0, 2, 1, 3)
    views += [np.asarray(_encoder(8)(v)) for v in (transposed, transposed[:, ::-1], transposed[:, :, ::-1],
                                                   transposed[:, ::-1, ::-1])]
    np.testing.assert_allclose(layer(x), np.mean(views, axis=0), atol=1e-6)


def test_an_image_model_over_tiles_round_trips_a_save(tmp_path):
    image = keras.Input((None, None, 3))
    tiles, mask = TileImage(8, 4, name="tiles")(image)
    features = keras.layers.TimeDistributed(DihedralMean(_encoder(8)))(tiles)
    pooled = keras.layers.GlobalAveragePooling1D()(features, mask=mask)
    model = keras.Model(image, keras.layers.Dense(3, activation="softmax")(pooled))
    x = np.random.default_rng(3).uniform(0, 1, (1, 13, 21, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)
    assert loaded.get_layer("tiles").get_config()["stride"] == 4


def test_bad_tile_settings_are_named():
    with pytest.raises(ValueError, match="stride=0"):
        TileImage(8, 0)
