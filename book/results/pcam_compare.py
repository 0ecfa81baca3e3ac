"""Compare two PCam recipes over training seeds, from their recorded runs, for the book to read.

Usage (from the project root, after each seed's run is recorded with ``pcam_record.py``)::

    python book/results/pcam_compare.py --baseline pcam-seed-s1 pcam-seed-s2 pcam-seed-s3 \
        --variant pcam-mobilenet-s1 pcam-mobilenet-s2 pcam-mobilenet-s3 --out book/results/pcam_recipes.json

Reads ``book/results/<name>_run.json`` (``-`` in the name becomes ``_``) for every run, pairs the
two recipes' runs by training seed, and writes ``--out``: each recipe's command (with the seed
left out), per-seed valid accuracy and ROC AUC (plain and with 8-view test-time augmentation),
mean, standard deviation (ddof 1) and range over seeds, and
`histolib.evaluate.paired_comparison` of the variant against the baseline for each of the four
scores. Every score is on ``valid``, the split the runs were selected on.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from histolib.evaluate import paired_comparison

RESULTS = Path(__file__).resolve().parent
SCORES = {"accuracy": ("valid", "accuracy"), "auc": ("valid", "auc"),
          "accuracy_tta": ("valid_tta", "accuracy"), "auc_tta": ("valid_tta", "auc")}


def _record(name: str) -> dict:
    path = RESULTS / f"{name.replace('-', '_')}_run.json"
    if not path.is_file():
        raise SystemExit(f"no record {path}: record the run with pcam_record.py first")
    return json.loads(path.read_text())


def _recipe(names) -> dict:
    runs = sorted((_record(n) for n in names), key=lambda r: r["seed"])
    commands = {re.sub(r" --seed \d+| --out \S+", "", r["command"]) for r in runs}
    per_seed = [{"name": r["name"], "seed": r["seed"], "wall_min": round(r["wall_s"] / 60, 1),
                 "best_epoch": r["best_epoch"], "epochs_done": r["epochs_done"],
                 **{k: r[split][m] for k, (split, m) in SCORES.items()}} for r in runs]
    summary = {}
    for k in SCORES:
        values = np.array([row[k] for row in per_seed])
        summary[k] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else None,
                      "min": float(values.min()), "max": float(values.max())}
    return {"command": sorted(commands), "commits": sorted({r["git"]["commit"] for r in runs}),
            "cpu": sorted({r["machine"]["cpu"] for r in runs}),
            "cpu_flags": sorted({f for r in runs for f in r["machine"]["cpu_flags"]}),
            "per_seed": per_seed, "summary": summary}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", nargs="+", required=True, help="the baseline recipe's run names")
    parser.add_argument("--variant", nargs="+", required=True, help="the variant recipe's run names")
    parser.add_argument("--out", type=Path, required=True, help="the comparison to write (JSON)")
    parser.add_argument("--note", action="append", default=[], help="a remark for the record (repeatable)")
    args = parser.parse_args(argv)
    baseline, variant = _recipe(args.baseline), _recipe(args.variant)
    seeds = [row["seed"] for row in baseline["per_seed"]]
    if seeds != [row["seed"] for row in variant["per_seed"]]:
        parser.error(f"the two recipes must share their seeds: {seeds} against "
                     f"{[row['seed'] for row in variant['per_seed']]}")
    comparisons = {k: paired_comparison([r[k] for r in baseline["per_seed"]], [r[k] for r in variant["per_seed"]])
                   for k in SCORES}
    record = {
        "what": "a PCam recipe against the seed's, over training seeds, on pcam-jpeg/valid",
        "selection_note": ("Scores on valid, the split that chose each run's best epoch and threshold, and on "
                           "which the variant recipe itself was chosen among the screened candidates: "
                           "optimistic. The fair score is on PCam's test split (histolib evaluate --split test)."),
        "seeds": seeds, "baseline": baseline, "variant": variant, "paired": comparisons, "notes": args.note,
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    for k, c in comparisons.items():
        print(f"{k}: baseline {c['mean_baseline']:.4f}, variant {c['mean_variant']:.4f}, "
              f"difference {c['mean_difference']:+.4f}, paired t p={c['ttest_rel']['pvalue']:.3g}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
