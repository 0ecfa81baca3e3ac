"""The ``histolib`` command (also ``python -m histolib``): train, evaluate, heatmap, data.

Each subcommand is a thin layer over the library: ``train`` over `histolib.data.load`,
`histolib.models.build_model` and `histolib.train.fit`; ``evaluate`` over
`histolib.evaluate`; ``heatmap`` over `histolib.slide`; ``data`` over the download functions.
Bad arguments and bad inputs end with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PROG = "histolib"

EPILOG_TOP = """\
examples:
  histolib train --data folder:../shared/data/pcam-jpeg --model seed-pcam \\
      --epochs 8 --augment pcam-seed --out runs/pcam-seed
  histolib evaluate --model runs/pcam-seed/best.keras \\
      --data folder:../shared/data/pcam-jpeg --split valid --tta --json valid.json
  histolib heatmap --model runs/pcam-seed/best.keras \\
      --region ../shared/data/he-region/CMU-1-Small-Region.svs --out heatmap.png
  histolib data cmu-region --out data/downloads

Run 'histolib COMMAND --help' for each command's options.
"""

SPEC_HELP = (
    "data spec: synthetic-pcam, synthetic-subtype, folder:DIR (DIR/{train,valid,test}/CLASS/*.jpg), "
    "pcam-h5:DIR, kaggle:DIR or tfds:patch_camelyon"
)


def _para(text: str) -> str:
    return textwrap.fill(text, 78)


class UsageError(Exception):
    """A bad command line or input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _existing_file(text):
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``histolib`` command."""
    parser = _Parser(
        prog=PROG,
        description=_para(
            "Attention models in computational pathology: train, evaluate and map "
            "histology patch classifiers (PatchCamelyon, ovarian subtypes)."
        ),
        epilog=EPILOG_TOP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    t = commands.add_parser(
        "train",
        help="train a model on a data spec's train split, selecting on its valid split",
        description=_para(
            "Train NAME on the 'train' split of SPEC and select the best epoch on its "
            "'valid' split. Writes OUT/best.keras (the best epoch), OUT/history.csv (one row per "
            "epoch), OUT/threshold.json (the decision threshold chosen on 'valid' by Youden's J) and "
            "OUT/run.json (command, time, versions, machine). Run the same command again after an "
            "interruption and it resumes after the last finished epoch; on a finished run it says so "
            "and trains nothing."
        ),
        epilog="example:\n  histolib train --data folder:../shared/data/pcam-jpeg --model seed-pcam "
        "--epochs 8 --augment pcam-seed --out runs/pcam-seed",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--data", required=True, metavar="SPEC", help=SPEC_HELP)
    t.add_argument("--model", required=True, metavar="NAME",
                   help="seed-pcam, seed-subtype-BACKBONE, BACKBONE or BACKBONE+ATTENTION "
                   "(backbones: inception_v3, xception, mobilenet, seed_cnn; attention: self, "
                   "thresholded, differential), e.g. mobilenet+differential")
    t.add_argument("--epochs", required=True, type=_positive_int, metavar="N", help="total epochs of the run")
    t.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (resumes if it holds a run)")
    t.add_argument("--batch-size", type=_positive_int, default=64, metavar="B", help="images per batch (default 64)")
    t.add_argument("--augment", metavar="SET", default=None,
                   help="augmentation of the training images: pcam-seed (the seed's flips, "
                   "brightness, contrast), pcam (adds 90-degree rotations and HED stain jitter) or subtype")
    t.add_argument("--image-size", type=_positive_int, metavar="PX", default=None,
                   help="resize images to PX x PX (default: the data's own size)")
    t.add_argument("--seed", type=int, default=0, help="seed for shuffling, augmentation and weights (default 0)")
    t.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam's initial learning rate (default 1e-3)")
    t.add_argument("--patience", type=int, default=3, help="EarlyStopping patience in epochs (default 3)")
    t.add_argument("--monitor", default="val_loss",
                   help="what EarlyStopping, ModelCheckpoint and ReduceLROnPlateau watch (default val_loss; "
                   "e.g. val_auc)")
    t.add_argument("--class-weight", choices=["none", "balanced"], default="none",
                   help="weight classes by inverse frequency in the train split (default none)")
    t.add_argument("--weights", default="auto", metavar="W",
                   help="initial weights: auto (ImageNet for pretrained backbones, with the backbone "
                   "frozen; nothing for seed-pcam and seed_cnn), imagenet, none (random, nothing "
                   "frozen) or a weights file (default auto)")
    t.add_argument("--precision", default="auto",
                   choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"],
                   help="Keras dtype policy; auto: mixed_bfloat16 on CPUs with bfloat16 instructions "
                   "and on TPUs, mixed_float16 on GPUs, float32 otherwise")
    t.add_argument("--strategy", default=None, choices=["auto", "tpu", "mirrored", "multiworker", "default"],
                   help="distribution strategy (default: $HISTOLIB_STRATEGY, else auto: a TPU, else "
                   "mirrored GPUs, else one device); --batch-size is then the global batch")
    t.add_argument("--deterministic", action="store_true", help="enable TensorFlow op determinism (slower)")
    t.add_argument("--tensorboard", action="store_true", help="also log to OUT/tensorboard")
    t.add_argument("--steps-per-epoch", type=_positive_int, default=None, metavar="N",
                   help="train on N batches per epoch (default: the whole split)")
    t.add_argument("--validation-steps", type=_positive_int, default=None, metavar="N",
                   help="validate on N batches (default: the whole split)")

    e = commands.add_parser(
        "evaluate",
        help="score a saved model on a data spec's split",
        description=_para(
            "Score a saved model on one split of SPEC: accuracy, precision, recall, F1, "
            "ROC AUC, balanced accuracy and n (binary: of class 1; more classes: macro averages), "
            "the confusion matrix and scikit-learn's report. The decision threshold is read from "
            "beside the model (NAME.threshold.json or threshold.json, as train writes it); 0.5 when "
            "there is none. It is never tuned on the split being scored."
        ),
        epilog="example:\n  histolib evaluate --model runs/pcam-seed/best.keras "
        "--data folder:../shared/data/pcam-jpeg --split valid --tta --json valid.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("--model", required=True, type=_existing_file, metavar="FILE", help="a .keras model")
    e.add_argument("--data", required=True, metavar="SPEC", help=SPEC_HELP)
    e.add_argument("--split", default="test", choices=["train", "valid", "test"], help="split to score (default test)")
    e.add_argument("--tta", action="store_true",
                   help="average predictions over the 8 flips and 90-degree rotations of each image")
    e.add_argument("--json", type=Path, metavar="FILE", help="write the metrics to FILE as JSON")
    e.add_argument("--batch-size", type=_positive_int, default=128, metavar="B", help="images per batch (default 128)")
    e.add_argument("--image-size", type=_positive_int, metavar="PX", default=None,
                   help="resize images to PX x PX (default: the model's input size)")
    e.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="add 95%% bootstrap intervals from N resamples (e.g. 1000)")
    e.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")

    h = commands.add_parser(
        "heatmap",
        help="draw a model's tumour-probability heatmap over a slide region",
        description=_para(
            "Cut the tissue of a slide region (SVS or TIFF) into tiles of the model's "
            "input size, skip background (Otsu on saturation), score each tile and draw the "
            "probability heatmap over the region as a PNG."
        ),
        epilog="example:\n  histolib heatmap --model runs/pcam-seed/best.keras "
        "--region ../shared/data/he-region/CMU-1-Small-Region.svs --out heatmap.png --stride 48",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    h.add_argument("--model", required=True, type=_existing_file, metavar="FILE", help="a .keras model")
    h.add_argument("--region", required=True, type=_existing_file, metavar="SLIDE", help="an .svs or .tif region")
    h.add_argument("--out", required=True, type=Path, metavar="PNG", help="where to write the picture")
    h.add_argument("--stride", type=_positive_int, default=96, metavar="N",
                   help="step between tiles in pixels (default 96; 48 overlaps them by half)")
    h.add_argument("--min-tissue", type=float, default=0.25,
                   help="least tissue fraction for a tile to be scored (default 0.25)")
    h.add_argument("--batch-size", type=_positive_int, default=128, metavar="B", help="tiles per batch (default 128)")

    d = commands.add_parser(
        "data",
        help="download real data (MD5-checked)",
        description=_para(
            "Download real data, MD5-checked; a file already there and intact is kept. "
            "Offline, fails fast with a message saying where to get the files by hand."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("dataset", choices=["pcam", "cmu-region"],
                   help="pcam: the PatchCamelyon .h5.gz files (about 7.5 GB); cmu-region: "
                   "OpenSlide's CMU-1-Small-Region.svs (1.9 MB)")
    d.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to download into")
    return parser


def choose_precision(name: str = "auto") -> str:
    """The Keras dtype policy for ``--precision``: ``auto`` picks per device.

    ``mixed_bfloat16`` on TPUs and on CPUs with bfloat16 instructions (AVX-512 BF16 or AMX:
    measured 97 against 73 images/s for the seed model), ``mixed_float16`` on GPUs, ``float32``
    otherwise.
    """
    if name != "auto":
        return name
    import tensorflow as tf

    if tf.config.list_logical_devices("TPU"):
        return "mixed_bfloat16"
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    from histolib.provenance import has_bfloat16

    return "mixed_bfloat16" if has_bfloat16() else "float32"


def file_list_digest(root) -> dict:
    """``{"files": n, "sha256": ...}`` of the sorted relative paths of the files under ``root``.

    A cheap fingerprint of a data folder for run records: it changes when a file is added,
    removed or renamed (not when a file's bytes change).
    """
    root = Path(root)
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return {"files": len(names), "sha256": hashlib.sha256("\n".join(names).encode()).hexdigest()}


def _data_dir(spec: str):
    kind, _, arg = spec.partition(":")
    if kind in ("folder", "pcam-h5", "kaggle") and arg and Path(arg).is_dir():
        return Path(arg)
    return None


def _interactive() -> bool:
    return sys.stdout.isatty()


def _build_with_policy(precision, name, **kwargs):
    """Build ``name`` under the dtype policy ``precision`` and put the global policy back.

    Only the model takes the policy: the data pipeline (augmentation layers included) stays in
    float32.
    """
    import keras

    from histolib import models

    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        return models.build_model(name, **kwargs)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _train(args) -> int:
    from histolib import data, strategy, train

    if args.patience < 0:
        raise UsageError(f"{PROG} train: error: --patience must be >= 0, got {args.patience}")
    choice = strategy.choose_strategy(args.strategy)  # first: it brings up a TPU, if any
    precision = choose_precision(args.precision)
    train_info = data.info(args.data, "train", seed=args.seed)
    valid_info = data.info(args.data, "valid", seed=args.seed)
    num_classes = len(train_info["class_names"])
    input_shape = None if args.image_size is None else (args.image_size, args.image_size, 3)
    weights = None if args.weights == "none" else args.weights

    train_ds = data.load(args.data, "train", batch_size=args.batch_size, image_size=args.image_size,
                         shuffle=True, augment=args.augment, seed=args.seed)
    val_ds = data.load(args.data, "valid", batch_size=args.batch_size, image_size=args.image_size,
                       seed=args.seed)
    if choice.kind == "multiworker":
        raise UsageError(f"{PROG} train: error: --strategy multiworker is not supported here: Keras 3's "
                         "model.fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585); "
                         "train from Python with histolib.strategy.fit_replicated instead")
    if choice.kind == "tpu":
        train_ds = strategy.make_tpu_safe(train_ds, args.batch_size, num_examples=sum(train_info["counts"]))
        val_ds = strategy.make_tpu_safe(val_ds, args.batch_size, num_examples=sum(valid_info["counts"]))
    elif choice.kind == "mirrored":
        # A known number of steps keeps the replicas in lock-step (with an unknown length they
        # drift apart by ~1e-5 over a few epochs); validation keeps every image.
        train_ds = strategy.make_tpu_safe(train_ds, args.batch_size, num_examples=sum(train_info["counts"]))
    record = {
        "data": {"spec": args.data, "class_names": train_info["class_names"],
                 "train_counts": train_info["counts"], "valid_counts": valid_info["counts"]},
        "model": args.model, "batch_size": args.batch_size, "augment": args.augment,
        "image_size": args.image_size, "precision": precision, "weights": args.weights,
        "strategy": {"kind": choice.kind, "replicas": choice.strategy.num_replicas_in_sync,
                     "reason": choice.reason},
    }
    folder = _data_dir(args.data)
    if folder is not None:
        record["data"]["file_list"] = file_list_digest(folder)
    class_weight = ("balanced", train_info["counts"]) if args.class_weight == "balanced" else None
    import keras

    keras.utils.set_random_seed(args.seed)  # once, for the initial weights and dropout
    result = train.fit(
        lambda: _build_with_policy(precision, args.model, num_classes=num_classes, input_shape=input_shape,
                                   weights=weights),
        train_ds, val_ds, out_dir=args.out, epochs=args.epochs, learning_rate=args.lr,
        patience=args.patience, monitor=args.monitor, class_weight=class_weight, seed=args.seed,
        deterministic=args.deterministic, tensorboard=args.tensorboard, strategy=choice.strategy,
        steps_per_epoch=args.steps_per_epoch, validation_steps=args.validation_steps,
        verbose=1 if _interactive() else 2,
        command=shlex.join([PROG, *args.argv]), extra_record=record,
    )
    best = result.history[result.best_epoch - 1] if result.history else {}
    shown = ", ".join(f"{k} {best[k]:.4f}" for k in ("val_loss", "val_accuracy", "val_auc") if k in best)
    print(f"best epoch {result.best_epoch} of {result.epochs_done}: {shown}")
    threshold = result.threshold.get("threshold")
    print(f"threshold {threshold if threshold is None else round(threshold, 4)} "
          f"({result.threshold.get('method')}, chosen on valid)")
    print(f"model: {args.out / 'best.keras'}  history: {args.out / 'history.csv'}  record: {args.out / 'run.json'}")
    return 0


def _evaluate(args) -> int:
    from histolib import data, evaluate

    model = evaluate.load_model(args.model)
    size = args.image_size
    if size is None:
        shape = model.inputs[0].shape
        size = None if shape[1] is None else (int(shape[1]), int(shape[2]))
    dataset = data.load(args.data, args.split, batch_size=args.batch_size, image_size=size)
    class_names = getattr(dataset, "class_names", None)
    threshold = evaluate.read_threshold(args.model)
    metrics = evaluate.evaluate_model(model, dataset, threshold=threshold, tta=args.tta,
                                      class_names=class_names, bootstrap=args.bootstrap, seed=args.seed,
                                      progress=_interactive())
    metrics.update(model=str(args.model), data=args.data, split=args.split)
    folder = _data_dir(args.data)
    if folder is not None:
        metrics["file_list"] = file_list_digest(folder)
    summary = "  ".join(f"{k} {metrics[k]:.4f}" for k in
                        ("accuracy", "precision", "recall", "f1", "auc", "balanced_accuracy"))
    print(f"{args.split} (n={metrics['n']}, {metrics['average']}, threshold "
          f"{metrics['threshold'] if metrics['threshold'] is None else round(metrics['threshold'], 4)}"
          f"{', TTA x8' if args.tta else ''}): {summary}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _heatmap(args) -> int:
    from histolib import evaluate, slide

    if not 0.0 <= args.min_tissue <= 1.0:
        raise UsageError(f"{PROG} heatmap: error: --min-tissue must lie in [0, 1], got {args.min_tissue}")
    model = evaluate.load_model(args.model)
    region = slide.read_region(args.region)
    result = slide.heatmap(model, region, stride=args.stride, min_tissue=args.min_tissue,
                           batch_size=args.batch_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    slide.draw_heatmap(region, result, args.out, title=f"{args.region.name}: {Path(args.model).name}")
    print(f"{result.n_scored} of {result.n_tiles} tiles scored; wrote {args.out}")
    return 0


def _data(args) -> int:
    if args.dataset == "cmu-region":
        from histolib import slide

        path = slide.download_cmu_region(args.out)
        print(f"{path} (MD5 checked)")
        return 0
    from histolib.data import pcam

    paths = pcam.download_pcam(args.out)
    for path in paths:
        print(f"{path} (MD5 checked)")
    return 0


def _one_line(error, limit: int = 600) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


COMMANDS = {"train": _train, "evaluate": _evaluate, "heatmap": _heatmap, "data": _data}


def main(argv=None) -> int:
    """Run the ``histolib`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        print(error, file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    args.argv = argv
    try:
        return COMMANDS[args.command](args)
    except UsageError as error:
        print(error, file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as error:
        print(f"{PROG} {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except ConnectionError as error:
        print(f"{PROG} {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
