"""The histolib command through main([...]), and once as `python -m histolib`."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from histolib import cli

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic-pcam:64"  # 64 train, 8 valid, 8 test patches, 96x96


def one_line(text):
    return len(text.strip().splitlines()) == 1 and "Traceback" not in text


def test_help_teaches(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("train", "evaluate", "heatmap", "data", "examples:"):
        assert word in out
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--augment" in out and "resumes" in out and "seed-pcam" in out


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], "required"),
        (["fly"], "invalid choice"),
        (["train", "--data", DATA, "--model", "seed-pcam", "--out", "x"], "--epochs"),
        (["train", "--data", DATA, "--model", "seed-pcam", "--epochs", "0", "--out", "x"], "positive integer"),
        (["train", "--data", DATA, "--model", "seed-pcam", "--epochs", "1", "--out", "x", "--lr", "-1"], "positive number"),
        (["train", "--data", DATA, "--model", "seed-pcam", "--epochs", "1", "--out", "x", "--fine-tune"],
         "takes no option ['freeze']"),
        (["train", "--data", DATA, "--model", "seed-pcam", "--epochs", "1", "--out", "x", "--warmup-epochs", "1"],
         "under schedule 'cosine'"),
        (["evaluate", "--model", "no-such.keras", "--data", DATA], "no such file"),
        (["evaluate", "--model", __file__, "--data", DATA, "--split", "holdout"], "invalid choice"),
        (["evaluate", "--model", __file__, "--data", DATA], "cannot load a Keras model"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(argv, expected, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert one_line(err) and expected in err


def test_misspelt_names_suggest_the_closest_in_one_line(tmp_path, capsys):
    argv = ["train", "--data", DATA, "--model", "seed-pcm", "--epochs", "1", "--out", str(tmp_path / "a")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "did you mean 'seed-pcam'?" in err and "seed-subtype-xception" in err
    assert "mil-" not in err  # the list names only what the command trains
    argv = ["train", "--data", "synthetic-pacm:64", "--model", "seed-pcam", "--epochs", "1", "--out", str(tmp_path / "b")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert one_line(err) and err.startswith("histolib train: error:") and "did you mean 'synthetic-pcam:64'?" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_bad_inputs_give_one_line_and_status_2(tmp_path, capsys):
    argv = ["train", "--data", DATA, "--model", "no-such-model", "--epochs", "1", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "no-such-model" in err and err.startswith("histolib train: error:")
    assert cli.main(["train", "--data", "nowhere:x", "--model", "seed-pcam", "--epochs", "1", "--out", str(tmp_path)]) == 2
    assert one_line(capsys.readouterr().err)


@pytest.mark.slow
def test_train_evaluate_and_heatmap(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", DATA, "--model", "seed-pcam", "--epochs", "1", "--out", str(out),
            "--batch-size", "16", "--steps-per-epoch", "2", "--precision", "float32"]
    assert cli.main(argv) == 0
    assert keras.config.dtype_policy().name == "float32"
    text = capsys.readouterr().out
    assert "best epoch 1 of 1" in text and "threshold" in text
    for name in ("best.keras", "history.csv", "threshold.json", "run.json"):
        assert (out / name).is_file()
    record = json.loads((out / "run.json").read_text())
    assert record["command"] == "histolib " + " ".join(argv)
    assert record["data"]["train_counts"] == [32, 32] and record["precision"] == "float32"
    assert cli.main(argv) == 0 and "already finished" in capsys.readouterr().out

    report = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--model", str(out / "best.keras"), "--data", DATA, "--split", "test",
                     "--json", str(report), "--bootstrap", "20"]) == 0
    metrics = json.loads(report.read_text())
    for key in ("accuracy", "precision", "recall", "f1", "auc", "balanced_accuracy", "n"):
        assert key in metrics
    assert metrics["n"] == 8 and metrics["split"] == "test" and not metrics["tta"]
    threshold = json.loads((out / "threshold.json").read_text())["threshold"]
    assert metrics["threshold"] == pytest.approx(threshold)
    assert sum(map(sum, metrics["confusion_matrix"])) == 8
    assert set(metrics["ci95"]) >= {"accuracy", "auc"}
    # The terminal gets the confusion matrix and the per-class report too, not only --json.
    printed = capsys.readouterr().out.splitlines()
    at = printed.index("confusion matrix (rows: true class, columns: predicted)")
    assert printed[at + 1].split() == ["0", "1"]
    for row, counts in zip(printed[at + 2:at + 4], metrics["confusion_matrix"]):
        assert row.split() == [row.split()[0], *map(str, counts)]
    per_class = printed[printed.index("per class") + 2].split()  # class 0's row
    assert per_class[0] == "0" and int(per_class[-1]) == metrics["classification_report"]["0"]["support"]
    # In a fresh process (the custom layers must register themselves), with TTA.
    result = subprocess.run(
        [sys.executable, "-m", "histolib", "evaluate", "--model", str(out / "best.keras"), "--data", DATA,
         "--split", "test", "--tta", "--json", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["tta"] is True and "TTA x8" in result.stdout

    # A small pink-on-white TIFF region: tissue in the left half only.
    import tifffile

    region = np.full((192, 384, 3), 245, np.uint8)
    region[:, :192] = (200, 80, 160)
    tifffile.imwrite(tmp_path / "region.tif", region, photometric="rgb")
    picture = tmp_path / "heat.png"
    capsys.readouterr()
    assert cli.main(["heatmap", "--model", str(out / "best.keras"), "--region", str(tmp_path / "region.tif"),
                     "--out", str(picture), "--stride", "96"]) == 0
    assert picture.stat().st_size > 0
    # A 2 x 4 grid of 96-pixel tiles; tissue fills the left two columns.
    assert "4 of 8 tiles scored" in capsys.readouterr().out


@pytest.mark.parametrize("dataset, host", [("cmu-region", "openslide.cs.cmu.edu"), ("pcam", "zenodo.org"),
                                           ("ovarian", "data.mendeley.com")])
def test_offline_download_fails_in_one_line(dataset, host, monkeypatch, tmp_path, capsys):
    # The real download code, on a machine whose network is down: it must fail within its
    # reachability check, say so in one line, and leave nothing behind.
    import socket

    def offline(address, timeout=None):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    assert cli.main(["data", dataset, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert one_line(err) and err.startswith("histolib data: error:")
    assert f"cannot reach {host}" in err and "offline" in err and "by hand" in err
    assert not (tmp_path / "out").exists()


def test_python_dash_m_help():
    result = subprocess.run([sys.executable, "-m", "histolib", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "usage: histolib" in result.stdout


def test_mixed_precision_applies_to_the_model_not_the_augmentation(tmp_path, capsys):
    # HED stain jitter computes in float32; under a global mixed policy it would fail.
    out = tmp_path / "run"
    argv = ["train", "--data", DATA, "--model", "seed-pcam", "--epochs", "1", "--out", str(out),
            "--batch-size", "8", "--steps-per-epoch", "1", "--validation-steps", "1",
            "--augment", "pcam", "--precision", "mixed_bfloat16"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert keras.config.dtype_policy().name == "float32"
    from histolib.evaluate import load_model

    model = load_model(out / "best.keras")
    assert model.get_layer("conv1").dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("prob").dtype_policy.name == "float32"


def test_class_weight_balanced_weights_the_loss(tmp_path, capsys):
    # synthetic-subtype is imbalanced (the seed's proportions); one step on the same first batch
    # from the same initial weights: only the class weights differ between the two runs.
    from histolib import data, train
    from histolib.runs import read_history

    common = ["--data", "synthetic-subtype:60", "--model", "seed_cnn", "--epochs", "1", "--image-size", "32",
              "--batch-size", "16", "--steps-per-epoch", "1", "--validation-steps", "1", "--precision", "float32"]
    losses = {}
    for mode in ("none", "balanced"):
        out = tmp_path / mode
        assert cli.main(["train", *common, "--out", str(out), "--class-weight", mode]) == 0, capsys.readouterr().err
        record = json.loads((out / "run.json").read_text())
        losses[mode] = read_history(out)[0]["loss"]
        weights = record["facts"]["class_weight"]
        if mode == "none":
            assert weights is None
        else:
            counts = data.info("synthetic-subtype:60", "train")["counts"]
            expected = train.balanced_class_weight(counts)
            assert weights == pytest.approx({str(k): v for k, v in expected.items()})
            assert max(weights.values()) > 1.5 * min(weights.values())  # imbalanced enough to matter
    assert losses["none"] != pytest.approx(losses["balanced"], rel=1e-3)



def test_fine_tuned_resized_classifier_on_a_cosine_schedule(tmp_path, capsys):
    # The recipe's options on a small scale: the model keeps the data's 96-pixel input, resizes
    # inside, and the learning rate follows the cosine schedule (2 steps per epoch, 2 epochs).
    out = tmp_path / "run"
    argv = ["train", "--data", DATA, "--model", "mobilenet_025", "--weights", "none", "--fine-tune",
            "--backbone-size", "112", "--schedule", "cosine", "--warmup-epochs", "0.5", "--lr", "0.01",
            "--epochs", "2", "--batch-size", "16", "--steps-per-epoch", "2", "--validation-steps", "1",
            "--precision", "float32", "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["model"]["options"] == {"freeze": False, "backbone_size": 112}
    assert record["config"]["train"]["schedule"] == "cosine" and record["config"]["train"]["warmup_epochs"] == 0.5
    from histolib import train
    from histolib.evaluate import load_model
    from histolib.runs import read_history

    model = load_model(out / "best.keras")
    assert model.input_shape == (None, 96, 96, 3) and model.get_layer("resize").output.shape[1] == 112
    rates = [row["learning_rate"] for row in read_history(out)]
    expected = train.learning_rate_schedule("cosine", 0.01, total_steps=4, warmup_steps=1)
    assert rates == pytest.approx([float(expected(2)), 0.0], abs=1e-7)


@pytest.mark.parametrize("data, model, expected", [
    ("folder:{tmp}/absent", "seed-pcam", "image folder not found"),
    (DATA, "seed-pcm", "did you mean 'seed-pcam'?"),
])
def test_a_failing_command_writes_one_line_to_stderr(data, model, expected, tmp_path):
    # A newcomer's shell: TF_CPP_MIN_LOG_LEVEL unset, oneDNN on. TensorFlow's import-time notices
    # (absl's banner, the oneDNN and CPU-instructions notices) must not come before the error.
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    result = subprocess.run(
        [sys.executable, "-m", "histolib", "train", "--data", data.format(tmp=tmp_path), "--model", model,
         "--epochs", "1", "--out", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**env, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("histolib train: error:"), result.stderr
    assert expected in result.stderr and not (tmp_path / "run").exists()


def test_tensorflow_notices_are_held_to_the_log_level():
    from histolib._tf_notices import _kept

    caught = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
              b"I0000 00:00:1795890794.527405    9284 port.cc:153] oneDNN custom operations are on.\n"
              b"I0000 00:00:1795890794.757621    9284 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\n"
              b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.\n"
              b"W0000 00:00:1795890794.8 9284 gpu_device.cc:2] Cannot dlopen some GPU libraries.\n"
              b"2025-09-17 14:44:05.176998: E external/cuda_fft.cc:467] Unable to register cuFFT factory\n")
    assert _kept(caught, 0) == caught
    assert _kept(caught, 1) == b"".join(caught.splitlines(keepends=True)[4:])
    assert _kept(caught, 2) == caught.splitlines(keepends=True)[5]
    assert _kept(caught, 3) == b""
    assert _kept(b"a line of no record\n", 3) == b"a line of no record\n"


def test_train_summary_says_when_the_run_stopped_early(tmp_path, capsys):
    # EarlyStopping is silent in fit, so the command's summary says it.
    from histolib.train import FitResult

    result = FitResult(model=None, history=[{"val_loss": 0.4}, {"val_loss": 0.5}, {"val_loss": 0.6}],
                       threshold={"threshold": 0.41234, "method": "youden"}, out_dir=tmp_path, best_epoch=1,
                       epochs_done=3, resumed_from=0, already_finished=False, stopped_early=True)
    cli._print_fit(result, tmp_path)
    assert "best epoch 1 of 3 (stopped early): val_loss 0.4000" in capsys.readouterr().out
    cli._print_fit(dataclasses.replace(result, stopped_early=False, epochs_done=3), tmp_path)
    assert "best epoch 1 of 3: val_loss 0.4000" in capsys.readouterr().out


def test_multiworker_is_refused_before_any_data_is_read(tmp_path):
    # The data folder does not exist: a refusal after loading would complain about it instead.
    result = subprocess.run(
        [sys.executable, "-m", "histolib", "train", "--data", f"folder:{tmp_path / 'absent'}", "--model",
         "seed-pcam", "--epochs", "1", "--out", str(tmp_path / "run"), "--strategy", "multiworker"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "multiworker is not supported" in result.stderr and "absent" not in result.stderr


def test_evaluate_notes_a_threshold_chosen_with_tta(tmp_path, capsys):
    from histolib.models import build_seed_pcam_model

    build_seed_pcam_model().save(tmp_path / "m.keras")
    (tmp_path / "threshold.json").write_text(json.dumps({"threshold": 0.4, "tta": True}))  # as a run writes it
    argv = ["evaluate", "--model", str(tmp_path / "m.keras"), "--data", DATA, "--split", "test"]
    assert cli.main(argv) == 0
    assert "chosen with 8-view TTA; score it with --tta" in capsys.readouterr().err
    assert cli.main([*argv, "--tta"]) == 0
    captured = capsys.readouterr()
    assert "score it with --tta" not in captured.err and "threshold 0.4, TTA x8" in captured.out


PRETEND_NO_JAX = (  # JAX is installed here; hide it the way a bare environment lacks it
    "import importlib.util, runpy, sys; real = importlib.util.find_spec; "
    "importlib.util.find_spec = lambda name, *a: None if name == 'jax' else real(name, *a); ")


def test_keras_backend_jax_without_jax_is_one_line_naming_the_extra(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)}
    command = subprocess.run(
        [sys.executable, "-c", PRETEND_NO_JAX + "sys.argv = ['histolib', 'train', '--help']; "
         "runpy.run_module('histolib', run_name='__main__')"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert command.returncode == 2
    assert command.stderr.count("\n") == 1 and "pip install 'histolib[jax]'" in command.stderr, command.stderr
    library = subprocess.run([sys.executable, "-c", PRETEND_NO_JAX + "import histolib"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300, env=env)
    assert library.returncode == 1 and "ImportError: KERAS_BACKEND=jax, but JAX is not installed" in library.stderr


def test_weights_dir_must_be_a_directory_and_sets_where_weights_are_found(tmp_path, capsys, monkeypatch):
    """--weights-dir DIR: ImageNet files are looked for in DIR first ($HISTOLIB_WEIGHTS_DIR for the
    run); a path that is no directory ends in one line, exit 2."""
    import os

    base = ["train", "--data", DATA, "--model", "seed-pcam", "--epochs", "1", "--out", str(tmp_path / "run")]
    assert cli.main([*base, "--weights-dir", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "--weights-dir" in err and "is not a directory" in err and err.count("\n") == 1
    monkeypatch.setenv("HISTOLIB_WEIGHTS_DIR", str(tmp_path / "before"))  # restored after the test
    monkeypatch.setattr(cli.experiment, "train_from_spec", lambda config, out_dir: None)  # stop before training
    with pytest.raises(AttributeError):  # _print_fit on the stand-in's None: the options were read by then
        cli.main([*base, "--weights-dir", str(tmp_path)])
    assert os.environ["HISTOLIB_WEIGHTS_DIR"] == str(tmp_path.resolve())
