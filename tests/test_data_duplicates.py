"""Near-duplicate groups on copies the tests make with known transformations of real tissue."""

import json
import warnings
from itertools import combinations

import numpy as np
import pytest

from histolib.data import duplicates

cv2 = pytest.importorskip("cv2")

N_FIELDS = 8
FIELD = (360, 480)  # (h, w) pixels of each distinct field of view


def _fields(region, n, size):
    """The ``n`` tissue-richest non-overlapping windows of ``region`` (distinct fields of view)."""
    h, w = size
    tiles = [(r, c) for r in range(0, region.shape[0] - h + 1, h) for c in range(0, region.shape[1] - w + 1, w)]
    saturation = cv2.cvtColor(region, cv2.COLOR_RGB2HSV)[..., 1]
    tissue = [float((saturation[r:r + h, c:c + w] > 40).mean()) for r, c in tiles]
    chosen = sorted(np.argsort(tissue)[::-1][:n])
    return [region[tiles[i][0]:tiles[i][0] + h, tiles[i][1]:tiles[i][1] + w].copy() for i in chosen]


def _affine(image, angle=0.0, scale=1.0, shift=(0, 0)):
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    matrix[:, 2] += shift
    return cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)


def _recolour(image, hue=12, saturation=0.7, value=1.15):
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + hue) % 180
    hsv[..., 1] *= saturation
    hsv[..., 2] *= value
    return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)


def _jpeg(image, quality):
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]


TRANSFORMS = {
    "rotated": lambda x: _affine(x, angle=37),
    "mirrored": lambda x: np.ascontiguousarray(np.rot90(x[:, ::-1])),
    "zoomed": lambda x: _affine(x, scale=1.4),
    "shifted": lambda x: _affine(x, shift=(70, -45)),
    "recoloured": _recolour,
    "reencoded": lambda x: _jpeg(x, 40),
    "stretched": lambda x: cv2.resize(x, None, fx=1.5, fy=1.0, interpolation=cv2.INTER_AREA),
    "squeezed": lambda x: cv2.resize(x, None, fx=1.0, fy=1 / 1.5, interpolation=cv2.INTER_AREA),
    "everything": lambda x: _jpeg(_recolour(_affine(x[::-1], angle=-20, scale=0.85, shift=(20, 10)), -8, 1.2, 0.9), 70),
}


@pytest.fixture(scope="module")
def copies(tmp_path_factory, shared_data):
    import tifffile

    region = tifffile.imread(shared_data / "he-region" / "CMU-1-Small-Region.svs", key=0)
    root = tmp_path_factory.mktemp("copies")
    paths, source = [], []
    for f, field in enumerate(_fields(np.asarray(region)[..., :3], N_FIELDS, FIELD)):
        for name, transform in {"original": lambda x: x, **TRANSFORMS}.items():
            path = root / f"field{f}_{name}.png"
            cv2.imwrite(str(path), transform(field)[..., ::-1])
            paths.append(str(path))
            source.append(f)
    return root, paths, np.array(source)


def test_copies_grouped_and_fields_kept_apart(copies):
    root, paths, source = copies
    found = duplicates.find_near_duplicates(paths, use_cache=False)
    keys = found.keys()
    same = [(i, j) for i, j in combinations(range(len(paths)), 2) if source[i] == source[j]]
    recall = np.mean([keys[i] == keys[j] for i, j in same])
    merged = [sorted({int(source[i]) for i in g}) for g in found.groups if len({source[i] for i in g}) > 1]
    missed = sorted({paths[j].rsplit("/", 1)[1] for i, j in same if keys[i] != keys[j]})
    assert recall >= 0.95, f"pair recall {recall:.3f}; copies left out: {missed}"
    assert merged == [], f"distinct fields merged: {merged}"
    assert sorted(i for g in found.groups for i in g) == list(range(len(paths)))  # each file once
    assert found.pairs.shape[1] == 4 and (found.pairs[:, 2] >= duplicates.SETTINGS["min_inliers"]).all()


def test_groups_json_cached_and_unreadable_files_left_out(copies, tmp_path, monkeypatch):
    root, paths, _ = copies
    monkeypatch.setenv("HISTOLIB_CACHE", str(tmp_path / "cache"))
    subset = [p for p in paths if "field0_" in p or "field1_" in p]
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    with pytest.warns(UserWarning, match="1 unreadable file"):
        first = duplicates.find_near_duplicates([*subset, str(bad)])
    assert not first.cached and first.skipped == [(str(bad), "not an image, starts with b'not an i'")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = duplicates.find_near_duplicates([*subset, str(bad)])
    assert again.cached and again.groups == first.groups
    assert np.array_equal(again.pairs, first.pairs)
    out = duplicates.write_groups(first, tmp_path / "groups.json", root)
    written = json.loads(out.read_text())
    assert sorted(len(g) for g in written["groups"]) == [10, 10]
    assert written["groups"][0][0] == "field0_original.png"  # relative to the data root
    mapping = duplicates.read_groups(out)
    assert mapping["field1_zoomed.png"] == mapping["field1_original.png"] != mapping["field0_original.png"]


def test_unknown_setting_named():
    with pytest.raises(ValueError, match=r"unknown near-duplicate settings \['min_inlier'\]"):
        duplicates.find_near_duplicates([], settings={"min_inlier": 3})


def test_real_ovarian_copies_grouped(shared_data):
    """The dataset's augmented Endometri copies join their originals; Serous p15/p21 are one file."""
    root = shared_data / "ovarian"
    found = duplicates.folder_near_duplicates(root)
    groups = found.group_paths(root)
    endometri = [g for g in groups if any(p.startswith("Endometri/") for p in g)]
    copies = [p for g in endometri for p in g if "image_edo_0_" in p]
    assert len(copies) == 84 and all(len(g) > 1 for g in endometri)
    assert 10 <= len(endometri) <= 14
    assert ["Serous/p15.png", "Serous/p21.png"] in groups and ["Serous/p20.png", "Serous/p23.png"] in groups
    assert len(found.paths) == 498 and sorted(i for g in found.groups for i in g) == list(range(498))
