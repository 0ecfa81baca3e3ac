"""Short screening runs of candidate PCam recipes on the JPEG folder (exploration, issue 11).

Usage (from the project root)::

    python book/results/pcam_screen.py --arch mnet025@128 --aug pcam --epochs 6 --lr 1e-3 --warmup 0.3 \
        --precision float32 --out runs/s02-mnet025at128-pcam-cos
    python book/results/pcam_screen.py --collect runs/s01-... runs/s02-... --out book/results/pcam_screens.json

This is how the candidates were screened before the chosen recipe was trained with
``histolib train`` over seeds; it is kept for provenance, not as library code. ``--arch`` is
``mnet025[@S]``: Keras's MobileNet v1 at width 0.25 with the ImageNet weights of
``../shared/weights/mobilenet_2_5_224_tf_no_top.h5``, all layers trained, inputs centred to
[-1, 1] and resized to S pixels inside the model (default 96, no resize), global average
pooling, dropout 0.2 and one sigmoid; ``mnet025r[@S]`` the same from random weights. ``--aug``
is an augmentation set of `histolib.data.augment`. Training: Adam, cosine decay to 0 with a
linear warm-up (``--sched cosine``) or a constant rate lowered by ReduceLROnPlateau
(``--sched plateau``), batch 64, the 20,000 train patches; validation on all 3,000 valid patches
after every epoch. The last epoch's model is scored on valid, plain and with 8-view test-time
augmentation (AUC; accuracy at 0.5 and at Youden's threshold, which is chosen on valid itself
and so doubly optimistic). ``--collect`` gathers the runs' ``result.json`` files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DATA = "folder:" + str(Path(__file__).resolve().parents[3] / "shared" / "data" / "pcam-jpeg")
WEIGHTS = Path(__file__).resolve().parents[3] / "shared" / "weights" / "mobilenet_2_5_224_tf_no_top.h5"


def build(arch: str, dropout: float):
    import keras

    name, _, size = arch.partition("@")
    if name not in ("mnet025", "mnet025r"):
        raise SystemExit(f"unknown --arch {arch!r}: mnet025[@S] or mnet025r[@S]")
    size = int(size or 96)
    inputs = keras.Input((96, 96, 3), name="image")
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="centre")(inputs)
    if size != 96:
        x = keras.layers.Resizing(size, size, name="upscale")(x)
    base = keras.applications.MobileNet(input_shape=(size, size, 3), alpha=0.25, include_top=False,
                                        weights=str(WEIGHTS) if name == "mnet025" else None)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(base(x))
    x = keras.layers.Dropout(dropout)(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="prob")(x))


def score(model, val_ds, out: Path) -> dict:
    import numpy as np

    from histolib import evaluate

    scores = {}
    for tta in (False, True):
        y, probs = evaluate.predict(model, val_ds, tta=tta)
        threshold = evaluate.choose_threshold(y, probs[:, 1])["threshold"]
        half = evaluate.classification_metrics(y, probs, threshold=0.5)
        youden = evaluate.classification_metrics(y, probs, threshold=threshold)
        scores["tta" if tta else "plain"] = {"auc": round(half["auc"], 4), "acc@0.5": round(half["accuracy"], 4),
                                             "acc@youden": round(youden["accuracy"], 4),
                                             "youden_th": round(threshold, 4)}
        np.save(out / f"probs_{'tta' if tta else 'plain'}.npy", probs[:, 1].astype(np.float32))
    return scores


def train(args) -> dict:
    import keras
    import numpy as np

    from histolib import data
    from histolib.data.augment import augmentation

    keras.utils.set_random_seed(args.seed)
    pipeline = augmentation(args.aug, args.seed)
    train_ds = data.load(DATA, "train", batch_size=args.bs, shuffle=True, seed=args.seed)
    train_ds = train_ds.map(lambda x, y: (pipeline(x, training=True), y)).prefetch(2)
    val_ds = data.load(DATA, "valid", batch_size=128)
    steps = int(np.ceil(20000 / args.bs))
    keras.config.set_dtype_policy(args.precision)
    model = build(args.arch, args.dropout)
    keras.config.set_dtype_policy("float32")
    warm = int(args.warmup * steps)
    if args.sched == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(0.0 if warm else args.lr, steps * args.epochs - warm,
                                                      warmup_target=args.lr if warm else None, warmup_steps=warm)
    else:
        rate = args.lr
    model.compile(optimizer=keras.optimizers.Adam(rate), loss="binary_crossentropy",
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")])
    callbacks = [keras.callbacks.CSVLogger(str(args.out / "history.csv"))]
    if args.sched == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(factor=0.3, patience=2))
    start = time.time()
    history = model.fit(train_ds, validation_data=val_ds, epochs=args.epochs, callbacks=callbacks, verbose=2)
    wall = time.time() - start
    return {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "command": "python book/results/pcam_screen.py " + " ".join(sys.argv[1:]),
            "params": model.count_params(), "wall_s": round(wall, 1),
            "history": {k: [round(float(v), 4) for v in vs] for k, vs in history.history.items()},
            **score(model, val_ds, args.out)}


NOTE = ("Screens: one seed each, scored on valid, the split that then chose the recipe, so these are "
        "selection-split scores; differences of a point or less between single runs are within seed-to-seed "
        "spread. Accuracy at threshold 0.5; AUC of the last epoch's model; the machine was shared "
        "(load average 10-20 on 2 cores), so wall times are not speed measurements.")


def collect(folders, out: Path) -> None:
    runs = []
    for folder in folders:
        result = json.loads((Path(folder) / "result.json").read_text())
        runs.append({"name": Path(folder).name, **result})
    out.write_text(json.dumps({"note": NOTE, "screens": runs}, indent=1) + "\n")
    print(f"wrote {out} ({len(runs)} screens)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="mnet025")
    p.add_argument("--aug", default="pcam")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--sched", choices=["cosine", "plateau"], default="cosine")
    p.add_argument("--warmup", type=float, default=0.0, help="epochs of linear warm-up (cosine)")
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--precision", default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--collect", nargs="+", metavar="RUN", help="gather these runs' result.json into --out")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.collect:
        collect(args.collect, args.out)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    result = train(args)
    (args.out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print("RESULT", json.dumps({k: result[k] for k in ("params", "wall_s", "plain", "tta")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
