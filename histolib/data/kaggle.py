"""The Kaggle histopathologic-cancer-detection layout (spec ``kaggle:DIR``).

``DIR/train/<id>.tif`` (96x96 RGB TIFF patches from PCam) and ``DIR/train_labels.csv`` with
columns ``id,label`` (1 = tumour in the centre 32x32 region). Kaggle's ``test/`` folder has no
labels, so the labelled ``train`` images get the seeded stratified split (80/10/10 by default);
``group_by`` (:mod:`histolib.data.groups`: near-duplicates, a groups table, a callable or a
regular expression on the file name) keeps groups apart. TIFF is read with tifffile; a damaged
file is named in the error. Class names ``"0"``, ``"1"`` as the other PCam sources.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from histolib.data import splits as _splits
from histolib.data._pipeline import Selection
from histolib.data.folders import files_selection
from histolib.data.groups import group_keys
from histolib.data.pcam import CLASS_NAMES


def read_table(root) -> tuple[np.ndarray, np.ndarray]:
    """Image paths and labels from ``root/train_labels.csv``, checked against ``root/train/``.

    Raises:
        ValueError: naming the missing folder, CSV, column or image files.
    """
    root = Path(root)
    csv, folder = root / "train_labels.csv", root / "train"
    if not csv.is_file() or not folder.is_dir():
        raise ValueError(f"not a Kaggle histopathologic-cancer-detection folder: {root} needs train/<id>.tif "
                         f"and train_labels.csv (missing: {csv if not csv.is_file() else folder})")
    table = pd.read_csv(csv, dtype={"id": str})
    if not {"id", "label"} <= set(table.columns):
        raise ValueError(f"{csv} must have columns id,label. Received: columns={list(table.columns)}")
    if not table["label"].isin([0, 1]).all():
        raise ValueError(f"{csv}: labels must be 0 or 1. Received: {sorted(table['label'].unique())[:10]}")
    present = set(os.listdir(folder))
    names = table["id"] + ".tif"
    missing = names[~names.isin(present)]
    if len(missing):
        raise ValueError(f"{len(missing)} image(s) listed in {csv} are missing from {folder}, e.g. {list(missing[:3])}")
    paths = np.array([str(folder / n) for n in names])
    return paths, table["label"].to_numpy(np.int32)


def selection(root, split: str, *, fractions=(0.8, 0.1, 0.1), seed: int = 0, group_by=None,
              oversample=None) -> Selection:
    """One split of the Kaggle layout at ``root``."""
    paths, labels = read_table(root)
    groups = None if group_by is None else group_keys(paths, group_by, root)
    idx = _splits.select(labels, split, fractions=fractions, seed=seed, groups=groups, oversample_order=oversample)
    return files_selection(CLASS_NAMES, paths, labels, idx)
