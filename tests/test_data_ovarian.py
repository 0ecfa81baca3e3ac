"""The ovarian manifest, its check, and the download that never waits on a dead network."""

import shutil
import time

import pytest

from histolib.data import ovarian


def test_manifest_ships_every_file():
    entries = ovarian.manifest()
    assert len(entries) == 498
    by_digest = {}
    for name, digest in entries.items():
        by_digest.setdefault(digest, []).append(name)
    # Two byte-identical pairs, besides the 160 augmented copies.
    assert sorted(v for v in by_digest.values() if len(v) > 1) == [
        ["Serous/p15.png", "Serous/p21.png"], ["Serous/p20.png", "Serous/p23.png"]]
    classes = {name.split("/")[0] for name in entries}
    assert classes == {"Clear_Cell", "Endometri", "Mucinous", "Non_Cancerous", "Serous"}
    assert "Non_Cancerous/4.jpg" in entries and "Serous/high grade serous 47.JPG" in entries


def test_real_folder_verifies(shared_data):
    assert ovarian.verify(shared_data / "ovarian") == 498


def test_verify_names_missing_and_changed_files(tmp_path, shared_data):
    for cls in ("Clear_Cell", "Endometri", "Mucinous", "Non_Cancerous", "Serous"):
        shutil.copytree(shared_data / "ovarian" / cls, tmp_path / cls)
    (tmp_path / "Serous" / "high grade serous 47.JPG").unlink()
    (tmp_path / "Clear_Cell" / "35.JPG").chmod(0o644)
    (tmp_path / "Clear_Cell" / "35.JPG").write_bytes(b"changed")
    with pytest.raises(ValueError, match=r"1 missing \(e.g. \['Serous/high grade serous 47.JPG'\]\); "
                                         r"1 with another SHA-256 \(e.g. \['Clear_Cell/35.JPG'\]\)"):
        ovarian.verify(tmp_path)


def test_download_offline_fails_fast_saying_where_to_put_files(tmp_path, monkeypatch):
    import socket

    calls = []

    def offline(address, timeout):
        calls.append((address, timeout))
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=f"(?s)cannot reach data.mendeley.com.*unpack it so that "
                                              f"{tmp_path / 'ov'}/Clear_Cell/35.JPG"):
        ovarian.download_ovarian(tmp_path / "ov")
    assert calls == [(("data.mendeley.com", 443), 5.0)] and time.monotonic() - started < 6
    assert not (tmp_path / "ov").exists()


def test_download_keeps_a_verified_folder_without_the_network(shared_data, monkeypatch):
    import socket

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("asked the network"))
    assert ovarian.download_ovarian(shared_data / "ovarian") == shared_data / "ovarian"


def test_unpack_finds_the_files_however_the_archive_nests_them(tmp_path, shared_data):
    import zipfile

    names = ["Clear_Cell/35.JPG", "Serous/high grade serous 47.JPG", "Non_Cancerous/4.jpg"]
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as z:
        for name in names:
            z.write(shared_data / "ovarian" / name, f"OvarianCancer/{name}")
        z.writestr("OvarianCancer/readme.txt", "not in the manifest")
    outer = tmp_path / "kztymsrjx9.zip"
    with zipfile.ZipFile(outer, "w") as z:
        z.write(inner, "Ovarian Cancer Subtypes/dataset.zip")
    ovarian._unpack(outer, tmp_path / "out")
    found = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert found == sorted(names)
    manifest = ovarian.manifest()
    assert all(ovarian.sha256sum(tmp_path / "out" / n) == manifest[n] for n in names)
