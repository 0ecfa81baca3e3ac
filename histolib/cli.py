"""The ``histolib`` command (also ``python -m histolib``): train, evaluate, duplicates, heatmap, data.

Each subcommand is a thin layer over the library: ``train`` over `histolib.data.load`,
`histolib.models.build_model` and `histolib.train.fit`; ``evaluate`` over
`histolib.evaluate`; ``duplicates`` over `histolib.data.duplicates`; ``heatmap`` over
`histolib.slide`; ``data`` over the download functions.
Bad arguments and bad inputs end with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
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
  histolib train --data synthetic-pcam --model seed-pcam-centred --epochs 1 \\
      --out runs/first      # built-in data: learns in one epoch
  histolib evaluate --model runs/first/best.keras --data synthetic-pcam
  histolib train --data folder:../shared/data/pcam-jpeg --model seed-pcam \\
      --epochs 8 --augment pcam-seed --out runs/pcam-seed
  histolib evaluate --model runs/pcam-seed/best.keras \\
      --data folder:../shared/data/pcam-jpeg --split valid --tta --json valid.json
  histolib heatmap --model runs/pcam-seed/best.keras \\
      --region ../shared/data/he-region/CMU-1-Small-Region.svs --out heatmap.png
  histolib data cmu-region --out data/downloads

Run 'histolib COMMAND --help' for each command's options.
"""

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


def _spec_help(data) -> str:
    return "data spec: " + ", ".join(data.SPECS)


def _model_name(text):
    from histolib import models
    from histolib.names import unknown_name

    names = models.list_models()
    if text not in names:
        raise argparse.ArgumentTypeError(
            str(unknown_name("model name", text, names, argument="--model", plural="model names")))
    if text.startswith("mil-"):
        raise argparse.ArgumentTypeError(
            f"{text} trains on bags of tile features (histolib.data.bags), which the command does not make; "
            "build and train it from Python (histolib.models.build_model, chapter 10)")
    return text


def _existing_file(text):
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return Path(text)


def _command(commands, name: str, help: str, example: str | None = None, *, saved_model: bool = False):
    """A subcommand's parser: ``help`` in the list of commands, the docstring of the function
    that runs it (`COMMANDS`) as its description, an example command line after its options,
    and with ``saved_model`` a required ``--model FILE`` (a ``.keras`` file)."""
    description = " ".join(COMMANDS[name].__doc__.split())
    parser = commands.add_parser(name, help=help, description=_para(description),
                                 epilog=None if example is None else f"example:\n  {example}",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    if saved_model:
        parser.add_argument("--model", required=True, type=_existing_file, metavar="FILE", help="a .keras model")
    return parser


def _add_train(commands) -> None:
    from histolib import data, models, strategy, train
    from histolib.data.augment import NAMES as AUGMENTATIONS

    t = _command(
        commands, "train", "train a model on a data spec's train split, selecting on its valid split",
        example="histolib train --data folder:../shared/data/pcam-jpeg --model seed-pcam "
        "--epochs 8 --augment pcam-seed --out runs/pcam-seed")
    t.add_argument("--data", required=True, metavar="SPEC", help=_spec_help(data))
    t.add_argument("--model", required=True, metavar="NAME", type=_model_name,
                   help=f"one of: {', '.join(models.list_models())}")
    t.add_argument("--epochs", required=True, type=_positive_int, metavar="N", help="total epochs of the run")
    t.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (resumes if it holds a run)")
    t.add_argument("--batch-size", type=_positive_int, default=64, metavar="B", help="images per batch (default 64)")
    t.add_argument("--augment", metavar="SET", default=None, choices=AUGMENTATIONS,
                   help="augmentation of the training images: pcam-seed (the seed's flips, "
                   "brightness, contrast), pcam (adds 90-degree rotations and HED stain jitter) or subtype")
    t.add_argument("--augment-in", choices=["data", "model"], default="data",
                   help="where --augment runs: data (the tf.data pipeline, on the host; default) or model "
                   "(a layer inside the model's training step, on the accelerator, so the host only decodes; "
                   "the identity at inference and saved with the model)")
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
    t.add_argument("--fine-tune", action="store_true", help="train the pretrained backbone too (default: frozen)")
    t.add_argument("--backbone-size", type=_positive_int, metavar="PX", help="resize to PX inside the model, before the backbone")
    t.add_argument("--schedule", default="plateau", choices=train.SCHEDULES,
                   help="plateau: ReduceLROnPlateau by 0.3 (the seeds', default); cosine: decay to 0 at the last epoch")
    t.add_argument("--warmup-epochs", type=float, default=0.0, metavar="E", help="warm-up of the cosine schedule")
    t.add_argument("--precision", default="auto", choices=strategy.PRECISIONS,
                   help="Keras dtype policy; auto: mixed_bfloat16 on TPUs and, under TensorFlow, on CPUs "
                   "with bfloat16 instructions, mixed_float16 on GPUs, float32 otherwise")
    t.add_argument("--strategy", default=None, choices=strategy.CHOICES,
                   help="distribution strategy (default: $HISTOLIB_STRATEGY, else auto: a TPU, else "
                   "mirrored GPUs, else one device; under KERAS_BACKEND=jax: data-parallel over all JAX "
                   "devices where there are several); --batch-size is then the global batch")
    t.add_argument("--deterministic", action="store_true", help="enable TensorFlow op determinism (slower)")
    t.add_argument("--tensorboard", action="store_true", help="also log to OUT/tensorboard")
    t.add_argument("--steps-per-epoch", type=_positive_int, default=None, metavar="N",
                   help="train on N batches per epoch (default: the whole split)")
    t.add_argument("--validation-steps", type=_positive_int, default=None, metavar="N",
                   help="validate on N batches (default: the whole split)")
    t.add_argument("--steps-per-execution", type=_positive_int, default=1, metavar="N",
                   help="batches per compiled call (default 1; 32 or more on a TPU, where each call has "
                   "a fixed host cost)")
    _add_split_options(t, training=True)
    t.add_argument("--features", choices=["auto", "off"], default="auto",
                   help="auto: a frozen pretrained backbone runs once per image and view (cached; the run "
                   "restarts rather than resumes) and the rest trains on its features; off: the whole model")
    t.add_argument("--views", type=_positive_int, default=8, metavar="V",
                   help="--features auto with --augment: the image and V-1 augmented views, one per epoch (default 8)")


def _add_split_options(parser, *, training: bool) -> None:
    """--groups, --split-seed and --oversample: how a source without split folders is split."""
    record = "" if training else " (default: what run.json beside the model records)"
    parser.add_argument("--groups", metavar="G", default=None,
                        help="keep groups on one side of the split: near-duplicates (an image with its "
                        "rotated, zoomed, re-coloured ... copies; computed once and cached) or a CSV with "
                        f"columns file,group (e.g. patient IDs){record}")
    parser.add_argument("--split-seed", type=int, default=None, metavar="S",
                        help="seed of the 80/10/10 split of a source without split folders "
                        + ("(default: --seed)" if training else "(default: the record's, else 0)"))
    parser.add_argument("--oversample", choices=["none", "after", "before"], default="none" if training else None,
                        help="RandomOverSampler after the split on the training rows only, or before it as "
                        "the ovarian seed did (copies leak into valid and test: for showing the leak)"
                        + (" (default none)" if training else record))


def _add_evaluate(commands) -> None:
    from histolib import data

    e = _command(
        commands, "evaluate", "score a saved model on a data spec's split",
        example="histolib evaluate --model runs/pcam-seed/best.keras "
        "--data folder:../shared/data/pcam-jpeg --split valid --tta --json valid.json", saved_model=True)
    e.add_argument("--data", required=True, metavar="SPEC", help=_spec_help(data))
    e.add_argument("--split", default="test", choices=data.SPLITS, help="split to score (default test)")
    e.add_argument("--tta", action="store_true",
                   help="average predictions over the 8 flips and 90-degree rotations of each image")
    e.add_argument("--json", type=Path, metavar="FILE", help="also write the metrics to FILE as JSON")
    e.add_argument("--batch-size", type=_positive_int, default=128, metavar="B", help="images per batch (default 128)")
    e.add_argument("--image-size", type=_positive_int, metavar="PX", default=None,
                   help="resize images to PX x PX (default: the model's input size)")
    e.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="add 95%% bootstrap intervals from N resamples (e.g. 1000)")
    e.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    _add_split_options(e, training=False)


def _add_heatmap(commands) -> None:
    h = _command(
        commands, "heatmap", "draw a model's tumour-probability heatmap over a slide region",
        example="histolib heatmap --model runs/pcam-seed/best.keras "
        "--region ../shared/data/he-region/CMU-1-Small-Region.svs --out heatmap.png --stride 48", saved_model=True)
    h.add_argument("--region", required=True, type=_existing_file, metavar="SLIDE", help="an .svs or .tif region")
    h.add_argument("--out", required=True, type=Path, metavar="PNG", help="where to write the picture")
    h.add_argument("--stride", type=_positive_int, default=96, metavar="N",
                   help="step between tiles in pixels (default 96; 48 overlaps them by half)")
    h.add_argument("--min-tissue", type=float, default=0.25,
                   help="least tissue fraction for a tile to be scored (default 0.25)")
    h.add_argument("--batch-size", type=_positive_int, default=128, metavar="B", help="tiles per batch (default 128)")


def _add_data(commands) -> None:
    from histolib import data

    d = _command(
        commands, "data", "download real data (MD5-checked)")
    d.add_argument("dataset", choices=list(data.DOWNLOADS),
                   help="; ".join(f"{name}: {entry.summary}" for name, entry in data.DOWNLOADS.items()))
    d.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to download into")


def _add_duplicates(commands) -> None:
    u = _command(commands, "duplicates", "find near-duplicate groups in an image folder",
                 example="histolib duplicates --data folder:../shared/data/ovarian --out groups.json")
    u.add_argument("--data", required=True, metavar="SPEC", help="folder:DIR or kaggle:DIR")
    u.add_argument("--out", required=True, type=Path, metavar="JSON", help="where to write the groups")


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
    for add in (_add_train, _add_evaluate, _add_duplicates, _add_heatmap, _add_data):
        add(commands)
    return parser


def _interactive() -> bool:
    return sys.stdout.isatty()


def _split_load(args, split_seed) -> dict:
    """The split-shaping arguments of `histolib.data.load` for the command's options."""
    from histolib import split_record

    return {"seed": split_seed, "group_by": split_record.group_by(args.groups),
            "oversample": None if args.oversample in (None, "none") else args.oversample}


def _train(args) -> int:
    """Train NAME on the 'train' split of SPEC and select the best epoch on its 'valid' split.
    Writes OUT/best.keras (the best epoch), OUT/history.csv (one row per epoch), OUT/threshold.json
    (the decision threshold chosen on 'valid' by Youden's J) and OUT/run.json (command, time,
    versions, machine). Run the same command again after an interruption and it resumes after the
    last finished epoch; on a finished run it says so and trains nothing."""
    import keras

    from histolib import experiment

    if args.patience < 0:
        raise UsageError(f"{PROG} train: error: --patience must be >= 0, got {args.patience}")
    if args.warmup_epochs < 0 or (args.warmup_epochs and args.schedule != "cosine"):
        raise UsageError(f"{PROG} train: error: --warmup-epochs must be >= 0, with --schedule cosine")
    options = {"freeze": False} if args.fine_tune else {}  # the builder options of --fine-tune, --backbone-size
    if args.backbone_size:
        options["backbone_size"] = args.backbone_size
    keras.utils.set_random_seed(args.seed)  # once, for the initial weights and dropout
    result = experiment.train_from_spec(
        args.data, args.model, out_dir=args.out, epochs=args.epochs, batch_size=args.batch_size,
        image_size=args.image_size, augment=args.augment, augment_in=args.augment_in, seed=args.seed,
        split_seed=args.seed if args.split_seed is None else args.split_seed, groups=args.groups,
        oversample=None if args.oversample == "none" else args.oversample,
        features=args.features, views=args.views,
        weights=args.weights, precision=args.precision, strategy=args.strategy,
        class_weight=None if args.class_weight == "none" else args.class_weight,
        command=shlex.join([PROG, *args.argv]), learning_rate=args.lr, patience=args.patience,
        monitor=args.monitor, deterministic=args.deterministic, tensorboard=args.tensorboard,
        steps_per_epoch=args.steps_per_epoch, validation_steps=args.validation_steps,
        steps_per_execution=args.steps_per_execution, verbose=1 if _interactive() else 2,
        model_options=options, schedule=args.schedule, warmup_epochs=args.warmup_epochs,
    )
    _print_fit(result, args.out)
    return 0


def _print_fit(result, out: Path) -> None:
    best = result.history[result.best_epoch - 1] if result.history else {}
    shown = ", ".join(f"{k} {best[k]:.4f}" for k in ("val_loss", "val_accuracy", "val_auc") if k in best)
    print(f"best epoch {result.best_epoch} of {result.epochs_done}: {shown}")
    threshold = result.threshold.get("threshold")
    print(f"threshold {threshold if threshold is None else round(threshold, 4)} "
          f"({result.threshold.get('method')}, chosen on valid)")
    print(f"model: {out / 'best.keras'}  history: {out / 'history.csv'}  record: {out / 'run.json'}")


def _evaluate(args) -> int:
    """Score a saved model on one split of SPEC and print accuracy, precision, recall, F1, ROC
    AUC, balanced accuracy and n (binary: of class 1; more classes: macro averages), the confusion
    matrix and scikit-learn's per-class report. The decision threshold is read from beside the
    model (NAME.threshold.json or threshold.json, as train writes it); 0.5 when there is none. It
    is never tuned on the split being scored. A source without split folders is split as the
    model's training split it: the split seed, groups and oversampling come from run.json beside
    the model (options that disagree are an error)."""
    from histolib import data, evaluate, split_record

    model = evaluate.load_model(args.model)
    size = args.image_size
    if size is None:
        shape = model.inputs[0].shape
        size = None if shape[1] is None else (int(shape[1]), int(shape[2]))
    split = split_record.recorded_split(args.model, args.data, split_seed=args.split_seed, groups=args.groups,
                                        oversample=None if args.oversample == "none" else args.oversample)
    args.groups, args.oversample = split["groups"], split["oversample"]
    dataset = data.load(args.data, args.split, batch_size=args.batch_size, image_size=size,
                        **_split_load(args, split["split_seed"]))
    threshold = evaluate.read_threshold(args.model)
    if evaluate.threshold_record(args.model).get("tta") and not args.tta:
        print(f"note: {args.model}'s threshold was chosen with 8-view TTA; score it with --tta", file=sys.stderr)
    metrics = evaluate.evaluate_model(model, dataset, threshold=threshold, tta=args.tta,
                                      class_names=dataset.class_names, bootstrap=args.bootstrap, seed=args.seed,
                                      progress=_interactive())
    metrics.update(model=str(args.model), data=args.data, split=args.split,
                   split_settings={k: split[k] for k in ("split_seed", "groups", "oversample", "from")})
    digest = data.folder_digest(args.data)
    if digest is not None:
        metrics["file_list"] = digest
    summary = "  ".join(f"{k} {metrics[k]:.4f}" for k in
                        ("accuracy", "precision", "recall", "f1", "auc", "balanced_accuracy"))
    print(f"{args.split} (n={metrics['n']}, {metrics['average']}, threshold "
          f"{metrics['threshold'] if metrics['threshold'] is None else round(metrics['threshold'], 4)}"
          f"{', TTA x8' if args.tta else ''}; split seed {split['split_seed']}"
          f"{', groups ' + Path(str(split['groups'])).name if split['groups'] else ''}): {summary}")
    _print_tables(metrics)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _duplicates(args) -> int:
    """Group each readable image of SPEC with its rotated, mirrored, zoomed, shifted, re-coloured,
    re-encoded and unevenly rescaled copies (ORB keypoints, RANSAC-verified affine maps) and write
    {"groups": [[path, ...], ...]}, paths relative to the data root, each file in one group.
    Cached in $HISTOLIB_CACHE (default ~/.cache/histolib); --groups near-duplicates uses the same."""
    from histolib.data import duplicates

    paths, root = duplicates.spec_files(args.data)
    found = duplicates.find_near_duplicates(paths)
    duplicates.write_groups(found, args.out, root)
    families = [g for g in found.groups if len(g) > 1]
    print(f"{len(found.paths)} files in {len(found.groups)} groups ({len(families)} of two or more, holding "
          f"{sum(map(len, families))} files; {len(found.pairs)} verified pairs"
          f"{', from the cache' if found.cached else ''}); wrote {args.out}")
    return 0


def _print_tables(metrics: dict) -> None:
    """The confusion matrix and scikit-learn's per-class report of `evaluate.evaluate_model`."""
    import pandas as pd

    report = metrics["classification_report"]
    names = list(report)[:len(metrics["confusion_matrix"])]  # the classes come first
    matrix = pd.DataFrame(metrics["confusion_matrix"], index=names, columns=names)
    print(f"confusion matrix (rows: true class, columns: predicted)\n{matrix.to_string()}")
    table = pd.DataFrame({k: v for k, v in report.items() if isinstance(v, dict)}).T
    table["support"] = table["support"].astype(int)
    print(f"per class\n{table.to_string(float_format='{:.4f}'.format)}")


def _heatmap(args) -> int:
    """Cut the tissue of a slide region (SVS or TIFF) into tiles of the model's input size, skip
    background (Otsu on saturation), score each tile and draw the probability heatmap over the
    region as a PNG."""
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
    """Download real data, checked (MD5, or SHA-256 per file); files already there and intact
    are kept. Offline, fails fast with a message saying where to get the files by hand."""
    from histolib import data

    for path in data.download(args.dataset, args.out):
        print(f"{path} ({data.DOWNLOADS[args.dataset].checked})")
    return 0


def _one_line(error, limit: int = 600) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


COMMANDS = {"train": _train, "evaluate": _evaluate, "duplicates": _duplicates, "heatmap": _heatmap,
            "data": _data}

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
    except Exception as error:  # TensorFlow's error for a file that stopped decoding mid-run
        from histolib.data.images import describe_failure

        failure = describe_failure(error)
        if failure is None:
            raise
        print(f"{PROG} {args.command}: error: {_one_line(failure)}", file=sys.stderr)
        return 2
