"""histolib.data: one front door for every data source.

``load(spec, split)`` returns a ``tf.data.Dataset`` of ``(images, labels)`` batches, images
float32 ``(batch, h, w, 3)`` in [0, 1] and labels int32 ``(batch,)``; ``info(spec, split)``
returns ``{"class_names": [...], "counts": [...]}`` (counts in class order) without decoding
images. Specs:

==============================  ============================================================
``synthetic-pcam[:N|:T,V,S]``   built-in PCam-like patches with lesion masks; fixed disjoint
                                splits of 4,096 / 512 / 512 by default, ``:N`` gives train N
                                and valid, test N // 8 each (:mod:`~histolib.data.synthetic`)
``synthetic-subtype[:N]``       built-in five-class ovarian-subtype textures, 3,082 images in
                                the seed's proportions by default; no splits (seeded split)
``pcam-h5:DIR``                 original PCam ``.h5`` / ``.h5.gz`` files (:mod:`~histolib.data.pcam`)
``tfds:patch_camelyon[:DATA_DIR]``  PCam through TensorFlow Datasets (:mod:`~histolib.data.tfds`)
``folder:DIR``                  ``DIR/[split/]class/<images>``, any image format by content (:mod:`~histolib.data.folders`)
``kaggle:DIR``                  ``DIR/train/<id>.tif`` + ``DIR/train_labels.csv`` (:mod:`~histolib.data.kaggle`)
==============================  ============================================================

Splits are ``"train"``, ``"valid"`` and ``"test"``. A source with fixed splits refuses a split it
lacks; a source without splits gets the seeded stratified split ``fractions`` (80/10/10 by
default, as the ovarian seed), grouped by patient or slide with ``group_by``. ``seed`` fixes the
split, the shuffle order, the augmentation and, for the synthetic sources, the data itself
(``histolib.data.synthetic.pcam_patches(n, seed, split=...)`` gives the very patches that
``load("synthetic-pcam", split, seed=seed)`` streams, in order when ``shuffle=False``).
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from histolib.data import kaggle, layout, splits
from histolib.data._pipeline import AUTOTUNE, Selection, image_size_arg
from histolib.data.splits import SPLITS
from histolib.names import closest, unknown_name

__all__ = ["load", "info", "rows", "check", "image_files", "download", "folder_digest", "file_list_digest", "SOURCES", "SPECS", "SPLITS",
           "DOWNLOADS"]


@dataclass(frozen=True)
class Source:
    """One kind of data spec (a row of `SOURCES`).

    Attributes:
        reader: ``"module:function"`` of its ``selection(arg, split, *, fractions, seed,
            group_by, oversample) -> Selection``, where ``arg`` is the part of the spec after
            the first ``":"`` (``None`` when there is none); imported on first use.
        form: how a spec of this kind is written, e.g. ``"folder:DIR"``.
        summary: one line on what it reads.
        folder: whether ``arg`` is a folder (then required, and fingerprinted by
            `folder_digest` in run records).
        checker: ``"module:function"`` of a ``function(arg)`` that decodes every file once and
            raises on unreadable ones (`check`), or ``None``.
    """

    reader: str
    form: str
    summary: str
    folder: bool = False
    checker: str | None = None

    def selection(self):
        module, _, function = self.reader.partition(":")
        return getattr(importlib.import_module(module), function)


#: kind -> `Source`: every spec `load` and `info` accept. Add a source with a row here.
SOURCES: dict[str, Source] = {
    "synthetic-pcam": Source("histolib.data.synthetic.selection:pcam_selection", "synthetic-pcam",
                             "built-in PCam-like patches with lesion masks (fixed train / valid / test splits)"),
    "synthetic-subtype": Source("histolib.data.synthetic.selection:subtype_selection", "synthetic-subtype",
                                "built-in five-class ovarian-subtype textures, with patient keys "
                                "(no splits: seeded split)"),
    "pcam-h5": Source("histolib.data.pcam:selection", "pcam-h5:DIR",
                      "PCam's original .h5 / .h5.gz files, streamed from disk", folder=True),
    "tfds": Source("histolib.data.tfds:selection", "tfds:patch_camelyon",
                   "PCam through TensorFlow Datasets (downloads from Zenodo when there is a network)"),
    "folder": Source("histolib.data.folders:selection", "folder:DIR",
                     "an image folder DIR/[split/]class/<images> (PNG, JPEG, GIF, BMP, TIFF by content)",
                     folder=True, checker="histolib.data.folders:check_folder"),
    "kaggle": Source("histolib.data.kaggle:selection", "kaggle:DIR",
                     "Kaggle's histopathologic-cancer-detection layout: train/<id>.tif + train_labels.csv",
                     folder=True),
}

SPECS = tuple(source.form for source in SOURCES.values())
"""The spec forms :func:`load` accepts."""


@dataclass(frozen=True)
class Download:
    """One data set the command can fetch (a row of `DOWNLOADS`): ``"module:function"`` of a
    ``function(out_dir) -> Path | list[Path]`` that downloads checked files, a summary, and how
    the files are checked."""

    fetcher: str
    summary: str
    checked: str = "MD5 checked"


#: name -> `Download`: what ``histolib data NAME --out DIR`` fetches.
DOWNLOADS: dict[str, Download] = {
    "pcam": Download("histolib.data.pcam:download_pcam", "the PatchCamelyon .h5.gz files (about 7.5 GB)"),
    "cmu-region": Download("histolib.data.regions:download_cmu_region", "OpenSlide's CMU-1-Small-Region.svs (1.9 MB)"),
    "ovarian": Download("histolib.data.ovarian:download_ovarian",
                        "the 498 real ovarian subtype micrographs from Mendeley Data (about 40 MB)",
                        "every file SHA-256 checked against the package's manifest"),
}


def download(name: str, out_dir) -> list[Path]:
    """Fetch the data set ``name`` of `DOWNLOADS` into ``out_dir``; returns the checked files.

    Raises:
        ValueError: for an unknown name; ConnectionError: offline (within seconds).
    """
    if name not in DOWNLOADS:
        raise ValueError(f"unknown download; valid: {', '.join(DOWNLOADS)}. Received: name={name!r}")
    module, _, function = DOWNLOADS[name].fetcher.partition(":")
    paths = getattr(importlib.import_module(module), function)(out_dir)
    return [paths] if isinstance(paths, (str, Path)) else list(paths)


def _spec_suggestion(spec: str) -> str | None:
    """What an unknown ``spec`` most likely meant: ``folder:PATH`` for a bare folder path,
    else the closest kind with the part after the colon kept (``foldr:/data`` ->
    ``folder:/data``, ``synthetic-pcm:64`` -> ``synthetic-pcam:64``)."""
    if Path(spec).is_dir():
        return f"folder:{spec}"
    kind, _, arg = spec.partition(":")
    match = closest(kind, SOURCES)
    if match is None:
        return None
    return f"{match}:{arg}" if arg else SOURCES[match].form


def _parse(spec: str) -> tuple[Source, str | None]:
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"spec must be a string, one of {SPECS}. Received: spec={spec!r}")
    kind, _, arg = spec.partition(":")
    if kind not in SOURCES:
        raise unknown_name("data spec", spec, SPECS, argument="spec", suggestion=_spec_suggestion(spec))
    source = SOURCES[kind]
    if source.folder and not arg:
        raise ValueError(f"spec {kind!r} needs a directory, as in '{kind}:DIR'. Received: spec={spec!r}")
    return source, (arg or None)


def folder_digest(spec: str) -> dict | None:
    """`file_list_digest` of the folder ``spec`` reads; ``None`` for the built-in and TFDS
    sources, or a folder that does not exist."""
    source, arg = _parse(spec)
    return file_list_digest(arg) if source.folder and Path(arg).is_dir() else None


def file_list_digest(root) -> dict:
    """``{"files": n, "sha256": ...}`` of the sorted relative paths of the files under ``root``.

    A cheap fingerprint of a data folder for run records: it changes when a file is added,
    removed or renamed (not when a file's bytes change).
    """
    root = Path(root)
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return {"files": len(names), "sha256": hashlib.sha256("\n".join(names).encode()).hexdigest()}


def _selection(spec, split, *, fractions, seed, group_by, oversample) -> Selection:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} ('valid' is TFDS's 'validation'). Received: split={split!r}")
    if oversample not in splits.OVERSAMPLE:
        raise ValueError(f"oversample must be one of {splits.OVERSAMPLE}. Received: oversample={oversample!r}")
    splits.check_fractions(fractions)
    source, arg = _parse(spec)
    return source.selection()(arg, split, fractions=fractions, seed=seed, group_by=group_by, oversample=oversample)


def load(spec: str, split: str = "train", *, batch_size: int = 64, image_size=None, shuffle: bool = False,
         augment: str | None = None, seed: int = 0, fractions=(0.8, 0.1, 0.1), group_by=None,
         oversample: str | None = None) -> tf.data.Dataset:
    """Batches of one split of a data source.

    Args:
        spec: the source (see the module docstring), e.g. ``"synthetic-pcam"``,
            ``"folder:../shared/data/pcam-jpeg"``.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        batch_size: images per batch (the last batch may be smaller).
        image_size: ``None`` (native size), an int or ``(h, w)``: resize (bilinear, antialiased).
        shuffle: reshuffle every epoch (seeded). Streamed ``.h5`` files shuffle blocks and a
            buffer (see :mod:`histolib.data.pcam`).
        augment: ``None`` or an augmentation set of :mod:`histolib.layers.augmentation`
            (``"pcam-seed"``, ``"pcam"``, ``"subtype"``); training split only.
        seed: seed for splits, shuffling, augmentation and synthetic data.
        fractions: ``(train, valid, test)`` for sources without splits.
        group_by: keep a patient, slide or family of near-duplicates in one split:
            ``"patient"`` for ``synthetic-subtype``; for ``folder:`` and ``kaggle:``
            ``"near-duplicates"``, a groups table (``pathlib.Path`` to a CSV ``file,group``), a
            mapping, a callable ``path -> key`` or a regular expression on the file name (see
            :mod:`histolib.data.groups`).
        oversample: ``None``; ``"after"`` (RandomOverSampler on the training split only); or
            ``"before"``, the ovarian seed's leaky order (see :mod:`histolib.data.splits`).

    Returns:
        ``tf.data.Dataset`` of ``(images float32 (b, h, w, 3) in [0, 1], labels int32 (b,))``,
        prefetched, with a ``class_names`` attribute (sorted class names, label order).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int. Received: batch_size={batch_size!r}")
    size = image_size_arg(image_size)
    if augment is not None and split != "train":
        raise ValueError(f"augmentation applies to training data only. Received: augment={augment!r}, split={split!r}")
    pipeline = None
    if augment is not None:
        from histolib.layers.augmentation import augmentation

        pipeline = augmentation(augment, seed, dtype="float32")  # [0, 1] float32 under any global policy
    sel = _selection(spec, split, fractions=fractions, seed=seed, group_by=group_by, oversample=oversample)
    ds = sel.batches(batch_size, bool(shuffle), int(seed), size)
    if pipeline is not None:
        ds = ds.map(lambda x, y: (pipeline(x, training=True), y), num_parallel_calls=AUTOTUNE)
    ds = ds.prefetch(AUTOTUNE)
    ds.class_names = list(sel.class_names)
    return ds


def info(spec: str, split: str = "train", *, seed: int = 0, fractions=(0.8, 0.1, 0.1), group_by=None,
         oversample: str | None = None) -> dict:
    """Class names and per-class image counts of one split, without decoding images.

    Takes the split-shaping arguments of :func:`load` (they change the counts).

    Returns:
        ``{"class_names": [...], "counts": [...]}``, counts in class-name order.
    """
    sel = _selection(spec, split, fractions=fractions, seed=seed, group_by=group_by, oversample=oversample)
    return {"class_names": list(sel.class_names), "counts": sel.counts()}


def rows(spec: str, split: str = "train", *, seed: int = 0, fractions=(0.8, 0.1, 0.1), group_by=None,
         oversample: str | None = None):
    """What each row of a split is and its label, in :func:`load`'s order without shuffling, without
    decoding images.

    Returns:
        ``(items, labels)``: ``items`` the file path of each row for folder sources (indices into
        the whole set for the synthetic ones; ``None`` where a source cannot say), ``labels`` int32
        ``(n,)``.
    """
    sel = _selection(spec, split, fractions=fractions, seed=seed, group_by=group_by, oversample=oversample)
    labels = sel.labels() if callable(sel.labels) else sel.labels
    return sel.items, labels


def image_files(spec: str) -> tuple[list[str], Path]:
    """Every image file of a ``folder:DIR`` or ``kaggle:DIR`` spec (all splits) and its data root,
    e.g. for near-duplicate groups (`histolib.data.duplicates`)."""
    source, arg = _parse(spec)
    if source is SOURCES["folder"]:
        return list(layout.all_files(arg)), Path(arg)
    if source is SOURCES["kaggle"]:
        return list(kaggle.read_table(arg)[0]), Path(arg)
    raise ValueError(f"near-duplicate groups need image files: a folder:DIR or kaggle:DIR spec. Received: spec={spec!r}")


def check(spec: str) -> None:
    """Decode every file of ``spec`` once, before anything trains, where the source can
    (``folder:DIR``: :func:`histolib.data.folders.check_folder`, cached per folder); ``load``
    does the same on first use. Other sources: nothing to do.

    Raises:
        ValueError: one message naming the first ten unreadable files and counting the rest.
    """
    source, arg = _parse(spec)
    if source.checker is not None:
        module, _, function = source.checker.partition(":")
        getattr(importlib.import_module(module), function)(arg)
