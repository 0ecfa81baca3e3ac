"""Where a folder source's images are, read from its folder names alone (no image is opened).

``root/[split/]class/<files>``: split folders ``train``, ``valid``, ``test`` when present, class
folders below them (or directly under ``root``), image files named with one of
`histolib.files.IMAGE_SUFFIXES` in any case. :mod:`histolib.data.folders` reads the images;
:mod:`histolib.data.duplicates` groups them; neither needs the other to find them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from histolib.data.splits import SPLITS
from histolib.files import IMAGE_SUFFIXES

SPLIT_DIRS = SPLITS
"""Split folder names a folder source may have."""


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


def all_files(root) -> np.ndarray:
    """Every image file of the folder source at ``root`` (all splits), sorted by split, class and
    name: what :func:`histolib.data.folders.check_folder` decodes."""
    lay = layout(root)
    bases = [Path(root) / s for s in lay["splits"]] or [Path(root)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # list_files warns once per split already
        return np.concatenate([list_files(b, lay["class_names"])[0] for b in bases])
