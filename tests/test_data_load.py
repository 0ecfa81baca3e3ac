"""The front door: specs, argument checks, batch structure, resizing, seeded shuffling, oversampling."""

import numpy as np
import pytest
import tensorflow as tf

from histolib import data


@pytest.mark.parametrize("spec", ["", "mnist", "hdf5:/tmp", None])
def test_unknown_spec(spec):
    with pytest.raises(ValueError, match="spec"):
        data.load(spec)


@pytest.mark.parametrize("spec, suggestion", [
    ("synthetic-pcm", "synthetic-pcam"),
    ("Synthetic-Subtype:100", "synthetic-subtype:100"),
    ("foldr:/data/pcam", "folder:/data/pcam"),
    ("pcam_h5:/data", "pcam-h5:/data"),
    ("tfs:patch_camelyon", "tfds:patch_camelyon"),
])
def test_misspelt_spec_suggests_the_closest(spec, suggestion):
    with pytest.raises(ValueError, match=f"did you mean '{suggestion}'\\? Valid data specs: .*Received: spec="):
        data.info(spec)


def test_bare_folder_suggests_the_folder_spec(tmp_path):
    with pytest.raises(ValueError, match=f"did you mean 'folder:{tmp_path}'"):
        data.info(str(tmp_path))
    with pytest.raises(ValueError, match="Unknown data spec\\. Valid data specs"):
        data.info("mnist")


@pytest.mark.parametrize("kwargs, message", [
    ({"split": "validation"}, "split must be one of"),
    ({"batch_size": 0}, "batch_size"),
    ({"image_size": (0, 3)}, "image_size"),
    ({"oversample": "yes"}, "oversample"),
    ({"fractions": (0.9, 0.2, 0.1)}, "fractions"),
])
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.load("synthetic-pcam:16", **kwargs)


@pytest.mark.parametrize("spec, split", [("pcam-h5:", "train"), ("kaggle:", "train")])
def test_directory_required(spec, split):
    with pytest.raises(ValueError, match="needs a directory"):
        data.load(spec, split)


def test_structure_and_class_names():
    ds = data.load("synthetic-subtype:100", "valid", batch_size=4, image_size=32)
    assert ds.element_spec[0] == tf.TensorSpec((None, 32, 32, 3), tf.float32)
    assert ds.element_spec[1] == tf.TensorSpec((None,), tf.int32)
    assert ds.class_names == ["CC", "EC", "HGSC", "LGSC", "MC"]
    assert sum(len(y) for _, y in ds) == sum(data.info("synthetic-subtype:100", "valid")["counts"])


def test_shuffle_seeded_and_reshuffled_each_epoch():
    def labels(ds):
        return np.concatenate([y.numpy() for _, y in ds])

    a = data.load("synthetic-pcam:64", "train", batch_size=16, shuffle=True, seed=3)
    b = data.load("synthetic-pcam:64", "train", batch_size=16, shuffle=True, seed=3)
    first = labels(a)
    np.testing.assert_array_equal(first, labels(b))
    assert not np.array_equal(first, labels(a))
    assert sorted(first) == sorted(labels(data.load("synthetic-pcam:64", "train", batch_size=16)))


def test_subtype_oversampling_and_grouping_counts():
    after = data.info("synthetic-subtype", "train", oversample="after")["counts"]
    assert len(set(after)) == 1 and after[0] == data.info("synthetic-subtype", "train")["counts"][2]
    before = [sum(data.info("synthetic-subtype", s, oversample="before", seed=42)["counts"]) for s in data.SPLITS]
    assert before == [4752, 594, 594]
    grouped = data.info("synthetic-subtype", "test", group_by="patient")["counts"]
    assert min(grouped) > 0
    with pytest.raises(ValueError, match="patient"):
        data.info("synthetic-subtype", group_by="slide")
    with pytest.raises(ValueError, match="group_by"):
        data.info("synthetic-pcam", group_by="patient")
