# %% [markdown]
# # Appendix 2: benchmarks
#
# The same code is meant to train for hours on TPUs and GPUs and to score whole slides, so each
# step should sit near what the hardware can do. The scripts in `bench/` measure that on the
# machine they run on; `python bench/run.py` runs them all, one process each, and records
# everything in `book/results/bench.json`. This page only *reads* that record: it never reruns a
# benchmark, so the numbers are the ones measured, with the machine, commit and date the record
# names. Every rate is the median of repeated runs, with the spread (min - max) beside it.
#
# | Script | Measures |
# | --- | --- |
# | `bench/ceilings.py` | the machine's matrix-multiply ceiling in float32 and bfloat16; FLOPs per image of each model |
# | `bench/train_step.py` | training images/s of the PCam seed model, path by path, as a fraction of the ceiling |
# | `bench/inference.py` | inference images/s of every model, both dtypes; why depthwise layers sit far below the ceiling, and what helps |
# | `bench/pipeline.py` | the input pipeline alone: the full-size PCam `.h5` stream and the JPEG folders |
# | `bench/slide.py` | a tumour heatmap over the whole real slide region, tissue mask included |
# | `bench/scale.py` | on paper: a full PCam epoch on a Colab TPU v2-8 and on GPUs, and whether the pipeline keeps up |

# %%
import json
from pathlib import Path

import pandas as pd

RESULTS = Path("results")
bench = json.loads((RESULTS / "bench.json").read_text())
env = bench["environment"]
pd.Series({
    "date": env["date"],
    "processor": f"{env['machine']['cpu']}, {env['machine']['logical_cpus']} cores, "
                 + " ".join(env["machine"]["cpu_flags"]),
    "TensorFlow / Keras": f"{env['versions'].get('tensorflow')} / {env['versions'].get('keras')}",
    "oneDNN": env["machine"]["TF_ENABLE_ONEDNN_OPTS"],
    "git commit": (env["git"]["commit"] or "")[:10] + (" (modified)" if env["git"]["modified"] else ""),
    "CPU share other processes used": env.get("others_cpu_share"),
    "contended": bench["contended"],
    "whole suite, seconds": bench["seconds"],
}, name="value").to_frame()

# %% [markdown]
# "Contended" is judged by CPU accounting, not by the load average (which counts the benchmark's
# own threads): `/proc/stat`'s busy time over the run, minus the benchmark's own CPU time, as a
# share of both cores. Above 5 % the record is marked contended and its wall-clock rates are
# lower bounds.
#
# ## The targets
#
# Issue 6's targets and issue 2's pipeline targets, each against what was measured. Where the
# record has one, the CPU-time estimate (rate per CPU-second of the benchmark process, times the
# core count) is given too; on a quiet machine it agrees with the wall clock.

# %%
targets = pd.DataFrame(bench["targets"]).set_index("target")
targets["met"] = targets["met"].map({True: "met", False: "MISSED"})
targets

# %% [markdown]
# ## 1. Ceilings
#
# The ceiling of a dtype is the fastest call of large square matrix multiplies (n = 2048 and
# 4096) through TensorFlow: what this processor's multiply-add units reach in practice. This
# processor has AVX-512 BF16, so oneDNN multiplies bfloat16 at about twice the float32 rate.
# FLOPs per image are counted from the layers (2 per multiply-add) and cross-checked against
# TensorFlow's profiler; training costs 3x the forward pass.


# %%
def rows(script):
    """The record's rows of one script as a table."""
    table = pd.DataFrame([r for r in bench["rows"] if r["what"].startswith(script + ": ")])
    table["what"] = table["what"].str.removeprefix(script + ": ")
    return table.set_index("what")[["median", "min", "max", "unit", "note"]].round(3)


rows("ceilings")

# %% [markdown]
# ## 2. Training step
#
# The PCam seed model, batch 64, 96 x 96 pixels. "Plain float32 twin" is plain `model.fit` on
# in-memory arrays in float32; "default" is the project's path (`histolib.data` pipeline,
# `mixed_bfloat16`, oneDNN). `jit_compile=True` (XLA) is far slower on this CPU: XLA's CPU backend
# does not use oneDNN. The last rows time the JPEG pipeline alone, with the `pcam-seed`
# augmentation, on all threads and on one: it delivers many times what training consumes, and
# training from it runs within a few percent of training from cached tensors.

# %%
rows("train_step")

# %% [markdown]
# ## 3. Inference
#
# Images/s of each model at its own input size, float32 and `mixed_bfloat16`, as a fraction of
# the ceiling of the dtype it computes in. Dense convolutions (the seed CNN, InceptionV3 in
# float32) run at the ceiling; a fraction a little above 1 means oneDNN's convolution beat the
# matmul that sets the ceiling.

# %%
rows("inference")

# %% [markdown]
# The depthwise-separable networks (MobileNet, and Xception's separable convolutions) sit far
# below the ceiling, and the layer rows at the bottom say why. A 3 x 3 depthwise convolution does
# 9 multiply-adds per output value, where a full 3 x 3 convolution does 9 x c_in, but moves just
# as many bytes: about 2 FLOPs per byte, so memory bandwidth, not arithmetic, sets its speed. The
# record's own explanation:

# %%
inference = bench["scripts"]["inference"]["record"]
print(inference["depthwise_explanation"])

# %% [markdown]
# Two measured consequences. First, `mixed_bfloat16` is the fastest setting for training the seed
# model and for dense convolutions, but not for MobileNet, where float32 wins unless the batch
# norms are folded: the fastest dtype is chosen per model and per device, not once. Second,
# folding batch normalisation into the convolutions (`histolib.models.fold_batch_norm`, for
# inference only) speeds every backbone up, and MobileNet in bfloat16 the most:

# %%
speed = pd.DataFrame([{"model": r["model"], "policy": r["policy"],
                       "BN folded": "yes" if r.get("batch_norm_folded") else "no",
                       "images/s": r["images_per_second"]["median"],
                       "fraction of ceiling": r["fraction_of_ceiling"]}
                      for r in inference["results"]])
speed.pivot_table(index="model", columns=["policy", "BN folded"], values="images/s").round(1)

# %% [markdown]
# ## 4. The input pipeline
#
# `histolib.data.load` on the full-size PCam training file (262,144 patches, 7.25 GB, written
# by the script in PCam's `.h5` layout) with and without the `pcam-seed` augmentation, a naive
# reader for comparison, and the real JPEG folders of `../shared/data/pcam-jpeg`. Batch 256;
# peak memory is the process's resident set.

# %%
pipeline = bench["scripts"]["pipeline"]["record"]
pd.DataFrame(pipeline["rows"]).set_index("case")

# %% [markdown]
# ## 5. A heatmap over a whole slide region
#
# The seed model (random weights: speed does not depend on them) over the real
# `CMU-1-Small-Region.svs` (2,220 x 2,967 pixels): read, Otsu tissue mask, tiles of 96 pixels at
# stride 96 (side by side) and 48 (overlapping by half), background tiles skipped.

# %%
slide = bench["scripts"]["slide"]["record"]
pd.DataFrame([{"dtype policy": r["dtype_policy"], "stride": r["stride"], "tiles": r["tiles"],
               "tiles scored": r["tiles_scored"], "seconds (median)": r["seconds_median"],
               "min - max": f"{r['seconds_min']} - {r['seconds_max']}",
               **{f"{k} s": v for k, v in r["stages_seconds"].items()}} for r in slide["results"]])

# %% [markdown]
# ## 6. Scale on paper
#
# From the counted FLOPs per image and published peak bfloat16 rates, at the utilisation the
# record assumes: the time of one epoch of full PatchCamelyon on each accelerator, the input
# rate that needs, and how many host cores of this machine's measured pipeline rate that is.

# %%
scale = bench["scripts"]["scale"]["record"]
print("assumed utilisation of peak:", scale["utilisation_assumed"], "; host cores:", scale["host_cores_assumed"])
rows("scale")

# %% [markdown]
# What the numbers say: the seed model is so small that a TPU v2-8 or a modern GPU would
# consume tens of thousands of patches per second, more than a few host cores can decode and
# augment. The record's remedy, which is what the TPU route of chapter 5 does:

# %%
print(scale["tpu_chapter_remedy"])

# %% [markdown]
# ## Where a target is missed
#
# The targets table above marks each miss. On this record, and why:
#
# - **Inference below 60 % of the ceiling without folding.** MobileNet (both dtypes) and the
#   bfloat16 InceptionV3 and Xception miss as built; with their batch norms folded every backbone
#   meets the target in both dtypes (section 3). What remains is physics: a depthwise layer on
#   its own stays at a few percent of the ceiling, memory-bound on any CPU.
# - **Training from the real JPEG pipeline within 5 % of cached tensors.** This record has 0.90;
#   an earlier quiet run of the same code had 0.97. On two cores the pipeline shares the cores
#   it feeds: decoding and augmenting costs about 0.37 CPU-seconds per 1,000 images, about 5 %
#   of what a training step costs per image, so the ratio sits at the target's edge and run-to-run
#   noise decides the verdict. With more host cores than the model needs (any GPU or TPU host)
#   the pipeline runs beside training, not instead of it.
# - **The fastest training setting is the default.** `steps_per_execution=8` beat the default by
#   9 % in this record and lost to it by 3 % in the earlier quiet run: a difference within the
#   noise, so the default stays as it is (8 steps per call would also delay the progress bar and
#   the SIGKILL-resume granularity for nothing measurable).
# - **The input pipeline on paper for the fastest accelerators.** With augmentation, or from
#   JPEGs, feeding the tiny seed model on a TPU v2-8 or a modern GPU needs more than 8 host cores
#   at this machine's per-core rate; sharded, pre-decoded data read in parallel (section 6) is the
#   answer there, and the chapter 5 TPU route reads TFDS's TFRecords.
#
# Rerun everything with `python bench/run.py` (about 10 minutes on this 2-core machine; close
# other work first: the record marks itself contended otherwise), or one script with
# `python bench/run.py --only NAME`.
