"""Collect the ovarian cross-validation screens (issue 19) into one record for the book.

Usage (from the project root, after each screen's ``histolib cv ... --out runs/NAME``)::

    python book/results/ovarian_cv_screens.py runs/NAME [runs/NAME ...] --out book/results/ovarian_cv_screens.json

Each screen is one repeat of grouped 5-fold cross-validation (near-duplicate families kept in
one fold) of a tile classifier's head on the 498 real micrographs: the record keeps its exact
command, the mean and sd over folds of macro F1, accuracy, balanced accuracy and one-vs-rest
AUC, the pooled out-of-fold scores and the bootstrap interval over groups, as ``cv.json`` has
them. Screens compare training settings of one recipe; with one repeat each, differences of a
few hundredths are within fold-to-fold spread and are not claims.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NOTE = ("Screens of the tiles-both+meanmax head's training settings, one repeat of 5 grouped folds each, "
        "on the same folds (split seed 0); features from the frozen ImageNet and PCam-tuned MobileNet 0.25 on "
        "224-px tiles at native resolution. Settings were compared on these folds, so the best screen's "
        "score is optimistic; the floor of issue 19 is on 5 folds x 3 repeats of one fixed recipe.")


def screen(folder: Path) -> dict:
    """One screen's entry from ``folder/cv.json``."""
    record = json.loads((folder / "cv.json").read_text())
    summary = record["summary"]
    return {"name": folder.name, "command": record["command"], "folds": record["folds"], "repeats": record["repeats"],
            "mean": summary["mean"], "sd": summary["sd"], "pooled": summary["pooled"],
            "bootstrap_macro_f1_95": summary["bootstrap_macro_f1_95"],
            "epochs": [fold["epochs"] for fold in record["per_fold"]]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="histolib cv output folders")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    screens = [screen(folder) for folder in args.runs]
    args.out.write_text(json.dumps({"note": NOTE, "screens": screens}, indent=2) + "\n")
    print(f"wrote {args.out} ({len(screens)} screens)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
