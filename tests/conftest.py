"""Shared test setup: quiet TensorFlow, a path to ../shared, and small helpers."""

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
