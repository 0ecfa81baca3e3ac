"""Frozen-encoder features of tiles, computed once and cached in a user folder.

A MIL head over a frozen encoder only ever needs each tile's feature vector, so
`tile_features` runs the encoder once per tile and stores the result in `cache_dir`
(``$HISTOLIB_CACHE/tile-features``, by default ``~/.cache/histolib/tile-features``), never
beside the data. The cache is keyed by everything that decides the numbers: the encoder (its
architecture and the bytes of every weight) and each tile (its source file's folder, name, size
and modification time, and the box cut from it). Change any of them and those features are
computed afresh; files written by another version of this module are not read.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from histolib import files
from histolib.data.regions import read_region
from histolib.layers.augmentation import augmentation

#: Bumped when the way features are computed changes, so old cache files are not reused.
CACHE_VERSION = 1


def cache_dir() -> Path:
    """Where features are cached (not created here): ``tile-features/`` in the user cache of
    `histolib.files` (``$HISTOLIB_CACHE``, else ``$XDG_CACHE_HOME/histolib``, else
    ``~/.cache/histolib``)."""
    return files.cache_dir() / "tile-features"


def encoder_fingerprint(encoder) -> str:
    """SHA-256 of an encoder's architecture (``to_json``: layers, their settings and names) and
    every weight's bytes. Layers without weights (a ``Rescaling``) count through the first."""
    digest = hashlib.sha256(encoder.to_json().encode())
    for weight in encoder.weights:
        digest.update(np.ascontiguousarray(np.asarray(weight)).tobytes())
    return digest.hexdigest()


def tile_keys(sources, boxes) -> np.ndarray:
    """A key per tile: its file's name, size and modification time (ns), and its box."""
    stats = {source: Path(source).stat() for source in set(map(str, sources))}
    return np.array([f"{Path(s).name}|{stats[s].st_size}|{stats[s].st_mtime_ns}|{r},{c},{h},{w}"
                     for s, (r, c, h, w) in zip(map(str, sources), np.asarray(boxes))])


def read_source(path) -> np.ndarray:
    """An RGB image ``(h, w, 3)`` uint8 from an image file (decoded by content: JPEG, PNG with
    or without alpha, GIF, BMP) or a slide region (``.svs``, ``.tif``, ``.tiff``)."""
    path = Path(path)
    if path.suffix.lower() in files.SLIDE_SUFFIXES:
        return read_region(path)
    try:
        return tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
        raise ValueError(f"Cannot decode the image {path}: {error.message}") from error


def _tiles(sources, boxes):
    """Each tile as uint8 ``(h, w, 3)``, in order, reading every source file once."""
    cached_path, image = None, None
    for source, (row, col, height, width) in zip(sources, boxes):
        if source != cached_path:
            cached_path, image = source, read_source(source)
        if row < 0 or col < 0 or row + height > image.shape[0] or col + width > image.shape[1]:
            raise ValueError(f"The box {(row, col, height, width)} (row, col, height, width) lies outside "
                             f"{source}, an image of {image.shape[0]} x {image.shape[1]} pixels")
        yield image[row:row + height, col:col + width]


def encode(sources, boxes, encoder, *, batch_size: int = 256, chunk_bytes: int = 2**28, transform=None) -> np.ndarray:
    """The encoder's output for every tile, without the cache.

    Each tile is scaled to float32 in [0, 1] (the input every histolib model takes) and,
    where its box differs from the encoder's input size, resized (bilinear, antialiased);
    tiles are gathered up to ``chunk_bytes`` of float32, passed through ``transform`` when given
    (a callable on ``(n, h, w, 3)``, e.g. an augmentation set) and through ``encoder.predict`` in
    batches of ``batch_size``.

    Returns:
        ``(t, c)`` float32.
    """
    size = tuple(encoder.input_shape[1:3])
    chunk = max(1, chunk_bytes // (4 * 3 * size[0] * size[1]))
    out, buffer = [], []

    def flush():
        tiles = np.stack(buffer)
        tiles = tiles if transform is None else np.asarray(transform(tiles))
        out.append(encoder.predict(tiles, batch_size=batch_size, verbose=0))
        buffer.clear()

    for tile in _tiles(sources, boxes):
        tile = tile.astype(np.float32) / 255.0
        if tile.shape[:2] != size:
            tile = np.clip(tf.image.resize(tile, size, antialias=True).numpy(), 0.0, 1.0)
        buffer.append(tile)
        if len(buffer) == chunk:
            flush()
    if buffer:
        flush()
    features = np.concatenate(out).astype(np.float32)
    return features.reshape(len(features), -1)


def _shard_path(encoder_key: str, folder: str) -> Path:
    name = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:24]
    return cache_dir() / encoder_key / f"{name}.npz"


def _read_shard(path: Path) -> dict:
    try:
        with np.load(path) as shard:
            return dict(zip(shard["keys"].tolist(), shard["features"]))
    except (OSError, ValueError, KeyError):
        return {}


def _write_shard(path: Path, table: dict) -> None:
    """Write atomically; an unwritable cache gives a warning, and the features are still returned."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with files.atomic_path(path) as part:
            np.savez(part, keys=np.array(list(table)), features=np.stack(list(table.values())))
    except OSError as error:
        warnings.warn(f"tile features not cached ({error}); set HISTOLIB_CACHE to a writable folder "
                      "to keep them between runs", stacklevel=3)


def tile_features(bags, encoder, *, batch_size: int = 256, cache: bool = True, view=None) -> np.ndarray:
    """Features of every tile of ``bags`` from a frozen ``encoder``, each computed once.

    The cache holds one file per encoder and source folder (``cache_dir() / <encoder> /
    <folder>.npz``), a table from `tile_keys` to feature rows. Tiles found there are read;
    the others are encoded and added, so bags drawn with another seed, or more bags of the same
    folders, only encode the tiles not seen before.

    Args:
        bags: `histolib.data.bags.Bags` (any object with ``sources`` and ``boxes``).
        encoder: a Keras model from tiles ``(batch, h, w, 3)`` in [0, 1] to vectors
            ``(batch, c)``, e.g. `histolib.models.build_tile_encoder`.
        batch_size: tiles per forward pass.
        cache: read and write the cache; ``False`` always computes and stores nothing.
        view: ``None`` (the tiles as they are), or ``(augment, seed)``: an augmentation set of
            `histolib.layers.augmentation` drawn with ``seed`` on the tiles first (a training
            view, cached under its own key; its draws follow the tiles' order in a chunk).

    Returns:
        ``(t, c)`` float32, one row per tile, in the order of ``bags.sources``.
    """
    sources, boxes = np.asarray(bags.sources).astype(str), np.asarray(bags.boxes)
    transform = None
    if view is not None:
        pipeline = augmentation(view[0], int(view[1]), dtype="float32")
        transform = functools.partial(pipeline, training=True)
    if not cache:
        return encode(sources, boxes, encoder, batch_size=batch_size, transform=transform)
    encoder_key = f"{encoder.name}-{encoder_fingerprint(encoder)[:24]}-v{CACHE_VERSION}"
    if view is not None:
        encoder_key += f"-{view[0]}-{int(view[1])}"
    keys = tile_keys(sources, boxes)
    folders = np.array([str(Path(s).parent) for s in sources])
    rows = [None] * len(sources)
    for folder in np.unique(folders):
        here = np.flatnonzero(folders == folder)
        path = _shard_path(encoder_key, folder)
        table = _read_shard(path)
        missing = np.array([i for i in here if keys[i] not in table], dtype=int)
        if len(missing):
            order = missing[np.argsort(sources[missing], kind="stable")]  # each file read once
            table.update(zip(keys[order], encode(sources[order], boxes[order], encoder, batch_size=batch_size,
                                                 transform=transform)))
            _write_shard(path, table)
        for i in here:
            rows[i] = table[keys[i]]
    return np.stack(rows).astype(np.float32)
