"""Image files read by what they hold, not by their names, and checked before training.

The type of a file comes from its first bytes (its "magic number"), never from its suffix:
PNG, JPEG, GIF and BMP go to TensorFlow's ``decode_image``, TIFF (which TensorFlow cannot read)
to tifffile. So a GIF named ``4.jpg`` reads, and a text file named ``x.png`` fails with its
name in the error. Every image comes out uint8 ``(h, w, 3)``: an alpha channel is dropped (not
blended), grey is repeated to three channels, an animated GIF gives its first frame, 16-bit
TIFF is divided by 257.

:func:`check_files` decodes every file once, in parallel, before anything trains (PNG and JPEG
must also end with their end marker, so a truncated file fails here even where a decoder would
pad it). It reports every unreadable file at once, with each image's size, and keeps the answer
in the user cache (:mod:`histolib.files`, keyed by the files' paths, sizes and modification
times), so a second run over an unchanged folder decodes nothing.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tifffile

from histolib import files
from histolib.data._pipeline import AUTOTUNE

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
    (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"),
)
SHOWN = 10
"""How many unreadable files an error names (it counts the rest)."""


def image_format(head: bytes) -> str | None:
    """``"png"``, ``"jpeg"``, ``"gif"``, ``"bmp"``, ``"tiff"`` or ``None``, from a file's first bytes."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def read_tiff(data, path="<bytes>") -> np.ndarray:
    """Decode TIFF bytes with tifffile into uint8 ``(h, w, 3)``; ``ValueError`` names ``path``."""
    # tf.numpy_function hands over bytes in graph mode and 0-d object arrays when eager.
    data, path = (x.item() if isinstance(x, np.ndarray) else x for x in (data, path))
    path = path.decode() if isinstance(path, bytes) else str(path)
    try:
        image = np.asarray(tifffile.imread(io.BytesIO(data)))
    except Exception as err:  # tifffile raises many types; say which file, keep the cause
        raise ValueError(f"corrupt or unreadable TIFF image: {path} ({type(err).__name__}: {err})") from err
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"TIFF image {path} has shape {image.shape}; expected (h, w), (h, w, 3) or (h, w, 4)")
    image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating) and image.max() <= 1.0:
        image = np.round(image * 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"TIFF image {path} has dtype {image.dtype}; expected uint8, uint16 or float in [0, 1]")
    return image


def _complete(data):
    """True when ``data`` (a scalar string tensor) starts like a known image format, and PNG and
    JPEG also end like one (IEND chunk / EOI marker in the last 32 bytes)."""
    size = tf.strings.length(data)
    head = tf.strings.substr(data, 0, 8)
    png_head = tf.equal(head, b"\x89PNG\r\n\x1a\n")
    png = tf.logical_and(png_head, tf.equal(tf.strings.substr(data, tf.maximum(size - 8, 0), 4), b"IEND"))
    tail = tf.io.decode_raw(tf.strings.substr(data, tf.maximum(size - 32, 0), 32), tf.uint8)
    eoi = tf.reduce_any(tf.logical_and(tf.equal(tail[:-1], 0xFF), tf.equal(tail[1:], 0xD9)))
    jpeg = tf.logical_and(tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff"), eoi)
    other = tf.logical_or(tf.strings.regex_full_match(tf.strings.substr(data, 0, 6), "GIF8[79]a"),
                          tf.equal(tf.strings.substr(data, 0, 2), b"BM"))
    return tf.logical_and(size >= 16, tf.reduce_any(tf.stack([png, jpeg, other])))


def decode(path):
    """A TensorFlow function: a file path (scalar string tensor) -> uint8 ``(h, w, 3)``.

    Usable in ``tf.data`` maps. A file that is not a complete image of a known format fails with
    ``InvalidArgumentError`` whose message names it.
    """
    data = tf.io.read_file(path)
    head = tf.strings.substr(data, 0, 4)
    is_tiff = tf.logical_or(tf.equal(head, b"II*\x00"), tf.equal(head, b"MM\x00*"))

    def tiff():
        image = tf.numpy_function(read_tiff, [data, path], tf.uint8, stateful=False)
        return tf.ensure_shape(image, [None, None, 3])

    def other():
        check = tf.debugging.Assert(_complete(data), [
            "corrupt or unreadable image file (not a complete PNG, JPEG, GIF, BMP or TIFF):", path],
            summarize=1)
        with tf.control_dependencies([check]):
            return tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)

    return tf.cond(is_tiff, tiff, other)


def read_image(path) -> np.ndarray:
    """Read one image file as uint8 ``(h, w, 3)``, by its content, as the data pipeline does."""
    return decode(tf.constant(str(path))).numpy()


_FAILURES = (
    (re.compile(r"corrupt or unreadable image file \(not a complete [^)]*\):'?\]?\s*(?:\[|b')([^\]'\n]+)"),
     "no longer reads as an image (changed after the folder check?)"),
    (re.compile(r"corrupt or unreadable TIFF image: (.+?) \("), "no longer reads as a TIFF image"),
    (re.compile(r"\[image\] \[([^\]]+)\] \[has size\]"),
     "has another size than the first image; pass image_size (--image-size) to resize"),
)


def describe_failure(error) -> str | None:
    """One line naming the file, for a TensorFlow error raised while the pipeline decoded it
    (:func:`decode`'s checks, the size check of :mod:`histolib.data.folders`); ``None`` for other
    errors. Such an error reaches a user from deep inside ``model.fit`` or ``predict``."""
    if not type(error).__module__.startswith("tensorflow"):
        return None
    text = getattr(error, "message", None) or str(error)
    for pattern, what in _FAILURES:
        found = pattern.search(text)
        if found:
            return f"{found.group(1).strip()} {what}"
    return None


def diagnose(path) -> str | None:
    """Why ``path`` cannot be read as an image (a short phrase), or ``None`` when it can."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        return f"cannot be opened: {err.strerror or err}"
    kind = image_format(data[:8])
    if not data:
        return "empty file"
    if kind is None:
        return f"not an image, starts with {data[:8]!r}"
    if (kind == "png" and b"IEND" not in data[-12:]) or (kind == "jpeg" and b"\xff\xd9" not in data[-32:]):
        return f"truncated {kind.upper()} ({len(data)} bytes, no end marker)"
    try:
        read_image(path)
    except (tf.errors.OpError, ValueError) as err:
        message = getattr(err, "message", str(err))
        return f"{kind.upper()} that does not decode ({' '.join(message.split())[:120]})"
    return None


class UnreadableImagesError(ValueError):
    """Files that cannot be read as images; ``files`` lists all of them as ``(path, reason)``."""

    def __init__(self, bad, total: int, where):
        self.files = [(str(p), r) for p, r in bad]
        shown = "; ".join(f"{p} ({r})" for p, r in self.files[:SHOWN])
        more = f"; and {len(self.files) - SHOWN} more" if len(self.files) > SHOWN else ""
        super().__init__(f"{len(self.files)} of {total} files under {where} cannot be read as images: "
                         f"{shown}{more}")


@dataclass
class FileCheck:
    """What :func:`check_files` found.

    Attributes:
        paths: the files, as given.
        shapes: int ``(n, 2)``, each image's ``(height, width)`` in pixels; ``(-1, -1)`` where
            the file is unreadable.
        bad: ``[(path, reason), ...]`` for every unreadable file.
        cached: True when the answer came from the user cache (nothing was decoded).
    """

    paths: np.ndarray
    shapes: np.ndarray
    bad: list
    cached: bool


def _decode_all(paths) -> np.ndarray:
    """``(n, 2)`` image sizes, ``-1`` where decoding failed; one parallel tf.data pass."""
    shapes = np.full((len(paths), 2), -1, dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths))
    ds = ds.map(lambda i, p: (i, tf.shape(decode(p))[:2]), num_parallel_calls=AUTOTUNE)
    for index, shape in ds.ignore_errors().batch(1024).as_numpy_iterator():
        shapes[index] = shape
    return shapes


def check_files(paths, *, where=None, use_cache: bool = True, raise_errors: bool = True) -> FileCheck:
    """Decode every file in ``paths`` once and report all that cannot be read.

    Args:
        paths: image file paths (any names; the type comes from the content).
        where: how the error names the collection (default: the files' common folder).
        use_cache: read and write the answer in the user cache (:mod:`histolib.files`).
        raise_errors: raise `UnreadableImagesError` when any file is unreadable.

    Returns:
        A `FileCheck`.

    Raises:
        UnreadableImagesError: one message listing the first ten unreadable files with the reason
            for each, and how many more there are (a ``ValueError``).
    """

    paths = np.asarray(paths, dtype=str)
    key = files.files_key(paths, "image-check") if use_cache else None
    stored = files.cached("image-check", key) if use_cache else None
    if stored is not None:
        shapes, bad_index, cached = np.asarray(stored["shapes"], dtype=np.int64).reshape(-1, 2), stored["bad"], True
    else:
        shapes = _decode_all(paths)
        bad_index = [[int(i), diagnose(paths[i]) if n < 100 else "unreadable"]
                     for n, i in enumerate(np.flatnonzero(shapes[:, 0] < 0))]
        bad_index = [[i, reason or "failed to decode in the parallel pass"] for i, reason in bad_index]
        cached = False
        if use_cache:
            files.store("image-check", key, {"shapes": shapes.tolist(), "bad": bad_index})
    result = FileCheck(paths, shapes, [(paths[i], reason) for i, reason in bad_index], cached)
    if result.bad and raise_errors:
        raise UnreadableImagesError(result.bad, len(paths),
                                    where or (os.path.commonpath(list(paths)) if len(paths) else "."))
    return result
