"""Keras 3 on JAX, the route that works on Colab's TPU runtimes: the library's inference under
``KERAS_BACKEND=jax`` gives TensorFlow's numbers for the same weights.

Keras fixes its backend when it is first imported, so each JAX run is a subprocess; this
process (TensorFlow) makes the model and the reference numbers.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from histolib import cards, data, evaluate, saliency, slide
from histolib.models import build_model, with_augmentation

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("jax")


def run_jax(script: str, *args, devices: int = 1, timeout: int = 600) -> dict:
    """Run ``script`` with ``args`` under KERAS_BACKEND=jax on ``devices`` CPU devices; the
    script's last line of output is JSON."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                            capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def region():
    """A 128 x 192 region: pink tissue in the left half, glass on the right."""
    rng = np.random.default_rng(2)
    picture = np.clip(rng.normal(242, 4, (128, 192, 3)), 0, 255).astype(np.uint8)
    picture[:, :96] = np.clip(rng.normal([200, 110, 170], 30, (128, 96, 3)), 0, 255).astype(np.uint8)
    return picture


INFERENCE = """
import json, sys
import numpy as np, keras, tensorflow as tf
from histolib import evaluate, saliency, slide
assert keras.backend.backend() == "jax", keras.backend.backend()
saved = np.load(sys.argv[1])
model = evaluate.load_model(sys.argv[2])  # safe_mode=True
ds = tf.data.Dataset.from_tensor_slices((saved["x"], saved["y"])).batch(5)
_, plain = evaluate.predict(model, ds)
_, tta = evaluate.predict(model, ds, tta=True)
heat = slide.heatmap(model, saved["region"], stride=16, batch_size=8).probability
attention = saliency.attention_map(model, saved["x"][:3])
try:
    saliency.Explainer(model, "gradcam")
    refused = ""
except RuntimeError as error:
    refused = str(error)
print(json.dumps({"plain": plain.tolist(), "tta": tta.tolist(), "heat": np.nan_to_num(heat, nan=-1).tolist(),
                  "attention": attention.tolist(), "refused": refused}))
"""


@pytest.mark.slow
def test_inference_under_jax_matches_tensorflow(tmp_path):
    """evaluate.predict (plain and TTA), slide.heatmap and attention maps of one saved model
    (with augmentation inside it) agree across backends; Grad-CAM under JAX refuses at once."""
    keras.utils.set_random_seed(0)
    model = with_augmentation(build_model("seed_cnn+self", input_shape=(32, 32, 3)), "pcam", seed=0)
    model.save(tmp_path / "model.keras")
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (12, 32, 32, 3)).astype("float32")
    y = (np.arange(12) % 2).astype("int32")
    np.savez(tmp_path / "inputs.npz", x=x, y=y, region=region())
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)  # 5, 5, 2: the last one padded
    _, plain = evaluate.predict(model, ds)
    _, tta = evaluate.predict(model, ds, tta=True)
    heat = slide.heatmap(model, region(), stride=16, batch_size=8).probability
    attention = saliency.attention_map(model, x[:3])
    jax = run_jax(INFERENCE, tmp_path / "inputs.npz", tmp_path / "model.keras")
    np.testing.assert_allclose(jax["plain"], plain, atol=1e-5)
    np.testing.assert_allclose(jax["tta"], tta, atol=1e-5)
    assert not np.allclose(tta, plain)
    np.testing.assert_allclose(jax["heat"], np.nan_to_num(heat, nan=-1), atol=1e-5)
    assert np.isfinite(heat).sum() == 7 * 6  # 7 x 11 tiles of 32 px at stride 16; 6 columns >= 25 % tissue
    # each map is scaled to [0, 1] by its own spread, which magnifies float32 differences
    np.testing.assert_allclose(jax["attention"], attention, atol=1e-3)
    assert "tf-keras-vis" in jax["refused"] and "KERAS_BACKEND=tensorflow" in jax["refused"]



CHOICES = """
import json
from histolib.strategy import choose_strategy, global_batch_size
out = {}
for name in ("auto", "default", "data-parallel"):
    choice = choose_strategy(name)
    out[name] = {"kind": choice.kind, "replicas": choice.replicas, "devices": choice.devices,
                 "batch": global_batch_size(8, choice.strategy)}
try:
    choose_strategy("mirrored")
except ValueError as error:
    out["mirrored"] = str(error)
print(json.dumps(out))
"""


def test_strategy_choice_under_jax_uses_all_devices():
    report = run_jax(CHOICES, devices=2)
    assert report["auto"] == {"kind": "data-parallel", "replicas": 2, "devices": ["cpu:0", "cpu:1"], "batch": 16}
    assert report["data-parallel"] == report["auto"]
    assert report["default"] == {"kind": "default", "replicas": 1, "devices": ["cpu:0"], "batch": 8}
    assert "TensorFlow's" in report["mirrored"] and "Received: argument='mirrored'" in report["mirrored"]
    one = run_jax(CHOICES, devices=1)
    assert one["auto"]["kind"] == "default" and one["data-parallel"]["replicas"] == 1


DATA_PARALLEL = """
import json, sys
import numpy as np, keras, tensorflow as tf
from histolib import strategy, train
from histolib.config import TrainConfig
from histolib.models import build_seed_pcam_model

rng = np.random.default_rng(0)
x = rng.uniform(0, 1, (96, 16, 16, 3)).astype("float32")
y = (x[:, 4:12, 4:12, 0].mean(axis=(1, 2)) > 0.5).astype("int32")
def batches(lo, hi):  # global batches of 16, whatever the devices
    ds = tf.data.Dataset.from_tensor_slices((x[lo:hi], y[lo:hi])).batch(16)
    return strategy.make_tpu_safe(ds, 16, num_examples=hi - lo)
out = {}
for name in ("default", "data-parallel"):
    choice = strategy.choose_strategy(name)
    keras.utils.set_random_seed(0)
    result = train.fit(lambda: build_seed_pcam_model((16, 16, 3), centre_inputs=True), batches(0, 64), batches(64, 96),
                       TrainConfig(epochs=1, verbose=0), out_dir=f"{sys.argv[1]}/{name}", strategy=choice.strategy)
    record = json.loads((result.out_dir / "run.json").read_text())
    out[name] = {"history": result.history[0], "threshold": result.threshold["threshold"],
                 "facts": {k: record["facts"][k] for k in ("backend", "replicas", "devices")},
                 "environment": {"backend": record["environment"]["backend"],
                                 "devices": record["environment"]["machine"]["devices"]}}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_data_parallel_epoch_matches_one_device(tmp_path):
    """train.fit with keras.distribution.DataParallel over two CPU devices: one epoch's losses
    and metrics equal one device's for the same seed and global batch (16)."""
    report = run_jax(DATA_PARALLEL, tmp_path, devices=2)
    one, two = report["default"], report["data-parallel"]
    assert one["facts"] == {"backend": "jax", "replicas": 1, "devices": ["cpu:0"]}
    assert two["facts"] == {"backend": "jax", "replicas": 2, "devices": ["cpu:0", "cpu:1"]}
    assert two["environment"] == {"backend": "jax", "devices": ["cpu:0", "cpu:1"]}
    for key in ("loss", "val_loss", "accuracy", "val_accuracy", "val_auc"):
        assert two["history"][key] == pytest.approx(one["history"][key], abs=1e-5), key
    assert two["threshold"] == pytest.approx(one["threshold"], abs=1e-5)


def _histolib(*argv, devices=2):
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    result = subprocess.run([sys.executable, "-m", "histolib", *map(str, argv)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_command_line_route_on_jax(tmp_path):
    """CI's JAX route, the path chapter 5's Colab TPU cell takes (experiment.train_from_spec): train
    data-parallel over two devices with the augmentation inside the model, then evaluate with
    TTA and draw a heatmap, all under KERAS_BACKEND=jax from the command line."""
    out, spec = tmp_path / "run", "synthetic-pcam:128"  # 128 train, 16 valid, 16 test patches
    argv = ["train", "--data", spec, "--model", "seed-pcam", "--image-size", "32", "--epochs", "1",
            "--batch-size", "16", "--strategy", "data-parallel", "--augment", "pcam", "--augment-in", "model",
            "--steps-per-execution", "2", "--out", out]
    assert "best epoch 1 of 1" in _histolib(*argv)
    assert "already finished" in _histolib(*argv)  # the best model loaded back onto the two devices
    record = json.loads((out / "run.json").read_text())
    assert record["environment"]["backend"] == "jax" and record["precision"] == "float32"  # auto on a CPU under JAX
    assert record["facts"]["replicas"] == 2 and record["facts"]["devices"] == ["cpu:0", "cpu:1"]
    assert record["strategy"]["kind"] == "data-parallel" and record["config"]["train"]["augment_in"] == "model"
    assert record["config"]["train"]["steps_per_execution"] == 2
    model = evaluate.load_model(out / "best.keras")  # here, under TensorFlow
    assert model.layers[1].name == "augment" and model.get_layer("augment").augment == "pcam"

    report = tmp_path / "test.json"
    text = _histolib("evaluate", "--model", out / "best.keras", "--data", spec, "--tta", "--json", report)
    metrics = json.loads(report.read_text())
    assert metrics["n"] == 16 and metrics["tta"] and "TTA x8" in text
    ds = data.load(spec, "test", batch_size=128, image_size=32)
    y, probs = evaluate.predict(model, ds, tta=True)
    threshold = cards.read_threshold(out / "best.keras")
    here = evaluate.classification_metrics(y, probs, threshold=threshold)
    assert metrics["auc"] == pytest.approx(here["auc"], abs=1e-6) and metrics["accuracy"] == here["accuracy"]

    import tifffile

    tifffile.imwrite(tmp_path / "region.tif", region(), photometric="rgb")
    text = _histolib("heatmap", "--model", out / "best.keras", "--region", tmp_path / "region.tif",
                     "--out", tmp_path / "heat.png", "--stride", "32")
    assert "12 of 24 tiles scored" in text and (tmp_path / "heat.png").stat().st_size > 0
