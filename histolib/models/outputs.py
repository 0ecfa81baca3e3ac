"""Output conventions of the builders, and helpers that read any of them.

Every builder returns probabilities, never logits, in float32 (also under mixed precision):

- ``build_seed_pcam_model``: ``(batch, 1)``, the sigmoid probability of class 1, as the seed
  published it. Train with ``binary_crossentropy`` on labels ``(batch,)`` in {0, 1}.
- every other builder (``build_classifier``, ``build_seed_subtype_model``), for any
  ``num_classes`` including 2: ``(batch, num_classes)`` softmax probabilities. Train with
  ``sparse_categorical_crossentropy`` on integer labels ``(batch,)``.

The width of the output says which: 1 column is a sigmoid, 2 or more a softmax.
"""

from __future__ import annotations

import numpy as np


def _as_2d(probs) -> np.ndarray:
    array = np.asarray(probs, dtype="float32")
    if array.ndim != 2 or array.shape[-1] < 1:
        raise ValueError(
            "Expected model probabilities of shape (batch, 1) (sigmoid) or (batch, k) (softmax). "
            f"Received: probs.shape={array.shape}"
        )
    return array


def is_sigmoid(model) -> bool:
    """Whether ``model`` outputs one sigmoid column ``(batch, 1)`` rather than a softmax."""
    return model.outputs[0].shape[-1] == 1


def loss_for(model) -> str:
    """The Keras loss for ``model``'s output and integer labels ``(batch,)``:
    ``"binary_crossentropy"`` for one sigmoid column, ``"sparse_categorical_crossentropy"``
    for a softmax."""
    return "binary_crossentropy" if is_sigmoid(model) else "sparse_categorical_crossentropy"


def class_probabilities(probs) -> np.ndarray:
    """Probabilities ``(batch, k)`` for every class: a sigmoid column ``p`` becomes
    ``[1 - p, p]``; a softmax passes through."""
    array = _as_2d(probs)
    if array.shape[-1] == 1:
        return np.concatenate([1.0 - array, array], axis=-1)
    return array


def positive_probability(probs) -> np.ndarray:
    """The probability of class 1 ``(batch,)`` from a binary model's output.

    Accepts the sigmoid ``(batch, 1)`` of the PCam seed and the softmax ``(batch, 2)`` of
    `build_classifier`; for more than two classes there is no single positive class, and it
    raises ``ValueError``.
    """
    array = _as_2d(probs)
    if array.shape[-1] > 2:
        raise ValueError(
            "positive_probability needs a binary model's output, (batch, 1) or (batch, 2). "
            f"Received: probs.shape={array.shape}"
        )
    return array[:, -1]


def predicted_class(probs, threshold: float = 0.5) -> np.ndarray:
    """Predicted labels ``(batch,)`` int: ``p > threshold`` for a sigmoid column, else the
    argmax of the softmax (for two classes, ``p_1 > threshold`` as well, so both conventions
    agree at the same threshold)."""
    array = _as_2d(probs)
    if array.shape[-1] <= 2:
        return (array[:, -1] > threshold).astype("int32")
    return np.argmax(array, axis=-1).astype("int32")
