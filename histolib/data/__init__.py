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
``pcam-h5:DIR``                 original PCam ``.h5`` files (:mod:`~histolib.data.pcam`)
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

import importlib
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from histolib.data.source import SOURCES, SPECS, DataSource, Source, file_list_digest, source
from histolib.data.splits import SPLITS

__all__ = ["DOWNLOADS", "SOURCES", "SPECS", "SPLITS", "DataSource", "Source", "check", "download",
           "file_list_digest", "folder_digest", "image_files", "info", "load", "rows", "source"]


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
    return source(spec, seed=seed, fractions=fractions, group_by=group_by, oversample=oversample).load(
        split, batch_size=batch_size, image_size=image_size, shuffle=shuffle, augment=augment)


def info(spec: str, split: str = "train", *, seed: int = 0, fractions=(0.8, 0.1, 0.1), group_by=None,
         oversample: str | None = None) -> dict:
    """Class names and per-class image counts of one split, without decoding images.

    Takes the split-shaping arguments of :func:`load` (they change the counts).

    Returns:
        ``{"class_names": [...], "counts": [...]}``, counts in class-name order.
    """
    return source(spec, seed=seed, fractions=fractions, group_by=group_by, oversample=oversample).info(split)


def rows(spec: str, split: str = "train", *, seed: int = 0, fractions=(0.8, 0.1, 0.1), group_by=None,
         oversample: str | None = None):
    """What each row of a split is and its label, in :func:`load`'s order without shuffling, without
    decoding images.

    Returns:
        ``(items, labels)``: ``items`` the file path of each row for folder sources (indices into
        the whole set for the synthetic ones; ``None`` where a source cannot say), ``labels`` int32
        ``(n,)``.
    """
    return source(spec, seed=seed, fractions=fractions, group_by=group_by, oversample=oversample).rows(split)


def check(spec: str) -> None:
    """Decode every file of ``spec`` once, before anything trains, where the source can
    (``folder:DIR``: :func:`histolib.data.folders.check_folder`, cached per folder); ``load``
    does the same on first use. Other sources: nothing to do.

    Raises:
        ValueError: one message naming the first ten unreadable files and counting the rest.
    """
    source(spec).check()


def folder_digest(spec: str) -> dict | None:
    """`file_list_digest` of the folder ``spec`` reads; ``None`` for the built-in and TFDS
    sources, or a folder that does not exist."""
    return source(spec).digest()


def image_files(spec: str) -> tuple[list[str], Path]:
    """Every image file of a ``folder:DIR`` or ``kaggle:DIR`` spec (all splits) and its data root,
    e.g. for near-duplicate groups (`histolib.data.duplicates`)."""
    return source(spec).image_files()
