"""Training: one resumable `fit` over any builder and dataset.

`fit` compiles a model with Adam and the seeds' callbacks (EarlyStopping that restores the
best weights, ModelCheckpoint of the best ``.keras``, ReduceLROnPlateau with ``factor=0.3``),
logs every epoch to ``history.csv``, chooses a decision threshold on the validation data and
writes a run record. Everything lands in one output folder::

    out_dir/
      best.keras        the best epoch's model (with optimizer state), by ``monitor``
      history.csv       one row per finished epoch (CSVLogger; a resumed run appends)
      threshold.json    the decision threshold chosen on validation data (see below)
      run.json          the run record: command, wall time, epochs, seed, versions, commit, machine
      backup/           resume state: the last finished epoch's model and ``state.json``
                        (with ``checkpoints=False``: no ``best.keras``, no ``backup/``)
      tensorboard/      only with ``tensorboard=True``

Resuming. At the end of every epoch, after all other callbacks, the last finished epoch's model
(weights, optimizer state, learning rate) is saved as ``backup/epoch-NNNN.keras`` and then
``backup/state.json`` is written atomically: the commit point. It holds what Keras's own
``BackupAndRestore`` does not keep: the state of EarlyStopping (best, wait, best epoch),
ModelCheckpoint (best) and ReduceLROnPlateau (best, wait, cooldown), and which epoch's file is
the best. A run killed at any moment and started again with the same arguments continues from
the last committed epoch: ``history.csv`` is cut back to the committed epochs (so no epoch is
logged twice), ``best.keras`` is re-published from the committed best, and training goes on.
A finished run (early-stopped, or all ``epochs`` done) is not trained again; `fit` says so and
returns the stored result. Calling it again with more ``epochs`` extends a run that did not stop
early. A resumed run is the same computation as an uninterrupted one except for the order in
which ``tf.data`` shuffles the remaining epochs (each process starts the shuffle afresh).

Without checkpoints. ``fit(..., checkpoints=False)`` writes no model file at all: the best
epoch's weights are kept in memory (EarlyStopping's ``restore_best_weights``) and the run cannot
resume. It is meant for many short experiments over large frozen backbones, where each full
``.keras`` save (InceptionV3 or Xception: about 90 MB, two or three saves per epoch) costs more
time and disk than the epoch; ``history.csv``, ``threshold.json`` and ``run.json`` are still
written.

The threshold. For two classes the threshold on the positive class's probability is chosen on
``val_ds`` with the best weights, by Youden's J (the ROC point maximising TPR - FPR, which is
the same as maximising balanced accuracy), halfway between that score and the next lower one.
It is never chosen on test data. With more than two classes the rule is the argmax and the
file says so. `histolib.evaluate.read_threshold` reads it back, 0.5 when there is none.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from histolib import evaluate

#: Keys of ``run.json``'s settings that must match for a run to resume in the same folder.
_RESUME_KEYS = (
    "learning_rate", "patience", "lr_patience", "lr_factor", "min_lr", "monitor", "mode",
    "class_weight", "seed", "loss", "num_classes",
)
_BEST_TEMPLATE = "best-epoch{epoch:04d}.keras"
_LATEST_TEMPLATE = "epoch-{epoch:04d}.keras"


@dataclasses.dataclass
class FitResult:
    """What `fit` returns.

    Attributes:
        model: the model holding the best epoch's weights (by ``monitor``).
        history: list of dicts, one per finished epoch, read from ``history.csv``.
        threshold: the contents of ``threshold.json`` (``{"threshold": float, ...}``).
        out_dir: the output folder.
        best_epoch: 1-based number of the best epoch.
        epochs_done: finished epochs in total, over all sessions.
        resumed_from: finished epochs found at the start of this call (0 for a fresh run).
        already_finished: True when the folder held a finished run and nothing was trained.
        stopped_early: True when EarlyStopping ended the run.
    """

    model: keras.Model
    history: list
    threshold: dict
    out_dir: Path
    best_epoch: int
    epochs_done: int
    resumed_from: int
    already_finished: bool
    stopped_early: bool


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_write_json(path: Path, obj) -> None:
    _atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if tf.is_tensor(value):
        return np.asarray(value).tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _float_or_none(value):
    return None if value is None else float(np.asarray(value))


def read_history(path) -> list:
    """Rows of a ``history.csv`` as dicts (``epoch`` int, other columns float).

    Args:
        path: a ``history.csv`` written by `fit` (Keras's CSVLogger), or its folder.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "history.csv"
    if not path.is_file():
        raise ValueError(f"expected a history.csv written by histolib.train.fit. Received: path={path}")
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.append({k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()})
    return rows


def _truncate_history(path: Path, epochs_done: int) -> None:
    """Keep the header and the rows of epochs ``< epochs_done`` (0-based), atomically."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    if not lines:
        return
    header, rows = lines[0], lines[1:]
    kept, seen = [], set()
    for row in rows:
        if row and int(row[0]) < epochs_done and int(row[0]) not in seen:
            kept.append(row)
            seen.add(int(row[0]))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(kept)
    os.replace(tmp, path)


def _git_commit() -> dict:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "histolib"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "histolib_modified": None}
    return {"commit": commit, "histolib_modified": bool(dirty)}


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def describe_environment() -> dict:
    """Package versions, git commit and machine, for run records.

    Returns a JSON-ready dict: ``packages`` (python, tensorflow, keras, numpy, scikit-learn,
    scipy, histolib), ``git`` (``commit`` of the histolib checkout and whether ``histolib/``
    had uncommitted changes), ``machine`` (OS, CPU model, logical CPUs usable by this
    process, memory in GiB, CPU flags relevant to speed, TensorFlow's devices) and the Keras
    dtype policy in force.
    """
    packages = {"python": platform.python_version()}
    for name in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "scikit-learn", "scipy", "histolib"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    packages.setdefault("tensorflow", tf.__version__)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory = None
    try:
        flags = Path("/proc/cpuinfo").read_text()
        cpu_flags = sorted({f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags})
    except OSError:
        cpu_flags = []
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    machine = {
        "os": platform.platform(),
        "cpu": _cpu_model(),
        "logical_cpus": usable,
        "memory_gib": None if memory is None else round(memory, 1),
        "cpu_flags": cpu_flags,
        "devices": [d.device_type + ":" + d.name.rsplit(":", 1)[-1] for d in tf.config.list_physical_devices()],
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
    }
    return {
        "packages": packages,
        "git": _git_commit(),
        "machine": machine,
        "dtype_policy": keras.config.dtype_policy().name,
    }


def _get_strategy(strategy):
    if strategy is not None:
        return strategy
    from histolib.strategy import get_strategy

    return get_strategy()


def _num_classes(model: keras.Model) -> int:
    units = model.outputs[0].shape[-1]
    return 2 if units == 1 else int(units)


def balanced_class_weight(counts) -> dict:
    """Class weights ``n / (k * count)`` for class counts, through scikit-learn.

    Args:
        counts: images per class, e.g. ``histolib.data.info(spec)["counts"]``.

    Returns:
        ``{class_index: weight}`` as scikit-learn's ``compute_class_weight("balanced")`` gives.
    """
    from sklearn.utils.class_weight import compute_class_weight

    counts = np.asarray(counts, dtype=int)
    if counts.ndim != 1 or (counts <= 0).any():
        raise ValueError(f"counts must be positive images per class. Received: counts={counts.tolist()}")
    labels = np.repeat(np.arange(len(counts)), counts)
    weights = compute_class_weight("balanced", classes=np.arange(len(counts)), y=labels)
    return {i: float(w) for i, w in enumerate(weights)}


class _ResumeState(keras.callbacks.Callback):
    """Saves and restores what a killed run needs; must come last in the callback list.

    Restores in ``on_train_begin`` (after the other callbacks have reset themselves) and
    commits in ``on_epoch_end`` (after they have acted on the epoch).
    """

    def __init__(self, out_dir: Path, *, state, early, checkpoint, reduce_lr, on_commit):
        super().__init__()
        self.out_dir = out_dir
        self.backup = out_dir / "backup"
        self.state = state
        self.early, self.checkpoint, self.reduce_lr = early, checkpoint, reduce_lr
        self.on_commit = on_commit

    def on_train_begin(self, logs=None):
        s = self.state
        if not s.get("epochs_done"):
            return
        # Capture the best weights first: load_weights also restores the optimizer, so the
        # last finished epoch's file is loaded last.
        self.model.load_weights(self.backup / s["best_file"])
        self.early.best_weights = self.model.get_weights()
        self.model.load_weights(self.backup / s["latest_file"])
        self.model.optimizer.learning_rate = s["learning_rate_now"]
        es, ck, lr = s["early_stopping"], s["model_checkpoint"], s["reduce_lr"]
        self.early.best, self.early.wait = es["best"], es["wait"]
        self.early.best_epoch, self.early.stopped_epoch = es["best_epoch"], es["stopped_epoch"]
        self.checkpoint.best = ck["best"]
        self.reduce_lr.best, self.reduce_lr.wait = lr["best"], lr["wait"]
        self.reduce_lr.cooldown_counter = lr["cooldown_counter"]

    def on_epoch_end(self, epoch, logs=None):
        latest = _LATEST_TEMPLATE.format(epoch=epoch + 1)
        self.model.save(self.backup / latest)
        best = _BEST_TEMPLATE.format(epoch=self.early.best_epoch + 1)
        if not (self.backup / best).is_file():
            # The monitor had no value, so ModelCheckpoint saved nothing: keep this epoch.
            best = latest
        self.state.update(
            epochs_done=epoch + 1,
            latest_file=latest,
            best_file=best,
            best_epoch=self.early.best_epoch + 1,
            learning_rate_now=float(np.asarray(self.model.optimizer.learning_rate)),
            stopped_early=bool(self.model.stop_training and self.early.stopped_epoch > 0),
            early_stopping={
                "best": _float_or_none(self.early.best),
                "wait": int(self.early.wait),
                "best_epoch": int(self.early.best_epoch),
                "stopped_epoch": int(self.early.stopped_epoch),
            },
            model_checkpoint={"best": _float_or_none(self.checkpoint.best)},
            reduce_lr={
                "best": _float_or_none(self.reduce_lr.best),
                "wait": int(self.reduce_lr.wait),
                "cooldown_counter": int(self.reduce_lr.cooldown_counter),
            },
            monitor_value=_float_or_none((logs or {}).get(self.early.monitor)),
        )
        _atomic_write_json(self.backup / "state.json", self.state)  # the commit point
        _publish_best(self.out_dir, self.state)
        _remove_stale(self.backup, self.state)
        self.on_commit(self.state)


def _publish_best(out_dir: Path, state: dict) -> None:
    """Copy the committed best epoch's file to ``out_dir/best.keras`` (atomically)."""
    src = out_dir / "backup" / state["best_file"]
    dst = out_dir / "best.keras"
    tmp = out_dir / "best.keras.tmp"
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        while chunk := fin.read(1 << 20):
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    os.replace(tmp, dst)


def _remove_stale(backup: Path, state: dict) -> None:
    keep = {state.get("latest_file"), state.get("best_file"), "state.json"}
    for path in backup.iterdir():
        if path.name not in keep:
            path.unlink()


def _compile(model, *, learning_rate, num_classes, steps_per_execution):
    if num_classes == 2 and model.outputs[0].shape[-1] == 1:
        loss = "binary_crossentropy"
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    else:
        loss = "sparse_categorical_crossentropy"
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=loss,
        metrics=metrics,
        steps_per_execution=steps_per_execution,
    )
    model.optimizer.build(model.trainable_variables)
    return loss


def _choose_and_write_threshold(model, val_ds, out_dir: Path, *, validation_steps, num_classes) -> dict:
    y_true, probs = evaluate.predict(model, val_ds, steps=validation_steps)
    if num_classes == 2:
        record = evaluate.choose_threshold(y_true, probs[:, 1])
        record.update(split="validation data given to fit", n=int(len(y_true)))
    else:
        record = {"threshold": None, "method": "argmax", "split": "validation data given to fit",
                  "n": int(len(y_true))}
    _atomic_write_json(out_dir / "threshold.json", record)
    return record


def _start_record(record: dict, settings: dict, resumed_from: int, command, extra_record) -> dict:
    """Fill ``record`` (``run.json``) for a new session of a run; returns the session entry."""
    session = {
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "from_epoch": resumed_from,
    }
    record.setdefault("command", session["command"])
    record.update(settings=settings, seed=settings["seed"], environment=describe_environment(),
                  status="running", **(extra_record or {}))
    record.setdefault("sessions", []).append(session)
    return session


def _seed_callbacks(settings: dict, out_dir: Path, *, tensorboard: bool):
    """ReduceLROnPlateau, EarlyStopping (restoring the best weights) and CSVLogger, as the seeds
    used them; returns ``(reduce_lr, early, [reduce_lr, early, csv_logger(, tensorboard)])``."""
    monitor, mode = settings["monitor"], settings["mode"]
    early = keras.callbacks.EarlyStopping(
        monitor=monitor, mode=mode, patience=settings["patience"], restore_best_weights=True, verbose=1)
    reduce_lr = keras.callbacks.ReduceLROnPlateau(
        monitor=monitor, mode=mode, factor=settings["lr_factor"], patience=settings["lr_patience"],
        min_lr=settings["min_lr"], verbose=1)
    callbacks = [reduce_lr, early, keras.callbacks.CSVLogger(str(out_dir / "history.csv"), append=True)]
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(out_dir / "tensorboard")))
    return reduce_lr, early, callbacks


def _fit_in_memory(model, train_ds, val_ds, *, out_dir: Path, epochs, settings, started, verbose,
                   command, extra_record, class_weight, tensorboard) -> FitResult:
    """`fit` with ``checkpoints=False``: no model file, the best weights kept in memory."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "history.csv").unlink(missing_ok=True)
    (out_dir / "best.keras").unlink(missing_ok=True)  # a stale one would not match this run
    record = {}
    session = _start_record(record, settings, 0, command, extra_record)
    _atomic_write_json(out_dir / "run.json", record)
    _, early, callbacks = _seed_callbacks(settings, out_dir, tensorboard=tensorboard)
    model.fit(train_ds, validation_data=val_ds, epochs=int(epochs),
              steps_per_epoch=settings["steps_per_epoch"], validation_steps=settings["validation_steps"],
              class_weight=class_weight, callbacks=callbacks, shuffle=False, verbose=verbose)
    history = read_history(out_dir / "history.csv")
    if not history:
        raise RuntimeError(f"training in {out_dir} finished no epoch")  # pragma: no cover
    threshold = _choose_and_write_threshold(model, val_ds, out_dir, validation_steps=settings["validation_steps"],
                                            num_classes=settings["num_classes"])
    stopped_early = bool(early.stopped_epoch > 0)
    wall = round(time.time() - started, 1)
    session.update(wall_s=wall, to_epoch=len(history))
    record.update(status="finished", epochs_done=len(history), best_epoch=int(early.best_epoch) + 1,
                  best_monitor_value=_float_or_none(early.best), stopped_early=stopped_early,
                  wall_s=wall, threshold=threshold)
    _atomic_write_json(out_dir / "run.json", record)
    return FitResult(model=model, history=history, threshold=threshold, out_dir=out_dir,
                     best_epoch=int(early.best_epoch) + 1, epochs_done=len(history), resumed_from=0,
                     already_finished=False, stopped_early=stopped_early)


def fit(
    model,
    train_ds,
    val_ds,
    *,
    out_dir,
    epochs: int,
    learning_rate: float = 1e-3,
    patience: int = 3,
    lr_patience: int | None = None,
    lr_factor: float = 0.3,
    min_lr: float = 1e-6,
    monitor: str = "val_loss",
    mode: str = "auto",
    class_weight=None,
    seed: int = 0,
    deterministic: bool = False,
    tensorboard: bool = False,
    strategy=None,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    steps_per_execution: int = 1,
    verbose="auto",
    command: str | None = None,
    extra_record: dict | None = None,
    checkpoints: bool = True,
) -> FitResult:
    """Train ``model`` on ``train_ds``, select on ``val_ds``, resumably, into ``out_dir``.

    Args:
        model: a ``keras.Model`` whose output is probabilities, ``(batch, 1)`` sigmoid for two
            classes or ``(batch, k)`` softmax; or a zero-argument callable returning one, which
            is then built inside the strategy's scope (pass a callable whenever ``strategy`` is
            not the default one). It is compiled here (Adam, binary or sparse categorical
            cross-entropy, metrics ``accuracy`` and, for a sigmoid output, ``auc``).
        train_ds: ``tf.data.Dataset`` of ``(images (b, h, w, 3) float32, labels (b,) int32)``,
            e.g. ``histolib.data.load(spec, "train", shuffle=True, augment=...)``.
        val_ds: the same for the validation split (no shuffling, no augmentation).
        out_dir: output folder (created); see the module docstring for what goes in it.
        epochs: total number of epochs for the run (not per call).
        learning_rate: Adam's initial learning rate.
        patience: EarlyStopping's patience in epochs (the PCam seed: 3).
        lr_patience: ReduceLROnPlateau's patience; default ``max(1, patience - 1)`` so the
            learning rate drops once before training stops.
        lr_factor: ReduceLROnPlateau's factor (the seed: 0.3).
        min_lr: the lowest learning rate ReduceLROnPlateau goes to.
        monitor: the logged quantity the three callbacks watch, e.g. ``"val_loss"`` or
            ``"val_auc"``; ``mode`` ``"auto"``, ``"min"`` or ``"max"`` as in Keras.
        class_weight: ``None``, ``{class: weight}``, or counts per class given as
            ``("balanced", counts)`` (see `balanced_class_weight`).
        seed: passed to ``keras.utils.set_random_seed`` (Python, NumPy and backend RNGs).
        deterministic: also call ``tf.config.experimental.enable_op_determinism()``.
        tensorboard: also log to ``out_dir/tensorboard``.
        strategy: a ``tf.distribute.Strategy``; default ``histolib.strategy.get_strategy()``.
        steps_per_epoch, validation_steps: as in ``keras.Model.fit`` (for repeated datasets).
        steps_per_execution: batches per compiled call, as in ``keras.Model.compile``.
        verbose: Keras's ``verbose`` (``"auto"``, 0, 1 progress bar, 2 one line per epoch).
        command: the command line to record in ``run.json`` (default: ``sys.argv``).
        extra_record: more JSON-ready facts for ``run.json`` (e.g. the data spec).
        checkpoints: save the best and the last epoch's model so a killed run resumes (default);
            ``False`` saves no model file and starts afresh (see the module docstring).

    Returns:
        A `FitResult`; ``result.model`` holds the best epoch's weights.

    Raises:
        ValueError: for bad arguments, or when ``out_dir`` holds a run made with different
            settings (learning rate, patience, monitor, seed, ...), which cannot be resumed.
    """
    if not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer. Received: epochs={epochs!r}")
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0. Received: learning_rate={learning_rate!r}")
    if patience < 0:
        raise ValueError(f"patience must be >= 0. Received: patience={patience!r}")
    if isinstance(class_weight, tuple) and len(class_weight) == 2 and class_weight[0] == "balanced":
        class_weight = balanced_class_weight(class_weight[1])
    elif class_weight is not None and not isinstance(class_weight, dict):
        raise ValueError(
            "class_weight must be None, a {class: weight} dict or ('balanced', counts). "
            f"Received: class_weight={class_weight!r}"
        )
    if class_weight is not None:
        class_weight = {int(k): float(v) for k, v in class_weight.items()}
    lr_patience = max(1, patience - 1) if lr_patience is None else lr_patience

    out_dir = Path(out_dir)
    backup = out_dir / "backup"
    state_path = backup / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    started = time.time()

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = _get_strategy(strategy)
    with strategy.scope():
        if callable(model) and not isinstance(model, keras.Model):
            model = model()
        if not isinstance(model, keras.Model):
            raise ValueError(f"model must be a keras.Model or a callable returning one. Received: {model!r}")
        num_classes = _num_classes(model)
        loss = _compile(model, learning_rate=learning_rate, num_classes=num_classes,
                        steps_per_execution=steps_per_execution)

    settings = {
        "learning_rate": float(learning_rate), "patience": int(patience),
        "lr_patience": int(lr_patience), "lr_factor": float(lr_factor), "min_lr": float(min_lr),
        "monitor": monitor, "mode": mode,
        "class_weight": None if class_weight is None else {str(k): v for k, v in class_weight.items()},
        "seed": int(seed), "loss": loss, "num_classes": num_classes,
        "epochs": int(epochs), "deterministic": bool(deterministic),
        "steps_per_epoch": steps_per_epoch, "validation_steps": validation_steps,
        "steps_per_execution": int(steps_per_execution),
        "params": int(model.count_params()), "model_name": model.name,
        "checkpoints": bool(checkpoints),
    }
    if state:
        mismatched = {k: (state["settings"].get(k), settings[k]) for k in _RESUME_KEYS
                      if state["settings"].get(k) != settings[k]}
        if mismatched:
            detail = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in mismatched.items())
            raise ValueError(
                f"out_dir={str(out_dir)!r} holds a run made with other settings ({detail}); "
                "run again with the same settings to resume it, or choose another out_dir"
            )
    if not checkpoints:
        if state:
            raise ValueError(
                f"out_dir={str(out_dir)!r} holds a resumable run ({state_path}); checkpoints=False "
                "would start afresh over it: choose another out_dir, or resume with checkpoints=True"
            )
        return _fit_in_memory(model, train_ds, val_ds, out_dir=out_dir, epochs=epochs, settings=settings,
                              started=started, verbose=verbose, command=command,
                              extra_record=extra_record, class_weight=class_weight,
                              tensorboard=tensorboard)
    resumed_from = int(state.get("epochs_done", 0))
    finished = bool(state) and (state.get("stopped_early") or resumed_from >= epochs)
    if finished and state.get("finished") and (out_dir / "threshold.json").is_file():
        model.load_weights(out_dir / "best.keras")
        print(
            f"{out_dir}: already finished ({resumed_from} epochs, best epoch {state['best_epoch']}"
            f"{', stopped early' if state.get('stopped_early') else ''}); nothing to train."
        )
        return FitResult(
            model=model, history=read_history(out_dir / "history.csv"),
            threshold=json.loads((out_dir / "threshold.json").read_text()), out_dir=out_dir,
            best_epoch=state["best_epoch"], epochs_done=resumed_from, resumed_from=resumed_from,
            already_finished=True, stopped_early=bool(state.get("stopped_early")),
        )

    backup.mkdir(parents=True, exist_ok=True)
    record_path = out_dir / "run.json"
    record = json.loads(record_path.read_text()) if (state and record_path.is_file()) else {}
    session = _start_record(record, settings, resumed_from, command, extra_record)
    past_wall = sum(s.get("wall_s", 0.0) for s in record["sessions"][:-1])

    def on_commit(st):
        session.update(wall_s=round(time.time() - started, 1), to_epoch=st["epochs_done"])
        record.update(epochs_done=st["epochs_done"], best_epoch=st["best_epoch"],
                      best_monitor_value=st["early_stopping"]["best"],
                      stopped_early=st["stopped_early"], wall_s=round(past_wall + session["wall_s"], 1))
        _atomic_write_json(record_path, record)

    if state:
        _truncate_history(out_dir / "history.csv", resumed_from)
        _publish_best(out_dir, state)
        _remove_stale(backup, state)
        if resumed_from:
            print(f"{out_dir}: resuming after epoch {resumed_from} of {epochs}.")
    else:
        state = {"settings": settings, "epochs_done": 0}
        (out_dir / "history.csv").unlink(missing_ok=True)
        for stale in backup.iterdir():
            stale.unlink()
    state["settings"] = settings
    _atomic_write_json(record_path, record)

    reduce_lr, early, callbacks = _seed_callbacks(settings, out_dir, tensorboard=tensorboard)
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(backup / _BEST_TEMPLATE), monitor=monitor, mode=mode, save_best_only=True)
    callbacks.insert(2, checkpoint)
    callbacks.append(_ResumeState(out_dir, state=state, early=early, checkpoint=checkpoint,
                                  reduce_lr=reduce_lr, on_commit=on_commit))

    if not finished:
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=int(epochs),
            initial_epoch=resumed_from,
            steps_per_epoch=steps_per_epoch,
            validation_steps=validation_steps,
            class_weight=class_weight,
            callbacks=callbacks,
            shuffle=False,  # datasets come shuffled (or not) from histolib.data.load
            verbose=verbose,
        )
    if not state.get("epochs_done"):
        raise RuntimeError(f"training in {out_dir} finished no epoch")  # pragma: no cover
    model.load_weights(out_dir / "best.keras")
    threshold = _choose_and_write_threshold(model, val_ds, out_dir, validation_steps=validation_steps,
                                            num_classes=num_classes)
    state["finished"] = True
    _atomic_write_json(state_path, state)
    session.update(wall_s=round(time.time() - started, 1), to_epoch=state["epochs_done"])
    record.update(status="finished", epochs_done=state["epochs_done"], best_epoch=state["best_epoch"],
                  best_monitor_value=state["early_stopping"]["best"],
                  stopped_early=bool(state.get("stopped_early")),
                  wall_s=round(past_wall + session["wall_s"], 1), threshold=threshold)
    _atomic_write_json(record_path, record)
    return FitResult(
        model=model, history=read_history(out_dir / "history.csv"), threshold=threshold,
        out_dir=out_dir, best_epoch=state["best_epoch"], epochs_done=state["epochs_done"],
        resumed_from=resumed_from, already_finished=False,
        stopped_early=bool(state.get("stopped_early")),
    )
