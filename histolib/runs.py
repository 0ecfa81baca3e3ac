"""A training run's folder and its resume state (used by `histolib.train.fit`).

`RunFolder` owns the files of one run::

    out_dir/
      best.keras        the best epoch's model, re-published from backup/ at every commit
      history.csv       one row per finished epoch (Keras's CSVLogger appends)
      threshold.json    the decision threshold chosen on validation data
      run.json          the run record: command, config, sessions, wall time, environment
      backup/           state.json (the commit point) and the last and the best epoch's models

`EpochCommit`, the last callback of a run, commits after every epoch: the last epoch's model,
then ``backup/state.json`` with what Keras's ``BackupAndRestore`` does not keep (the state of
EarlyStopping, ModelCheckpoint and ReduceLROnPlateau, the learning rate, which file is the
best), then ``best.keras`` and ``run.json``. A run that cannot resume (``resumable=False``)
keeps the same state in memory and writes only ``history.csv``, ``threshold.json`` and
``run.json``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np

from histolib.files import atomic_file, write_json
from histolib.provenance import describe_environment

BEST_TEMPLATE = "best-epoch{epoch:04d}.keras"
LATEST_TEMPLATE = "epoch-{epoch:04d}.keras"


def _as_json(value):
    """``value`` as it reads back from JSON (tuples as lists, keys as strings), for comparing."""
    return json.loads(json.dumps(value, default=str))


def _float_or_none(value):
    return None if value is None else float(np.asarray(value))


def read_history(path) -> list:
    """Rows of a ``history.csv`` as dicts (``epoch`` int, other columns float).

    Args:
        path: a ``history.csv`` written by `histolib.train.fit` (Keras's CSVLogger), or its folder.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "history.csv"
    if not path.is_file():
        raise ValueError(f"expected a history.csv written by histolib.train.fit. Received: path={path}")
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def _truncate_history(path: Path, epochs_done: int) -> None:
    """Keep the header and the first row of each epoch ``< epochs_done`` (0-based), atomically."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    if not lines:
        return
    kept, seen = [], set()
    for row in lines[1:]:
        if row and int(row[0]) < epochs_done and int(row[0]) not in seen:
            kept.append(row)
            seen.add(int(row[0]))
    with atomic_file(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(lines[0])
        writer.writerows(kept)


class RunFolder:
    """The files of one run in ``out_dir`` and its state (see the module docstring).

    Args:
        out_dir: the run's folder (created by `open`).
        resumable: keep model files and ``backup/state.json`` so a killed run resumes.

    Attributes:
        state: ``epochs_done``, ``best_epoch``, ``stopped_early``, the callbacks' state, the
            config's resume fields (``resume``), the model's ``facts``, and (resumable)
            ``latest_file``, ``best_file``, ``finished``; read from ``backup/state.json`` when
            the folder holds a resumable run, else ``{}``.
        record: the contents of ``run.json`` once `open` has run.
    """

    def __init__(self, out_dir, *, resumable: bool = True):
        self.path = Path(out_dir)
        self.resumable = bool(resumable)
        self.backup = self.path / "backup"
        self.state_path = self.backup / "state.json"
        self.record_path = self.path / "run.json"
        self.history_path = self.path / "history.csv"
        self.best_path = self.path / "best.keras"
        self.threshold_path = self.path / "threshold.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        self.record, self.session = {}, {}
        self.started = time.time()
        self._past_wall = 0.0

    @property
    def epochs_done(self) -> int:
        return int(self.state.get("epochs_done", 0))

    def check(self, config, facts: dict) -> None:
        """Refuse to continue a run made with another config (`RunConfig.resume_view`) or
        another model output (classes, loss), a folder from before run configurations, and a
        run that cannot resume over one that can.

        Raises:
            ValueError: in one line, naming the folder and each field that differs.
        """
        if not self.state:
            return
        if "resume" not in self.state:
            raise ValueError(f"out_dir={str(self.path)!r} holds a run written by a histolib without run "
                             "configurations (its backup/state.json has no 'resume'); it cannot go on here: "
                             "choose another out_dir")
        now = _as_json({**config.resume_view(), "facts.num_classes": facts["num_classes"],
                        "facts.loss": facts["loss"]})
        then = {**self.state["resume"], **{f"facts.{k}": self.state["facts"][k] for k in ("num_classes", "loss")}}
        differ = {k: (then.get(k), now.get(k)) for k in sorted(set(now) | set(then)) if then.get(k) != now.get(k)}
        if differ:
            detail = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in differ.items())
            raise ValueError(f"out_dir={str(self.path)!r} holds a run made with other settings ({detail}); "
                             "run again with the same settings to resume it, or choose another out_dir")
        if not self.resumable:
            raise ValueError(
                f"out_dir={str(self.path)!r} holds a resumable run ({self.state_path}); checkpoints=False "
                "would start afresh over it: choose another out_dir, or resume with checkpoints=True")

    def trained(self, epochs: int) -> bool:
        """Whether the run needs no more epochs: it stopped early, or has ``epochs`` done."""
        return bool(self.state) and bool(self.state.get("stopped_early") or self.epochs_done >= epochs)

    def finished(self, epochs: int) -> bool:
        """Whether the run is `trained` and its threshold was written: nothing left to do."""
        return self.trained(epochs) and bool(self.state.get("finished")) and self.threshold_path.is_file()

    def open(self, config, facts: dict, *, record: dict | None) -> None:
        """Start a session: resume the folder's run (cutting ``history.csv`` back to the
        committed epochs) or clear the folder for a new one; write ``run.json`` with ``config``
        (a `histolib.config.RunConfig`), the model's ``facts`` and the caller's ``record``."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.state:
            self._reopen(config.train.epochs)
        else:
            self._start()
        self.state.update(resume=_as_json(config.resume_view()), facts=facts, epochs=config.train.epochs)
        self._past_wall = sum(s.get("wall_s", 0.0) for s in self.record.get("sessions", []))
        self.session = {
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": config.command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "from_epoch": self.epochs_done,
        }
        self.record.setdefault("command", self.session["command"])
        self.record.update(config=config.to_json(), facts=facts, seed=config.train.seed,
                           environment=describe_environment(), status="running", **(record or {}))
        self.record.setdefault("sessions", []).append(self.session)
        write_json(self.record_path, self.record)

    def _reopen(self, epochs: int) -> None:
        if self.record_path.is_file():
            self.record = json.loads(self.record_path.read_text())
        _truncate_history(self.history_path, self.epochs_done)
        self._publish_best()
        self._remove_stale()
        if self.epochs_done:
            print(f"{self.path}: resuming after epoch {self.epochs_done} of {epochs}.")

    def _start(self) -> None:
        self.state = {"epochs_done": 0}
        self.history_path.unlink(missing_ok=True)
        self.best_path.unlink(missing_ok=True)  # a stale one would not match this run
        if self.resumable:
            self.backup.mkdir(exist_ok=True)
            for stale in self.backup.iterdir():
                stale.unlink()

    def commit(self, update: dict) -> None:
        """Record a finished epoch: ``state.json`` first (the commit point), then ``best.keras``
        and the stale files of ``backup/`` (resumable runs), then ``run.json``."""
        self.state.update(update)
        if self.resumable:
            write_json(self.state_path, self.state)
            self._publish_best()
            self._remove_stale()
        self._update_record()
        write_json(self.record_path, self.record)

    def finish(self, threshold: dict) -> None:
        """Write ``threshold.json``, mark the run finished in its state and its record."""
        write_json(self.threshold_path, threshold)
        self.state["finished"] = True
        if self.resumable:
            write_json(self.state_path, self.state)
        self._update_record()
        self.record.update(status="finished", threshold=threshold)
        write_json(self.record_path, self.record)

    def fail(self, error: BaseException) -> None:
        """Mark an opened run ``failed`` (``interrupted`` for Ctrl-C) in ``run.json``, with the
        error in one line, so a record never says ``running`` for a run that is not."""
        if not self.record:
            return
        interrupted = isinstance(error, KeyboardInterrupt)
        self.session["wall_s"] = round(time.time() - self.started, 1)
        self.record.update(status="interrupted" if interrupted else "failed",
                           error=" ".join(f"{type(error).__name__}: {error}".split())[:1000])
        write_json(self.record_path, self.record)

    def history(self) -> list:
        return read_history(self.history_path)

    def _update_record(self) -> None:
        s = self.state
        self.session.update(wall_s=round(time.time() - self.started, 1), to_epoch=s["epochs_done"])
        self.record.update(epochs_done=s["epochs_done"], best_epoch=s["best_epoch"],
                           best_monitor_value=s["early_stopping"]["best"], stopped_early=bool(s["stopped_early"]),
                           wall_s=round(self._past_wall + self.session["wall_s"], 1))

    def _publish_best(self) -> None:
        """Copy the committed best epoch's file to ``best.keras``, atomically."""
        with open(self.backup / self.state["best_file"], "rb") as src, atomic_file(self.best_path, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)

    def _remove_stale(self) -> None:
        keep = {self.state.get("latest_file"), self.state.get("best_file"), "state.json"}
        for path in self.backup.iterdir():
            if path.name not in keep:
                path.unlink()


class EpochCommit(keras.callbacks.Callback):
    """Restores a resumed run's state and commits every epoch; must come last in the callback
    list (it restores after the other callbacks have reset themselves in ``on_train_begin``,
    and commits after they have acted on the epoch).

    Args:
        run: the `RunFolder`.
        early, reduce_lr: the run's EarlyStopping and ReduceLROnPlateau (``None`` under a
            learning-rate schedule, whose position is the optimizer's step count, restored
            with the optimizer).
        checkpoint: its ModelCheckpoint (writing `BEST_TEMPLATE` files into ``backup/``), or
            ``None`` for a run that is not resumable.
    """

    def __init__(self, run: RunFolder, *, early, reduce_lr, checkpoint=None):
        super().__init__()
        self.run, self.early, self.reduce_lr, self.checkpoint = run, early, reduce_lr, checkpoint

    def on_train_begin(self, logs=None):
        s = self.run.state
        if not (self.run.resumable and s.get("epochs_done")):
            return
        # Capture the best weights first: load_weights also restores the optimizer, so the
        # last finished epoch's file is loaded last.
        self.model.load_weights(self.run.backup / s["best_file"])
        self.early.best_weights = self.model.get_weights()
        self.model.load_weights(self.run.backup / s["latest_file"])
        es, lr = s["early_stopping"], s["reduce_lr"]
        self.early.best, self.early.wait = es["best"], es["wait"]
        self.early.best_epoch, self.early.stopped_epoch = es["best_epoch"], es["stopped_epoch"]
        self.checkpoint.best = s["model_checkpoint"]["best"]
        if self.reduce_lr is not None:
            self.model.optimizer.learning_rate = s["learning_rate_now"]
            self.reduce_lr.best, self.reduce_lr.wait = lr["best"], lr["wait"]
            self.reduce_lr.cooldown_counter = lr["cooldown_counter"]

    def on_epoch_end(self, epoch, logs=None):
        early, reduce_lr = self.early, self.reduce_lr
        monitored = (logs or {}).get(early.monitor)
        # Without the monitored value (a metric the model does not log) nothing can be
        # selected: Keras warns, and the last finished epoch counts as the best.
        best_epoch = early.best_epoch + 1 if monitored is not None else epoch + 1
        update = {"epochs_done": epoch + 1, "best_epoch": best_epoch}
        if self.run.resumable:
            update.update(self._save_models(epoch, best_epoch if monitored is not None else None))
        update.update(
            learning_rate_now=float(np.asarray(self.model.optimizer.learning_rate)),
            stopped_early=bool(self.model.stop_training and early.stopped_epoch > 0),
            early_stopping={"best": _float_or_none(early.best), "wait": int(early.wait),
                            "best_epoch": int(early.best_epoch), "stopped_epoch": int(early.stopped_epoch)},
            reduce_lr=None if reduce_lr is None else {
                "best": _float_or_none(reduce_lr.best), "wait": int(reduce_lr.wait),
                "cooldown_counter": int(reduce_lr.cooldown_counter)},
            monitor_value=_float_or_none(monitored),
        )
        self.run.commit(update)

    def _save_models(self, epoch: int, best_epoch: int | None) -> dict:
        """Save this epoch's model; name the best epoch's file (this one when ``best_epoch`` is
        ``None`` or ModelCheckpoint saved none)."""
        latest = LATEST_TEMPLATE.format(epoch=epoch + 1)
        self.model.save(self.run.backup / latest)
        best = latest if best_epoch is None else BEST_TEMPLATE.format(epoch=best_epoch)
        if not (self.run.backup / best).is_file():
            best = latest
        return {"latest_file": latest, "best_file": best,
                "model_checkpoint": {"best": _float_or_none(self.checkpoint.best)}}
