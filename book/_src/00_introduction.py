# %% [markdown]
# # Introduction: two seeds, reproduced and corrected
#
# [Open in Colab]({{ colab_url }})
#
# ## Overview
#
# This book starts from two small public projects (the *seeds*) that put attention layers on
# histopathology images, reruns them with a tested package, and fixes what they got wrong.
#
# 1. The two seeds: what each one did and what it reported
# 2. What this book reproduces, and what it corrects
# 3. The leak, in one equation
# 4. How to read and run the book: profiles, data, devices
#
# ## Prerequisites
#
# | Concepts | Importance | Notes |
# | --- | --- | --- |
# | Python and NumPy | Necessary | Reading short code cells |
# | Image classification with a CNN | Helpful | Training, validation and test splits |
# | Keras 3 | Helpful | The package builds Keras models |
#
# - **Time to learn**: 15 minutes
# - **System requirements**: any CPU; no data download, no GPU

# %% [markdown]
# ## Setup
#
# On Colab this cell installs `histolib` (TensorFlow is already there); everywhere else it does
# nothing, because the package is installed in the environment that runs the book.

# %%
import sys

if "google.colab" in sys.modules:
    !pip install -q "histolib @ git+{{ repository_url }}"

# %% [markdown]
# ## Imports

# %%
import json
import os
from pathlib import Path

import pandas as pd

import histolib

# %% [markdown]
# ## Hyperparameters
#
# Every chapter has one cell like this. `PROFILE` chooses between the *quick* profile (built-in
# synthetic data, a few epochs, runs on a laptop CPU in minutes) and the *full* profile (real data,
# the published number of epochs, a TPU or GPU when there is one). Switch with
# `HISTOLIB_PROFILE=full` in the environment, or by editing the line below. This chapter computes
# nothing heavy, so here the profile changes nothing.

# %%
PROFILE = os.environ.get("HISTOLIB_PROFILE", "quick")  # "full": real data, published epochs
TEST_FRACTION = 0.1  # the ovarian seed's 80/10/10 split
TRAIN_FRACTION = 0.8
print(f"histolib {histolib.__version__}, profile {PROFILE!r}")

# %% [markdown]
# ## 1. The two seeds
#
# **The ovarian-subtype seed** is one Colab notebook. It classifies 3,082 PNG images of ovarian
# carcinoma into five subtypes (high-grade serous HGSC, low-grade serous LGSC, endometrioid EC, clear
# cell CC, mucinous MC) with a frozen ImageNet backbone (InceptionV3, Xception or MobileNet) and an
# attention block it calls *differential attention*. It printed test accuracies of 0.80, 0.80 and
# 0.64 for the three backbones.
#
# **The PatchCamelyon seed** is a README with no code. It trained a 494,337-parameter CNN with a QKV
# self-attention block on the PatchCamelyon (PCam) patches from TensorFlow Datasets, on a TPU, and
# reported a test accuracy of 83.1 % with a precision of 93.8 % and a recall of 70.9 %, after a
# validation peak of 92.6 %.
#
# The table lists what each seed published. The figures are typed once, from the seeds' pages
# (copied in `shared/seeds/published-results.md`), into `book/results/published.json`, which this
# chapter, {doc}`07_evaluation` and {doc}`09_reproduction_report` read.

# %%
published = json.loads(Path("results/published.json").read_text())
names = {"accuracy": "accuracy", "macro_f1": "macro F1", "f1": "F1", "precision": "precision", "recall": "recall"}
pd.DataFrame(
    [("ovarian", f"{backbone} + attention", names[key], report[key])
     for backbone, report in published["ovarian"]["reports"].items() for key in ("accuracy", "macro_f1")]
    + [("PCam", "CNN + self-attention", names[key], value) for key, value in published["pcam"]["test"].items()],
    columns=["seed", "model", "metric", "published"],
)

# %% [markdown]
# ## 2. What the book reproduces and what it corrects
#
# Each flaw below gets a chapter that shows it with numbers, next to the corrected version.
#
# | Seed | What it did | Why it matters | Corrected in |
# | --- | --- | --- | --- |
# | ovarian | RandomOverSampler over all images, *then* an 80/10/10 split | copies of one image land in train and test, so test scores are inflated | {doc}`02_preprocessing` |
# | ovarian | "differential attention" that is a softmax thresholded at its mean | it is not the attention of Ye et al. (2024); the real one is built and compared | {doc}`04_attention` |
# | ovarian | attention scores without the $1/\sqrt{d}$ scaling at 1,024 and 2,048 channels | the softmax saturates into a near one-hot map | {doc}`04_attention` |
# | ovarian | inputs scaled by 1/255 for every backbone | each ImageNet backbone expects its own input scaling | {doc}`03_backbones` |
# | ovarian | a README that promises augmentation the code lacks | the augmentation is implemented and switched on | {doc}`02_preprocessing` |
# | PCam | the TFDS train split cut 85/15 for validation; the official validation split unused | validation and test disagree (92.6 % against 83.1 %) | {doc}`05_training_pcam` |
# | PCam | Grad-CAM described but not shown, and not scored | maps are drawn and scored against lesion masks | {doc}`08_saliency` |
#
# {doc}`09_reproduction_report` puts every published claim beside what this book measured, and says
# which claims cannot be checked here (the ovarian images, ImageNet weights and the full PCam are not
# on this machine) together with the command that checks them where they are available.

# %% [markdown]
# ## 3. The leak, in one equation
#
# RandomOverSampler grows every class to the size of the largest by drawing extra copies of its
# images at random. A class with $n$ images grown to $m$ rows holds, on average, $k = m / n$ copies of
# each image. Split the rows at random afterwards, with a fraction $f$ going to training, and a test
# row whose image has $k$ copies finds at least one sibling in the training set with probability
#
# $$
# P(\text{leak}) = 1 - (1 - f)^{k - 1}.
# $$
#
# The largest class is never copied ($k = 1$, no leak), while the smallest is copied about four
# times. Plugging the ovarian seed's class sizes into the formula (with the mean $k$, which is enough
# for a first look; {doc}`02_preprocessing` counts the actual copies):

# %%
class_sizes = {"CC": 551, "EC": 733, "HGSC": 1188, "LGSC": 287, "MC": 323}
largest = max(class_sizes.values())
leak = pd.DataFrame(
    {
        "images": class_sizes,
        "rows after oversampling": {c: largest for c in class_sizes},
        "mean copies k": {c: largest / n for c, n in class_sizes.items()},
    }
)
leak["P(test row has a copy in train)"] = 1 - (1 - TRAIN_FRACTION) ** (leak["mean copies k"] - 1)
leak.round(3)

# %% [markdown]
# The smallest classes, LGSC and MC, are the ones the seed's notebook recalled best (0.94 and 0.92
# for InceptionV3) and HGSC, the class that is never copied, the worst (0.54). That is what a leak
# predicts; chapter 2 measures it on synthetic data with the same small model trained both ways.

# %% [markdown]
# ## 4. How to read and run the book
#
# - **Order.** Chapters build on each other along the path data, preprocessing, backbones, attention,
#   training, evaluation, saliency, report. Each starts with its prerequisites.
# - **Code.** Cells only call `histolib`; nothing a chapter relies on is defined in the notebook.
#   The appendix {doc}`A3_api` lists the package's API.
# - **Numbers.** In the quick profile the data is synthetic (built into `histolib.data`) and
#   backbones are randomly initialised, because this book never downloads weights or data. Pages
#   say so next to every such number; recorded runs on real data live in `book/results/` and are
#   read, not recomputed.
# - **Devices.** The same notebooks run on a laptop CPU, a GPU or a Colab TPU; appendix
#   {doc}`A1_colab_tpu_gpu` walks through the TPU setup.
#
# The profile and the data this machine can see:

# %% tags=["nbval-ignore-output"]
shared = os.path.join("..", "..", "shared", "data", "pcam-jpeg")
print("profile:", PROFILE)
print("real PCam JPEG folder:", "present" if os.path.isdir(shared) else "absent (synthetic data only)")

# %% [markdown]
# ## Summary
#
# - Two seeds: an ovarian-subtype notebook with a thresholded attention block, and a PCam CNN with
#   self-attention reported only in a README.
# - The ovarian seed oversampled before splitting, which copies test images into training; the
#   smaller the class, the bigger the leak.
# - Every chapter runs in minutes on synthetic data and switches to real data with one setting.
#
# ## Exercises
#
# 1. Using the formula above, what fraction of LGSC test rows would leak if the seed had used a
#    90/5/5 split instead of 80/10/10?
# 2. Why does the largest class never leak, however the rows are split?
#
# ```{dropdown} Solutions
# 1. With $f = 0.9$ and $k \approx 4.14$: $1 - 0.1^{3.14} \approx 0.999$; nearly every LGSC test
#    row has a copy in training.
# 2. RandomOverSampler only adds rows to smaller classes, so every image of the largest class
#    appears once ($k = 1$) and $(1 - f)^0 = 1$.
# ```
#
# ## Resources
#
# - Veeling et al. (2018), *Rotation equivariant CNNs for digital pathology* (the PatchCamelyon
#   dataset): <https://arxiv.org/abs/1806.03962>
# - Ye et al. (2024), *Differential Transformer*: <https://arxiv.org/abs/2410.05258>
# - imbalanced-learn, *Common pitfalls*: <https://imbalanced-learn.org/stable/common_pitfalls.html>
#
# ## What's next
#
# {doc}`01_data` opens the data: PatchCamelyon's formats and its centre-32x32 labelling rule, the
# subtype folders, and the built-in synthetic sets that stand in for both.
