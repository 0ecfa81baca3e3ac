"""Network and file I/O in one place: reachability, checksums, downloads and atomic writes.

Offline use must fail in seconds, not minutes; a download must be checked before it is used;
a file must never be seen half written. Every module that touches the network or writes a
record goes through these:

- `reachable`: whether a TCP connection opens within a timeout (name lookup included);
- `md5sum`: the MD5 of a file, read in chunks;
- `download`: fetch a URL into a file through ``keras.utils.get_file`` with its MD5 checked,
  failing within seconds, with the caller's directions, when the host cannot be reached;
- `atomic_file` / `atomic_write_text`: write to a temporary twin and rename it over the target
  only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import urllib.parse
from pathlib import Path

#: Seconds the reachability check waits before a download is declared impossible.
REACH_TIMEOUT = 5.0


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
def atomic_file(path, mode: str = "w", **kwargs):
    """Open a temporary twin of ``path`` (``NAME.part``) for writing; when the block ends
    without an error, flush it to disk and rename it over ``path`` (atomic on POSIX), else
    remove it. Readers see the old file or the complete new one, never a partial one.

    Args:
        path: the file to write.
        mode: ``"w"`` (text) or ``"wb"`` (bytes); ``kwargs`` go to ``open`` (e.g. ``newline=""``).

    Yields:
        The open temporary file.
    """
    path = Path(path)
    part = path.with_name(path.name + ".part")
    try:
        with open(part, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` through `atomic_file`."""
    with atomic_file(path) as handle:
        handle.write(text)


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    """``urllib``'s reads (under ``keras.utils.get_file``) give up after ``seconds`` of silence."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def download(url: str, target, *, md5: str | None = None, timeout: float = 30.0, by_hand: str = "") -> Path:
    """Fetch ``url`` into the file ``target``, MD5-checked, with ``keras.utils.get_file``.

    A ``target`` already there with the right MD5 (any, when ``md5`` is ``None``) is kept and
    the network is not touched. Otherwise the host must answer within `REACH_TIMEOUT` seconds;
    the file arrives as ``target.part`` and replaces ``target`` only once its MD5 matches.

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
    import keras

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
    part = target.with_name(target.name + ".part")
    try:
        with _socket_timeout(timeout):
            keras.utils.get_file(fname=part.name, origin=url, file_hash=md5, hash_algorithm="md5",
                                 cache_dir=str(target.parent), cache_subdir="")
    except ValueError as error:  # get_file's hash check
        part.unlink(missing_ok=True)
        raise ValueError(f"downloaded {url} differs from the published file (expected MD5 {md5}); "
                         "it was removed") from error
    except Exception as error:  # get_file raises a bare Exception for HTTP and URL errors
        part.unlink(missing_ok=True)
        raise ConnectionError(f"download of {url} failed: {error}. {by_hand}") from error
    os.replace(part, target)
    return target
