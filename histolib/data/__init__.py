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
``folder:DIR``                  ``DIR/[split/]class/*.{png,jpg,jpeg,tif,tiff}`` (:mod:`~histolib.data.folders`)
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

import tensorflow as tf

from histolib.data import splits
from histolib.data._pipeline import AUTOTUNE, Selection, image_size_arg
from histolib.data.splits import SPLITS

__all__ = ["load", "info", "SPECS", "SPLITS"]

SPECS = ("synthetic-pcam", "synthetic-subtype", "pcam-h5:DIR", "tfds:patch_camelyon", "folder:DIR", "kaggle:DIR")
"""The spec forms :func:`load` accepts."""


def _parse(spec: str) -> tuple[str, str | None]:
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"spec must be a string, one of {SPECS}. Received: spec={spec!r}")
    kind, _, arg = spec.partition(":")
    return kind, (arg or None)


def _selection(spec, split, *, fractions, seed, group_by, oversample) -> Selection:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} ('valid' is TFDS's 'validation'). Received: split={split!r}")
    if oversample not in splits.OVERSAMPLE:
        raise ValueError(f"oversample must be one of {splits.OVERSAMPLE}. Received: oversample={oversample!r}")
    splits.check_fractions(fractions)
    kind, arg = _parse(spec)
    kw = {"fractions": fractions, "seed": seed, "group_by": group_by, "oversample": oversample}
    if kind == "synthetic-pcam":
        from histolib.data import synthetic

        if group_by is not None:
            raise ValueError("synthetic-pcam has fixed splits; group_by does not apply")
        return synthetic.pcam_selection(arg, split, **kw)
    if kind == "synthetic-subtype":
        from histolib.data import synthetic

        return synthetic.subtype_selection(arg, split, **kw)
    if kind in ("folder", "pcam-h5", "kaggle") and not arg:
        raise ValueError(f"spec {kind!r} needs a directory, as in '{kind}:DIR'. Received: spec={spec!r}")
    if kind == "folder":
        from histolib.data import folders

        return folders.selection(arg, split, **kw)
    if kind == "pcam-h5":
        from histolib.data import pcam

        return pcam.selection(arg, split, **kw)
    if kind == "kaggle":
        from histolib.data import kaggle

        return kaggle.selection(arg, split, **kw)
    if kind == "tfds":
        from histolib.data import tfds

        return tfds.selection(arg, split, **kw)
    raise ValueError(f"unknown data spec {spec!r}; expected one of {', '.join(SPECS)}")


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
        augment: ``None`` or an augmentation set of :mod:`histolib.data.augment`
            (``"pcam-seed"``, ``"pcam"``, ``"subtype"``); training split only.
        seed: seed for splits, shuffling, augmentation and synthetic data.
        fractions: ``(train, valid, test)`` for sources without splits.
        group_by: keep a patient or slide in one split: ``"patient"`` for
            ``synthetic-subtype``; a callable ``path -> key`` or a regular expression on the file
            name for ``folder:`` and ``kaggle:``.
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
        from histolib.data.augment import augmentation

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
