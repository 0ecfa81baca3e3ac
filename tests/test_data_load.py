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


def test_unknown_keywords_are_type_errors_naming_them(tmp_path):
    with pytest.raises(TypeError, match="shufle"):
        data.load("synthetic-pcam:16", "train", shufle=True)
    # Every source's reader takes the front door's keywords and no others.
    for kind, source in data.SOURCES.items():
        with pytest.raises(TypeError, match="colour_space"):
            source.selection()(str(tmp_path), "train", fractions=(0.8, 0.1, 0.1), seed=0, group_by=None,
                               oversample=None, colour_space="HED")


def test_a_source_added_to_the_table_is_loaded_through_the_front_door(monkeypatch):
    # A new source is one row: the front door, info and the spec list read it from there.
    row = data.Source("histolib.data.synthetic.selection:pcam_selection", "my-pcam", "synthetic PCam again")
    monkeypatch.setitem(data.SOURCES, "my-pcam", row)
    assert data.info("my-pcam:16", "valid") == data.info("synthetic-pcam:16", "valid")
    x, _ = next(iter(data.load("my-pcam:16", "valid", batch_size=2)))
    y, _ = next(iter(data.load("synthetic-pcam:16", "valid", batch_size=2)))
    np.testing.assert_array_equal(x.numpy(), y.numpy())
    assert data.folder_digest("my-pcam:16") is None


def test_folder_digest_follows_the_file_list(tmp_path):
    from histolib.data import synthetic

    images, labels, _ = synthetic.pcam_patches(4, seed=0)
    synthetic.write_folder(tmp_path, images, labels, ["0", "1"], split="train")
    first = data.folder_digest(f"folder:{tmp_path}")
    assert first["files"] == 4 and first == data.file_list_digest(tmp_path)
    (tmp_path / "train" / "0" / "img_00000.png").rename(tmp_path / "train" / "0" / "renamed.png")
    assert data.folder_digest(f"folder:{tmp_path}")["sha256"] != first["sha256"]
    assert data.folder_digest("synthetic-pcam") is None and data.folder_digest(f"folder:{tmp_path / 'no'}") is None
