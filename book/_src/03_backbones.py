# %% [markdown]
# # Backbones: InceptionV3, Xception and MobileNet
#
# [Open in Colab]({{ colab_url }})
#
# ## Overview
#
# The ovarian seed put its attention block on three ImageNet backbones from `keras.applications`.
# This chapter opens each of them: what comes out of it, how big it is, what it expects as input,
# and where its pretrained weights come from when there is no network.
#
# 1. The backbone specs: one record per backbone
# 2. InceptionV3: a 1 x 1 map at 96 pixels, and the resize that fixes it
# 3. Xception: depthwise-separable blocks and a 2,048-channel map
# 4. MobileNet: a seventh of the parameters
# 5. Input scaling inside the model, and what the seed's plain 1/255 costs
# 6. A frozen base
# 7. ImageNet weights offline
# 8. The ovarian seed's model on each backbone
#
# ## Prerequisites
#
# | Concepts | Importance | Notes |
# | --- | --- | --- |
# | {doc}`01_data` | Necessary | Images arrive as float32 in [0, 1] |
# | Convolutional networks, strides and pooling | Necessary | Why a map shrinks by 32 |
# | Transfer learning | Helpful | Why one freezes a pretrained base |
#
# - **Time to learn**: 30 minutes
# - **System requirements**: any CPU; about two minutes. No ImageNet weights needed.

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

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from histolib import data
from histolib.models import (
    BACKBONES,
    MIN_GRID,
    WeightsNotFoundError,
    build_classifier,
    build_seed_subtype_model,
    get_backbone,
    gradcam_layer_name,
    list_backbones,
    parameter_counts,
    write_application_weights,
)
from histolib.files import reachable
from histolib.models.weights import weights_cache_dir

# %% [markdown]
# ## Hyperparameters
#
# ```{warning}
# Every backbone on this page is **randomly initialised** (`weights=None`) unless a section says
# otherwise: this machine has no network and no copy of the ImageNet files. Shapes and parameter
# counts do not depend on the weights, so they are exact; the one figure that looks at features
# uses **synthetic** patches. Section 7 shows how to supply the real weights offline; the full
# profile then builds the seed's models with them.
# ```

# %%
PROFILE = os.environ.get("HISTOLIB_PROFILE", "quick")  # "full": ImageNet weights (section 7)
SEED = 0
SIZES = (96, 224, 299)  # input sides to measure
WEIGHTS = None if PROFILE == "quick" else "imagenet"  # the seed used "imagenet"
keras.utils.set_random_seed(SEED)
print(f"profile {PROFILE!r}: backbone weights {WEIGHTS!r}")

# %% [markdown]
# ## 1. The backbone specs
#
# `histolib.models` keeps one record per backbone, after timm's registry: the `keras.applications`
# constructor, the input scaling its `preprocess_input` does, the size it was trained at, the layer
# Grad-CAM reads, the channels of its last map, and the smallest input that still gives a
# `MIN_GRID` x `MIN_GRID` map. `seed_cnn` is the PCam seed's three-block CNN, the fourth backbone.

# %%
print("backbones:", list_backbones())
pd.DataFrame([{
    "backbone": s.name,
    "keras.applications": s.application,
    "trained at": s.default_size,
    "scaling on [0, 1]": f"x * {s.scale:g} {s.offset:+g}",
    "channels": s.channels,
    "Grad-CAM layer": s.gradcam_layer,
    "min size": s.min_size,
} for s in BACKBONES.values()]).set_index("backbone")

# %% [markdown]
# An unknown name is refused with the list of valid ones:

# %%
try:
    get_backbone("resnet50")
except ValueError as error:
    print(error)

# %% [markdown]
# Each backbone without its classification top (`include_top=False`) turns a square image of side
# $s$ into a map of side about $s / 32$ (five stride-2 stages; InceptionV3 loses a few more pixels
# to its unpadded convolutions). Measured, for the three sizes that matter here: 96 (PatchCamelyon),
# 224 (the ovarian seed) and 299 (InceptionV3's and Xception's ImageNet size):

# %%
rows = []
for spec in BACKBONES.values():
    if spec.constructor is None:
        continue
    for size in SIZES:
        base = spec.constructor(include_top=False, weights=None, input_shape=(size, size, 3))
        _, h, w, c = base.output.shape
        assert h == w == spec.grid[size] and c == spec.channels
        rows.append({"backbone": spec.name, "input": size, "map": f"{h} x {w} x {c}",
                     "tokens": h * w, "parameters": base.count_params(), "layers": len(base.layers)})
    keras.backend.clear_session()
sizes = pd.DataFrame(rows)
sizes.pivot(index="backbone", columns="input", values="map")

# %% [markdown]
# The parameters do not depend on the input size (a convolution's kernel is the same at any
# size); the number of tokens an attention block sees does:

# %%
tokens = sizes.pivot(index="backbone", columns="input", values="tokens").add_prefix("tokens at ")
sizes.groupby("backbone")[["parameters", "layers"]].first().join(tokens)

# %% [markdown]
# ## 2. InceptionV3
#
# InceptionV3 (Szegedy et al. 2016) stacks "mixed" blocks that run 1 x 1, 3 x 3, factorised
# 7 x 1 / 1 x 7 convolutions and pooling side by side and concatenate them; its last block,
# `mixed10`, gives 2,048 channels. It has 21.8 million parameters without its top.
#
# At 96 pixels its map is **1 x 1**. One token can only attend to itself, so attention does
# nothing, and Grad-CAM has one cell to paint. `build_classifier` therefore resizes smaller
# inputs up to the backbone's `min_size` (139 for InceptionV3) inside the model, with a `Resizing`
# layer after the input; the model still takes 96 x 96 images:

# %%
inception = build_classifier("inception_v3", attention="self", input_shape=(96, 96, 3), weights=WEIGHTS)
print("input ", inception.input.shape)
print("resize", inception.get_layer("resize").output.shape)
print("map   ", inception.get_layer(gradcam_layer_name(inception)).output.shape, "from", gradcam_layer_name(inception))
print("tokens", inception.get_layer("tokens").output.shape)
print(f"parameters {inception.count_params():,}")

# %% [markdown]
# ## 3. Xception
#
# Xception (Chollet 2017) replaces Inception's parallel branches by depthwise-separable
# convolutions: a 3 x 3 convolution per channel, then a 1 x 1 convolution across channels, with
# residual connections around 14 blocks. Its map has 2,048 channels, like InceptionV3's, with
# slightly fewer parameters, and keeps 3 x 3 at 96 pixels, so it needs no resize there. With
# differential attention over its nine tokens:

# %%
xception = build_classifier("xception", attention="differential", input_shape=(96, 96, 3), weights=WEIGHTS)
print("map   ", xception.get_layer(gradcam_layer_name(xception)).output.shape)
print("resize layer:", any(layer.name == "resize" for layer in xception.layers))
attention = xception.get_layer("attention")
print(f"attention: {attention.num_heads} head pairs of width {attention.head_dim}, "
      f"{attention.count_params():,} parameters")
print(f"parameters {xception.count_params():,}")

# %% [markdown]
# ## 4. MobileNet
#
# MobileNet (Howard et al. 2017) is built from depthwise-separable convolutions only, 13 of them,
# at width multiplier 1.0. Its last map has 1,024 channels, and the whole base holds 3.2 million
# parameters: about a seventh of the other two. The ovarian seed scored it lowest (test accuracy
# 0.64 against 0.80), which chapter 6 revisits. With the seed's thresholded attention at 96 pixels:

# %%
mobilenet = build_classifier("mobilenet", attention="thresholded", input_shape=(96, 96, 3), weights=WEIGHTS)
print("map   ", mobilenet.get_layer(gradcam_layer_name(mobilenet)).output.shape)
print(f"parameters {mobilenet.count_params():,}")
pd.DataFrame({"parameters": [m.count_params() for m in (inception, xception, mobilenet)]},
             index=[m.name for m in (inception, xception, mobilenet)])

# %% [markdown]
# ## 5. Input scaling inside the model
#
# `keras.applications.<backbone>.preprocess_input` expects pixels in 0-255. For all three
# backbones here it is the `"tf"` mode, $x / 127.5 - 1$, which puts pixels in $[-1, 1]$: the range
# the ImageNet weights were trained on. The data front door gives $[0, 1]$, so the builders do the
# equivalent, $2x - 1$, with a `Rescaling(2, -1)` layer named `scale` inside the model. It is
# part of the saved model, so nothing downstream can forget it or apply it twice.

# %%
batch, _ = next(iter(data.load("synthetic-subtype", "train", batch_size=8, image_size=96, seed=SEED)))
scale = mobilenet.get_layer("scale")
print("Rescaling", scale.scale, scale.offset)
from_builder = keras.ops.convert_to_numpy(scale(batch))
from_keras = keras.applications.mobilenet.preprocess_input(batch.numpy() * 255.0)
print("same as preprocess_input on 0-255:", np.allclose(from_builder, from_keras, atol=1e-5))

# %% [markdown]
# The ovarian seed divided its PNGs by 255 and fed them to the backbone as they were, skipping
# `preprocess_input`. `build_seed_subtype_model` keeps that, so it reproduces what was published;
# it has no `scale` layer. What the frozen ImageNet backbone then receives:

# %%
seed_model = build_seed_subtype_model("mobilenet", input_shape=(96, 96, 3), weights=WEIGHTS)
print("scale layer in the seed's model:", any(layer.name == "scale" for layer in seed_model.layers))
x = batch.numpy()
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.hist(from_builder.ravel(), bins=60, range=(-1, 1), alpha=0.7, label="build_classifier: 2x - 1 (what ImageNet training saw)")
ax.hist(x.ravel(), bins=60, range=(-1, 1), alpha=0.7, label="the seed: x / 255 only")
ax.set_xlabel("pixel value entering the backbone")
ax.set_ylabel("pixels")
ax.set_title("pixels of 8 synthetic-subtype patches (synthetic images)")
ax.legend(fontsize=8, loc="upper left")
plt.tight_layout()
plt.show()

# %% [markdown]
# The cost, in the backbone's own units: every pixel is $(x' + 1) / 2$ instead of $x'$, so the
# image's mean moves up by half the range and its contrast is halved. Mid-grey arrives as
# "bright", black as mid-grey. The first convolution and its frozen BatchNorm statistics were fit
# to $[-1, 1]$ inputs, so every layer after it sees activations off the distribution it was
# trained on, and a frozen base cannot adapt. The head learns what it can from distorted
# features. In numbers, for these patches:

# %%
print(f"mean {from_builder.mean():+.3f} (correct)  {x.mean():+.3f} (seed)")
print(f"std  {from_builder.std():.3f} (correct)   {x.std():.3f} (seed)")

# %% [markdown]
# How much accuracy that costs cannot be measured without the ImageNet weights and the ovarian
# images; chapter 6 compares the seed's pipeline with the corrected one on the synthetic subtypes.

# %% [markdown]
# ## 6. A frozen base
#
# With pretrained weights, `build_classifier(..., freeze=True)` (the default) sets every backbone
# layer to `trainable = False`: only the attention block and the head learn, and Keras runs the
# frozen BatchNorm layers in inference mode, with their ImageNet statistics. With `weights=None`
# nothing is frozen, since freezing random weights would only hobble the model. Counted on the
# MobileNet classifier of section 4 (random weights, not frozen); section 7 counts the same
# backbone with weights loaded and frozen:

# %%
pd.DataFrame({"weights=None": parameter_counts(mobilenet)}).T

# %% [markdown]
# The "frozen" parameters of the random model are BatchNorm's moving means and variances, which
# are statistics, not weights a gradient reaches.

# %% [markdown]
# ## 7. ImageNet weights offline
#
# With `weights="imagenet"` a builder looks for the published weights file (without the top)
# that the backbone's spec names, in this order:
#
# 1. `$HISTOLIB_WEIGHTS_DIR/<file name>`, loaded as a local file;
# 2. `weights/` in histolib's user cache (`~/.cache/histolib/weights` by default);
# 3. the network: the file is downloaded into that cache (MD5-checked where the publisher gives
#    one), if `storage.googleapis.com` answers within a few seconds;
# 4. otherwise an error, within seconds, naming the file, its URL and where to put it.
#
# A path to a weights file works too (`weights="/path/to/file.h5"`). The file names:

# %%
pd.DataFrame([{"backbone": s.name, "file": s.weights_file(224), "from": s.weights_url}
              for s in BACKBONES.values() if s.weights_url]).set_index("backbone")

# %% [markdown]
# To use them on a machine without a network, fetch the files elsewhere (a browser, or a
# builder with `weights="imagenet"` on a connected machine, which leaves them in its user cache),
# copy them to a folder, and point `HISTOLIB_WEIGHTS_DIR` at it.
#
# Here, offline and with no copy, the builder fails fast and says what to do. The cell prints the
# message (it catches the error; the paths in it depend on the machine):

# %% tags=["nbval-ignore-output"]
print("histolib's weights cache:", weights_cache_dir())
if reachable("storage.googleapis.com"):
    print("This machine can reach storage.googleapis.com: the builder would download the file.")
else:
    try:
        build_classifier("inception_v3", weights="imagenet")
    except WeightsNotFoundError as error:
        print(f"{type(error).__name__}: {error}")

# %% [markdown]
# To show the local route working without the real file, we write a **stand-in**: a randomly
# initialised MobileNet's weights, saved by `write_application_weights` in the layout of Keras's
# own application files (legacy HDF5) under the name Keras uses for 128-pixel inputs. With real
# files the steps are the same, minus this one.

# %%
weights_dir = Path(tempfile.mkdtemp(prefix="histolib-weights-"))
spec = get_backbone("mobilenet")
stand_in = spec.constructor(include_top=False, weights=None, input_shape=(128, 128, 3))
print("wrote", write_application_weights(stand_in, weights_dir / spec.weights_file(128)).name)

# %%
os.environ["HISTOLIB_WEIGHTS_DIR"] = str(weights_dir)
frozen = build_classifier("mobilenet", input_shape=(128, 128, 3), weights="imagenet")
unfrozen = build_classifier("mobilenet", input_shape=(128, 128, 3), weights=None)
same = np.array_equal(frozen.get_layer("conv1").get_weights()[0], stand_in.get_layer("conv1").get_weights()[0])
print("loaded from HISTOLIB_WEIGHTS_DIR, identical to the file:", same)
print("backbone frozen:", not frozen.get_layer("conv_pw_13").trainable, " head trainable:", frozen.get_layer("probs").trainable)
pd.DataFrame({"mobilenet, weights=None": parameter_counts(unfrozen),
              "mobilenet, weights loaded, frozen": parameter_counts(frozen)}).T

# %% [markdown]
# Only the head's 2,050 parameters ($1024 \times 2 + 2$) are left to train. The full profile of
# the ovarian chapter uses exactly this route with the real files.

# %%
del os.environ["HISTOLIB_WEIGHTS_DIR"]

# %% [markdown]
# ## 8. The ovarian seed's model on each backbone
#
# `build_seed_subtype_model(backbone)` is the seed as published: the frozen backbone at 224 x 224
# fed $[0, 1]$ pixels, its last map as tokens, `ThresholdedAttention` as wide as the map's
# channels, Gaussian noise, pooling, `Dense(512)`, BatchNorm, noise, dropout and a five-class
# softmax. Its feature grids match the ones the seed's notebook printed (5 x 5 x 2048,
# 7 x 7 x 2048, 7 x 7 x 1024). Built here with random weights; the counts are the seed's:

# %%
rows = []
for name in ("inception_v3", "xception", "mobilenet"):
    model = build_seed_subtype_model(name, weights=WEIGHTS)
    tokens = model.get_layer("tokens").output.shape
    rows.append({"model": model.name, "tokens": f"{tokens[1]} x {tokens[2]}",
                 "attention": model.get_layer("attention").count_params(),
                 "parameters": model.count_params()})
    keras.backend.clear_session()
pd.DataFrame(rows).set_index("model")

# %% [markdown]
# The attention block alone holds 12.6 million parameters on the 2,048-channel backbones
# (three `Dense(2048)` projections with bias, $3 \times (2048^2 + 2048)$), more than half of the
# backbone's own count, and it is trained from scratch on a few thousand images. Chapter 4 takes that block apart.

# %% [markdown]
# ## Summary
#
# - InceptionV3 and Xception give 2,048-channel maps from about 21 million parameters; MobileNet a
#   1,024-channel map from 3.2 million. The maps are about $s/32$ on a side: 5, 7 and 7 at 224.
# - At 96 pixels InceptionV3's map is 1 x 1; `build_classifier` resizes its input to 139 inside the
#   model so attention and Grad-CAM have a 3 x 3 grid.
# - Each backbone's `preprocess_input` becomes a `Rescaling(2, -1)` layer inside the model. The
#   ovarian seed skipped it: its frozen backbones saw images shifted up by half the range at half
#   the contrast; `build_seed_subtype_model` keeps that to reproduce it.
# - A frozen base leaves only the attention block and the head to train.
# - ImageNet weights come from `$HISTOLIB_WEIGHTS_DIR`, Keras's cache, or the network; offline
#   with none of them, the error names the file and where to put it.
#
# ## Exercises
#
# 1. What map does Xception give at 71 pixels, and at 70? Why is 71 its `min_size`?
# 2. Build `build_classifier("mobilenet", input_shape=(64, 64, 3), weights=None)`. Which layer
#    appears that the 96-pixel model lacks, and what size does it produce?
# 3. How many parameters does `ThresholdedAttention(key_dim=1024)` have on MobileNet's map?
#    Check your arithmetic against the table of section 8.
#
# ````{dropdown} Solutions
# 1. 3 x 3 at 71. At 70 Keras refuses to build it ("Input size must be at least 71x71"): its
#    unpadded first convolutions and five halvings need 71 pixels to leave a map at all, and 71
#    happens to give exactly 3 x 3, the `MIN_GRID`.
#
#    ```python
#    for s in (71, 70):
#        try:
#            print(s, keras.applications.Xception(include_top=False, weights=None,
#                                                 input_shape=(s, s, 3)).output.shape)
#        except ValueError as error:
#            print(s, error)
#    ```
# 2. A `Resizing` layer named `resize`, to 95 x 95 (MobileNet's `min_size`), which gives a 3 x 3 map.
# 3. Three projections of `Dense(1024)` with bias: $3 \times (1024 \times 1024 + 1024) = 3{,}148{,}800$
#    (the block has no output projection).
# ````
#
# ## Resources
#
# - Szegedy et al. (2016), *Rethinking the Inception architecture*: <https://arxiv.org/abs/1512.00567>
# - Chollet (2017), *Xception*: <https://arxiv.org/abs/1610.02357>
# - Howard et al. (2017), *MobileNets*: <https://arxiv.org/abs/1704.04861>
# - Keras applications and their `preprocess_input`: <https://keras.io/api/applications/>
# - Keras, transfer learning and fine-tuning (frozen BatchNorm):
#   <https://keras.io/guides/transfer_learning/>
#
# ## What's next
#
# {doc}`04_attention` takes apart the blocks these backbones feed: self-attention, the seed's
# thresholded attention and differential attention.
