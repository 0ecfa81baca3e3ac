"""Batches under a strategy: the global batch, full static batches, each split as its strategy wants."""

from __future__ import annotations

import keras
import tensorflow as tf


def global_batch_size(per_replica: int, strategy: tf.distribute.Strategy | None = None) -> int:
    """The global batch for ``per_replica`` images on each replica of ``strategy``:
    ``per_replica * num_replicas_in_sync``. With ``None``, the current Keras distribution's
    devices where one is set (JAX), else the current TensorFlow strategy's replicas."""
    if not isinstance(per_replica, int) or per_replica < 1:
        raise ValueError(f"per_replica must be a positive integer. Received: per_replica={per_replica!r}")
    if strategy is None and keras.distribution.distribution() is not None:
        return per_replica * int(keras.distribution.distribution().device_mesh.devices.size)
    strategy = strategy or tf.distribute.get_strategy()
    return per_replica * strategy.num_replicas_in_sync


def make_tpu_safe(
    dataset: tf.data.Dataset, batch_size: int, *, num_examples: int | None = None
) -> tf.data.Dataset:
    """Rebatch ``dataset`` into full batches of static shape, as TPUs and XLA want.

    Args:
        dataset: batched ``(images (b, h, w, c), labels (b,))``, as ``histolib.data.load``
            gives, with ``h``, ``w`` and ``c`` known; the last batch may be short.
        batch_size: the global batch (see `global_batch_size`).
        num_examples: how many examples ``dataset`` holds (e.g. ``sum(info(...)["counts"])``),
            if known. Rebatching loses the dataset's cardinality; with ``num_examples`` it is
            restored as ``num_examples // batch_size`` steps. Give it (or ``steps_per_epoch`` to
            ``fit``) under a strategy: with an unknown cardinality Keras 3.15 ends each epoch
            on the exhausted iterator, and under MirroredStrategy on two CPU replicas that left
            the replicas' weights differing by ~1e-5 after a few epochs in our tests, while with
            a known cardinality they stay bit-identical.

    Returns:
        The same examples in order, in batches of exactly ``batch_size`` (the remainder
        dropped), with element spec ``(batch_size, h, w, c)`` / ``(batch_size,)``, prefetched.

    Raises:
        ValueError: for a non-positive ``batch_size`` or ``num_examples``, or images of
            unknown size.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer. Received: batch_size={batch_size!r}")
    if num_examples is not None and (not isinstance(num_examples, int) or num_examples < batch_size):
        raise ValueError(
            f"num_examples must be an integer >= batch_size ({batch_size}). "
            f"Received: num_examples={num_examples!r}"
        )
    images, labels = dataset.element_spec
    if images.shape.rank != 4 or None in images.shape[1:]:
        raise ValueError(
            "make_tpu_safe needs batched images (batch, h, w, c) with h, w, c known; set "
            f"image_size when loading. Received: element_spec images shape={images.shape}"
        )
    image_shape = [batch_size, *images.shape[1:]]
    label_shape = [batch_size, *labels.shape[1:]]
    dataset = dataset.rebatch(batch_size, drop_remainder=True)
    dataset = dataset.map(
        lambda x, y: (tf.ensure_shape(x, image_shape), tf.ensure_shape(y, label_shape)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if num_examples is not None:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_examples // batch_size))
    return dataset.prefetch(tf.data.AUTOTUNE)


def datasets_for_strategy(kind: str, train_ds, val_ds, *, batch_size: int, train_examples: int,
                          valid_examples: int):
    """``(train_ds, val_ds)`` shaped for a strategy of ``kind`` (a `StrategyChoice` kind).

    Under a TPU, and under JAX's data-parallel distribution (each batch is split evenly over
    the devices), both get `make_tpu_safe`'s full static batches: the last partial batch of
    each split is dropped. Under a mirrored strategy the training data does too: a known
    number of steps keeps the replicas in lock-step (with an unknown length they drift apart
    by ~1e-5 over a few epochs), while validation keeps every image. Otherwise both pass
    unchanged.

    Args:
        kind: ``"tpu"``, ``"mirrored"``, ``"multiworker"``, ``"data-parallel"`` or ``"default"``.
        train_ds, val_ds: batched datasets as ``histolib.data.load`` gives them.
        batch_size: the global batch.
        train_examples, valid_examples: images in each split (``sum(info(...)["counts"])``).
    """
    if kind in ("tpu", "mirrored", "data-parallel"):
        train_ds = make_tpu_safe(train_ds, batch_size, num_examples=train_examples)
    if kind in ("tpu", "data-parallel"):
        val_ds = make_tpu_safe(val_ds, batch_size, num_examples=valid_examples)
    return train_ds, val_ds
