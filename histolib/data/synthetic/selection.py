"""The ``synthetic-pcam`` and ``synthetic-subtype`` sources of ``histolib.data.load``.

Split sizes from the spec, the lazily filled in-memory store (`MEMO_LIMIT`) and the two
``selection`` functions the source table calls.
"""

from __future__ import annotations

import numpy as np

from histolib.data._pipeline import indexed
from histolib.data.pcam import CLASS_NAMES
from histolib.data.splits import oversample as oversample_indices
from histolib.data.splits import select
from histolib.data.synthetic.generators import (
    PCAM_SIZE,
    SUBTYPE_CLASSES,
    SUBTYPE_SIZE,
    pcam_images,
    pcam_labels,
    subtype_images,
    subtype_table,
)

PCAM_DEFAULT_SIZES = {"train": 4096, "valid": 512, "test": 512}
"""Default split sizes of ``synthetic-pcam``: small enough for a two-minute quick profile."""

MEMO_LIMIT = 16384
"""Splits up to this many images keep each generated image in memory (uint8, 27 KB each at
96x96, filled lazily as batches are drawn), so later epochs cost nothing; larger ones are
generated afresh on every pass, in parallel batches, and never held whole."""


MEMO_STORES = 8
"""Stores kept at once (one per generator, seed, split and size); the oldest is dropped first."""


class _Memo:
    """Lazily filled uint8 store for one (generator, seed, split, size); thread-safe enough:
    two threads that race on an index write the same bytes."""

    _stores: dict = {}  # key -> store, oldest first

    def __init__(self, n, draw, size):
        self.draw = draw
        self.images = np.empty((n, size, size, 3), np.uint8) if n <= MEMO_LIMIT else None
        self.done = np.zeros(n, bool)

    @classmethod
    def get(cls, key, n, draw, size):
        if key not in cls._stores:
            if len(cls._stores) >= MEMO_STORES:
                cls._stores.pop(next(iter(cls._stores)))  # forget the oldest
            cls._stores[key] = cls(n, draw, size)
        return cls._stores[key]

    def read(self, indices):
        indices = np.asarray(indices, dtype=np.int64)
        if self.images is None:
            return self.draw(indices)
        todo = np.unique(indices[~self.done[indices]])
        if len(todo):
            self.images[todo] = self.draw(todo)
            self.done[todo] = True
        return self.images[indices]


def parse_pcam_sizes(arg: str | None) -> dict[str, int]:
    """Split sizes from the part after ``synthetic-pcam:``.

    ``None`` -> :data:`PCAM_DEFAULT_SIZES` (4,096 / 512 / 512); ``"N"`` -> train N, valid and test
    N // 8 each (PCam's ratio 262,144 : 32,768 : 32,768); ``"T,V,S"`` -> each split's size.
    """
    if not arg:
        return dict(PCAM_DEFAULT_SIZES)
    try:
        parts = [int(p) for p in arg.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = [parts[0], max(2, parts[0] // 8), max(2, parts[0] // 8)]
    if len(parts) != 3 or min(parts) < 1:
        raise ValueError("synthetic-pcam takes no size, N (train; valid and test N // 8) or TRAIN,VALID,TEST. "
                         f"Received: spec='synthetic-pcam:{arg}'")
    return dict(zip(("train", "valid", "test"), parts))


def pcam_selection(arg, split, *, fractions=None, seed=0, group_by=None, oversample=None):
    """``synthetic-pcam[:sizes]`` split ``split``: fixed, disjoint, balanced splits (``fractions``
    does not shape them)."""
    if group_by is not None:
        raise ValueError("synthetic-pcam has fixed splits; group_by does not apply")
    sizes = parse_pcam_sizes(arg)
    if oversample == "before":
        raise ValueError("synthetic-pcam has fixed splits; oversample='before' needs a source without splits")
    n = sizes[split]
    labels = pcam_labels(n, seed, split)
    store = _Memo.get(("pcam", seed, split, n), n, lambda idx: pcam_images(idx, seed, split), PCAM_SIZE)
    idx = np.arange(n)
    if oversample == "after" and split == "train":
        idx = oversample_indices(idx, labels, seed)
    return indexed(CLASS_NAMES, labels, idx, store.read, (PCAM_SIZE, PCAM_SIZE))


def subtype_selection(arg, split, *, seed=0, fractions=(0.8, 0.1, 0.1), group_by=None, oversample=None):
    """``synthetic-subtype[:N]`` split ``split``: the seeded stratified split of N images (default
    3,082), grouped by patient with ``group_by="patient"``."""
    try:
        total = int(arg) if arg else None
    except ValueError:
        raise ValueError(f"synthetic-subtype takes no size or a total N. Received: spec='synthetic-subtype:{arg}'")
    if group_by not in (None, "patient"):
        raise ValueError(f"synthetic-subtype groups by 'patient' only. Received: group_by={group_by!r}")
    labels, patients = subtype_table(total, seed)
    idx = select(labels, split, fractions=fractions, seed=seed,
                 groups=patients if group_by else None, oversample_order=oversample)
    n = len(labels)

    def draw(indices):
        return subtype_images(indices, total=total, seed=seed)[0]

    store = _Memo.get(("subtype", seed, total), n, draw, SUBTYPE_SIZE)
    return indexed(SUBTYPE_CLASSES, labels, idx, store.read, (SUBTYPE_SIZE, SUBTYPE_SIZE))
