"""Network and file I/O in one place: reachability with a short timeout, and atomic writes.

Offline use must fail in seconds, not minutes, and a file must never be seen half written:

- `reachable`: whether a TCP connection opens within a timeout (name lookup included);
- `atomic_file`: write to a temporary twin and rename it over the target only when complete.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path


def reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """True when a TCP connection to ``host:port`` opens within ``timeout`` seconds (DNS included
    in practice: an offline resolver fails at once)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


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
