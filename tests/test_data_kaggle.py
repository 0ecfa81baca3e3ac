"""The Kaggle train/<id>.tif + train_labels.csv layout on files the tests write."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from histolib import data
from histolib.data import kaggle, synthetic


@pytest.fixture()
def kaggle_dir(tmp_path):
    images, labels, _ = synthetic.pcam_patches(20, seed=4)
    ids = [f"{i:040x}" for i in range(100, 120)]
    synthetic.write_kaggle(tmp_path, images, labels, ids)
    return tmp_path, images, labels, ids


def test_split_counts_and_pixels(kaggle_dir):
    root, images, labels, ids = kaggle_dir
    counts = [data.info(f"kaggle:{root}", s)["counts"] for s in ("train", "valid", "test")]
    assert [sum(c) for c in counts] == [16, 2, 2]
    assert np.sum(counts, axis=0).tolist() == [10, 10]
    sel = kaggle.selection(root, "test")
    x = np.concatenate([b[0].numpy() for b in sel.batches(8, False, 0, None)])
    rows = [ids.index(p.split("/")[-1][:-4]) for p in sel.items]
    np.testing.assert_allclose(x, images[rows] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(sel.labels, labels[rows])


def test_missing_pieces_named(kaggle_dir):
    root, _, _, ids = kaggle_dir
    (root / "train" / f"{ids[3]}.tif").unlink()
    with pytest.raises(ValueError, match=f"1 image\\(s\\) listed in .*train_labels.csv are missing.*{ids[3]}"):
        data.info(f"kaggle:{root}")
    (root / "train_labels.csv").unlink()
    with pytest.raises(ValueError, match="train_labels.csv"):
        data.info(f"kaggle:{root}")


def test_bad_columns(kaggle_dir):
    root, _, _, ids = kaggle_dir
    pd.DataFrame({"name": ids, "label": 0}).to_csv(root / "train_labels.csv", index=False)
    with pytest.raises(ValueError, match="columns id,label"):
        data.info(f"kaggle:{root}")


def test_corrupt_tiff_named(kaggle_dir):
    root, _, _, ids = kaggle_dir
    bad = root / "train" / f"{ids[0]}.tif"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=bad.name):
        for split in ("train", "valid", "test"):
            for _ in data.load(f"kaggle:{root}", split, batch_size=8, image_size=96):
                pass
