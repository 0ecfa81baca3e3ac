"""Seeded train / valid / test splits and random oversampling, in the right order and the seed's.

The right order splits first and oversamples the training indices only
(:func:`select` with ``oversample="after"``), so no image has a copy on the other side of a split.
The ovarian seed did the opposite, RandomOverSampler over the whole set and then an 80/10/10
stratified split (``oversample="before"``, kept to show the damage): the 3,082 images become
5 x 1,188 = 5,940 rows, and copies of one image land in train and test alike.
:func:`count_shared` counts such test items.

All functions take index arrays and labels, never images, so they work for any source.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from imblearn.over_sampling import RandomOverSampler
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

SPLITS = ("train", "valid", "test")
"""Split names, in the order of ``fractions``."""

#: The split algorithm: 1 cut groups by their majority label (before December 2026); 2 takes
#: grouped splits from scikit-learn's ``StratifiedGroupKFold`` (`stratified_split`). Ungrouped
#: splits are the same in both. Runs and model cards record it.
SPLIT_VERSION = 2
#: The most folds a grouped split is cut into (its fractions must be multiples of 1/k).
MAX_FOLDS = 20

OVERSAMPLE = (None, "after", "before")
"""Oversampling orders: none; RandomOverSampler on the training split only (right); on the whole
set before splitting (the ovarian seed's order, which leaks copies into valid and test)."""


@dataclass(frozen=True)
class Folds:
    """Cross-validation fold ``fold`` of ``n``, taken where fractions would be: the test split is
    that fold of `group_folds` (``n`` folds), the valid split (for early stopping) one of ``inner``
    grouped folds of the rest, and the train split the rest of the rest. A group stays on one
    side; without groups each image is its own group."""

    n: int
    fold: int
    inner: int = 8

    def __post_init__(self):
        if not (isinstance(self.n, int) and self.n >= 2 and isinstance(self.fold, int) and 0 <= self.fold < self.n
                and isinstance(self.inner, int) and self.inner >= 2):
            raise ValueError(f"folds need n >= 2, 0 <= fold < n and inner >= 2. Received: n={self.n!r}, "
                             f"fold={self.fold!r}, inner={self.inner!r}")

    def split(self, labels, groups, seed: int) -> dict:
        """``{"train", "valid", "test"}`` sorted index arrays (see the class docstring)."""
        labels = np.asarray(labels)
        groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
        outer = group_folds(labels, groups, self.n, seed)
        rest = np.flatnonzero(outer != self.fold)
        inner = group_folds(labels[rest], groups[rest], self.inner, seed)
        return {"train": rest[inner != 0], "valid": rest[inner == 0], "test": np.flatnonzero(outer == self.fold)}


def check_fractions(fractions) -> tuple[float, float, float] | Folds:
    """Validate ``(train, valid, test)`` fractions: three numbers >= 0 that sum to 1 (a `Folds`
    passes as it is)."""
    if isinstance(fractions, Folds):
        return fractions
    f = tuple(float(x) for x in fractions)
    if len(f) != 3 or min(f) < 0 or abs(sum(f) - 1) > 1e-6 or f[0] == 0:
        raise ValueError("fractions must be three numbers (train, valid, test) >= 0 with train > 0 "
                         f"that sum to 1. Received: fractions={fractions!r}")
    return f


def _fold_counts(fractions) -> tuple[int, list[int]]:
    """The fewest folds ``k`` (at most `MAX_FOLDS`) in which ``fractions`` are whole numbers of
    folds, and those numbers: 80/10/10 is 10 folds taken 8/1/1, 75/25/0 is 4 taken 3/1/0."""
    for k in range(2, MAX_FOLDS + 1):
        parts = [f * k for f in fractions]
        if all(abs(p - round(p)) < 1e-6 for p in parts):
            return k, [round(p) for p in parts]
    raise ValueError(f"a grouped split takes whole folds of at most {MAX_FOLDS}: each fraction must be a "
                     f"multiple of 1/k for some k <= {MAX_FOLDS}. Received: fractions={tuple(fractions)!r}")


def group_folds(labels, groups, n_folds: int, seed: int = 0) -> np.ndarray:
    """The fold of each item in scikit-learn's ``StratifiedGroupKFold(n_folds, shuffle=True,
    random_state=seed)``: every group in one fold, each fold close to the class proportions of
    the whole (it balances each group's full class counts).

    Args:
        labels: int ``(n,)``; groups: keys ``(n,)`` (patients, slides, near-duplicate families).

    Returns:
        int64 ``(n,)`` in ``0 .. n_folds - 1``.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    if len(groups) != len(labels):
        raise ValueError(f"groups must have one key per image ({len(labels)}). Received: {len(groups)} keys")
    if len(np.unique(groups)) < n_folds:
        raise ValueError(f"{n_folds} folds need at least {n_folds} groups. Received: {len(np.unique(groups))} groups")
    folds = np.empty(len(labels), dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        folds[held] = fold
    return folds


def stratified_split(labels, fractions=(0.8, 0.1, 0.1), seed: int = 0, groups=None) -> dict:
    """Seeded stratified split of ``range(len(labels))``.

    Without groups: scikit-learn's ``train_test_split`` twice (test off first, then valid),
    stratified by label. With groups: the folds of `group_folds`, ``k`` of them where each
    fraction is a whole number of folds (80/10/10: 10 folds taken 8/1/1; folds ``0 .. t - 1``
    are the test split, the next ``v`` the valid split, the rest train), so a group never spans
    two splits and each split is close to its fraction of each class. This is split algorithm
    `SPLIT_VERSION`; runs record it.

    Args:
        labels: int ``(n,)``.
        fractions: ``(train, valid, test)``, summing to 1 (default 80/10/10 like the seed), or a
            `Folds`: one cross-validation fold.
        seed: split seed.
        groups: optional keys ``(n,)`` (patient, slide, near-duplicate family).

    Returns:
        ``{"train": idx, "valid": idx, "test": idx}``, sorted int64 index arrays.
    """
    labels = np.asarray(labels)
    f = check_fractions(fractions)
    if isinstance(f, Folds):
        return f.split(labels, groups, seed)
    if groups is not None:
        k, (_, n_valid, n_test) = _fold_counts(f)
        folds = group_folds(labels, groups, k, seed)
        return {"train": np.flatnonzero(folds >= n_test + n_valid),
                "valid": np.flatnonzero((folds >= n_test) & (folds < n_test + n_valid)),
                "test": np.flatnonzero(folds < n_test)}
    idx = np.arange(len(labels))
    rest, test = (idx, idx[:0]) if f[2] == 0 else train_test_split(
        idx, test_size=f[2], stratify=labels, random_state=seed)
    train, valid = (rest, idx[:0]) if f[1] == 0 else train_test_split(
        rest, test_size=f[1] / (f[0] + f[1]), stratify=labels[rest], random_state=seed)
    return {"train": np.sort(train), "valid": np.sort(valid), "test": np.sort(test)}


def oversample(indices, labels, seed: int = 0) -> np.ndarray:
    """RandomOverSampler (imbalanced-learn) on ``indices``: every class repeated up to the
    largest one. ``labels`` holds the labels of all items (indexed by ``indices``).

    Returns:
        int64 indices with repeats; the originals first, in imbalanced-learn's order.
    """
    indices = np.asarray(indices, dtype=np.int64)
    y = np.asarray(labels)[indices]
    if len(np.unique(y)) < 2:
        return indices
    out, _ = RandomOverSampler(random_state=seed).fit_resample(indices.reshape(-1, 1), y)
    return out[:, 0]


def select(labels, split: str, *, fractions=(0.8, 0.1, 0.1), seed: int = 0, groups=None,
           oversample_order=None) -> np.ndarray:
    """Indices of ``split`` for a source without split folders.

    Args:
        labels: int ``(n,)`` of the whole set.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        fractions, seed, groups: as in :func:`stratified_split`.
        oversample_order: ``None``; ``"after"``: split, then oversample the training indices only
            (valid and test stay untouched); ``"before"``: the ovarian seed's order, oversample
            all ``n`` items and then split the oversampled rows, so copies of one image reach
            train, valid and test (a documented leak, for teaching; not with ``groups``).

    Returns:
        int64 indices into ``labels`` (with repeats when oversampled).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Received: split={split!r}")
    if oversample_order not in OVERSAMPLE:
        raise ValueError(f"oversample must be one of {OVERSAMPLE}. Received: oversample={oversample_order!r}")
    labels = np.asarray(labels)
    if oversample_order == "before":
        if groups is not None or isinstance(fractions, Folds):
            raise ValueError("oversample='before' (the seed's leaky order) splits oversampled rows and "
                             "cannot keep groups or folds apart; use oversample='after'.")
        rows = oversample(np.arange(len(labels)), labels, seed)
        parts = stratified_split(labels[rows], fractions, seed)
        return rows[parts[split]]
    idx = stratified_split(labels, fractions, seed, groups)[split]
    if oversample_order == "after" and split == "train":
        idx = oversample(idx, labels, seed)
    return idx


def _key(item):
    if isinstance(item, np.ndarray) and item.ndim > 0:
        return hashlib.blake2b(np.ascontiguousarray(item).tobytes(), digest_size=16).digest()
    return item.item() if isinstance(item, np.generic) else item


def count_shared(train, test) -> int:
    """How many ``test`` items have an identical copy in ``train``.

    Items are compared by value: pass index arrays (``select(...)`` output) to count shared
    source images, or image arrays ``(n, h, w, 3)`` (any iterable of arrays) to compare pixels
    (hashed bytes). A test item counts once however many copies train holds.
    """
    seen = {_key(x) for x in train}
    return int(sum(_key(x) in seen for x in test))
