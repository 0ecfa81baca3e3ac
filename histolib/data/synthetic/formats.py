"""Writers of the real formats: synthetic (or any) arrays saved in the layouts the loaders read.

- `write_pcam_h5`: PCam's ``camelyonpatch_level_2_split_{split}_{x,y}.h5`` (and ``.h5.gz``,
  ``_meta.csv``), with the file names of :mod:`histolib.data.pcam`;
- `write_folder`: ``root/[split/]class/name.{png,jpg,tif}``;
- `write_kaggle`: Kaggle's ``train/<id>.tif`` + ``train_labels.csv``.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import tensorflow as tf
import tifffile

from histolib.data.pcam import META_FILE, PCAM_FILE


def write_pcam_h5(directory, split: str, images: np.ndarray, labels: np.ndarray, *,
                  slides=None, compress: bool = False) -> list[Path]:
    """Write one split in the original PCam layout.

    Files ``camelyonpatch_level_2_split_{split}_x.h5`` (dataset ``x``, uint8 ``(n, 96, 96, 3)``)
    and ``..._y.h5`` (dataset ``y``, uint8 ``(n, 1, 1, 1)``), contiguous like the originals; with
    ``slides`` (str ``(n,)``) also ``..._meta.csv`` with PCam's columns
    (``coord_y, coord_x, tumor_patch, center_tumor_patch, wsi``); with ``compress=True`` the
    ``.h5`` files are gzipped to ``.h5.gz`` as published.

    Returns:
        The paths written.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels):
        raise ValueError("images must be (n, h, w, 3) and labels (n,). Received: "
                         f"images.shape={images.shape}, labels.shape={labels.shape}")
    written = []
    for key, array in (("x", images.astype(np.uint8)), ("y", labels.astype(np.uint8).reshape(-1, 1, 1, 1))):
        path = directory / PCAM_FILE.format(split=split, key=key)
        with h5py.File(path, "w") as f:
            f.create_dataset(key, data=array)
        if compress:
            with open(path, "rb") as src, gzip.open(f"{path}.gz", "wb", compresslevel=1) as dst:
                shutil.copyfileobj(src, dst)
            path.unlink()
            path = Path(f"{path}.gz")
        written.append(path)
    if slides is not None:
        path = directory / META_FILE.format(split=split)
        pd.DataFrame({"coord_y": 0, "coord_x": 0, "tumor_patch": labels.astype(bool),
                      "center_tumor_patch": labels.astype(bool), "wsi": np.asarray(slides)}).to_csv(path)
        written.append(path)
    return written


def write_image(path, image: np.ndarray) -> None:
    """Write one uint8 ``(h, w, 3)`` image; the format follows the suffix (png, jpg/jpeg, tif/tiff)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, image, photometric="rgb")
    elif suffix == ".png":
        path.write_bytes(tf.io.encode_png(image).numpy())
    elif suffix in (".jpg", ".jpeg"):
        path.write_bytes(tf.io.encode_jpeg(image, quality=95).numpy())
    else:
        raise ValueError(f"unknown image format for {path}; expected .png, .jpg, .jpeg, .tif or .tiff")


def write_folder(root, images: np.ndarray, labels: np.ndarray, class_names, *, split: str | None = None,
                 fmt: str = "png", names=None) -> Path:
    """Write an image-folder data set ``root/[split/]class/name.fmt``.

    Args:
        root: folder to write into (created).
        images: uint8 ``(n, h, w, 3)``; labels: int ``(n,)`` indices into ``class_names``.
        split: optional split folder (``"train"``, ``"valid"``, ``"test"``).
        fmt: ``"png"``, ``"jpg"``, ``"jpeg"``, ``"tif"`` or ``"tiff"``.
        names: file stems ``(n,)``, e.g. ``"P017_0003"`` to carry a patient key
            (default ``"img_00000"`` ...).

    Returns:
        The folder holding the class folders.
    """
    base = Path(root) / split if split else Path(root)
    for name in class_names:
        (base / str(name)).mkdir(parents=True, exist_ok=True)
    stems = names if names is not None else [f"img_{i:05d}" for i in range(len(images))]
    for image, label, stem in zip(images, labels, stems):
        write_image(base / str(class_names[int(label)]) / f"{stem}.{fmt}", image)
    return base


def write_kaggle(root, images: np.ndarray, labels: np.ndarray, ids=None) -> Path:
    """Write the Kaggle histopathologic-cancer-detection layout: ``train/<id>.tif`` and
    ``train_labels.csv`` (columns ``id,label``). Returns ``root``."""
    root = Path(root)
    (root / "train").mkdir(parents=True, exist_ok=True)
    ids = list(ids) if ids is not None else [f"{i:040x}" for i in range(len(images))]
    for image, name in zip(images, ids):
        write_image(root / "train" / f"{name}.tif", image)
    pd.DataFrame({"id": ids, "label": np.asarray(labels, int)}).to_csv(root / "train_labels.csv", index=False)
    return root
