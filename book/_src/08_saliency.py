# %% [markdown]
# # Saliency: where the models look, and whether it is the lesion
#
# [Open in Colab]({{ colab_url }})
#
# ## Overview
#
# The PCam seed described Grad-CAM pictures and showed none. A saliency map is easy to draw and
# easy to over-read; this chapter draws them and then measures them, on patches where the answer is
# known, before drawing one over real tissue.
#
# 1. A model, and patches with a known answer: the real run's model on synthetic lesions
# 2. Grad-CAM, Grad-CAM++ and saliency maps
# 3. The attention layers' own maps
# 4. Localisation scores: energy inside the lesion, and the pointing game
# 5. The sanity check: randomised weights must change the maps
# 6. A heatmap over a real slide region
#
# ## Prerequisites
#
# | Concepts | Importance | Notes |
# | --- | --- | --- |
# | {doc}`04_attention` | Necessary | The three attention blocks and their maps |
# | {doc}`05_training_pcam` | Necessary | The seed's model and `train.fit` |
# | Gradients of a model's output with respect to its input | Helpful | What every map here is made of |
#
# - **Time to learn**: 40 minutes
# - **System requirements**: any CPU; about two minutes in the quick profile. Section 6 uses a real
#   slide region (1.9 MB) when it is on disk.

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
import functools
import os
import tempfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from histolib import cards, data, evaluate, plots, saliency, slide, train
from histolib.config import TrainConfig
from histolib.data import regions, synthetic
from histolib.models import build_classifier, build_seed_pcam_model

# %% [markdown]
# ## Hyperparameters
#
# The model explained is the PCam seed's, trained on 20,000 real PCam patches by chapter 5's
# recorded run (`book/results/models/pcam-seed.keras`, with the threshold chosen on its validation
# split beside it). Where that file is missing, the chapter trains the same model on synthetic
# patches instead and says so. Localisation needs lesion masks, which only the built-in
# `synthetic-pcam` patches have, so sections 2 to 5 explain synthetic patches in both profiles; the
# full profile explains more of them and tiles the slide region with overlapping tiles.

# %%
PROFILE = os.environ.get("HISTOLIB_PROFILE", "quick")  # "full": more patches, overlapping slide tiles
QUICK = PROFILE == "quick"
SEED = 0
MODEL_PATH = Path(os.environ.get("HISTOLIB_PCAM_MODEL", "results/models/pcam-seed.keras"))  # the real run's model
SYNTHETIC = "synthetic-pcam:1024" if QUICK else "synthetic-pcam"  # test split: 128 patches (full: 512)
N_EXPLAIN = 8 if QUICK else 64  # tumour test patches explained and scored
SMOOTH_SAMPLES = 10 if QUICK else 50  # noisy copies per patch for SmoothGrad
STRIDE = 96 if QUICK else 48  # slide tiles: 96 side by side, 48 overlapping by half
FALLBACK_EPOCHS = 4 if QUICK else 20  # only when MODEL_PATH is missing: training on synthetic patches
REGION = Path(os.environ.get("HISTOLIB_REGION", "../../shared/data/he-region/CMU-1-Small-Region.svs"))
keras.utils.set_random_seed(SEED)
print(f"profile {PROFILE!r}: {N_EXPLAIN} patches explained, slide stride {STRIDE}")

# %% [markdown]
# ## 1. A model, and patches with a known answer
#
# The model first: the real run's, or the fallback.

# %% tags=["nbval-ignore-output"]
if MODEL_PATH.is_file():
    model = evaluate.load_model(MODEL_PATH)
    threshold = cards.read_threshold(MODEL_PATH)
    source = "the seed's model trained on 20,000 real PCam patches (book/results)"
else:
    fitted = train.fit(functools.partial(build_seed_pcam_model, centre_inputs=True),
                       data.load(SYNTHETIC, "train", batch_size=32, shuffle=True, seed=SEED),
                       data.load(SYNTHETIC, "valid", batch_size=64, seed=SEED),
                       TrainConfig(epochs=FALLBACK_EPOCHS, seed=SEED, verbose=0), out_dir=tempfile.mkdtemp(prefix="histolib-ch08-"))
    model, threshold = fitted.model, fitted.threshold["threshold"]
    source = f"FALLBACK: {MODEL_PATH} is missing, so the seed's model was trained here on synthetic patches"
print(f"{source}\n{model.name}: {model.count_params():,} parameters, decision threshold {threshold:.3f}")

# %% [markdown]
# `synthetic-pcam` patches follow PatchCamelyon's rule (label 1 when the centre 32 x 32 holds
# tumour) and come with the mask of every lesion drawn into them, so a map can be checked against
# the truth. The real model never saw one; the lesions are drawn to look like tumour (chapter 1),
# and how well the model separates the synthetic classes says how much of its behaviour carries
# over. This is a transfer test, not a score on PCam:

# %% tags=["nbval-ignore-output"]
synthetic_scores = evaluate.evaluate_model(model, data.load(SYNTHETIC, "test", batch_size=64, seed=SEED),
                                           threshold=threshold)
pd.Series({k: synthetic_scores[k] for k in ("n", "accuracy", "precision", "recall", "auc")}).round(3)

# %% [markdown]
# The explained patches: the first `N_EXPLAIN` tumour patches of the test split and their lesion
# masks (`synthetic.pcam_patches` draws the very patches that `load` streams; patches come in
# pairs of one tumour and one normal patch, so `2 * N_EXPLAIN` patches hold `N_EXPLAIN` tumours).

# %%
images, labels, masks = synthetic.pcam_patches(2 * N_EXPLAIN, SEED, split="test")
tumour = np.flatnonzero(labels == 1)[:N_EXPLAIN]
x, lesion = images[tumour].astype("float32") / 255, masks[tumour]
print("images", x.shape, "masks", lesion.shape, f"lesions cover {lesion.mean():.1%} of the pixels")

# %% [markdown]
# ## 2. Grad-CAM, Grad-CAM++ and saliency maps
#
# All three come from tf-keras-vis through `saliency.Explainer`, which scores the logit of class 1
# (tumour) and returns maps in [0, 1] at the input size:
#
# - **Grad-CAM** (Selvaraju et al. 2017) weighs the channels of a convolutional layer's output
#   $A^k$ by the average gradient of the score over the map, sums them and keeps the positive part:
#   $L = \operatorname{ReLU}\big(\sum_k \alpha_k A^k\big)$ with
#   $\alpha_k = \frac{1}{hw}\sum_{ij} \partial y / \partial A^k_{ij}$. Here the layer is the trunk's
#   last convolution, `conv3`, a 24 x 24 map upsampled to 96 x 96.
# - **Grad-CAM++** (Chattopadhyay et al. 2018) weighs each position's gradient instead of taking a
#   plain average, which helps when a class appears in several places.
# - **Saliency** (Simonyan et al. 2013) is the absolute gradient of the score with respect to the
#   input pixels; **SmoothGrad** averages it over noisy copies of the image.
#
# The first row shows each patch with its class-1 probability, the second its lesion mask, the
# others the maps over the patch.

# %%
probability = model.predict(x, verbose=0)[:, 0]
methods = {"Grad-CAM": "gradcam", "Grad-CAM++": "gradcam++", "saliency": "saliency", "SmoothGrad": "smoothgrad"}
maps = {name: saliency.Explainer(model, method, smooth_samples=SMOOTH_SAMPLES)(1, x, seed=SEED)
        for name, method in methods.items()}
figure = plots.saliency_grid(x, {"lesion": lesion.astype("float32"), **maps},
                             titles=[f"p = {p:.2f}" for p in probability])
figure

# %% [markdown]
# ## 3. The attention layer's own map
#
# An attention layer says, for every token, how much it attends to every other token.
# `saliency.attention_map` averages that over queries (and heads, for differential attention):
# how much attention each of the 144 positions of the seed's 12 x 12 grid *receives*, upsampled
# to the patch. The same function reads the thresholded and differential layers; the book's
# recorded models include only the seed's self-attention so far (chapter 4 draws all three blocks'
# maps, and exercise 2 trains a differential one).

# %%
attention = saliency.attention_map(model, x)
figure = plots.saliency_grid(x, {"lesion": lesion.astype("float32"), "self-attention": attention},
                             titles=[f"p = {p:.2f}" for p in probability])
figure

# %% [markdown]
# ## 4. Localisation scores
#
# Two numbers per method, over the explained tumour patches:
#
# - **Energy inside the mask**: the share of a map's total value that falls on lesion pixels. A map
#   spread evenly scores the lesion's area fraction, the *chance* column.
# - **Pointing game** (Zhang et al. 2016): the share of patches whose map peaks inside the lesion.
#
# With the quick profile's handful of patches one patch is 12 points of the pointing game, so read
# the scores against chance, not against each other's second decimal.

# %% tags=["nbval-ignore-output"]
localisation = pd.DataFrame({
    **{name: saliency.localisation(m, lesion) for name, m in maps.items()},
    "self-attention": saliency.localisation(attention, lesion),
}).T
localisation.round(3)

# %% [markdown]
# On these patches the input-gradient maps (saliency, SmoothGrad) and the attention map put several
# times the chance share of their energy on the lesion, from a model that never saw a synthetic
# patch. Grad-CAM's map is coarse (24 x 24 cells upsampled over 96 x 96 pixels) and spreads
# beyond a lesion that covers about 5 % of the patch, so its energy share stays only a little
# above chance even where its peak falls on the lesion.

# %% [markdown]
# ## 5. The sanity check
#
# Adebayo et al. (2018) asked whether a map explains the model or only the image: an edge
# detector also "finds" a lesion with a sharp border. Their test redraws the model's weights at
# random and compares the maps: maps that explain the model must change. `randomisation_check`
# gives the Spearman rank correlation between the trained and the randomised model's maps, per
# patch, and both models' localisation. A correlation near 1 fails the check.

# %% tags=["nbval-ignore-output"]
sanity = {}
for name, method in methods.items():
    if method == "smoothgrad":
        continue  # the same check as saliency, twenty times the cost
    check = saliency.randomisation_check(model, x, 1, method=method, masks=lesion, seed=SEED)
    sanity[name] = {"rank correlation (mean)": check["spearman_mean"],
                    "energy in mask, trained": check["trained"]["energy_in_mask"],
                    "energy in mask, randomised": check["randomised"]["energy_in_mask"],
                    "pointing game, trained": check["trained"]["pointing_game"],
                    "pointing game, randomised": check["randomised"]["pointing_game"]}
pd.DataFrame(sanity).T.round(3)

# %% [markdown]
# The randomised model's maps, next to the trained model's:

# %%
randomised = saliency.randomise_weights(model, seed=SEED)
figure = plots.saliency_grid(x, {
    "Grad-CAM, trained": maps["Grad-CAM"],
    "Grad-CAM, random": saliency.Explainer(randomised, "gradcam")(1, x),
    "saliency, trained": maps["saliency"],
    "saliency, random": saliency.Explainer(randomised, "saliency")(1, x),
})
figure

# %% [markdown]
# A low rank correlation says the map depends on the weights; it does not say the map is right.
# Read the two checks together: a map should both change when the weights are randomised and
# find the lesion better than chance with the trained weights.

# %% [markdown]
# ## 6. A heatmap over a real slide region
#
# `histolib.slide` reads a region of a whole-slide image with tifffile (no OpenSlide), finds the
# tissue by colour saturation (Otsu's threshold), cuts it into 96 x 96 tiles, scores them in
# batches and draws the tumour probability over the region: the PCam seed's "patch aggregation"
# triage. The region is `CMU-1-Small-Region.svs` from OpenSlide's public test data (CC0), 2,220 x
# 2,967 pixels of real H&E tissue with no tumour annotations.
#
# The model is section 1's: the seed's model trained on real PCam patches, or, where that file is
# missing, the fallback trained on synthetic patches, whose heatmap shows only the mechanics.
#
# The picture puts the region as stained on the left and the probabilities on the right, in blue,
# teal, green and yellow (viridis without its violet start, `plots.OVERLAY_CMAP`) over the tissue in
# grey: a translucent map in pinks and purples (magma, say) would blend into eosin and
# haematoxylin, and a reader could not tell the model's colour from the stain's. The saliency grids
# above draw their maps the same way.

# %% tags=["nbval-ignore-output"]
print(f"model: {source}; decision threshold {threshold:.3f}")

# %%
if REGION.is_file():
    region = regions.read_region(REGION)
    print("region", region.shape, region.dtype, f"tissue {regions.tissue_mask(region).mean():.0%} of the pixels")
else:
    region = None
    print(f"{REGION} is not on this machine. Get the same file (1.9 MB, MD5-checked) with\n"
          f"    histolib data cmu-region --out {REGION.parent}\nand run this section again.")

# %% tags=["nbval-ignore-output"]
if region is not None:
    result = slide.heatmap(model, region, stride=STRIDE)
    scored = result.probability[np.isfinite(result.probability)]
    print(f"{result.n_scored} of {result.n_tiles} tiles scored; "
          f"{(scored > threshold).mean():.0%} of them above the threshold (called tumour)")
    display(slide.draw_heatmap(region, result, title=f"tumour probability, {result.n_scored} tissue tiles, stride {STRIDE}"))

# %% [markdown]
# Where does the model look inside the tiles it scores highest? Grad-CAM on the four
# highest-scoring tissue tiles (real tissue, so there is no mask to score against: this is a
# picture to inspect, not a measurement):

# %% tags=["nbval-ignore-output"]
if region is not None:
    top = np.argsort(np.nan_to_num(result.probability, nan=-1.0), axis=None)[::-1][:4]
    corners = np.stack(np.unravel_index(top, result.probability.shape), axis=1) * STRIDE
    tiles = np.stack([region[r:r + 96, c:c + 96] for r, c in corners]).astype("float32") / 255
    display(plots.saliency_grid(tiles, {"Grad-CAM": saliency.Explainer(model, "gradcam")(1, tiles)},
                                titles=[f"p = {result.probability.flat[i]:.2f}" for i in top]))

# %% [markdown]
# With the real model this is a triage picture: the tiles it would send to a pathologist first.
# Read it with care. The region has no annotations and is not known to hold tumour, while every
# PCam patch the model learned from comes from lymph-node sections; on tissue unlike its training
# data a model can be confidently wrong, and a large share of tiles above the threshold here says
# more about that shift than about this tissue. The heatmap cannot be scored here; the localisation
# scores of section 4 are the measurement, on patches where the truth is known.

# %% [markdown]
# ## Summary
#
# - `saliency.Explainer` gives Grad-CAM, Grad-CAM++, saliency and SmoothGrad maps through
#   tf-keras-vis, in [0, 1] at the input size; `saliency.attention_map` gives the attention each
#   position receives in any of the three attention layers.
# - `saliency.localisation` scores maps against known lesion masks: energy inside the mask against
#   chance, and the pointing game.
# - `saliency.randomisation_check` is the model-randomisation sanity check: maps must change when
#   the weights are redrawn; a map that does not is explaining the image, not the model.
# - `slide.heatmap` and `slide.draw_heatmap` turn a model into a probability map over a real slide
#   region, skipping background.
#
# ## Exercises
#
# 1. Score Grad-CAM on the layer before the last (`layer="conv2"`). Does localisation improve?
# 2. Train the seed's trunk with differential attention on synthetic patches
#    (`build_classifier("seed_cnn", attention="differential", weights=None)` and `train.fit`) and
#    score its attention map as in section 4.
# 3. How many tiles does `slide.heatmap` score on the region at stride 48, and why about four
#    times as many as at 96?
#
# ````{dropdown} Solutions
# 1. A finer map (48 x 48) can follow the lesion's outline more closely, but an earlier layer knows
#    less about the class; measure it rather than guess:
#
#    ```python
#    saliency.localisation(saliency.Explainer(model, "gradcam")(1, x, layer="conv2"), lesion)
#    ```
# 2. ```python
#    run = train.fit(functools.partial(build_classifier, "seed_cnn", attention="differential", weights=None),
#                    data.load(SYNTHETIC, "train", batch_size=32, shuffle=True), data.load(SYNTHETIC, "valid"),
#                    TrainConfig(epochs=10), out_dir=tempfile.mkdtemp())
#    saliency.localisation(saliency.attention_map(run.model, x), lesion)
#    ```
# 3. Halving the stride doubles the tiles along each side: the grid goes from 30 x 23 to
#    60 x 45 tiles, and background tiles are skipped as before.
#
#    ```python
#    slide.heatmap(model, region, stride=48).n_scored
#    ```
# ````
#
# ## Resources
#
# - Selvaraju et al. (2017), *Grad-CAM*: <https://arxiv.org/abs/1610.02391>
# - Chattopadhyay et al. (2018), *Grad-CAM++*: <https://arxiv.org/abs/1710.11063>
# - Smilkov et al. (2017), *SmoothGrad*: <https://arxiv.org/abs/1706.03825>
# - Adebayo et al. (2018), *Sanity checks for saliency maps*: <https://arxiv.org/abs/1810.03292>
# - Zhang et al. (2016), *Top-down neural attention by excitation backprop* (the pointing game):
#   <https://arxiv.org/abs/1608.00507>
# - tf-keras-vis: <https://github.com/keisen/tf-keras-vis>
# - OpenSlide test data: <https://openslide.cs.cmu.edu/download/openslide-testdata/>
#
# ## What's next
#
# {doc}`09_reproduction_report` puts every published claim of both seeds beside what this book
# measured.
