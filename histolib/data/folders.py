"""Image folders: ``root/[split/]class/<image files>``, read as they come.

Class names are the class folder names, sorted, exactly as spelt on disk (``"0"``, ``"1"`` for
the PCam JPEG patches; ``Clear_Cell, Endometri, Mucinous, Non_Cancerous, Serous`` for the real
ovarian set); labels are their positions. Names to show in tables and plots are a separate
choice: :func:`display_names` maps them (``histolib.data.ovarian.DISPLAY_NAMES`` gives the
ovarian seed's CC, EC, MC, HGSC+LGSC). With split folders (``train``, ``valid``, ``test``)
``split`` picks one; without them the seeded stratified split of :mod:`histolib.data.splits`
applies, grouped when asked (:mod:`histolib.data.groups`: file-name patterns, a CSV of groups,
near-duplicate groups).

Which files: every file whose suffix (any case) is one of `IMAGE_SUFFIXES`; spaces and odd
characters in names are fine. Other files (``.txt``, ``.csv``, ``Thumbs.db`` ...) are skipped
with one warning. What a file holds decides how it is decoded (:mod:`histolib.data.images`): a
GIF named ``.jpg`` reads, an RGBA PNG loses its alpha channel, a text file named ``.png`` is an
error naming it.

Checked before use: the first time a folder's images are streamed (``histolib.data.load``, not
``info``), every image file under ``root`` (all splits) is decoded once
(:func:`histolib.data.images.check_files`); all unreadable files are reported in one
``ValueError`` before any batch is made, and the answer is cached per folder in the user cache,
so later runs pay one ``stat`` per file. A file that changes afterwards still fails in the
pipeline, with its name in the error.

Sizes and resizing: without ``image_size`` every image must have one size (a mismatch is an
error naming a file of another size); with ``image_size="native"`` each image keeps its own size
and batches hold one image (for models that tile images of any size, `histolib.models.tiles`).
With ``image_size=(h, w)`` each image is resized to
exactly ``h x w``, bilinear with antialiasing, **without keeping its aspect ratio**: the whole
field of view is kept and stretched (Keras's ``image_dataset_from_directory`` does the same by
default, and so did the ovarian seed's loader). An 888x550 ovarian micrograph at 224 px is thus
squeezed 1.6x along its long side; crop first if shapes must be kept.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import tensorflow as tf

from histolib.data import groups as _groups
from histolib.data import images as _images
from histolib.data import splits as _splits
from histolib.data._pipeline import AUTOTUNE, NATIVE, Selection, to_float
from histolib.data.layout import all_files, layout, list_files
from histolib.files import IMAGE_SUFFIXES


def _common_size(found, paths) -> tuple[int, int]:
    """The one ``(h, w)`` of ``paths`` according to the check ``found``; ``ValueError`` naming
    two files of different sizes otherwise."""
    size_of = {p: tuple(int(v) for v in s) for p, s in zip(found.paths, found.shapes)}
    sizes = {}
    for path in paths:
        sizes.setdefault(size_of[path], path)
    if len(sizes) > 1:
        (a, pa), (b, pb) = list(sizes.items())[:2]
        raise ValueError(f"images differ in size ({len(sizes)} sizes): {pa} is {a[0]}x{a[1]}, {pb} is "
                         f"{b[0]}x{b[1]}; pass image_size=(h, w) (--image-size) to resize them all")
    return next(iter(sizes))


def files_selection(class_names, paths, labels_all, indices, *, check=None) -> Selection:
    """A selection that reads image files ``paths[indices]`` with their labels.

    Args:
        class_names, paths, labels_all, indices: names in label order, every file of the source,
            their labels, and which of them in reading order (repeats allowed).
        check: ``None``, or a zero-argument function returning the
            `histolib.data.images.FileCheck` of a set that holds these files; it runs when
            batches are first asked for (so ``info`` decodes nothing) and raises on unreadable
            files before any batch exists.

    Without ``image_size`` every image must have one size: known from ``check`` up front, else
    from the first image with a pipeline error naming the first file that differs.
    """
    indices = np.asarray(indices, dtype=np.int64)
    paths = np.asarray(paths, dtype=str)
    labels = np.asarray(labels_all, dtype=np.int32)[indices]
    sel_paths = paths[indices]

    def batches(batch_size, shuffle, seed, image_size):
        if len(sel_paths) == 0:
            raise ValueError("no images in this selection")
        found = check() if check is not None else None
        expected = None
        if image_size is None:
            expected = (_common_size(found, sel_paths) if found is not None
                        else _images.read_image(sel_paths[0]).shape[:2])
        ds = tf.data.Dataset.from_tensor_slices((sel_paths, labels))
        if shuffle:
            ds = ds.shuffle(len(sel_paths), seed=seed, reshuffle_each_iteration=True)

        def load_one(path, y):
            image = _images.decode(path)
            if expected is not None:
                same = tf.reduce_all(tf.equal(tf.shape(image)[:2], expected))
                check_size = tf.debugging.Assert(same, [
                    "image", path, "has size", tf.shape(image)[:2], "but the first image has",
                    tf.constant(expected), "; pass image_size=(h, w) to resize"], summarize=3)
                with tf.control_dependencies([check_size]):
                    image = tf.identity(image)
                image = tf.ensure_shape(image, [*expected, 3])
            return to_float(image, image_size), y

        return ds.map(load_one, num_parallel_calls=AUTOTUNE).batch(1 if image_size == NATIVE else batch_size)

    return Selection(list(class_names), labels, batches, sel_paths)


def check_folder(root, *, use_cache: bool = True):
    """Decode every image file under ``root`` once (cached); see
    :func:`histolib.data.images.check_files`.

    Returns:
        The `histolib.data.images.FileCheck`.

    Raises:
        histolib.data.images.UnreadableImagesError: a ``ValueError`` naming the first ten
            unreadable files (and counting the rest).
    """
    return _images.check_files(all_files(root), where=str(root), use_cache=use_cache)


def display_names(class_names, mapping=None) -> list[str]:
    """Names to show for ``class_names``: ``mapping[name]`` where given, the name itself otherwise.

    Labels and the order of classes never change; only what tables and plots print does. E.g.
    ``display_names(info["class_names"], histolib.data.ovarian.DISPLAY_NAMES)`` gives
    ``["CC", "EC", "MC", "Non_Cancerous", "HGSC+LGSC"]`` for the ovarian folders.
    """
    mapping = dict(mapping or {})
    unknown = sorted(set(mapping) - set(class_names))
    if unknown:
        raise ValueError(f"mapping names classes that are not there: {unknown}; classes are "
                         f"{list(class_names)}. Received: mapping={mapping!r}")
    return [str(mapping.get(name, name)) for name in class_names]


def selection(root, split: str, *, fractions=(0.8, 0.1, 0.1), seed: int = 0, group_by=None,
              oversample=None) -> Selection:
    """One split of the image folder at ``root``.

    With split folders, ``split`` must be one of them (``fractions`` and ``group_by`` do not
    apply); without, the seeded stratified (or grouped) split gives it. ``oversample`` as in
    :func:`histolib.data.splits.select` (``"before"`` only without split folders). Streaming
    the selection first checks every image file under ``root`` (:func:`check_folder`).
    """
    lay = layout(root)
    root = Path(root)
    check = functools.partial(check_folder, root)  # runs when batches are first made
    if lay["splits"]:
        if split not in lay["splits"]:
            raise ValueError(f"{root} has split folders {lay['splits']} and no {split!r} folder. "
                             f"Received: split={split!r}")
        if group_by is not None or oversample == "before" or isinstance(fractions, _splits.Folds):
            raise ValueError(f"{root} has fixed split folders; group_by, folds and oversample='before' only "
                             "apply to folders without split folders")
        paths, labels = list_files(root / split, lay["class_names"])
        if len(paths) == 0:
            raise ValueError(f"no images under {root / split}/<class>/ (expected {', '.join(IMAGE_SUFFIXES)})")
        idx = np.arange(len(paths))
        if oversample == "after" and split == "train":
            idx = _splits.oversample(idx, labels, seed)
        return files_selection(lay["class_names"], paths, labels, idx, check=check)
    paths, labels = list_files(root, lay["class_names"])
    if len(paths) == 0:
        raise ValueError(f"no images under {root}/<class>/ (expected {', '.join(IMAGE_SUFFIXES)})")
    groups = None if group_by is None else _groups.group_keys(paths, group_by, root)
    idx = _splits.select(labels, split, fractions=fractions, seed=seed, groups=groups,
                         oversample_order=oversample)
    return files_selection(lay["class_names"], paths, labels, idx, check=check)
