"""histolib.data._net: downloads from a real HTTP server on 127.0.0.1, checksums, atomic writes.

The server is Python's http.server in a thread, serving a temporary folder; nothing leaves the
machine. The PCam and CMU-region downloads run their real code against it.
"""

import functools
import gzip
import hashlib
import http.server
import json
import socket
import threading

import numpy as np
import pytest

from histolib import slide
from histolib.data import _net, pcam, synthetic


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
    assert _net.download(f"{url}/blob.bin", target, md5=md5) == target
    assert target.read_bytes() == payload and _net.md5sum(target) == md5
    assert sorted(p.name for p in target.parent.iterdir()) == ["blob.bin"]  # no .part left

    # A checked file is kept without asking the server (gone now).
    (root / "blob.bin").unlink()
    assert _net.download(f"{url}/blob.bin", target, md5=md5) == target


def test_download_with_the_wrong_checksum_leaves_nothing(server, tmp_path):
    root, url = server
    (root / "blob.bin").write_bytes(b"not what was published")
    target = tmp_path / "out" / "blob.bin"
    with pytest.raises(ValueError, match="expected MD5 0{32}"):
        _net.download(f"{url}/blob.bin", target, md5="0" * 32)
    assert list(target.parent.iterdir()) == []


def test_missing_file_and_closed_port_are_connection_errors(server, tmp_path):
    _, url = server
    with pytest.raises(ConnectionError, match="404.*put it there yourself"):
        _net.download(f"{url}/absent.bin", tmp_path / "a.bin", by_hand="put it there yourself")
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match=f"cannot reach 127.0.0.1:{port}"):
        _net.download(f"http://127.0.0.1:{port}/a.bin", tmp_path / "b" / "a.bin")
    assert not (tmp_path / "b").exists()


def test_atomic_file_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "record.json"
    _net.atomic_write_text(path, "old")
    with pytest.raises(RuntimeError), _net.atomic_file(path) as handle:
        handle.write("half of the new")
        raise RuntimeError("killed while writing")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_pcam_download_unpacks_and_checks(server, tmp_path, monkeypatch):
    root, url = server
    images, labels, _ = synthetic.pcam_patches(8, seed=0, split="valid")
    source = tmp_path / "source"
    plain = synthetic.write_pcam_h5(source, "valid", images, labels, slides=np.array(["s1"] * 8))
    packed = synthetic.write_pcam_h5(root, "valid", images, labels, slides=np.array(["s1"] * 8), compress=True)
    files = {}
    for h5, gz in zip(plain[:2], packed[:2]):
        files[h5.name] = {"download": gz.name, "md5": _net.md5sum(h5), "md5_gz": _net.md5sum(gz)}
    files[packed[2].name] = {"download": packed[2].name, "md5": "0" * 32, "on_mismatch": "warn"}
    manifest = {"url_template": url + "/{filename}", "files": files}
    monkeypatch.setattr(pcam, "manifest", lambda: manifest)

    with pytest.warns(UserWarning, match="meta.csv: md5"):
        paths = pcam.download_pcam(tmp_path / "pcam", splits=["valid"])
    assert [p.name for p in paths] == [h.name for h in plain]
    assert sorted(p.name for p in (tmp_path / "pcam").iterdir()) == sorted(p.name for p in paths)
    x_path, got = pcam.check_split(tmp_path / "pcam", "valid")
    assert got.tolist() == labels.tolist()

    # A damaged archive on the server: refused, and nothing of it stays.
    gz = root / files[plain[0].name]["download"]
    gz.write_bytes(gzip.compress(b"damaged"))
    files[plain[0].name]["md5"] = "1" * 32  # so the file already there no longer counts
    with pytest.raises(ValueError, match="differs from the published file"):
        pcam.download_pcam(tmp_path / "pcam2", splits=["valid"], meta=False)
    assert not any(p.name.startswith(gz.name) for p in (tmp_path / "pcam2").iterdir())


def test_cmu_region_download_from_a_local_server(server, tmp_path, monkeypatch):
    root, url = server
    payload = b"a stand-in for the 1.9 MB region" * 100
    (root / "CMU-1-Small-Region.svs").write_bytes(payload)
    monkeypatch.setitem(slide.CMU_REGION, "url", f"{url}/CMU-1-Small-Region.svs")
    monkeypatch.setitem(slide.CMU_REGION, "md5", hashlib.md5(payload).hexdigest())
    path = slide.download_cmu_region(tmp_path / "out")
    assert path.read_bytes() == payload and sorted(p.name for p in path.parent.iterdir()) == [path.name]
    monkeypatch.setitem(slide.CMU_REGION, "md5", "f" * 32)
    path.unlink()
    with pytest.raises(ValueError, match="f{32}"):
        slide.download_cmu_region(tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_manifest_json_is_what_download_reads():
    manifest = pcam.manifest()
    assert "{filename}" in manifest["url_template"]
    assert json.loads(pcam.MANIFEST.read_text()) == manifest
