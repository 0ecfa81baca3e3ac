"""histolib.train.fit: outputs, thresholds, run records, refusals, and resuming after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from histolib import train
from histolib.config import RunConfig, TrainConfig
from histolib.runs import read_history

ROOT = Path(__file__).resolve().parents[1]


def tiny_data(n=64, seed=0, batch=8):
    """8x8 images whose label is whether the red channel's top-left quarter is bright."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 3)).astype("float32")
    y = (x[:, :4, :4, 0].mean(axis=(1, 2)) > 0.5).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch), x, y


def tiny_model(units=1):
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    activation = "sigmoid" if units == 1 else "softmax"
    return keras.Model(inputs, keras.layers.Dense(units, activation=activation)(h))


def test_fit_writes_outputs_and_refuses_to_retrain(tmp_path, capsys):
    train_ds, _, _ = tiny_data(seed=0)
    val_ds, _, y_val = tiny_data(n=32, seed=1)
    out = tmp_path / "run"
    config = TrainConfig(epochs=3, learning_rate=0.01, patience=5, verbose=0)
    result = train.fit(tiny_model, train_ds, val_ds, RunConfig(train=config, command="histolib train --test"),
                       out_dir=out)
    for name in ("best.keras", "history.csv", "threshold.json", "run.json"):
        assert (out / name).is_file(), name
    history = read_history(out)
    assert [row["epoch"] for row in history] == [0, 1, 2]
    best = int(np.argmin([row["val_loss"] for row in history])) + 1
    assert result.best_epoch == best
    # The returned model holds the best epoch's weights: its val_loss is the logged minimum.
    loss = result.model.evaluate(val_ds, verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(history[best - 1]["val_loss"], rel=1e-5)

    threshold = json.loads((out / "threshold.json").read_text())
    assert threshold["method"] in ("youden_j", "default") and 0 <= threshold["threshold"] <= 1
    assert threshold["n"] == len(y_val)

    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and record["epochs_done"] == 3
    assert record["command"] == "histolib train --test" and record["seed"] == 0
    assert RunConfig.from_json(record["config"]) == RunConfig(train=config, command="histolib train --test")
    assert record["environment"]["packages"]["keras"] == keras.__version__
    assert "cpu" in record["environment"]["machine"] and record["wall_s"] > 0

    capsys.readouterr()
    again = train.fit(tiny_model, train_ds, val_ds, config, out_dir=out)
    assert again.already_finished and "already finished" in capsys.readouterr().out
    assert len(read_history(out)) == 3

    with pytest.raises(ValueError, match=r"train.learning_rate: 0.01 there, 0.1 now"):
        train.fit(tiny_model, train_ds, val_ds, TrainConfig(epochs=3, learning_rate=0.1, patience=5, verbose=0),
                  out_dir=out)

    extended = train.fit(tiny_model, train_ds, val_ds, TrainConfig(epochs=4, learning_rate=0.01, patience=5, verbose=0),
                         out_dir=out)
    assert extended.resumed_from == 3 and extended.epochs_done == 4
    assert [row["epoch"] for row in read_history(out)] == [0, 1, 2, 3]
    assert len(json.loads((out / "run.json").read_text())["sessions"]) == 2  # the "already finished" call trains nothing


def test_fit_shows_progress_without_keras_restore_chatter(tmp_path, capsys):
    # EarlyStopping(restore_best_weights=True, verbose=1) ends every run with "Restoring model
    # weights from the end of the best epoch" (36 such lines in chapter 6's outputs).
    train_ds, _, _ = tiny_data()
    result = train.fit(tiny_model, train_ds, train_ds, TrainConfig(epochs=2, patience=5, verbose=2), out_dir=tmp_path)
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "val_loss" in out and result.best_epoch in (1, 2)
    assert "Restoring model weights" not in out and "early stopping" not in out


def test_fit_without_checkpoints_keeps_best_weights_and_writes_no_model(tmp_path):
    train_ds, _, _ = tiny_data(seed=0)
    val_ds, _, _ = tiny_data(n=32, seed=1)
    out = tmp_path / "light"
    result = train.fit(tiny_model, train_ds, val_ds,
                       TrainConfig(epochs=4, learning_rate=0.05, patience=1, verbose=0, checkpoints=False), out_dir=out)
    assert not list(out.rglob("*.keras")) and not (out / "backup").exists()
    assert {p.name for p in out.iterdir()} == {"history.csv", "threshold.json", "run.json"}
    history = read_history(out)
    assert result.epochs_done == len(history) >= 2
    best = int(np.argmin([row["val_loss"] for row in history])) + 1
    assert result.best_epoch == best
    loss = result.model.evaluate(val_ds, verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(history[best - 1]["val_loss"], rel=1e-5)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and record["config"]["train"]["checkpoints"] is False
    assert record["best_epoch"] == best and record["epochs_done"] == len(history)

    resumable = tmp_path / "resumable"
    train.fit(tiny_model, train_ds, val_ds, TrainConfig(epochs=1, verbose=0), out_dir=resumable)
    with pytest.raises(ValueError, match="resumable run"):
        train.fit(tiny_model, train_ds, val_ds, TrainConfig(epochs=2, verbose=0, checkpoints=False), out_dir=resumable)


def test_fit_does_not_seed_the_global_random_generators(tmp_path):
    # Keras consumes Python's generator while saving; if fit seeded the generators, the draws
    # after it would be the same whatever the caller had seeded before.
    import random

    train_ds, _, _ = tiny_data(seed=0)
    draws = []
    for before in (1, 2):
        random.seed(before)
        np.random.seed(before)
        train.fit(tiny_model, train_ds, train_ds, TrainConfig(epochs=1, seed=0, verbose=0), out_dir=tmp_path / str(before))
        draws.append((random.random(), np.random.random()))
    assert draws[0][0] != draws[1][0] and draws[0][1] != draws[1][1]


def test_tensorboard_logs_both_splits(tmp_path):
    train_ds, _, _ = tiny_data(seed=0)
    val_ds, _, _ = tiny_data(n=32, seed=1)
    train.fit(tiny_model, train_ds, val_ds, TrainConfig(epochs=2, verbose=0, tensorboard=True), out_dir=tmp_path)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for split in ("train", "validation"):
        events = EventAccumulator(str(tmp_path / "tensorboard" / split)).Reload()
        scalars = events.Tags()["tensors"] + events.Tags()["scalars"]
        assert any("epoch_loss" in tag for tag in scalars), (split, scalars)
        steps = [e.step for tag in scalars if "epoch_loss" in tag for e in
                 (events.Tensors(tag) if tag in events.Tags()["tensors"] else events.Scalars(tag))]
        assert sorted(steps) == [0, 1], (split, steps)


def test_missing_monitor_keeps_the_last_epoch_and_resumes(tmp_path):
    # A softmax model logs no AUC: EarlyStopping and ModelCheckpoint never see "val_auc", so
    # ModelCheckpoint saves nothing and the commit keeps the last epoch as the best one.
    train_ds, _, _ = tiny_data(seed=0)
    val_ds, _, _ = tiny_data(n=32, seed=1)
    args = dict(learning_rate=0.05, monitor="val_auc", mode="max", verbose=0)
    with pytest.warns(UserWarning, match="val_auc"):
        first = train.fit(lambda: tiny_model(units=2), train_ds, val_ds, TrainConfig(epochs=2, **args), out_dir=tmp_path)
    state = json.loads((tmp_path / "backup" / "state.json").read_text())
    assert state["best_file"] == state["latest_file"] == "epoch-0002.keras"
    assert first.best_epoch == state["best_epoch"] == 2
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == ["epoch-0002.keras", "state.json"]
    last = keras.models.load_model(tmp_path / "backup" / "epoch-0002.keras")
    for a, b in zip(first.model.get_weights(), last.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.warns(UserWarning, match="val_auc"):
        more = train.fit(lambda: tiny_model(units=2), train_ds, val_ds, TrainConfig(epochs=3, **args), out_dir=tmp_path)
    assert more.resumed_from == 2 and more.epochs_done == 3 and more.best_epoch == 3
    assert json.loads((tmp_path / "backup" / "state.json").read_text())["best_file"] == "epoch-0003.keras"
    assert [row["epoch"] for row in read_history(tmp_path)] == [0, 1, 2]


def test_multiclass_threshold_is_argmax(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.random((24, 8, 8, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) * 3).astype("int32").clip(0, 2)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    result = train.fit(lambda: tiny_model(units=3), ds, ds, TrainConfig(epochs=1, verbose=0), out_dir=tmp_path)
    assert result.threshold["threshold"] is None and result.threshold["method"] == "argmax"
    assert json.loads((tmp_path / "run.json").read_text())["facts"]["loss"] == "sparse_categorical_crossentropy"


def test_balanced_class_weight_matches_formula():
    weights = train.balanced_class_weight([30, 10])
    assert weights == pytest.approx({0: 40 / (2 * 30), 1: 40 / (2 * 10)})
    with pytest.raises(ValueError, match="counts"):
        train.balanced_class_weight([3, 0])


def test_bad_arguments_are_named(tmp_path):
    ds, _, _ = tiny_data(n=8)
    with pytest.raises(ValueError, match="epochs=0"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="class_counts=None"):
        train.fit(tiny_model, ds, ds, TrainConfig(class_weight="balanced"), out_dir=tmp_path)
    balanced = train.fit(tiny_model, ds, ds, TrainConfig(class_weight="balanced", verbose=0), out_dir=tmp_path / "b",
                         class_counts=[6, 2])
    assert balanced.epochs_done == 1



def test_learning_rate_schedules():
    assert train.learning_rate_schedule("plateau", 1e-3, total_steps=10) == 1e-3
    lr = train.learning_rate_schedule("cosine", 1e-3, total_steps=100, warmup_steps=10)
    expected = {0: 0.0, 5: 5e-4, 10: 1e-3, 55: 5e-4, 100: 0.0}  # linear warm-up, then half a cosine
    for step, value in expected.items():
        assert float(lr(step)) == pytest.approx(value, abs=1e-9), step
    assert float(train.learning_rate_schedule("cosine", 1e-3, total_steps=100)(0)) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="schedule='step'"):
        train.learning_rate_schedule("step", 1e-3, total_steps=10)
    with pytest.raises(ValueError, match="warmup_steps=10"):
        train.learning_rate_schedule("cosine", 1e-3, total_steps=10, warmup_steps=10)


def test_cosine_run_resumes_on_its_schedule_and_cannot_be_extended(tmp_path):
    _, x, y = tiny_data(n=64, seed=0)
    val_ds, _, _ = tiny_data(n=32, seed=1)

    def batches():  # endless, 8 batches per epoch; the source fails halfway through epoch 2
        for i in range(12):
            yield x[8 * (i % 8):8 * (i % 8) + 8], y[8 * (i % 8):8 * (i % 8) + 8]
        raise RuntimeError("interrupted")

    failing = tf.data.Dataset.from_generator(batches, output_signature=(
        tf.TensorSpec((None, 8, 8, 3), tf.float32), tf.TensorSpec((None,), tf.int32)))
    args = dict(epochs=3, learning_rate=0.05, patience=5, schedule="cosine", warmup_epochs=0.5, verbose=0)
    with pytest.raises(Exception, match="interrupted"):
        train.fit(tiny_model, failing, val_ds, TrainConfig(steps_per_epoch=8, **args), out_dir=tmp_path)
    state = json.loads((tmp_path / "backup" / "state.json").read_text())
    assert state["epochs_done"] == 1 and state["reduce_lr"] is None
    train_ds, _, _ = tiny_data(n=64, seed=0)  # 8 batches, a known length: no steps_per_epoch needed
    with pytest.raises(ValueError, match="train.steps_per_epoch: 8 there, None now"):
        train.fit(tiny_model, train_ds, val_ds, TrainConfig(**args), out_dir=tmp_path)
    result = train.fit(tiny_model, train_ds, val_ds, TrainConfig(steps_per_epoch=8, **args), out_dir=tmp_path)
    assert result.resumed_from == 1 and result.epochs_done == 3
    # The rate at each epoch's end is the schedule's at 8, 16 and 24 steps: the resumed run
    # went on from the optimizer's restored step count, not from the start.
    schedule = train.learning_rate_schedule("cosine", 0.05, total_steps=24, warmup_steps=4)
    logged = [row["learning_rate"] for row in read_history(tmp_path)]
    assert logged == pytest.approx([float(schedule(s)) for s in (8, 16, 24)], abs=1e-7)
    assert logged[0] > logged[1] > logged[2] == pytest.approx(0.0, abs=1e-9)
    settings = json.loads((tmp_path / "run.json").read_text())["config"]["train"]
    assert (settings["schedule"], settings["warmup_epochs"], settings["epochs"]) == ("cosine", 0.5, 3)
    with pytest.raises(ValueError, match="train.epochs: 3 there, 4 now"):
        train.fit(tiny_model, train_ds, val_ds, TrainConfig(steps_per_epoch=8, **{**args, "epochs": 4}), out_dir=tmp_path)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        train.fit(tiny_model, train_ds.repeat(), val_ds, TrainConfig(**args), out_dir=tmp_path / "endless")


def test_a_folder_from_before_run_configurations_is_refused_in_one_line(tmp_path):
    train_ds, _, _ = tiny_data(seed=0)
    train.fit(tiny_model, train_ds, train_ds, TrainConfig(epochs=1, verbose=0), out_dir=tmp_path)
    path = tmp_path / "backup" / "state.json"
    state = json.loads(path.read_text())
    state["settings"] = {"learning_rate": 0.001, "seed": 0}  # what such a folder holds instead
    del state["resume"], state["facts"]
    path.write_text(json.dumps(state))
    with pytest.raises(ValueError) as refused:
        train.fit(tiny_model, train_ds, train_ds, TrainConfig(epochs=2, verbose=0), out_dir=tmp_path)
    assert "without run configurations" in str(refused.value) and "\n" not in str(refused.value)


# The job a user would run: trains a tiny model into OUT. With HISTOLIB_TEST_BLOCK=E:B it
# writes a marker file and blocks at batch B of (0-based) epoch E, to be killed there.
# Subclasses of the three callbacks record their state at the first epoch each process
# starts, i.e. after fit has restored it.
JOB = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    import keras, numpy as np, tensorflow as tf

    out = Path(sys.argv[1])
    probe = out.parent / "probe"
    probe.mkdir(exist_ok=True)
    block = os.environ.get("HISTOLIB_TEST_BLOCK")

    def recorder(base, names, blocks=False):
        class Recorder(base):
            def on_epoch_begin(self, epoch, logs=None):
                super().on_epoch_begin(epoch, logs)
                path = probe / f"{base.__name__}-{os.getpid()}.json"
                if not path.exists():
                    state = {n: (None if getattr(self, n) is None else float(getattr(self, n))) for n in names}
                    state.update(epoch=epoch, iterations=int(self.model.optimizer.iterations),
                                 learning_rate=float(np.asarray(self.model.optimizer.learning_rate)))
                    path.write_text(json.dumps(state))
            def on_train_batch_begin(self, batch, logs=None):
                if block and blocks:
                    epoch, at = map(int, block.split(":"))
                    if int(self.model.optimizer.iterations) == epoch * 8 + at:
                        (probe / "blocked").write_text(str(os.getpid()))
                        time.sleep(600)
        return Recorder

    keras.callbacks.EarlyStopping = recorder(keras.callbacks.EarlyStopping, ["best", "wait", "best_epoch"], blocks=True)
    keras.callbacks.ReduceLROnPlateau = recorder(keras.callbacks.ReduceLROnPlateau, ["best", "wait", "cooldown_counter"])
    keras.callbacks.ModelCheckpoint = recorder(keras.callbacks.ModelCheckpoint, ["best"])

    from histolib import train

    rng = np.random.default_rng(0)
    x = rng.random((96, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 2, 96).astype("int32")  # noise labels: val_loss wanders, so counters move
    train_ds = tf.data.Dataset.from_tensor_slices((x[:64], y[:64])).batch(8)
    val_ds = tf.data.Dataset.from_tensor_slices((x[64:], y[64:])).batch(8)

    def build():
        inputs = keras.Input((8, 8, 3))
        h = keras.layers.Conv2D(8, 3)(inputs)
        h = keras.layers.GlobalAveragePooling2D()(h)
        return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(h))

    from histolib.config import TrainConfig
    train.fit(build, train_ds, val_ds, TrainConfig(epochs=6, learning_rate=0.05, patience=10, lr_patience=1,
                                                  lr_factor=0.3, verbose=2), out_dir=out)
    """
)


def run_job(script, out, env):
    return subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    out = tmp_path / "run"
    probe = tmp_path / "probe"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}

    # First run: block in the middle of epoch 4 (0-based 3, batch 3 of 8) and kill it there.
    proc = subprocess.Popen([sys.executable, str(script), str(out)],
                            env={**env, "HISTOLIB_TEST_BLOCK": "3:3"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (probe / "blocked").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the training job never reached the blocking batch"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    pre = json.loads((out / "backup" / "state.json").read_text())
    assert pre["epochs_done"] == 3 and not pre.get("finished")
    pre_history = read_history(out)
    assert [row["epoch"] for row in pre_history] == [0, 1, 2]
    for stale in probe.glob("*-*.json"):
        stale.unlink()

    # Second run, same command: resumes after epoch 3 and finishes.
    second = run_job(script, out, env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming after epoch 3 of 6" in second.stdout

    # The callbacks' state, the learning rate and the optimizer's step count at the first
    # resumed epoch equal what was committed before the kill.
    restored = {p.name.split("-")[0]: json.loads(p.read_text()) for p in probe.glob("*-*.json")}
    es, lr, ck = restored["EarlyStopping"], restored["ReduceLROnPlateau"], restored["ModelCheckpoint"]
    assert es["epoch"] == 3 and es["iterations"] == 3 * 8
    assert es["best"] == pytest.approx(pre["early_stopping"]["best"])
    assert es["wait"] == pre["early_stopping"]["wait"]
    assert es["best_epoch"] == pre["early_stopping"]["best_epoch"]
    assert lr["best"] == pytest.approx(pre["reduce_lr"]["best"])
    assert lr["wait"] == pre["reduce_lr"]["wait"]
    assert lr["cooldown_counter"] == pre["reduce_lr"]["cooldown_counter"]
    assert ck["best"] == pytest.approx(pre["model_checkpoint"]["best"])
    assert es["learning_rate"] == pytest.approx(pre["learning_rate_now"])

    # Every finished epoch logged exactly once, the pre-kill rows unchanged.
    history = read_history(out)
    assert [row["epoch"] for row in history] == list(range(6))
    assert history[:3] == pre_history

    # best.keras holds the best epoch over the whole run, across the kill.
    state = json.loads((out / "backup" / "state.json").read_text())
    val_losses = [row["val_loss"] for row in history]
    assert state["finished"] and state["best_epoch"] == int(np.argmin(val_losses)) + 1
    rng = np.random.default_rng(0)
    x = rng.random((96, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 2, 96).astype("int32")
    best = keras.models.load_model(out / "best.keras")
    loss = best.evaluate(x[64:], y[64:], batch_size=8, verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(min(val_losses), rel=1e-4)

    # Third run, same command: nothing trained.
    third = run_job(script, out, env)
    assert third.returncode == 0 and "already finished" in third.stdout
    assert read_history(out) == history
