"""Original PCam .h5 files: streaming, shuffling, file checks that name the file, manifest, download."""

import h5py
import numpy as np
import pytest

from histolib import data
from histolib.data import pcam, synthetic


@pytest.fixture(scope="module")
def arrays():
    images, labels, _ = synthetic.pcam_patches(40, seed=2)
    return images, labels


@pytest.fixture()
def pcam_dir(tmp_path, arrays):
    images, labels = arrays
    synthetic.write_pcam_h5(tmp_path, "train", images, labels, slides=[f"slide_{i % 4}" for i in range(40)])
    synthetic.write_pcam_h5(tmp_path, "valid", images[:8], labels[:8], compress=True)
    return tmp_path


def _all(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_streams_in_order(pcam_dir, arrays):
    images, labels = arrays
    assert data.info(f"pcam-h5:{pcam_dir}", "train") == {"class_names": ["0", "1"], "counts": [20, 20]}
    x, y = _all(data.load(f"pcam-h5:{pcam_dir}", "train", batch_size=16))
    np.testing.assert_allclose(x, images / 255.0, atol=1e-6)
    np.testing.assert_array_equal(y, labels)


def test_gz_is_unpacked_when_asked_not_as_a_side_effect(pcam_dir, arrays):
    images, labels = arrays
    with pytest.raises(ValueError, match=r"packed.*histolib.data.pcam.unpack"):
        data.load(f"pcam-h5:{pcam_dir}", "valid", batch_size=3)
    assert not (pcam_dir / "camelyonpatch_level_2_split_valid_x.h5").exists()
    assert [p.name for p in pcam.unpack(pcam_dir, ["valid"])] == [
        "camelyonpatch_level_2_split_valid_x.h5", "camelyonpatch_level_2_split_valid_y.h5"]
    x, y = _all(data.load(f"pcam-h5:{pcam_dir}", "valid", batch_size=3, image_size=48))
    assert x.shape == (8, 48, 48, 3)
    np.testing.assert_array_equal(y, labels[:8])
    assert (pcam_dir / "camelyonpatch_level_2_split_valid_x.h5").is_file()


def test_shuffle_is_seeded_and_complete(pcam_dir, monkeypatch, arrays):
    _, labels = arrays
    monkeypatch.setattr(pcam, "BLOCK", 8)  # several blocks even in a small file
    ds = data.load(f"pcam-h5:{pcam_dir}", "train", batch_size=10, shuffle=True, seed=7)
    x1, y1 = _all(ds)
    x2, y2 = _all(data.load(f"pcam-h5:{pcam_dir}", "train", batch_size=10, shuffle=True, seed=7))
    np.testing.assert_array_equal(x1, x2)
    assert sorted(y1) == sorted(labels) and not np.array_equal(y1, labels)
    _, y_next_epoch = _all(ds)
    assert not np.array_equal(y1, y_next_epoch)


def test_meta_gives_slides(pcam_dir):
    meta = pcam.read_meta(pcam_dir, "train")
    assert len(meta) == 40 and meta["wsi"].nunique() == 4
    with pytest.raises(ValueError, match="camelyonpatch_level_2_split_test_meta.csv"):
        pcam.read_meta(pcam_dir, "test")


def test_missing_split_names_the_file(pcam_dir):
    with pytest.raises(ValueError, match="camelyonpatch_level_2_split_test_x.h5"):
        data.load(f"pcam-h5:{pcam_dir}", "test")


def test_truncated_file_named(pcam_dir):
    path = pcam_dir / "camelyonpatch_level_2_split_train_x.h5"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="camelyonpatch_level_2_split_train_x.h5.*truncated"):
        data.info(f"pcam-h5:{pcam_dir}", "train")
    path.write_bytes(raw[:1000])
    with pytest.raises(ValueError, match="camelyonpatch_level_2_split_train_x.h5"):
        data.info(f"pcam-h5:{pcam_dir}", "train")


@pytest.mark.parametrize("key, array, message", [
    ("x", np.zeros((40, 32, 32, 3), np.uint8), "must be uint8 \\(n, 96, 96, 3\\)"),
    ("x", np.zeros((40, 96, 96, 3), np.float32), "must be uint8"),
    ("y", np.zeros((39, 1, 1, 1), np.uint8), "shape \\(40, 1, 1, 1\\)"),
    ("y", np.full((40, 1, 1, 1), 3, np.uint8), "labels must be 0 or 1"),
])
def test_misshaped_file_named(pcam_dir, key, array, message):
    path = pcam_dir / f"camelyonpatch_level_2_split_train_{key}.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=array)
    with pytest.raises(ValueError, match=f"{path.name}.*{message}"):
        data.info(f"pcam-h5:{pcam_dir}", "train")


def test_wrong_dataset_key_named(pcam_dir):
    path = pcam_dir / "camelyonpatch_level_2_split_train_y.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("labels", data=np.zeros(40, np.uint8))
    with pytest.raises(ValueError, match=f"{path.name} has no dataset 'y'"):
        data.info(f"pcam-h5:{pcam_dir}", "train")


def test_fixed_splits_refuse_grouping_and_oversampling(pcam_dir):
    with pytest.raises(ValueError, match="group_by"):
        data.info(f"pcam-h5:{pcam_dir}", group_by="slide")
    with pytest.raises(ValueError, match="oversample"):
        data.info(f"pcam-h5:{pcam_dir}", oversample="after")


def test_manifest_lists_every_file():
    info = pcam.manifest()
    assert info["split_lengths"] == pcam.SPLIT_LENGTHS
    assert info["url_template"].startswith("https://zenodo.org/records/2546921/files/")
    names = {f"camelyonpatch_level_2_split_{s}_{k}" for s in ("train", "valid", "test") for k in ("x.h5", "y.h5", "meta.csv")}
    assert set(info["files"]) == names
    assert all(len(e["md5"]) == 32 and int(e["md5"], 16) >= 0 for e in info["files"].values())


def test_verify_reports_sums_and_lengths(pcam_dir):
    with pytest.raises(ValueError, match="(?s)has 40 patches.*train_x.h5: md5"):
        pcam.verify(pcam_dir, ["train"])
    digest = pcam.md5sum(pcam_dir / "camelyonpatch_level_2_split_train_y.h5")
    import hashlib
    assert digest == hashlib.md5((pcam_dir / "camelyonpatch_level_2_split_train_y.h5").read_bytes()).hexdigest()


def test_download_fails_fast_offline(tmp_path, monkeypatch):
    import socket

    calls = []

    def offline(address, timeout):
        calls.append((address, timeout))
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    with pytest.raises(ConnectionError, match="(?s)cannot reach zenodo.org.*pcam-h5:DIR"):
        pcam.download_pcam(tmp_path / "pcam")
    assert calls == [(("zenodo.org", 443), 5.0)]
    assert not (tmp_path / "pcam").exists()
