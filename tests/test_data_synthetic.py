"""Synthetic data: determinism, the PCam rule, the seed's proportions, and the writers."""

import gzip

import h5py
import numpy as np
import pandas as pd
import pytest

from histolib import data
from histolib.data import synthetic


@pytest.fixture(scope="module")
def patches():
    return synthetic.pcam_patches(24, seed=3)


def test_pcam_patches_shapes_and_types(patches):
    images, labels, masks = patches
    assert images.shape == (24, 96, 96, 3) and images.dtype == np.uint8
    assert labels.shape == (24,) and masks.shape == (24, 96, 96) and masks.dtype == bool


def test_pcam_rule_label_is_lesion_touching_centre(patches):
    _, labels, masks = patches
    np.testing.assert_array_equal(labels, masks[:, 32:64, 32:64].any(axis=(1, 2)).astype(int))
    # Some label-0 patches carry a lesion outside the centre, so presence alone does not decide.
    assert (masks.any(axis=(1, 2)) & (labels == 0)).any()
    assert labels.sum() == 12  # pairs hold one patch of each class


def test_pcam_patches_deterministic_and_seeded(patches):
    again = synthetic.pcam_patches(24, seed=3)
    other = synthetic.pcam_patches(24, seed=4)
    np.testing.assert_array_equal(patches[0], again[0])
    assert not np.array_equal(patches[0], other[0])


def test_pcam_slices_and_splits(patches):
    images = patches[0]
    part = synthetic.pcam_patches(5, seed=3, start=10)[0]
    np.testing.assert_array_equal(part, images[10:15])
    np.testing.assert_array_equal(synthetic.pcam_images([7, 2], seed=3), images[[7, 2]])
    valid = synthetic.pcam_patches(24, seed=3, split="valid")[0]
    assert not any(np.array_equal(a, b) for a in images for b in valid)
    with pytest.raises(ValueError, match="split"):
        synthetic.pcam_patches(2, split="validation")


def test_load_streams_the_same_patches():
    images, labels, _ = synthetic.pcam_patches(10, seed=1, split="test")
    ds = data.load("synthetic-pcam:80", "test", batch_size=4, seed=1)
    x = np.concatenate([b[0].numpy() for b in ds])
    y = np.concatenate([b[1].numpy() for b in ds])
    np.testing.assert_allclose(x, images / 255.0, atol=1e-6)
    np.testing.assert_array_equal(y, labels)


@pytest.mark.parametrize("spec, counts", [
    ("synthetic-pcam", {"train": 4096, "valid": 512, "test": 512}),
    ("synthetic-pcam:64", {"train": 64, "valid": 8, "test": 8}),
    ("synthetic-pcam:10,4,6", {"train": 10, "valid": 4, "test": 6}),
])
def test_pcam_sizes_and_balance(spec, counts):
    for split, n in counts.items():
        assert data.info(spec, split)["counts"] == [n // 2, n - n // 2]


def test_pcam_bad_size():
    with pytest.raises(ValueError, match="synthetic-pcam:abc"):
        data.info("synthetic-pcam:abc")


def test_subtype_default_counts_are_the_seeds():
    labels, patients = synthetic.subtype_table(seed=0)
    counts = dict(zip(synthetic.SUBTYPE_CLASSES, np.bincount(labels)))
    assert counts == {"CC": 551, "EC": 733, "HGSC": 1188, "LGSC": 287, "MC": 323}
    # One subtype per patient, and more than one patient per subtype.
    per_patient = pd.Series(labels).groupby(patients).nunique()
    assert per_patient.max() == 1
    assert all(len(set(patients[labels == c])) > 5 for c in range(5))
    total = [sum(data.info("synthetic-subtype", s)["counts"][c] for s in ("train", "valid", "test")) for c in range(5)]
    assert total == [551, 733, 1188, 287, 323]


def test_subtype_counts_scale_in_proportion():
    counts = synthetic.subtype_counts(308)
    assert sum(counts.values()) == 308
    assert counts == {"HGSC": 119, "EC": 73, "CC": 55, "MC": 32, "LGSC": 29}
    with pytest.raises(ValueError, match="total"):
        synthetic.subtype_counts(3)


def test_subtype_images_deterministic_and_distinct_classes():
    images, labels, patients = synthetic.subtype_images(np.arange(40), total=200, seed=0)
    again, _, _ = synthetic.subtype_images([5, 6], total=200, seed=0)
    np.testing.assert_array_equal(images[5:7], again)
    assert images.shape == (40, 96, 96, 3) and images.dtype == np.uint8
    assert len(set(labels)) == 5 and len(patients) == 40


def test_subtype_textures_separable_but_not_trivially():
    """A linear model on tiny thumbnails beats the majority class; it is not perfect."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    images, labels, _ = synthetic.subtype_images(total=300, seed=0)
    feats = images.reshape(300, 12, 8, 12, 8, 3).mean(axis=(2, 4)).reshape(300, -1) / 255.0
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(feats[:200], labels[:200])
    accuracy = model.score(feats[200:], labels[200:])
    majority = np.bincount(labels[200:]).max() / 100
    assert majority < accuracy < 1.0


def test_write_pcam_h5_layout(tmp_path, patches):
    images, labels, _ = patches
    paths = synthetic.write_pcam_h5(tmp_path, "valid", images, labels, slides=["a"] * 24, compress=True)
    assert [p.name for p in paths] == ["camelyonpatch_level_2_split_valid_x.h5.gz",
                                       "camelyonpatch_level_2_split_valid_y.h5.gz",
                                       "camelyonpatch_level_2_split_valid_meta.csv"]
    raw = tmp_path / "y.h5"
    raw.write_bytes(gzip.decompress(paths[1].read_bytes()))
    with h5py.File(raw) as f:
        assert f["y"].shape == (24, 1, 1, 1) and f["y"].dtype == np.uint8
        np.testing.assert_array_equal(f["y"][:].ravel(), labels)
    assert list(pd.read_csv(paths[2])["wsi"]) == ["a"] * 24


def test_write_folder_and_kaggle(tmp_path, patches):
    images, labels, _ = patches
    base = synthetic.write_folder(tmp_path / "f", images[:6], labels[:6], ["0", "1"], split="test", fmt="jpg")
    assert base == tmp_path / "f" / "test"
    assert sorted(p.name for p in base.glob("*/*.jpg")) == [f"img_{i:05d}.jpg" for i in range(6)]
    root = synthetic.write_kaggle(tmp_path / "k", images[:4], labels[:4], ids=["a", "b", "c", "d"])
    table = pd.read_csv(root / "train_labels.csv")
    assert list(table["id"]) == ["a", "b", "c", "d"] and list(table["label"]) == list(labels[:4])
    assert sorted(p.name for p in (root / "train").iterdir()) == ["a.tif", "b.tif", "c.tif", "d.tif"]
    with pytest.raises(ValueError, match="unknown image format"):
        synthetic.write_image(tmp_path / "x.bmp", images[0])


def test_memo_keeps_the_newest_stores_and_redraws_an_evicted_one():
    from histolib.data.synthetic import selection

    def first_batch(seed):
        return next(iter(data.load("synthetic-pcam:16", "valid", batch_size=2, seed=seed)))[0].numpy()

    selection._Memo._stores.clear()
    oldest = first_batch(100)
    assert ("pcam", 100, "valid", 2) in selection._Memo._stores
    for seed in range(101, 101 + selection.MEMO_STORES):
        first_batch(seed)
    keys = list(selection._Memo._stores)
    assert len(keys) == selection.MEMO_STORES and ("pcam", 100, "valid", 2) not in keys
    assert keys[-1] == ("pcam", 100 + selection.MEMO_STORES, "valid", 2)
    # Evicted, the split is drawn again, the same patches as before.
    np.testing.assert_array_equal(first_batch(100), oldest)
    images, _, _ = synthetic.pcam_patches(2, seed=100, split="valid")
    np.testing.assert_allclose(oldest, images / 255.0, atol=1e-6)

