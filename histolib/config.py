"""One configuration object per run: what a run is made of, validated once, written as ``run.json``.

A `RunConfig` holds three frozen parts, after scikit-learn's rule that an estimator's constructor
arguments are its whole configuration and eva's one experiment file:

- `DataConfig`: the data spec and how a source without split folders is split;
- `ModelConfig`: the model's registry name, its initial weights, builder options and precision;
- `TrainConfig`: the optimiser, schedule, callbacks, augmentation and the frozen-features route.

It is built once at the edge (the command line, a notebook cell), passed whole down the chain
(`histolib.experiment.train_from_spec`, `histolib.train.fit`, `histolib.crossval`) and written
into ``run.json`` as ``"config"``; `RunConfig.from_json` reads it back. Every field says in its
metadata whether it must match for a run to resume in the same folder (`resume_view`): the data,
the model and the optimisation must; how many epochs, how verbose, which devices need not. Each
part checks its own fields when it is made, so a bad value fails at once, naming the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from histolib import data, models
from histolib import strategy as strategies
from histolib.data import groups as group_settings
from histolib.data.splits import OVERSAMPLE, SPLIT_VERSION, Folds
from histolib.layers.augmentation import NAMES as AUGMENTATIONS

__all__ = ["SCHEDULES", "DataConfig", "ModelConfig", "RunConfig", "TrainConfig"]

#: The learning-rate schedules `histolib.train.fit` takes (see `histolib.train.learning_rate_schedule`).
SCHEDULES = ("plateau", "cosine")


def _setting(default=None, *, resume=True, factory=None):
    """A field whose metadata says whether it must match to resume (``True``, ``False``, or a
    function of the config, e.g. only under a cosine schedule)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"resume": resume})
    return field(default=default, metadata={"resume": resume})


def _check(ok: bool, name: str, value, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}. Received: {name}={value!r}")


def _positive_or_none(name: str, value) -> None:
    _check(value is None or (isinstance(value, int) and value >= 1), name, value, "None or a positive integer")


class _Part:
    """What the three parts share: a JSON round trip and the view a resume compares."""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field {unknown}; fields: {sorted(known)}")
        return cls(**values)

    def resume_view(self) -> dict:
        """``{field: value}`` of the fields that must match for a run to resume."""
        view = {}
        for f in dataclasses.fields(self):
            rule = f.metadata.get("resume", True)
            if rule is True or (callable(rule) and rule(self)):
                view[f.name] = getattr(self, f.name)
        return view


@dataclass(frozen=True)
class DataConfig(_Part):
    """The data of a run.

    Attributes:
        spec: a data spec of `histolib.data.load` (``"folder:DIR"``, ``"synthetic-pcam"`` ...).
        image_size: resize images to this square side on loading; ``None`` keeps their size.
        split_seed: the seed of the split of a source without split folders.
        groups: ``None``, ``"near-duplicates"`` or a groups table (CSV ``file,group`` or the JSON
            of ``histolib duplicates``; kept as its absolute path): groups stay on one side.
        oversample: ``None``, ``"after"`` (RandomOverSampler on the training rows) or ``"before"``
            (the ovarian seed's leaky order, for showing the leak).
        split_version: the split algorithm (`histolib.data.splits.SPLIT_VERSION`).
        folds, fold: cross-validation fold ``fold`` of ``folds`` instead of the 80/10/10 split
            (`histolib.data.splits.Folds`: test is the fold, valid one eighth of the rest).
    """

    spec: str
    image_size: int | None = None
    split_seed: int = 0
    groups: str | None = None
    oversample: str | None = None
    split_version: int = SPLIT_VERSION
    folds: int | None = None
    fold: int | None = None

    def __post_init__(self):
        data.source(self.spec)  # an unknown kind or a missing folder argument fails here
        _positive_or_none("image_size", self.image_size)
        _check(isinstance(self.split_seed, int), "split_seed", self.split_seed, "an integer")
        _check(self.oversample in OVERSAMPLE, "oversample", self.oversample, f"one of {OVERSAMPLE}")
        object.__setattr__(self, "groups", group_settings.setting(self.groups))
        _check(self.split_version == SPLIT_VERSION, "split_version", self.split_version,
               f"{SPLIT_VERSION}, the split algorithm of this histolib (a run split by another cannot go on)")
        if self.folds is not None or self.fold is not None:
            Folds(self.folds, self.fold)  # both or neither, in range

    def source(self):
        """The `histolib.data.DataSource` this config reads, split as it says."""
        fractions = (0.8, 0.1, 0.1) if self.folds is None else Folds(self.folds, self.fold)
        return data.source(self.spec, seed=self.split_seed, fractions=fractions,
                           group_by=group_settings.group_by(self.groups), oversample=self.oversample)


@dataclass(frozen=True)
class ModelConfig(_Part):
    """The model of a run.

    Attributes:
        name: a name of `histolib.models.list_models`.
        weights: ``"auto"``, ``"imagenet"``, ``None`` or a weights file (`histolib.models.build_model`).
        options: more keywords of the name's builder (`histolib.models.model_options`), e.g.
            ``{"freeze": False, "backbone_size": 128}`` (the command's ``--fine-tune
            --backbone-size 128``).
        precision: a name of `histolib.strategy.PRECISIONS`; ``"auto"`` is resolved when the run
            starts (the run records what it used). Need not match to resume.
    """

    name: str
    weights: str | None = "auto"
    options: dict = _setting(factory=dict)
    precision: str = _setting("auto", resume=False)

    def __post_init__(self):
        models.check_options(self.name, self.options)  # unknown names and options fail here
        _check(self.precision in strategies.PRECISIONS, "precision", self.precision,
               f"one of {strategies.PRECISIONS}")
        object.__setattr__(self, "weights", None if self.weights in (None, "none") else str(self.weights))


def _under_cosine(config) -> bool:
    return config.schedule == "cosine"


@dataclass(frozen=True)
class TrainConfig(_Part):
    """How a run trains (`histolib.train.fit`'s settings, and the command's).

    Attributes:
        epochs: total epochs of the run; a run that did not stop early extends when asked for more
            (not under the cosine schedule, which ends at ``epochs``).
        batch_size: the global batch (split over replicas under a strategy).
        learning_rate: Adam's initial (plateau) or peak (cosine) learning rate.
        patience: EarlyStopping's patience in epochs (the PCam seed: 3).
        lr_patience: ReduceLROnPlateau's patience; ``None``: ``max(1, patience - 1)``.
        lr_factor, min_lr: ReduceLROnPlateau's factor (the seed: 0.3) and floor.
        monitor, mode: what the callbacks watch (``"val_loss"``, ``"val_auc"`` ...) and how.
        schedule: ``"plateau"`` or ``"cosine"`` (warm-up then cosine decay to 0 at ``epochs``).
        warmup_epochs: the cosine schedule's linear warm-up, in (fractional) epochs.
        class_weight: ``None``, ``"balanced"`` (inverse class frequency of the training rows,
            from the counts `fit` is given) or ``{class: weight}``.
        seed: the run's seed (initial weights, dropout, shuffling of features).
        augment, augment_in: an augmentation set of `histolib.layers.augmentation`, run in the
            ``tf.data`` pipeline (``"data"``) or inside the model's training step (``"model"``).
        features, views: ``"auto"``: a frozen backbone runs once per image and view (``views``
            with ``augment``) and the head trains on the cached features; ``"off"``: the whole model.
        steps_per_epoch, validation_steps, steps_per_execution: as in Keras's ``fit``/``compile``.
        strategy: a name of `histolib.strategy.CHOICES`; ``None`` reads ``$HISTOLIB_STRATEGY``.
        deterministic: enable TensorFlow op determinism (slower).
        checkpoints: keep model files so a killed run resumes; ``False`` keeps the best weights
            in memory only (many short runs).
        solver: ``"adam"``: Keras's ``fit`` with the settings above; ``"lbfgs"``: a tile
            classifier with a linear head (mean, max or mean+max pooling, no embedding or dropout)
            fitted as the multinomial logistic regression it is, by scikit-learn's L-BFGS, its
            inverse L2 strength ``C`` chosen on the valid part by log loss, then refitted on train
            and valid together (`histolib.tiles.fit_on_tiles`); the epoch settings are unused.
        tensorboard, verbose: log to TensorBoard; Keras's verbosity (``0`` silences the callbacks).
    """

    epochs: int = _setting(1, resume=_under_cosine)
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 3
    lr_patience: int | None = None
    lr_factor: float = 0.3
    min_lr: float = 1e-6
    monitor: str = "val_loss"
    mode: str = "auto"
    schedule: str = "plateau"
    warmup_epochs: float = 0.0
    class_weight: str | dict | None = None
    seed: int = 0
    augment: str | None = None
    augment_in: str = "data"
    features: str = "auto"
    views: int = 8
    steps_per_epoch: int | None = None
    validation_steps: int | None = _setting(resume=False)
    steps_per_execution: int = _setting(1, resume=False)
    strategy: str | None = _setting(resume=False)
    deterministic: bool = _setting(False, resume=False)
    checkpoints: bool = _setting(True, resume=False)
    solver: str = "adam"
    tensorboard: bool = _setting(False, resume=False)
    verbose: int | str = _setting("auto", resume=False)

    def __post_init__(self):
        self._check_optimisation()
        self._check_data_path()

    def _check_optimisation(self) -> None:
        _check(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", self.epochs, "a positive integer")
        _check(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", self.batch_size,
               "a positive integer")
        _check(self.learning_rate > 0, "learning_rate", self.learning_rate, "> 0")
        _check(isinstance(self.patience, int) and self.patience >= 0, "patience", self.patience, "an integer >= 0")
        _check(0 < self.lr_factor < 1, "lr_factor", self.lr_factor, "in (0, 1)")
        _check(self.mode in ("auto", "min", "max"), "mode", self.mode, "'auto', 'min' or 'max'")
        _check(self.solver in ("adam", "lbfgs"), "solver", self.solver, "'adam' or 'lbfgs'")
        _check(self.schedule in SCHEDULES, "schedule", self.schedule, f"one of {SCHEDULES}")
        _check(self.warmup_epochs == 0 or (self.schedule == "cosine" and 0 < self.warmup_epochs < self.epochs),
               "warmup_epochs", self.warmup_epochs, "0, or under schedule 'cosine' shorter than the run")
        _check(self.class_weight in (None, "balanced") or isinstance(self.class_weight, dict), "class_weight",
               self.class_weight, "None, 'balanced' or a {class: weight} dict")
        if isinstance(self.class_weight, dict):  # JSON keys come back as strings
            object.__setattr__(self, "class_weight", {int(k): float(v) for k, v in self.class_weight.items()})

    def _check_data_path(self) -> None:
        _check(self.augment is None or self.augment in AUGMENTATIONS, "augment", self.augment,
               f"None or one of {AUGMENTATIONS}")
        _check(self.augment_in in ("data", "model"), "augment_in", self.augment_in, "'data' or 'model'")
        _check(self.features in ("auto", "off"), "features", self.features, "'auto' or 'off'")
        _check(isinstance(self.views, int) and self.views >= 1, "views", self.views, "a positive integer")
        for name in ("steps_per_epoch", "validation_steps"):
            _positive_or_none(name, getattr(self, name))
        _check(self.strategy is None or self.strategy in strategies.CHOICES, "strategy", self.strategy,
               f"None or one of {strategies.CHOICES}")
        _check(self.verbose in ("auto", 0, 1, 2), "verbose", self.verbose, "'auto', 0, 1 or 2")

    @property
    def reduce_lr_patience(self) -> int:
        """ReduceLROnPlateau's patience: `lr_patience`, else one epoch less than EarlyStopping's
        (at least 1), so the learning rate drops once before training stops."""
        return max(1, self.patience - 1) if self.lr_patience is None else int(self.lr_patience)


@dataclass(frozen=True)
class RunConfig:
    """A whole run: its data, model and training (see the module docstring).

    `histolib.train.fit` takes one (or a bare `TrainConfig`, for a model and datasets made by
    hand: then ``data`` and ``model`` are ``None``). ``command`` is the command line that made it,
    recorded but never compared.
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig | None = None
    model: ModelConfig | None = None
    command: str | None = None

    PARTS = {"train": TrainConfig, "data": DataConfig, "model": ModelConfig}

    def to_json(self) -> dict:
        """JSON-ready ``{"train": {...}, "data": {...} or None, "model": ..., "command": ...}``."""
        return {**{name: None if getattr(self, name) is None else getattr(self, name).to_json()
                   for name in self.PARTS}, "command": self.command}

    @classmethod
    def from_json(cls, values: dict) -> RunConfig:
        """The config `to_json` wrote (each part validated again)."""
        unknown = sorted(set(values) - {*cls.PARTS, "command"})
        if unknown:
            raise ValueError(f"RunConfig has no part {unknown}; parts: {[*cls.PARTS, 'command']}")
        parts = {name: None if values.get(name) is None else kind.from_json(values[name])
                 for name, kind in cls.PARTS.items()}
        return cls(**parts, command=values.get("command"))

    def resume_view(self) -> dict:
        """``{"part.field": value}`` of every field that must match for a run to resume."""
        view = {}
        for name in self.PARTS:
            part = getattr(self, name)
            if part is not None:
                view.update({f"{name}.{key}": value for key, value in part.resume_view().items()})
        return view

    def replace(self, *, train=None, data=None, model=None) -> RunConfig:
        """A copy with parts or some of their fields replaced (each validated again):
        ``config.replace(train={"seed": 1})`` changes one field of a part,
        ``config.replace(data=DataConfig(...))`` a whole part; ``None`` keeps a part."""
        changes = {}
        for name, value in (("train", train), ("data", data), ("model", model)):
            if isinstance(value, dict):
                changes[name] = dataclasses.replace(getattr(self, name), **value)
            elif value is not None:
                changes[name] = value
        return dataclasses.replace(self, **changes)
