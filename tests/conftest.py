"""Shared test setup: quiet TensorFlow, a path to ../shared, and small helpers."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_data():
    """``../shared/data`` beside the project root; skips the test where it is absent."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (../shared is not part of the project)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _user_cache(tmp_path_factory):
    """Tests never read or write the user's cache (``~/.cache/histolib``): one fresh cache folder
    per test session, inherited by the command-line subprocesses."""
    previous = os.environ.get("HISTOLIB_CACHE")
    os.environ["HISTOLIB_CACHE"] = str(tmp_path_factory.mktemp("histolib-cache"))
    yield
    if previous is None:
        os.environ.pop("HISTOLIB_CACHE", None)
    else:
        os.environ["HISTOLIB_CACHE"] = previous
