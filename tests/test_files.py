"""histolib.files: downloads from a real HTTP server on 127.0.0.1, checksums, atomic writes, the
user cache.

The server is Python's http.server in a thread, serving a temporary folder; nothing leaves the
machine. The PCam and CMU-region downloads run their real code against it.
"""

import functools
import gzip
import hashlib
import http.server
import json
import socket
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from histolib import files
from histolib.data import regions
from histolib.data import pcam, synthetic


@pytest.fixture()
def server(tmp_path):
    """``(folder, base URL)``: files put in the folder are served at the URL."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_checksummed_download_from_a_local_server(server, tmp_path):
    root, url = server
    payload = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    (root / "blob.bin").write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()
    target = tmp_path / "out" / "blob.bin"
    assert files.download(f"{url}/blob.bin", target, md5=md5) == target
    assert target.read_bytes() == payload and files.md5sum(target) == md5
    assert sorted(p.name for p in target.parent.iterdir()) == ["blob.bin"]  # no .part left

    # A checked file is kept without asking the server (gone now).
    (root / "blob.bin").unlink()
    assert files.download(f"{url}/blob.bin", target, md5=md5) == target


def test_download_with_the_wrong_checksum_leaves_nothing(server, tmp_path):
    root, url = server
    (root / "blob.bin").write_bytes(b"not what was published")
    target = tmp_path / "out" / "blob.bin"
    with pytest.raises(ValueError, match="expected MD5 0{32}"):
        files.download(f"{url}/blob.bin", target, md5="0" * 32)
    assert list(target.parent.iterdir()) == []


def test_missing_file_and_closed_port_are_connection_errors(server, tmp_path):
    _, url = server
    with pytest.raises(ConnectionError, match="404.*put it there yourself"):
        files.download(f"{url}/absent.bin", tmp_path / "a.bin", by_hand="put it there yourself")
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match=f"cannot reach 127.0.0.1:{port}"):
        files.download(f"http://127.0.0.1:{port}/a.bin", tmp_path / "b" / "a.bin")
    assert not (tmp_path / "b").exists()


def test_atomic_file_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "record.json"
    files.atomic_write_text(path, "old")
    with pytest.raises(RuntimeError), files.atomic_file(path) as handle:
        handle.write("half of the new")
        raise RuntimeError("killed while writing")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_pcam_download_unpacks_and_checks(server, tmp_path, monkeypatch):
    root, url = server
    images, labels, _ = synthetic.pcam_patches(8, seed=0, split="valid")
    source = tmp_path / "source"
    plain = synthetic.write_pcam_h5(source, "valid", images, labels, slides=np.array(["s1"] * 8))
    packed = synthetic.write_pcam_h5(root, "valid", images, labels, slides=np.array(["s1"] * 8), compress=True)
    manifest_files = {}
    for h5, gz in zip(plain[:2], packed[:2]):
        manifest_files[h5.name] = {"download": gz.name, "md5": files.md5sum(h5), "md5_gz": files.md5sum(gz)}
    manifest_files[packed[2].name] = {"download": packed[2].name, "md5": "0" * 32, "on_mismatch": "warn"}
    manifest = {"url_template": url + "/{filename}", "files": manifest_files}
    monkeypatch.setattr(pcam, "manifest", lambda: manifest)

    with pytest.warns(UserWarning, match="meta.csv: md5"):
        paths = pcam.download_pcam(tmp_path / "pcam", splits=["valid"])
    assert [p.name for p in paths] == [h.name for h in plain]
    assert sorted(p.name for p in (tmp_path / "pcam").iterdir()) == sorted(p.name for p in paths)
    x_path, got = pcam.check_split(tmp_path / "pcam", "valid")
    assert got.tolist() == labels.tolist()

    # A damaged archive on the server: refused, and nothing of it stays.
    gz = root / manifest_files[plain[0].name]["download"]
    gz.write_bytes(gzip.compress(b"damaged"))
    manifest_files[plain[0].name]["md5"] = "1" * 32  # so the file already there no longer counts
    with pytest.raises(ValueError, match="differs from the published file"):
        pcam.download_pcam(tmp_path / "pcam2", splits=["valid"], meta=False)
    assert not any(p.name.startswith(gz.name) for p in (tmp_path / "pcam2").iterdir())


def test_cmu_region_download_from_a_local_server(server, tmp_path, monkeypatch):
    root, url = server
    payload = b"a stand-in for the 1.9 MB region" * 100
    (root / "CMU-1-Small-Region.svs").write_bytes(payload)
    monkeypatch.setitem(regions.CMU_REGION, "url", f"{url}/CMU-1-Small-Region.svs")
    monkeypatch.setitem(regions.CMU_REGION, "md5", hashlib.md5(payload).hexdigest())
    path = regions.download_cmu_region(tmp_path / "out")
    assert path.read_bytes() == payload and sorted(p.name for p in path.parent.iterdir()) == [path.name]
    monkeypatch.setitem(regions.CMU_REGION, "md5", "f" * 32)
    path.unlink()
    with pytest.raises(ValueError, match="f{32}"):
        regions.download_cmu_region(tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_manifest_json_is_what_download_reads():
    manifest = pcam.manifest()
    assert "{filename}" in manifest["url_template"]
    assert json.loads(pcam.MANIFEST.read_text()) == manifest


# ---------------------------------------------------------------- the user cache

def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HISTOLIB_CACHE", str(tmp_path / "c"))
    assert files.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("HISTOLIB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert files.cache_dir() == tmp_path / "xdg" / "histolib"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert files.cache_dir() == Path.home() / ".cache" / "histolib"


def test_key_follows_paths_sizes_times_and_params(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"1234")
    b.write_bytes(b"5678")
    key = files.files_key([a, b], "check")
    assert key == files.files_key([str(a), str(b)], "check")
    assert key != files.files_key([b, a], "check") != files.files_key([a, b], "other")
    assert key != files.files_key([a, b], "check", {"size": 224})
    os.utime(b, ns=(1_000_000_000, 1_000_000_000))
    touched = files.files_key([a, b], "check")
    assert touched != key
    b.write_bytes(b"56789")
    os.utime(b, ns=(1_000_000_000, 1_000_000_000))
    assert files.files_key([a, b], "check") != touched  # same time, other size
    with pytest.raises(FileNotFoundError):
        files.files_key([tmp_path / "gone.png"], "check")


def test_write_then_read_atomically(monkeypatch, tmp_path):
    monkeypatch.setenv("HISTOLIB_CACHE", str(tmp_path))
    assert files.cached("kind", "k" * 64) is None
    path = files.store("kind", "k" * 64, {"groups": [["a", "b"]]})
    assert path == tmp_path / "kind" / f"{'k' * 64}.json"
    assert files.cached("kind", "k" * 64) == {"groups": [["a", "b"]]}
    with pytest.raises(TypeError):
        files.store("kind", "x" * 64, {"bad": object()})
    assert sorted(p.name for p in (tmp_path / "kind").iterdir()) == [path.name]  # no temporary left
    path.write_text("{not json")
    assert files.cached("kind", "k" * 64) is None


def test_unwritable_cache_warns_and_goes_on(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("HISTOLIB_CACHE", str(blocker))
    with pytest.warns(UserWarning, match="cache not written"):
        assert files.store("kind", "k" * 64, [1]) is None


def test_arrays_round_trip(monkeypatch, tmp_path):
    import numpy as np

    monkeypatch.setenv("HISTOLIB_CACHE", str(tmp_path))
    assert files.cached_array("features", "a" * 64) is None
    values = np.arange(24, dtype=np.float16).reshape(2, 3, 4)
    path = files.store_array("features", "a" * 64, values)
    assert path.suffix == ".npy" and path.parent == tmp_path / "features"
    back = files.cached_array("features", "a" * 64)
    assert back.dtype == np.float16 and np.array_equal(back, values)


def test_reachable_false_on_closed_local_port():
    with socket.socket() as s:  # a port that was free a moment ago: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert files.reachable("127.0.0.1", port, timeout=1.0) is False


def test_reachable_true_on_listening_local_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        assert files.reachable("127.0.0.1", s.getsockname()[1], timeout=1.0) is True
