"""Group keys from tables, mappings and near-duplicates, and grouped splits that keep them apart."""

import json
from pathlib import Path

import numpy as np
import pytest

from histolib import data
from histolib.data import folders, groups, synthetic


@pytest.fixture()
def folder(tmp_path):
    images, labels, _ = synthetic.pcam_patches(24, seed=3)
    synthetic.write_folder(tmp_path / "d", images, labels, ["0", "1"], names=[f"img{i:02d}" for i in range(24)])
    return tmp_path / "d"


def _owners(root, group_by):
    owners = {}
    for split in ("train", "valid", "test"):
        sel = folders.selection(root, split, fractions=(0.5, 0.25, 0.25), group_by=group_by)
        owners[split] = {Path(p).relative_to(root).as_posix() for p in sel.items}
    return owners


def test_csv_table_keeps_patients_apart(folder, tmp_path):
    files = sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*.png"))
    patient = {f: f"P{int(f[-6:-4]) % 6}" for f in files}
    table = tmp_path / "patients.csv"
    table.write_text("file,group\n" + "".join(f"{f},{patient[f]}\n" for f in files))
    owners = _owners(folder, table)
    sides = {p: {s for s, names in owners.items() if any(patient[f] == p for f in names)} for p in set(patient.values())}
    assert all(len(s) == 1 for s in sides.values()), sides
    assert sum(len(v) for v in owners.values()) == 24
    table.write_text("file,group\n" + "".join(f"{f},{patient[f]}\n" for f in files[1:]))
    with pytest.raises(ValueError, match=rf"1 of 24 files have no group, e.g. \['{files[0]}'\]"):
        folders.selection(folder, "train", group_by=table)
    (tmp_path / "bad.csv").write_text("path,patient\nx,y\n")
    with pytest.raises(ValueError, match="header naming the columns file and group"):
        groups.read_table(tmp_path / "bad.csv")


def test_groups_json_and_mapping(folder, tmp_path):
    files = sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*.png"))
    pairs = [files[i:i + 2] for i in range(0, 24, 2)]
    (tmp_path / "g.json").write_text(json.dumps({"groups": pairs}))
    keys = groups.group_keys([str(folder / f) for f in files], Path(tmp_path / "g.json"), folder)
    assert len(set(keys)) == 12 and keys[0] == keys[1] != keys[2]
    mapped = groups.group_keys([str(folder / f) for f in files], {f: f[:5] for f in files}, folder)
    assert set(mapped) == {"0/img", "1/img"}
    with pytest.raises(ValueError, match="group_by must be"):
        groups.group_keys(files, 3)


def test_near_duplicate_groups_never_on_two_sides(shared_data):
    root = shared_data / "ovarian"
    owners = {}
    for split in ("train", "valid", "test"):
        sel = folders.selection(root, split, group_by="near-duplicates")
        owners[split] = {Path(p).relative_to(root).as_posix() for p in sel.items}
    assert sum(len(v) for v in owners.values()) == 498 and set.union(*owners.values()).__len__() == 498
    from histolib.data.duplicates import folder_near_duplicates

    for group in folder_near_duplicates(root).group_paths(root):
        assert sum(any(f in names for f in group) for names in owners.values()) == 1, group
    test = data.info(f"folder:{root}", "test", group_by="near-duplicates")
    assert 35 <= sum(test["counts"]) <= 80 and min(test["counts"]) > 0
