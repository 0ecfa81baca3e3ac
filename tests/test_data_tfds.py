"""TFDS patch_camelyon through tfds.testing.mock_data, and the offline fast-fail (no network used)."""


import pytest
import tensorflow_datasets as tfds

from histolib import data
from histolib.data import tfds as tfds_source


@pytest.fixture()
def online(monkeypatch):
    monkeypatch.setattr(tfds_source, "reachable", lambda *a, **k: True)


def test_load_mocked(tmp_path, online):
    with tfds.testing.mock_data(num_examples=10):
        ds = data.load(f"tfds:patch_camelyon:{tmp_path}", "valid", batch_size=4)
        batches = list(ds)
        info = data.info(f"tfds:patch_camelyon:{tmp_path}", "test")
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.shape == (4, 96, 96, 3) and x.dtype == "float32" and y.dtype == "int32"
    assert 0.0 <= float(x.numpy().min()) and float(x.numpy().max()) <= 1.0
    assert info["class_names"] == ["0", "1"] and sum(info["counts"]) == 10
    assert ds.class_names == ["0", "1"]


def test_training_split_shuffles_and_augments(tmp_path, online):
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load(f"tfds:patch_camelyon:{tmp_path}", "train", batch_size=6, shuffle=True, augment="pcam-seed",
                       image_size=64)
        shapes = [tuple(x.shape) for x, _ in ds]
    assert shapes == [(6, 64, 64, 3), (6, 64, 64, 3)]


def test_offline_fails_fast_with_directions(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(tfds_source, "reachable", lambda host, port, timeout: asked.append(timeout) or False)
    with pytest.raises(ConnectionError, match="(?s)pcam-h5:DIR.*histolib data pcam"):
        data.load(f"tfds:patch_camelyon:{tmp_path}", "train")
    assert asked == [tfds_source.REACH_TIMEOUT] and tfds_source.REACH_TIMEOUT <= 5


def test_only_patch_camelyon():
    with pytest.raises(ValueError, match="patch_camelyon"):
        data.info("tfds:mnist")
    with pytest.raises(ValueError, match="oversample"):
        data.info("tfds:patch_camelyon", oversample="after")


def test_split_names_map_to_tfds(tmp_path, online, monkeypatch):
    # Each histolib split reads the TFDS split of PCam's name for it: TFDS is asked, through
    # the real tfds.load (on mock data), for "validation" when histolib loads "valid".
    asked = []
    real_load = tfds.load

    def recording_load(name, *, split, **kwargs):
        asked.append(split)
        return real_load(name, split=split, **kwargs)

    monkeypatch.setattr(tfds, "load", recording_load)
    with tfds.testing.mock_data(num_examples=4):
        for split in ("train", "valid", "test"):
            assert sum(y.shape[0] for _, y in data.load(f"tfds:patch_camelyon:{tmp_path}", split, batch_size=4)) == 4
    assert asked == ["train", "validation", "test"]
    with pytest.raises(ValueError, match="'valid' is TFDS's 'validation'"):
        data.load("tfds:patch_camelyon", "validation")
