"""The command on real folders: files checked before any model, one-line errors, the split a model
was trained on reused by evaluate, near-duplicate groups, and training on cached backbone features."""

import json
import os

import numpy as np
import pytest

from histolib import cli
from histolib.data import images, synthetic


def one_line(text):
    return len(text.strip().splitlines()) == 1 and "Traceback" not in text


@pytest.fixture()
def folder(tmp_path):
    """48 synthetic 96x96 patches in two class folders, no split folders."""
    pictures, labels, _ = synthetic.pcam_patches(48, seed=4)
    return synthetic.write_folder(tmp_path / "data", pictures, labels, ["0", "1"], fmt="jpg")


TRAIN = ["--model", "seed_cnn", "--epochs", "1", "--batch-size", "16", "--precision", "float32", "--weights", "none"]


def test_unreadable_files_stop_before_any_model_and_leave_no_run_folder(folder, tmp_path, monkeypatch, capsys):
    from histolib import models

    monkeypatch.setattr(models, "build_model", lambda *a, **k: pytest.fail("a model was built first"))
    victims = sorted(folder.glob("*/*.jpg"))[:2]
    victims[0].write_bytes(victims[0].read_bytes()[:200])  # truncated JPEG
    (folder / "1" / "notes.png").write_text("a text file named .png")
    out = tmp_path / "run"
    assert cli.main(["train", "--data", f"folder:{folder}", *TRAIN, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and err.startswith(f"histolib train: error: 2 of 49 files under {folder} cannot be read")
    assert f"{victims[0]} (truncated JPEG" in err and "notes.png (not an image" in err
    assert not out.exists()


def test_file_that_fails_mid_run_ends_in_one_line_and_a_failed_record(folder, tmp_path, monkeypatch, capsys):
    victim = sorted(folder.glob("1/*.jpg"))[-1]
    victim.write_text("changed after the folder check")

    def passed(paths, **kwargs):  # as if the check ran before the file changed
        paths = np.asarray(paths, dtype=str)
        return images.FileCheck(paths, np.full((len(paths), 2), 96), [], True)

    monkeypatch.setattr(images, "check_files", passed)
    out = tmp_path / "run"
    assert cli.main(["train", "--data", f"folder:{folder}", *TRAIN, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and f"{victim} no longer reads as an image" in err
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "failed" and victim.name in record["error"]


@pytest.mark.slow
def test_evaluate_scores_the_model_on_its_own_test_split(folder, tmp_path, capsys):
    files = sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*.jpg"))
    table = tmp_path / "patients.csv"
    table.write_text("file,group\n" + "".join(f"{f},P{i // 4}\n" for i, f in enumerate(files)))
    out = tmp_path / "run"
    argv = ["train", "--data", f"folder:{folder}", *TRAIN, "--seed", "3", "--groups", str(table),
            "--features", "off", "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    data = json.loads((out / "run.json").read_text())["config"]["data"]
    assert (data["split_seed"], data["groups"], data["oversample"]) == (3, str(table.resolve()), None)
    assert data["split_version"] == 2
    report = tmp_path / "test.json"
    evaluate = ["evaluate", "--model", str(out / "best.keras"), "--data", f"folder:{folder}", "--json", str(report)]
    assert cli.main(evaluate) == 0
    metrics = json.loads(report.read_text())
    assert metrics["split_settings"] == {"split_seed": 3, "groups": str(table.resolve()), "oversample": None,
                                         "from": str(out / "run.json")}
    from histolib import data as hdata
    from pathlib import Path

    test_count = sum(hdata.info(f"folder:{folder}", "test", seed=3, group_by=Path(table))["counts"])
    assert metrics["n"] == test_count
    capsys.readouterr()
    assert cli.main([*evaluate, "--split-seed", "0"]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "--split-seed 0 disagrees with" in err and "split_seed 3" in err
    assert cli.main([*evaluate, "--groups", "near-duplicates"]) == 2
    os.replace(out / "best.keras", tmp_path / "alone.keras")  # no record beside it: refused without a split seed
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", str(tmp_path / "alone.keras"), "--data", f"folder:{folder}"]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "no run.json or model card" in err and "--split-seed" in err
    assert cli.main(["evaluate", "--model", str(tmp_path / "alone.keras"), "--data", f"folder:{folder}",
                     "--split-seed", "3", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["split_settings"]["from"] == "options"


@pytest.fixture()
def copies(tmp_path, shared_data):
    """Two distinct fields of the real CMU region, each with a rotated and a mirrored copy."""
    import cv2
    import tifffile

    region = np.asarray(tifffile.imread(shared_data / "he-region" / "CMU-1-Small-Region.svs", key=0))[..., :3]
    root = tmp_path / "copies"
    for name, (r, c) in {"a": (400, 600), "b": (1300, 1900)}.items():
        field = region[r:r + 300, c:c + 400]
        (root / "x").mkdir(parents=True, exist_ok=True)
        turn = cv2.getRotationMatrix2D((200, 150), 25, 1.0)
        for suffix, image in {"": field, "_rot": cv2.warpAffine(field, turn, (400, 300), borderMode=cv2.BORDER_REPLICATE),
                              "_flip": np.ascontiguousarray(field[:, ::-1])}.items():
            cv2.imwrite(str(root / "x" / f"{name}{suffix}.png"), image[..., ::-1])
    return root


def test_duplicates_command_writes_the_groups(copies, tmp_path, capsys):
    out = tmp_path / "groups.json"
    assert cli.main(["duplicates", "--data", f"folder:{copies}", "--out", str(out)]) == 0
    assert "6 files in 2 groups (2 of two or more, holding 6 files" in capsys.readouterr().out
    groups = json.loads(out.read_text())["groups"]
    assert sorted(map(sorted, groups)) == [["x/a.png", "x/a_flip.png", "x/a_rot.png"],
                                           ["x/b.png", "x/b_flip.png", "x/b_rot.png"]]
    assert cli.main(["duplicates", "--data", f"folder:{copies}", "--out", str(out)]) == 0
    assert "from the cache" in capsys.readouterr().out
    assert cli.main(["duplicates", "--data", "synthetic-pcam", "--out", str(out)]) == 2
    assert "folder:DIR or kaggle:DIR" in capsys.readouterr().err


@pytest.mark.slow
def test_frozen_imagenet_backbone_trains_on_cached_features(folder, tmp_path, shared_data, monkeypatch, capsys):
    weights = shared_data.parent / "weights"
    if not (weights / "mobilenet_2_5_224_tf_no_top.h5").is_file():
        pytest.skip(f"ImageNet weights of mobilenet_025 not found in {weights}")
    monkeypatch.setenv("HISTOLIB_WEIGHTS_DIR", str(weights))
    out = tmp_path / "run"
    argv = ["train", "--data", f"folder:{folder}", "--model", "mobilenet_025+thresholded", "--weights", "imagenet",
            "--epochs", "2", "--batch-size", "16", "--precision", "float32", "--augment", "subtype", "--views", "3",
            "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    record = json.loads((out / "run.json").read_text())
    assert record["features"]["train_views"] == 3 and record["features"]["shape"] == [9, 256]
    assert record["facts"]["model_name"] == "mobilenet_025_thresholded_head"
    from histolib import evaluate

    model = evaluate.load_model(out / "best.keras")  # the whole model, images in
    assert tuple(model.inputs[0].shape[1:]) == (96, 96, 3) and model.get_layer("attention") is not None
    assert cli.main(["evaluate", "--model", str(out / "best.keras"), "--data", f"folder:{folder}"]) == 0
