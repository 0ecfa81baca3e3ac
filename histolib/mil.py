"""Training a multiple-instance pooling head on bags of cached tile features (chapter 10).

`fit_pooling` is one training of `histolib.models.build_mil_classifier` with one pooling on a
train / valid / test set of bags (`histolib.data.bags`): trained with `histolib.train.fit` on the
bag labels alone, selected on the valid bags, and scored on the test bags, whose class
probabilities it returns. A chapter's comparison of poolings over seeds is a loop over it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import keras
import numpy as np

from histolib import evaluate, train
from histolib.config import TrainConfig
from histolib.data import bags as bag_sets
from histolib.models import build_mil_classifier

__all__ = ["PoolingFit", "fit_pooling"]


@dataclass
class PoolingFit:
    """One pooling head, trained and scored.

    Attributes:
        model: the head with its best epoch's weights.
        labels: int64 ``(n,)`` labels of the test bags; probs: float64 ``(n, k)`` their class
            probabilities.
        epochs: epochs trained (early stopping included).
    """

    model: keras.Model
    labels: np.ndarray
    probs: np.ndarray
    epochs: int


def fit_pooling(pooling: str, parts: dict, features: dict, config: TrainConfig, *, out_dir,
                max_instances: int | None = None, num_classes: int = 2) -> PoolingFit:
    """Train a MIL head with ``pooling`` on ``parts["train"]``, select on ``parts["valid"]`` and
    score it on ``parts["test"]``.

    It seeds nothing: call ``keras.utils.set_random_seed`` first for the head's initial weights
    (``config.seed`` shuffles the training bags).

    Args:
        pooling: a name of `histolib.models.POOLINGS` (``"mean"``, ``"max"``, ``"attention"``, ``"gated"``).
        parts: ``{"train", "valid", "test"}`` -> `histolib.data.bags.Bags`.
        features: the same keys -> ``(tiles, c)`` tile features (`histolib.data.features.tile_features`).
        config: how to train (``epochs``, ``patience``, ``learning_rate``, ``seed`` ...).
        out_dir: the run folder of `histolib.train.fit`.
        max_instances: cut training and valid bags to at most this many tiles (padding).
        num_classes: classes of the bag labels.

    Returns:
        A `PoolingFit`.
    """
    build = functools.partial(build_mil_classifier, features["train"].shape[1], pooling=pooling,
                              num_classes=num_classes)
    fitted = train.fit(build,
                       bag_sets.dataset(parts["train"], features["train"], shuffle=True, seed=config.seed,
                                        max_instances=max_instances),
                       bag_sets.dataset(parts["valid"], features["valid"], max_instances=max_instances),
                       config, out_dir=out_dir)
    labels, probs = evaluate.predict(fitted.model, bag_sets.dataset(parts["test"], features["test"]))
    return PoolingFit(fitted.model, labels, probs, fitted.epochs_done)
