"""PatchCamelyon from its original files: ``camelyonpatch_level_2_split_{split}_{x,y}.h5``.

Layout in ``DIR`` (spec ``pcam-h5:DIR``):

- ``..._{split}_x.h5``: dataset ``x``, uint8 ``(n, 96, 96, 3)``; ``..._{split}_y.h5``: dataset
  ``y``, uint8 ``(n, 1, 1, 1)`` (``(n,)`` is accepted too); splits ``train``, ``valid``,
  ``test`` of 262,144 / 32,768 / 32,768 patches, each balanced. The ``.h5.gz`` archives, as
  published, are unpacked once beside themselves by :func:`unpack` (`download_pcam` does it).
- ``..._{split}_meta.csv`` (optional): one row per patch, column ``wsi`` naming its Camelyon16
  slide (:func:`read_meta`), so splits and reports can be grouped by slide.

Streaming: the labels (256 KB for train) are read up front; images are read in contiguous slices
with h5py from a ``tf.data`` generator and never held whole. Without shuffling a slice is one
batch. With ``shuffle=True`` the order of 1,024-patch blocks is reshuffled every epoch and
patches pass an 8,192-patch shuffle buffer (about 230 MB), an approximate shuffle that keeps
reads contiguous.

Checks: a missing, truncated or mis-shaped file raises ``ValueError`` naming the file and what
is wrong; :func:`verify` compares MD5 sums with the published ones in ``histolib/data/pcam.json``;
:func:`download_pcam` fetches the files from Zenodo, and fails within seconds when offline.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import tensorflow as tf

from histolib.data._pipeline import AUTOTUNE, Selection, to_float
from histolib.data.splits import SPLITS
from histolib.files import atomic_file, download, md5sum

PCAM_FILE = "camelyonpatch_level_2_split_{split}_{key}.h5"
"""Names of the original PCam files, ``key`` = ``x`` (images) or ``y`` (labels)."""

META_FILE = "camelyonpatch_level_2_split_{split}_meta.csv"
"""Names of PCam's per-patch metadata files (column ``wsi``: the source slide)."""

SPLIT_LENGTHS = {"train": 262144, "valid": 32768, "test": 32768}
"""Published split sizes."""

CLASS_NAMES = ["0", "1"]
"""Label order of every PCam source (h5, TFDS, Kaggle, folders of PCam JPEGs, synthetic-pcam):
0 = no tumour in the centre 32x32 region, 1 = tumour there."""

PATCH_SHAPE = (96, 96, 3)
BLOCK = 1024
SHUFFLE_BUFFER = 8192
MANIFEST = Path(__file__).resolve().with_name("pcam.json")
"""The download manifest (URLs, MD5 sums), ``histolib/data/pcam.json``: package data, so it
ships in the wheel too (a Colab install from git has it)."""

DOWNLOAD_HOST = "zenodo.org"


def manifest() -> dict:
    """The PCam manifest: Zenodo URL template, file names, MD5 sums, split lengths."""
    if not MANIFEST.is_file():
        raise ValueError(f"PCam manifest not found at {MANIFEST}: the histolib installation is incomplete; "
                         "reinstall the package")
    return json.loads(MANIFEST.read_text())


def _unpack(gz: Path, out: Path) -> None:
    try:
        with gzip.open(gz, "rb") as src, atomic_file(out, "wb") as dst:
            shutil.copyfileobj(src, dst, length=16 << 20)
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot unpack {gz}: {err} (truncated download?)") from err


def h5_path(directory, split: str, key: str) -> Path:
    """Path of the unpacked ``x`` or ``y`` file of ``split``. Reads nothing and writes nothing:
    a folder holding only the ``.h5.gz`` archive is an error saying to `unpack` it first.

    Raises:
        ValueError: naming the missing file (and the archive, when that is there).
    """
    path = Path(directory) / PCAM_FILE.format(split=split, key=key)
    if path.is_file():
        return path
    gz = Path(f"{path}.gz")
    if gz.is_file():
        raise ValueError(f"{gz} is packed: h5py reads unpacked files only. Unpack it once with "
                         f"histolib.data.pcam.unpack({str(directory)!r}) (or gunzip -k)")
    raise ValueError(f"missing PCam file {path} (or {gz.name}); get the files with "
                     f"histolib.data.pcam.download_pcam({str(directory)!r}) or `histolib data pcam --out {directory}`")


def unpack(directory, splits=SPLITS) -> list[Path]:
    """Unpack each ``.h5.gz`` archive of ``splits`` in ``directory`` beside itself (atomically;
    an ``.h5`` already there is kept). Returns the ``.h5`` files there now.

    Raises:
        ValueError: an archive that cannot be unpacked (truncated), or an unwritable folder.
    """
    directory, out = Path(directory), []
    for split in splits:
        for key in ("x", "y"):
            path = directory / PCAM_FILE.format(split=split, key=key)
            gz = Path(f"{path}.gz")
            if not path.is_file() and gz.is_file():
                if not os.access(directory, os.W_OK):
                    raise ValueError(f"{gz} needs unpacking, but {directory} is not writable; gunzip it elsewhere")
                _unpack(gz, path)
            if path.is_file():
                out.append(path)
    return out


def _open(path: Path, key: str):

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"cannot read PCam file {path}: {err} (truncated, or not an HDF5 file)") from err
    if key not in f:
        keys = list(f.keys())
        f.close()
        raise ValueError(f"PCam file {path} has no dataset {key!r}; found {keys}")
    return f


def _check_complete(path: Path, dset) -> None:
    """Raise when the dataset's bytes run past the end of the file (a truncated copy)."""
    size = path.stat().st_size
    offset = dset.id.get_offset()
    if offset is not None and offset + dset.id.get_storage_size() > size:
        raise ValueError(f"PCam file {path} is truncated: dataset {dset.name!r} needs "
                         f"{offset + dset.id.get_storage_size():,} bytes, the file has {size:,}")
    try:
        dset[-1:]
    except OSError as err:
        raise ValueError(f"PCam file {path} is truncated or damaged: cannot read its last entry ({err})") from err


def check_split(directory, split: str) -> tuple[Path, np.ndarray]:
    """Check one split's files and return the image file and the labels.

    Returns:
        ``(x_path, labels int32 (n,))``.

    Raises:
        ValueError: naming the file, when one is missing, unreadable, truncated, has the wrong
            shape or dtype, or when ``x`` and ``y`` disagree in length.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Received: split={split!r}")
    x_path, y_path = h5_path(directory, split, "x"), h5_path(directory, split, "y")
    with _open(x_path, "x") as f:
        x = f["x"]
        if x.ndim != 4 or tuple(x.shape[1:]) != PATCH_SHAPE or x.dtype != np.uint8:
            raise ValueError(f"PCam file {x_path}: dataset 'x' must be uint8 (n, 96, 96, 3). "
                             f"Received: shape={x.shape}, dtype={x.dtype}")
        _check_complete(x_path, x)
        n = x.shape[0]
    with _open(y_path, "y") as f:
        y = f["y"]
        if y.shape not in ((n, 1, 1, 1), (n,)):
            raise ValueError(f"PCam file {y_path}: dataset 'y' must have shape ({n}, 1, 1, 1) to match "
                             f"{x_path.name}. Received: shape={y.shape}")
        _check_complete(y_path, y)
        labels = np.asarray(y[:]).reshape(-1).astype(np.int32)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"PCam file {y_path}: labels must be 0 or 1. Received: {np.unique(labels)[:10]}")
    return x_path, labels


def read_meta(directory, split: str):
    """The ``_meta.csv`` of ``split`` as a DataFrame (column ``wsi``: the source slide per patch)."""
    path = Path(directory) / META_FILE.format(split=split)
    if not path.is_file():
        raise ValueError(f"missing PCam meta file {path}")
    meta = pd.read_csv(path)
    if "wsi" not in meta.columns:
        raise ValueError(f"PCam meta file {path} has no 'wsi' column; found {list(meta.columns)}")
    return meta


def _stream(x_path: Path, labels: np.ndarray):
    n = len(labels)

    def batches(batch_size, shuffle, seed, image_size):

        block = BLOCK if shuffle else batch_size
        epochs = itertools.count()

        def blocks():
            order = np.arange(0, n, block)
            if shuffle:
                order = np.random.default_rng([seed, next(epochs)]).permutation(order)
            with h5py.File(x_path, "r") as f:
                x = f["x"]
                for start in order:
                    stop = min(start + block, n)
                    yield x[start:stop], labels[start:stop]

        ds = tf.data.Dataset.from_generator(blocks, output_signature=(
            tf.TensorSpec((None, *PATCH_SHAPE), tf.uint8), tf.TensorSpec((None,), tf.int32)))
        if shuffle:
            ds = ds.unbatch().shuffle(min(SHUFFLE_BUFFER, n), seed=seed).batch(batch_size)
        return ds.map(lambda x, y: (to_float(x, image_size), y), num_parallel_calls=AUTOTUNE)

    return batches


def selection(directory, split: str, *, fractions=None, seed: int = 0, group_by=None, oversample=None) -> Selection:
    """One split of the PCam files in ``directory`` (fixed splits, each balanced: ``fractions``
    and ``seed`` do not shape them; shuffling takes its seed at streaming time)."""
    if group_by is not None:
        raise ValueError("pcam-h5 has fixed splits, already separated by slide; group_by does not apply "
                         "(read_meta gives each patch's slide for grouped reports)")
    if oversample is not None:
        raise ValueError("pcam-h5 splits are balanced and fixed; oversample does not apply")
    x_path, labels = check_split(directory, split)
    return Selection(list(CLASS_NAMES), labels, _stream(x_path, labels))


def verify(directory, splits=SPLITS, *, lengths: bool = True) -> dict:
    """Check the unpacked ``.h5`` files of ``splits`` against the published MD5 sums and lengths.

    Returns:
        ``{file name: md5}`` of the files checked.

    Raises:
        ValueError: naming each file whose sum or length differs.
    """
    files = manifest()["files"]
    bad, sums = [], {}
    for split in splits:
        x_path, labels = check_split(directory, split)
        if lengths and len(labels) != SPLIT_LENGTHS[split]:
            bad.append(f"{x_path} has {len(labels):,} patches, PCam's {split} split has {SPLIT_LENGTHS[split]:,}")
        for key in ("x", "y"):
            path = h5_path(directory, split, key)
            sums[path.name] = md5sum(path)
            if sums[path.name] != files[path.name]["md5"]:
                bad.append(f"{path}: md5 {sums[path.name]}, published {files[path.name]['md5']}")
    if bad:
        raise ValueError("PCam files differ from the published ones:\n  " + "\n  ".join(bad))
    return sums


def download_pcam(out_dir="data/downloads/pcam", splits=SPLITS, *, meta: bool = True,
                  timeout: float = 30.0) -> list[Path]:
    """Download PCam from Zenodo into ``out_dir``, unpack it and check the MD5 sums.

    About 7.5 GB for all splits. Files already present with the right sum are kept. Each archive
    is MD5-checked as it arrives (`histolib.files.download`, through
    ``keras.utils.get_file``) and again once unpacked. Fails within a few seconds, with a
    ``ConnectionError``, when Zenodo cannot be reached.

    Args:
        out_dir: target folder (created); ``data/downloads/`` is git-ignored.
        splits: which splits.
        meta: also fetch the ``_meta.csv`` files (slide of each patch); a differing MD5 of
            those only warns (Zenodo's copies have changed since publication).
        timeout: seconds a read may wait for data.

    Returns:
        Paths of the unpacked files, ready for ``load("pcam-h5:" + out_dir, ...)``.
    """
    info = manifest()
    out = Path(out_dir)
    names = [PCAM_FILE.format(split=s, key=k) for s in splits for k in ("x", "y")]
    names += [META_FILE.format(split=s) for s in splits] if meta else []
    by_hand = (f"Copy the files (camelyonpatch_level_2_split_*_x.h5[.gz], *_y.h5[.gz]) into {out} by hand "
               "and use the spec 'pcam-h5:DIR', or train on 'synthetic-pcam'.")
    for name in names:
        entry = info["files"][name]
        if (out / name).is_file() and md5sum(out / name) == entry["md5"]:
            continue
        url = info["url_template"].format(filename=entry["download"])
        packed = entry["download"] != name
        expected = entry.get("md5_gz") if packed else (None if entry.get("on_mismatch") == "warn" else entry["md5"])
        fetched = download(url, out / entry["download"], md5=expected, timeout=timeout, by_hand=by_hand)
        if packed:
            _unpack(fetched, out / name)
            fetched.unlink()
        got = md5sum(out / name)
        if got != entry["md5"]:
            message = f"{out / name}: md5 {got}, published {entry['md5']}"
            if entry.get("on_mismatch") != "warn":
                (out / name).unlink()
                raise ValueError(f"downloaded PCam file differs from the published one: {message}")
            warnings.warn(message, stacklevel=2)
    return [out / n for n in names]
