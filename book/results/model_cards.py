"""Write the model card of each published model: what it is, what it was trained and scored on.

Usage (from the project root; oneDNN off, as CI scores the models)::

    TF_ENABLE_ONEDNN_OPTS=0 python book/results/model_cards.py pcam-seed pcam-long pcam-mnet-s1 ...

For each NAME in `CARDS`, reads its training record (``book/results/*.json``), scores
``book/results/models/NAME.keras`` with `histolib.evaluate.evaluate_model` (1,000 bootstrap
resamples) on the ``valid`` split of its data, where its epochs and threshold were chosen, and
once on the ``test`` split, which chose nothing, both with 8-view test-time augmentation when its
threshold was chosen that way, and writes ``NAME.json`` beside the model through
`histolib.cards.write_card` (which refuses an incomplete card). ``histolib evaluate`` on the same
split reproduces these scores (the CI test ``tests/test_published_models.py`` checks it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent
PCAM = "folder:../shared/data/pcam-jpeg"  # relative to the project root, where this runs
OVARIAN = "folder:../shared/data/ovarian"

PCAM_LIMITS = ("Trained on 20,000 patches of PCam's training split (a JPEG re-encoding, pcam-jpeg/train); "
               "valid scores are optimistic (the split chose the epoch and the threshold); the test score is "
               "on 1,500 patches of PCam's test split (pcam-jpeg/test), about +-0.02 at 95 %. Patches are "
               "96 x 96 at PCam's resolution; not for other magnifications or stains without checking.")
CARDS = {
    "pcam-seed": {"record": "pcam_seed_run.json", "data": PCAM,
                  "summary": "The PCam seed's model (494,337 parameters, QKV self-attention) trained as the seed "
                             "did for 8 epochs, training seed 0 of the seed's recipe."},
    "pcam-long": {"record": "pcam_long_run.json", "data": PCAM,
                  "summary": "The PCam seed's model trained longer (16 epochs, patience 4), one seed: a variant."},
    "pcam-mnet-s1": {"record": "pcam_mnet_s1_run.json", "data": PCAM,
                     "summary": "ImageNet MobileNet v1 0.25 fine-tuned at 128 px (issue 11's chosen recipe), training "
                                "seed 1, published before the other seeds were trained."},
    "pcam-mnet-ens3": {"record": "pcam_mnet_ens3.json", "data": PCAM,
                       "summary": "The average of issue 11's chosen recipe's training seeds 0-2 (three fine-tuned "
                                  "MobileNet 0.25 models as one)."},
    "pcam-m160-s0": {"record": "pcam_m160_s0_run.json", "data": PCAM,
                     "summary": "ImageNet MobileNet v1 0.25 fine-tuned with the patch resized to 160 px inside the "
                                "model (issue 22's recipe, chosen on valid among screens of one seed each), training "
                                "seed 0: the screen run itself, published by a rule fixed before any test score, "
                                "before seeds 1 and 2 were scored."},
    "ovarian-thr-s0": {"record": "ovarian_thr_s0_run.json", "data": OVARIAN,
                       "summary": "The ovarian seed's head (mean-thresholded attention over the 7 x 7 grid) on a frozen "
                                  "ImageNet MobileNet 0.25 at 224 px, trained on one grouped 80/10/10 split of the 498 "
                                  "real micrographs (split seed 0, near-duplicate families kept together): the "
                                  "command-line reproduction of the seed's pipeline, not the book's ovarian result "
                                  "(that is the grouped cross-validation of chapter 6)."},
}
OVARIAN_LIMITS = ("Trained on one grouped split of 498 micrographs in five classes that are not the seed's (Clear_Cell, "
                  "Endometri, Mucinous, Non_Cancerous, Serous); its test split holds about 50 images, so its test "
                  "score moves by about +-0.14 between splits: read the cross-validated scores of chapter 6 instead. "
                  "Each image is shrunk to 224 x 224 px. Not a diagnostic tool.")


def _member_records(record: dict) -> list[dict]:
    """The training records under book/results of an ensemble's members (matched by command)."""
    commands = {m["command"] for m in record["members"]}
    found = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*_run.json"))]
    return [r for r in found if r.get("command") in commands]


def _training(record: dict) -> dict:
    """The card's ``training`` part from a training record (a run, or an ensemble of runs)."""
    runs = _member_records(record) if "members" in record else [record]
    return {"command": record["command"], "members": [m["command"] for m in record.get("members", [])] or None,
            "precision": sorted({r.get("precision") or r.get("dtype_policy") for r in runs}),
            "cpu_flags": runs[0].get("machine", {}).get("cpu_flags"), "record": None}


def _score(model, source, split: str, threshold: float | None, tta: bool) -> dict:
    """Scores of ``model`` on ``split`` of the `histolib.data.DataSource` ``source``, with 95 %
    bootstrap intervals (the argmax decides for more than two classes: ``threshold`` None)."""
    from histolib import evaluate

    size = tuple(int(s) for s in model.inputs[0].shape[1:3])
    metrics = evaluate.evaluate_model(model, source.load(split, batch_size=128, image_size=size),
                                      threshold=0.5 if threshold is None else threshold, tta=tta, bootstrap=1000, seed=0)
    return {"accuracy": metrics["accuracy"], "auc": metrics["auc"], "n": metrics["n"], "tta": tta,
            "intervals": {k: metrics["ci95"][k] for k in ("accuracy", "auc")},
            "f1": metrics["f1"], "precision": metrics["precision"], "recall": metrics["recall"]}


def _split(record: dict, spec: str) -> tuple[dict, object]:
    """The card's ``split`` part and the `histolib.data.DataSource` it describes: the run's split
    settings and, for a source without split folders, the very files of each split."""
    from histolib import cards, data
    from histolib.config import DataConfig

    config = record.get("config")
    fixed = {"split_seed": record.get("data", {}).get("split_seed"), "groups": None, "oversample": None, "fold": None,
             "split_version": None, "note": "fixed split folders (train, valid, test): no seed cuts them"}
    plain = data.source(spec)
    if config is None or plain.fixed_splits():  # the folders are the split
        return fixed, plain
    settings = DataConfig.from_json({**config["data"], "spec": spec})
    source = settings.source()
    files = {split: cards.relative_files(source.rows(split)[0], source.arg) for split in ("train", "valid", "test")}
    return ({"split_seed": settings.split_seed, "groups": settings.groups, "oversample": settings.oversample,
             "fold": settings.fold, "split_version": settings.split_version, "files": files}, source)


def card_for(name: str) -> dict:
    """Score NAME on valid and test and return its complete card."""
    from histolib import evaluate

    entry = CARDS[name]
    record = json.loads((RESULTS / entry["record"]).read_text())
    chosen = record.get("published_threshold") or record["threshold"]
    threshold, tta = chosen["threshold"], bool(chosen.get("tta"))
    model = evaluate.load_model(RESULTS / "models" / f"{name}.keras")
    training = _training(record)
    training["record"] = training["record"] or f"book/results/{entry['record']}"
    data = record.get("data", {})
    split, source = _split(record, entry["data"])
    return {
        "model": f"{name}.keras", "summary": entry["summary"], "threshold": threshold, "tta": tta,
        "threshold_rule": (f"Youden's J on {chosen.get('split', 'valid')} ({chosen.get('n')} images)"
                           if threshold is not None else "argmax of the class probabilities (five classes)"),
        "data": {"spec": entry["data"], "file_list": data.get("file_list"),
                 "class_names": data.get("class_names", ["0", "1"])},
        "split": split,
        "training": training,
        "scores": {"valid": {"role": "selection: epochs and threshold were chosen here",
                             **_score(model, source, "valid", threshold, tta)},
                   "test": {"role": "final: scored once, after every choice",
                            **_score(model, source, "test", threshold, tta)}},
        "limits": OVARIAN_LIMITS if entry["data"] == OVARIAN else PCAM_LIMITS,
        "environment": {"onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)")},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", choices=sorted(CARDS), help="published models to card")
    args = parser.parse_args(argv)
    from histolib import cards

    for name in args.names:
        card = card_for(name)
        path = cards.write_card(RESULTS / "models" / f"{name}.keras", card)
        scores = card["scores"]
        print(f"{name}: valid {scores['valid']['accuracy']:.4f} / AUC {scores['valid']['auc']:.4f}, "
              f"test {scores['test']['accuracy']:.4f} / AUC {scores['test']['auc']:.4f} "
              f"(TTA {card['tta']}); wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
