"""Bags of tiles for multiple-instance learning (MIL), from three real sources.

A bag is a set of tiles with one label; MIL learns the label of the bag without being told the
label of any tile. `Bags` holds the tiles of all bags in one table (each tile a box of a source
file), which bag each tile belongs to, the bag labels and, where they are known, the tile labels.

- `pcam_bags`: bags of PatchCamelyon patches from an image folder (``SPLIT/0``, ``SPLIT/1``):
  a bag is positive when it holds at least one tumour patch, and the share of tumour patches in
  a positive bag is a parameter, down to a single patch. Tile labels are kept for scoring.
- `ovarian_bags`: each image of a class folder (``ROOT/<class>/<file>``) cut into tiles at its
  own resolution, the image's class as the bag label, and a group per bag for grouped splits.
- `region_bag`: the tissue tiles of a slide region (SVS or TIFF), one unlabelled bag.

The tiles' features are computed by `histolib.data.features.tile_features`; `padded` and
`dataset` turn bags and features into padded arrays with a mask, or a ``tf.data`` pipeline.
Every random choice takes ``seed``; nothing touches a global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from histolib.data import regions
from histolib.data.groups import group_keys
from histolib.files import IMAGE_SUFFIXES
from histolib.layers.tiles import tile_grid


@dataclass(frozen=True)
class Bags:
    """Tiles and the bags they form.

    Attributes:
        sources: ``(t,)`` str, the file each tile is cut from.
        boxes: ``(t, 4)`` int ``(row, col, height, width)`` of each tile in its source, in pixels.
        bag: ``(t,)`` int, the bag each tile belongs to (tiles of a bag are contiguous).
        labels: ``(b,)`` int, the bag labels (-1 where unlabelled).
        tile_labels: ``(t,)`` int, the tile labels (-1 where unknown).
        groups: ``(b,)`` str, a group key per bag (a group never spans two sides of a split).
        class_names: the names of the bag labels, in label order.
    """

    sources: np.ndarray
    boxes: np.ndarray
    bag: np.ndarray
    labels: np.ndarray
    tile_labels: np.ndarray
    groups: np.ndarray
    class_names: tuple

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def sizes(self) -> np.ndarray:
        """``(b,)`` int, the number of tiles in each bag."""
        return np.bincount(self.bag, minlength=len(self.labels))

    def members(self, i: int) -> np.ndarray:
        """The tile indices of bag ``i``, in order."""
        return np.flatnonzero(self.bag == i)


def _range_arg(value, name: str, *, low, high, integer: bool) -> tuple:
    pair = (value, value) if np.isscalar(value) else tuple(value)
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if (len(pair) != 2 or not all(isinstance(v, kind) and not isinstance(v, bool) for v in pair)
            or not low <= pair[0] <= pair[1] <= high):
        raise ValueError(
            f"{name} must be a number or a (low, high) pair with {low} <= low <= high <= {high}. "
            f"Received: {name}={value!r}"
        )
    return pair


def _folder_files(folder: Path) -> list:
    if not folder.is_dir():
        raise FileNotFoundError(f"Expected a folder of images at {folder}; it does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise ValueError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def pcam_bags(root, split: str = "train", *, n_bags: int = 100, bag_size=(8, 32), positive_fraction=(0.1, 0.5),
              positive_share: float = 0.5, seed: int = 0) -> Bags:
    """Bags of PatchCamelyon patches from an image folder, labelled by the MIL rule.

    Patches come from ``root/split/0`` (no tumour in the centre 32 x 32) and ``root/split/1``
    (tumour), each used in at most one bag. A bag holds ``n`` patches, ``n`` drawn uniformly
    from ``bag_size``; a positive bag holds ``k = max(1, round(f * n))`` tumour patches with
    ``f`` drawn uniformly from ``positive_fraction`` (so ``positive_fraction=0`` gives exactly
    one tumour patch per positive bag), a negative bag none. The tiles' order in a bag is
    shuffled. Bags of one call never share a patch, so splitting the bags splits the patches.

    Args:
        root: the folder holding ``split/0`` and ``split/1``, e.g. ``../shared/data/pcam-jpeg``.
        split: the split folder the patches come from.
        n_bags: number of bags.
        bag_size: patches per bag, an int or an inclusive ``(low, high)`` range.
        positive_fraction: the share of tumour patches in a positive bag, a number or a
            ``(low, high)`` range in [0, 1].
        positive_share: the share of positive bags (rounded to whole bags).
        seed: seeds the draw of patches, sizes, fractions and labels.

    Returns:
        `Bags` with ``class_names ("0", "1")``, tile labels from the folders, a group per bag.

    Raises:
        FileNotFoundError: a class folder is missing.
        ValueError: for bad arguments, or when the folders hold too few patches (the message
            says how many the bags need).
    """
    if not isinstance(n_bags, (int, np.integer)) or n_bags < 1:
        raise ValueError(f"n_bags must be a positive integer. Received: n_bags={n_bags!r}")
    sizes_range = _range_arg(bag_size, "bag_size", low=1, high=10**6, integer=True)
    fraction_range = _range_arg(positive_fraction, "positive_fraction", low=0.0, high=1.0, integer=False)
    if not 0.0 <= positive_share <= 1.0:
        raise ValueError(f"positive_share must lie in [0, 1]. Received: positive_share={positive_share!r}")
    pools = [_folder_files(Path(root) / split / c) for c in ("0", "1")]
    rng = np.random.default_rng(seed)
    n_positive = int(round(n_bags * positive_share))
    labels = rng.permutation(np.r_[np.ones(n_positive, int), np.zeros(n_bags - n_positive, int)])
    sizes = rng.integers(sizes_range[0], sizes_range[1] + 1, size=n_bags)
    fractions = rng.uniform(*fraction_range, size=n_bags)
    positives = np.where(labels == 1, np.clip(np.maximum(1, np.round(fractions * sizes)), 1, sizes), 0).astype(int)
    need = (int((sizes - positives).sum()), int(positives.sum()))
    if need[0] > len(pools[0]) or need[1] > len(pools[1]):
        raise ValueError(
            f"{n_bags} bags need {need[0]} patches in {Path(root) / split / '0'} and {need[1]} in "
            f"{Path(root) / split / '1'}; there are {len(pools[0])} and {len(pools[1])}. "
            f"Received: n_bags={n_bags}, bag_size={bag_size!r}"
        )
    order = [rng.permutation(len(pool)) for pool in pools]
    taken = [0, 0]
    sources, tile_labels, bag = [], [], []
    for i, (n, k) in enumerate(zip(sizes, positives)):
        members = [(0, j) for j in order[0][taken[0]:taken[0] + n - k]]
        members += [(1, j) for j in order[1][taken[1]:taken[1] + k]]
        taken = [taken[0] + n - k, taken[1] + k]
        for c, j in (members[m] for m in rng.permutation(len(members))):
            sources.append(str(pools[c][j]))
            tile_labels.append(c)
            bag.append(i)
    return Bags(sources=np.array(sources), boxes=np.tile([0, 0, 96, 96], (len(sources), 1)),
                bag=np.array(bag), labels=labels, tile_labels=np.array(tile_labels),
                groups=np.array([f"{split}-bag{i}" for i in range(n_bags)]), class_names=("0", "1"))


def image_size(path) -> tuple[int, int]:
    """``(height, width)`` of an image file, read from its header (by content, not suffix)."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"Cannot read the image {path}: {error}") from error


def cover_boxes(height: int, width: int, tile: int, stride: int | None = None) -> np.ndarray:
    """Boxes covering a ``height x width`` image edge to edge with ``tile x tile`` tiles at
    ``stride`` (default ``tile``: ``ceil(height / tile)`` rows, spread evenly from the first pixel
    to the last, neighbours overlapping by less than a tile), at native resolution: the grid of
    `histolib.layers.TileImage` (`histolib.layers.tiles.tile_grid`). In an image smaller than a
    tile a box is the image's short side square, which the encoder upscales to ``tile``.

    Returns:
        ``(rows * cols, 4)`` int ``(row, col, side, side)``, row-major.
    """
    side, rows, cols = (np.asarray(v) for v in tile_grid(int(height), int(width), int(tile), int(stride or tile)))
    r, c = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([r.ravel(), c.ravel(), np.full(r.size, side), np.full(r.size, side)], axis=1).astype(int)


def _groups_arg(groups, files, root: Path) -> np.ndarray:
    if groups is None:
        return np.array([p.relative_to(root).as_posix() for p in files])

    return np.asarray(group_keys([str(p) for p in files], groups, root=root)).astype(str)


def ovarian_bags(root, *, tile: int | None = 96, stride: int | None = None, groups=None,
                 per_class: int | None = None, seed: int = 0) -> Bags:
    """Each image of ``root/<class>/`` as a bag of tiles at the image's own resolution.

    Every image is covered by ``tile x tile`` tiles (`cover_boxes`), its class folder is the bag
    label (classes sorted by name), and its tiles carry no labels. Files are recognised by their
    content (JPEG, PNG, GIF, BMP whatever the suffix says), so a GIF named ``.jpg`` is read.

    Args:
        root: a folder of class folders, e.g. ``../shared/data/ovarian``.
        tile: the tile side in pixels; ``None`` makes the whole image one tile (a bag of one,
            which an encoder resizes to its input: the whole-image baseline).
        stride: the step between tiles (default ``tile``; see `cover_boxes`).
        groups: ``None`` (each file its own group) or what `histolib.data.groups.group_keys`
            takes: ``"near-duplicates"`` (an image and its rotated, zoomed, re-coloured copies in
            one group, `histolib.data.duplicates`), a groups table, a dict from a file's path
            relative to ``root`` to its group, a callable or a regular expression.
        per_class: keep only this many images of each class (a seeded draw; ``None``: all).
        seed: seeds the ``per_class`` draw.

    Returns:
        `Bags`, one bag per image, in class then file-name order.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Expected a folder of class folders at {root}; it does not exist")
    class_names = tuple(sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")))
    if not class_names:
        raise ValueError(f"No class folders in {root}")
    rng = np.random.default_rng(seed)
    files, labels = [], []
    for label, name in enumerate(class_names):
        found = sorted(p for p in (root / name).iterdir() if p.is_file() and not p.name.startswith("."))
        if per_class is not None:
            found = [found[j] for j in np.sort(rng.permutation(len(found))[:per_class])]
        files += found
        labels += [label] * len(found)
    return image_bags(files, labels, class_names, tile=tile, stride=stride,
                      groups=_groups_arg(groups, files, root))


def image_bags(files, labels, class_names, *, tile: int | None, stride: int | None = None, groups=None) -> Bags:
    """Each image file a bag of its tiles at native resolution (`cover_boxes`; ``tile=None``:
    the whole image as one tile), with its label; ``groups`` (default: the file paths) a key
    per bag."""
    sources, boxes, bag = [], [], []
    for i, path in enumerate(files):
        height, width = image_size(path)
        cut = np.array([[0, 0, height, width]]) if tile is None else cover_boxes(height, width, tile, stride)
        sources += [str(path)] * len(cut)
        boxes.append(cut)
        bag += [i] * len(cut)
    return Bags(sources=np.array(sources), boxes=np.concatenate(boxes), bag=np.array(bag), labels=np.asarray(labels),
                tile_labels=np.full(len(sources), -1), class_names=tuple(class_names),
                groups=np.asarray([str(f) for f in files] if groups is None else groups))


def region_bag(path, *, tile: int = 96, stride: int = 96, min_tissue: float = 0.5) -> Bags:
    """The tissue tiles of a slide region as one unlabelled bag.

    The region is read with `histolib.data.regions.read_region`, its tissue found by
    `histolib.data.regions.tissue_mask` (Otsu on colour saturation), and every ``tile x tile`` tile at
    ``stride`` with at least ``min_tissue`` of its pixels on tissue is kept.

    Returns:
        `Bags` with one bag (label -1), tiles in row-major order of the grid.
    """
    region = regions.read_region(path)
    fraction = regions.tissue_fraction(regions.tissue_mask(region), tile=tile, stride=stride)
    rows, cols = np.nonzero(fraction >= min_tissue)
    if not len(rows):
        raise ValueError(f"No tile of {path} has {min_tissue:.0%} tissue. Received: min_tissue={min_tissue}")
    boxes = np.stack([rows * stride, cols * stride, np.full(len(rows), tile), np.full(len(rows), tile)], axis=1)
    return Bags(sources=np.full(len(rows), str(path)), boxes=boxes, bag=np.zeros(len(rows), int),
                labels=np.array([-1]), tile_labels=np.full(len(rows), -1), groups=np.array([str(path)]),
                class_names=())


def subset(bags: Bags, indices) -> Bags:
    """The bags ``indices`` (in that order), renumbered from 0."""
    indices = np.asarray(indices, dtype=int)
    keep = np.concatenate([bags.members(i) for i in indices]) if len(indices) else np.zeros(0, int)
    new_bag = np.repeat(np.arange(len(indices)), bags.sizes[indices])
    return Bags(sources=bags.sources[keep], boxes=bags.boxes[keep], bag=new_bag, labels=bags.labels[indices],
                tile_labels=bags.tile_labels[keep], groups=bags.groups[indices], class_names=bags.class_names)


def padded(bags: Bags, features, *, max_instances: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile values laid out per bag, padded to one length, with their mask.

    Args:
        bags: the bags.
        features: ``(t, c)`` features (`histolib.data.features.tile_features`) or ``(t,)``
            values such as ``bags.tile_labels``, one row per tile of ``bags``.
        max_instances: the padded length ``n``; default the largest bag. Larger bags raise.

    Returns:
        ``(x, mask)``: ``x`` ``(b, n, c)`` (or ``(b, n)``) with zeros on padding, float32 for
        features and the input's dtype otherwise, and ``mask`` bool ``(b, n)``, True on real
        instances.
    """
    features = np.asarray(features)
    features = features.astype(np.float32) if features.ndim == 2 else features
    if features.ndim not in (1, 2) or len(features) != len(bags.bag):
        raise ValueError(f"features must be (tiles, channels) or (tiles,), one row per tile ({len(bags.bag)}). "
                         f"Received: features.shape={features.shape}")
    sizes = bags.sizes
    n = int(sizes.max()) if max_instances is None else int(max_instances)
    if sizes.max() > n:
        raise ValueError(f"The largest bag holds {sizes.max()} tiles. Received: max_instances={max_instances}")
    position = np.arange(len(bags.bag)) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # index within its bag
    x = np.zeros((len(bags), n, *features.shape[1:]), features.dtype)
    mask = np.zeros((len(bags), n), bool)
    x[bags.bag, position] = features
    mask[bags.bag, position] = True
    return x, mask


def dataset(bags: Bags, features, *, indices=None, batch_size: int = 16, shuffle: bool = False, seed: int = 0,
            max_instances: int | None = None):
    """A ``tf.data.Dataset`` of ``({"features": (b, n, c), "mask": (b, n)}, labels (b,))`` batches.

    The input of `histolib.models.build_mil_classifier`, for `histolib.train.fit` and
    `histolib.evaluate.predict`. ``indices`` keeps only those bags (e.g. one fold of a
    cross-validation), in that order; ``shuffle`` reshuffles the bags every epoch (seeded);
    ``max_instances`` pads every batch to one length (default: the largest bag kept).
    """
    if indices is not None:
        indices = np.asarray(indices, dtype=int)
        tiles = np.concatenate([bags.members(i) for i in indices]) if len(indices) else np.zeros(0, int)
        bags, features = subset(bags, indices), np.asarray(features)[tiles]
    x, mask = padded(bags, features, max_instances=max_instances)
    ds = tf.data.Dataset.from_tensor_slices(({"features": x, "mask": mask}, bags.labels.astype(np.int32)))
    if shuffle:
        ds = ds.shuffle(len(bags), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
