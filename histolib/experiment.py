"""One training run from a `histolib.config.RunConfig`: what ``histolib train`` runs.

`train_from_spec` chooses the distribution strategy and precision, checks the data, builds the
named model, decides the route up front (`histolib.frozen.choose_route`: the head on cached
backbone features, or the whole model on images) and trains it, recording it all in
``run.json``. The command line, chapter 5's Colab TPU cell and `histolib.crossval` all call it.
"""

from __future__ import annotations

from histolib import frozen, models, tiles, train
from histolib import strategy as strategies
from histolib.config import ModelConfig, RunConfig
from histolib.train import FitResult

__all__ = ["build_for", "train_from_spec"]


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


def build_for(config: RunConfig, *, num_classes: int, precision: str):
    """A zero-argument function building ``config.model`` (`histolib.models.build_model`) for
    ``num_classes`` classes and ``config.data.image_size`` square images (``None``: any size) in
    ``precision``, with the augmentation as a layer after its input when
    ``config.train.augment_in == "model"`` (`histolib.models.with_augmentation`)."""
    spec: ModelConfig = config.model
    size = config.data.image_size
    augment = config.train.augment if config.train.augment_in == "model" else None

    def build():
        model = models.build_model(spec.name, num_classes=num_classes,
                                   input_shape=None if size is None else (size, size, 3), weights=spec.weights,
                                   dtype_policy=precision, options=spec.options)
        return models.with_augmentation(model, augment, seed=config.train.seed) if augment else model

    return build


def _record(source, info: dict, choice, precision: str) -> dict:
    """``run.json``'s facts about the data (classes, counts, the file list's digest), the strategy
    and the precision used."""
    record = {"data": {"class_names": info["train"]["class_names"], "train_counts": info["train"]["counts"],
                       "valid_counts": info["valid"]["counts"]},
              "precision": precision, "strategy": {"kind": choice.kind, "replicas": choice.replicas,
                                                   "devices": choice.devices, "reason": choice.reason}}
    digest = source.digest()
    if digest is not None:
        record["data"]["file_list"] = digest
    return record


def _fit_on_images(build, source, config: RunConfig, choice, *, out_dir, record) -> FitResult:
    """`histolib.train.fit` of the whole model on ``source``'s images, shaped for the strategy."""
    settings, size = config.train, config.data.image_size
    augment = settings.augment if settings.augment_in == "data" else None
    train_ds = source.load("train", batch_size=settings.batch_size, image_size=size, shuffle=True, augment=augment)
    val_ds = source.load("valid", batch_size=settings.batch_size, image_size=size)
    counts = record["data"]["train_counts"]
    train_ds, val_ds = strategies.datasets_for_strategy(
        choice.kind, train_ds, val_ds, batch_size=settings.batch_size, train_examples=sum(counts),
        valid_examples=sum(record["data"]["valid_counts"]))
    return train.fit(build, train_ds, val_ds, config, out_dir=out_dir, strategy=choice.strategy, record=record,
                     class_counts=counts)


def train_from_spec(config: RunConfig, *, out_dir) -> FitResult:
    """What ``histolib train`` does: choose the strategy and precision, check every file of a
    folder source, build the named model, choose the route (`histolib.frozen.choose_route`) and
    train, recording it all in ``run.json``.

    Chapter 5's Colab TPU cell calls this, and the command line calls it, so both take the same
    path (the JAX route included: ``KERAS_BACKEND=jax`` with ``strategy="data-parallel"``). It
    seeds nothing: call ``keras.utils.set_random_seed(config.train.seed)`` first, as the command does.

    Args:
        config: a `histolib.config.RunConfig` with its ``data`` and ``model`` parts.
        out_dir: the run folder (`histolib.train.fit`).

    Raises:
        ValueError: a config without data or model, a bad argument (named), unreadable files, or
            a strategy the command cannot train with.
    """
    if config.data is None or config.model is None:
        raise ValueError("train_from_spec needs a RunConfig with data and model parts. "
                         f"Received: data={config.data!r}, model={config.model!r}")
    choice = _choose_strategy(config.train.strategy, config.train.batch_size)
    precision = strategies.choose_precision(config.model.precision)
    source = config.data.source()
    source.check()  # unreadable files end the run before any model is built
    info = {split: source.info(split) for split in ("train", "valid")}
    record = _record(source, info, choice, precision)
    build = build_for(config, num_classes=len(info["train"]["class_names"]), precision=precision)
    model = build() if choice.kind == "default" else None  # built once, in the default scope
    route = frozen.choose_route(config.train, choice.kind, model)
    record["route"] = {"name": route.name, "reason": route.reason, "resumable": route.resumable}
    if config.train.solver == "lbfgs" and route.name != "tiles":
        raise ValueError(f"solver 'lbfgs' fits a tile classifier's linear head; this run takes the {route.name} "
                         f"route ({route.reason}). Received: solver='lbfgs'")
    if route.name == "features":
        return frozen.fit_on_features(model, source, config, out_dir=out_dir, record=record)
    if route.name == "tiles":
        return tiles.fit_on_tiles(model, source, config, out_dir=out_dir, record=record)
    return _fit_on_images(build if model is None else model, source, config, choice, out_dir=out_dir, record=record)
