"""histolib.data.bags and histolib.data.features: MIL bags from image folders, slide regions, and
frozen-encoder features cached per tile."""

import os
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from histolib.data import bags as B
from histolib.data import features as F


def _write(path, array, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


@pytest.fixture
def pcam_folder(tmp_path):
    """``split/0`` with 60 and ``split/1`` with 30 patches of 96 x 96; each patch's red value
    is its index (0-89) and its green value its label, so a tile can be traced back."""
    root = tmp_path / "pcam"
    for i in range(90):
        label = int(i >= 60)
        patch = np.zeros((96, 96, 3), np.uint8)
        patch[..., 0], patch[..., 1] = i, 200 * label
        _write(root / "train" / str(label) / f"patch{i:03d}.png", patch)
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("HISTOLIB_CACHE", str(folder))
    return folder


def mean_colour_encoder(size=96):
    """A 'frozen encoder' whose features are each tile's mean red, green and blue in [0, 1]."""
    inputs = keras.Input((size, size, 3))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs), name="mean_colour")


def test_pcam_bags_follow_the_mil_rule(pcam_folder):
    bags = B.pcam_bags(pcam_folder, "train", n_bags=8, bag_size=(4, 8), positive_fraction=(0.2, 0.5), seed=3)
    assert len(bags) == 8 and bags.labels.sum() == 4  # positive_share 0.5
    assert np.all((bags.sizes >= 4) & (bags.sizes <= 8))
    for i in range(len(bags)):
        tiles = bags.tile_labels[bags.members(i)]
        assert bags.labels[i] == int(tiles.any())  # positive iff at least one tumour patch
        if bags.labels[i]:
            assert 1 <= tiles.sum() <= max(1, round(0.5 * len(tiles)))
    assert len(set(bags.sources)) == len(bags.sources)  # no patch in two bags
    assert all(f"/{label}/" in s for s, label in zip(bags.sources, bags.tile_labels))
    assert bags.class_names == ("0", "1")
    again = B.pcam_bags(pcam_folder, "train", n_bags=8, bag_size=(4, 8), positive_fraction=(0.2, 0.5), seed=3)
    other = B.pcam_bags(pcam_folder, "train", n_bags=8, bag_size=(4, 8), positive_fraction=(0.2, 0.5), seed=4)
    assert list(again.sources) == list(bags.sources)
    assert list(other.sources) != list(bags.sources)


def test_positive_fraction_zero_gives_a_single_tumour_patch(pcam_folder):
    bags = B.pcam_bags(pcam_folder, "train", n_bags=6, bag_size=8, positive_fraction=0.0, seed=0)
    positives = [bags.tile_labels[bags.members(i)].sum() for i in np.flatnonzero(bags.labels == 1)]
    assert positives == [1, 1, 1]
    assert np.all(bags.sizes == 8)


def test_pcam_bags_say_when_the_folder_is_too_small(pcam_folder):
    with pytest.raises(ValueError, match=r"need \d+ patches in .*train/0.* there are 60 and 30"):
        B.pcam_bags(pcam_folder, "train", n_bags=20, bag_size=8)
    with pytest.raises(FileNotFoundError, match="valid/0"):
        B.pcam_bags(pcam_folder, "valid", n_bags=2)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_bags": 0}, "n_bags=0"), ({"bag_size": (8, 4)}, r"bag_size=\(8, 4\)"),
    ({"bag_size": 2.5}, "bag_size=2.5"), ({"positive_fraction": 1.5}, "positive_fraction=1.5"),
    ({"positive_share": -0.1}, "positive_share=-0.1"),
])
def test_pcam_bags_bad_arguments_raise(pcam_folder, kwargs, message):
    with pytest.raises(ValueError, match=f"Received: {message}"):
        B.pcam_bags(pcam_folder, "train", **kwargs)


def test_cover_boxes_reach_every_edge_without_leaving_the_image():
    boxes = B.cover_boxes(250, 200, 96)  # 3 rows x 3 columns
    assert boxes.shape == (9, 4)
    assert boxes[:, 0].min() == 0 and (boxes[:, 0] + 96).max() == 250
    assert boxes[:, 1].min() == 0 and (boxes[:, 1] + 96).max() == 200
    assert np.array_equal(B.cover_boxes(192, 96, 96)[:, :2], [[0, 0], [96, 0]])  # exact multiples: no overlap
    # At a stride of half a tile: 5 rows x 6 columns over a 250 x 300 image, the last on the edges.
    strided = B.cover_boxes(250, 300, 96, 48)
    assert strided.shape == (30, 4) and strided[:, 0].max() + 96 == 250 and strided[:, 1].max() + 96 == 300
    assert sorted(set(strided[:, 0].tolist())) == [0, 38, 77, 116, 154]
    # An image smaller than a tile: boxes of its short side, upscaled to the tile by the encoder.
    small = B.cover_boxes(90, 200, 96)
    assert small[:, 2:].tolist() == [[90, 90]] * 3 and small[:, 1].tolist() == [0, 55, 110]


@pytest.fixture
def ovarian_folder(tmp_path):
    """Two classes; a JPEG, an RGBA PNG and a GIF named .jpg, as the real folder holds."""
    root = tmp_path / "ovarian"
    rng = np.random.default_rng(0)
    _write(root / "A" / "one.JPG", rng.integers(0, 255, (200, 300, 3), np.uint8), "JPEG")
    _write(root / "A" / "two copy.png", rng.integers(0, 255, (96, 96, 4), np.uint8), "PNG")
    _write(root / "B" / "4.jpg", rng.integers(0, 255, (150, 100, 3), np.uint8), "GIF")
    return root


def test_ovarian_bags_cut_each_image_at_its_own_resolution(ovarian_folder):
    bags = B.ovarian_bags(ovarian_folder, tile=96)
    assert bags.class_names == ("A", "B")
    assert list(bags.labels) == [0, 0, 1]
    assert list(bags.sizes) == [3 * 4, 1, 2 * 2]
    assert list(bags.groups) == ["A/one.JPG", "A/two copy.png", "B/4.jpg"]
    assert np.all(bags.tile_labels == -1)
    gif = F.read_source(ovarian_folder / "B" / "4.jpg")  # decoded by content, not by suffix
    assert gif.shape == (150, 100, 3) and gif.dtype == np.uint8
    assert F.read_source(ovarian_folder / "A" / "two copy.png").shape == (96, 96, 3)  # alpha dropped
    whole = B.ovarian_bags(ovarian_folder, tile=None)
    assert list(whole.sizes) == [1, 1, 1] and whole.boxes.tolist()[2] == [0, 0, 150, 100]


def test_ovarian_groups_from_a_mapping_or_a_callable(ovarian_folder):
    groups = {"A/one.JPG": "g1", "A/two copy.png": "g1", "B/4.jpg": "g2"}
    assert list(B.ovarian_bags(ovarian_folder, groups=groups).groups) == ["g1", "g1", "g2"]
    assert list(B.ovarian_bags(ovarian_folder, groups=lambda path: Path(path).parent.name).groups) == ["A", "A", "B"]
    with pytest.raises(ValueError, match=r"1 of 3 files have no group, e.g. \['B/4.jpg'\]"):
        B.ovarian_bags(ovarian_folder, groups={"A/one.JPG": 1, "A/two copy.png": 1})
    assert len(B.ovarian_bags(ovarian_folder, per_class=1, seed=0)) == 2


def test_a_file_that_is_not_an_image_is_named(ovarian_folder):
    (ovarian_folder / "B" / "notes.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="notes.jpg"):
        B.ovarian_bags(ovarian_folder)


def test_padded_bags_and_their_dataset(pcam_folder):
    bags = B.pcam_bags(pcam_folder, "train", n_bags=5, bag_size=(2, 6), seed=1)
    features = np.arange(len(bags.sources) * 2, dtype=np.float32).reshape(-1, 2) + 1
    x, mask = B.padded(bags, features)
    assert x.shape == (5, bags.sizes.max(), 2) and mask.sum() == len(bags.sources)
    for i in range(5):
        np.testing.assert_array_equal(x[i][mask[i]], features[bags.members(i)])
        assert np.all(x[i][~mask[i]] == 0)
    with pytest.raises(ValueError, match="largest bag holds"):
        B.padded(bags, features, max_instances=1)
    with pytest.raises(ValueError, match="one row per tile"):
        B.padded(bags, features[:-1])
    inputs, labels = next(iter(B.dataset(bags, features, batch_size=5, max_instances=8)))
    assert inputs["features"].shape == (5, 8, 2) and inputs["mask"].dtype == "bool"
    np.testing.assert_array_equal(labels.numpy(), bags.labels)
    (inputs, labels), = B.dataset(bags, features, indices=[3, 1], batch_size=2).as_numpy_iterator()
    np.testing.assert_array_equal(labels, bags.labels[[3, 1]])
    np.testing.assert_array_equal(inputs["features"][0][inputs["mask"][0]], features[bags.members(3)])
    part = B.subset(bags, [3, 1])
    assert list(part.labels) == [bags.labels[3], bags.labels[1]]
    assert list(part.sources) == list(bags.sources[bags.members(3)]) + list(bags.sources[bags.members(1)])


def test_tile_features_cut_the_right_boxes_and_are_cached_per_tile(pcam_folder, cache, monkeypatch):
    encoder = mean_colour_encoder()
    bags = B.pcam_bags(pcam_folder, "train", n_bags=4, bag_size=4, seed=0)
    features = F.tile_features(bags, encoder)
    index = np.array([int(os.path.basename(s)[5:8]) for s in bags.sources])
    np.testing.assert_allclose(features[:, 0], index / 255, atol=1e-4)  # red = the patch's index (steps of 0.004)
    np.testing.assert_allclose(features[:, 1], bags.tile_labels * 200 / 255, atol=1e-4)
    assert list(cache.rglob("*.npz")) and not list(pcam_folder.rglob("*.np*"))  # never in the data folder

    encoded = []
    real_encode = F.encode
    monkeypatch.setattr(F, "encode", lambda s, b, e, **k: encoded.append(len(s)) or real_encode(s, b, e, **k))
    np.testing.assert_array_equal(F.tile_features(bags, encoder), features)
    assert encoded == []  # all from the cache
    more = B.pcam_bags(pcam_folder, "train", n_bags=10, bag_size=4, seed=0)
    F.tile_features(more, encoder)
    assert sum(encoded) == len(set(more.sources) - set(bags.sources))  # only the new tiles
    touched = bags.sources[0]
    os.utime(touched, ns=(1, 1))
    encoded.clear()
    F.tile_features(bags, encoder)
    assert encoded == [1]  # a changed file is encoded again


def test_a_different_encoder_does_not_read_another_encoders_features(pcam_folder, cache):
    bags = B.pcam_bags(pcam_folder, "train", n_bags=2, bag_size=3, seed=0)
    first = F.tile_features(bags, mean_colour_encoder())
    inputs = keras.Input((96, 96, 3))
    doubled = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(2.0)(inputs)),
                          name="mean_colour")
    np.testing.assert_allclose(F.tile_features(bags, doubled), 2 * first, atol=1e-4)
    np.testing.assert_allclose(F.tile_features(bags, doubled, cache=False), 2 * first, atol=1e-4)


def test_tiles_are_resized_to_the_encoder_and_boxes_outside_raise(ovarian_folder, cache):
    bags = B.ovarian_bags(ovarian_folder, tile=64)
    features = F.tile_features(bags, mean_colour_encoder(32))
    assert features.shape == (len(bags.sources), 3)
    outside = B.Bags(sources=bags.sources[:1], boxes=np.array([[190, 0, 64, 64]]), bag=np.zeros(1, int),
                     labels=np.array([0]), tile_labels=np.array([-1]), groups=np.array(["g"]), class_names=("A",))
    with pytest.raises(ValueError, match=r"lies outside .*one.JPG, an image of 200 x 300"):
        F.tile_features(outside, mean_colour_encoder(64), cache=False)


def test_real_folders(shared_data):
    """The real PCam folders and ovarian images; the real slide region's tissue tiles."""
    pcam = B.pcam_bags(shared_data / "pcam-jpeg", "valid", n_bags=4, bag_size=(8, 12), positive_fraction=0.0, seed=0)
    assert [pcam.tile_labels[pcam.members(i)].sum() for i in range(4)] == list(pcam.labels)
    assert F.read_source(pcam.sources[0]).shape == (96, 96, 3)
    ovarian = B.ovarian_bags(shared_data / "ovarian")
    assert len(ovarian) == 498 and ovarian.class_names[0] == "Clear_Cell"
    assert ovarian.sizes.min() >= 6  # the smallest image, 259 x 194, gives 3 x 3 tiles
    assert F.read_source(shared_data / "ovarian" / "Non_Cancerous" / "4.jpg").ndim == 3  # the GIF
    region = B.region_bag(shared_data / "he-region" / "CMU-1-Small-Region.svs")
    assert len(region) == 1 and 100 < region.sizes[0] < 30 * 23
    assert np.all(region.boxes[:, :2] % 96 == 0)


def test_an_unwritable_cache_warns_and_still_gives_the_features(pcam_folder, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HISTOLIB_CACHE", str(blocker))
    bags = B.pcam_bags(pcam_folder, "train", n_bags=2, bag_size=2, seed=0)
    with pytest.warns(UserWarning, match="tile features not cached"):
        features = F.tile_features(bags, mean_colour_encoder())
    assert features.shape == (4, 3)
