"""``build_model(name)``: the command line's model names, mapped to the builders."""

from __future__ import annotations

import keras

from histolib.models.backbones import BACKBONES, get_backbone
from histolib.models.classifier import ATTENTIONS, build_classifier
from histolib.models.seed import build_seed_pcam_model, build_seed_subtype_model

SEED_SUBTYPE_BACKBONES = tuple(name for name, spec in BACKBONES.items() if spec.constructor)


def list_models() -> list[str]:
    """Every name `build_model` accepts."""
    names = ["seed-pcam"] + [f"seed-subtype-{b}" for b in SEED_SUBTYPE_BACKBONES]
    for backbone in BACKBONES:
        names += [backbone] + [f"{backbone}+{a}" for a in ATTENTIONS if a]
    return names


def build_model(
    name: str, *, num_classes: int = 2, input_shape=None, weights="auto"
) -> keras.Model:
    """Build the model the command line calls ``name``.

    Names (all listed by `list_models`):

    - ``"seed-pcam"``: `build_seed_pcam_model` (binary, sigmoid ``(batch, 1)``; trained from
      scratch, so ``weights`` must be ``"auto"`` or ``None``);
    - ``"seed-subtype-<backbone>"``: `build_seed_subtype_model` on ``inception_v3``,
      ``xception`` or ``mobilenet`` (input 224 x 224 unless ``input_shape`` says otherwise);
    - ``"<backbone>"`` and ``"<backbone>+<attention>"``: `build_classifier`, e.g.
      ``"mobilenet+differential"``, ``"seed_cnn+self"`` (input 96 x 96 unless told).

    Args:
        name: a model name.
        num_classes: number of classes (the seed-pcam model takes 2 only).
        input_shape: ``(h, w, 3)``, or ``None`` for the builder's default.
        weights: ``"auto"`` (ImageNet weights where the backbone has them, loaded as
            `histolib.models.weights` describes, and a frozen backbone; none for seed-pcam and
            seed_cnn), ``"imagenet"``, a weights file path, or ``None`` (random
            initialisation, nothing frozen).

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    if name == "seed-pcam":
        if num_classes != 2:
            raise ValueError(
                "seed-pcam is a binary model (one sigmoid output). "
                f"Received: num_classes={num_classes}"
            )
        if weights not in ("auto", None):
            raise ValueError(
                "seed-pcam trains from scratch; pass weights='auto' or None. "
                f"Received: weights={weights!r}"
            )
        return build_seed_pcam_model(input_shape or (96, 96, 3))
    if name.startswith("seed-subtype-") and name[len("seed-subtype-"):] in SEED_SUBTYPE_BACKBONES:
        return build_seed_subtype_model(
            name[len("seed-subtype-"):],
            num_classes=num_classes,
            input_shape=input_shape or (224, 224, 3),
            weights="imagenet" if weights == "auto" else weights,
        )
    backbone, _, attention = name.partition("+")
    if backbone in BACKBONES and (attention in ATTENTIONS or attention == "") and name[-1] != "+":
        if weights == "auto":
            weights = None if get_backbone(backbone).weights_url is None else "imagenet"
        return build_classifier(
            backbone,
            attention=attention or None,
            num_classes=num_classes,
            input_shape=input_shape or (96, 96, 3),
            weights=weights,
        )
    raise ValueError(
        f"Unknown model name. Valid names: {', '.join(list_models())}. Received: name={name!r}"
    )
