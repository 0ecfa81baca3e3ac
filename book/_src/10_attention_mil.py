# %% [markdown]
# # Attention over a bag: multiple-instance learning
#
# [Open in Colab]({{ colab_url }})
#
# ## Overview
#
# In computational pathology the attention that matters most is not inside a patch classifier. A
# slide is gigapixels; its label (tumour or not, which subtype) belongs to the whole slide, not to
# any of its thousands of tiles. *Multiple-instance learning* (MIL) learns from one label per bag
# of tiles, and attention-based MIL (Ilse, Tomczak and Welling 2018) pools the bag with learnt
# weights that also say which tiles carried the decision. CLAM and TransMIL build on it, and the
# UBC-OCEAN ovarian-subtype challenge was won with MIL over frozen tile features. This chapter
# builds it in Keras, on real tissue.
#
# 1. Bags, and the multiple-instance assumption
# 2. Four ways to pool a bag: mean, max, attention, gated attention
# 3. A frozen encoder, and tile features computed once
# 4. PCam bags: the four poolings over seeds
# 5. Does the attention find the tumour? Instance-level AUC, down to one tumour patch per bag
# 6. Images of any size (in chapter 6)
# 7. Attention over a real slide region
# 8. The recorded full run
#
# ## Prerequisites
#
# | Concepts | Importance | Notes |
# | --- | --- | --- |
# | {doc}`04_attention` | Necessary | Softmax attention weights |
# | {doc}`07_evaluation` | Necessary | ROC AUC, bootstrap intervals, paired comparisons over seeds |
# | {doc}`08_saliency` | Helpful | Tiling a slide region, tissue masks |
#
# - **Time to learn**: 50 minutes
# - **System requirements**: any CPU; about three minutes on two cores in the quick profile, on
#   the real PCam patches, slide region and ImageNet weights beside the project (`../shared`) when
#   they are there, on synthetic stand-ins otherwise. The recorded full profile's wall time is in
#   section 8.

# %% [markdown]
# ## Setup
#
# On Colab this cell installs `histolib` (TensorFlow is already there); elsewhere it does nothing.

# %%
import sys

if "google.colab" in sys.modules:
    !pip install -q "histolib @ git+{{ repository_url }}"

# %% [markdown]
# ## Imports

# %%
%matplotlib inline
%config InlineBackend.figure_formats = ["jpeg"]  # tissue pictures: JPEG keeps the stored notebook small
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from histolib import evaluate, mil, plots, provenance, saliency
from histolib.config import TrainConfig
from histolib.data import bags, regions, splits, synthetic
from histolib.data.features import cache_dir, read_source, tile_features
from histolib.layers import AttentionMILPooling
from histolib.models import attention_scores, build_tile_encoder

# %% [markdown]
# ## Hyperparameters
#
# Where the numbers come from: with `../shared` beside the project (as on the developers' machines
# and in CI), every bag below is made of **real tissue** (PatchCamelyon patches, a real slide
# region) and the tile encoder carries **real ImageNet weights**.
# Without it, the chapter falls back to synthetic patches and a random-initialised encoder, says
# so, and its numbers then show only the mechanics. The quick profile trains each MIL head on
# 180 bags for at most 20 epochs with three seeds; the full one (`HISTOLIB_PROFILE=full`) on 300
# bags with five seeds, and it writes `book/results/mil_pcam.json`, which section 8 reads.

# %%
PROFILE = os.environ.get("HISTOLIB_PROFILE", "quick")  # "full": more bags, 5 seeds
QUICK = PROFILE == "quick"
SHARED = Path(os.environ.get("HISTOLIB_SHARED", "../../shared"))
PCAM = SHARED / "data" / "pcam-jpeg"  # train/{0,1}, valid/{0,1}: 23,000 real patches
REGION = SHARED / "data" / "he-region" / "CMU-1-Small-Region.svs"
WEIGHTS = SHARED / "weights"  # mobilenet_2_5_224_tf_no_top.h5: MobileNet 0.25's ImageNet weights
SEEDS = [0, 1, 2] if QUICK else [0, 1, 2, 3, 4]  # training seeds per pooling
TRAIN_BAGS = 240 if QUICK else 400  # bags from pcam-jpeg/train, a quarter of them for validation
TEST_BAGS = 70  # bags from pcam-jpeg/valid: as many as its 1,500 normal patches allow
BAG_SIZE = (8, 32)  # patches per bag
POSITIVE_FRACTION = (0.1, 0.5)  # tumour share in a positive bag; section 5 also uses 0 (one patch)
EPOCHS, PATIENCE = (20, 4) if QUICK else (100, 10)
POOLINGS = ("mean", "max", "attention", "gated")  # the four this chapter compares (histolib has more)
TILE = 96  # tile side in pixels, PCam's patch size
BOOTSTRAP = 300 if QUICK else 2000  # resamples for the bag-AUC intervals
DATA_SEED = 0  # which patches form which bag
REAL = (PCAM / "train").is_dir() and (WEIGHTS / "mobilenet_2_5_224_tf_no_top.h5").is_file()
os.environ.setdefault("HISTOLIB_WEIGHTS_DIR", str(WEIGHTS))
RUNS = Path(tempfile.mkdtemp(prefix="histolib-ch10-"))
keras.utils.set_random_seed(DATA_SEED)  # the untrained layers of section 2; each training seeds again
started = time.time()
print(f"profile {PROFILE!r}: {len(SEEDS)} seeds, {TRAIN_BAGS} training bags; real data: {REAL}")

# %% [markdown]
# Without the real data, this cell writes synthetic PCam-like patches (chapter 1) into a temporary
# folder in the same layout, and the encoder stays random.

# %%
if REAL:
    ENCODER_WEIGHTS, SOURCE = "imagenet", "real tissue, frozen ImageNet MobileNet 0.25"
else:
    ENCODER_WEIGHTS, SOURCE = None, "SYNTHETIC patches and a RANDOM encoder: mechanics only"
    PCAM = RUNS / "pcam"
    for split, n in (("train", 2400), ("valid", 1200)):
        images, labels, _ = synthetic.pcam_patches(n, DATA_SEED, split=split)
        synthetic.write_folder(PCAM, images, labels, ["0", "1"], split=split, fmt="jpg")
    TRAIN_BAGS, TEST_BAGS, TILE = 60, 30, 48
print(SOURCE)

# %% [markdown]
# ## 1. Bags, and the multiple-instance assumption
#
# A *bag* $X = \{x_1, \dots, x_n\}$ is a set of instances (tiles) with one label $Y$; the tiles'
# own labels $y_k$ exist but are not given. The standard multiple-instance assumption: a bag is
# positive exactly when at least one of its instances is,
#
# $$
# Y = \max_k \, y_k .
# $$
#
# PatchCamelyon gives a way to test MIL where the answer is known: every patch has a label (tumour
# in its centre 32 x 32 pixels or not), so bags of patches have known instance labels that the
# model never sees. `bags.pcam_bags` draws bags of 8 to 32 patches from an image folder, half of
# them positive, each patch in at most one bag; a positive bag holds a share of tumour patches
# drawn from `positive_fraction` (at least one patch). Training bags come from `pcam-jpeg/train`
# (a quarter of them held out for early stopping), test bags from `pcam-jpeg/valid`, so no patch is
# on both sides.

# %%
pool = bags.pcam_bags(PCAM, "train", n_bags=TRAIN_BAGS, bag_size=BAG_SIZE, positive_fraction=POSITIVE_FRACTION,
                      seed=DATA_SEED)
held_out = splits.stratified_split(pool.labels, (0.75, 0.25, 0.0), seed=DATA_SEED)
several = {"train": bags.subset(pool, held_out["train"]), "valid": bags.subset(pool, held_out["valid"]),
           "test": bags.pcam_bags(PCAM, "valid", n_bags=TEST_BAGS, bag_size=BAG_SIZE,
                                  positive_fraction=POSITIVE_FRACTION, seed=DATA_SEED)}
pd.DataFrame({part: {"bags": len(b), "positive bags": int(b.labels.sum()), "patches": len(b.sources),
                     "patches per bag": f"{b.sizes.min()}-{b.sizes.max()}",
                     "tumour share in positive bags": round(float(np.mean(
                         [b.tile_labels[b.members(i)].mean() for i in np.flatnonzero(b.labels == 1)])), 3)}
              for part, b in several.items()})

# %% [markdown]
# One positive training bag, its tumour patches framed in red. The model will only ever be told
# "this bag is positive".

# %%
example = int(np.flatnonzero(several["train"].labels == 1)[0])
members = several["train"].members(example)
example_tiles = np.stack([read_source(s) for s in several["train"].sources[members]])
plots.bag_tiles(example_tiles, np.full(len(members), 1 / len(members)), labels=several["train"].tile_labels[members])

# %% [markdown]
# ## 2. Four ways to pool a bag
#
# Each tile becomes a feature vector $h_k \in \mathbb{R}^c$; a pooling turns the bag into one
# vector $z$, and a small head classifies $z$. Any pooling that ignores the order of the tiles
# is a valid MIL pooling:
#
# - **mean**: $z = \frac{1}{n} \sum_k h_k$ (every tile counts the same);
# - **max**: $z_c = \max_k h_{kc}$ per channel (one tile can decide);
# - **attention** (Ilse et al. 2018, eq. 8): $z = \sum_k a_k h_k$ with learnt weights
#   $a_k = \operatorname{softmax}_k\big(w^\top \tanh(V h_k)\big)$;
# - **gated attention** (eq. 9): $a_k = \operatorname{softmax}_k\big(w^\top (\tanh(V h_k) \odot
#   \operatorname{sigmoid}(U h_k))\big)$, where the sigmoid gate lets a score depend on more than
#   the nearly linear part of $\tanh$.
#
# $V$ and $U$ are `Dense(units)` layers and $w$ a `Dense(1)`, each with a bias. The weights are
# positive and sum to one over the bag, so attention pooling is a weighted mean, and the weights
# themselves say which tiles the model relied on. `histolib.layers.AttentionMILPooling` computes
# it; by hand on a bag of four instances with three channels:

# %%
bag = np.array([[[1.0, 0.0, 2.0], [0.5, 1.0, 0.0], [3.0, 1.0, 1.0], [0.0, 0.0, 1.0]]], "float32")  # (1, 4, 3)
pooling = AttentionMILPooling(units=2, gated=True)
pooled, weights = pooling(bag, return_attention_scores=True)
V, b_V = (keras.ops.convert_to_numpy(w) for w in pooling.attention_v.weights)
U, b_U = (keras.ops.convert_to_numpy(w) for w in pooling.attention_u.weights)
w, b_w = (keras.ops.convert_to_numpy(w) for w in pooling.attention_w.weights)
scores = (np.tanh(bag[0] @ V + b_V) / (1 + np.exp(-(bag[0] @ U + b_U)))) @ w + b_w  # (4, 1)
a = np.exp(scores[:, 0] - scores.max()) / np.exp(scores[:, 0] - scores.max()).sum()
assert np.allclose(a, keras.ops.convert_to_numpy(weights)[0], atol=1e-6)
assert np.allclose(a @ bag[0], keras.ops.convert_to_numpy(pooled)[0], atol=1e-6)
print("weights a =", a.round(3), " sum =", a.sum().round(6))

# %% [markdown]
# Real bags have different sizes. To batch them, shorter bags are padded with empty instances
# and a boolean `mask` marks the real ones; the layer gives padding a weight of exactly zero, so
# padding changes nothing (Keras's own masking, e.g. a `Masking` layer, works too):

# %%
padded_bag = np.concatenate([bag, np.full((1, 3, 3), 9.0, "float32")], axis=1)  # three loud padding rows
mask = np.array([[True] * 4 + [False] * 3])
pooled_padded, weights_padded = pooling(padded_bag, mask=mask, return_attention_scores=True)
print("weights with padding:", keras.ops.convert_to_numpy(weights_padded)[0].round(3))
assert np.allclose(keras.ops.convert_to_numpy(pooled_padded), keras.ops.convert_to_numpy(pooled), atol=1e-6)

# %% [markdown]
# ## 3. A frozen encoder, and tile features computed once
#
# The instance encoder is MobileNet v1 at width 0.25 with its **ImageNet** weights, frozen, with
# global average pooling: 96 x 96 tiles become 256 numbers (`build_tile_encoder`). It was chosen
# because it has never seen a PCam label: whatever the MIL heads learn about tumour, they learn from
# the bag labels alone. (The book's own PCam model, `pcam-long`, would be a far stronger encoder,
# but it was trained on `pcam-jpeg/train`, whose patches make up the training bags here; exercise 3
# uses it honestly.)
#
# A frozen encoder means each tile's features can be computed once. `tile_features` keeps them in
# the user cache (below), keyed by the encoder's weights and each tile's file, size, modification
# time and box, so every later run, seed and pooling reads them back in a fraction of a second.

# %%
encoder = build_tile_encoder("mobilenet_025", tile_size=TILE, weights=ENCODER_WEIGHTS)
tic = time.time()
features = {part: tile_features(b, encoder) for part, b in several.items()}
print(f"{encoder.name}: {encoder.count_params():,} frozen parameters")
print({part: f.shape for part, f in features.items()})

# %% tags=["nbval-ignore-output"]
print(f"features of {sum(len(f) for f in features.values()):,} tiles in {time.time() - tic:.1f} s; "
      f"cache folder: {cache_dir()}")

# %% [markdown]
# ## 4. PCam bags: four poolings over seeds
#
# Every pooling gets the same head (`build_mil_classifier`): each tile's 256 features through
# `Dense(64, relu)` and dropout, the pooling, then a softmax over the two classes. It is an ordinary
# Keras model with two inputs, the padded features and their mask, so `train.fit` trains it
# (Adam, early stopping on the validation bags) and `evaluate` scores it like any other model. A
# single training seed is an anecdote (chapter 7), so each pooling is trained with several.

# %% tags=["nbval-ignore-output"]
results, test_probs, trained = [], {}, {}
for seed in SEEDS:
    settings = TrainConfig(epochs=EPOCHS, patience=PATIENCE, seed=seed, checkpoints=False, verbose=0)
    for pooling_name in POOLINGS:
        keras.utils.set_random_seed(seed)
        fitted = mil.fit_pooling(pooling_name, several, features, settings, max_instances=BAG_SIZE[1],
                                 out_dir=RUNS / f"several-{pooling_name}-{seed}")
        y_test, probs = fitted.labels, fitted.probs
        test_probs[pooling_name, seed], trained[pooling_name, seed] = probs, fitted.model
        results.append({"setting": "several", "pooling": pooling_name, "seed": seed, "epochs": fitted.epochs,
                        "bag AUC": roc_auc_score(y_test, probs[:, 1])})
pd.DataFrame(results).pivot(index="seed", columns="pooling", values="bag AUC")[list(POOLINGS)].round(3)

# %% [markdown]
# The bag AUC of each pooling, its spread over seeds, and a 95 % bootstrap interval over the test
# bags for seed 0 (the interval covers the choice of test bags, the spread over seeds the
# training; both matter):

# %% tags=["nbval-ignore-output"]
auc_table = pd.DataFrame(results).groupby("pooling", sort=False)["bag AUC"].agg(["mean", "std", "min", "max"])
auc_table["95% interval (seed 0)"] = [
    "{:.3f}-{:.3f}".format(*evaluate.bootstrap_intervals(y_test, test_probs[p, SEEDS[0]], metrics=("auc",),
                                                         n_resamples=BOOTSTRAP, seed=0)["auc"])
    for p in auc_table.index]
auc_table.round(3)

# %% [markdown]
# Is gated attention better than the other three? `evaluate.paired_comparison` pairs the scores
# by training seed (same bags, same seed, only the pooling differs):

# %% tags=["nbval-ignore-output"]
per_seed = pd.DataFrame(results).pivot(index="seed", columns="pooling", values="bag AUC")
pairs = pd.DataFrame({f"gated - {other}": evaluate.paired_comparison(per_seed[other], per_seed["gated"])
                      for other in ("mean", "max", "attention")}).T
pairs.assign(t_p=[p["pvalue"] for p in pairs["ttest_rel"]], wilcoxon_p=[p["pvalue"] for p in pairs["wilcoxon"]])[
    ["n", "mean_baseline", "mean_variant", "mean_difference", "t_p", "wilcoxon_p"]]

# %% [markdown]
# Read the differences against their spread. With three seeds, Wilcoxon's test cannot go below
# $p = 0.25$ and only a large, consistent difference gives a small $t$-test $p$: the quick profile
# shows the method, not the answer. The recorded full run (section 8: five seeds, 300 training
# bags) gives the bag AUCs below, read from `book/results/mil_pcam.json`:

# %%
FULL = json.loads(Path("results/mil_pcam.json").read_text()) if Path("results/mil_pcam.json").is_file() else None
if FULL:
    full_runs = pd.DataFrame(FULL["per_seed"])
    several_full = full_runs[full_runs["setting"] == "several"].pivot(index="seed", columns="pooling", values="bag AUC")
    display(several_full.agg(["mean", "std", "min", "max"]).round(3))
    gated_vs = {other: evaluate.paired_comparison(several_full[other], several_full["gated"])
                for other in ("mean", "max", "attention")}
    print("gated minus each, over the five seeds:",
          {k: f"{v['mean_difference']:+.3f} (t p {v['ttest_rel']['pvalue']:.2g}, higher on "
              f"{int((several_full['gated'] > several_full[k]).sum())} of 5)" for k, v in gated_vs.items()})

# %% [markdown]
# Mean pooling has the highest mean bag AUC in the recorded run and gated attention is above max
# pooling on every seed; plain and gated attention are not told apart. "Best" needs more than the
# means: each seed is scored on the same 70 test bags, whose 95 % bootstrap intervals (the table
# above, for this run's seed 0) are several hundredths wide, wider than most gaps between the
# poolings, so the ranking of mean, gated and plain attention is not settled by these bags. Mean
# pooling does well here because a third of a positive bag is tumour on average, so the bag's mean
# feature moves with it; max pooling lets a single channel of a single tile decide, and trails.
#
# ## 5. Does the attention find the tumour?
#
# The attention weights were never told which patches hold tumour. Inside each positive test bag,
# `saliency.instance_auc` ranks the tiles by their weight and asks how well that ranking separates
# tumour patches from normal ones: the ROC AUC within the bag (0.5 is chance), averaged over the
# positive bags, and how often the single highest-weighted tile is a tumour patch ("top-1"), beside
# the share of tumour patches (what a random pick would give).

# %%
x_test, mask_test = bags.padded(several["test"], features["test"])
labels_test, _ = bags.padded(several["test"], several["test"].tile_labels)
found = []
for (pooling_name, seed), model in trained.items():
    if pooling_name in ("attention", "gated"):
        weights_test = attention_scores(model, {"features": x_test, "mask": mask_test})
        found.append({"setting": "several", "pooling": pooling_name, "seed": seed,
                      **saliency.instance_auc(weights_test, mask_test, labels_test, several["test"].labels)})
found_table = pd.DataFrame(found).groupby("pooling", sort=False)[["auc", "top1", "chance_top1"]].agg(["mean", "std"])

# %% tags=["nbval-ignore-output"]
found_table.round(3)

# %% [markdown]
# The tiles of one positive test bag, ordered by the gated model's attention (seed 0), each titled
# with $n \cdot a_k$, its weight relative to the uniform $1/n$ of mean pooling; tumour patches are
# framed in red:

# %% tags=["nbval-ignore-output"]
shown = int(np.flatnonzero(several["test"].labels == 1)[0])
members = several["test"].members(shown)
weights_shown = attention_scores(trained["gated", SEEDS[0]], {"features": x_test[shown:shown + 1],
                                                               "mask": mask_test[shown:shown + 1]})[0, :len(members)]
plots.bag_tiles(np.stack([read_source(s) for s in several["test"].sources[members]]), weights_shown,
                labels=several["test"].tile_labels[members])

# %% [markdown]
# ### One tumour patch per bag
#
# The hard case, and the one closest to a slide with a small metastasis: each positive bag holds
# exactly one tumour patch among 8 to 32 (`positive_fraction=0`). The same four poolings, seeds and
# head:

# %%
pool_one = bags.pcam_bags(PCAM, "train", n_bags=TRAIN_BAGS, bag_size=BAG_SIZE, positive_fraction=0.0, seed=DATA_SEED)
held_out_one = splits.stratified_split(pool_one.labels, (0.75, 0.25, 0.0), seed=DATA_SEED)
one = {"train": bags.subset(pool_one, held_out_one["train"]), "valid": bags.subset(pool_one, held_out_one["valid"]),
       "test": bags.pcam_bags(PCAM, "valid", n_bags=TEST_BAGS, bag_size=BAG_SIZE, positive_fraction=0.0,
                              seed=DATA_SEED)}
features_one = {part: tile_features(b, encoder) for part, b in one.items()}
x_one, mask_one = bags.padded(one["test"], features_one["test"])
labels_one, _ = bags.padded(one["test"], one["test"].tile_labels)
for seed in SEEDS:
    settings = TrainConfig(epochs=EPOCHS, patience=PATIENCE, seed=seed, checkpoints=False, verbose=0)
    for pooling_name in POOLINGS:
        keras.utils.set_random_seed(seed)
        fitted = mil.fit_pooling(pooling_name, one, features_one, settings, max_instances=BAG_SIZE[1],
                                 out_dir=RUNS / f"one-{pooling_name}-{seed}")
        y_one, probs = fitted.labels, fitted.probs
        results.append({"setting": "one", "pooling": pooling_name, "seed": seed, "epochs": fitted.epochs,
                        "bag AUC": roc_auc_score(y_one, probs[:, 1])})
        if pooling_name in ("attention", "gated"):
            weights_one = attention_scores(fitted.model, {"features": x_one, "mask": mask_one})
            found.append({"setting": "one", "pooling": pooling_name, "seed": seed,
                          **saliency.instance_auc(weights_one, mask_one, labels_one, one["test"].labels)})

# %% tags=["nbval-ignore-output"]
summary = pd.DataFrame(results).groupby(["setting", "pooling"], sort=False)["bag AUC"].agg(["mean", "std"])
summary = summary.join(pd.DataFrame(found).groupby(["setting", "pooling"], sort=False)[["auc", "top1"]].mean()
                       .rename(columns={"auc": "instance AUC", "top1": "top-1"}))
summary.map(lambda v: "-" if pd.isna(v) else f"{v:.3f}")  # mean and max pooling have no attention weights

# %% [markdown]
# How much can any pooling get out of these features? A ceiling that cheats: a logistic
# regression trained on the training bags' *patch* labels (which MIL never sees), its tumour
# probability taken per tile, and the bag scored by the highest (the MIL rule) or the mean of its
# tiles. Its instance AUC is how well the frozen ImageNet features separate tumour from normal
# patches at all:

# %% tags=["nbval-ignore-output"]
ceiling = {}
for setting, parts, feats in (("several", several, features), ("one", one, features_one)):
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
    probe.fit(feats["train"], parts["train"].tile_labels)
    p_tile = probe.predict_proba(feats["test"])[:, 1]
    p_bag, _ = bags.padded(parts["test"], p_tile)  # (bags, instances), zeros on padding
    ceiling[setting] = {"instance AUC (all test patches)": roc_auc_score(parts["test"].tile_labels, p_tile),
                        "bag AUC, max of tiles": roc_auc_score(parts["test"].labels, p_bag.max(axis=1)),
                        "bag AUC, mean of tiles": roc_auc_score(parts["test"].labels,
                                                                p_bag.sum(axis=1) / parts["test"].sizes)}
pd.DataFrame(ceiling).round(3)

# %% [markdown]
# What mean pooling cannot give, attention does: with several tumour patches per positive bag its
# weights find them without a single patch label. The recorded full run's numbers for both
# settings, and the patch-supervised ceiling, read from the record:

# %%
if FULL:
    full_found = pd.DataFrame(FULL["instance"]).groupby(["setting", "pooling"], sort=False)[
        ["auc", "top1", "chance_top1"]].mean()
    full_bags = full_runs.groupby(["setting", "pooling"], sort=False)["bag AUC"].agg(["mean", "std"])
    display(full_bags.join(full_found).map(lambda v: "-" if pd.isna(v) else f"{v:.3f}"))
    display(pd.DataFrame(FULL["ceiling"]).round(3))

# %% [markdown]
# Read the two settings apart. With several tumour patches, gated attention's weights rank the
# tumour patches above the normal ones within a bag well above chance, and its top tile is a
# tumour patch far more often than a random pick. With one tumour patch among up to 32, every
# pooling's bag AUC in the recorded run stays close to 0.5, and the attention's top tile is rarely
# the tumour patch. The quick profile above, with three seeds on fewer bags, scatters more: a
# single pooling can land well above or below 0.5 there, which is why the recorded run is the one
# to read.
#
# The patch-supervised ceiling says the features are not the whole story: a logistic regression
# trained on the same frozen features *with* the patch labels, scoring a bag by its highest tile,
# reaches a bag AUC well above every MIL pooling's with one tumour patch per bag. The features do
# separate tumour from normal patches (its instance AUC); what the MIL heads lack is the patch
# labels: learning which single tile matters from 150 positive bags and their bag labels alone is
# the bottleneck here. Better encoders (pathology models such as UNI or Virchow, or the book's own
# PCam model in exercise 3) shrink it by making the tumour tile stand out further.
#
# ## 6. Images of any size: chapter 6
#
# Whole images are bags too: the real ovarian micrographs, of many sizes and all larger than a
# PCam patch, can be cut into tiles at their own resolution instead of being squashed to 224 x 224, and pooled by any
# of these heads. {doc}`06_ovarian_subtypes` does exactly that (`histolib.models.tiles`: an image
# of any size in, one prediction out), scores every head by grouped cross-validation over the
# near-duplicate families, and draws where the attention goes on a real micrograph.
#
# ## 7. Attention over a real slide region
#
# The CMU region (OpenSlide's public test data, chapter 8) is real H&E tissue with no label. Its
# tissue tiles form one bag (`bags.region_bag`: Otsu's threshold on saturation, tiles with at least
# half their pixels on tissue). The gated PCam model of section 4 (seed 0) scores the bag and draws
# its attention over the region. The model learnt lymph-node metastases from PCam bags; this region
# is other tissue, so the picture shows where the model's attention goes on tissue it was not made
# for, not where tumour is, and the bag probability printed above it is no diagnosis either: a
# model is often confidently wrong on tissue unlike its training data (chapter 8 found the same).

# %% tags=["nbval-ignore-output"]
if REAL and REGION.is_file():
    region_bags = bags.region_bag(REGION, tile=TILE, stride=TILE)
    x_region, mask_region = bags.padded(region_bags, tile_features(region_bags, encoder))
    gated = trained["gated", SEEDS[0]]
    region_weights = attention_scores(gated, {"features": x_region, "mask": mask_region})[0]
    region_probability = gated.predict({"features": x_region, "mask": mask_region}, verbose=0)[0, 1]
    display(plots.bag_attention(regions.read_region(REGION), region_bags.boxes, region_weights,
                                title=f"{len(region_bags.sources)} tissue tiles; bag probability of tumour "
                                      f"{region_probability:.2f}"))
else:
    print(f"{REGION} (or the real PCam data) is not on this machine: this section needs both. "
          f"Get the region with `histolib data cmu-region --out {REGION.parent}`.")

# %% [markdown]
# ## 8. The recorded full run
#
# The full profile (`HISTOLIB_PROFILE=full`: 300 training bags, five seeds) writes its numbers to `book/results/mil_pcam.json` with the command, package
# versions, commit and CPU. To rerun it from the project root without touching the stored notebook:
#
# ```bash
# HISTOLIB_PROFILE=full TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/jupyter nbconvert --to notebook --execute \
#     book/10_attention_mil.ipynb --output-dir /tmp/ch10-full --ExecutePreprocessor.timeout=-1
# ```

# %%
RECORD = Path("results/mil_pcam.json")
if not QUICK and REAL:
    used = sorted({Path(s).relative_to(PCAM).as_posix() for parts in (several, one) for b in parts.values()
                   for s in b.sources})  # the PCam patches in any bag
    file_list = {"files": len(used), "sha256": hashlib.sha256("\n".join(used).encode()).hexdigest()}
    RECORD.write_text(json.dumps({
        "name": "mil-pcam", "profile": PROFILE, "data": {"description": SOURCE, "file_list": file_list},
        "command": ("HISTOLIB_PROFILE=full TF_CPP_MIN_LOG_LEVEL=3 jupyter nbconvert --to notebook --execute "
                    "book/10_attention_mil.ipynb --output-dir /tmp/ch10-full --ExecutePreprocessor.timeout=-1"),
        "notes": [f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: "
                  "other jobs' load counts in the wall time"],
        "encoder": {"name": encoder.name, "weights": "ImageNet (mobilenet_2_5_224_tf_no_top.h5), frozen", "tile": TILE},
        "bags": {"train": TRAIN_BAGS, "held_out_for_validation": len(several["valid"]), "test": TEST_BAGS,
                 "bag_size": BAG_SIZE, "positive_fraction": {"several": POSITIVE_FRACTION, "one": 0.0},
                 "train_from": "pcam-jpeg/train", "test_from": "pcam-jpeg/valid"},
        "training": {"seeds": SEEDS, "epochs": EPOCHS, "patience": PATIENCE, "learning_rate": 1e-3},
        "per_seed": results, "instance": found, "ceiling": ceiling,
        "wall_s": round(time.time() - started, 1), "environment": provenance.describe_environment(),
    }, indent=1, default=float) + "\n")
    print(f"wrote {RECORD}")
recorded = json.loads(RECORD.read_text()) if RECORD.is_file() else None
print("recorded full run:", "present" if recorded else "not recorded yet")

# %% tags=["nbval-ignore-output"]
if recorded:
    runs = pd.DataFrame(recorded["per_seed"])
    table = runs.groupby(["setting", "pooling"], sort=False)["bag AUC"].agg(["mean", "std"])
    table = table.join(pd.DataFrame(recorded["instance"]).groupby(["setting", "pooling"], sort=False)[["auc", "top1"]]
                       .mean().rename(columns={"auc": "instance AUC", "top1": "top-1"}))
    machine = recorded["environment"]["machine"]
    print(f"{recorded['data']['description']}; {len(recorded['training']['seeds'])} seeds; "
          f"{recorded['wall_s'] / 60:.0f} min on {machine['cpu']} ({machine['logical_cpus']} CPUs, flags {', '.join(machine['cpu_flags'])}), "
          f"commit {recorded['environment']['git']['commit'][:10]}")
    display(table.map(lambda v: "-" if pd.isna(v) else f"{v:.3f}"))
    for setting in ("several", "one"):
        wide = runs[runs["setting"] == setting].pivot(index="seed", columns="pooling", values="bag AUC")
        print(f"{setting}: mean bag AUC of gated minus", ", ".join(
            f"{other} {wide['gated'].mean() - wide[other].mean():+.3f}" for other in ("mean", "max", "attention")))

# %% [markdown]
# ## Summary
#
# - A bag is a set of tiles with one label; MIL learns the label without the tiles' labels. PCam
#   bags, with patch labels held back, show what it learns.
# - `histolib.layers.AttentionMILPooling` is Ilse et al.'s attention pooling, plain or gated, with a
#   padding mask: weights sum to one over the real tiles and are exactly zero on padding.
# - With a frozen encoder, tile features are computed once (`histolib.data.features.tile_features`,
#   cached per tile) and MIL heads train in seconds; `build_mil_classifier` is an ordinary Keras
#   model for `train.fit` and `evaluate`.
# - Differences between poolings need seeds and a paired test. With several tumour patches per
#   bag, mean pooling was the best bag classifier over five seeds, and only attention said which
#   tiles carried the decision: its weights found the tumour patches without being told where.
# - With one tumour patch per bag, no pooling got past what the frozen encoder separates: the
#   patch-supervised ceiling says how much there is to find.
# - Whole images of any size are bags of tiles at their own resolution: {doc}`06_ovarian_subtypes`
#   classifies the real ovarian micrographs that way, scored by grouped cross-validation.
#
# ## Exercises
#
# 1. Pad every bag of section 4 to 64 instances (`max_instances=64`) and check that the gated
#    model's test probabilities do not change.
# 2. `plots.bag_tiles` and `plots.bag_attention` show $n \cdot a_k$ rather than the weight $a_k$
#    itself. Why, and what value does every tile get under mean pooling?
# 3. Build the encoder from the book's PCam model instead of ImageNet MobileNet, and make *all*
#    bags from `pcam-jpeg/valid` (patches it did not train on). How do the single-patch results
#    change?
#
# ````{dropdown} Solutions
# 1. They do not, beyond float rounding (below $10^{-6}$): the padding's weight is exactly zero in
#    attention pooling, and the masked mean and max ignore it.
#
#    ```python
#    longer = bags.dataset(several["test"], features["test"], max_instances=64)
#    _, p64 = evaluate.predict(trained["gated", 0], longer)
#    _, p32 = evaluate.predict(trained["gated", 0], bags.dataset(several["test"], features["test"]))
#    np.abs(p64 - p32).max()
#    ```
# 2. The weights of a bag sum to one, so they shrink as bags grow: 0.1 is a large weight in a bag
#    of 32 tiles and a small one in a bag of 4. Multiplied by the bag's size $n$ they compare
#    across bags: mean pooling gives every tile $a_k = 1/n$, so $n \cdot a_k = 1$, and a tile above
#    1 counts more than under mean pooling.
# 3. The trunk of `results/models/pcam-long.keras` up to its `fc` layer gives 64 features per
#    patch; its patch-level AUC on `pcam-jpeg/valid` is 0.932 (its run record; against 0.869 for the
#    ImageNet features), so one tumour patch is much easier to find:
#
#    ```python
#    long = evaluate.load_model("results/models/pcam-long.keras")
#    trunk = keras.Model(long.input, long.get_layer("fc").output, name="pcam_long_trunk")
#    pool_valid = bags.pcam_bags(PCAM, "valid", n_bags=70, bag_size=(8, 16), positive_fraction=0.0, seed=0)
#    features_valid = tile_features(pool_valid, trunk)
#    ```
#
#    then split `pool_valid` into training, validation and test bags with `splits.stratified_split`.
#    Remember that `pcam-long` was selected on `pcam-jpeg/valid`, so its features are a little
#    optimistic there.
# ````
#
# ## Resources
#
# - Ilse, Tomczak and Welling (2018), *Attention-based deep multiple instance learning*:
#   <https://arxiv.org/abs/1802.04712>
# - Lu et al. (2021), *Data-efficient and weakly supervised computational pathology on whole-slide
#   images* (CLAM): <https://doi.org/10.1038/s41551-020-00682-w>
# - Shao et al. (2021), *TransMIL*: <https://arxiv.org/abs/2106.00908>
# - kaiko.ai's eva, gated ABMIL with a padding mask:
#   <https://github.com/kaiko-ai/eva/blob/main/src/eva/vision/models/networks/abmil.py>
# - Keras example, *Classification using attention-based deep multiple instance learning*:
#   <https://keras.io/examples/vision/attention_mil_classification/>
#
# ## What's next
#
# {doc}`09_reproduction_report` gathers what the book reproduced, and what it adds beyond the
# seeds, this chapter's MIL results among them; the appendices run the full profiles on a GPU or
# TPU ({doc}`A1_colab_tpu_gpu`) and document the API ({doc}`A3_api`).
