"""Record the command-line ovarian run (one grouped split) under book/results and publish its model.

Usage (from the project root, with HISTOLIB_WEIGHTS_DIR=../shared/weights)::

    histolib train --data folder:../shared/data/ovarian --groups near-duplicates --seed 0 --image-size 224 \
        --model mobilenet_025+thresholded --weights imagenet --epochs 20 --batch-size 16 --augment subtype \
        --out runs/ovarian-thr-s0
    histolib evaluate --model runs/ovarian-thr-s0/best.keras --data folder:../shared/data/ovarian \
        --split test --json runs/ovarian-thr-s0/test.json
    python book/results/ovarian_record.py runs/ovarian-thr-s0
    python book/results/model_cards.py ovarian-thr-s0

Writes ``ovarian_thr_s0_run.json`` (the run record with its configuration, and the two commands),
``ovarian_thr_s0_test.json`` and ``ovarian_thr_s0_history.csv``, and saves the best model without
optimizer state as ``models/ovarian-thr-s0.keras`` (its card comes from ``model_cards.py``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent
NAME = "ovarian-thr-s0"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the finished training folder (with test.json from evaluate)")
    args = parser.parse_args(argv)
    from histolib.evaluate import load_model

    run = json.loads((args.run / "run.json").read_text())
    if run.get("status") != "finished":
        parser.error(f"{args.run} holds an unfinished run (status {run.get('status')!r})")
    test = json.loads((args.run / "test.json").read_text())
    stem = NAME.replace("-", "_")
    record = {
        "name": NAME,
        "description": "the ovarian seed's thresholded-attention head on a frozen ImageNet MobileNet 0.25, one "
                       "grouped split (split seed 0, near-duplicate families on one side): the command-line route",
        "evaluate_command": f"histolib evaluate --model {args.run}/best.keras --data {test['data']} --split test "
                            f"--json {args.run}/test.json",
        "history_csv": f"{stem}_history.csv", "test_json": f"{stem}_test.json", "model_file": f"models/{NAME}.keras",
        **run, "published_threshold": run["threshold"],
    }
    (RESULTS / f"{stem}_run.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / f"{stem}_test.json").write_text(json.dumps(test, indent=2) + "\n")
    shutil.copyfile(args.run / "history.csv", RESULTS / f"{stem}_history.csv")
    load_model(args.run / "best.keras").save(RESULTS / "models" / f"{NAME}.keras", include_optimizer=False)
    print(f"{NAME}: test macro F1 {test['f1']:.3f}, accuracy {test['accuracy']:.3f} (n={test['n']}); records written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
