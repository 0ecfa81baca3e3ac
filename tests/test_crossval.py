"""histolib cv and the tiles route, on image folders the tests write: images of many sizes scored
whole (tiles at native resolution), grouped folds, resuming, and the saved model scored by evaluate."""

import csv
import json
import shutil

import numpy as np
import pytest

from histolib import cli

# A tile classifier small enough for a test: random MobileNet 0.25 on 32-px tiles, last block only.
TILES = ["--model", "tiles-mobilenet_025+meanmax", "--weights", "none", "--model-option", "tile=32",
         "--model-option", "stride=16", "--model-option", "layers=last", "--model-option", "dihedral=false",
         "--precision", "float32", "--batch-size", "8"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """``root/<class>/<file>.png`` of three classes told apart by colour, in sizes from 24 x 30 to
    70 x 90 (smaller than a tile included), and ``groups.csv`` pairing the images two by two."""
    import cv2

    root = tmp_path_factory.mktemp("tiled")
    rng = np.random.default_rng(0)
    rows = ["file,group"]
    for label, name in enumerate(["a", "b", "c"]):
        (root / "data" / name).mkdir(parents=True)
        for i in range(10):
            h, w = int(rng.integers(24, 71)), int(rng.integers(30, 91))
            image = rng.integers(0, 90, (h, w, 3)).astype(np.uint8)
            image[..., label] += 120
            cv2.imwrite(str(root / "data" / name / f"{name}{i}.png"), image)
            rows.append(f"{name}/{name}{i}.png,{name}-pair{i // 2}")
    (root / "groups.csv").write_text("\n".join(rows) + "\n")
    return root


def _oof(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_cross_validation_keeps_groups_apart_scores_every_image_once_and_resumes(folder, tmp_path, capsys):
    out = tmp_path / "cv"
    argv = ["cv", "--data", f"folder:{folder / 'data'}", "--groups", str(folder / "groups.csv"), "--folds", "3",
            "--repeats", "2", "--epochs", "4", "--lr", "0.01", *TILES, "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert printed.count("repeat 2/2 fold") == 3 and "macro F1" in printed
    rows = _oof(out / "oof.csv")
    assert list(rows[0]) == ["file", "group", "repeat", "fold", "label", "a", "b", "c"]
    for repeat in ("0", "1"):
        mine = [r for r in rows if r["repeat"] == repeat]
        assert sorted(r["file"] for r in mine) == sorted(f"{c}/{c}{i}.png" for c in "abc" for i in range(10))
        fold_of = {}
        for r in mine:  # a group never spans two folds of one repeat
            assert fold_of.setdefault(r["group"], r["fold"]) == r["fold"]
    for r in rows:
        assert r["label"] == r["file"].split("/")[0]
        assert sum(float(r[c]) for c in "abc") == pytest.approx(1.0, abs=1e-4)
    record = json.loads((out / "cv.json").read_text())
    assert record["command"].startswith("histolib cv") and len(record["per_fold"]) == 6
    summary = record["summary"]
    assert set(summary["mean"]) == {"macro_f1", "accuracy", "balanced_accuracy", "auc"}
    assert np.array(summary["confusion_matrix"]).sum() == 60  # every image once per repeat
    low, high = summary["bootstrap_macro_f1_95"]
    assert 0.0 <= low <= summary["pooled"]["macro_f1"] <= high <= 1.0

    # A killed cross-validation goes on from its last finished fold: the others are not trained again.
    (out / "folds" / "r1-f2.json").unlink()
    shutil.rmtree(out / "runs" / "r1-f2")
    kept = (out / "folds" / "r0-f0.json").stat().st_mtime_ns
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.count("(") >= 6
    assert (out / "folds" / "r0-f0.json").stat().st_mtime_ns == kept
    again = {(r["file"], r["repeat"]): r for r in _oof(out / "oof.csv")}
    for r in rows:  # the same folds; the retrained fold gives the same probabilities
        twin = again[(r["file"], r["repeat"])]
        assert twin["fold"] == r["fold"] and float(twin["a"]) == pytest.approx(float(r["a"]), abs=1e-3)


def test_cross_validation_refuses_fixed_split_folders_in_one_line(tmp_path, capsys):
    from histolib.data import synthetic

    images, labels, _ = synthetic.pcam_patches(8, seed=0, split="train")
    synthetic.write_folder(tmp_path / "fixed", images, labels, ["0", "1"], split="train", fmt="png")
    argv = ["cv", "--data", f"folder:{tmp_path / 'fixed'}", "--folds", "2", "--repeats", "1", "--epochs", "1",
            *TILES, "--out", str(tmp_path / "cv")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fixed split folders" in err


@pytest.mark.slow
def test_a_tile_classifier_trains_on_cached_tiles_and_evaluate_scores_whole_images(folder, tmp_path, capsys):
    """The tiles route (cached tile features, the head trained on them) and the saved model
    (images of any size in) agree: evaluate on the test split gives the head's predictions."""
    from histolib import evaluate, tiles
    from histolib.config import DataConfig

    out = tmp_path / "run"
    argv = ["train", "--data", f"folder:{folder / 'data'}", "--split-seed", "1", "--epochs", "3", *TILES,
            "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    record = json.loads((out / "run.json").read_text())
    assert record["route"]["name"] == "tiles" and record["tiles"]["stride"] == 16
    report = tmp_path / "test.json"
    assert cli.main(["evaluate", "--model", str(out / "best.keras"), "--data", f"folder:{folder / 'data'}",
                     "--json", str(report)]) == 0
    scored = json.loads(report.read_text())
    model = evaluate.load_model(out / "best.keras")
    source = DataConfig(spec=f"folder:{folder / 'data'}", split_seed=1).source()
    y = source.rows("test")[1]
    cached = tiles.predict_split(model, source, "test")
    assert scored["n"] == len(y) == 3
    assert scored["accuracy"] == pytest.approx(evaluate.classification_metrics(y, cached)["accuracy"])


def test_solver_lbfgs_fits_the_linear_head_as_scikit_learns_logistic_regression(folder, tmp_path, capsys):
    """--solver lbfgs: the saved head's probabilities are scikit-learn's LogisticRegression with
    the recorded C, fitted on the train and valid bags' pooled, standardised vectors; a head that
    is not linear, and a model off the tiles route, are refused in one line."""
    from sklearn.linear_model import LogisticRegression

    from histolib import evaluate, tiles
    from histolib.config import DataConfig
    from histolib.models.tiles import tile_settings

    out = tmp_path / "run"
    argv = ["train", "--data", f"folder:{folder / 'data'}", "--split-seed", "1", "--solver", "lbfgs", "--epochs", "1", *TILES,
            "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    choice = json.loads((out / "run.json").read_text())["solver"]
    assert choice["C"] in tiles.C_GRID and len(choice["valid_log_loss"]) == len(tiles.C_GRID)
    assert choice["valid_log_loss"][f"{choice['C']:g}"] == min(choice["valid_log_loss"].values())
    head = tile_settings(evaluate.load_model(out / "best.keras"))["head"]
    source = DataConfig(spec=f"folder:{folder / 'data'}", split_seed=1).source()
    settings = tile_settings(evaluate.load_model(out / "best.keras"))
    parts = [(b, tiles.split_features(b, settings)) for b in (tiles.split_bags(source, s, settings)
                                                              for s in ("train", "valid", "test"))]
    pooled = [tiles.pooled_features(head, *part) for part in parts]
    reference = LogisticRegression(C=choice["C"], max_iter=5000).fit(
        np.concatenate(pooled[:2]), np.concatenate([parts[0][0].labels, parts[1][0].labels]))
    ours = evaluate.predict(head, tiles.dataset(*parts[2], batch_size=8))[1]
    np.testing.assert_allclose(ours, reference.predict_proba(pooled[2]), atol=1e-4)
    plain = ["--model", "mobilenet_025", "--weights", "none", "--precision", "float32"]
    attention_only = [*argv[:-2], "--model", "tiles-mobilenet_025+gated", "--model-option", "embedding=0",
                      "--model-option", "dropout=0"]  # no embedding, but an attention lbfgs would leave untrained
    for bad in ([*argv[:-2], "--model-option", "embedding=8"], attention_only, [*argv[:9], *plain]):
        assert cli.main([*bad, "--out", str(tmp_path / "bad")]) == 2
        assert "solver 'lbfgs' fits" in capsys.readouterr().err


def test_pooled_features_are_float32_under_mixed_bfloat16():
    """The default precision on a bfloat16 CPU is mixed_bfloat16, where a head computes in
    bfloat16; scikit-learn cannot read bfloat16 arrays, so the pooled vectors come back as float32
    (the CLI's `--solver lbfgs` failed on them before)."""
    import keras

    from histolib import tiles
    from histolib.data.bags import Bags
    from histolib.models import build_mil_classifier

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        head = build_mil_classifier(4, pooling="meanmax", num_classes=3, embedding=None, dropout=0.0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    bags = Bags(sources=np.array(["a"] * 5), boxes=np.zeros((5, 4), int), bag=np.array([0, 0, 1, 1, 1]),
                labels=np.array([0, 2]), tile_labels=np.full(5, -1), groups=np.array(["g0", "g1"]),
                class_names=("a", "b", "c"))
    features = np.arange(20, dtype=np.float32).reshape(5, 4)
    pooled = tiles.pooled_features(head, bags, features)
    assert pooled.dtype == np.float32 and pooled.shape == (2, 8)
    np.testing.assert_allclose(pooled[1, :4], features[2:].mean(axis=0), rtol=1e-2)  # bfloat16's 3 digits
