"""The model names of the command line, in one table: `MODELS`, `list_models`, `build_model`.

Every name maps to a `ModelEntry`: a builder called as ``build(num_classes=..., input_shape=...,
weights=..., **options)`` and a one-line summary. The table is filled from the backbone table
(`histolib.models.backbones.BACKBONES`) and the attention kinds, so a backbone added there gets
its names here (``<backbone>``, ``<backbone>+<attention>`` and, with ImageNet weights,
``seed-subtype-<backbone>``). Other models join with `register_model`::

    register_model("my-model", build_my_model, summary="what it is, in one line")

`list_models` and the command's ``--model`` help read the same table, so they cannot disagree.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Callable

import keras

from histolib.models.backbones import BACKBONES, get_backbone
from histolib.models.classifier import ATTENTIONS, build_classifier
from histolib.models.mil import POOLINGS, build_mil_classifier
from histolib.models.seed import build_seed_pcam_model, build_seed_subtype_model
from histolib.models.tiles import ENCODERS, registry_builder
from histolib.models.weights import pretrained_weights
from histolib.names import unknown_name

SEED_SUBTYPE_BACKBONES = tuple(name for name, spec in BACKBONES.items() if spec.constructor)


@dataclass(frozen=True)
class ModelEntry:
    """One name of `MODELS`.

    Attributes:
        build: ``build(*, num_classes, input_shape, weights, **options) -> keras.Model``, where
            ``input_shape`` may be ``None`` (the builder's default) and ``weights`` is
            ``"auto"``, ``"imagenet"``, a file path or ``None`` (see `build_model`).
        summary: one line for listings and ``--help``.
    """

    build: Callable[..., keras.Model]
    summary: str


#: name -> `ModelEntry`, in the order `list_models` gives.
MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, build: Callable[..., keras.Model], *, summary: str = "") -> None:
    """Add ``name`` to `MODELS` (see the module docstring for what ``build`` takes).

    Raises:
        ValueError: when ``name`` is taken or holds white space.
    """
    if not name or any(c.isspace() for c in name) or name in MODELS:
        raise ValueError(f"model names must be new and without spaces; taken: {list(MODELS)}. Received: name={name!r}")
    MODELS[name] = ModelEntry(build, summary)


def _seed_pcam(*, num_classes, input_shape, weights, centre_inputs=False):
    if num_classes != 2:
        raise ValueError(f"seed-pcam is a binary model (one sigmoid output). Received: num_classes={num_classes}")
    if weights not in ("auto", None):
        raise ValueError(f"seed-pcam trains from scratch; pass weights='auto' or None. Received: weights={weights!r}")
    return build_seed_pcam_model(input_shape or (96, 96, 3), centre_inputs=centre_inputs)


def _seed_subtype(backbone, *, num_classes, input_shape, weights):
    return build_seed_subtype_model(backbone, num_classes=num_classes, input_shape=input_shape or (224, 224, 3),
                                    weights="imagenet" if weights == "auto" else weights)


def _classifier(backbone, attention, *, num_classes, input_shape, weights, freeze=True, backbone_size=None):
    if weights == "auto":
        weights = pretrained_weights(get_backbone(backbone))
    return build_classifier(backbone, attention=attention, num_classes=num_classes,
                            input_shape=input_shape or (96, 96, 3), weights=weights, freeze=freeze,
                            backbone_size=backbone_size)


def _mil(pooling, *, num_classes, input_shape, weights, units=128, embedding=64, dropout=0.25):
    if weights not in ("auto", None):
        raise ValueError(f"MIL heads over tile features train from scratch; pass weights='auto' or None. "
                         f"Received: weights={weights!r}")
    shape = tuple(input_shape or (None, 256))
    if len(shape) != 2 or not isinstance(shape[1], int):
        raise ValueError("A MIL head takes bags of features: input_shape=(instances, channels), e.g. (None, 256). "
                         f"Received: input_shape={input_shape!r}")
    return build_mil_classifier(shape[1], pooling=pooling, num_classes=num_classes, units=units,
                                embedding=embedding, dropout=dropout)


def _fill_table() -> None:
    register_model("seed-pcam", _seed_pcam, summary="the PCam seed's CNN + self-attention (binary, sigmoid)")
    register_model("seed-pcam-centred", functools.partial(_seed_pcam, centre_inputs=True),
                   summary="seed-pcam with its inputs centred to [-1, 1]: learns on the built-in patches")
    for backbone in SEED_SUBTYPE_BACKBONES:
        register_model(f"seed-subtype-{backbone}", functools.partial(_seed_subtype, backbone),
                       summary=f"the ovarian seed's model on a frozen {backbone}")
    for backbone in BACKBONES:
        for attention in ATTENTIONS:
            name = backbone if attention is None else f"{backbone}+{attention}"
            register_model(name, functools.partial(_classifier, backbone, attention),
                           summary=f"{backbone}, {attention or 'no'} attention, softmax head")
    for pooling in POOLINGS:
        register_model(f"mil-{pooling}", functools.partial(_mil, pooling),
                       summary=f"multiple-instance head over bags of tile features, {pooling} pooling")
    for encoder in ENCODERS:
        for pooling in POOLINGS:
            register_model(f"tiles-{encoder}+{pooling}", registry_builder(encoder, pooling),
                           summary=f"images at native resolution: {encoder} tile features, {pooling} pooling")


_fill_table()


def list_models() -> list[str]:
    """Every name `build_model` accepts, in table order."""
    return list(MODELS)


def model_options(name: str) -> list[str]:
    """The options `build_model` takes for ``name`` beyond ``num_classes``, ``input_shape`` and
    ``weights`` (``["backbone_size", "freeze"]`` for the classifier names, none for the seeds')."""
    if name not in MODELS:
        raise ValueError(f"Unknown model name. Valid names: {', '.join(MODELS)}. Received: name={name!r}")
    return sorted(n for n, p in inspect.signature(MODELS[name].build).parameters.items()
                  if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in ("num_classes", "input_shape", "weights"))


def check_options(name: str, options: dict) -> None:
    """Refuse a model name `list_models` lacks, or ``options`` its builder does not take.

    Raises:
        ValueError: naming the unknown name (suggesting the closest) or the options, and what
            the builder takes.
    """
    if name not in MODELS:
        raise unknown_name("model name", name, MODELS, plural="model names")
    accepted = model_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"model {name!r} takes no option {unknown}; it takes "
                         f"{accepted or 'none beyond num_classes, input_shape, weights'} (--fine-tune is freeze, "
                         f"--backbone-size backbone_size). Received: options={options}")


def build_model(name: str, *, num_classes: int = 2, input_shape=None, weights="auto", dtype_policy=None,
                options: dict | None = None) -> keras.Model:
    """Build the model the command line calls ``name``.

    Names (all listed by `list_models`):

    - ``"seed-pcam"``: `build_seed_pcam_model` (binary, sigmoid ``(batch, 1)``; trained from
      scratch, so ``weights`` must be ``"auto"`` or ``None``);
    - ``"seed-pcam-centred"``: the same with ``centre_inputs=True`` (a parameter-free
      ``Rescaling(2, -1)`` first). The seed's model as published sits at a constant prediction
      on the built-in synthetic patches (validation AUC 0.5 after two epochs); centred, it
      reaches about 0.87 (chapter 5 and the README's first example);
    - ``"seed-subtype-<backbone>"``: `build_seed_subtype_model` on ``inception_v3``,
      ``xception`` or ``mobilenet`` (input 224 x 224 unless ``input_shape`` says otherwise);
    - ``"<backbone>"`` and ``"<backbone>+<attention>"``: `build_classifier`, e.g.
      ``"mobilenet+differential"``, ``"seed_cnn+self"`` (input 96 x 96 unless told);
    - ``"mil-mean"``, ``"mil-max"``, ``"mil-attention"``, ``"mil-gated"``:
      `build_mil_classifier` over bags of precomputed tile features, input
      ``{"features": (batch, n, c), "mask": (batch, n)}`` with ``input_shape=(None, c)``
      (default ``(None, 256)``, MobileNet 0.25's features); options ``units``, ``embedding``,
      ``dropout`` (chapter 10).

    Args:
        name: a model name.
        num_classes: number of classes (the seed-pcam model takes 2 only).
        input_shape: ``(h, w, 3)``, or ``None`` for the builder's default.
        weights: ``"auto"`` (ImageNet weights where the backbone has them, loaded as
            `histolib.models.weights` describes, and a frozen backbone; none for seed-pcam and
            seed_cnn), ``"imagenet"``, a weights file path, or ``None`` (random
            initialisation, nothing frozen).
        dtype_policy: a Keras dtype policy name (``"mixed_bfloat16"``, ...) to build the model
            under; the global policy is put back afterwards, so data pipelines stay float32.
            ``None`` builds under the global policy.
        options: further keyword arguments of the name's builder (see `model_options`): for
            the classifier names ``freeze`` (``False`` fine-tunes a pretrained backbone) and
            ``backbone_size`` (see `build_classifier`); none for the seeds' models.

    Raises:
        ValueError: for an unknown name (the message suggests the closest and lists them all),
            or options the name's builder does not take (`check_options`).
    """
    options = dict(options or {})
    check_options(name, options)
    build = MODELS[name].build
    previous = keras.config.dtype_policy()
    if dtype_policy is not None:
        keras.config.set_dtype_policy(dtype_policy)
    try:
        return build(num_classes=num_classes, input_shape=input_shape, weights=weights, **options)
    finally:
        keras.config.set_dtype_policy(previous)
