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

import numpy as np
from sklearn.model_selection import train_test_split

SPLITS = ("train", "valid", "test")
"""Split names, in the order of ``fractions``."""

OVERSAMPLE = (None, "after", "before")
"""Oversampling orders: none; RandomOverSampler on the training split only (right); on the whole
set before splitting (the ovarian seed's order, which leaks copies into valid and test)."""


def check_fractions(fractions) -> tuple[float, float, float]:
    """Validate ``(train, valid, test)`` fractions: three numbers >= 0 that sum to 1."""
    f = tuple(float(x) for x in fractions)
    if len(f) != 3 or min(f) < 0 or abs(sum(f) - 1) > 1e-6 or f[0] == 0:
        raise ValueError("fractions must be three numbers (train, valid, test) >= 0 with train > 0 "
                         f"that sum to 1. Received: fractions={fractions!r}")
    return f


def stratified_split(labels, fractions=(0.8, 0.1, 0.1), seed: int = 0, groups=None) -> dict:
    """Seeded stratified split of ``range(len(labels))``.

    Args:
        labels: int ``(n,)``.
        fractions: ``(train, valid, test)``, summing to 1 (default 80/10/10 like the seed).
        seed: split seed.
        groups: optional keys ``(n,)`` (patient, slide); a group never spans two splits. Groups
            are stratified by their majority label and cut by image counts, per class, so each
            split gets close to its fraction of each class (sklearn's splitters offer either
            grouping or arbitrary fractions, not both with stratification).

    Returns:
        ``{"train": idx, "valid": idx, "test": idx}``, sorted int64 index arrays.
    """
    labels = np.asarray(labels)
    f = check_fractions(fractions)
    n = len(labels)
    if groups is None:
        idx = np.arange(n)
        rest, test = (idx, idx[:0]) if f[2] == 0 else train_test_split(
            idx, test_size=f[2], stratify=labels, random_state=seed)
        train, valid = (rest, idx[:0]) if f[1] == 0 else train_test_split(
            rest, test_size=f[1] / (f[0] + f[1]), stratify=labels[rest], random_state=seed)
        return {"train": np.sort(train), "valid": np.sort(valid), "test": np.sort(test)}
    groups = np.asarray(groups)
    if len(groups) != n:
        raise ValueError(f"groups must have one key per image ({n}). Received: {len(groups)} keys")
    rng = np.random.default_rng(seed)
    keys, inverse = np.unique(groups, return_inverse=True)
    sizes = np.bincount(inverse)
    majority = np.array([np.bincount(labels[inverse == g]).argmax() for g in range(len(keys))])
    out = {s: [] for s in SPLITS}
    for c in np.unique(majority):
        members = rng.permutation(np.flatnonzero(majority == c))
        ends = np.cumsum(sizes[members]) / sizes[members].sum()
        # A group goes to the split its midpoint falls in: train first, then valid, then test.
        mid = ends - sizes[members] / sizes[members].sum() / 2
        cut = _fill_empty(np.searchsorted(np.cumsum(f)[:2], mid, side="right"), sizes[members], f)
        for s, name in enumerate(SPLITS):
            out[name].extend(members[cut == s])
    return {name: np.flatnonzero(np.isin(inverse, out[name])) for name in SPLITS}


def _fill_empty(cut, sizes, fractions) -> np.ndarray:
    """Give every split with a nonzero fraction at least one of a class's groups when the class
    has enough of them: a few large groups (near-duplicate families) can leave a split's midpoint
    range empty. The group moved is the one, from the split holding most images, whose size is
    closest to what the empty split should hold."""
    cut = cut.copy()
    wanted = [s for s in range(len(SPLITS)) if fractions[s] > 0]
    if len(sizes) < len(wanted):
        return cut
    for s in wanted:
        if (cut == s).any():
            continue
        held = np.array([sizes[cut == t].sum() for t in range(len(SPLITS))])
        donor = np.flatnonzero(cut == held.argmax())
        if len(donor) < 2:
            continue
        cut[donor[np.argmin(np.abs(sizes[donor] - fractions[s] * sizes.sum()))]] = s
    return cut


def oversample(indices, labels, seed: int = 0) -> np.ndarray:
    """RandomOverSampler (imbalanced-learn) on ``indices``: every class repeated up to the
    largest one. ``labels`` holds the labels of all items (indexed by ``indices``).

    Returns:
        int64 indices with repeats; the originals first, in imbalanced-learn's order.
    """
    from imblearn.over_sampling import RandomOverSampler

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
        if groups is not None:
            raise ValueError("oversample='before' (the seed's leaky order) splits oversampled rows and "
                             "cannot keep groups apart; use oversample='after' with group_by.")
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
