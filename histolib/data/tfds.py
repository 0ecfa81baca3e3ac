"""PatchCamelyon through TensorFlow Datasets (spec ``tfds:patch_camelyon[:DATA_DIR]``).

For people with TFDS-prepared data (``DATA_DIR`` or TFDS's default ``~/tensorflow_datasets``)
or a network: TFDS's ``patch_camelyon`` builder downloads from Zenodo itself and has no manual
mode. Offline, TFDS would retry for minutes before failing, so when the data is not prepared
this module first opens one TCP connection to Zenodo with a 3-second timeout and, failing that,
raises a ``ConnectionError`` pointing to ``pcam-h5:DIR`` and ``histolib data pcam``.

Splits map ``train`` -> ``train``, ``valid`` -> ``validation``, ``test`` -> ``test``. Labels are
0/1 with class names ``"0"``, ``"1"`` as the other PCam sources. :func:`histolib.data.info`
counts labels by reading the records without decoding the images.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from histolib.data._pipeline import AUTOTUNE, Selection, to_float
from histolib.data.pcam import CLASS_NAMES, DOWNLOAD_HOST
from histolib.files import reachable

NAME = "patch_camelyon"
TFDS_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
"""histolib split -> TFDS split."""

REACH_TIMEOUT = 3.0
SHUFFLE_BUFFER = 8192


def _parse(arg: str | None) -> tuple[str, str | None]:
    name, _, data_dir = (arg or "").partition(":")
    if name != NAME:
        raise ValueError(f"the tfds source reads {NAME!r} only, as 'tfds:{NAME}[:DATA_DIR]'. Received: spec='tfds:{arg or ''}'")
    return name, (data_dir or None)


def ensure_available(data_dir: str | None = None) -> bool:
    """Whether TFDS must download (True) or has the data prepared (False).

    Raises:
        ConnectionError: within about ``REACH_TIMEOUT`` seconds, when the data is not prepared
            and Zenodo cannot be reached.
    """
    import tensorflow_datasets as tfds  # deferred: an optional dependency, slow to import

    if tfds.builder(NAME, data_dir=data_dir).is_prepared():
        return False
    if not reachable(DOWNLOAD_HOST, 443, timeout=REACH_TIMEOUT):
        raise ConnectionError(
            f"TFDS {NAME!r} is not prepared{f' in {data_dir}' if data_dir else ''} and {DOWNLOAD_HOST} "
            "cannot be reached, so TFDS cannot download it. If you have the original PCam files, use the "
            "spec 'pcam-h5:DIR' (download them where there is a network with `histolib data pcam DIR`); "
            "without them, use 'synthetic-pcam'.")
    return True


def _tfds_load(split, data_dir, options: dict):
    """``tfds.load`` of ``split`` with ``options`` (decoders, shuffling ...), downloading only
    when the data is not there and Zenodo answers."""
    import tensorflow_datasets as tfds  # deferred: an optional dependency, slow to import

    download = ensure_available(data_dir)
    return tfds.load(NAME, split=TFDS_SPLITS[split], data_dir=data_dir, download=download, **options)


def selection(arg, split: str, *, fractions=None, seed: int = 0, group_by=None, oversample=None) -> Selection:
    """One split of TFDS ``patch_camelyon`` (fixed splits: ``fractions`` and ``seed`` do not
    shape them)."""
    import tensorflow_datasets as tfds  # deferred: an optional dependency, slow to import

    _, data_dir = _parse(arg)
    if group_by is not None or oversample is not None:
        raise ValueError("tfds:patch_camelyon has fixed, balanced splits; group_by and oversample do not apply")

    def labels():
        records = _tfds_load(split, data_dir, {"decoders": {"image": tfds.decode.SkipDecoding()}})
        parts = [b.numpy() for b in records.map(lambda ex: ex["label"]).batch(65536)]
        return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)

    def batches(batch_size, shuffle, seed_, image_size):
        ds = _tfds_load(split, data_dir, {"as_supervised": True, "shuffle_files": shuffle,
                                          "read_config": tfds.ReadConfig(shuffle_seed=seed_)})
        if shuffle:
            ds = ds.shuffle(SHUFFLE_BUFFER, seed=seed_)
        return ds.batch(batch_size).map(
            lambda x, y: (to_float(x, image_size), tf.cast(y, tf.int32)), num_parallel_calls=AUTOTUNE)

    return Selection(list(CLASS_NAMES), labels, batches)
