"""histolib.strategy: the choice and its reason, batch helpers, and real replicated training.

The replicated runs each need their own processes: logical CPU devices must be configured
before TensorFlow touches its devices, and MultiWorkerMirroredStrategy needs one process per
worker, each with its own TF_CONFIG.
"""

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from histolib import strategy as strategy_module
from histolib.models import build_seed_pcam_model, loss_for
from histolib.strategy import (
    choose_strategy,
    fit_replicated,
    get_strategy,
    global_batch_size,
    make_tpu_safe,
)

ROOT = Path(__file__).resolve().parents[1]

# Data, model and training shared by the subprocess scripts: a seed model at 16 px on
# 64 images whose label is a brighter centre, global batch 16 (8 per replica).
COMMON = """
import json, sys
import numpy as np
import tensorflow as tf
import keras
from histolib.models import build_seed_pcam_model, loss_for
from histolib.strategy import choose_strategy, fit_replicated, global_batch_size, make_tpu_safe

def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, 16, 16, 3)).astype("float32")
    y = (x[:, 4:12, 4:12, 0].mean(axis=(1, 2)) > 0.5).astype("int32")
    x[y == 1, 4:12, 4:12] = np.clip(x[y == 1, 4:12, 4:12] + 0.3, 0, 1)
    return x, y

def compiled_model(strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_seed_pcam_model((16, 16, 3))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss_for(model))
    return model

def dataset(strategy):
    x, y = data()
    batch = global_batch_size(8, strategy)
    return make_tpu_safe(tf.data.Dataset.from_tensor_slices((x, y)).batch(10), batch, num_examples=len(x))

def replicas_identical(model):
    return all(
        all(np.array_equal(c.numpy(), w.value.values[0].numpy()) for c in w.value.values[1:])
        for w in model.weights
    )
"""

MIRRORED = COMMON + """
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
choice = choose_strategy()  # HISTOLIB_STRATEGY=mirrored
with choice.strategy.scope():
    scoped_batch = global_batch_size(32)  # the current strategy, inside its scope
batches = {"given": global_batch_size(32, choice.strategy), "scoped": scoped_batch, "outside": global_batch_size(32),
           "dataset": int(dataset(choice.strategy).element_spec[1].shape[0])}
model = compiled_model(choice.strategy)
fit_losses = model.fit(dataset(choice.strategy), epochs=5, verbose=0).history["loss"]
fit_identical = replicas_identical(model)
model = compiled_model(choice.strategy)
loop_losses = fit_replicated(model, dataset(choice.strategy), epochs=5, strategy=choice.strategy)
print(json.dumps({
    "kind": choice.kind, "reason": choice.reason, "replicas": choice.strategy.num_replicas_in_sync,
    "components": len(model.weights[0].value.values), "fit_losses": fit_losses,
    "fit_identical": fit_identical, "loop_losses": loop_losses,
    "loop_identical": replicas_identical(model), "batches": batches,
}))
"""

WORKER = COMMON + """
choice = choose_strategy()  # auto: TF_CONFIG names two workers
model = compiled_model(choice.strategy)
losses = fit_replicated(model, dataset(choice.strategy), epochs=4, strategy=choice.strategy)
np.savez(sys.argv[1], *[w.numpy() for w in model.weights])
print(json.dumps({"kind": choice.kind, "replicas": choice.strategy.num_replicas_in_sync, "losses": losses}))
"""


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "HISTOLIB_STRATEGY")}
    return {**env, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def _last_json(text):
    return json.loads(text.strip().splitlines()[-1])


@pytest.fixture
def no_tpu(monkeypatch):
    for name in ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE", "TF_CONFIG", "HISTOLIB_STRATEGY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(strategy_module.glob, "glob", lambda pattern: [])


def test_default_strategy_here_says_why(no_tpu, caplog):
    with caplog.at_level(logging.INFO, logger="histolib.strategy"):
        choice = choose_strategy()
    assert choice.kind == "default" and choice.strategy.num_replicas_in_sync == 1
    assert "no TPU" in choice.reason and "GPU" in choice.reason
    assert "Distribution strategy: default" in caplog.text and choice.reason in caplog.text
    assert get_strategy() is tf.distribute.get_strategy()


def test_tpu_request_falls_back_with_logged_reason(no_tpu, monkeypatch, caplog):
    monkeypatch.setenv("HISTOLIB_STRATEGY", "tpu")
    with caplog.at_level(logging.INFO, logger="histolib.strategy"):
        choice = choose_strategy()
    assert choice.kind == "default" and "TPU requested, no TPU" in choice.reason
    assert "TPU strategy requested but unavailable" in caplog.text

    def broken_resolver(*args, **kwargs):
        raise ValueError("Could not find TPU fake-tpu")

    monkeypatch.setenv("TPU_NAME", "fake-tpu")
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", broken_resolver)
    choice = choose_strategy("tpu")
    assert choice.kind == "default"
    assert "$TPU_NAME" in choice.reason and "Could not find TPU fake-tpu" in choice.reason


def test_override_names_are_checked(no_tpu, monkeypatch):
    assert choose_strategy("default").reason == "requested by argument"
    monkeypatch.setenv("HISTOLIB_STRATEGY", "Default")
    assert choose_strategy().reason == "requested by $HISTOLIB_STRATEGY"
    monkeypatch.setenv("HISTOLIB_STRATEGY", "horovod")
    with pytest.raises(ValueError, match="valid: auto, tpu, mirrored, multiworker, data-parallel, default.*'horovod'"):
        choose_strategy()
    monkeypatch.delenv("HISTOLIB_STRATEGY")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        choose_strategy()


def test_global_batch_size_refuses_a_bad_per_replica_batch():
    # Its product with the replica count is checked under two replicas in
    # test_mirrored_two_cpu_replicas_train_identically (one replica here multiplies by 1).
    with pytest.raises(ValueError, match="per_replica=0"):
        global_batch_size(0)
    with pytest.raises(ValueError, match="per_replica=2.5"):
        global_batch_size(2.5)


def test_make_tpu_safe_gives_full_static_batches_in_order():
    images = np.arange(10 * 2 * 2 * 3, dtype="float32").reshape(10, 2, 2, 3)
    labels = np.arange(10, dtype="int32")
    loose = tf.data.Dataset.from_tensor_slices((images, labels)).batch(3)
    assert loose.element_spec[0].shape.as_list() == [None, 2, 2, 3]
    safe = make_tpu_safe(loose, 4, num_examples=10)
    assert safe.element_spec[0].shape.as_list() == [4, 2, 2, 3]
    assert safe.element_spec[1].shape.as_list() == [4]
    assert int(safe.cardinality()) == 2
    batches = list(safe.as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), np.arange(8))
    np.testing.assert_array_equal(batches[1][0], images[4:8])
    assert int(make_tpu_safe(loose, 4).cardinality()) == tf.data.UNKNOWN_CARDINALITY
    with pytest.raises(ValueError, match="batch_size=0"):
        make_tpu_safe(loose, 0)
    with pytest.raises(ValueError, match="num_examples=3"):
        make_tpu_safe(loose, 4, num_examples=3)
    unknown = tf.data.Dataset.from_generator(
        lambda: iter(()), output_signature=(tf.TensorSpec((None, None, None, 3)), tf.TensorSpec((None,), tf.int32))
    )
    with pytest.raises(ValueError, match="image_size"):
        make_tpu_safe(unknown, 4)


def test_fit_replicated_on_the_default_strategy_learns():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (32, 16, 16, 3)).astype("float32")
    y = (x[:, 4:12, 4:12, 0].mean(axis=(1, 2)) > 0.5).astype("int32")
    x[y == 1, 4:12, 4:12] = np.clip(x[y == 1, 4:12, 4:12] + 0.3, 0, 1)
    keras.utils.set_random_seed(0)
    model = build_seed_pcam_model((16, 16, 3))
    with pytest.raises(ValueError, match="compiled"):
        fit_replicated(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(8))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss_for(model))
    with pytest.raises(ValueError, match="make_tpu_safe"):
        fit_replicated(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(8))
    safe = make_tpu_safe(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), 8, num_examples=32)
    losses = fit_replicated(model, safe, epochs=4)
    assert len(losses) == 4 and losses[-1] < losses[0]
    # The same as model.fit from the same seed: compiled loss plus the L2 terms, per epoch.
    keras.utils.set_random_seed(0)
    reference = build_seed_pcam_model((16, 16, 3))
    reference.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss_for(reference))
    fit_losses = reference.fit(safe, epochs=4, verbose=0).history["loss"]
    np.testing.assert_allclose(losses, fit_losses, rtol=1e-4)


@pytest.mark.slow
def test_mirrored_two_cpu_replicas_train_identically(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=540,
        env=_env(HISTOLIB_STRATEGY="mirrored"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = _last_json(result.stdout)
    assert report["kind"] == "mirrored" and report["replicas"] == 2 and report["components"] == 2
    assert "2 CPU replicas" in report["reason"]
    # 32 images per replica: a global batch of 64 under the strategy, given or current; 32 outside.
    assert report["batches"] == {"given": 64, "scoped": 64, "outside": 32, "dataset": 16}
    for losses in (report["fit_losses"], report["loop_losses"]):
        assert losses[-1] < losses[0]
    assert report["fit_identical"] and report["loop_identical"]
    # The strategy.run loop does what model.fit does: same losses, same seed, same data.
    np.testing.assert_allclose(report["loop_losses"], report["fit_losses"], rtol=1e-4)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multiworker_two_processes_end_with_identical_weights(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / f"weights{index}.npz")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(TF_CONFIG=tf_config),
        ))
    try:
        outputs = [worker.communicate(timeout=540) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    reports = [_last_json(out) for out, _ in outputs]
    for report in reports:
        assert report["kind"] == "multiworker" and report["replicas"] == 2
        assert report["losses"][-1] < report["losses"][0]
    assert reports[0]["losses"] == reports[1]["losses"]
    first, second = np.load(tmp_path / "weights0.npz"), np.load(tmp_path / "weights1.npz")
    assert len(first.files) == len(build_seed_pcam_model((16, 16, 3)).weights)
    for key in first.files:
        np.testing.assert_array_equal(first[key], second[key])


def test_data_parallel_is_for_jax(no_tpu):
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
        choose_strategy("data-parallel")
    choice = choose_strategy("default")
    assert choice.replicas == 1 and choice.devices == ["cpu:0"]


@pytest.mark.parametrize("setting", ["0", "false", "1", None])
def test_auto_precision_takes_bfloat16_only_with_the_instructions_and_onednn(monkeypatch, setting):
    """Without oneDNN TensorFlow emulates bfloat16 (18x float32's CPU time for the seed model), so
    ``auto`` means float32 there even on a CPU with AVX-512 BF16; named policies pass through."""
    from histolib.provenance import has_bfloat16

    if tf.config.list_physical_devices("GPU") or tf.config.list_logical_devices("TPU"):
        pytest.skip("auto picks by accelerator here; this test is about CPUs")
    if setting is None:
        monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    else:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", setting)
    onednn = setting not in ("0", "false")
    assert strategy_module.onednn_enabled() is onednn
    expected = "mixed_bfloat16" if onednn and has_bfloat16() else "float32"
    assert strategy_module.choose_precision("auto") == expected
    assert strategy_module.choose_precision("mixed_bfloat16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="precision='bf16'"):
        strategy_module.choose_precision("bf16")


def test_auto_precision_follows_the_recorded_comparison_on_real_pcam(monkeypatch):
    """``auto`` takes bfloat16 on a CPU only while the paired comparison recorded in
    ``book/results/precision_pcam.json`` (the seed's model on real PCam, float32 against
    mixed_bfloat16 over five or more training seeds) does not show it scoring lower: this fails
    when the record or the rule changes without the other."""
    record = json.loads((ROOT / "book" / "results" / "precision_pcam.json").read_text())
    assert record["paired"]["accuracy"]["n"] >= 5 and record["onednn"]
    lower = any(record["paired"][m]["ci95"][1] < 0 for m in ("accuracy", "auc"))
    if tf.config.list_physical_devices("GPU") or tf.config.list_logical_devices("TPU"):
        pytest.skip("auto picks by accelerator here; the record is about CPUs")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    monkeypatch.setattr(strategy_module, "has_bfloat16", lambda: True)
    assert strategy_module.choose_precision("auto") == ("float32" if lower else "mixed_bfloat16")
