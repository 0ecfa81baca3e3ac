"""Training: one resumable `fit` over any builder and dataset.

`fit` compiles a model with Adam and the seeds' callbacks (EarlyStopping that restores the
best weights, ModelCheckpoint of the best ``.keras``, ReduceLROnPlateau with ``factor=0.3``),
logs every epoch to ``history.csv``, chooses a decision threshold on the validation data and
writes a run record. With ``schedule="cosine"`` the learning rate follows a fixed schedule
instead of ReduceLROnPlateau (see `learning_rate_schedule`). Everything lands in one output folder::

    out_dir/
      best.keras        the best epoch's model (with optimizer state), by ``monitor``
      history.csv       one row per finished epoch (CSVLogger; a resumed run appends)
      threshold.json    the decision threshold chosen on validation data (see below)
      run.json          the run record: command, wall time, epochs, seed, versions, commit, machine;
                        its status is running, finished, or failed (with the error) / interrupted
      backup/           resume state: the last finished epoch's model and ``state.json``
                        (with ``checkpoints=False``: no ``best.keras``, no ``backup/``)
      tensorboard/      only with ``tensorboard=True``

Resuming. At the end of every epoch, after all other callbacks, the last finished epoch's model
(weights, optimizer state, learning rate) is saved as ``backup/epoch-NNNN.keras`` and then
``backup/state.json`` is written atomically: the commit point. It holds what Keras's own
``BackupAndRestore`` does not keep: the state of EarlyStopping (best, wait, best epoch),
ModelCheckpoint (best) and ReduceLROnPlateau (best, wait, cooldown), and which epoch's file is
the best (`histolib.runs` keeps the folder and this state). A run killed at any moment and started again with the same arguments continues from
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

Settings. `fit` takes a `histolib.config.RunConfig` (or a bare `histolib.config.TrainConfig` for
a model and datasets made by hand), written into ``run.json`` as ``"config"``; the fields its
metadata marks as resume fields (`RunConfig.resume_view`) must match for a folder's run to go on.
A folder written before run configurations existed is refused in one line.

Randomness. `fit` seeds nothing: the initial weights, dropout and Keras's augmentation layers draw
from the global generators, which the caller seeds once (``keras.utils.set_random_seed``, as the
``histolib train`` command and every chapter do). The config's ``seed`` is recorded and must match
for a run to resume; the data's shuffling and augmentation take their own seed from
``histolib.data.load``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from histolib import evaluate
from histolib.config import SCHEDULES, RunConfig, TrainConfig
from histolib.models.outputs import loss_for
from histolib.runs import BEST_TEMPLATE, EpochCommit, RunFolder
from histolib.strategy import devices_of, get_strategy, training_scope

__all__ = ["FitResult", "SCHEDULES", "balanced_class_weight", "fit", "learning_rate_schedule"]


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


def balanced_class_weight(counts) -> dict:
    """Class weights ``n / (k * count)`` for class counts, through scikit-learn.

    Args:
        counts: images per class, e.g. ``histolib.data.info(spec)["counts"]``.

    Returns:
        ``{class_index: weight}`` as scikit-learn's ``compute_class_weight("balanced")`` gives.
    """
    counts = np.asarray(counts, dtype=int)
    if counts.ndim != 1 or (counts <= 0).any():
        raise ValueError(f"counts must be positive images per class. Received: counts={counts.tolist()}")
    labels = np.repeat(np.arange(len(counts)), counts)
    weights = compute_class_weight("balanced", classes=np.arange(len(counts)), y=labels)
    return {i: float(w) for i, w in enumerate(weights)}


def learning_rate_schedule(schedule: str, learning_rate: float, *, total_steps: int, warmup_steps: int = 0):
    """Adam's learning rate for ``schedule``.

    - ``"plateau"``: the float ``learning_rate``, which ReduceLROnPlateau lowers when the
      monitored value stops improving (the seeds' way);
    - ``"cosine"``: Keras's ``CosineDecay``: a linear warm-up from 0 to ``learning_rate`` over
      ``warmup_steps`` optimizer steps, then half a cosine down to 0 at ``total_steps``
      (Loshchilov & Hutter 2017, SGDR, https://arxiv.org/abs/1608.03983, without restarts).

    Args:
        schedule: one of `SCHEDULES`.
        learning_rate: the peak (cosine) or initial (plateau) learning rate, > 0.
        total_steps: optimizer steps of the whole run (epochs x batches per epoch).
        warmup_steps: steps of linear warm-up, ``0 <= warmup_steps < total_steps``.

    Returns:
        A float, or a ``keras.optimizers.schedules.LearningRateSchedule``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}. Received: schedule={schedule!r}")
    if schedule == "plateau":
        return float(learning_rate)
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warm-up must be shorter than the run ({total_steps} steps). "
                         f"Received: warmup_steps={warmup_steps}")
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(float(learning_rate), int(total_steps))
    return keras.optimizers.schedules.CosineDecay(0.0, int(total_steps - warmup_steps), warmup_target=float(learning_rate),
                                                  warmup_steps=int(warmup_steps))


def _learning_rate(config: TrainConfig, train_ds):
    """`fit`'s learning rate: a float, or the cosine schedule over the whole run's steps."""
    if config.schedule != "cosine":
        return learning_rate_schedule(config.schedule, config.learning_rate, total_steps=1)
    steps = config.steps_per_epoch or (int(train_ds.cardinality()) if hasattr(train_ds, "cardinality") else -1)
    if steps < 1:
        raise ValueError("schedule='cosine' needs the number of batches per epoch, and the training dataset "
                         f"does not know it (cardinality {steps}): set steps_per_epoch. "
                         "Received: steps_per_epoch=None")
    return learning_rate_schedule("cosine", config.learning_rate, total_steps=int(steps) * config.epochs,
                                  warmup_steps=round(config.warmup_epochs * steps))


def _class_weight(config: TrainConfig, class_counts) -> dict | None:
    """The config's class weights as ``{int: float}``: ``"balanced"`` from ``class_counts``."""
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ImportError("fit with tensorboard=True needs the tensorboard package (TensorFlow 2.21 and newer "
                          "no longer install it): pip install tensorboard")
    if config.class_weight == "balanced":
        if class_counts is None:
            raise ValueError("class_weight='balanced' needs the training rows' class counts: pass "
                             "fit(..., class_counts=counts). Received: class_counts=None")
        return balanced_class_weight(class_counts)
    return config.class_weight


def _build_and_compile(model, strategy, *, learning_rate, steps_per_execution):
    """Build ``model`` (a model or a callable) in ``strategy``'s scope and compile it with Adam
    (``learning_rate``: a float or a schedule) and the loss its output calls for
    (`histolib.models.outputs.loss_for`); returns ``(model, loss name)``."""
    with strategy.scope():
        if callable(model) and not isinstance(model, keras.Model):
            model = model()
        if not isinstance(model, keras.Model):
            raise ValueError(f"model must be a keras.Model or a callable returning one. Received: {model!r}")
        loss = loss_for(model)
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if loss == "binary_crossentropy":
            metrics = [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=metrics,
                      steps_per_execution=steps_per_execution)
        model.optimizer.build(model.trainable_variables)
    return model, loss


def _callbacks(run: RunFolder, config: TrainConfig) -> list:
    """The seeds' callbacks (ReduceLROnPlateau, or under a schedule `LogLearningRate`;
    EarlyStopping restoring the best weights, ModelCheckpoint of the best epoch where the run is
    resumable, CSVLogger), TensorBoard when asked, and last the run's `EpochCommit`. With
    ``verbose=0`` the callbacks say nothing either; EarlyStopping never does (its "Restoring model
    weights from the end of the best epoch" after every run is noise: `FitResult` says it)."""
    monitor, mode, say = config.monitor, config.mode, int(config.verbose != 0)
    reduce_lr = None  # under a schedule, which sets the rate; LogLearningRate logs it instead
    if config.schedule == "plateau":
        reduce_lr = keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, mode=mode, factor=config.lr_factor, patience=config.reduce_lr_patience,
            min_lr=config.min_lr, verbose=say)
    early = keras.callbacks.EarlyStopping(
        monitor=monitor, mode=mode, patience=config.patience, restore_best_weights=True, verbose=0)
    callbacks, checkpoint = [LogLearningRate() if reduce_lr is None else reduce_lr, early], None
    if run.resumable:
        checkpoint = keras.callbacks.ModelCheckpoint(
            str(run.backup / BEST_TEMPLATE), monitor=monitor, mode=mode, save_best_only=True)
        callbacks.append(checkpoint)
    callbacks.append(keras.callbacks.CSVLogger(str(run.history_path), append=True))
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run.path / "tensorboard")))
    return callbacks + [EpochCommit(run, early=early, reduce_lr=reduce_lr, checkpoint=checkpoint)]


class LogLearningRate(keras.callbacks.Callback):
    """Puts the optimizer's learning rate of the epoch's end into the epoch's logs as
    ``learning_rate`` (ReduceLROnPlateau does the same), so ``history.csv`` has the column
    under a learning-rate schedule too."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))


def _choose_threshold(model, val_ds, *, validation_steps, num_classes) -> dict:
    y_true, probs = evaluate.predict(model, val_ds, steps=validation_steps)
    if num_classes == 2:
        record = evaluate.choose_threshold(y_true, probs[:, 1])
        record.update(split="validation data given to fit", n=int(len(y_true)))
        return record
    return {"threshold": None, "method": "argmax", "split": "validation data given to fit", "n": int(len(y_true))}


def _result(model, run: RunFolder, *, resumed_from: int, already_finished: bool) -> FitResult:
    s = run.state
    return FitResult(model=model, history=run.history(), threshold=json.loads(run.threshold_path.read_text()),
                     out_dir=run.path, best_epoch=s["best_epoch"], epochs_done=s["epochs_done"],
                     resumed_from=resumed_from, already_finished=already_finished,
                     stopped_early=bool(s.get("stopped_early")))


def _finish(model, val_ds, run: RunFolder, config: TrainConfig, *, resumed_from: int) -> FitResult:
    """After training: the best weights back in ``model``, the threshold chosen on ``val_ds``,
    the run marked finished."""
    if not run.epochs_done:
        raise RuntimeError(f"training in {run.path} finished no epoch")  # pragma: no cover
    if run.resumable:
        model.load_weights(run.best_path)
    # else EarlyStopping(restore_best_weights=True) has put the best epoch's weights back
    run.finish(_choose_threshold(model, val_ds, validation_steps=config.validation_steps,
                                 num_classes=run.state["facts"]["num_classes"]))
    return _result(model, run, resumed_from=resumed_from, already_finished=False)


def _facts(model, strategy, loss: str) -> dict:
    """What the built model and the strategy are (``run.json``'s ``"facts"``): a resumed run's
    classes and loss must be the same."""
    return {"loss": loss, "num_classes": max(2, int(model.outputs[0].shape[-1])), "params": int(model.count_params()),
            "model_name": model.name, "backend": keras.backend.backend(),
            "replicas": int(strategy.num_replicas_in_sync), "devices": devices_of(strategy)}


def _already_finished(model, run: RunFolder) -> FitResult:
    """A finished run's result, trained no further: its best weights loaded into ``model``."""
    model.load_weights(run.best_path)
    print(f"{run.path}: already finished ({run.epochs_done} epochs, best epoch {run.state['best_epoch']}"
          f"{', stopped early' if run.state.get('stopped_early') else ''}); nothing to train.")
    return _result(model, run, resumed_from=run.epochs_done, already_finished=True)


def _train_and_finish(model, train_ds, val_ds, run: RunFolder, config: TrainConfig, *, class_weight):
    """Train the opened ``run`` on from its last finished epoch (unless its epochs are all done and
    only the finish is missing), then finish it and return its `FitResult`. Any error, e.g. an
    image that stopped decoding, is recorded in the run as its failure, then raised."""
    resumed_from = run.epochs_done
    try:
        if not run.trained(config.epochs):
            model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, initial_epoch=resumed_from,
                      steps_per_epoch=config.steps_per_epoch, validation_steps=config.validation_steps,
                      class_weight=class_weight, callbacks=_callbacks(run, config),
                      shuffle=False, verbose=config.verbose)  # datasets come shuffled (or not) from data.load
        return _finish(model, val_ds, run, config, resumed_from=resumed_from)
    except BaseException as error:  # e.g. an image that stopped decoding: the record says so
        run.fail(error)
        raise


def fit(model, train_ds, val_ds, config: RunConfig | TrainConfig, *, out_dir, strategy=None, record=None,
        class_counts=None) -> FitResult:
    """Train ``model`` on ``train_ds``, select on ``val_ds``, resumably, into ``out_dir``.

    Args:
        model: a ``keras.Model`` whose output is probabilities, ``(batch, 1)`` sigmoid for two
            classes or ``(batch, k)`` softmax; or a zero-argument callable returning one, built
            inside the strategy's scope (pass a callable whenever ``strategy`` is not the
            default one). Compiled here: Adam, binary or sparse categorical cross-entropy,
            metrics ``accuracy`` and, for a sigmoid output, ``auc``.
        train_ds: ``tf.data.Dataset`` of ``(images (b, h, w, 3) float32, labels (b,) int32)``,
            e.g. ``histolib.data.load(spec, "train", shuffle=True, augment=...)``.
        val_ds: the same for the validation split (no shuffling, no augmentation).
        config: a `histolib.config.RunConfig`, or a `histolib.config.TrainConfig` alone (its
            ``epochs``, ``learning_rate``, ``patience``, ``schedule``, ``checkpoints`` ... are
            what `fit` reads; the whole config goes into ``run.json``).
        out_dir: output folder (created); see the module docstring for what goes in it.
        strategy: a ``tf.distribute.Strategy``, or under ``KERAS_BACKEND=jax`` a
            `histolib.strategy.DataParallel` (then everything, training and the threshold's
            predictions, runs with its distribution current; give every dataset full global
            batches, `histolib.strategy.make_tpu_safe`); default
            ``histolib.strategy.get_strategy(config.train.strategy)``. ``run.json`` records its
            replicas and devices under ``facts``.
        record: more JSON-ready facts for ``run.json`` (e.g. the data's class counts).
        class_counts: the training rows per class, for ``class_weight="balanced"``.

    Returns:
        A `FitResult`; ``result.model`` holds the best epoch's weights.

    Raises:
        ValueError: for bad arguments, or when ``out_dir`` holds a run made with other resume
            fields (learning rate, patience, monitor, seed, data, model ...), which cannot go on.
    """
    config = config if isinstance(config, RunConfig) else RunConfig(train=config)
    settings = config.train
    class_weight = _class_weight(settings, class_counts)
    rate = _learning_rate(settings, train_ds)
    run = RunFolder(out_dir, resumable=settings.checkpoints)
    if settings.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = get_strategy(settings.strategy) if strategy is None else strategy
    with training_scope(strategy):
        model, loss = _build_and_compile(model, strategy, learning_rate=rate,
                                         steps_per_execution=settings.steps_per_execution)
        facts = {**_facts(model, strategy, loss), "class_weight": class_weight}
        run.check(config, facts)
        if run.finished(settings.epochs):
            return _already_finished(model, run)
        run.open(config, facts, record=record)
        return _train_and_finish(model, train_ds, val_ds, run, settings, class_weight=class_weight)
