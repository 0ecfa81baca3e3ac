# %% [markdown]
# # Ovarian subtypes: three backbones, three attentions, two pipelines
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/histolib/histolib/blob/main/book/06_ovarian_subtypes.ipynb)
#
# ## Overview
#
# The ovarian seed trained one model per backbone (InceptionV3, Xception, MobileNet), each with its
# thresholded attention block, in a pipeline with three faults: it oversampled before splitting,
# scaled every backbone's input by 1/255 only, and used no augmentation. This chapter runs that
# pipeline and the corrected one side by side, on every backbone, with no attention, the seed's
# thresholded attention and real differential attention.
#
# 1. The data, two ways: the seed's split and the corrected split
# 2. The models: three backbones, the seed's head and three corrected heads
# 3. Training every combination
# 4. One table: the seed's pipeline against the corrected one
# 5. Does attention help? A paired comparison over training seeds
# 6. The full profile: the real images, 224 pixels, ImageNet weights
#
# ```{warning}
# In the quick profile every number on this page comes from **synthetic** images
# (`synthetic-subtype`, built into `histolib.data`), from **randomly initialised** backbones (this
# book never downloads ImageNet weights), at **72 pixels**, from **50 images** and **one epoch**.
# These numbers teach the mechanics of the two pipelines; they say nothing about which backbone or
# which attention is better on real tissue. Section 6 is the switch to the real experiment.
# ```
#
# ## Prerequisites
#
# | Concepts | Importance | Notes |
# | --- | --- | --- |
# | {doc}`02_preprocessing` | Necessary | Oversampling before and after the split; the leak |
# | {doc}`03_backbones` | Necessary | The three backbones, their input scaling and feature maps |
# | {doc}`04_attention` | Necessary | Thresholded and differential attention |
# | {doc}`07_evaluation` | Helpful | Macro averages and paired comparisons over seeds |
#
# - **Time to learn**: 40 minutes
# - **System requirements**: any CPU; about six minutes on two idle cores in the quick profile. The
#   full profile wants a GPU and the ovarian image folders (section 6).

# %% [markdown]
# ## Setup
#
# On Colab this cell installs `histolib` (TensorFlow is already there); elsewhere it does nothing.

# %%
import sys

if "google.colab" in sys.modules:
    !pip install -q "histolib @ git+https://github.com/histolib/histolib"

# %% [markdown]
# ## Imports

# %%
import os
import tempfile
import time

import keras
import numpy as np
import pandas as pd

from histolib import data, evaluate, train
from histolib.data import splits, synthetic
from histolib.models import build_classifier, build_seed_subtype_model, get_backbone

# %% [markdown]
# ## Hyperparameters
#
# The quick profile's values, with the full run's beside each. The full profile reads the ovarian
# images from the folder named by `HISTOLIB_OVARIAN` (one sub-folder per subtype, the seed's
# layout) and loads ImageNet weights as chapter 3 describes (Keras's cache, or
# `HISTOLIB_WEIGHTS_DIR` offline).

# %%
PROFILE = os.environ.get("HISTOLIB_PROFILE", "quick")  # "full": real images, ImageNet weights
QUICK = PROFILE == "quick"
SEED = 0
DATA = "synthetic-subtype:50" if QUICK else "folder:" + os.environ.get("HISTOLIB_OVARIAN", "data/ovarian")  # seed: 3,082 PNGs
IMAGE_SIZE = 72 if QUICK else 224  # the seed: 224
WEIGHTS = None if QUICK else "imagenet"  # the seed: ImageNet weights, frozen backbone
EPOCHS = 1 if QUICK else 50  # the seed: EarlyStopping(patience=5) ended its runs
PATIENCE = 5  # the seed's EarlyStopping patience
LEARNING_RATE = 1e-3 if QUICK else 1e-4  # the seed: 1e-4 (on a frozen, pretrained backbone)
BATCH_SIZE = 16  # the seed's
BACKBONES = ["inception_v3", "xception", "mobilenet"]
ATTENTIONS = [None, "thresholded", "differential"]
COMPARE_BACKBONES = ["mobilenet"] if QUICK else BACKBONES  # section 5: backbones compared over seeds
SEEDS = [0, 1] if QUICK else [0, 1, 2, 3, 4]  # section 5: training seeds per variant
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None  # throwaway run folders, in memory where possible
keras.utils.set_random_seed(SEED)
print(f"profile {PROFILE!r}: {DATA}, {IMAGE_SIZE} px, weights {WEIGHTS}, {EPOCHS} epochs, seeds {SEEDS}")

# %% [markdown]
# ## 1. The data, two ways
#
# `histolib.data.load` takes the split order as an argument. The seed's order is
# `oversample="before"`: RandomOverSampler grows every class to the largest over the whole set, and
# the oversampled rows are then split 80/10/10, so copies of one image can sit in train and test.
# The corrected order is `oversample="after"`: split the images first, then oversample the
# training split only; validation and test keep one row per image. Rows per split and class:

# %%
class_names = data.info(DATA)["class_names"]
counts = pd.concat({
    order: pd.DataFrame({s: data.info(DATA, s, seed=SEED, oversample=order)["counts"] for s in splits.SPLITS},
                        index=class_names).T
    for order in ["before", "after"]
}, names=["oversample", "split"])
counts["total"] = counts.sum(axis=1)
counts

# %% [markdown]
# The leak, counted. The labels are enough to know which source image each row is (the split
# functions work on indices), so `splits.count_shared` counts the test rows whose image is also a
# training row:

# %%
labels = synthetic.subtype_table(int(DATA.split(":")[1]), SEED)[0] if QUICK else None
if labels is not None:
    rows = {order: {s: splits.select(labels, s, seed=SEED, oversample_order=order) for s in ("train", "test")}
            for order in ["before", "after"]}
    for order, r in rows.items():
        print(f"oversample={order!r}: {splits.count_shared(r['train'], r['test'])} of {len(r['test'])} "
              "test rows are training images")

# %% [markdown]
# The two pipelines differ in two more ways. The seed fed each backbone the images scaled to
# [0, 1] (its 1/255), while each ImageNet backbone expects its own scaling (all three expect
# $2x - 1$, that is $[-1, 1]$): `build_seed_subtype_model` keeps the seed's, `build_classifier`
# scales inside the model. And the corrected pipeline augments its training images with the
# `"subtype"` set (rotations, flips, zoom) that the seed's README promised and its code lacked.
#
# | | seed's pipeline | corrected pipeline |
# | --- | --- | --- |
# | split | oversample all, then split | split, then oversample train only |
# | model | `build_seed_subtype_model(backbone)` | `build_classifier(backbone, attention=...)` |
# | input scaling | 1/255 only | each backbone's own, inside the model |
# | attention | thresholded (the seed's "differential") | none, thresholded, or differential |
# | augmentation | none | `"subtype"` |
#
# With random weights the scaling matters less than with ImageNet weights: a randomly initialised
# backbone has no expectations, and its batch normalisation adapts to whatever it is fed. With
# frozen ImageNet weights (the full profile) it matters a great deal (chapter 3).

# %% [markdown]
# ## 2. The models
#
# Twelve models: per backbone, the seed's model and three corrected ones. At the quick profile's
# 72 pixels Xception gives a 3 x 3 feature map; MobileNet and InceptionV3 would give less, so the
# builders resize their input inside the model to the smallest size that gives 3 x 3 (95 and 139
# pixels; chapter 3). So every attention block sees 9 tokens here, against 25 to 49 at 224
# pixels. The seed's
# head projects to the backbone's full width (2,048 or 1,024 channels); the corrected heads use
# width 256.

# %%
grid = pd.DataFrame({b: {f"{s} px": f"{get_backbone(b).grid[s]} x {get_backbone(b).grid[s]}" for s in (96, 224, 299)}
                     | {"channels": get_backbone(b).channels} for b in BACKBONES}).T
grid

# %% [markdown]
# ## 3. Training every combination
#
# One cell trains all twelve models with `histolib.train.fit` (Adam, EarlyStopping restoring the
# best weights, ReduceLROnPlateau; chapter 5), selecting on each pipeline's own validation split,
# and scores each with `histolib.evaluate` on its own pipeline's test split. Every run writes to a
# temporary folder, deleted after scoring; `fit` saves the model with its optimizer state after
# every epoch so that a run can resume, which for a 22-million-parameter backbone is a quarter of
# a gigabyte each time, so the folders go to memory (`/dev/shm`) where the system has one. Section 5 needs more training seeds for the backbones it
# compares; they are trained here too, in the same loop.

# %% tags=["nbval-ignore-output"]
variants = [("seed", "thresholded")] + [("corrected", a) for a in ATTENTIONS]
jobs = [(b, p, a, s) for b in BACKBONES for p, a in variants for s in SEEDS
        if s == SEEDS[0] or (p == "corrected" and b in COMPARE_BACKBONES)]
results = []
started = time.perf_counter()
for backbone, pipeline, attention, seed in jobs:
    seed_pipeline = pipeline == "seed"
    order = "before" if seed_pipeline else "after"
    train_ds = data.load(DATA, "train", batch_size=BATCH_SIZE, image_size=IMAGE_SIZE, shuffle=True, seed=seed,
                         oversample=order, augment=None if seed_pipeline else "subtype")
    valid_ds, test_ds = (data.load(DATA, s, batch_size=64, image_size=IMAGE_SIZE, seed=seed, oversample=order)
                         for s in ("valid", "test"))
    shape = (IMAGE_SIZE, IMAGE_SIZE, 3)
    if seed_pipeline:
        model = build_seed_subtype_model(backbone, num_classes=len(class_names), input_shape=shape, weights=WEIGHTS)
    else:
        model = build_classifier(backbone, attention=attention, num_classes=len(class_names), input_shape=shape,
                                 weights=WEIGHTS)
    with tempfile.TemporaryDirectory(dir=SCRATCH) as out:
        fitted = train.fit(model, train_ds, valid_ds, out_dir=out, epochs=EPOCHS, learning_rate=LEARNING_RATE,
                           patience=PATIENCE, seed=seed, verbose=0)
        scores = evaluate.evaluate_model(fitted.model, test_ds, class_names=class_names)
    results.append({"backbone": backbone, "pipeline": pipeline, "attention": attention or "none", "seed": seed,
                    "parameters": model.count_params(), "epochs": fitted.epochs_done, "accuracy": scores["accuracy"], "macro F1": scores["f1"],
                    "test rows": scores["n"]})
    print(f"{backbone:12s} {pipeline:9s} {attention or 'none':12s} seed {seed}: accuracy {scores['accuracy']:.2f}, "
          f"macro F1 {scores['f1']:.2f} ({time.perf_counter() - started:.0f} s so far)")
    keras.utils.clear_session()
results = pd.DataFrame(results)

# %% [markdown]
# The twelve models' sizes. The seed's attention block alone holds about 12.6 million parameters
# on the 2,048-channel backbones (three 2,048 x 2,048 projections) and 3.1 million on MobileNet;
# the corrected attention blocks, of width 256, hold 0.8 to 2.1 million.

# %%
sizes = results[results["seed"] == SEEDS[0]].pivot_table(index="backbone", columns=["pipeline", "attention"],
                                                         values="parameters", aggfunc="first")
sizes.loc[BACKBONES].astype(int).map("{:,}".format)

# %% [markdown]
# ## 4. One table
#
# The seed's pipeline against the corrected one, per backbone, on the first training seed. Each
# pipeline is scored on its own test split: the seed's test rows include copies of its training
# images (section 1), the corrected test rows do not.

# %% tags=["nbval-ignore-output"]
first = results[results["seed"] == SEEDS[0]]
table = first.pivot_table(index="backbone", columns=["pipeline", "attention"], values=["accuracy", "macro F1"])
table = table.reorder_levels([1, 2, 0], axis=1).sort_index(axis=1, level=[0, 1], sort_remaining=False)
table.loc[BACKBONES].round(2)

# %% [markdown]
# Read the table for what it can say. In the quick profile the models are random-initialised
# backbones trained for one epoch on 40 images (75 rows after oversampling), and the test splits
# hold 5 (corrected) to 10 (seed's order) images, so one image moves the accuracy by 10 to 20
# points; scores near 0.2 are chance for five classes. What the table does show is that the whole grid runs through one front
# door and one training function, and where the seed's numbers come from: its test rows are mostly
# copies of training images. On real data with pretrained backbones that leak inflates the score
# (chapter 2 measures it with the same model trained both ways); chapter 9 puts the seed's
# published scores beside the leak's size, class by class.

# %% [markdown]
# ## 5. Does attention help?
#
# One run per variant cannot say: training seeds alone move scores by several points. The honest
# comparison trains each variant with several seeds, scores all of them on the same test split,
# and compares the variants seed by seed with a paired test
# (`histolib.evaluate.paired_comparison`: the paired t-test and the Wilcoxon signed-rank test).
# The per-seed macro F1 of each variant, corrected pipeline:

# %% tags=["nbval-ignore-output"]
compared = results[(results["pipeline"] == "corrected") & results["backbone"].isin(COMPARE_BACKBONES)]
per_seed = compared.pivot_table(index=["backbone", "seed"], columns="attention", values="macro F1")
per_seed.round(3)

# %% tags=["nbval-ignore-output"]
comparisons = {(b, v): evaluate.paired_comparison(per_seed.loc[b, "none"], per_seed.loc[b, v])
               for b in COMPARE_BACKBONES for v in ["thresholded", "differential"]}
pd.DataFrame({key: {"seeds": c["n"], "mean F1, no attention": c["mean_baseline"], "mean F1, variant": c["mean_variant"],
                    "mean difference": c["mean_difference"], "paired t-test p": c["ttest_rel"]["pvalue"],
                    "Wilcoxon p": c["wilcoxon"]["pvalue"]}
              for key, c in comparisons.items()}).T.rename_axis(["backbone", "variant"]).round(3)

# %% [markdown]
# In the quick profile this is two seeds of one backbone: a paired t-test with one degree of
# freedom, and a Wilcoxon test whose smallest possible two-sided p-value with two pairs is 0.5.
# **The evidence is far too thin to say that either attention helps or hurts**, whatever the means
# show, and the models barely left chance. The full profile trains five seeds per variant on every
# backbone; even there, five pairs give the Wilcoxon test a floor of 0.0625, so read the t-test
# and, above all, the size and sign of the per-seed differences. A claim that attention helps needs
# a difference that is consistent across seeds and larger than their spread.

# %% [markdown]
# ## 6. The full profile
#
# `HISTOLIB_PROFILE=full` runs the same cells on the real experiment: the ovarian images from
# `HISTOLIB_OVARIAN` (the seed's 3,082 PNGs in one folder per subtype, read through the `folder:`
# spec), 224 x 224 pixels, ImageNet weights with frozen backbones, the seed's learning rate of
# 1e-4, up to 50 epochs with the seed's patience of 5, and five training seeds per corrected
# variant. That is 3 + 3 x 3 x 5 = 48 trainings: a GPU job. Chapter 3 explains how to supply the
# ImageNet weights offline (`HISTOLIB_WEIGHTS_DIR`); Appendix A1 how to run the book on a GPU or a
# Colab TPU.
#
# ```bash
# HISTOLIB_PROFILE=full HISTOLIB_OVARIAN=/data/ovarian HISTOLIB_WEIGHTS_DIR=/data/keras-weights \
#     jupyter nbconvert --to notebook --execute book/06_ovarian_subtypes.ipynb
# ```
#
# One corrected model from the command line (the CLI splits first and does not oversample; add
# `--class-weight balanced` to weigh the classes instead):
#
# ```bash
# histolib train --data folder:/data/ovarian --model xception+differential --image-size 224 \
#     --batch-size 16 --lr 1e-4 --patience 5 --epochs 50 --augment subtype --out runs/ovarian-xception-diff
# ```

# %% [markdown]
# ## Summary
#
# - The seed's order (oversample, then split) puts copies of training images into the test split;
#   the corrected order (split, then oversample the training split) cannot, and `splits.count_shared`
#   counts the difference.
# - `build_seed_subtype_model` is the seed's model as published (1/255 input, a 2,048-wide
#   thresholded attention, a noisy dense head); `build_classifier` gives each backbone its own
#   scaling and any of the attention blocks.
# - `train.fit` and `evaluate.evaluate_model` run all twelve combinations the same way; the quick
#   profile's numbers (synthetic images, random backbones, 72 pixels, 50 images, one epoch) teach
#   the mechanics only.
# - "Attention helps" is a claim about a difference across training seeds, tested paired; two seeds
#   cannot support it.
#
# ## Exercises
#
# 1. How many test rows of the seed's order are training images if the split is 90/5/5? Use
#    `splits.select` with `fractions=(0.9, 0.05, 0.05)`.
# 2. Why does the seed's model have more parameters on Xception than on MobileNet, beyond the
#    backbones themselves?
# 3. With `SEEDS = [0, 1, 2]`, what is the smallest two-sided p-value the Wilcoxon test can give?
#
# ````{dropdown} Solutions
# 1. Count as in section 1, with the other fractions:
#
#    ```python
#    r = {s: splits.select(labels, s, fractions=(0.9, 0.05, 0.05), seed=SEED, oversample_order="before")
#         for s in ("train", "test")}
#    splits.count_shared(r["train"], r["test"]), len(r["test"])
#    ```
#
#    A larger training share holds more of each image's copies, so a larger share of the test rows
#    leaks.
# 2. Its thresholded attention projects queries, keys and values to the backbone's full width:
#    three 2,048 x 2,048 dense layers on Xception (about 12.6 million weights) against three
#    1,024 x 1,024 on MobileNet (about 3.1 million).
# 3. 0.25: with three pairs all of one sign, the exact two-sided p-value is $2 / 2^3$.
# ````
#
# ## Resources
#
# - imbalanced-learn, *Common pitfalls and recommended practices*:
#   <https://imbalanced-learn.org/stable/common_pitfalls.html>
# - Bouthillier et al. (2021), *Accounting for variance in machine learning benchmarks*:
#   <https://arxiv.org/abs/2103.03098>
# - Keras Applications (InceptionV3, Xception, MobileNet): <https://keras.io/api/applications/>
# - Ye et al. (2024), *Differential Transformer*: <https://arxiv.org/abs/2410.05258>
#
# ## What's next
#
# {doc}`07_evaluation` looks closer at the metrics used here: confusion matrices, ROC, calibration,
# confidence intervals and comparisons over seeds.
