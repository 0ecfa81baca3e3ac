# %% [markdown]
# # Training the PCam seed model
#
# [Open in Colab]({{ colab_url }})
#
# ## Overview
#
# The PCam seed trained its 494,337-parameter CNN with self-attention on a TPU, with Adam and
# three Keras callbacks. This chapter trains the same model with `histolib.train.fit`, which adds
# what a run of several hours needs: a log, a resumable state, a record of what was run, and a
# decision threshold chosen on validation data.
#
# 1. Data and model
#    - Why the quick profile centres the model's inputs
# 2. Distribution strategies: what `get_strategy` picks, and why
# 3. Training with the seed's callbacks
# 4. What a run leaves behind
# 5. Resuming an interrupted run
# 6. Training curves
# 7. The threshold chosen on validation data
# 8. Colab TPU: Keras on JAX, with the augmentation inside the model
#
# ## Prerequisites
#
# | Concepts | Importance | Notes |
# | --- | --- | --- |
# | {doc}`01_data` and {doc}`02_preprocessing` | Necessary | `load`, splits, augmentation |
# | {doc}`04_attention` | Helpful | The self-attention block inside the model |
# | Keras `fit` and callbacks | Helpful | EarlyStopping, ModelCheckpoint, ReduceLROnPlateau |
#
# - **Time to learn**: 40 minutes
# - **System requirements**: any CPU; about two minutes in the quick profile. The full profile
#   wants a GPU or TPU (or an hour of CPU for a tenth of PCam).

# %% [markdown]
# ## Setup
#
# On Colab this cell installs `histolib` (TensorFlow is already there); elsewhere it does nothing.
# Section 8 has its own install cell for Colab's TPU runtimes.

# %%
import sys

if "google.colab" in sys.modules:
    !pip install -q "histolib @ git+{{ repository_url }}"

# %% [markdown]
# ## Imports

# %%
%matplotlib inline
import dataclasses
import functools
import json
import os
import tempfile
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from histolib import cards, data, evaluate, models, plots, strategy, train
from histolib.config import TrainConfig
from histolib.runs import read_history
from histolib.models import SEED_PCAM_PARAMS, build_seed_pcam_model

# %% [markdown]
# ## Hyperparameters
#
# ```{warning}
# The quick profile trains on 1,024 **synthetic** patches, downsized to 32 x 32 pixels, for six
# epochs, with the model's inputs centred (section 1 says why): enough to watch every part of
# `fit` work and the model learn the synthetic rule. Its numbers say nothing about PatchCamelyon.
# The full profile is the real thing, with the seed's model exactly as published.
# ```

# %%
PROFILE = os.environ.get("HISTOLIB_PROFILE", "quick")  # "full": real PCam, 20 epochs
SEED = 0
if PROFILE == "quick":
    DATA = "synthetic-pcam:1024"  # 1,024 train, 128 valid, 128 test synthetic patches
    IMAGE_SIZE = 32               # full: 96, PCam's size
    EPOCHS = 6                    # full: 20 (EarlyStopping usually ends it sooner)
    FIRST_EPOCHS = 3              # the "interrupted" run of section 5
    BATCH_SIZE = 16               # full: 64
    CENTRE_INPUTS = True          # full: False, the seed as published (section 1)
else:
    DATA = os.environ.get("HISTOLIB_PCAM", "folder:../../shared/data/pcam-jpeg")  # or tfds:patch_camelyon, pcam-h5:DIR
    IMAGE_SIZE, EPOCHS, FIRST_EPOCHS, BATCH_SIZE, CENTRE_INPUTS = 96, 20, 2, 64, False
LEARNING_RATE = 1e-3  # the seed's Adam learning rate
PATIENCE = 3          # the seed's EarlyStopping patience
AUGMENT = "pcam-seed" # the seed's flips, brightness +-0.1, contrast 0.8-1.2
OUT = Path(tempfile.mkdtemp(prefix="histolib-pcam-")) if PROFILE == "quick" else Path("runs/pcam-seed")
keras.utils.set_random_seed(SEED)
print(f"profile {PROFILE!r}: {DATA} at {IMAGE_SIZE} px, {EPOCHS} epochs, batch {BATCH_SIZE}, "
      f"centred inputs: {CENTRE_INPUTS}")

# %% [markdown]
# ## 1. Data and model
#
# The training split is shuffled every epoch and augmented with the seed's set; the validation
# split is neither. The seed cut its validation set out of PCam's training split (85/15) and never
# used PCam's own validation split; here every source has its own `valid` split.

# %%
for split in ("train", "valid"):
    print(split, data.info(DATA, split))
train_ds = data.load(DATA, "train", batch_size=BATCH_SIZE, image_size=IMAGE_SIZE, shuffle=True,
                     augment=AUGMENT, seed=SEED)
val_ds = data.load(DATA, "valid", batch_size=64, image_size=IMAGE_SIZE, seed=SEED)
print("batches:", train_ds.element_spec)

# %% [markdown]
# The model: three convolution blocks, the feature map as tokens, single-head self-attention,
# pooling and a small head, with L2 $10^{-4}$ on every kernel; one sigmoid output, the
# probability of tumour. Its parameter count is the published one, at any input size (the 32-pixel
# map is 4 x 4 = 16 tokens instead of 12 x 12 = 144), and with or without centred inputs (a
# `Rescaling` layer has no parameters):

# %%
# the model every run of this chapter trains: a callable, so `fit` can build it in a strategy's scope
build_model = functools.partial(build_seed_pcam_model, (IMAGE_SIZE, IMAGE_SIZE, 3), centre_inputs=CENTRE_INPUTS)
model = build_model()
print(f"{model.count_params():,} parameters; published: {SEED_PCAM_PARAMS:,}")
print("tokens:", model.get_layer("tokens").output.shape)

# %% [markdown]
# ### Why the quick profile centres the inputs
#
# The seed fed its model pixels scaled to [0, 1] and nothing else: no normalisation layer
# anywhere, Keras's default (Glorot) initial weights, which are scaled for inputs centred on
# zero. Fed [0, 1] pixels, each layer's output is mostly an offset shared by every image, with a
# small image-to-image difference on top, and the difference shrinks layer by layer. The
# synthetic patches are pale and alike in overall colour, which makes it worse. The table
# follows one batch of 64 validation patches through the untrained model, as published and with
# `centre_inputs=True` (a `Rescaling(2, -1)` layer mapping [0, 1] to [-1, 1]). For each layer:
# the *spread* (how much its output differs between images: the standard deviation over the
# batch, averaged over units) and the *offset* (the size of the part all images share: the
# absolute mean over the batch, averaged over units).

# %% tags=["nbval-ignore-output"]
images, _ = next(iter(data.load(DATA, "valid", batch_size=64, image_size=IMAGE_SIZE)))
spread = {}
for centred in (False, True):
    keras.utils.set_random_seed(SEED)
    untrained = build_seed_pcam_model((IMAGE_SIZE, IMAGE_SIZE, 3), centre_inputs=centred)
    names = ["conv1", "conv2", "conv3", "attention", "fc", "prob"]
    probe = keras.Model(untrained.input, [untrained.get_layer(n).output for n in names])
    outputs = [np.asarray(o) for o in probe(images, training=False)]
    label = "centred" if centred else "as published"
    spread[(label, "spread")] = {n: np.std(o, axis=0).mean() for n, o in zip(names, outputs)}
    spread[(label, "offset")] = {n: np.abs(o.mean(axis=0)).mean() for n, o in zip(names, outputs)}
pd.DataFrame(spread).map("{:.2g}".format)

# %% [markdown]
# Centring roughly triples the spread at every layer, while the offsets stay about the same. At
# the output, the 64 probabilities differ by about 0.001 as published. That spread is what the
# gradients that could separate tumour from normal are made of; the offset only moves every
# prediction together. Three epochs of plain Keras `fit` (the seed's optimizer, learning rate,
# L2 penalty and augmentation) on each model show what follows:

# %% tags=["nbval-ignore-output"]
stall = {}
for centred in (False, True):
    keras.utils.set_random_seed(SEED)
    trial = build_seed_pcam_model((IMAGE_SIZE, IMAGE_SIZE, 3), centre_inputs=centred)
    trial.compile(keras.optimizers.Adam(LEARNING_RATE), "binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])
    logs = trial.fit(train_ds, validation_data=val_ds, epochs=3, shuffle=False, verbose=0).history
    probs = trial.predict(val_ds, verbose=0)
    stall["centred" if centred else "as published"] = {
        **{f"val AUC, epoch {e + 1}": auc for e, auc in enumerate(logs["val_auc"])},
        "spread of val probabilities": float(np.std(probs))}
pd.DataFrame(stall).round(4)

# %% [markdown]
# The model as published stays at or near one constant prediction: its validation probabilities
# differ by about 10^-4, and a validation AUC of exactly 0.5 means they all fell into one of the
# 200 bins Keras's AUC uses. The centred one learns from its first epoch. We measured this, and a
# threefold larger spread goes with it; we have not taken the optimisation apart further. Given
# hundreds more steps the published model does leave this plateau (it did on real
# PatchCamelyon, whose patches vary far more in colour and contrast; chapter 9, and on 4,096
# synthetic patches at 48 pixels within two epochs), but when it does varies from run to run,
# and a two-minute profile cannot wait for it. The quick profile
# therefore trains the centred model; the full profile keeps the seed's exactly. Centring is the
# same correction `build_classifier` makes for the ImageNet backbones (chapter 3): every model
# should see its inputs at the scale its weights expect.

# %% [markdown]
# ## 2. Distribution strategies
#
# `histolib.strategy.get_strategy()` looks for a TPU first (only where there is a sign of one:
# `TPU_NAME`, `COLAB_TPU_ADDR`, `TPU_ACCELERATOR_TYPE`, or a TPU VM's `/dev/accel*` devices),
# then for several workers in `TF_CONFIG` (MultiWorkerMirroredStrategy), then for two or more GPUs
# (MirroredStrategy), and otherwise keeps TensorFlow's default one-device strategy.
# `choose_strategy()` gives the same choice with its reason; `HISTOLIB_STRATEGY=tpu|mirrored|
# multiworker|default` overrides it. Under Keras on JAX (section 8) the choices are
# `data-parallel` and `default`. On this machine:

# %%
choice = strategy.choose_strategy()
print("kind:    ", choice.kind)
print("replicas:", choice.replicas, choice.devices)
print("because: ", choice.reason)

# %% [markdown]
# Under a strategy, the batch a dataset yields is the *global* batch, split over the replicas:
# `global_batch_size(per_replica)` scales it. TPUs (and XLA) also want every batch the same shape;
# `make_tpu_safe` rebatches with `drop_remainder` and fixes the shapes. `fit` takes the strategy
# (by default it calls `get_strategy()` itself) and builds the model inside its scope when given
# a function that builds it:

# %%
print("global batch for", BATCH_SIZE, "per replica:", strategy.global_batch_size(BATCH_SIZE, choice.strategy))
n_train = sum(data.info(DATA, "train")["counts"])
safe = strategy.make_tpu_safe(train_ds, BATCH_SIZE, num_examples=n_train)
print("TPU-safe batches:", safe.element_spec[0].shape, f"{int(safe.cardinality())} steps (remainder dropped)")

# %% [markdown]
# ## 3. Training with the seed's callbacks
#
# `fit` compiles the model with Adam and binary cross-entropy, and trains it with the seed's
# callbacks, all watching the validation loss:
#
# - `EarlyStopping(patience=3, restore_best_weights=True)`: stop after three epochs without
#   improvement and keep the best epoch's weights;
# - `ModelCheckpoint(save_best_only=True)`: the best epoch's model on disk, as `best.keras`;
# - `ReduceLROnPlateau(factor=0.3)`: multiply the learning rate by 0.3 after
#   `patience - 1` epochs without improvement, so it drops once before training stops;
# - `CSVLogger`: one row per epoch in `history.csv`.
#
# `TrainConfig(schedule="cosine", warmup_epochs=...)` (the command's `--schedule cosine`) replaces
# ReduceLROnPlateau with a fixed warm-up and cosine decay to 0 at the last epoch; it is one part of
# the better PCam recipe that {doc}`09_reproduction_report` (section 6) compares with this one over
# seeds, beside a fine-tuned ImageNet MobileNet (`--fine-tune --backbone-size 128`).
#
# To show an interrupted run, we first train for only `FIRST_EPOCHS` epochs, as if the run had
# been killed there:

# %% tags=["nbval-ignore-output"]
settings = TrainConfig(epochs=EPOCHS, learning_rate=LEARNING_RATE, patience=PATIENCE, seed=SEED, verbose=2)
first = train.fit(build_model, train_ds, val_ds, dataclasses.replace(settings, epochs=FIRST_EPOCHS), out_dir=OUT,
                  strategy=choice.strategy)
print(f"epochs done: {first.epochs_done}, best epoch: {first.best_epoch}")

# %% [markdown]
# ## 4. What a run leaves behind
#
# Everything lands in one folder: the best model, the log, the threshold, a run record, and the
# state a resumed run needs.

# %% tags=["nbval-ignore-output"]
print("\n".join(sorted(str(p.relative_to(OUT)) for p in OUT.rglob("*") if p.is_file())))

# %% [markdown]
# `run.json` records what was run, for how long, with which package versions, on which commit
# and machine; the book's recorded runs (`book/results/`) are such files.

# %% tags=["nbval-ignore-output"]
record = json.loads((OUT / "run.json").read_text())
{key: record[key] for key in ("status", "epochs_done", "best_epoch", "wall_s", "seed")} | {
    "packages": {k: record["environment"]["packages"][k] for k in ("tensorflow", "keras")}}

# %% [markdown]
# ## 5. Resuming an interrupted run
#
# Keras's `BackupAndRestore` brings back the weights, the optimizer and the epoch after a crash,
# but not the callbacks' own state: EarlyStopping's best score and patience counter,
# ModelCheckpoint's best score, and ReduceLROnPlateau's, which decide what happens next. `fit`
# commits all of it after every epoch to `backup/state.json`, together with the last epoch's
# model:

# %% tags=["nbval-ignore-output"]
state = json.loads((OUT / "backup" / "state.json").read_text())
{key: state[key] for key in ("epochs_done", "latest_file", "best_file", "learning_rate_now",
                             "early_stopping", "model_checkpoint", "reduce_lr")}

# %% [markdown]
# Running the same call again, now asking for `EPOCHS` epochs in all, continues after the last
# committed epoch with everything restored. A run killed with `SIGKILL` in the middle of an epoch
# resumes the same way (the package's tests do exactly that), losing only the unfinished epoch:

# %% tags=["nbval-ignore-output"]
result = train.fit(build_model, train_ds, val_ds, settings, out_dir=OUT, strategy=choice.strategy)
print(f"resumed from epoch {result.resumed_from}; epochs done: {result.epochs_done}, "
      f"best epoch: {result.best_epoch}, stopped early: {result.stopped_early}")

# %% [markdown]
# The log holds each epoch once, and the run record lists both sessions:

# %%
history = pd.DataFrame(read_history(OUT))
print("epochs logged:", history["epoch"].tolist())
print("sessions:", [(s["from_epoch"], s["to_epoch"]) for s in json.loads((OUT / "run.json").read_text())["sessions"]])

# %% [markdown]
# A finished run is not trained again: the same call says so and returns the stored result.
# Resuming with other settings (learning rate, patience, seed, ...) is refused, since the result
# would be neither run.

# %% tags=["nbval-ignore-output"]
again = train.fit(build_model, train_ds, val_ds, settings, out_dir=OUT, strategy=choice.strategy)
print("already finished:", again.already_finished)
try:
    train.fit(build_model, train_ds, val_ds, dataclasses.replace(settings, learning_rate=1e-4), out_dir=OUT,
              strategy=choice.strategy)
except ValueError as error:
    print("ValueError:", str(error).replace(str(OUT), "OUT"))

# %% [markdown]
# ## 6. Training curves
#
# `histolib.plots.training_curves` reads `history.csv` and draws loss, accuracy, AUC and the
# learning rate per epoch, with the best epoch dashed:

# %% tags=["nbval-ignore-output"]
figure = plots.training_curves(OUT, best_epoch=result.best_epoch)
figure.suptitle(f"seed model on {DATA} ({'synthetic, centred inputs, ' if PROFILE == 'quick' else ''}{IMAGE_SIZE} px)")
figure

# %% [markdown]
# Six epochs on 1,024 small synthetic patches: the training loss falls steadily (part of it is the
# L2 penalty shrinking), and the validation AUC climbs well above chance. What to look for in a
# longer run: the validation loss flattening while the training loss keeps falling (the point
# EarlyStopping acts on), and the learning rate multiplied by 0.3 a step before, once the
# validation loss has not improved for `lr_patience` epochs. Whether that happened in this run
# is in the `learning_rate` column of `history.csv`:

# %% tags=["nbval-ignore-output"]
rates = pd.DataFrame(read_history(OUT))["learning_rate"]
drops = int((rates.diff() < 0).sum())
print(f"learning rate {rates.iloc[0]:.0e} at the first epoch, {rates.iloc[-1]:.1e} at the last: "
      + (f"{drops} drop(s) by 0.3" if drops else "no drop (the validation loss never stalled long enough)"))

# %% [markdown]
# The seed's own run peaked at 92.6 % validation accuracy at epoch 9 and scored 83.1 % on the test
# split: its validation split came from PCam's training slides, so it was easier than the test split.

# %% [markdown]
# ## 7. The threshold chosen on validation data
#
# A sigmoid model calls a patch tumour when its probability is above a threshold (a probability
# equal to it is called normal). 0.5 is a convention, not a property of the model: the seed's
# published precision of 93.8 % against a
# recall of 70.9 % shows a model whose best cut lay lower. `fit` chooses the threshold on the
# **validation** data, with the best weights, by Youden's J (the ROC point that maximises
# TPR - FPR, the same as maximising balanced accuracy), and stores it beside the model. It is
# never chosen on test data; `cards.read_threshold` reads it back (0.5 when there is none).

# %% tags=["nbval-ignore-output"]
print(json.dumps(result.threshold, indent=1))
threshold = cards.read_threshold(OUT / "best.keras")
print("read back:", threshold)

# %% [markdown]
# On the validation data the chosen threshold cannot do worse than 0.5 on balanced accuracy: it
# was chosen to maximise it there; how much it gains depends on how far the model's best cut
# lies from 0.5. Chapter 7 scores the test split with it, with intervals.

# %% tags=["nbval-ignore-output"]
y_val, p_val = evaluate.predict(result.model, val_ds)
pd.DataFrame({
    f"threshold {t:.3f}": {k: evaluate.classification_metrics(y_val, p_val, threshold=t)[k]
                           for k in ("accuracy", "balanced_accuracy", "precision", "recall")}
    for t in (0.5, threshold)}).round(3)

# %% [markdown]
# ## 8. Colab TPU: Keras on JAX
#
# Colab's TPU runtimes no longer ship TensorFlow: their image carries JAX and Keras 3, TPU v2-8
# was retired for v5e-1, and no `tensorflow-tpu` build matches the image. The route that works
# there is **Keras 3 on JAX** (`KERAS_BACKEND=jax`), with TensorFlow for the CPU installed only
# because `histolib.data` streams with `tf.data`. Everything of this chapter carries over:
#
# - the builders and layers are written with `keras.ops`, and `histolib.train.fit` (resumable
#   state, threshold, run record) runs under JAX as it does here;
# - `choose_strategy("data-parallel")` wraps `keras.distribution.DataParallel` over all of
#   JAX's devices: every global batch is split over the TPU cores and the variables are
#   replicated (`fit` keeps the distribution current while it trains, so each step is sharded);
# - `run.json` records the backend, the devices and the replicas.
#
# **Augmentation where the accelerator is.** Augmenting in `tf.data` keeps the host busy: on a
# CPU without AVX-512 the augmented PCam stream ran at a quarter of the plain one's images/s,
# and a TPU fed by a few host cores would wait on it. `histolib.models.with_augmentation` puts
# the augmentation set inside the model instead, as a layer right after its input that works
# only in training steps; the host then only decodes. The same layer is the identity at
# inference, so the saved model predicts as if it were not there. On this CPU, with the
# model of section 1:

# %%
plain = build_model()
augmented = models.with_augmentation(plain, AUGMENT, seed=SEED)
print("first layers:", [layer.name for layer in augmented.layers[:4]])
print("predictions unchanged:", np.array_equal(keras.ops.convert_to_numpy(plain(images, training=False)),
                                               keras.ops.convert_to_numpy(augmented(images, training=False))))
moved = keras.ops.convert_to_numpy(augmented.get_layer("augment")(images, training=True))
print(f"a training step sees other images: mean |change| {np.abs(moved - images.numpy()).mean():.3f}")

# %% [markdown]
# `histolib.experiment.train_from_spec` is what `histolib train` runs: choose the strategy and the
# precision, load the splits, build the named model (with the augmentation inside it when
# `augment_in="model"`) and `fit` it. The Colab cell below calls it; the project's tests run the
# same function through `histolib train --strategy data-parallel --augment-in model` under
# `KERAS_BACKEND=jax` on a CPU split into two devices
# (`XLA_FLAGS=--xla_force_host_platform_device_count=2`), where one epoch gives the same loss as
# one device. `bench/train_step.py` measures JAX against TensorFlow on this CPU (Appendix 2);
# on a CPU, `precision="auto"` takes float32 under JAX, whose CPU backend does not use the
# bfloat16 instructions for convolutions.
#
# On a TPU runtime: run Setup, then the install cell below, **restart the runtime**, then run
# only the training cell: Keras must learn its backend before it is first imported, and the
# Imports cell above has imported it with TensorFlow (which the TPU runtime does not have). It
# trains the seed model on PatchCamelyon from TensorFlow Datasets for 20 epochs, 128 images per
# TPU core. These cells run **only on a Colab TPU runtime** (`ON_COLAB_TPU`); anywhere else they
# do nothing and say so. They were not run to make this page.

# %%
import glob, os, sys  # noqa: E401 (this cell must run on its own on a fresh TPU runtime)

ON_COLAB_TPU = "google.colab" in sys.modules and bool(
    glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*") or os.environ.get("COLAB_TPU_ADDR"))
ROUTE = os.environ.get("HISTOLIB_TPU_ROUTE", "jax")  # "jax" (works) or "tensorflow" (see below)
if ON_COLAB_TPU and ROUTE == "jax":
    # JAX, its TPU library and Keras 3 come with the runtime; TensorFlow for the CPU feeds tf.data
    !pip install -q "tensorflow-cpu==2.21.0"
    !pip install -q "histolib @ git+{{ repository_url }}"
elif ON_COLAB_TPU and ROUTE == "tensorflow":
    !pip install -q "tensorflow-tpu==2.20.0" "keras==3.15.1" -f https://storage.googleapis.com/libtpu-tf-releases/index.html
    !pip install -q "histolib @ git+{{ repository_url }}"
print(f"Colab TPU runtime: {ON_COLAB_TPU}; route {ROUTE!r}:",
      "installed, now restart the runtime" if ON_COLAB_TPU else "nothing installed here")

# %%
if ON_COLAB_TPU and ROUTE == "jax":  # after the restart
    os.environ["KERAS_BACKEND"] = "jax"  # before Keras is first imported
    import jax
    import keras
    from histolib import experiment
    from histolib.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    assert keras.backend.backend() == "jax", "restart the runtime, then run only this cell"
    print("JAX devices:", jax.devices())
    keras.utils.set_random_seed(0)
    tpu_config = RunConfig(
        data=DataConfig(spec="tfds:patch_camelyon"), model=ModelConfig(name="seed-pcam"),
        train=TrainConfig(epochs=20, batch_size=128 * jax.device_count(), strategy="data-parallel",
                          augment="pcam-seed", augment_in="model", steps_per_execution=32))
    tpu_result = experiment.train_from_spec(tpu_config, out_dir="runs/pcam-seed-tpu")
    print(f"best epoch {tpu_result.best_epoch}; threshold {tpu_result.threshold['threshold']:.3f}")
else:
    print("skipped: this cell runs on a Colab TPU runtime with route 'jax'")

# %% [markdown]
# The run folder is the same as on a CPU: interrupted (Colab's sessions end), the same cell
# resumes it after its last finished epoch, and `best.keras` loads under either backend.
#
# **The `tensorflow-tpu` route (does not work on current Colab TPU images).** With TensorFlow's
# TPU build, `choose_strategy("tpu")` finds the TPU and returns a `TPUStrategy`, and
# `train_from_spec` with `TrainConfig(strategy="tpu")` trains as above. Colab's current TPU images carry no
# TensorFlow and the newest `tensorflow-tpu` (2.20.0) does not match them, so the install
# above fails or gives a TensorFlow that sees no TPU (`choose_strategy` then says why and falls
# back to the CPU). It remains the route on a TPU VM whose image has TensorFlow:

# %%
if ON_COLAB_TPU and ROUTE == "tensorflow":  # after the restart; see the note above
    from histolib import experiment
    from histolib.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    tf_tpu_config = RunConfig(
        data=DataConfig(spec="tfds:patch_camelyon"), model=ModelConfig(name="seed-pcam"),
        train=TrainConfig(epochs=20, batch_size=128 * 8, strategy="tpu", augment="pcam-seed",
                          steps_per_execution=32))  # 8 cores
    tf_tpu_result = experiment.train_from_spec(tf_tpu_config, out_dir="runs/pcam-seed-tf-tpu")
else:
    print("skipped: this cell runs on a Colab TPU runtime with route 'tensorflow'")

# %% [markdown]
# ## Summary
#
# - The seed's model, fed [0, 1] pixels with default initial weights, can sit at a constant
#   prediction for hundreds of steps on low-contrast patches; `centre_inputs=True` maps its
#   inputs to [-1, 1] and it learns at once (same parameters).
# - `histolib.train.fit(model, train_ds, val_ds, TrainConfig(epochs=...), out_dir=...)` trains with the seed's
#   callbacks (EarlyStopping with the best weights restored, ModelCheckpoint, ReduceLROnPlateau by
#   0.3) and a CSV log, into one folder with a run record.
# - The same call resumes an interrupted run after its last finished epoch, with the weights,
#   optimizer, learning rate and the callbacks' own state; a finished run is not trained again.
# - `histolib.strategy.choose_strategy()` picks a TPU, several workers, several GPUs or one device,
#   and says why; `make_tpu_safe` gives TPUs static batches.
# - The decision threshold is chosen on validation data by Youden's J and stored beside the model.
# - On a Colab TPU, Keras 3 on JAX: `train_from_spec` with `TrainConfig(strategy="data-parallel",
#   augment_in="model")`, the path `histolib train` takes, with the batch split over the TPU
#   cores by `keras.distribution.DataParallel` and the augmentation inside the training step;
#   TensorFlow's TPU build no longer matches Colab's TPU images.
#
# ## Exercises
#
# 1. Set `PATIENCE = 1` and train for 10 epochs. When does the learning rate drop, and when does
#    training stop?
# 2. Run the cell of section 5 with `epochs=EPOCHS + 2`. What does `fit` do, and why is that
#    allowed here but a changed learning rate is not?
# 3. With `HISTOLIB_STRATEGY=mirrored`, what does `choose_strategy()` return on this CPU, and how
#    many replicas does it have?
#
# ````{dropdown} Solutions
# 1. With `patience=1`, `lr_patience` is `max(1, patience - 1) = 1`: the learning rate drops by
#    0.3 after the first epoch without improvement, and EarlyStopping stops at the same epoch
#    (both wait one epoch). Look at the `learning_rate` column of `history.csv`.
# 2. It resumes after epoch `EPOCHS` and trains two more, unless EarlyStopping had already ended
#    the run (then it says the run is finished). The number of epochs is a target, not part of
#    the computation so far; the learning rate, patience and seed are, so changing them is
#    refused.
# 3. A `MirroredStrategy` over the logical CPU devices: one replica here, two after
#    `tf.config.set_logical_device_configuration` has split the CPU (which must happen before
#    TensorFlow touches its devices, so in a fresh process).
#
#    ```python
#    choice = strategy.choose_strategy("mirrored")
#    choice.kind, choice.strategy.num_replicas_in_sync, choice.reason
#    ```
# ````
#
# ## Resources
#
# - Keras callbacks: <https://keras.io/api/callbacks/>
# - TensorFlow, distributed training: <https://www.tensorflow.org/guide/distributed_training>
# - Keras, distributed training with JAX: <https://keras.io/guides/distribution/>
# - Cloud TPU, TensorFlow on TPU VMs: <https://cloud.google.com/tpu/docs/run-calculation-tensorflow>
#
# ## What's next
#
# {doc}`06_ovarian_subtypes` trains the ovarian seed's models on the three backbones, and
# {doc}`07_evaluation` scores a trained model with intervals and compares variants over seeds.
