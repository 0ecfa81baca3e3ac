"""Does mixed_bfloat16 cost the seed's PCam model accuracy? A paired comparison over seeds.

Usage (from the project root; oneDNN on, as real runs train)::

    python book/results/precision_compare.py --seeds 0 1 2 3 4 --epochs 3 --runs runs/precision \
        --out book/results/precision_pcam.json

For every training seed, trains the PCam seed's model (``seed-pcam``, ``pcam-seed`` augmentation)
on the 20,000 real patches of ``../shared/data/pcam-jpeg/train`` twice, once in float32 and once in
mixed_bfloat16 (``histolib train --precision ...``, everything else equal), scores both on the
``valid`` split (accuracy at the threshold chosen there, ROC AUC: a selection question, so the
selection split) and writes the per-seed scores, their paired comparison
(`histolib.evaluate.paired_comparison`: paired t-test and Wilcoxon, variant = bfloat16) with a 95 %
t-interval of the mean difference, the training wall times, the commands and the machine. A run
already finished in ``--runs`` is not trained again, nor scored again once its ``valid.json`` exists.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

DATA = "folder:../shared/data/pcam-jpeg"
PRECISIONS = ("float32", "mixed_bfloat16")


def _histolib(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "histolib", *args], check=True)


def run_one(precision: str, seed: int, epochs: int, runs: Path) -> dict:
    """Train and score one (precision, seed); returns its valid scores and commands."""
    out = runs / f"{precision}-s{seed}"
    train = ["train", "--data", DATA, "--model", "seed-pcam", "--epochs", str(epochs), "--patience", str(epochs),
             "--augment", "pcam-seed", "--precision", precision, "--seed", str(seed), "--out", str(out)]
    score = ["evaluate", "--model", str(out / "best.keras"), "--data", DATA, "--split", "valid",
             "--json", str(out / "valid.json")]
    _histolib(*train)
    if not (out / "valid.json").exists():
        _histolib(*score)
    valid = json.loads((out / "valid.json").read_text())
    record = json.loads((out / "run.json").read_text())
    return {"precision": precision, "seed": seed, "accuracy": valid["accuracy"], "auc": valid["auc"],
            "n": valid["n"], "best_epoch": record["best_epoch"], "train_wall_s": record["wall_s"],
            "precision_used": record["precision"],
            "commands": ["histolib " + " ".join(train), "histolib " + " ".join(score)]}


def compare(baseline: list, variant: list) -> dict:
    """`paired_comparison` of two ``(s,)`` per-seed score lists, with ``ci95``: the 95 % t-interval
    of the mean difference (variant - baseline)."""
    from scipy import stats

    from histolib import evaluate

    interval = stats.ttest_rel(variant, baseline).confidence_interval(0.95)
    return {**evaluate.paired_comparison(baseline, variant), "ci95": [float(interval.low), float(interval.high)]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--runs", type=Path, default=Path("runs/precision"))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("precision_pcam.json"))
    args = parser.parse_args(argv)
    from histolib import provenance, strategy

    rows = [run_one(p, s, args.epochs, args.runs) for s in args.seeds for p in PRECISIONS]
    by = {p: [r for r in rows if r["precision"] == p] for p in PRECISIONS}
    data_files = json.loads((args.runs / f"float32-s{args.seeds[0]}" / "run.json").read_text())["data"]["file_list"]
    comparison = {metric: compare([r[metric] for r in by["float32"]], [r[metric] for r in by["mixed_bfloat16"]])
                  for metric in ("accuracy", "auc")}
    record = {"question": "does mixed_bfloat16 lower the seed PCam model's valid scores against float32?",
              "model": "seed-pcam", "data": {"spec": DATA, "file_list": data_files},
              "split": "valid (selection)", "epochs": args.epochs,
              "seeds": args.seeds, "runs": rows, "paired": comparison,
              "onednn": strategy.onednn_enabled(), "environment": provenance.describe_environment()}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    for metric, result in comparison.items():
        print(f"{metric}: float32 {result['mean_baseline']:.4f}, bfloat16 {result['mean_variant']:.4f}, "
              f"difference {result['mean_difference']:+.4f} "
              f"[{result['ci95'][0]:+.4f}, {result['ci95'][1]:+.4f}] (t p {result['ttest_rel']['pvalue']:.3g}, "
              f"Wilcoxon p {result['wilcoxon']['pvalue']:.3g})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
