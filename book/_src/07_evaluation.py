# %% [markdown]
# # Evaluation: metrics, intervals and comparisons
#
# [Open in Colab]({{ colab_url }})
#
# ## Overview
#
# A single accuracy on one test split is a weak claim: it hides which errors the model makes, how
# confident it is, how far the number would move on other patches, and whether a "better" variant
# was only luckier. This chapter scores models the way `histolib.evaluate` and `histolib.plots`
# do, then sets the seeds' published figures beside ours.
#
# 1. A model to evaluate
# 2. Predictions, and the threshold chosen on validation data
# 3. Metrics and the classification report
# 4. The confusion matrix
# 5. The ROC curve
# 6. Calibration: the reliability diagram
# 7. Test-time augmentation over the 8 flips and rotations
# 8. Bootstrap confidence intervals
# 9. Comparing variants over training seeds, with a paired test
# 10. The seeds' published figures beside ours
#
# ## Prerequisites
#
# | Concepts | Importance | Notes |
# | --- | --- | --- |
# | {doc}`05_training_pcam` | Necessary | `train.fit`, its output folder and threshold |
# | Precision, recall, ROC | Necessary | Recalled briefly below |
# | Hypothesis tests | Helpful | A paired t-test and Wilcoxon's signed-rank test |
#
# - **Time to learn**: 45 minutes
# - **System requirements**: any CPU; about two minutes in the quick profile

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
import functools
import json
import os
import tempfile
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from histolib import cards, data, evaluate, plots, train
from histolib.config import TrainConfig
from histolib.models import build_seed_pcam_model

# %% [markdown]
# ## Hyperparameters
#
# ```{warning}
# In the quick profile every model on this page is trained for three epochs on 1,024
# **synthetic** patches, downsized to 32 x 32 pixels, with centred inputs (chapter 5 explains
# why). The numbers show *how* to evaluate; they say nothing about PatchCamelyon. Section 10 reads
# the real-data run from `book/results/`.
# ```

# %%
PROFILE = os.environ.get("HISTOLIB_PROFILE", "quick")  # "full": real PCam, 96 px, 5 seeds
if PROFILE == "quick":
    DATA = "synthetic-pcam:1024,128,256"  # train, valid, test synthetic patches
    IMAGE_SIZE = 32       # full: 96
    EPOCHS = 3            # full: 20
    SEEDS = (0, 1, 2)     # full: 5 training seeds
    N_BOOTSTRAP = 500     # full: 2,000 resamples
    CENTRE_INPUTS = True  # full: False, the seed's model as published (chapter 5)
else:
    DATA = os.environ.get("HISTOLIB_PCAM", "tfds:patch_camelyon")  # or pcam-h5:DIR, folder:DIR
    IMAGE_SIZE, EPOCHS, SEEDS, N_BOOTSTRAP, CENTRE_INPUTS = 96, 20, (0, 1, 2, 3, 4), 2000, False
BATCH_SIZE = 16
SEED = 0
RUNS = Path(tempfile.mkdtemp(prefix="histolib-eval-")) if PROFILE == "quick" else Path("runs/evaluation")
RESULTS = Path("results")  # book/results/, read in section 10
keras.utils.set_random_seed(SEED)
print(f"profile {PROFILE!r}: {DATA} at {IMAGE_SIZE} px, {EPOCHS} epochs, training seeds {SEEDS}")

# %% [markdown]
# ## 1. A model to evaluate
#
# The PCam seed's model (`build_seed_pcam_model`, chapter 5) at 32 x 32 pixels, trained with
# `train.fit` and the seed's augmentation; in the quick profile with centred inputs. Three splits, used for three different things:
# `train` to fit the weights, `valid` to choose the epoch and the decision threshold, `test` only
# to score.

# %%
for split in ("train", "valid", "test"):
    print(split, data.info(DATA, split))
loader = dict(batch_size=BATCH_SIZE, image_size=IMAGE_SIZE)
val_ds = data.load(DATA, "valid", **loader)
test_ds = data.load(DATA, "test", **loader)
CLASS_NAMES = test_ds.class_names

# %%
build_model = functools.partial(build_seed_pcam_model, (IMAGE_SIZE, IMAGE_SIZE, 3), centre_inputs=CENTRE_INPUTS)

# %% tags=["nbval-ignore-output"]
run = train.fit(
    build_model,
    data.load(DATA, "train", shuffle=True, augment="pcam-seed", seed=SEED, **loader), val_ds,
    TrainConfig(epochs=EPOCHS, seed=SEED, augment="pcam-seed", verbose=0), out_dir=RUNS / f"pcam-seed-seed{SEED}",
)
print(f"{run.model.name}: {run.model.count_params():,} parameters, best epoch {run.best_epoch} of {run.epochs_done}")

# %% [markdown]
# ## 2. Predictions, and the threshold chosen on validation data
#
# `evaluate.predict` runs the model over a dataset and returns the labels and the class
# probabilities `(n, k)`, whatever the model's output layer (a sigmoid's `(n, 1)` becomes
# `[1 - p, p]`). For two classes a patch is called tumour when its tumour probability is above
# the threshold `fit` chose on the validation split (a probability equal to it is called normal);
# `read_threshold` finds it beside the model.

# %% tags=["nbval-ignore-output"]
threshold = cards.read_threshold(run.out_dir / "best.keras")
y_test, p_test = evaluate.predict(run.model, test_ds)
print("threshold (from valid):", round(threshold, 4), " test probabilities:", p_test.shape)

# %% [markdown]
# ## 3. Metrics and the classification report
#
# For the positive class (tumour, label 1): **precision** is the share of patches called tumour
# that are tumour, **recall** (sensitivity) the share of tumour patches that are found, **F1**
# their harmonic mean; **balanced accuracy** averages the recall of both classes; **ROC AUC** is
# the probability that a random tumour patch scores above a random normal one, and needs no
# threshold. `classification_metrics` computes all of them with scikit-learn, plus the Brier
# score (mean squared error of the probabilities), the confusion matrix and scikit-learn's
# classification report.

# %% tags=["nbval-ignore-output"]
metrics = evaluate.classification_metrics(y_test, p_test, threshold=threshold, class_names=CLASS_NAMES)
pd.Series({k: metrics[k] for k in (*evaluate.SCALAR_METRICS, "brier")}, name="test").round(3).to_frame().T

# %% tags=["nbval-ignore-output"]
pd.DataFrame(metrics["classification_report"]).T.round(3)

# %% [markdown]
# With more than two classes (the ovarian subtypes, chapter 6) the call is the argmax, precision,
# recall and F1 are macro averages over classes (each class counts the same, however small), and
# `auc_per_class` adds one-against-the-rest AUCs.

# %% [markdown]
# ## 4. The confusion matrix
#
# Rows are the true classes, columns the predicted ones. The PCam seed's published figures
# (precision 93.8 %, recall 70.9 %) describe a matrix with few false positives and many missed
# tumours: the errors a 0.5 threshold on a cautious model makes. The matrix below is at the
# threshold chosen on validation data (its title rounds it to two decimals).

# %% tags=["nbval-ignore-output"]
figure = plots.confusion_matrix(metrics["confusion_matrix"], class_names=["normal (0)", "tumour (1)"],
                                title=f"test, threshold {threshold:.2f} (synthetic data)")
figure

# %% [markdown]
# ## 5. The ROC curve
#
# Every threshold gives one point (false-positive rate, true-positive rate); the curve joins
# them, and its area is the AUC. The threshold from validation is one point on it.

# %% tags=["nbval-ignore-output"]
plots.roc(y_test, p_test, title="ROC on the test split (synthetic data)")

# %% [markdown]
# ## 6. Calibration: the reliability diagram
#
# A model is calibrated when, among the patches it gives a tumour probability of 0.7, 70 % are
# tumour. The reliability diagram bins the test patches by predicted probability and plots the
# share of tumour in each bin against the bin's mean prediction; the diagonal is perfect
# calibration, and the histogram below shows how many patches each bin holds. Calibration and
# discrimination are different things: a model that gave every patch 0.5 on a balanced split
# would sit exactly on the diagonal and be useless, which is why calibration is reported beside
# the AUC, never instead of it. A model trained for a few epochs is often under-confident (its
# points above the diagonal at low probabilities and below it at high ones, its histogram
# bunched towards the middle); on 256 test patches the bins at the ends hold few patches, so
# read their points as rough. The Brier score above sums up calibration and sharpness in one
# number (0.25 for a constant 0.5, 0 for a perfect model).

# %% tags=["nbval-ignore-output"]
plots.reliability_diagram(y_test, p_test, n_bins=10, title="reliability on the test split (synthetic data)")

# %% [markdown]
# ## 7. Test-time augmentation
#
# Tissue has no up or down, so a patch's label is the same in all 8 of its flips and rotations
# (the dihedral group of the square). Test-time augmentation (TTA) averages the model's
# probabilities over the 8 views: it costs 8 forward passes and often helps a little.
# `evaluate.dihedral_views` makes them:

# %%
images, labels = next(iter(data.load(DATA, "test", batch_size=4, seed=SEED)))
views = evaluate.dihedral_views(images)
print(len(views), "views of", tuple(images.shape))
fig, axes = plt.subplots(1, 8, figsize=(13, 1.9))
for k, (ax, view) in enumerate(zip(axes, views)):
    ax.imshow(view[0].numpy())
    ax.set_title(f"rot {90 * (k // 2)}" + (" + flip" if k % 2 else ""), fontsize=9)
    ax.axis("off")
fig.suptitle("the 8 dihedral views of one synthetic patch", y=1.04)
plt.show()

# %% tags=["nbval-ignore-output"]
y_tta, p_tta = evaluate.predict(run.model, test_ds, tta=True)
tta_metrics = evaluate.classification_metrics(y_tta, p_tta, threshold=threshold)
pd.DataFrame({"plain": {k: metrics[k] for k in evaluate.SCALAR_METRICS},
              "8-view TTA": {k: tta_metrics[k] for k in evaluate.SCALAR_METRICS}}).T.round(3)

# %% [markdown]
# Whether TTA "helps" is itself a claim about a difference between two numbers from the same
# patches; the next two sections say how to back such claims.

# %% [markdown]
# ## 8. Bootstrap confidence intervals
#
# A test split is a sample. Resampling its patches with replacement, many times, and recomputing
# a metric each time shows how much the metric would move on another sample of the same size:
# the 2.5th and 97.5th percentiles of the resampled values give a 95 % interval.
# `bootstrap_intervals` does it with `scipy.stats.bootstrap`, seeded, keeping each patch's label
# and score together.

# %% tags=["nbval-ignore-output"]
ci = evaluate.bootstrap_intervals(y_test, p_test, threshold=threshold, n_resamples=N_BOOTSTRAP, seed=SEED)
pd.DataFrame({"value": {k: metrics[k] for k in ci}, "95% low": {k: v[0] for k, v in ci.items()},
              "95% high": {k: v[1] for k, v in ci.items()}}).round(3)

# %% [markdown]
# On 256 test patches an accuracy is known to within several points either way. PCam's test
# split has 32,768 patches, so intervals there are about a point wide, but patches from one slide
# are not independent, and the honest interval (resampling slides) is wider.

# %% [markdown]
# ## 9. Comparing variants over training seeds
#
# Two runs of one model differ with the training seed (initial weights, data order,
# augmentation). So a single run of variant B beating a single run of variant A proves little.
# Train both on the same seeds, score both on the same test split, and test the per-seed
# differences: that is a *paired* comparison. Here the two variants are the seed model trained
# without augmentation and with the seed's augmentation set (flips, brightness, contrast). The
# seed-0 run with augmentation is the one of section 1: `fit` finds it finished in its folder
# and returns it without training again.

# %% tags=["nbval-ignore-output"]
auc = {}
for augment in (None, "pcam-seed"):
    for seed in SEEDS:
        result = train.fit(
            build_model,
            data.load(DATA, "train", shuffle=True, augment=augment, seed=seed, **loader), val_ds,
            TrainConfig(epochs=EPOCHS, seed=seed, augment=augment, verbose=0), out_dir=RUNS / f"{augment or 'plain'}-seed{seed}",
        )
        y, p = evaluate.predict(result.model, test_ds)
        auc.setdefault(augment or "no augmentation", []).append(evaluate.classification_metrics(y, p)["auc"])
per_seed = pd.DataFrame(auc, index=[f"seed {s}" for s in SEEDS])
per_seed["difference"] = per_seed["pcam-seed"] - per_seed["no augmentation"]
per_seed.round(3)

# %% [markdown]
# `paired_comparison` runs the paired t-test (`scipy.stats.ttest_rel`) and Wilcoxon's
# signed-rank test on the per-seed scores:

# %% tags=["nbval-ignore-output"]
comparison = evaluate.paired_comparison(per_seed["no augmentation"], per_seed["pcam-seed"])
print(json.dumps(comparison, indent=1))

# %% [markdown]
# How to read it: with three seeds the t-test has two degrees of freedom, so only a large and
# consistent difference gets a small p-value, and Wilcoxon's two-sided p cannot go below 0.25
# (0.0625 with five seeds). A p-value above 0.05 here does not show the variants are equal: it
# shows three seeds cannot tell them apart. Before the book says a variant "helps", it shows the
# per-seed scores, the mean difference and the paired test over at least five seeds.

# %% [markdown]
# ## 10. The seeds' published figures beside ours
#
# The published figures, typed once from the seeds' pages (`shared/seeds/published-results.md` in
# this project) into `book/results/published.json`, which chapters 0 and 9 read too. The PCam seed
# published no code; its figures are from its README. The ovarian seed's test split held copies of
# training images (chapter 2), so its figures are optimistic.

# %%
published = json.loads((RESULTS / "published.json").read_text())
pcam, ovarian = published["pcam"], published["ovarian"]["reports"]
columns = ["accuracy", "precision", "recall", "f1", "auc", "balanced_accuracy"]
pd.DataFrame(
    [{"source": "PCam seed (README), PCam test split", "model": "seed CNN + self-attention", **pcam["test"]},
     {"source": "PCam seed (README), its own validation split", "model": "seed CNN + self-attention",
      "accuracy": pcam["validation_peak"]["accuracy"]}]
    + [{"source": "ovarian seed (notebook), 594 test images", "model": f"{backbone} + thresholded",
        "accuracy": report["accuracy"], "f1": report["macro_f1"]} for backbone, report in ovarian.items()]
    + published["anchors"],
    columns=["source", "model", *columns],
).set_index(["source", "model"]).astype(object).fillna("")

# %% [markdown]
# The ovarian seed's F1 values are macro averages over its five classes. The PCam seed published
# no ROC AUC (its README gives accuracy, F1, precision and recall), so the table has none for it.
#
# Ours: the TRAIN run of the seed model on 20,000 real PCam patches from this project's JPEG
# folder, recorded in `book/results/pcam_seed_run.json` with its command, versions and machine.
# Its scores are on the `valid` split, which chose the epoch and the threshold, so they are
# optimistic; the fair comparison with the published test figures needs PCam's test patches.

# %% tags=["nbval-ignore-output"]
record_path = RESULTS / "pcam_seed_run.json"
if record_path.is_file():
    record = json.loads(record_path.read_text())
    ours = pd.DataFrame({name: {k: record[name].get(k) for k in ("accuracy", "precision", "recall", "f1", "auc", "n")}
                         for name in ("valid", "valid_tta") if record.get(name)}).T
    print(f"{record['name']}: {record['epochs_done']} epochs, best {record['best_epoch']}, "
          f"{record['wall_s'] / 60:.0f} min; {record['command']}")
    print(record["selection_note"])
    display(ours.round(3))
else:
    print(f"{record_path}: not recorded yet. The real-data run has not been committed; "
          "chapter 9 and this section will read it when it is.")

# %% [markdown]
# ## Summary
#
# - `evaluate.predict` and `classification_metrics` give accuracy, precision, recall, F1,
#   balanced accuracy, ROC AUC, the Brier score, the confusion matrix and the classification
#   report, at the threshold chosen on validation data (`read_threshold`), never on test.
# - `plots.confusion_matrix`, `plots.roc` and `plots.reliability_diagram` draw them; calibration
#   is a property of its own, separate from accuracy.
# - `predict(..., tta=True)` averages over the 8 dihedral views.
# - `bootstrap_intervals` gives 95 % intervals; small test sets give wide ones.
# - A variant "helps" only when it wins over several training seeds, paired, with the per-seed
#   scores shown: `paired_comparison`.
# - The seeds' published figures sit beside ours with their sources, and ours say on which split
#   they were measured.
#
# ## Exercises
#
# 1. Score the section 1 model on the test split at threshold 0.5 instead of the validation
#    threshold. Which metrics change, and which cannot?
# 2. How wide is the bootstrap interval of the accuracy with `N_BOOTSTRAP = 2000`? And on half of
#    the test split?
# 3. Compare plain prediction with TTA over the three seeds of section 9, with
#    `paired_comparison`. Is that comparison paired, and why?
#
# ````{dropdown} Solutions
# 1. Accuracy, precision, recall, F1 and balanced accuracy change; AUC and the Brier score use the
#    probabilities only, so they cannot.
#
#    ```python
#    evaluate.classification_metrics(y_test, p_test, threshold=0.5)
#    ```
# 2. About the same width: more resamples make the interval's ends more precise, not the interval
#    narrower. Half the patches widen it by about $\sqrt{2}$.
# 3. Yes: each seed's model is scored both ways on the same patches, so the per-seed differences
#    remove the seed-to-seed variation.
#
#    ```python
#    evaluate.predict(result.model, test_ds, tta=True)  # per seed, beside the plain scores
#    ```
# ````
#
# ## Resources
#
# - scikit-learn, model evaluation: <https://scikit-learn.org/stable/modules/model_evaluation.html>
# - scikit-learn, probability calibration: <https://scikit-learn.org/stable/modules/calibration.html>
# - SciPy, `scipy.stats.bootstrap`: <https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.bootstrap.html>
# - Bouthillier et al. (2021), *Accounting for variance in machine learning benchmarks*:
#   <https://arxiv.org/abs/2103.03098>
# - Veeling et al. (2018), *Rotation equivariant CNNs for digital pathology*:
#   <https://arxiv.org/abs/1806.03962>
#
# ## What's next
#
# {doc}`08_saliency` asks *where* the models look: Grad-CAM, attention maps, and how well they
# find the lesion.
