"""TensorFlow's import-time notices, held to ``TF_CPP_MIN_LOG_LEVEL``.

Importing TensorFlow 2.16 and newer writes C++ log lines to the process's stderr (file descriptor
2) before its logging is set up, and ``TF_CPP_MIN_LOG_LEVEL`` does not hold all of them back
(tensorflow/tensorflow#100442): absl's "All log messages before absl::InitializeLog() is called
are written to STDERR", the oneDNN notice (twice) and the CPU-instructions notice, all INFO. In
front of every one-line error of the ``histolib`` command they made four to six lines of noise.

`tensorflow_notices_filtered` catches what is written to descriptor 2 while TensorFlow is
imported and writes back the records at or above ``TF_CPP_MIN_LOG_LEVEL`` (0 INFO, 1 WARNING,
2 ERROR, 3 FATAL; default 1 here: warnings and errors pass, INFO notices do not). Python's own
``sys.stderr`` (warnings, tracebacks) goes around the catch, straight to where it went before.
`RetracingFilter`, installed on TensorFlow's logger by ``import histolib``, drops the retracing
warning that every loop over new models sets off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile

#: The start of a C++ log record: absl's ``I0000 00:00:...`` or TensorFlow's older
#: ``2025-01-01 12:00:00.000000: I ...``; group 1 or 2 is the severity letter.
_RECORD = re.compile(rb"^(?:([IWEF])\d{4} \d\d:\d\d:\d\d|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) )")
_ABSL_BANNER = b"WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}


def _min_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1"))
    except ValueError:
        return 1


def _kept(text: bytes, min_level: int) -> bytes:
    """The lines of ``text`` in records at or above ``min_level``; a line that starts no record
    belongs to the record above it (kept when there is none); absl's banner goes when
    ``min_level`` is above INFO."""
    kept, keep = [], True
    for line in text.splitlines(keepends=True):
        record = _RECORD.match(line)
        if record:
            keep = _SEVERITY[record.group(1) or record.group(2)] >= min_level
        elif line.startswith(_ABSL_BANNER):
            keep = min_level == 0
        if keep:
            kept.append(line)
    return b"".join(kept)


@contextlib.contextmanager
def tensorflow_notices_filtered():
    """Within: descriptor 2 caught (``sys.stderr`` routed around it); after: what was caught
    written back, less the records under ``TF_CPP_MIN_LOG_LEVEL``. Does nothing once TensorFlow
    is imported (its notices are out by then)."""
    if "tensorflow" in sys.modules:
        yield
        return
    sys.stderr.flush()
    original = os.dup(2)
    python_stderr = sys.stderr
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        if _writes_to_fd2(python_stderr):
            sys.stderr = open(os.dup(original), "w", buffering=1, encoding=python_stderr.encoding,
                              errors=python_stderr.errors)
        try:
            yield
        finally:
            if sys.stderr is not python_stderr:
                _repoint_handlers(sys.stderr, python_stderr)
                sys.stderr.close()
                sys.stderr = python_stderr
            os.dup2(original, 2)
            os.close(original)
            caught.seek(0)
            text = _kept(caught.read(), _min_level())
            if text:
                with open(2, "wb", closefd=False) as stderr:
                    stderr.write(text)


def _repoint_handlers(stand_in, stream) -> None:
    """Logging handlers made during the import (TensorFlow's own) hold the stand-in ``sys.stderr``,
    which is about to close: point them at ``stream``, the real one, so TensorFlow's later Python
    warnings reach stderr instead of failing with "I/O operation on closed file"."""
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in logging.root.manager.loggerDict]
    for handler in (h for logger in loggers for h in getattr(logger, "handlers", [])):
        if isinstance(handler, logging.StreamHandler) and handler.stream is stand_in:
            handler.setStream(stream)


class RetracingFilter(logging.Filter):
    """Drops TensorFlow's "N out of the last N calls ... triggered tf.function retracing": every new
    Keras model traces its own train and predict functions, so a loop over folds, seeds or
    poolings (cross-validation, chapter 10) sets it off though nothing is retraced needlessly."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in str(record.msg)


def _writes_to_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # Jupyter's, pytest's capture: not descriptor 2
        return False
