"""One training run from a data spec and a model name: what ``histolib train`` runs.

`train_from_spec` chooses the distribution strategy and precision, shapes the splits (seeded,
grouped, oversampled as asked), builds the named model and trains it with `histolib.frozen.fit_spec`
(on cached backbone features where the backbone is frozen, else `histolib.train.fit`), recording
it all in ``run.json``. The command line and chapter 5's Colab TPU cell both call it.
"""

from __future__ import annotations

from histolib import data, frozen, models, split_record
from histolib import strategy as strategies
from histolib.train import FitResult

__all__ = ["train_from_spec"]


def _spec_record(spec, info, choice, *, model_name, batch_size, augment, augment_in, image_size, precision,
                 weights, **split) -> dict:
    """``run.json``'s facts about a `train_from_spec` run: data (spec, classes, counts, how it was
    split, the file list's digest), model, batch, augmentation, size, precision and strategy."""
    record = {
        "data": {"spec": spec, "class_names": info["train"]["class_names"],
                 "train_counts": info["train"]["counts"], "valid_counts": info["valid"]["counts"], **split},
        "model": model_name, "batch_size": batch_size, "augment": augment,
        "augment_in": augment_in if augment else None, "image_size": image_size, "precision": precision,
        "weights": weights, "strategy": {"kind": choice.kind, "replicas": choice.replicas,
                                         "devices": choice.devices, "reason": choice.reason},
    }
    digest = data.folder_digest(spec)
    if digest is not None:
        record["data"]["file_list"] = digest
    return record


def _choose_strategy(name: str | None, batch_size: int):
    """`histolib.strategy.choose_strategy`'s choice for ``name``, refusing what the command cannot
    train with: multiworker, and a batch that does not split evenly over data-parallel devices."""
    choice = strategies.choose_strategy(name)  # first: it brings up a TPU, if any
    if choice.kind == "multiworker":
        raise ValueError("strategy multiworker is not supported here: Keras 3's model.fit fails under Multi"
                         "WorkerMirroredStrategy (keras-team/keras#20585); use histolib.strategy.fit_replicated")
    if choice.kind == "data-parallel" and batch_size % choice.replicas:
        raise ValueError(f"the batch is split evenly over {choice.replicas} devices, so it must be a multiple "
                         f"of {choice.replicas}. Received: batch_size={batch_size}")
    return choice


def _check_model_options(model_name: str, model_options: dict | None) -> dict:
    """``model_options`` as a new dict, when the builder of ``model_name`` takes every one of them."""
    model_options = dict(model_options or {})
    unknown = sorted(set(model_options) - set(models.model_options(model_name)))
    if unknown:
        raise ValueError(f"model {model_name!r} takes no option {unknown} (--fine-tune is freeze, --backbone-size "
                         f"backbone_size; classifier models take them). Received: model_options={model_options}")
    return model_options


def _builder(model_name: str, *, num_classes: int, image_size, weights, precision: str, model_options: dict,
             augment: str | None, seed: int):
    """A zero-argument function building the named model (`histolib.models.build_model`) for
    ``num_classes`` classes and ``image_size`` square images (``None``: any size), with
    ``augment`` as a layer after its input when given (`histolib.models.with_augmentation`)."""

    def build():
        model = models.build_model(
            model_name, num_classes=num_classes,
            input_shape=None if image_size is None else (image_size, image_size, 3),
            weights=None if weights in (None, "none") else weights, dtype_policy=precision, **model_options)
        return models.with_augmentation(model, augment, seed=seed) if augment else model

    return build


def train_from_spec(spec: str, model_name: str, *, out_dir, epochs: int, batch_size: int = 64,
                    image_size: int | None = None, augment: str | None = None, augment_in: str = "data",
                    seed: int = 0, split_seed: int | None = None, groups=None, oversample: str | None = None,
                    features: str = "auto", views: int = 8, weights="auto", precision: str = "auto",
                    strategy: str | None = None, class_weight: str | None = None, command: str | None = None,
                    model_options: dict | None = None, **fit_options) -> FitResult:
    """What ``histolib train`` does: choose the strategy and precision, check every file of a folder
    source, shape the splits, build a named model and train it (`histolib.frozen.fit_spec`: on
    cached backbone features where the backbone is frozen, else `fit`), recording it all in
    ``run.json``.

    Chapter 5's Colab TPU cell calls this, and the command line calls it, so both take the same
    path (the JAX route included: ``KERAS_BACKEND=jax`` with ``strategy="data-parallel"``). It
    seeds nothing: call ``keras.utils.set_random_seed(seed)`` first, as the command does.

    Args:
        spec: a data spec of `histolib.data.load` (its ``train`` and ``valid`` splits are used).
        model_name: a name of `histolib.models.list_models`.
        out_dir, epochs: as in `histolib.train.fit`.
        batch_size: the global batch; under a strategy it is split over the replicas (under
            ``"data-parallel"`` it must be a multiple of the devices).
        image_size: resize images to ``image_size`` square; ``None`` keeps the data's size.
        augment: an augmentation set of `histolib.layers.augmentation`, or ``None``.
        augment_in: ``"data"`` (the ``tf.data`` pipeline on the host) or ``"model"`` (a
            `histolib.layers.TrainingAugmentation` layer after the model's input, run in
            the training step on the accelerator; the host only decodes).
        seed: the shuffle and augmentation seed, recorded by `fit`.
        split_seed: the seed of the 80/10/10 split of a source without split folders (default
            ``seed``).
        groups: keep groups on one side of that split: ``"near-duplicates"``, a CSV of file,group
            or ``None`` (`histolib.split_record.group_by`).
        oversample: ``None``, ``"after"`` or ``"before"`` (`histolib.data.load`).
        features, views: `histolib.frozen.fit_spec`'s (``"auto"``: a frozen backbone runs once per
            image and view; ``"off"``: the whole model every step).
        weights: ``"auto"``, ``"imagenet"``, ``None`` / ``"none"`` or a file (`histolib.models.build_model`).
        precision: a name of `histolib.strategy.PRECISIONS`.
        strategy: a name of `histolib.strategy.CHOICES`; ``None`` reads ``$HISTOLIB_STRATEGY``.
        class_weight: ``None`` or ``"balanced"`` (inverse class frequency of the train split).
        command: the command line for ``run.json``.
        model_options: more keywords of the model's builder (`histolib.models.model_options`), e.g.
            ``{"freeze": False, "backbone_size": 128}`` (the command's ``--fine-tune
            --backbone-size 128``); recorded in ``run.json``.
        **fit_options: more keywords of `histolib.train.fit` (``learning_rate``, ``patience``, ``monitor``,
            ``steps_per_epoch``, ``steps_per_execution``, ``verbose``, ...).

    Raises:
        ValueError: a bad argument (named), or a strategy the command cannot train with.
    """
    if augment_in not in ("data", "model"):
        raise ValueError(f"augment_in must be 'data' or 'model'. Received: augment_in={augment_in!r}")
    choice = _choose_strategy(strategy, batch_size)
    model_options = _check_model_options(model_name, model_options)
    precision = strategies.choose_precision(precision)
    groups = split_record.group_setting(groups)
    split_seed = seed if split_seed is None else split_seed
    group_by = split_record.group_by(groups)
    info = {s: data.info(spec, s, seed=split_seed, group_by=group_by, oversample=oversample) for s in ("train", "valid")}
    record = _spec_record(spec, info, choice, model_name=model_name, batch_size=batch_size, augment=augment,
                          augment_in=augment_in, image_size=image_size, precision=precision, weights=weights,
                          **split_record.describe(split_seed=split_seed, groups=groups, oversample=oversample))
    record["model_options"] = model_options
    build = _builder(model_name, num_classes=len(info["train"]["class_names"]), image_size=image_size,
                     weights=weights, precision=precision, model_options=model_options,
                     augment=augment if augment_in == "model" else None, seed=seed)
    return frozen.fit_spec(
        build, spec, batch_size=batch_size, image_size=image_size,
        augment=augment if augment_in == "data" else None, seed=seed, views=views,
        features="off" if augment and augment_in == "model" else features,
        split_seed=split_seed, group_by=group_by, oversample=oversample, strategy_kind=choice.kind,
        out_dir=out_dir, epochs=epochs, strategy=choice.strategy, command=command, extra_record=record,
        class_weight=("balanced", info["train"]["counts"]) if class_weight == "balanced" else None,
        **fit_options)
