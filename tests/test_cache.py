"""The user cache: where it lives, what changes a key, atomic entries."""

import os
from pathlib import Path

import pytest

from histolib import cache


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HISTOLIB_CACHE", str(tmp_path / "c"))
    assert cache.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("HISTOLIB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "histolib"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.cache_dir() == Path.home() / ".cache" / "histolib"


def test_key_follows_paths_sizes_times_and_params(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"1234")
    b.write_bytes(b"5678")
    key = cache.files_key([a, b], "check")
    assert key == cache.files_key([str(a), str(b)], "check")
    assert key != cache.files_key([b, a], "check") != cache.files_key([a, b], "other")
    assert key != cache.files_key([a, b], "check", size=224)
    os.utime(b, ns=(1_000_000_000, 1_000_000_000))
    touched = cache.files_key([a, b], "check")
    assert touched != key
    b.write_bytes(b"56789")
    os.utime(b, ns=(1_000_000_000, 1_000_000_000))
    assert cache.files_key([a, b], "check") != touched  # same time, other size
    with pytest.raises(FileNotFoundError):
        cache.files_key([tmp_path / "gone.png"], "check")


def test_write_then_read_atomically(monkeypatch, tmp_path):
    monkeypatch.setenv("HISTOLIB_CACHE", str(tmp_path))
    assert cache.read("kind", "k" * 64) is None
    path = cache.write("kind", "k" * 64, {"groups": [["a", "b"]]})
    assert path == tmp_path / "kind" / f"{'k' * 64}.json"
    assert cache.read("kind", "k" * 64) == {"groups": [["a", "b"]]}
    with pytest.raises(TypeError):
        cache.write("kind", "x" * 64, {"bad": object()})
    assert sorted(p.name for p in (tmp_path / "kind").iterdir()) == [path.name]  # no temporary left
    path.write_text("{not json")
    assert cache.read("kind", "k" * 64) is None


def test_unwritable_cache_warns_and_goes_on(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("HISTOLIB_CACHE", str(blocker))
    with pytest.warns(UserWarning, match="cache not written"):
        assert cache.write("kind", "k" * 64, [1]) is None


def test_arrays_round_trip(monkeypatch, tmp_path):
    import numpy as np

    monkeypatch.setenv("HISTOLIB_CACHE", str(tmp_path))
    assert cache.read_array("features", "a" * 64) is None
    values = np.arange(24, dtype=np.float16).reshape(2, 3, 4)
    path = cache.write_array("features", "a" * 64, values)
    assert path.suffix == ".npy" and path.parent == tmp_path / "features"
    back = cache.read_array("features", "a" * 64)
    assert back.dtype == np.float16 and np.array_equal(back, values)
