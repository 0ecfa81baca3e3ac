"""Files and the network in one place: atomic writes, the user cache and checked downloads.

A file must never be seen half written, a download must be checked before it is used, offline
use must fail in seconds, and a result computed from data files once should not be computed
again. Every module that writes a record, caches a result or touches the network goes through
this one; it imports nothing else from histolib.

- Atomic writes: `atomic_path` (a temporary twin renamed over the target when complete) and
  what is built on it: `atomic_file`, `atomic_write_text`, `write_json`, `save_model`.
- The user cache: `cache_dir` is ``$HISTOLIB_CACHE``, else ``$XDG_CACHE_HOME/histolib``, else
  ``~/.cache/histolib``, never a file inside a data folder (data folders may be read-only or
  shared, and a cache file there would itself become a "data" file). `files_key` hashes each
  file's absolute path, size and modification time (ns), in order, with the kind of result and
  its parameters, so adding, removing, renaming, rewriting or touching a file gives a new key
  and a stale entry is never read (old entries are left behind; delete the folder to clear it).
  Entries are ``<cache>/<kind>/<key>.json`` (`cached`, `store`) or ``.npy`` (`cached_array`,
  `store_array`); an unreadable entry counts as missing, an unwritable cache folder gives one
  warning and no caching.
- The network: `reachable` (a TCP connection within a timeout, name lookup included), `md5sum`
  and `download` (``keras.utils.get_file`` with the MD5 checked, failing within seconds with
  the caller's directions when the host cannot be reached).
- `IMAGE_SUFFIXES` and `SLIDE_SUFFIXES`: the one list of file suffixes the readers take.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import urllib.parse
import warnings
from pathlib import Path

import keras
import numpy as np

__all__ = ["IMAGE_SUFFIXES", "SLIDE_SUFFIXES", "REACH_TIMEOUT", "atomic_file", "atomic_path", "atomic_write_text",
           "cache_dir", "cached", "cached_array", "download", "files_key", "md5sum", "reachable", "save_model",
           "store", "store_array", "write_json"]

#: Image files the folder, bag and tile readers take (decoded by content; TIFF through tifffile).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff")
#: Files read with tifffile rather than TensorFlow's decoders: slide regions (tiled TIFF
#: pyramids, base page) and TIFF patches.
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff")
#: Seconds the reachability check waits before a download is declared impossible.
REACH_TIMEOUT = 5.0
#: Bumped when a cache entry's layout changes, so old entries are not misread.
CACHE_FORMAT = 1


# --- atomic writes -----------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_path(path):
    """A temporary path beside ``path`` (same suffix, so ``model.save`` and ``np.save`` accept
    it) to write to; when the block ends without an error it is renamed over ``path`` (atomic
    on POSIX), else removed. Readers see the old file or the complete new one, never a part."""
    path = Path(path)
    part = path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")
    try:
        yield part
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(path, mode: str = "w", *, newline: str | None = None):
    """`atomic_path` as an open file (``mode`` ``"w"`` or ``"wb"``; ``newline`` as in ``open``,
    ``""`` for the csv module), flushed to disk before the rename."""
    with atomic_path(path) as part, open(part, mode, newline=newline) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` through `atomic_file`."""
    with atomic_file(path) as handle:
        handle.write(text)


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "numpy"):  # a backend tensor
        return np.asarray(value).tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path, obj) -> None:
    """``obj`` as indented JSON (NumPy values, tensors and paths included), written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def save_model(model, path) -> None:
    """``model.save(path)`` (a ``.keras`` file) through `atomic_path`."""
    with atomic_path(path) as part:
        model.save(part)


# --- the user cache ----------------------------------------------------------------------------

def cache_dir() -> Path:
    """The cache folder (not created here): ``$HISTOLIB_CACHE``, ``$XDG_CACHE_HOME/histolib`` or
    ``~/.cache/histolib``."""
    if os.environ.get("HISTOLIB_CACHE"):
        return Path(os.environ["HISTOLIB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "histolib"


def files_key(paths, kind: str, params: dict | None = None) -> str:
    """A 64-hex-digit key for a result computed from the files ``paths`` (in this order) with
    ``params`` (JSON-serialisable settings). Each file must exist (``FileNotFoundError`` names
    the first that does not); keying costs one ``stat`` per file."""
    digest = hashlib.sha256(json.dumps([CACHE_FORMAT, kind, params or {}], sort_keys=True).encode())
    for path in paths:
        path = os.path.abspath(path)
        st = os.stat(path)
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def entry_path(kind: str, key: str, suffix: str = ".json") -> Path:
    """Where the cache entry ``key`` of ``kind`` lives."""
    return cache_dir() / kind / f"{key}{suffix}"


def _store(path: Path, save) -> Path | None:
    """``save(temporary path)`` then rename into place; ``None`` (one warning) when the cache
    folder cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as part:
            save(part)
    except OSError as err:
        warnings.warn(f"histolib cache not written ({err}); set HISTOLIB_CACHE to a writable folder to "
                      "keep results between runs", stacklevel=3)
        return None
    return path


def cached(kind: str, key: str):
    """The JSON value stored under ``kind``/``key``, or ``None`` (none, or unreadable)."""
    try:
        return json.loads(entry_path(kind, key).read_text())
    except (OSError, ValueError):
        return None


def store(kind: str, key: str, value) -> Path | None:
    """Store the JSON value ``value`` under ``kind``/``key``; returns the entry's path, or
    ``None`` (with a warning) when the cache folder is not writable."""
    text = json.dumps(value)
    return _store(entry_path(kind, key), lambda part: part.write_text(text))


def cached_array(kind: str, key: str):
    """The NumPy array (``.npy``) or arrays (``.npz``, as a dict) stored under ``kind``/``key``,
    or ``None``."""
    for suffix in (".npy", ".npz"):
        path = entry_path(kind, key, suffix)
        if path.is_file():
            try:
                if suffix == ".npy":
                    return np.load(path, allow_pickle=False)
                with np.load(path, allow_pickle=False) as arrays:
                    return dict(arrays)
            except (OSError, ValueError):
                return None
    return None


def store_array(kind: str, key: str, array) -> Path | None:
    """Store an array (``.npy``) or a dict of arrays (``.npz``) under ``kind``/``key``."""
    if isinstance(array, dict):
        arrays = {name: np.asarray(value) for name, value in array.items()}
        return _store(entry_path(kind, key, ".npz"), lambda part: np.savez(part, **arrays))
    array = np.asarray(array)
    return _store(entry_path(kind, key, ".npy"), lambda part: np.save(part, array, allow_pickle=False))


# --- the network -------------------------------------------------------------------------------

def reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds, name
    lookup included (run in a thread, since ``getaddrinfo`` ignores socket timeouts)."""
    outcome = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(True)
        except OSError:
            outcome.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(outcome and outcome[0])


def md5sum(path) -> str:
    """MD5 hex digest of a file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    """``urllib``'s reads (under ``keras.utils.get_file``) give up after ``seconds`` of silence."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _fetch(url: str, part: Path, *, md5, timeout: float, by_hand: str) -> None:
    """``keras.utils.get_file`` of ``url`` into ``part``, its errors as ours."""
    try:
        with _socket_timeout(timeout):
            keras.utils.get_file(fname=part.name, origin=url, file_hash=md5, hash_algorithm="md5",
                                 cache_dir=str(part.parent), cache_subdir="")
    except ValueError as error:  # get_file's hash check
        raise ValueError(f"downloaded {url} differs from the published file (expected MD5 {md5}); "
                         "it was removed") from error
    except Exception as error:  # get_file raises a bare Exception for HTTP and URL errors
        raise ConnectionError(f"download of {url} failed: {error}. {by_hand}") from error


def download(url: str, target, *, md5: str | None = None, timeout: float = 30.0, by_hand: str = "") -> Path:
    """Fetch ``url`` into the file ``target``, MD5-checked, with ``keras.utils.get_file``.

    A ``target`` already there with the right MD5 (any, when ``md5`` is ``None``) is kept and
    the network is not touched. Otherwise the host must answer within `REACH_TIMEOUT` seconds;
    the file arrives under a temporary name and replaces ``target`` only once its MD5 matches.

    Args:
        url: an ``http`` or ``https`` URL.
        target: the file to write (its folder is created).
        md5: the expected MD5 hex digest, or ``None`` to skip the check.
        timeout: seconds a read may wait for data.
        by_hand: what to tell a user without a network (where to put the file instead).

    Returns:
        ``target``.

    Raises:
        ConnectionError: the host cannot be reached, or the transfer fails.
        ValueError: the file's MD5 is not ``md5`` (nothing is left behind), or ``target``'s
            folder is not writable.
    """
    target = Path(target)
    if target.is_file() and (md5 is None or md5sum(target) == md5):
        return target
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if not reachable(parts.hostname, port, timeout=min(timeout, REACH_TIMEOUT)):
        raise ConnectionError(f"cannot reach {parts.hostname}:{port} to download {url}; are you offline? {by_hand}")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(target.parent, os.W_OK):  # get_file would quietly write to /tmp/.keras instead
        raise ValueError(f"cannot write into {target.parent}. Received: target={str(target)!r}")
    with atomic_path(target) as part:
        _fetch(url, part, md5=md5, timeout=timeout, by_hand=by_hand)
    return target
