"""Record a finished PCam training run under book/results/ for the book to read.

Usage (from the project root, after `histolib train ... --out runs/NAME` and the two
`histolib evaluate ... --json` calls on the valid split, without and with --tta)::

    python book/results/pcam_record.py runs/pcam-seed --name pcam-seed \
        --valid runs/pcam-seed/valid.json --valid-tta runs/pcam-seed/valid_tta.json \
        --out book/results/pcam_seed_run.json [--publish] [--variants book/results/pcam_variants.json]

Writes ``--out`` (the run record: metrics on valid, command, wall time, epochs, seed,
package versions, git commit, data file count and digest, machine), copies ``history.csv``
beside it, and with ``--publish`` saves the best model without optimizer state as
``book/results/models/NAME.keras``, its threshold in the record (``published_threshold``), from
which ``book/results/model_cards.py`` writes the model card once the model is scored. With
``--variants`` it also adds or replaces the run's entry in that list of variants tried. Run
records of either layout are read (`run_facts`).

A model meant to be read with 8-view test-time augmentation is published with
``--tta-data SPEC``: its threshold is then chosen again, by Youden's J on SPEC's ``valid`` split
predicted with the 8 views, and marked ``"tta": true`` (score it with ``histolib evaluate
--tta``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

RESULTS = Path(__file__).resolve().parent
SELECTION_NOTE = (
    "valid is the selection split: early stopping, the best checkpoint, the learning-rate "
    "schedule and the decision threshold were all chosen on it, so scores on it are optimistic. "
    "The fair score is on PCam test patches, outside this repository."
)
COMPARISON_RULE = (
    "Each variant here was trained once (seed 0). A difference between two single runs, even "
    "outside their bootstrap intervals (which cover the valid cases, not the training seed), is "
    "not a claim that one helps: that needs several training seeds per variant and a paired test "
    "(histolib.evaluate.paired_comparison)."
)
YARDSTICK = {
    "seed_published_test": {"accuracy": 0.831, "train_patches": 222822,
                            "note": "the PCam seed's README, TFDS test split, TPU training (it published no ROC AUC)"},
    "calibration_run_valid": {"accuracy": 0.791, "auc": 0.874, "epochs": 8,
                              "note": "plain Keras, same data and augmentation (the design notes' calibration run)"},
}
KEYS = ("accuracy", "precision", "recall", "f1", "auc", "balanced_accuracy", "brier", "n", "threshold",
        "confusion_matrix", "ci95", "tta")


def _metrics(path: Path) -> dict:
    data = json.loads(path.read_text())
    return {k: data[k] for k in KEYS if k in data}


def tta_threshold(model, spec: str) -> dict:
    """The decision threshold of ``model`` chosen on ``spec``'s valid split with 8-view TTA."""
    from histolib import data, evaluate

    size = tuple(model.inputs[0].shape[1:3])
    y_true, probs = evaluate.predict(model, data.load(spec, "valid", batch_size=128, image_size=size), tta=True)
    chosen = evaluate.choose_threshold(y_true, probs[:, 1])
    return {**chosen, "split": "valid, 8-view test-time augmentation", "n": int(len(y_true)), "tta": True}


def publish(model, name: str, models: Path) -> Path:
    """Save ``model`` without optimizer state as ``models/NAME.keras``. Its threshold goes into the
    record (``published_threshold``) and from there into the model card that
    ``book/results/model_cards.py`` writes once the model is scored: a model is committed only
    with its complete card."""
    models.mkdir(parents=True, exist_ok=True)
    model.save(models / f"{name}.keras", include_optimizer=False)
    return models / f"{name}.keras"


def run_facts(run: dict) -> dict:
    """What a record needs of a ``run.json``, from either layout: the run configuration
    (``config``, ``facts``) or the older flat one (``settings``, ``model``, ``augment`` ...)."""
    if "config" in run:
        config = run["config"]
        return {"settings": {**config["train"], **run["facts"]}, "model": config["model"]["name"],
                "augment": config["train"]["augment"], "batch_size": config["train"]["batch_size"],
                "data": {**run["data"], **config["data"]}, "config": config}
    return {"settings": run["settings"], "model": run.get("model"), "augment": run.get("augment"),
            "batch_size": run.get("batch_size"), "data": run["data"], "config": None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the training output folder (runs/NAME)")
    parser.add_argument("--name", required=True, help="short name, e.g. pcam-seed")
    parser.add_argument("--valid", required=True, type=Path, help="histolib evaluate --json on valid")
    parser.add_argument("--valid-tta", type=Path, help="the same with --tta")
    parser.add_argument("--out", type=Path, required=True, help="the record to write (JSON); the history goes beside it")
    parser.add_argument("--models", type=Path, default=RESULTS / "models", help="where --publish saves the model")
    parser.add_argument("--description", default="", help="what this run changes")
    parser.add_argument("--note", action="append", default=[], help="a remark for the record (repeatable)")
    parser.add_argument("--publish", action="store_true", help="save the model under book/results/models/")
    parser.add_argument("--tta-data", metavar="SPEC", help="with --publish: choose the threshold on SPEC's valid "
                        "split with 8-view TTA and mark it tta: true")
    parser.add_argument("--variants", type=Path, help="add the run to this list of variants (JSON)")
    args = parser.parse_args(argv)

    run = json.loads((args.run / "run.json").read_text())
    if run.get("status") != "finished":
        parser.error(f"{args.run} holds an unfinished run (status {run.get('status')!r})")
    valid_json = json.loads(args.valid.read_text())
    environment, facts = run["environment"], run_facts(run)
    record = {
        "name": args.name,
        "description": args.description or None,
        "notes": args.note,
        "command": run["command"],
        "sessions": run["sessions"],
        "wall_s": run["wall_s"],
        "epochs_requested": facts["settings"]["epochs"],
        "epochs_done": run["epochs_done"],
        "best_epoch": run["best_epoch"],
        "stopped_early": run["stopped_early"],
        "monitor": facts["settings"]["monitor"],
        "seed": run["seed"],
        "settings": facts["settings"],
        "config": facts["config"],
        "model": facts["model"],
        "augment": facts["augment"],
        "batch_size": facts["batch_size"],
        "precision": run.get("precision"),
        "threshold": run["threshold"],
        "data": {**facts["data"], "evaluated": {"spec": valid_json["data"], "split": valid_json["split"],
                                              "file_list": valid_json.get("file_list")}},
        "valid": _metrics(args.valid),
        "valid_tta": _metrics(args.valid_tta) if args.valid_tta else None,
        "selection_note": SELECTION_NOTE,
        "yardstick": YARDSTICK,
        "packages": environment["packages"],
        "git": environment["git"],
        "machine": environment["machine"],
        "dtype_policy": environment["dtype_policy"],
    }
    stem = args.name.replace("-", "_")
    history = args.out.parent / f"{stem}_history.csv"
    shutil.copyfile(args.run / "history.csv", history)
    record["history_csv"] = history.name
    if args.publish:
        from histolib.evaluate import load_model

        model = load_model(args.run / "best.keras")
        threshold = tta_threshold(model, args.tta_data) if args.tta_data else run["threshold"]
        path = publish(model, args.name, args.models)
        record["published_model"] = os.path.relpath(path, args.out.parent)
        record["published_threshold"] = threshold
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.variants:
        variants = json.loads(args.variants.read_text()) if args.variants.is_file() else {
            "selection_note": SELECTION_NOTE, "comparison_rule": COMPARISON_RULE, "yardstick": YARDSTICK,
            "variants": []}
        entry = {k: record[k] for k in ("name", "description", "notes", "command", "wall_s", "epochs_done", "best_epoch",
                                        "stopped_early", "seed", "augment", "model", "threshold", "valid",
                                        "valid_tta", "history_csv")}
        entry["git_commit"] = record["git"]["commit"]
        variants["variants"] = [v for v in variants["variants"] if v["name"] != args.name] + [entry]
        args.variants.write_text(json.dumps(variants, indent=2) + "\n")
        print(f"updated {args.variants} ({len(variants['variants'])} variants)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
