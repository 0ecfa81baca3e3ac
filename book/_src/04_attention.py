# %% [markdown]
# # Attention: self, thresholded and differential
#
# [Open in Colab]({{ colab_url }})
#
# ## Overview
#
# Both seeds put an attention block on top of a convolutional feature map. This chapter takes the
# three blocks apart, one equation at a time, on inputs small enough to check by hand.
#
# 1. From a feature map to tokens
# 2. Self-attention, the PCam seed's block
# 3. Thresholded attention, the ovarian seed's block, and why its threshold is $1/n$
# 4. The missing $1/\sqrt{d}$ at widths 1,024 and 2,048
# 5. Differential attention (Ye et al. 2024), the block the ovarian seed named but did not build
# 6. The three maps side by side
#
# ## Prerequisites
#
# | Concepts | Importance | Notes |
# | --- | --- | --- |
# | Matrix products and the softmax | Necessary | Every equation here is one of them |
# | {doc}`03_backbones` | Helpful | Where the feature maps and their widths come from |
# | Keras layers | Helpful | The blocks are `keras.layers.Layer` subclasses |
#
# - **Time to learn**: 40 minutes
# - **System requirements**: any CPU; about 30 seconds

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

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from keras import ops
from scipy.special import softmax

from histolib.layers import (
    DifferentialAttention,
    SelfAttention,
    ThresholdedAttention,
    lambda_init_for_depth,
    to_tokens,
)

# %% [markdown]
# ## Hyperparameters
#
# Nothing is trained in this chapter: every layer is **randomly initialised** and every input is
# **synthetic**, so the maps below show what the arithmetic of each block does, not what a trained
# model learned (chapters 5, 6 and 8 show trained maps). The full profile only draws more random
# feature maps for the saturation study in section 4.

# %%
PROFILE = os.environ.get("HISTOLIB_PROFILE", "quick")  # "full": more random draws in section 4
SEED = 0
N_MAPS = 4 if PROFILE == "quick" else 64  # random feature maps per backbone width (section 4)
keras.utils.set_random_seed(SEED)
rng = np.random.default_rng(SEED)
print(f"profile {PROFILE!r}: {N_MAPS} random feature maps per width")

# %% [markdown]
# ## 1. From a feature map to tokens
#
# A backbone turns an image into a feature map of shape $(b, h, w, c)$: $b$ images, an $h \times w$
# grid of positions and $c$ channels. Attention works on a sequence of $n = h w$ *tokens*, so the
# grid is flattened row by row into $(b, n, c)$. At 224 x 224 pixels, the ovarian seed's backbones
# give these grids:
#
# | backbone | grid | channels $c$ | tokens $n$ |
# | --- | --- | --- | --- |
# | InceptionV3 | 5 x 5 | 2,048 | 25 |
# | Xception | 7 x 7 | 2,048 | 49 |
# | MobileNet | 7 x 7 | 1,024 | 49 |
#
# `to_tokens` does the flattening; token $i w + j$ is grid position $(i, j)$.

# %%
feature_map = rng.standard_normal((2, 7, 7, 1024)).astype("float32")  # a MobileNet-sized map
tokens = to_tokens(feature_map)
print("feature map", feature_map.shape, "-> tokens", tuple(tokens.shape))
assert np.array_equal(ops.convert_to_numpy(tokens)[:, 3 * 7 + 5], feature_map[:, 3, 5])

# %% [markdown]
# ## 2. Self-attention, the PCam seed's block
#
# With tokens $X \in \mathbb{R}^{n \times c}$, three dense projections give queries, keys and values
# of width $k$ (`key_dim`, 128 in the seed):
#
# $$
# Q = X W_q + b_q, \qquad K = X W_k + b_k, \qquad V = X W_v + b_v .
# $$
#
# The attention map compares every query with every key, scaled by $1/\sqrt{k}$, and each row is a
# softmax, so it sums to one:
#
# $$
# A = \operatorname{softmax}\!\left(\frac{Q K^\top}{\sqrt{k}}\right) \in \mathbb{R}^{n \times n},
# \qquad \text{output} = (A V)\, W_o + b_o .
# $$
#
# A worked example: one image of $n = 4$ tokens with $c = 3$ channels, and $k = 2$.

# %%
x = (np.arange(12, dtype="float32").reshape(1, 4, 3) - 6) / 6  # (batch 1, n 4, c 3)
self_attention = SelfAttention(key_dim=2)
out, A = self_attention(x, return_attention_scores=True)
print("output", tuple(out.shape), " map", tuple(A.shape))

# %% [markdown]
# The same map by hand, from the layer's own weights, with NumPy: the layer computes exactly the
# equation above.

# %%
Wq, bq = (ops.convert_to_numpy(w) for w in self_attention.query.weights)
Wk, bk = (ops.convert_to_numpy(w) for w in self_attention.key.weights)
Q, K = x[0] @ Wq + bq, x[0] @ Wk + bk
A_by_hand = softmax(Q @ K.T / np.sqrt(2), axis=-1)
assert np.allclose(A_by_hand, ops.convert_to_numpy(A)[0], atol=1e-6)
print("A =\n", A_by_hand.round(3))
print("row sums:", A_by_hand.sum(axis=-1).round(6))

# %% [markdown]
# ## 3. Thresholded attention, the ovarian seed's block
#
# The ovarian seed's block, which it called *differential attention*, projects to the backbone's full
# width ($k = c$), leaves out the $1/\sqrt{d}$ scaling, and zeroes every weight that is
# not above the mean of the map:
#
# $$
# A = \operatorname{softmax}\!\left(Q K^\top\right), \qquad
# \tilde A_{ij} = \begin{cases} A_{ij} & A_{ij} > \bar A \\ 0 & \text{otherwise} \end{cases},
# \qquad \text{output} = \tilde A V .
# $$
#
# The seed took $\bar A$ as the mean over the whole batch tensor, which looks as if each image's
# weights depend on its batch companions. They do not: each of the $b n$ rows of a softmax sums to
# one, so
#
# $$
# \bar A = \frac{1}{b\, n^2} \sum_{\beta, i, j} A_{\beta i j} = \frac{b\, n}{b\, n^2} = \frac{1}{n},
# $$
#
# whatever the batch holds. The rule keeps exactly the weights *above uniform*, and
# `ThresholdedAttention` uses $1/n$ directly. The kept weights are not renormalised, so the rows of
# $\tilde A$ sum to less than one. Checked on a batch of eight random 7 x 7 maps:

# %%
batch = rng.standard_normal((8, 49, 64)).astype("float32")
thresholded = ThresholdedAttention(key_dim=64)
_, A_kept = thresholded(batch, return_attention_scores=True)
q, k = (ops.convert_to_numpy(p(batch)) for p in (thresholded.query, thresholded.key))
A_full = softmax(q @ k.transpose(0, 2, 1), axis=-1)  # the map before the threshold
print(f"mean of the batch's map: {A_full.mean():.6f}   1/n = 1/49 = {1 / 49:.6f}")
assert np.isclose(A_full.mean(), 1 / 49, rtol=1e-5)
assert np.allclose(np.where(A_full > 1 / 49, A_full, 0), ops.convert_to_numpy(A_kept), atol=1e-6)

# %% tags=["nbval-ignore-output"]
kept = ops.convert_to_numpy(A_kept)
print(f"weights kept per row: {(kept > 0).sum(-1).mean():.2f} of 49")
print(f"row sums after the threshold: min {kept.sum(-1).min():.3f}, mean {kept.sum(-1).mean():.3f}")

# %% [markdown]
# ## 4. The missing $1/\sqrt{d}$ at widths 1,024 and 2,048
#
# Where the entries of $q$ and $k$ have unit variance (which is what Glorot initialisation gives for
# unit-variance inputs), a logit $q \cdot k = \sum_{m=1}^{d} q_m k_m$ adds $d$ such products and has
# standard deviation $\sqrt{d}$. Dividing by $\sqrt{d}$ brings it back to one; without it, at the
# seed's widths, the logits spread over $\pm 32$ to $\pm 45$ and the softmax of a row is nearly
# one-hot. The study below feeds random unit-variance feature maps of each backbone's shape through
# `ThresholdedAttention` with the seed's width and compares its logits with and without the scaling.
# The numbers come from random inputs and random weights, so they describe the arithmetic, not a
# trained model.

# %% tags=["nbval-ignore-output"]
rows = []
for backbone, grid, width in [("InceptionV3", 5, 2048), ("Xception", 7, 2048),
                              ("MobileNet", 7, 1024)]:
    n = grid * grid
    maps = rng.standard_normal((N_MAPS, grid, grid, width)).astype("float32")
    layer = ThresholdedAttention(key_dim=width)
    layer(maps)
    q, k = (ops.convert_to_numpy(p(to_tokens(maps))) for p in (layer.query, layer.key))
    logits = q @ k.transpose(0, 2, 1)
    for scaling, scale in [("none (the seed)", 1.0), ("1/sqrt(d)", np.sqrt(width))]:
        A_study = softmax(logits / scale, axis=-1)
        rows.append({
            "backbone": backbone, "tokens n": n, "width d": width, "scaling": scaling,
            "logit std": (logits / scale).std(),
            "largest weight per row": A_study.max(-1).mean(),
            "weights above 1/n per row": (A_study > 1 / n).sum(-1).mean(),
        })
study = pd.DataFrame(rows)
study.round(2)

# %% [markdown]
# Without the scaling, the largest weight in a row is close to one and only about one weight per
# row clears the $1/n$ threshold: each token copies a single other token, and since the softmax's
# gradient $\partial A_{ij} / \partial s_{il} = A_{ij}(\delta_{jl} - A_{il})$ vanishes when one
# $A_{ij}$ is near one, the projections barely learn. With the scaling, the same logits keep
# several weights per row above uniform. The PCam seed's `SelfAttention` scales; the ovarian
# seed's block does not.

# %%
unscaled = study[study["scaling"] == "none (the seed)"]
scaled = study[study["scaling"] == "1/sqrt(d)"]
assert (unscaled["logit std"].to_numpy() > 0.8 * np.sqrt(unscaled["width d"].to_numpy())).all()
assert (unscaled["largest weight per row"].to_numpy() > scaled["largest weight per row"].to_numpy()).all()
print(study.groupby("scaling", sort=False)["weights above 1/n per row"].mean().round(0))

# %% [markdown]
# ## 5. Differential attention (Ye et al. 2024)
#
# The Differential Transformer computes *two* softmax maps per head and subtracts one from the
# other, so that attention both maps give to irrelevant tokens (common-mode noise) cancels. With
# $h$ head pairs of width $d$, pair $i$ uses query and key heads $2i$ and $2i+1$:
#
# $$
# A_i = \operatorname{softmax}\!\left(\frac{Q_{2i} K_{2i}^\top}{\sqrt{d}}\right)
#       - \lambda\, \operatorname{softmax}\!\left(\frac{Q_{2i+1} K_{2i+1}^\top}{\sqrt{d}}\right),
# $$
#
# $$
# \lambda = e^{\lambda_{q_1} \cdot \lambda_{k_1}} - e^{\lambda_{q_2} \cdot \lambda_{k_2}} + \lambda_{\text{init}} .
# $$
#
# Each head's output $A_i V_i$ (values of width $2d$) goes through an RMSNorm and is multiplied by
# $1 - \lambda_{\text{init}}$, and an output projection maps the concatenated heads back to $c$
# channels. The learnable vectors $\lambda_{q_1}, \dots$ start near zero, so $\lambda$ starts near
# $\lambda_{\text{init}} = 0.8 - 0.6\, e^{-0.3\, \ell}$, which grows with the layer's depth $\ell$
# (counted from 0):

# %%
pd.DataFrame({"depth": range(6), "lambda_init": [round(lambda_init_for_depth(l), 4) for l in range(6)]})

# %% [markdown]
# Since each softmax row sums to one, each row of $A_i$ sums to $1 - \lambda$, and unlike the other
# two maps, $A_i$ has negative entries. Both facts, on two head pairs over 49 tokens:

# %%
differential = DifferentialAttention(num_heads=2, head_dim=8, depth=0)
out, A_diff = differential(batch, return_attention_scores=True)
A_diff = ops.convert_to_numpy(A_diff)
lam = float(ops.convert_to_numpy(differential.lam()))
print("output", tuple(out.shape), " maps", A_diff.shape, " (batch, head pairs, n, n)")
assert np.allclose(A_diff.sum(-1), 1 - lam, atol=1e-5)

# %% tags=["nbval-ignore-output"]
print(f"lambda = {lam:.4f} (lambda_init = {differential.lambda_init:.4f}); row sums = 1 - lambda = {1 - lam:.4f}")
print(f"share of negative entries: {(A_diff < 0).mean():.1%}")

# %% [markdown]
# ## 6. The three maps side by side
#
# A synthetic 7 x 7 feature map with 256 channels holds a "lesion": a block of positions that share
# one feature vector, on a background that shares another, plus noise. For the query at the lesion's
# centre, each panel shows its row of the map, laid back on the grid. The layers are random (untrained)
# and the input is synthetic: the pictures show how each block distributes its weights, not what a
# trained model would attend to. Weights that cannot be negative get a sequential scale from zero
# (white) to the row's largest weight; the signed differential map gets a diverging one, blue below
# zero and red above, so white means zero in every panel.

# %%
lesion = np.zeros((7, 7), bool)
lesion[2:5, 3:6] = True
signal = np.where(lesion[..., None], rng.standard_normal(256), rng.standard_normal(256))
grid = (signal + 0.5 * rng.standard_normal((7, 7, 256))).astype("float32")[None]  # (1, 7, 7, 256)
query = 3 * 7 + 4  # the lesion's centre, position (3, 4)

maps = {
    "self-attention (k=128, scaled)": SelfAttention(key_dim=128)(grid, return_attention_scores=True)[1][0],
    "thresholded (k=256, unscaled)": ThresholdedAttention(key_dim=256)(grid, return_attention_scores=True)[1][0],
    "differential (pair 0)": DifferentialAttention(num_heads=1)(grid, return_attention_scores=True)[1][0, 0],
}
fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
axes[0].imshow(lesion, cmap="Greys")
axes[0].set_title("lesion positions")
axes[0].plot(4, 3, "r+", ms=12, mew=2)
for ax, (title, row) in zip(axes[1:], maps.items()):
    row = ops.convert_to_numpy(row)[query].reshape(7, 7)
    limit = np.abs(row).max()
    signed = row.min() < 0  # only the differential map has negative weights
    image = ax.imshow(row, cmap="RdBu_r" if signed else "Reds", vmin=-limit if signed else 0, vmax=limit)
    ax.set_title(title, fontsize=9)
    ax.plot(4, 3, "k+", ms=12, mew=2)
    ax.add_patch(plt.Rectangle((2.5, 1.5), 3, 3, fill=False, ec="k", lw=1))  # the lesion
    fig.colorbar(image, ax=ax, fraction=0.046)
for ax in axes:
    ax.set_xticks([]), ax.set_yticks([])
fig.suptitle("one query's attention over the 7 x 7 grid (random layers, synthetic input)")
plt.tight_layout()
plt.show()

# %% [markdown]
# Because the projections are random, *which* positions a query prefers is arbitrary here; what
# the panels show is *how* each block spreads its weight. The scaled self-attention spreads it over
# many positions. The unscaled thresholded block keeps one or two positions and zeroes the rest, as
# section 4 predicts. The differential map is signed, the difference of two softmax maps, with rows
# summing to $1 - \lambda$. The lesion's positions share one feature vector, so each block gives
# them similar logits (the outlined block). Chapter 8 draws the same maps from trained models.

# %% [markdown]
# ## Summary
#
# - A feature map $(b, h, w, c)$ becomes $n = h w$ tokens; all three blocks work on tokens.
# - Self-attention is a scaled softmax of query-key products; each row sums to one.
# - The ovarian seed's "differential attention" is an unscaled softmax thresholded at its mean,
#   and that mean is always exactly $1/n$: the rule keeps the above-uniform weights of each row.
# - Without $1/\sqrt{d}$, logits at the seed's widths have a spread of 32 to 45 and the map is
#   nearly one-hot.
# - Real differential attention subtracts two scaled softmax maps per head pair, with a learnt
#   $\lambda$ starting at $\lambda_{\text{init}}$; its rows sum to $1 - \lambda$ and it has negative
#   weights.
#
# ## Exercises
#
# 1. Show that a row of $\tilde A$ (the thresholded map) sums either to zero or to more than $1/n$,
#    and never to more than one.
# 2. With unit-variance queries and keys of width $d = 2048$, by what factor is the logit spread
#    of the unscaled block larger than the scaled one?
# 3. Build `DifferentialAttention(num_heads=4)` on a 7 x 7 x 2048 map. What head width $d$ does it
#    choose, and how many maps does `return_attention_scores=True` return per image?
#
# ````{dropdown} Solutions
# 1. Each row of $A$ sums to one over $n$ entries, so its largest entry is at least $1/n$; if all
#    entries equal $1/n$, none is *above* $1/n$ and the row sums to zero, otherwise the largest
#    entry exceeds $1/n$ and is kept. So a row sums to zero (uniform row) or to more than $1/n$,
#    and never to more than one since only non-negative terms are dropped.
# 2. $\sqrt{2048} \approx 45$.
# 3. $d = c / h / 2 = 2048 / 4 / 2 = 256$, and 4 maps of $49 \times 49$ per image:
#
#    ```python
#    layer = DifferentialAttention(num_heads=4)
#    out, A = layer(np.zeros((1, 7, 7, 2048), "float32"), return_attention_scores=True)
#    A.shape  # (1, 4, 49, 49)
#    ```
# ````
#
# ## Resources
#
# - Vaswani et al. (2017), *Attention is all you need*: <https://arxiv.org/abs/1706.03762>
# - Ye et al. (2024), *Differential Transformer*: <https://arxiv.org/abs/2410.05258>, and its
#   official code: <https://github.com/microsoft/unilm/tree/master/Diff-Transformer>
# - Keras, `MultiHeadAttention`: <https://keras.io/api/layers/attention_layers/multi_head_attention/>
#
# ## What's next
#
# {doc}`05_training_pcam` puts the self-attention block into the PCam seed's CNN and trains it:
# callbacks, resuming, distribution strategies and a Colab TPU section.
