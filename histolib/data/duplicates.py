"""Near-duplicate groups: an image with its rotated, mirrored, zoomed, shifted, re-coloured,
re-encoded and unevenly rescaled copies, so that a split never puts copies on both sides.

Why not a global embedding: copies made by rotation and zoom can sit further apart, in any
global descriptor, than two different fields of the same tissue; with one similarity threshold,
chains of look-alikes merge distinct images before all copies join. Here each candidate pair is
checked geometrically instead, as in image retrieval (Philbin et al. 2007; Jegou et al. 2008):

1. Keypoints. Each image, in grey and resized so its longer side is ``max_side`` pixels, gets up
   to ``n_features`` ORB keypoints (rotation-invariant binary descriptors over an 8-level scale
   pyramid, robust to colour and contrast changes), and so does its mirror image. Keypoints within
   15 px of near-black pixels are left out (slide thumbnails on black share their frame corners).
2. Candidate correspondences, without comparing every pair of images: the 256-bit descriptors go
   into ``tables`` hash tables keyed by ``bits`` random bit positions (bit-sampling LSH, seeded);
   descriptors of two different images that share a bucket and differ in fewer than
   ``max_distance`` bits are candidate matches. Each descriptor keeps its nearest candidate per
   other image, both ways (one-to-one).
3. Geometric verification: for each pair of images (and each relative mirroring) with at least
   ``min_inliers`` candidates, RANSAC fits an affine map (OpenCV ``estimateAffine2D``, 4 px). The
   pair is a near-duplicate when at least ``min_inliers`` matches agree, the map is a plausible
   view change (scales in [0.2, 5], aspect change at most 2.5x) and the agreeing points cover at
   least 1 % of both images (a shared watermark or frame does not).
4. Groups are the connected components of the verified pairs (union-find), singletons included:
   every readable file is in exactly one group.

On the 498 real ovarian images this finds the 84 augmented ``Endometri`` copies with their
originals (11 groups: three pairs of "originals" are the same field at two magnifications), the
byte-identical and renamed copies elsewhere, and one image filed under two classes; see the
``duplicates`` benchmark for its time. Results are cached in the user cache
(:mod:`histolib.files`) by the files' paths, sizes and times and these settings.
"""

from __future__ import annotations

import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from histolib import files
from histolib.data import images as _images
from histolib.data.layout import all_files

SETTINGS = {"max_side": 512, "n_features": 500, "bits": 20, "tables": 24, "max_distance": 56,
            "min_inliers": 12, "seed": 0}
"""The defaults of :func:`find_near_duplicates`."""

_BUCKET_CAP = 64  # larger buckets (featureless hashes) are skipped: they hold no evidence


@dataclass
class NearDuplicates:
    """What :func:`find_near_duplicates` found.

    Attributes:
        paths: the readable files, in the order given.
        groups: lists of indices into ``paths``; each index in exactly one group, groups ordered
            by their first member, members ascending.
        pairs: int ``(m, 4)``: ``i, j, inliers, mirrored`` for each verified pair (``i < j``).
        skipped: unreadable files left out, as ``(path, reason)``.
        cached: True when the answer came from the user cache.
    """

    paths: list
    groups: list
    pairs: np.ndarray
    skipped: list
    cached: bool

    def group_paths(self, root=None) -> list[list[str]]:
        """The groups as lists of paths, relative to ``root`` when given (POSIX separators)."""
        name = (lambda p: str(p)) if root is None else (lambda p: Path(os.path.relpath(p, root)).as_posix())
        return [[name(self.paths[i]) for i in group] for group in self.groups]

    def keys(self) -> np.ndarray:
        """The group number of each path, int ``(len(paths),)``, for grouped splits."""
        keys = np.empty(len(self.paths), dtype=np.int64)
        for number, group in enumerate(self.groups):
            keys[group] = number
        return keys


def _grey(path, max_side: int) -> np.ndarray:

    grey = cv2.cvtColor(_images.read_image(path), cv2.COLOR_RGB2GRAY)
    scale = max_side / max(grey.shape)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(grey, None, fx=scale, fy=scale, interpolation=interpolation)


def orb_features(grey: np.ndarray, n_features: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """ORB keypoints of a grey uint8 image and of its mirror image.

    Returns:
        ``[(points, descriptors), (mirror points, mirror descriptors)]``: points float32
        ``(k, 2)`` as ``(x, y)`` pixels of that orientation, descriptors uint8 ``(k, 32)``
        (256 bits); ``k`` may be 0.
    """
    orb = cv2.ORB_create(nfeatures=n_features)
    out = []
    for image in (grey, np.ascontiguousarray(grey[:, ::-1])):
        mask = cv2.erode((image >= 30).astype(np.uint8), np.ones((31, 31), np.uint8))
        keypoints, descriptors = orb.detectAndCompute(image, mask)
        if descriptors is None:
            out.append((np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)))
        else:
            out.append((np.float32([k.pt for k in keypoints]), descriptors))
    return out


def _bucket_pairs(hashes: np.ndarray):
    """Index pairs ``(a, b)`` of entries that share a hash value (buckets up to the cap)."""
    order = np.argsort(hashes, kind="stable")
    sorted_hashes = hashes[order]
    starts = np.flatnonzero(np.r_[True, sorted_hashes[1:] != sorted_hashes[:-1]])
    sizes = np.diff(np.r_[starts, len(hashes)])
    firsts, seconds = [], []
    for size in range(2, _BUCKET_CAP + 1):
        bucket = starts[sizes == size]
        if len(bucket):
            i, j = np.triu_indices(size, 1)
            firsts.append(order[bucket[:, None] + i].ravel())
            seconds.append(order[bucket[:, None] + j].ravel())
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)


def candidate_matches(descriptors, owners, *, bits: int, tables: int, max_distance: int, seed: int):
    """Descriptor pairs from different images that collide in a hash table and are close.

    Args:
        descriptors: uint8 ``(n, 32)``; owners: int ``(n,)``, the image of each (``2 * image +
            mirrored``).

    Returns:
        ``(a, b, distance)``: int arrays, ``a`` always from an upright image, unique pairs.
    """
    rng = np.random.default_rng(seed)
    words = np.ascontiguousarray(descriptors).view(np.uint64)  # (n, 4): 4x fewer XORs and counts
    found = []
    for _ in range(tables):
        hashes = np.zeros(len(descriptors), np.int64)
        for k, bit in enumerate(rng.choice(256, bits, replace=False)):
            hashes |= ((descriptors[:, bit // 8] >> (7 - bit % 8)) & 1).astype(np.int64) << k
        a, b = _bucket_pairs(hashes)
        keep = owners[a] // 2 != owners[b] // 2
        a, b = a[keep], b[keep]
        close = np.bitwise_count(words[a] ^ words[b]).sum(axis=1) < max_distance
        found.append(np.stack([a[close], b[close]], axis=1))
    pairs = np.concatenate(found)
    flip = owners[pairs[:, 0]] % 2 == 1  # (mirror a, b) is the same evidence as (a, mirror b)
    pairs[flip] = pairs[flip, ::-1]
    pairs = np.unique(pairs[owners[pairs[:, 0]] % 2 == 0], axis=0)
    a, b = pairs[:, 0], pairs[:, 1]
    return a, b, np.bitwise_count(words[a] ^ words[b]).sum(axis=1)


def _nearest_per(key, distance) -> np.ndarray:
    """Indices keeping, for each value of ``key``, the entry with the smallest ``distance``."""
    order = np.lexsort((distance, key))
    return order[np.r_[True, key[order][1:] != key[order][:-1]]]


def _one_to_one(a, b, distance, owners):
    """Keep each descriptor ``a`` with its nearest ``b`` in each other image, then each ``b``
    with its nearest ``a`` in each other image."""
    keep = _nearest_per(a * (owners.max() + 1) + owners[b], distance)
    a, b, distance = a[keep], b[keep], distance[keep]
    keep = _nearest_per(b * (owners.max() + 1) + owners[a], distance)
    return a[keep], b[keep]


def _plausible(matrix, src, dst, shapes) -> bool:
    """An affine ``matrix`` (2, 3) from ``src`` to ``dst`` points (the inliers) that a view change
    could give, with inliers covering at least 1 % of both images ``shapes`` ((h, w) each)."""
    scales = np.linalg.svd(matrix[:, :2], compute_uv=False)
    if not (scales[1] > 0.2 and scales[0] < 5 and scales[0] / scales[1] < 2.5):
        return False
    return all(cv2.contourArea(cv2.convexHull(points)) >= 0.01 * h * w
               for points, (h, w) in zip((src, dst), shapes))


def verify_pairs(points, owners, shapes, a, b, *, min_inliers: int) -> dict:
    """RANSAC-verified image pairs from candidate matches ``a -> b`` (descriptor indices).

    Args:
        points: float32 ``(n, 2)``, each descriptor's keypoint; owners: int ``(n,)``,
            ``2 * image + mirrored``; shapes: ``(h, w)`` per image (both orientations alike).

    Returns:
        ``{(i, j): (inliers, mirrored)}`` for verified pairs ``i < j``, the better orientation.
    """
    block = owners[a] // 2 * (owners.max() + 1) + owners[b]
    order = np.argsort(block, kind="stable")
    a, b, block = a[order], b[order], block[order]
    starts = np.flatnonzero(np.r_[True, block[1:] != block[:-1]])
    verified = {}
    for start, end in zip(starts, np.r_[starts[1:], len(block)]):
        if end - start < min_inliers:
            continue
        i, j, mirrored = owners[a[start]] // 2, owners[b[start]] // 2, int(owners[b[start]] % 2)
        src, dst = points[a[start:end]], points[b[start:end]]
        matrix, inliers = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=4.0,
                                               maxIters=2000, confidence=0.995)
        if matrix is None:
            continue
        inliers = inliers[:, 0].astype(bool)
        count = int(inliers.sum())
        key = (min(i, j), max(i, j))
        if (count >= min_inliers and count > verified.get(key, (0, 0))[0]
                and _plausible(matrix, src[inliers], dst[inliers], (shapes[i], shapes[j]))):
            verified[key] = (count, mirrored)
    return verified


def _components(n: int, pairs) -> list[list[int]]:

    i, j = (np.asarray([p[k] for p in pairs], dtype=np.int64) for k in (0, 1))
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    groups = {}
    for index, label in enumerate(labels):
        groups.setdefault(label, []).append(index)
    return sorted(groups.values())


def _features(paths, max_side: int, n_features: int):
    """Points, descriptors, owners and image shapes of ``paths``, in parallel threads."""
    def one(path):
        grey = _grey(path, max_side)
        return grey.shape, orb_features(grey, n_features)

    try:
        workers = len(os.sched_getaffinity(0))
    except AttributeError:
        workers = os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, paths))
    shapes = [shape for shape, _ in results]
    flat = [(pts, desc, 2 * i + m) for i, (_, feats) in enumerate(results) for m, (pts, desc) in enumerate(feats)]
    points = np.concatenate([pts for pts, _, _ in flat]).astype(np.float32)
    descriptors = np.concatenate([desc for _, desc, _ in flat])
    owners = np.concatenate([np.full(len(desc), owner) for _, desc, owner in flat]).astype(np.int64)
    return points, descriptors, owners, shapes


def _settings(overrides) -> dict:
    unknown = sorted(set(overrides) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown near-duplicate settings {unknown}; valid: {sorted(SETTINGS)}. "
                         f"Received: {overrides!r}")
    return {**SETTINGS, **overrides}


def find_near_duplicates(paths, *, use_cache: bool = True, settings: dict | None = None) -> NearDuplicates:
    """Group ``paths`` into near-duplicate groups (see the module docstring).

    Args:
        paths: image files (any format :mod:`histolib.data.images` reads). Unreadable files are
            left out with a warning (``skipped``).
        use_cache: read and write the answer in the user cache (:mod:`histolib.files`).
        settings: overrides of `SETTINGS`: ``max_side`` (px), ``n_features`` (ORB keypoints per
            image and per mirror image), ``bits`` and ``tables`` (the hashing), ``max_distance``
            (bits of 256), ``min_inliers`` (RANSAC-agreeing matches for a pair), ``seed`` (the
            hashing's bit positions).

    Returns:
        A `NearDuplicates`.
    """
    settings = _settings(settings or {})
    check = _images.check_files(paths, raise_errors=False, use_cache=use_cache)
    if check.bad:
        warnings.warn(f"near-duplicates: {len(check.bad)} unreadable file(s) left out, e.g. "
                      f"{check.bad[:3]}", stacklevel=2)
    bad = {p for p, _ in check.bad}
    readable = [str(p) for p in check.paths if p not in bad]
    key = files.files_key(readable, "near-duplicates", settings) if use_cache else None
    stored = files.cached("near-duplicates", key) if use_cache else None
    if stored is not None:
        pairs = np.asarray(stored["pairs"], dtype=np.int64).reshape(-1, 4)
        return NearDuplicates(readable, stored["groups"], pairs, check.bad, True)
    points, descriptors, owners, shapes = _features(readable, settings["max_side"], settings["n_features"])
    a, b, distance = candidate_matches(descriptors, owners, bits=settings["bits"], tables=settings["tables"],
                                       max_distance=settings["max_distance"], seed=settings["seed"])
    a, b = _one_to_one(a, b, distance, owners)
    verified = verify_pairs(points, owners, shapes, a, b, min_inliers=settings["min_inliers"])
    pairs = np.array(sorted((i, j, n, m) for (i, j), (n, m) in verified.items()), dtype=np.int64).reshape(-1, 4)
    groups = _components(len(readable), pairs)
    if use_cache:
        files.store("near-duplicates", key, {"groups": groups, "pairs": pairs.tolist()})
    return NearDuplicates(readable, groups, pairs, check.bad, False)


def folder_near_duplicates(root, *, use_cache: bool = True) -> NearDuplicates:
    """`find_near_duplicates` over every image file of the folder source at ``root`` (all splits,
    all classes: a copy filed under another class is found too)."""
    return find_near_duplicates(all_files(root), use_cache=use_cache)


def write_groups(found: NearDuplicates, out, root) -> Path:
    """Write ``{"groups": [[path, ...], ...]}`` (paths relative to ``root``) to the JSON ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"groups": found.group_paths(root)}, indent=1) + "\n")
    return out


def read_groups(path) -> dict[str, str]:
    """``{relative path: group key}`` from a groups JSON written by `write_groups` (the key is the
    group's first path)."""
    groups = json.loads(Path(path).read_text())
    if not isinstance(groups, dict) or not isinstance(groups.get("groups"), list):
        raise ValueError(f'{path}: expected {{"groups": [[path, ...], ...]}}')
    return {member: group[0] for group in groups["groups"] for member in group}
