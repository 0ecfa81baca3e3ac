"""The options of the ``histolib`` command: its argument parser, one ``_add_*`` function a subcommand.

``build_parser`` makes the parser that `histolib.cli` parses with: each subcommand's options,
their checks (positive numbers, existing files, model names the command can train) and its help,
whose description is the docstring of the function in `histolib.cli` that runs it. A bad command
line raises ``UsageError``, which the command reports in one line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from histolib import data, models
from histolib import strategy as strategies
from histolib.config import SCHEDULES
from histolib.layers.augmentation import NAMES as AUGMENTATIONS
from histolib.names import unknown_name

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
    """argparse's parser, raising `UsageError` instead of exiting."""

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


def _none_or(text: str):
    """The word ``none`` as ``None``: options whose default is to do nothing."""
    return None if text == "none" else text


def _spec_help() -> str:
    return "data spec: " + ", ".join(data.SPECS)


def _command_models() -> list[str]:
    """The model names `histolib train` builds: every registry name but the ``mil-*`` ones, which
    train on bags of tile features rather than on images."""
    return [n for n in models.list_models() if not n.startswith("mil-")]


def _model_name(text):
    if text.startswith("mil-") and text in models.list_models():
        raise argparse.ArgumentTypeError(
            f"{text} trains on bags of tile features (histolib.data.bags), which the command does not make; "
            "build and train it from Python (histolib.models.build_model, chapter 10)")
    names = _command_models()
    if text not in names:
        raise argparse.ArgumentTypeError(
            str(unknown_name("model name", text, names, argument="--model", plural="model names")))
    return text


def _existing_file(text):
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return Path(text)


def _command(commands, name: str, help: str, example: str | None = None, *, saved_model: bool = False):
    """A subcommand's parser: ``help`` in the list of commands, an example command line after its
    options, and with ``saved_model`` a required ``--model FILE`` (a ``.keras`` file)."""
    parser = commands.add_parser(name, help=help,
                                 epilog=None if example is None else f"example:\n  {example}",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    if saved_model:
        parser.add_argument("--model", required=True, type=_existing_file, metavar="FILE", help="a .keras model")
    return parser


def _model_option(text):
    """``KEY=VALUE`` -> ``(key, value)``, the value read as JSON where it parses (numbers,
    true/false, null), else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _add_train(commands) -> None:
    t = _command(
        commands, "train", "train a model on a data spec's train split, selecting on its valid split",
        example="histolib train --data folder:../shared/data/pcam-jpeg --model seed-pcam "
        "--epochs 8 --augment pcam-seed --out runs/pcam-seed")
    _add_run_options(t)


def _add_cv(commands) -> None:
    c = _command(
        commands, "cv", "cross-validate a model over grouped, stratified folds of a source without split folders",
        example="histolib cv --data folder:../shared/data/ovarian --groups near-duplicates --folds 5 --repeats 3 "
        "--model tiles-both+meanmax --epochs 300 --out runs/ovarian-cv")
    c.add_argument("--folds", type=_positive_int, default=5, metavar="K", help="folds per repeat (default 5)")
    c.add_argument("--repeats", type=_positive_int, default=3, metavar="R",
                   help="repeats, each with its own shuffle of the folds (default 3)")
    _add_run_options(c)


def _add_run_options(t) -> None:
    """What train and cv share: the data, the model and how to train it."""
    t.add_argument("--data", required=True, metavar="SPEC", help=_spec_help())
    t.add_argument("--model", required=True, metavar="NAME", type=_model_name,
                   help=f"one of: {', '.join(_command_models())}")
    t.add_argument("--epochs", required=True, type=_positive_int, metavar="N", help="total epochs of the run")
    t.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (resumes if it holds a run)")
    t.add_argument("--batch-size", type=_positive_int, default=64, metavar="B", help="images per batch (default 64)")
    t.add_argument("--augment", metavar="SET", default=None, choices=AUGMENTATIONS,
                   help="augmentation of the training images: pcam-seed (the seed's flips, "
                   "brightness, contrast), pcam (adds 90-degree rotations and HED stain jitter), pcam-strong "
                   "(stronger stain jitter) or subtype")
    t.add_argument("--augment-in", choices=["data", "model"], default="data",
                   help="where --augment runs: data (the tf.data pipeline, on the host; default) or model "
                   "(a layer inside the model's training step, on the accelerator, so the host only decodes; "
                   "the identity at inference and saved with the model)")
    t.add_argument("--image-size", type=_positive_int, metavar="PX", default=None,
                   help="resize images to PX x PX (default: the data's own size)")
    t.add_argument("--seed", type=int, default=0, help="seed for shuffling, augmentation and weights (default 0)")
    _add_training_options(t)
    _add_split_options(t, training=True)
    _add_route_options(t)


def _add_training_options(t) -> None:
    """The optimiser, schedule, weights, precision and device options of ``train``."""
    t.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam's initial learning rate (default 1e-3)")
    t.add_argument("--patience", type=int, default=3, help="EarlyStopping patience in epochs (default 3)")
    t.add_argument("--monitor", default="val_loss",
                   help="what EarlyStopping, ModelCheckpoint and ReduceLROnPlateau watch (default val_loss; "
                   "e.g. val_auc)")
    t.add_argument("--class-weight", type=_none_or, choices=[None, "balanced"], default=None, metavar="{none,balanced}",
                   help="weight classes by inverse frequency in the train split (default none)")
    t.add_argument("--weights", default="auto", metavar="W",
                   help="initial weights: auto (ImageNet for pretrained backbones, with the backbone "
                   "frozen; nothing for seed-pcam and seed_cnn), imagenet, none (random, nothing "
                   "frozen) or a weights file (default auto)")
    t.add_argument("--weights-dir", type=Path, default=None, metavar="DIR",
                   help="look for ImageNet weight files in DIR first (sets $HISTOLIB_WEIGHTS_DIR for this run), "
                   "e.g. ../shared/weights")
    t.add_argument("--fine-tune", action="store_true", help="train the pretrained backbone too (default: frozen)")
    t.add_argument("--model-option", type=_model_option, action="append", default=[], metavar="KEY=VALUE",
                   help="another option of the model's builder, e.g. stride=112 or l2=0.001 for a tiles-* model "
                   "(repeatable; histolib.models.model_options lists them)")
    t.add_argument("--backbone-size", type=_positive_int, metavar="PX", help="resize to PX inside the model, before the backbone")
    t.add_argument("--schedule", default="plateau", choices=SCHEDULES,
                   help="plateau: ReduceLROnPlateau by 0.3 (the seeds', default); cosine: decay to 0 at the last epoch")
    t.add_argument("--warmup-epochs", type=float, default=0.0, metavar="E", help="warm-up of the cosine schedule")
    t.add_argument("--precision", default="auto", choices=strategies.PRECISIONS,
                   help="Keras dtype policy; auto: mixed_bfloat16 on TPUs and, under TensorFlow, on CPUs "
                   "with bfloat16 instructions and oneDNN on, mixed_float16 on GPUs, float32 otherwise")
    t.add_argument("--strategy", default=None, choices=strategies.CHOICES,
                   help="distribution strategy (default: $HISTOLIB_STRATEGY, else auto: a TPU, else "
                   "mirrored GPUs, else one device; under KERAS_BACKEND=jax: data-parallel over all JAX "
                   "devices where there are several); --batch-size is then the global batch")
    t.add_argument("--solver", choices=("adam", "lbfgs"), default="adam",
                   help="adam: Keras's fit (default); lbfgs: a tile classifier's linear head (mean, max or meanmax "
                   "pooling) fitted as a logistic regression by scikit-learn, C chosen on valid, then refitted on "
                   "train and valid")
    t.add_argument("--deterministic", action="store_true", help="enable TensorFlow op determinism (slower)")
    t.add_argument("--tensorboard", action="store_true", help="also log to OUT/tensorboard")
    t.add_argument("--steps-per-epoch", type=_positive_int, default=None, metavar="N",
                   help="train on N batches per epoch (default: the whole split)")
    t.add_argument("--validation-steps", type=_positive_int, default=None, metavar="N",
                   help="validate on N batches (default: the whole split)")
    t.add_argument("--steps-per-execution", type=_positive_int, default=1, metavar="N",
                   help="batches per compiled call (default 1; 32 or more on a TPU, where each call has "
                   "a fixed host cost)")


def _add_route_options(t) -> None:
    """Whether a frozen backbone's features are computed once (``--features``, ``--views``)."""
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
    parser.add_argument("--oversample", type=_none_or, choices=[None, "after", "before"], default=None,
                        metavar="{none,after,before}",
                        help="RandomOverSampler after the split on the training rows only, or before it as "
                        "the ovarian seed did (copies leak into valid and test: for showing the leak)"
                        + (" (default none)" if training else record))


def _add_evaluate(commands) -> None:
    e = _command(
        commands, "evaluate", "score a saved model on a data spec's split",
        example="histolib evaluate --model runs/pcam-seed/best.keras "
        "--data folder:../shared/data/pcam-jpeg --split valid --tta --json valid.json", saved_model=True)
    e.add_argument("--data", required=True, metavar="SPEC", help=_spec_help())
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


def build_parser(handlers: dict) -> argparse.ArgumentParser:
    """The argument parser of the ``histolib`` command.

    Args:
        handlers: ``{subcommand: function}``, the functions that run the subcommands (their
            docstrings are the subcommands' descriptions in ``--help``).
    """
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
    for add in (_add_train, _add_cv, _add_evaluate, _add_duplicates, _add_heatmap, _add_data):
        add(commands)
    for name, subcommand in commands.choices.items():  # each one's description: its function's docstring
        subcommand.description = _para(" ".join(handlers[name].__doc__.split()))
    return parser

