"""Publish the seeds of one PCam recipe as one ensemble model, for the book to read.

Usage (from the project root, after the runs have finished)::

    python book/results/pcam_ensemble.py runs/pcam-mobilenet-s1 runs/pcam-mobilenet-s2 \
        runs/pcam-mobilenet-s3 --name pcam-mobilenet-ens3 --data folder:../shared/data/pcam-jpeg \
        --out book/results/pcam_mobilenet_ens3_run.json

Loads each run's ``best.keras``, averages them with `histolib.models.build_ensemble`, chooses the
decision threshold on the ``valid`` split of ``--data`` with 8-view test-time augmentation
(``"tta": true``), saves ``book/results/models/NAME.keras`` (its threshold goes into the record
and then into the card that ``book/results/model_cards.py`` writes), scores
the saved model on ``valid`` plain and with TTA (with 1,000 bootstrap resamples), and writes the
record: the members' runs (seed, command, commit), the scores, the threshold. The ensemble was
not trained as a whole: nothing of it was selected beyond what selected its members and the
threshold, both on ``valid``, so its ``valid`` scores are optimistic like theirs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pcam_record import RESULTS, SELECTION_NOTE, publish, tta_threshold


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="the members' training folders (runs/NAME)")
    parser.add_argument("--name", required=True, help="the ensemble's name, e.g. pcam-mobilenet-ens3")
    parser.add_argument("--data", required=True, metavar="SPEC", help="the data whose valid split picks the threshold")
    parser.add_argument("--out", type=Path, required=True, help="the record to write (JSON)")
    parser.add_argument("--models", type=Path, default=RESULTS / "models", help="where the model is saved")
    args = parser.parse_args(argv)

    from histolib import data, evaluate
    from histolib.models import build_ensemble

    members = [json.loads((run / "run.json").read_text()) for run in args.runs]
    if any(m.get("status") != "finished" for m in members):
        parser.error("every member run must be finished")
    ensemble = build_ensemble([evaluate.load_model(run / "best.keras") for run in args.runs],
                              name=args.name.replace("-", "_"))
    threshold = tta_threshold(ensemble, args.data)
    path = publish(ensemble, args.name, args.models)
    model = evaluate.load_model(path)
    valid = data.load(args.data, "valid", batch_size=128)
    scores = {key: evaluate.evaluate_model(model, valid, threshold=threshold["threshold"], tta=tta, bootstrap=1000)
              for key, tta in (("valid", False), ("valid_tta", True))}
    record = {
        "name": args.name,
        "description": f"the {len(members)} seeds' best models averaged (histolib.models.build_ensemble)",
        "command": " ".join(["python book/results/pcam_ensemble.py", *(sys.argv[1:] if argv is None else argv)]),
        "members": [{"run": str(run), "seed": m["seed"], "command": m["command"], "wall_s": m["wall_s"],
                     "best_epoch": m["best_epoch"], "git": m["environment"]["git"]} for run, m in zip(args.runs, members)],
        "wall_s": round(sum(m["wall_s"] for m in members), 1),
        "params": model.count_params(),
        "threshold": threshold,
        **{k: {m: v[m] for m in ("accuracy", "precision", "recall", "f1", "auc", "balanced_accuracy", "brier", "n",
                                  "threshold", "confusion_matrix", "ci95", "tta") if m in v} for k, v in scores.items()},
        "data": {"spec": args.data, "split": "valid", "file_list": data.folder_digest(args.data)},
        "selection_note": SELECTION_NOTE,
        "published_model": os.path.relpath(path, args.out.parent),
        "published_threshold": threshold,
    }
    args.out.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"{args.name}: valid accuracy {scores['valid']['accuracy']:.4f} AUC {scores['valid']['auc']:.4f}; "
          f"TTA {scores['valid_tta']['accuracy']:.4f} / {scores['valid_tta']['auc']:.4f}; wrote {args.out}, {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
