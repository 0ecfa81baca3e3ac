"""The ``histolib`` command (also ``python -m histolib``): train, evaluate, duplicates, heatmap, data.

Each subcommand is a thin layer over the library: ``train`` over
`histolib.experiment.train_from_spec`; ``evaluate`` over `histolib.evaluate`; ``duplicates`` over
`histolib.data.duplicates`; ``heatmap`` over `histolib.slide`; ``data`` over the download functions.
This module holds the function that runs each one (its docstring is the subcommand's description
in ``--help``) and ``main``; their options are in `histolib.cli_options`.
Bad arguments and bad inputs end with one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import keras
import pandas as pd

from histolib import cards, cli_options, crossval, data, evaluate, experiment, slide
from histolib.cli_options import PROG, UsageError
from histolib.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from histolib.data import duplicates, regions
from histolib.data.groups import group_by
from histolib.data.images import describe_failure

__all__ = ["COMMANDS", "UsageError", "build_parser", "main"]


def build_parser():
    """The ``argparse`` parser of the ``histolib`` command (``histolib.cli_options.build_parser``)."""
    return cli_options.build_parser(COMMANDS)


def _interactive() -> bool:
    return sys.stdout.isatty()


def run_config(args) -> RunConfig:
    """The `histolib.config.RunConfig` of a parsed ``histolib train`` (or ``cv``) command line:
    built once here, validated by its parts, recorded whole in ``run.json``."""
    if args.weights_dir is not None:  # read where the weights resolve (histolib.models.weights)
        if not args.weights_dir.is_dir():
            raise ValueError(f"--weights-dir {args.weights_dir} is not a directory")
        os.environ["HISTOLIB_WEIGHTS_DIR"] = str(args.weights_dir.resolve())
    options = {"freeze": False} if args.fine_tune else {}  # the builder options of --fine-tune, --backbone-size
    if args.backbone_size:
        options["backbone_size"] = args.backbone_size
    options.update(dict(args.model_option))
    return RunConfig(
        data=DataConfig(spec=args.data, image_size=args.image_size, groups=args.groups, oversample=args.oversample,
                        split_seed=args.seed if args.split_seed is None else args.split_seed),
        model=ModelConfig(name=args.model, weights=args.weights, options=options, precision=args.precision),
        train=TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, patience=args.patience,
            monitor=args.monitor, schedule=args.schedule, warmup_epochs=args.warmup_epochs,
            class_weight=args.class_weight, seed=args.seed, augment=args.augment, augment_in=args.augment_in,
            features=args.features, views=args.views, steps_per_epoch=args.steps_per_epoch,
            validation_steps=args.validation_steps, steps_per_execution=args.steps_per_execution,
            strategy=args.strategy, deterministic=args.deterministic, tensorboard=args.tensorboard, solver=args.solver,
            verbose=1 if _interactive() else 2),
        command=shlex.join([PROG, *args.argv]))


def _train(args) -> int:
    """Train NAME on the 'train' split of SPEC and select the best epoch on its 'valid' split.
    Writes OUT/best.keras (the best epoch), OUT/history.csv (one row per epoch), OUT/threshold.json
    (the decision threshold chosen on 'valid' by Youden's J) and OUT/run.json (the run's
    configuration, command, time, versions, machine). Run the same command again after an
    interruption and it resumes after the last finished epoch; on a finished run it says so and
    trains nothing."""
    config = run_config(args)
    keras.utils.set_random_seed(config.train.seed)  # once, for the initial weights and dropout
    result = experiment.train_from_spec(config, out_dir=args.out)
    _print_fit(result, args.out)
    return 0


def _cv(args) -> int:
    """Cross-validate NAME on SPEC, a source without split folders: for each of R repeats the
    images are cut into K folds by scikit-learn's StratifiedGroupKFold (groups from --groups, one
    shuffle seed per repeat); each fold is the test part once, while the model trains on the rest
    with a valid part held out by groups for early stopping. Writes OUT/cv.json (the command, each
    fold's scores and test files, their mean and sd, the pooled confusion matrix, a bootstrap
    interval over groups), OUT/oof.csv (every image's out-of-fold probabilities) and each fold's run
    under OUT/runs; run again after an interruption, it goes on from the last finished fold."""
    config = run_config(args)
    record = crossval.cross_validate(config, folds=args.folds, repeats=args.repeats, out_dir=args.out)
    mean, sd = record["summary"]["mean"], record["summary"]["sd"]
    low, high = record["summary"]["bootstrap_macro_f1_95"]
    print(f"{args.folds} folds x {args.repeats} repeats: macro F1 {mean['macro_f1']:.3f} +- {sd['macro_f1']:.3f} "
          f"(95 % over groups {low:.3f}-{high:.3f}), accuracy {mean['accuracy']:.3f} +- {sd['accuracy']:.3f}, "
          f"balanced accuracy {mean['balanced_accuracy']:.3f}, AUC {mean['auc']:.3f}")
    print(f"wrote {args.out / 'cv.json'} and {args.out / 'oof.csv'}")
    return 0


def _print_fit(result, out: Path) -> None:
    if not result.epochs_done:  # --solver lbfgs: a logistic regression, no epochs
        print(f"fitted by L-BFGS, C chosen on valid (see run.json's 'solver'); model: {out / 'best.keras'}  "
              f"record: {out / 'run.json'}")
        return
    best = result.history[result.best_epoch - 1] if result.history else {}
    shown = ", ".join(f"{k} {best[k]:.4f}" for k in ("val_loss", "val_accuracy", "val_auc") if k in best)
    stopped = " (stopped early)" if result.stopped_early else ""
    print(f"best epoch {result.best_epoch} of {result.epochs_done}{stopped}: {shown}")
    threshold = result.threshold.get("threshold")
    print(f"threshold {threshold if threshold is None else round(threshold, 4)} "
          f"({result.threshold.get('method')}, chosen on valid)")
    print(f"model: {out / 'best.keras'}  history: {out / 'history.csv'}  record: {out / 'run.json'}")


def _scoring_source(args):
    """``(source, split settings)`` to score ``args.model`` on: the split its run record or model
    card records for this data (`histolib.cards.recorded_split`), checked against the card's list
    of the split's files where it has one."""
    given = {"split_seed": args.split_seed, "groups": args.groups, "oversample": args.oversample}
    fixed = data.source(args.data).fixed_splits()
    split = cards.recorded_split(args.model, args.data, given, fixed_splits=fixed)
    source = data.source(args.data, seed=split["split_seed"], group_by=group_by(split["groups"]),
                         oversample=split["oversample"])
    listed = (split.get("files") or {}).get(args.split)
    if listed is not None:
        made = cards.relative_files(source.rows(args.split)[0], source.arg)
        if sorted(made) != sorted(listed):
            raise ValueError(f"the {args.split} split made now ({len(made)} files) is not the one {split['from']} "
                             f"lists ({len(listed)} files; {len(set(made) ^ set(listed))} differ): the model would "
                             "be scored on other images than its card says")
    return source, split


def _evaluate(args) -> int:
    """Score a saved model on one split of SPEC and print accuracy, precision, recall, F1, ROC
    AUC, balanced accuracy and n (binary: of class 1; more classes: macro averages), the confusion
    matrix and scikit-learn's per-class report. The decision threshold is read from the model card
    NAME.json beside NAME.keras, else threshold.json (as train writes it); 0.5 when there is none.
    It is never tuned on the split being scored. A source without split folders is split as the
    model's training split it: the split seed, groups and oversampling come from run.json beside
    the model, else from its card (options that disagree are an error); with neither, the model is
    refused unless --split-seed is given."""
    model = evaluate.load_model(args.model)
    size = args.image_size
    if size is None:  # the model's own input size; "native" for a model that takes any size (tiles)
        shape = model.inputs[0].shape
        size = "native" if shape[1] is None else (int(shape[1]), int(shape[2]))
    source, split = _scoring_source(args)
    dataset = source.load(args.split, batch_size=args.batch_size, image_size=size)
    if cards.threshold_record(args.model).get("tta") and not args.tta:
        print(f"note: {args.model}'s threshold was chosen with 8-view TTA; score it with --tta", file=sys.stderr)
    metrics = evaluate.evaluate_model(model, dataset, threshold=cards.read_threshold(args.model), tta=args.tta,
                                      class_names=dataset.class_names, bootstrap=args.bootstrap, seed=args.seed,
                                      progress=_interactive())
    metrics.update(model=str(args.model), data=args.data, split=args.split,
                   split_settings={k: split[k] for k in ("split_seed", "groups", "oversample", "from")})
    if source.digest() is not None:
        metrics["file_list"] = source.digest()
    _print_scores(args, metrics, split)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _print_scores(args, metrics: dict, split: dict) -> None:
    """The evaluate command's summary line, confusion matrix and per-class report."""
    summary = "  ".join(f"{k} {metrics[k]:.4f}" for k in
                        ("accuracy", "precision", "recall", "f1", "auc", "balanced_accuracy"))
    print(f"{args.split} (n={metrics['n']}, {metrics['average']}, threshold "
          f"{metrics['threshold'] if metrics['threshold'] is None else round(metrics['threshold'], 4)}"
          f"{', TTA x8' if args.tta else ''}; split seed {split['split_seed']}"
          f"{', groups ' + Path(str(split['groups'])).name if split['groups'] else ''}): {summary}")
    _print_tables(metrics)


def _duplicates(args) -> int:
    """Group each readable image of SPEC with its rotated, mirrored, zoomed, shifted, re-coloured,
    re-encoded and unevenly rescaled copies (ORB keypoints, RANSAC-verified affine maps) and write
    {"groups": [[path, ...], ...]}, paths relative to the data root, each file in one group.
    Cached in $HISTOLIB_CACHE (default ~/.cache/histolib); --groups near-duplicates uses the same."""
    paths, root = data.image_files(args.data)
    found = duplicates.find_near_duplicates(paths)
    duplicates.write_groups(found, args.out, root)
    families = [g for g in found.groups if len(g) > 1]
    print(f"{len(found.paths)} files in {len(found.groups)} groups ({len(families)} of two or more, holding "
          f"{sum(map(len, families))} files; {len(found.pairs)} verified pairs"
          f"{', from the cache' if found.cached else ''}); wrote {args.out}")
    return 0


def _print_tables(metrics: dict) -> None:
    """The confusion matrix and scikit-learn's per-class report of `evaluate.evaluate_model`."""
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
    if not 0.0 <= args.min_tissue <= 1.0:
        raise UsageError(f"{PROG} heatmap: error: --min-tissue must lie in [0, 1], got {args.min_tissue}")
    model = evaluate.load_model(args.model)
    region = regions.read_region(args.region)
    result = slide.heatmap(model, region, stride=args.stride, min_tissue=args.min_tissue,
                           batch_size=args.batch_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    slide.draw_heatmap(region, result, args.out, title=f"{args.region.name}: {Path(args.model).name}")
    print(f"{result.n_scored} of {result.n_tiles} tiles scored; wrote {args.out}")
    return 0


def _data(args) -> int:
    """Download real data, checked (MD5, or SHA-256 per file); files already there and intact
    are kept. Offline, fails fast with a message saying where to get the files by hand."""
    for path in data.download(args.dataset, args.out):
        print(f"{path} ({data.DOWNLOADS[args.dataset].checked})")
    return 0


def _one_line(error, limit: int = 600) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


COMMANDS = {"train": _train, "cv": _cv, "evaluate": _evaluate, "duplicates": _duplicates, "heatmap": _heatmap,
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
        failure = describe_failure(error)
        if failure is None:
            raise
        print(f"{PROG} {args.command}: error: {_one_line(failure)}", file=sys.stderr)
        return 2
