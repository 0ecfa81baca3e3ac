"""``build_model(name)``: the command line's model names, mapped to the builders."""

from __future__ import annotations

import keras

from histolib.models.seed import build_seed_pcam_model


def list_models() -> list[str]:
    """Every name `build_model` accepts."""
    return ["seed-pcam"]


def build_model(name: str, *, num_classes: int = 2, input_shape=None, weights="imagenet") -> keras.Model:
    """Build the model the command line calls ``name``.

    Names: ``"seed-pcam"`` (`build_seed_pcam_model`; ``num_classes`` must be 2, and
    ``weights`` is ignored since the seed trains from scratch).

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    if name == "seed-pcam":
        if num_classes != 2:
            raise ValueError(
                "seed-pcam is a binary model (one sigmoid output). "
                f"Received: num_classes={num_classes}"
            )
        return build_seed_pcam_model(input_shape or (96, 96, 3))
    raise ValueError(f"Unknown model name. Valid names: {', '.join(list_models())}. Received: name={name!r}")
