"""What every source hands to the front door, and the tf.data steps they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


@dataclass
class Selection:
    """One split of one source, ready to stream.

    Attributes:
        class_names: names in label order.
        labels: int32 ``(n,)`` labels in reading order (with repeats when oversampled), or a
            function returning them, for sources where that means a scan (TFDS).
        batches: ``batches(batch_size, shuffle, seed, image_size)`` -> ``tf.data.Dataset`` of
            ``(images float32 (b, h, w, 3) in [0, 1], labels int32 (b,))``.
        items: what each row is, in reading order, where the source can say: file paths for
            folders and Kaggle, indices into the whole set for the synthetic sources.
    """

    class_names: list
    labels: np.ndarray | Callable[[], np.ndarray]
    batches: Callable[..., tf.data.Dataset]
    items: np.ndarray | None = None

    def counts(self) -> list[int]:
        labels = self.labels() if callable(self.labels) else self.labels
        return np.bincount(labels, minlength=len(self.class_names)).astype(int).tolist()


#: ``image_size=NATIVE``: every image at its own size, one per batch (for models that tile them).
NATIVE = "native"


def to_float(images, image_size=None):
    """uint8 (or float in [0, 1]) ``(..., h, w, 3)`` -> float32 in [0, 1], resized when asked."""
    images = tf.image.convert_image_dtype(images, tf.float32)
    if image_size is not None and image_size != NATIVE:
        images = tf.clip_by_value(tf.image.resize(images, image_size, antialias=True), 0.0, 1.0)
    return images


def image_size_arg(image_size):
    """``None``, an int, ``(h, w)`` or `NATIVE` -> ``None``, a ``(h, w)`` tuple of ints or `NATIVE`."""
    if image_size is None or image_size == NATIVE:
        return image_size
    size = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be an int or (height, width). Received: image_size={image_size!r}")
    return int(size[0]), int(size[1])


def indexed(class_names, labels_all, indices, read, shape) -> Selection:
    """A selection read in batches from an index-addressable source.

    Args:
        class_names: names in label order.
        labels_all: int ``(n,)`` labels of the whole source.
        indices: which items, in reading order (repeats allowed).
        read: ``read(indices int64 (b,)) -> uint8 (b, h, w, 3)``, a NumPy function.
        shape: ``(h, w)`` of what ``read`` returns.
    """
    indices = np.asarray(indices, dtype=np.int64)
    labels = np.asarray(labels_all, dtype=np.int32)[indices]

    def batches(batch_size, shuffle, seed, image_size):
        ds = tf.data.Dataset.from_tensor_slices((indices, labels))
        if shuffle:
            ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)

        def fetch(idx, y):
            x = tf.numpy_function(read, [idx], tf.uint8, stateful=False)
            x.set_shape([None, *shape, 3])
            return to_float(x, image_size), y

        return ds.map(fetch, num_parallel_calls=AUTOTUNE)

    return Selection(list(class_names), labels, batches, indices)
