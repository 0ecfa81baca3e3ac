"""Image folders on files written by the tests, and the real PCam JPEG patches when present."""

import numpy as np
import pytest
import tensorflow as tf

from histolib import data
from histolib.data import folders, groups, layout, ovarian, synthetic
from histolib.data import images as images_mod


@pytest.fixture(scope="module")
def arrays():
    images, labels, _ = synthetic.pcam_patches(12, seed=5)
    return images, labels


def _all(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_lossless_round_trip_with_split_folders(tmp_path, arrays, fmt):
    images, labels = arrays
    synthetic.write_folder(tmp_path, images, labels, ["0", "1"], split="train", fmt=fmt)
    synthetic.write_folder(tmp_path, images[:4], labels[:4], ["0", "1"], split="valid", fmt=fmt)
    info = data.info(f"folder:{tmp_path}", "valid")
    assert info == {"class_names": ["0", "1"], "counts": np.bincount(labels[:4], minlength=2).tolist()}
    x, y = _all(data.load(f"folder:{tmp_path}", "train", batch_size=5))
    order = np.argsort(labels, kind="stable")  # files are read class by class, by name
    np.testing.assert_allclose(x, images[order] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(y, labels[order])
    with pytest.raises(ValueError, match="no 'test' folder"):
        data.load(f"folder:{tmp_path}", "test")


def test_class_names_sorted_and_mixed_formats(tmp_path, arrays):
    images, _ = arrays
    names = ["MC", "CC", "HGSC"]
    labels = np.array([0, 1, 2] * 4)
    synthetic.write_folder(tmp_path, images[:6], labels[:6], names, fmt="png")
    synthetic.write_folder(tmp_path, images[6:], labels[6:], names, fmt="tiff", names=[f"t{i}" for i in range(6)])
    info = data.info(f"folder:{tmp_path}", "train", fractions=(0.5, 0.25, 0.25))
    assert info["class_names"] == ["CC", "HGSC", "MC"]
    total = sum(np.array(data.info(f"folder:{tmp_path}", s, fractions=(0.5, 0.25, 0.25))["counts"])
                for s in ("train", "valid", "test"))
    assert total.tolist() == [4, 4, 4]
    x, y = _all(data.load(f"folder:{tmp_path}", "train", batch_size=8, fractions=(0.5, 0.25, 0.25)))
    assert x.shape == (6, 96, 96, 3) and x.dtype == np.float32 and set(y) == {0, 1, 2}


def test_grouped_split_by_file_name(tmp_path, arrays):
    images, labels = arrays
    stems = [f"P{i % 6}_{i:02d}" for i in range(12)]
    synthetic.write_folder(tmp_path, images, labels, ["0", "1"], names=stems)
    owners = {}
    for split in ("train", "valid", "test"):
        sel = folders.selection(tmp_path, split, fractions=(0.5, 0.25, 0.25), group_by=r"^(P\d+)_")
        owners[split] = set(groups.group_keys(sel.items, r"^(P\d+)_"))
        assert len(sel.labels) == sum(len(b[1]) for b in sel.batches(12, False, 0, None))
    assert sum(len(o) for o in owners.values()) == 6  # each patient in exactly one split
    assert set.union(*owners.values()) == {f"P{i}" for i in range(6)}
    with pytest.raises(ValueError, match="does not match"):
        groups.group_keys([str(tmp_path / "x.png")], r"^(P\d+)_")


def test_non_image_files_skipped_with_warning(tmp_path, arrays):
    images, labels = arrays
    synthetic.write_folder(tmp_path, images[:4], labels[:4], ["0", "1"], split="train")
    (tmp_path / "train" / "0" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="skipped 1 non-image"):
        info = data.info(f"folder:{tmp_path}", "train")
    assert sum(info["counts"]) == 4


@pytest.mark.parametrize("fmt, damage", [("jpg", "truncate"), ("png", "truncate"), ("png", "empty"),
                                         ("tif", "truncate"), ("jpg", "text")])
def test_corrupt_image_named_in_error(tmp_path, arrays, fmt, damage):
    images, labels = arrays
    synthetic.write_folder(tmp_path, images[:6], labels[:6], ["0", "1"], split="train", fmt=fmt)
    bad = sorted((tmp_path / "train").glob(f"*/*.{fmt}"))[3]
    raw = bad.read_bytes()
    bad.write_bytes({"truncate": raw[: len(raw) // 2], "empty": b"", "text": b"hello, not a JPEG at all"}[damage])
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=bad.name):
        for _ in data.load(f"folder:{tmp_path}", "train", batch_size=2, image_size=64):
            pass


def test_size_mismatch_named_unless_resized(tmp_path, arrays):
    images, labels = arrays
    synthetic.write_folder(tmp_path, images[:4], labels[:4], ["0", "1"], split="train")
    synthetic.write_image(tmp_path / "train" / "1" / "small.png", images[0][:50, :50])
    with pytest.raises(ValueError, match=r"small.png is 50x50; pass image_size"):
        data.load(f"folder:{tmp_path}", "train", batch_size=8)  # found before any batch
    x, _ = _all(data.load(f"folder:{tmp_path}", "train", batch_size=8, image_size=(32, 48)))
    assert x.shape == (5, 32, 48, 3) and 0.0 <= x.min() and x.max() <= 1.0


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        data.info(f"folder:{tmp_path / 'nope'}")
    with pytest.raises(ValueError, match="no class folders"):
        data.info(f"folder:{tmp_path}")
    with pytest.raises(ValueError, match="needs a directory"):
        data.info("folder:")


def test_real_pcam_jpeg_counts(shared_data):
    root = shared_data / "pcam-jpeg"
    assert data.info(f"folder:{root}", "train") == {"class_names": ["0", "1"], "counts": [10000, 10000]}
    assert data.info(f"folder:{root}", "valid") == {"class_names": ["0", "1"], "counts": [1500, 1500]}
    x, y = next(iter(data.load(f"folder:{root}", "valid", batch_size=8, shuffle=True)))
    assert x.shape == (8, 96, 96, 3) and x.dtype == tf.float32 and y.dtype == tf.int32
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0


def _messy_folder(root, images):
    """Files as real folders come: a GIF named .jpg, an RGBA PNG, upper-case suffixes, spaces."""
    from PIL import Image

    (root / "Clear_Cell").mkdir(parents=True)
    (root / "Serous").mkdir()
    Image.fromarray(images[0]).save(root / "Clear_Cell" / "4.jpg", format="GIF")
    rgba = np.concatenate([images[1], np.arange(96 * 96, dtype=np.uint8).reshape(96, 96, 1)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(root / "Clear_Cell" / "p 1.PNG")
    Image.fromarray(images[2]).save(root / "Serous" / "High grade serous 47.JPG", quality=95)
    Image.fromarray(images[3]).save(root / "Serous" / "s2.TIF")
    return rgba


def test_type_from_content_not_suffix(tmp_path, arrays):
    from PIL import Image

    images, _ = arrays
    rgba = _messy_folder(tmp_path, images)
    x, y = _all(data.load(f"folder:{tmp_path}", "train", batch_size=8, fractions=(1.0, 0.0, 0.0)))
    assert x.shape == (4, 96, 96, 3) and y.tolist() == [0, 0, 1, 1]
    # Files are read class by class, by name: "4.jpg" (a GIF), "p 1.PNG" (RGBA), ...
    gif = np.asarray(Image.open(tmp_path / "Clear_Cell" / "4.jpg").convert("RGB"))
    np.testing.assert_allclose(x[0], gif / 255.0, atol=1e-6)
    np.testing.assert_allclose(x[1], rgba[..., :3] / 255.0, atol=1e-6)  # alpha dropped, not blended
    np.testing.assert_allclose(x[3], images[3] / 255.0, atol=1e-6)
    jpeg = np.asarray(Image.open(tmp_path / "Serous" / "High grade serous 47.JPG"))
    assert np.abs(x[2] - jpeg / 255.0).mean() < 0.01  # JPEG decoders differ in chroma upsampling


def test_check_lists_every_unreadable_file_at_once(tmp_path, arrays):
    images, labels = arrays
    synthetic.write_folder(tmp_path, images, labels, ["0", "1"], fmt="jpg")
    files = sorted(tmp_path.glob("*/*.jpg"))
    for path in files[:11]:
        path.write_bytes(path.read_bytes()[:300])
    (tmp_path / "0" / "text.png").write_text("hello, not a PNG")
    with pytest.raises(images_mod.UnreadableImagesError) as caught:
        data.load(f"folder:{tmp_path}", "train", batch_size=4)
    message = str(caught.value)
    assert len(caught.value.files) == 12 and "\n" not in message
    assert message.startswith(f"12 of 13 files under {tmp_path} cannot be read as images: ")
    assert "text.png (not an image, starts with b'hello, n')" in message
    assert "truncated JPEG (300 bytes, no end marker)" in message and message.endswith("; and 2 more")


def test_check_cached_per_folder_outside_it(tmp_path, arrays, monkeypatch):
    images, labels = arrays
    root, store = tmp_path / "data", tmp_path / "cache"
    monkeypatch.setenv("HISTOLIB_CACHE", str(store))
    synthetic.write_folder(root, images, labels, ["0", "1"])
    before = sorted(p.name for p in root.rglob("*"))
    first = folders.check_folder(root)
    assert not first.cached and first.shapes.tolist() == [[96, 96]] * 12 and first.bad == []
    assert folders.check_folder(root).cached
    assert sorted(p.name for p in root.rglob("*")) == before  # nothing written in the data folder
    assert len(list(store.glob("image-check/*.json"))) == 1
    victim = sorted(root.glob("1/*.png"))[0]
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # same folder, one file changed
    with pytest.raises(ValueError, match=f"{victim.name} \\(truncated PNG"):
        folders.check_folder(root)


def test_file_changed_after_the_check_named_by_the_pipeline(tmp_path, arrays):
    images, labels = arrays
    synthetic.write_folder(tmp_path, images, labels, ["0", "1"], split="train")
    ds = data.load(f"folder:{tmp_path}", "train", batch_size=4)  # checked: all readable
    victim = sorted(tmp_path.glob("train/1/*.png"))[-1]
    victim.write_text("overwritten later")
    with pytest.raises(tf.errors.InvalidArgumentError, match=victim.name):
        for _ in ds:
            pass


def test_display_names_leave_labels_alone():
    names = ["Clear_Cell", "Endometri", "Mucinous", "Non_Cancerous", "Serous"]
    assert folders.display_names(names, ovarian.DISPLAY_NAMES) == ["CC", "EC", "MC", "Non_Cancerous", "HGSC+LGSC"]
    assert folders.display_names(["0", "1"]) == ["0", "1"]
    with pytest.raises(ValueError, match="not there: \\['Seros'\\]"):
        folders.display_names(names, {"Seros": "HGSC"})


def test_real_ovarian_folder_reads_every_file(shared_data):
    root = shared_data / "ovarian"
    info = data.info(f"folder:{root}", "train", fractions=(1.0, 0.0, 0.0))
    assert info == {"class_names": ["Clear_Cell", "Endometri", "Mucinous", "Non_Cancerous", "Serous"],
                    "counts": [100, 98, 100, 100, 100]}
    found = folders.check_folder(root)
    assert found.bad == [] and len(found.paths) == 498
    sizes = {tuple(s) for s in found.shapes.tolist()}
    assert (415, 553) in sizes and (550, 888) in sizes  # the GIF named 4.jpg; the RGBA PNGs
    gif = layout.all_files(root).tolist().index(str(root / "Non_Cancerous" / "4.jpg"))
    assert found.shapes[gif].tolist() == [415, 553]
    with pytest.raises(ValueError, match="differ in size"):
        data.load(f"folder:{root}", "train")
    x, _ = next(iter(data.load(f"folder:{root}", "test", batch_size=4, image_size=224)))
    assert x.shape == (4, 224, 224, 3)


def test_read_image_by_content_eagerly(tmp_path, arrays):
    images, _ = arrays
    synthetic.write_image(tmp_path / "a.tif", images[0])
    (tmp_path / "a.tif").rename(tmp_path / "a.png")  # a TIFF under a PNG name
    np.testing.assert_array_equal(images_mod.read_image(tmp_path / "a.png"), images[0])
