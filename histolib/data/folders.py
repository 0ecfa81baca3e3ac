"""Image folders: ``root/[split/]class/*.{png,jpg,jpeg,tif,tiff}``.

Class names are the class folder names, sorted (``"0"``, ``"1"`` for the PCam JPEG patches;
``CC, EC, HGSC, LGSC, MC`` for the ovarian subtype sets); labels are their positions. With split
folders (``train``, ``valid``, ``test``) ``split`` picks one; without them the seeded stratified
split of :mod:`histolib.data.splits` applies, grouped by a patient or slide key when asked.

Reading is ``tf.io.read_file`` and TensorFlow's decoders in a parallel ``map``; TIFF, which
TensorFlow cannot decode, goes through tifffile. A file that is not a complete PNG or JPEG
(empty, truncated, another format under an image suffix) stops the pipeline with an error that
names it, instead of a bare decode failure deep in tf.data. Other files (``.txt``, ``.csv``,
``Thumbs.db`` ...) are skipped with a warning. Images must all have one size unless
``image_size`` is given; a mismatch names the file.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from histolib.data import splits as _splits
from histolib.data._pipeline import AUTOTUNE, Selection, to_float

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
"""File suffixes read as images (case-insensitive)."""

SPLIT_DIRS = _splits.SPLITS


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _subdirs(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def layout(root) -> dict:
    """Describe ``root`` without reading images.

    Returns:
        ``{"splits": [split folder names] or [], "class_names": sorted class folder names}``;
        with split folders, the class names are the union over splits.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder not found: {root} (expected root/[split/]class/*.png|jpg|tif)")
    top = _subdirs(root)
    split_dirs = [s for s in SPLIT_DIRS if s in top]
    if split_dirs:
        classes = sorted({c for s in split_dirs for c in _subdirs(root / s)})
    else:
        classes = top
    if not classes:
        raise ValueError(f"no class folders in {root}: expected root/[split/]class/*.png|jpg|tif")
    return {"splits": split_dirs, "class_names": classes}


def list_files(base, class_names) -> tuple[np.ndarray, np.ndarray]:
    """Image paths and labels under ``base/class/``, sorted by class then name.

    Non-image files are skipped with one warning that counts them and names a few.
    """
    base = Path(base)
    paths, labels, skipped = [], [], []
    for label, name in enumerate(class_names):
        folder = base / name
        if not folder.is_dir():
            continue
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if not entry.is_file():
                continue
            if _is_image(entry.name):
                paths.append(entry.path)
                labels.append(label)
            else:
                skipped.append(entry.path)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} non-image file(s) under {base} (images are "
                      f"{', '.join(IMAGE_SUFFIXES)}), e.g. {skipped[:3]}", stacklevel=3)
    return np.array(paths, dtype=str), np.array(labels, dtype=np.int32)


def group_keys(paths, group_by) -> np.ndarray:
    """Patient or slide key per file: ``group_by`` is a callable ``path -> key`` or a regular
    expression searched in the file name (its first group if it has one, e.g. ``r"^(P\\d+)_"``)."""
    if callable(group_by):
        return np.array([str(group_by(p)) for p in paths])
    if not isinstance(group_by, str):
        raise ValueError("group_by must be a callable (path -> key) or a regular expression. "
                         f"Received: group_by={group_by!r}")
    pattern = re.compile(group_by)
    keys = []
    for p in paths:
        m = pattern.search(os.path.basename(p))
        if m is None:
            raise ValueError(f"group_by pattern {group_by!r} does not match the file name of {p}")
        keys.append(m.group(1) if m.groups() else m.group(0))
    return np.array(keys)


# ----------------------------------------------------------------------------- decoding
def _read_tiff(path) -> np.ndarray:
    import tifffile

    path = np.asarray(path).item()
    path = path.decode() if isinstance(path, bytes) else str(path)
    try:
        image = np.asarray(tifffile.imread(path))
    except Exception as err:  # tifffile raises many types; say which file, keep the cause
        raise ValueError(f"corrupt or unreadable TIFF image: {path} ({type(err).__name__}: {err})") from err
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"TIFF image {path} has shape {image.shape}; expected (h, w), (h, w, 3) or (h, w, 4)")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    image = image[..., :3]
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image // 257).astype(np.uint8)
        elif np.issubdtype(image.dtype, np.floating) and image.max() <= 1.0:
            image = np.round(image * 255).astype(np.uint8)
        else:
            raise ValueError(f"TIFF image {path} has dtype {image.dtype}; expected uint8, uint16 or float in [0, 1]")
    return image


def _complete_png_or_jpeg(data):
    """True when ``data`` starts like a PNG or JPEG and ends like one (IEND chunk / EOI marker)."""
    size = tf.strings.length(data)
    png = tf.logical_and(tf.equal(tf.strings.substr(data, 0, 8), b"\x89PNG\r\n\x1a\n"),
                         tf.equal(tf.strings.substr(data, tf.maximum(size - 8, 0), 4), b"IEND"))
    tail = tf.io.decode_raw(tf.strings.substr(data, tf.maximum(size - 32, 0), 32), tf.uint8)
    eoi = tf.reduce_any(tf.logical_and(tf.equal(tail[:-1], 0xFF), tf.equal(tail[1:], 0xD9)))
    jpeg = tf.logical_and(tf.equal(tf.strings.substr(data, 0, 2), b"\xff\xd8"), eoi)
    return tf.logical_and(size >= 16, tf.logical_or(png, jpeg))


def _decode_tf(path):
    data = tf.io.read_file(path)
    check = tf.debugging.Assert(_complete_png_or_jpeg(data), [
        "corrupt or unreadable image file (not a complete PNG or JPEG):", path], summarize=1)
    with tf.control_dependencies([check]):
        return tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)


def _decode_tiff(path):
    image = tf.numpy_function(_read_tiff, [path], tf.uint8, stateful=False)
    image.set_shape([None, None, 3])
    return image


def decoder(paths):
    """A TensorFlow function ``path -> uint8 (h, w, 3)`` suited to the suffixes in ``paths``."""
    lower = np.char.lower(np.asarray(paths, dtype=str))
    tiff = np.char.endswith(lower, ".tif") | np.char.endswith(lower, ".tiff")
    if tiff.all():
        return _decode_tiff
    if not tiff.any():
        return _decode_tf

    def decode(path):
        is_tiff = tf.strings.regex_full_match(tf.strings.lower(path), r".*\.tiff?")
        return tf.cond(is_tiff, lambda: _decode_tiff(path), lambda: _decode_tf(path))

    return decode


def read_image(path) -> np.ndarray:
    """Read one image as uint8 ``(h, w, 3)``, with the same decoders and checks as the pipeline."""
    return decoder([str(path)])(tf.constant(str(path))).numpy()


def files_selection(class_names, paths, labels_all, indices) -> Selection:
    """A selection that reads image files ``paths[indices]`` with their labels.

    Without ``image_size`` every image must have the size of the first one; a mismatch stops
    the pipeline with an error naming the file and suggesting ``image_size``.
    """
    indices = np.asarray(indices, dtype=np.int64)
    paths = np.asarray(paths, dtype=str)
    labels = np.asarray(labels_all, dtype=np.int32)[indices]
    sel_paths = paths[indices]

    def batches(batch_size, shuffle, seed, image_size):
        if len(sel_paths) == 0:
            raise ValueError("no images in this selection")
        decode = decoder(sel_paths)
        expected = None if image_size is not None else read_image(sel_paths[0]).shape[:2]
        ds = tf.data.Dataset.from_tensor_slices((sel_paths, labels))
        if shuffle:
            ds = ds.shuffle(len(sel_paths), seed=seed, reshuffle_each_iteration=True)

        def load_one(path, y):
            image = decode(path)
            if expected is not None:
                same = tf.reduce_all(tf.equal(tf.shape(image)[:2], expected))
                check = tf.debugging.Assert(same, [
                    "image", path, "has size", tf.shape(image)[:2], "but the first image has",
                    tf.constant(expected), "; pass image_size=(h, w) to resize"], summarize=3)
                with tf.control_dependencies([check]):
                    image = tf.identity(image)
                image = tf.ensure_shape(image, [*expected, 3])
            return to_float(image, image_size), y

        return ds.map(load_one, num_parallel_calls=AUTOTUNE).batch(batch_size)

    return Selection(list(class_names), labels, batches, sel_paths)


def selection(root, split: str, *, fractions=(0.8, 0.1, 0.1), seed: int = 0, group_by=None,
              oversample=None) -> Selection:
    """One split of the image folder at ``root``.

    With split folders, ``split`` must be one of them (``fractions`` and ``group_by`` do not
    apply); without, the seeded stratified (or grouped) split gives it. ``oversample`` as in
    :func:`histolib.data.splits.select` (``"before"`` only without split folders).
    """
    lay = layout(root)
    root = Path(root)
    if lay["splits"]:
        if split not in lay["splits"]:
            raise ValueError(f"{root} has split folders {lay['splits']} and no {split!r} folder. "
                             f"Received: split={split!r}")
        if group_by is not None or oversample == "before":
            raise ValueError(f"{root} has fixed split folders; group_by and oversample='before' only "
                             "apply to folders without split folders")
        paths, labels = list_files(root / split, lay["class_names"])
        if len(paths) == 0:
            raise ValueError(f"no images under {root / split}/<class>/ (expected {', '.join(IMAGE_SUFFIXES)})")
        idx = np.arange(len(paths))
        if oversample == "after" and split == "train":
            idx = _splits.oversample(idx, labels, seed)
        return files_selection(lay["class_names"], paths, labels, idx)
    paths, labels = list_files(root, lay["class_names"])
    if len(paths) == 0:
        raise ValueError(f"no images under {root}/<class>/ (expected {', '.join(IMAGE_SUFFIXES)})")
    groups = None if group_by is None else group_keys(paths, group_by)
    idx = _splits.select(labels, split, fractions=fractions, seed=seed, groups=groups,
                         oversample_order=oversample)
    return files_selection(lay["class_names"], paths, labels, idx)
