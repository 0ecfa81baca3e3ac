"""A data spec parsed once: `DataSource` knows its kind, its splits, its rows and its batches.

`source(spec, ...)` parses a spec string (``"folder:DIR"``, ``"synthetic-pcam"`` ...) against the
table `SOURCES` once and binds how a source without split folders is split (seed, fractions,
groups, oversampling). Everything downstream asks the object (`DataSource.load`, `info`, `rows`,
`check`, `digest`, `image_files`) and never parses the string again. The module functions of
`histolib.data` (``load``, ``info`` ...) are this object's methods called once.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf

from histolib.data import kaggle, layout, splits
from histolib.data._pipeline import AUTOTUNE, Selection, image_size_arg
from histolib.layers.augmentation import augmentation
from histolib.names import closest, unknown_name

__all__ = ["SOURCES", "SPECS", "DataSource", "Source", "file_list_digest", "source"]


@dataclass(frozen=True)
class Source:
    """One kind of data spec (a row of `SOURCES`).

    Attributes:
        reader: ``"module:function"`` of its ``selection(arg, split, *, fractions, seed,
            group_by, oversample) -> Selection``, where ``arg`` is the part of the spec after
            the first ``":"`` (``None`` when there is none); imported on first use.
        form: how a spec of this kind is written, e.g. ``"folder:DIR"``.
        summary: one line on what it reads.
        folder: whether ``arg`` is a folder (then required, and fingerprinted in run records).
        checker: ``"module:function"`` of a ``function(arg)`` that decodes every file once and
            raises on unreadable ones, or ``None``.
        splits: ``"fixed"`` (train / valid / test come with the data), ``"seeded"`` (cut by a
            seed: `histolib.data.splits`) or ``"layout"`` (fixed when the folder has split folders).
    """

    reader: str
    form: str
    summary: str
    folder: bool = False
    checker: str | None = None
    splits: str = "fixed"

    def selection(self):
        """The reader's ``selection`` function (imported now)."""
        return _function(self.reader)


def _function(target: str):
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


#: kind -> `Source`: every spec `source` accepts. Add a source with a row here.
SOURCES: dict[str, Source] = {
    "synthetic-pcam": Source("histolib.data.synthetic.selection:pcam_selection", "synthetic-pcam",
                             "built-in PCam-like patches with lesion masks (fixed train / valid / test splits)"),
    "synthetic-subtype": Source("histolib.data.synthetic.selection:subtype_selection", "synthetic-subtype",
                                "built-in five-class ovarian-subtype textures, with patient keys "
                                "(no splits: seeded split)", splits="seeded"),
    "pcam-h5": Source("histolib.data.pcam:selection", "pcam-h5:DIR",
                      "PCam's original .h5 files (unpacked from .h5.gz), streamed from disk", folder=True),
    "tfds": Source("histolib.data.tfds:selection", "tfds:patch_camelyon",
                   "PCam through TensorFlow Datasets (downloads from Zenodo when there is a network)"),
    "folder": Source("histolib.data.folders:selection", "folder:DIR",
                     "an image folder DIR/[split/]class/<images> (PNG, JPEG, GIF, BMP, TIFF by content)",
                     folder=True, checker="histolib.data.folders:check_folder", splits="layout"),
    "kaggle": Source("histolib.data.kaggle:selection", "kaggle:DIR",
                     "Kaggle's histopathologic-cancer-detection layout: train/<id>.tif + train_labels.csv",
                     folder=True, splits="seeded"),
}

SPECS = tuple(entry.form for entry in SOURCES.values())
"""The spec forms `source` accepts."""


def file_list_digest(root) -> dict:
    """``{"files": n, "sha256": ...}`` of the sorted relative paths of the files under ``root``:
    a cheap fingerprint of a data folder for run records, which changes when a file is added,
    removed or renamed (not when a file's bytes change)."""
    root = Path(root)
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return {"files": len(names), "sha256": hashlib.sha256("\n".join(names).encode()).hexdigest()}


@dataclass(frozen=True)
class DataSource:
    """A parsed spec with its split settings (made by `source`).

    Attributes:
        spec: the spec as written; kind, arg: its two parts; entry: its row of `SOURCES`.
        seed, fractions, group_by, oversample: how a source without split folders is split
            (see `histolib.data.load`); ``seed`` also seeds shuffling and augmentation unless
            `load` is given another.
    """

    spec: str
    kind: str
    arg: str | None
    entry: Source = field(repr=False)
    seed: int = 0
    fractions: tuple = (0.8, 0.1, 0.1)
    group_by: object = None
    oversample: str | None = None

    def selection(self, split: str) -> Selection:
        """The split as a `histolib.data._pipeline.Selection` (nothing decoded)."""
        if split not in splits.SPLITS:
            raise ValueError(f"split must be one of {splits.SPLITS} ('valid' is TFDS's 'validation'). "
                             f"Received: split={split!r}")
        return self.entry.selection()(self.arg, split, fractions=self.fractions, seed=self.seed,
                                            group_by=self.group_by, oversample=self.oversample)

    def load(self, split: str = "train", *, batch_size: int = 64, image_size=None, shuffle: bool = False,
             augment: str | None = None, seed: int | None = None) -> tf.data.Dataset:
        """Batches of ``split`` (see `histolib.data.load`); ``seed`` (default the split seed)
        seeds shuffling and augmentation."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int. Received: batch_size={batch_size!r}")
        if augment is not None and split != "train":
            raise ValueError(f"augmentation applies to training data only. Received: augment={augment!r}, "
                             f"split={split!r}")
        seed = self.seed if seed is None else int(seed)
        size = image_size_arg(image_size)
        pipeline = None if augment is None else augmentation(augment, seed, dtype="float32")
        chosen = self.selection(split)
        ds = chosen.batches(batch_size, bool(shuffle), seed, size)
        if pipeline is not None:
            ds = ds.map(lambda x, y: (pipeline(x, training=True), y), num_parallel_calls=AUTOTUNE)
        ds = ds.prefetch(AUTOTUNE)
        ds.class_names = list(chosen.class_names)
        return ds

    def info(self, split: str = "train") -> dict:
        """``{"class_names": [...], "counts": [...]}`` of ``split``, without decoding images."""
        chosen = self.selection(split)
        return {"class_names": list(chosen.class_names), "counts": chosen.counts()}

    def rows(self, split: str = "train"):
        """``(items, labels)`` of ``split`` in `load`'s order without shuffling: file paths for
        folder sources (indices for the synthetic ones; ``None`` where a source cannot say)."""
        chosen = self.selection(split)
        return chosen.items, chosen.labels() if callable(chosen.labels) else chosen.labels

    def check(self) -> None:
        """Decode every file once where the source can (``folder:DIR``, cached per folder);
        raises ``ValueError`` naming the first ten unreadable files."""
        if self.entry.checker is not None:
            _function(self.entry.checker)(self.arg)

    def fixed_splits(self) -> bool:
        """Whether the data comes with its train / valid / test splits (no seed cuts them)."""
        if self.entry.splits == "layout":
            return bool(layout.layout(self.arg)["splits"])
        return self.entry.splits == "fixed"

    def digest(self) -> dict | None:
        """`file_list_digest` of the folder read; ``None`` for built-in and TFDS sources or a
        folder that does not exist."""
        return file_list_digest(self.arg) if self.entry.folder and Path(self.arg).is_dir() else None

    def image_files(self) -> tuple[list[str], Path]:
        """Every image file (all splits) and the data root of a ``folder:`` or ``kaggle:`` source."""
        if self.kind == "folder":
            return list(layout.all_files(self.arg)), Path(self.arg)
        if self.kind == "kaggle":
            return list(kaggle.read_table(self.arg)[0]), Path(self.arg)
        raise ValueError("near-duplicate groups need image files: a folder:DIR or kaggle:DIR spec. "
                         f"Received: spec={self.spec!r}")


def _suggestion(spec: str) -> str | None:
    """What an unknown ``spec`` most likely meant: ``folder:PATH`` for a bare folder path, else
    the closest kind with the part after the colon kept (``foldr:/data`` -> ``folder:/data``)."""
    if Path(spec).is_dir():
        return f"folder:{spec}"
    kind, _, arg = spec.partition(":")
    match = closest(kind, SOURCES)
    if match is None:
        return None
    return f"{match}:{arg}" if arg else SOURCES[match].form


def source(spec: str, *, seed: int = 0, fractions=(0.8, 0.1, 0.1), group_by=None,
           oversample: str | None = None) -> DataSource:
    """Parse ``spec`` once into a `DataSource` split by ``seed``, ``fractions``, ``group_by`` and
    ``oversample`` (see `histolib.data.load`).

    Raises:
        ValueError: an unknown kind (with the closest suggested), a folder kind without its
            folder, bad fractions or an unknown oversampling order.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"spec must be a string, one of {SPECS}. Received: spec={spec!r}")
    kind, _, arg = spec.partition(":")
    if kind not in SOURCES:
        raise unknown_name("data spec", spec, SPECS, argument="spec", suggestion=_suggestion(spec))
    if SOURCES[kind].folder and not arg:
        raise ValueError(f"spec {kind!r} needs a directory, as in '{kind}:DIR'. Received: spec={spec!r}")
    if oversample not in splits.OVERSAMPLE:
        raise ValueError(f"oversample must be one of {splits.OVERSAMPLE}. Received: oversample={oversample!r}")
    return DataSource(spec, kind, arg or None, SOURCES[kind], int(seed), splits.check_fractions(fractions),
                      group_by, oversample)
