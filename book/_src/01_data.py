# %% [markdown]
# # Data: PatchCamelyon, subtype folders and built-in sets
#
# [Open in Colab]({{ colab_url }})
#
# ## Overview
#
# Every chapter gets its images through one function, `histolib.data.load(spec, split)`. This
# chapter opens the data behind it.
#
# 1. One front door: specs, splits and what a batch looks like
# 2. PatchCamelyon and its centre-32x32 labelling rule, on the built-in synthetic patches
# 3. PCam's file formats, written and read back
# 4. The real PCam JPEG patches (when this machine has them)
# 5. The ovarian subtypes: folders, class imbalance and patients
#
# ## Prerequisites
#
# | Concepts | Importance | Notes |
# | --- | --- | --- |
# | {doc}`00_introduction` | Necessary | The two seeds and their data |
# | NumPy arrays and image shapes | Necessary | `(batch, h, w, 3)` |
# | `tf.data` | Helpful | `load` returns a `tf.data.Dataset` |
#
# - **Time to learn**: 30 minutes
# - **System requirements**: any CPU; the real PCam section needs the JPEG folder (optional)

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
import os
import tempfile
from pathlib import Path

import h5py
%config InlineBackend.figure_formats = ["jpeg"]  # tissue pictures: JPEG keeps the stored notebook small
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from histolib import data
from histolib.data import synthetic

# %% [markdown]
# ## Hyperparameters
#
# The quick profile uses only the built-in synthetic sets. The full profile points `PCAM_SPEC` at
# real PatchCamelyon data: the original `.h5` files (`pcam-h5:DIR`), TensorFlow Datasets
# (`tfds:patch_camelyon`) or an image folder. `PCAM_JPEG` is where this project keeps 23,000 real
# PCam patches as JPEG files; the section that uses it is skipped where the folder is absent.

# %%
PROFILE = os.environ.get("HISTOLIB_PROFILE", "quick")  # "full": real PCam data
SEED = 0
PCAM_SPEC = "synthetic-pcam" if PROFILE == "quick" else os.environ.get("HISTOLIB_PCAM", "tfds:patch_camelyon")
PCAM_JPEG = Path(os.environ.get("HISTOLIB_PCAM_JPEG", "../../shared/data/pcam-jpeg"))
N_GALLERY = 8  # patches per row in the galleries
print(f"profile {PROFILE!r}, PCam source {PCAM_SPEC!r}")

# %% [markdown]
# ## 1. One front door
#
# A *spec* names a source, and `load(spec, split)` returns batches of `(images, labels)`: images
# float32 `(batch, h, w, 3)` in [0, 1], labels int32 `(batch,)`. `info(spec, split)` gives the class
# names and per-class counts without decoding a single image. The specs:

# %%
pd.DataFrame({"spec": data.SPECS, "what": [entry.summary for entry in data.SOURCES.values()]})

# %% [markdown]
# The synthetic PCam set has fixed, disjoint splits of 4,096 / 512 / 512 patches, exactly balanced:

# %%
for split in data.SPLITS:
    print(split, data.info("synthetic-pcam", split))

# %%
batches = data.load("synthetic-pcam", "train", batch_size=32, seed=SEED)
images, labels = next(iter(batches))
print("images", images.shape, images.dtype, " labels", labels.shape, labels.dtype)
print("class names", batches.class_names)
print(f"pixel range [{float(np.min(images)):.3f}, {float(np.max(images)):.3f}]")

# %% [markdown]
# ## 2. PatchCamelyon and the centre-32x32 rule
#
# PatchCamelyon (Veeling et al. 2018) cuts 327,680 patches of 96 x 96 pixels from the lymph-node
# slides of the Camelyon16 challenge: 262,144 for training, 32,768 each for validation and test,
# each split balanced. A patch is labelled **1 when the centre 32 x 32 region holds at least one
# pixel of tumour tissue**; tumour elsewhere in the patch does not count. The outer ring is there
# to give context (and to allow fully-convolutional use), not to decide the label.
#
# The built-in `synthetic-pcam` set follows the same rule and, unlike PCam, returns the lesion masks,
# so we can check the rule and later score saliency maps against them. Its patches are **synthetic**:
# H&E-coloured lymphocyte fields with a cluster of large, pale tumour-like nuclei. Half of the
# label-0 patches have a cluster that lies entirely *outside* the centre, so a model has to learn
# *where*, not only *whether*.

# %%
images, labels, masks = synthetic.pcam_patches(512, seed=SEED, split="train")
centre = masks[:, 32:64, 32:64].any(axis=(1, 2))
print("patches:", len(labels), " label 1:", int(labels.sum()))
print("label == (lesion touches the centre 32x32):", bool(np.all(labels == centre)))
print("label-0 patches with a lesion outside the centre:", int((masks.any(axis=(1, 2)) & (labels == 0)).sum()))

# %% [markdown]
# `pcam_patches` gives the very patches `load("synthetic-pcam", "train", seed=SEED)` streams, in the
# same order:

# %%
first, first_labels = next(iter(data.load("synthetic-pcam", "train", batch_size=8, seed=SEED)))
assert np.array_equal(np.round(first.numpy() * 255).astype(np.uint8), images[:8])
assert np.array_equal(first_labels.numpy(), labels[:8])
print("same pixels and labels: True")

# %% [markdown]
# A gallery, with the centre square in white and the lesion outlined in yellow. The top row holds
# label-1 patches, the bottom row label-0 patches, first those with a lesion outside the centre.

# %%
ones = np.flatnonzero(labels == 1)[:N_GALLERY]
outside = np.flatnonzero((labels == 0) & masks.any(axis=(1, 2)))
clean = np.flatnonzero((labels == 0) & ~masks.any(axis=(1, 2)))
zeros = np.concatenate([outside[: N_GALLERY // 2], clean[: N_GALLERY - N_GALLERY // 2]])
fig, axes = plt.subplots(2, N_GALLERY, figsize=(2 * N_GALLERY, 4.3))
for row, picks in enumerate([ones, zeros]):
    for ax, i in zip(axes[row], picks):
        ax.imshow(images[i])
        ax.add_patch(plt.Rectangle((31.5, 31.5), 32, 32, fill=False, ec="white", lw=1.2))
        if masks[i].any():
            ax.contour(masks[i], levels=[0.5], colors="yellow", linewidths=0.8)
        ax.set_title(f"#{i}  label {labels[i]}", fontsize=9)
        ax.axis("off")
fig.suptitle("synthetic-pcam: label 1 iff the lesion touches the centre 32x32 (synthetic images)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. PCam's file formats
#
# PCam is published as gzipped HDF5 files, one pair per split,
# `camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5.gz`: `x` holds the patches as uint8
# `(n, 96, 96, 3)` and `y` the labels as `(n, 1, 1, 1)`; `_meta.csv` files give each patch's slide.
# The same data circulates as TensorFlow Datasets' `patch_camelyon` (which downloads those files),
# as Kaggle's `histopathologic-cancer-detection` (one `.tif` per patch and a CSV of labels), and as
# image folders with one folder per class. `histolib.data.synthetic` writes the synthetic patches in
# each layout, which is how the loaders are tested on real files. Sixteen patches, three layouts:

# %%
workdir = Path(tempfile.mkdtemp(prefix="histolib-formats-"))
small_images, small_labels = images[:16], labels[:16]
synthetic.write_pcam_h5(workdir / "h5", "test", small_images, small_labels)
synthetic.write_kaggle(workdir / "kaggle", small_images, small_labels)
synthetic.write_folder(workdir / "folder", small_images, small_labels, ["0", "1"], split="test")
for layout in ("h5", "kaggle", "folder"):
    files = sorted(p.relative_to(workdir / layout) for p in (workdir / layout).rglob("*") if p.is_file())
    print(f"{layout}: {len(files)} files, e.g. {', '.join(str(f) for f in files[:2])}")

# %%
with h5py.File(workdir / "h5" / "camelyonpatch_level_2_split_test_x.h5") as f:
    print("x:", f["x"].shape, f["x"].dtype)
with h5py.File(workdir / "h5" / "camelyonpatch_level_2_split_test_y.h5") as f:
    print("y:", f["y"].shape, f["y"].dtype, " labels", f["y"][:8].ravel())
print(pd.read_csv(workdir / "kaggle" / "train_labels.csv").head(3))

# %% [markdown]
# Each layout reads back through the same front door. The `.h5` files stream in their stored
# order with every pixel intact; the Kaggle layout has no split folders, so `load` cuts its seeded
# stratified 80/10/10 split; the folder layout gives its classes in sorted order, PNG pixels intact:

# %%
h5_spec = f"pcam-h5:{workdir / 'h5'}"
print("pcam-h5", data.info(h5_spec, "test"))
read = np.concatenate([x.numpy() for x, _ in data.load(h5_spec, "test", batch_size=8)])
assert np.array_equal(np.round(read * 255).astype(np.uint8), small_images)
kaggle_spec = f"kaggle:{workdir / 'kaggle'}"
print("kaggle ", {split: data.info(kaggle_spec, split)["counts"] for split in data.SPLITS})

# %%
spec = f"folder:{workdir / 'folder'}"
print("folder ", data.info(spec, "test"))
read = np.concatenate([x.numpy() for x, _ in data.load(spec, "test", batch_size=8)])
print("read back", read.shape, " class folders sorted, so images come class by class")
by_class = np.concatenate([small_images[small_labels == c] for c in (0, 1)])
assert np.array_equal(np.round(read * 255).astype(np.uint8), by_class)

# %% [markdown]
# ## 4. The real PCam JPEG patches
#
# This project keeps 23,000 real PCam patches, re-encoded as JPEG, in an image folder:
# `pcam-jpeg/{train,valid}/{0,1}/*.jpg` (CC0, from PatchCamelyon). They are not part of the
# package: the cells below use them when `PCAM_JPEG` exists and say so otherwise.

# %% tags=["nbval-ignore-output"]
if PCAM_JPEG.is_dir():
    real_spec = f"folder:{PCAM_JPEG}"
    for split in ("train", "valid"):
        print(split, data.info(real_spec, split))
else:
    real_spec = None
    print(f"{PCAM_JPEG} is absent: the real-patch gallery is skipped (set HISTOLIB_PCAM_JPEG).")

# %% tags=["nbval-ignore-output"]
if real_spec:
    real = data.load(real_spec, "valid", batch_size=256, shuffle=True, seed=SEED)
    x, y = next(iter(real))
    x, y = x.numpy(), y.numpy()
    fig, axes = plt.subplots(2, N_GALLERY, figsize=(2 * N_GALLERY, 4.3))
    for row, label in enumerate([1, 0]):
        for ax, i in zip(axes[row], np.flatnonzero(y == label)[:N_GALLERY]):
            ax.imshow(x[i])
            ax.add_patch(plt.Rectangle((31.5, 31.5), 32, 32, fill=False, ec="white", lw=1.2))
            ax.set_title(f"label {label}", fontsize=9)
            ax.axis("off")
    fig.suptitle("real PCam patches (pcam-jpeg/valid): tumour in the centre square (top) or not (bottom)")
    plt.tight_layout()
    plt.show()

# %% [markdown]
# Real metastases look less regular than the synthetic clusters: larger, crowded nuclei with
# variable staining, often filling the whole patch. The synthetic set is a stand-in that makes the
# rule and the lesion masks explicit; it is easier than PCam, and numbers measured on it are not
# PCam numbers.

# %% [markdown]
# ## 5. The ovarian subtypes
#
# The ovarian seed used 3,082 PNG images in five class folders (high-grade serous HGSC, endometrioid
# EC, clear cell CC, mucinous MC, low-grade serous LGSC), which `folder:DIR` reads. They are not
# available here, so `synthetic-subtype` stands in: five **synthetic** tissue textures in the
# seed's exact class counts, with labels in the seed's alphabetical order (CC = 0 ... MC = 4) and a
# patient key per image. The set has no splits of its own, so `load` cuts a seeded, stratified
# 80/10/10 split, like the seed.

# %%
counts = pd.DataFrame({split: data.info("synthetic-subtype", split)["counts"] for split in data.SPLITS},
                      index=synthetic.SUBTYPE_CLASSES)
counts["all"] = counts.sum(axis=1)
counts.loc["total"] = counts.sum()
counts

# %% [markdown]
# HGSC outnumbers LGSC four to one; chapter 2 deals with that imbalance. Each synthetic patient
# holds up to 30 images of one subtype and has its own stain and scale, like real patients:

# %%
sub_labels, patients = synthetic.subtype_table(seed=SEED)
per_patient = pd.Series(patients).value_counts()
print("images:", len(sub_labels), " patients:", len(per_patient),
      f" images per patient: {per_patient.min()} to {per_patient.max()}")
print("subtypes per patient:", set(pd.Series(sub_labels).groupby(patients).nunique()))

# %%
picks = np.concatenate([np.flatnonzero(sub_labels == c)[:N_GALLERY // 2] for c in range(5)])
sub_images, _, sub_patients = synthetic.subtype_images(picks, seed=SEED)
fig, axes = plt.subplots(5, N_GALLERY // 2, figsize=(N_GALLERY, 10.5))
for ax, image, label, patient in zip(axes.ravel(), sub_images, sub_labels[picks], sub_patients):
    ax.imshow(image)
    ax.set_title(f"{synthetic.SUBTYPE_CLASSES[label]}  {patient}", fontsize=9)
    ax.axis("off")
fig.suptitle("synthetic-subtype: one row per class (synthetic textures)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
#
# - `histolib.data.load(spec, split)` is the one way in: float32 images in [0, 1], int32 labels,
#   for built-in, `.h5`, TFDS, folder and Kaggle sources alike; `info` counts without decoding.
# - A PCam patch is positive when tumour touches its centre 32 x 32 region; the synthetic set obeys
#   the same rule and ships its lesion masks.
# - The ovarian data set is imbalanced (HGSC 1,188 to LGSC 287) and grouped by patient; the
#   synthetic stand-in keeps both properties.
#
# ## Exercises
#
# 1. How many synthetic label-0 patches in the 512 above have no lesion at all? Why is the answer
#    close to a half of the label-0 patches?
# 2. Load `synthetic-pcam` at `image_size=64`. What happens to the "centre 32x32" region?
# 3. Split `synthetic-subtype` by patient (`data.info(..., group_by="patient")`). How do the
#    test counts change, and why are they no longer exactly 10 % of each class?
#
# ````{dropdown} Solutions
# 1. `int(((labels == 0) & ~masks.any(axis=(1, 2))).sum())`; the generator gives half of the
#    label-0 patches no lesion and the other half a lesion outside the centre.
# 2. The patches are resized to 64 x 64, so the labelling region becomes the centre 21 x 21
#    pixels: the rule is about tissue, not pixel counts.
#
#    ```python
#    x, y = next(iter(data.load("synthetic-pcam", "train", batch_size=4, image_size=64)))
#    x.shape  # (4, 64, 64, 3)
#    ```
# 3. `data.info("synthetic-subtype", "test", group_by="patient")["counts"]`: whole patients move
#    between splits, so each class's split sizes are as close to 80/10/10 as its patients'
#    image counts allow, no closer.
# ````
#
# ## Resources
#
# - Veeling et al. (2018), *Rotation equivariant CNNs for digital pathology*:
#   <https://arxiv.org/abs/1806.03962>; data: <https://github.com/basveeling/pcam>
# - TensorFlow Datasets, `patch_camelyon`: <https://www.tensorflow.org/datasets/catalog/patch_camelyon>
# - Kaggle, Histopathologic Cancer Detection: <https://www.kaggle.com/c/histopathologic-cancer-detection>
#
# ## What's next
#
# {doc}`02_preprocessing` scales, augments, balances and splits these images, and measures what
# the ovarian seed's oversample-then-split order does to its test scores.
