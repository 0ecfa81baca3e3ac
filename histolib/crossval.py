"""Grouped, stratified K-fold cross-validation of one run configuration: what ``histolib cv`` runs.

For a source without split folders (hundreds of images, where one small test split cannot carry a
claim), `cross_validate` trains ``config`` once per fold and repeat: the test part is one fold of
scikit-learn's ``StratifiedGroupKFold`` (shuffled, seed ``split_seed + repeat``), a valid part for
early stopping is held out of the rest by groups, and no group is ever on two sides
(`histolib.data.splits.Folds`). Each fold trains through `histolib.experiment.train_from_spec`,
so every route (cached features, tiles, whole images) is the command's own.

``out_dir`` receives:

- ``runs/rR-fK/``: each fold's run folder (``run.json`` with its configuration, the model);
- ``folds/rR-fK.json``: each fold's test files, labels and probabilities, written when the fold is
  done: a killed cross-validation resumes from its last finished fold;
- ``oof.csv``: one row per image and repeat: ``file`` (``class/name`` relative to the data root),
  ``group``, ``repeat``, ``fold``, ``label`` (the class name), then one probability per class;
- ``cv.json``: the command, each fold's metrics and test files, the mean and standard deviation
  over folds of macro F1, accuracy, balanced accuracy and one-vs-rest AUC, the pooled out-of-fold
  confusion matrix, and a bootstrap interval over groups.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from pathlib import Path

import keras
import numpy as np
from sklearn import metrics as skm

from histolib import cards, files, tiles
from histolib.config import RunConfig
from histolib.data.groups import group_by as groups_arg
from histolib.data.groups import group_keys
from histolib.experiment import train_from_spec

__all__ = ["cross_validate", "fold_metrics", "summarise"]

#: The per-fold metrics `cross_validate` reports, macro-averaged over classes where that applies.
METRICS = ("macro_f1", "accuracy", "balanced_accuracy", "auc")


def fold_metrics(labels, probs) -> dict:
    """Macro F1, accuracy and balanced accuracy of the argmax, and the one-vs-rest macro ROC AUC
    (NaN when a class is missing from ``labels``), for int ``labels`` ``(n,)`` and ``probs``
    ``(n, k)``."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    calls = probs.argmax(axis=1)
    present = len(np.unique(labels)) == probs.shape[1]
    auc = skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro") if present else float("nan")
    return {"macro_f1": float(skm.f1_score(labels, calls, average="macro")),
            "accuracy": float(skm.accuracy_score(labels, calls)),
            "balanced_accuracy": float(skm.balanced_accuracy_score(labels, calls)), "auc": float(auc)}


def _fold(config: RunConfig, repeat: int, fold: int, folds: int, out_dir: Path) -> dict:
    """Train one fold (or read it back when it is done) and return its test predictions."""
    done = out_dir / "folds" / f"r{repeat}-f{fold}.json"
    if done.is_file():
        return json.loads(done.read_text())
    started = time.perf_counter()
    data = dataclasses.replace(config.data, split_seed=config.data.split_seed + repeat, folds=folds, fold=fold)
    fold_config = config.replace(data=data)
    keras.utils.set_random_seed(config.train.seed)  # each fold starts from the same initial weights
    result = train_from_spec(fold_config, out_dir=out_dir / "runs" / f"r{repeat}-f{fold}")
    source = data.source()
    paths, labels = source.rows("test")
    probs = tiles.predict_split(result.model, source, "test", image_size=data.image_size)
    names = cards.relative_files(paths, source.arg) if source.entry.folder else [str(p) for p in paths]
    record = {"repeat": repeat, "fold": fold, "files": names,
              "labels": np.asarray(labels).tolist(), "probs": np.asarray(probs).tolist(),
              "metrics": fold_metrics(labels, probs), "epochs": result.epochs_done,
              "seconds": round(time.perf_counter() - started, 1)}
    done.parent.mkdir(parents=True, exist_ok=True)
    files.write_json(done, record)
    return record


def _group_of(config: RunConfig) -> dict:
    """``{class/name: group key}`` of every file of a folder source grouped by ``--groups``
    (near-duplicate families, a table); empty otherwise, where each image is its own group."""
    source = config.data.source()
    if not config.data.groups or not source.entry.folder:
        return {}
    paths, root = source.image_files()
    keys = group_keys(paths, groups_arg(config.data.groups), root)
    return dict(zip(cards.relative_files(paths, root), map(str, keys)))


def _write_oof(path: Path, folds: list, group_of: dict, class_names: list) -> None:
    with files.atomic_file(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "group", "repeat", "fold", "label", *class_names])
        for record in folds:
            for name, label, probs in zip(record["files"], record["labels"], record["probs"]):
                writer.writerow([name, group_of.get(name, name), record["repeat"], record["fold"], class_names[label],
                                 *(f"{p:.6f}" for p in probs)])


def summarise(folds: list, group_of: dict, class_names: list, *, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Mean and standard deviation over folds, the pooled confusion matrix of every repeat's
    out-of-fold calls, and a 95 % bootstrap interval of the pooled macro F1 over groups (groups
    drawn with replacement, each bringing all its images and repeats)."""
    table = {m: [f["metrics"][m] for f in folds] for m in METRICS}
    labels = np.concatenate([f["labels"] for f in folds])
    probs = np.concatenate([f["probs"] for f in folds])
    owners = np.array([group_of.get(name, name) for f in folds for name in f["files"]])
    keys, inverse = np.unique(owners, return_inverse=True)
    rng, draws = np.random.default_rng(seed), []
    for _ in range(bootstrap):
        take = np.concatenate([np.flatnonzero(inverse == g) for g in rng.integers(0, len(keys), len(keys))])
        draws.append(skm.f1_score(labels[take], probs[take].argmax(axis=1), average="macro"))
    return {"mean": {m: float(np.nanmean(v)) for m, v in table.items()},
            "sd": {m: float(np.nanstd(v, ddof=1)) for m, v in table.items()},
            "folds": len(folds), "pooled": fold_metrics(labels, probs),
            "confusion_matrix": skm.confusion_matrix(labels, probs.argmax(axis=1),
                                                     labels=range(len(class_names))).tolist(),
            "bootstrap_macro_f1_95": [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))],
            "bootstrap": {"resamples": bootstrap, "unit": "near-duplicate group", "groups": int(len(keys))}}


def cross_validate(config: RunConfig, *, folds: int, repeats: int, out_dir) -> dict:
    """Cross-validate ``config`` (see the module docstring) and return what ``cv.json`` holds.

    Args:
        config: a `histolib.config.RunConfig` on a source without split folders; its
            ``data.split_seed`` seeds the first repeat's folds, and each fold trains from
            ``train.seed``.
        folds, repeats: ``K`` folds, ``R`` repeats (each with its own shuffle).
        out_dir: the folder of the folds' runs, ``oof.csv`` and ``cv.json``.
    """
    out_dir = Path(out_dir)
    if config.data.source().fixed_splits():
        raise ValueError(f"{config.data.spec} has fixed split folders; cross-validation needs a source without "
                         "them (an image folder of class folders)")
    done = []
    for repeat in range(repeats):
        for fold in range(folds):
            record = _fold(config, repeat, fold, folds, out_dir)
            done.append(record)
            m = record["metrics"]
            print(f"repeat {repeat + 1}/{repeats} fold {fold + 1}/{folds}: macro F1 {m['macro_f1']:.3f}, accuracy "
                  f"{m['accuracy']:.3f} ({len(record['files'])} test images, {record['seconds']:.0f} s)", flush=True)
    class_names = config.data.source().info("train")["class_names"]
    group_of = _group_of(config)
    _write_oof(out_dir / "oof.csv", done, group_of, class_names)
    record = {"command": config.command, "config": config.to_json(), "folds": folds, "repeats": repeats,
              "class_names": class_names, "summary": summarise(done, group_of, class_names, seed=config.train.seed),
              "per_fold": [{k: f[k] for k in ("repeat", "fold", "metrics", "epochs", "seconds", "files")} for f in done]}
    files.write_json(out_dir / "cv.json", record)
    return record
