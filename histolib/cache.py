"""A user cache for results computed from data files (folder checks, near-duplicate groups).

Where: ``$HISTOLIB_CACHE`` when set, else ``$XDG_CACHE_HOME/histolib``, else
``~/.cache/histolib``; never a file inside a data folder (data folders may be read-only or
shared, and a cache file there would itself become a "data" file).

Keys: :func:`files_key` hashes each file's absolute path, size in bytes and modification time
(nanoseconds), in order, with the kind of result and its parameters. Adding, removing, renaming,
rewriting or touching any file gives a new key, so a stale entry is never read; old entries are
simply left behind (delete the folder to clear it). Keying costs one ``stat`` per file, about
0.1 s for 23,000 files.

Entries: ``<cache>/<kind>/<key>.json`` (JSON values: :func:`read`, :func:`write`) or
``<cache>/<kind>/<key>.npy`` (NumPy arrays: :func:`read_array`, :func:`write_array`), written
atomically (a temporary file, then ``os.replace``), so a killed process never leaves half an
entry. An unreadable entry counts as missing; an unwritable cache folder gives one warning and
no caching.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

FORMAT = 1
"""Bumped when an entry's layout changes, so old entries are not misread."""


def cache_dir() -> Path:
    """The cache folder (not created here): ``$HISTOLIB_CACHE``, ``$XDG_CACHE_HOME/histolib`` or
    ``~/.cache/histolib``."""
    if os.environ.get("HISTOLIB_CACHE"):
        return Path(os.environ["HISTOLIB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "histolib"


def files_key(paths, kind: str, **params) -> str:
    """A key for a result computed from the files ``paths`` (in this order).

    Args:
        paths: file paths; each must exist (``FileNotFoundError`` names the first that does not).
        kind: what is computed, e.g. ``"folder-check"``.
        **params: settings the result depends on (JSON-serialisable).

    Returns:
        64 hex digits.
    """
    digest = hashlib.sha256(json.dumps([FORMAT, kind, params], sort_keys=True).encode())
    for path in paths:
        path = os.path.abspath(path)
        st = os.stat(path)
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def entry_path(kind: str, key: str, suffix: str = ".json") -> Path:
    """Where the entry ``key`` of ``kind`` lives."""
    return cache_dir() / kind / f"{key}{suffix}"


def read(kind: str, key: str):
    """The JSON value stored under ``kind``/``key``, or ``None`` when there is none (or it is
    unreadable)."""
    try:
        return json.loads(entry_path(kind, key).read_text())
    except (OSError, ValueError):
        return None


def _not_written(err) -> None:
    warnings.warn(f"histolib cache not written ({err}); set HISTOLIB_CACHE to a writable folder to "
                  "keep results between runs", stacklevel=3)


def _atomic(path: Path, save) -> Path | None:
    """Call ``save(file object)`` on a temporary file beside ``path``, then move it into place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem[:16]}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        _not_written(err)
        return None
    try:
        with os.fdopen(fd, "wb") as f:
            save(f)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        _not_written(err)
        return None
    except BaseException:  # e.g. a value JSON cannot hold: no temporary file left behind
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write(kind: str, key: str, value) -> Path | None:
    """Store the JSON value ``value`` under ``kind``/``key`` atomically.

    Returns:
        The entry's path, or ``None`` (with a warning) when the cache folder is not writable.
    """
    text = json.dumps(value).encode()
    return _atomic(entry_path(kind, key), lambda f: f.write(text))


def read_array(kind: str, key: str):
    """The NumPy array stored under ``kind``/``key``, or ``None``."""
    try:
        return np.load(entry_path(kind, key, ".npy"), allow_pickle=False)
    except (OSError, ValueError):
        return None


def write_array(kind: str, key: str, array) -> Path | None:
    """Store ``array`` under ``kind``/``key`` atomically (``.npy``); ``None`` when not writable."""
    array = np.asarray(array)
    return _atomic(entry_path(kind, key, ".npy"), lambda f: np.save(f, array, allow_pickle=False))
