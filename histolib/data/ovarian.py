"""The real ovarian subtype micrographs: where they come from, how they are checked and named.

498 H&E micrographs in five class folders (``Clear_Cell`` 100, ``Endometri`` 98, ``Mucinous``
100, ``Non_Cancerous`` 100, ``Serous`` 100), published on Mendeley Data (doi 10.17632/kztymsrjx9);
read them with the spec ``folder:DIR`` (:mod:`histolib.data.folders`). The set holds 160
augmented copies of its own images (files named ``image_<class>_0_NNNN.jpg``): split it with
``group_by="near-duplicates"`` (:mod:`histolib.data.duplicates`) so no image has a copy on the
other side of a split.

`MANIFEST` (``histolib/data/ovarian.sha256``, package data) lists every file's SHA-256 as
``sha256sum`` prints it; :func:`verify` checks a folder against it and :func:`download_ovarian`
(``histolib data ovarian --out DIR``) fetches the archive, unpacks it and checks every file,
failing within seconds when offline.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import zipfile
from pathlib import Path

from histolib.files import download

MANIFEST = Path(__file__).resolve().with_name("ovarian.sha256")
"""``<sha256>  ./<class>/<file>`` per line, the 498 files as published."""

DOI = "10.17632/kztymsrjx9"
DOWNLOAD_URL = "https://data.mendeley.com/public-api/zip/kztymsrjx9/download/1"
"""Mendeley Data's "download all" archive of the dataset (version 1)."""

DISPLAY_NAMES = {"Clear_Cell": "CC", "Endometri": "EC", "Mucinous": "MC", "Serous": "HGSC+LGSC"}
"""The ovarian seed's abbreviations for the folder names (``Non_Cancerous`` keeps its name;
serous is not split into high and low grade here); use with
:func:`histolib.data.folders.display_names`."""


def manifest() -> dict[str, str]:
    """``{relative path: sha256}`` for the 498 files, paths as ``Class/file name``."""
    entries = {}
    for line in MANIFEST.read_text().splitlines():
        digest, _, name = line.partition("  ")
        entries[name.removeprefix("./")] = digest
    return entries


def sha256sum(path) -> str:
    """SHA-256 hex digest of a file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify(root) -> int:
    """Check every manifest file under ``root`` (``root/<class>/<file>``) by SHA-256.

    Returns:
        The number of files checked (498).

    Raises:
        ValueError: one line naming the missing and the changed files (first five of each).
    """
    root = Path(root)
    missing, changed = [], []
    for name, digest in manifest().items():
        path = root / name
        if not path.is_file():
            missing.append(name)
        elif sha256sum(path) != digest:
            changed.append(name)
    if missing or changed:
        parts = [f"{len(missing)} missing (e.g. {missing[:5]})"] if missing else []
        parts += [f"{len(changed)} with another SHA-256 (e.g. {changed[:5]})"] if changed else []
        raise ValueError(f"{root} does not hold the published ovarian files: {'; '.join(parts)}; "
                         f"expected {root}/<class>/<file> as listed in {MANIFEST.name}")
    return len(manifest())


def _by_hand(out: Path) -> str:
    return (f"Download the dataset by hand from https://doi.org/{DOI} (or {DOWNLOAD_URL}), unpack it "
            f"so that {out}/Clear_Cell/35.JPG and the other class folders exist, then run "
            f"'histolib data ovarian --out {out}' again to check the files")


def _unpack(archive: Path, out: Path) -> None:
    """Copy the manifest's files out of ``archive`` into ``out/<class>/<file>``, wherever the
    archive nests them (Mendeley wraps a dataset in its own folders, sometimes a zip in a zip)."""
    wanted = manifest()
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
        for inner in list(Path(tmp).rglob("*.zip")):
            with zipfile.ZipFile(inner) as z:
                z.extractall(inner.with_suffix(""))
        for path in Path(tmp).rglob("*"):
            name = f"{path.parent.name}/{path.name}"
            if path.is_file() and name in wanted:
                (out / path.parent.name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, out / name)


def download_ovarian(out_dir="data/downloads/ovarian", *, timeout: float = 60.0) -> Path:
    """Download the ovarian micrographs from Mendeley Data into ``out_dir`` and check every file.

    A folder that already passes :func:`verify` is kept as it is, without the network. Otherwise
    the archive comes through `histolib.files.download` (offline: a ``ConnectionError``
    within about five seconds saying where to put the files by hand), is unpacked into
    ``out_dir/<class>/<file>`` and removed, and every file is checked against `MANIFEST`.

    Returns:
        ``out_dir``, ready for the spec ``folder:out_dir``.

    Raises:
        ConnectionError: Mendeley Data cannot be reached, or the download fails.
        ValueError: files missing or different after unpacking (:func:`verify`'s message).
    """
    out = Path(out_dir)
    try:
        verify(out)
        return out
    except ValueError:
        pass
    archive = download(DOWNLOAD_URL, out / "kztymsrjx9.zip", timeout=timeout, by_hand=_by_hand(out))
    try:
        _unpack(archive, out)
    except zipfile.BadZipFile as err:
        raise ConnectionError(f"{DOWNLOAD_URL} did not give a zip archive ({err}): {_by_hand(out)}") from err
    finally:
        archive.unlink(missing_ok=True)
    verify(out)
    return out
