"""Model builders for the two seeds and their corrected variants.

Every builder takes images ``(batch, h, w, 3)`` float32 in [0, 1], as
``histolib.data.load`` gives them, and does any scaling inside the model with plain layers
(``Rescaling``; no ``Lambda``), so nothing is scaled twice.

Output convention (see `histolib.models.outputs`): models output probabilities in float32.
The PCam seed (``build_model("seed-pcam")``) outputs ``(batch, 1)``, the sigmoid probability
of class 1, trained with ``binary_crossentropy``; every other model outputs a softmax
``(batch, num_classes)``, two columns for two classes, trained with
``sparse_categorical_crossentropy``. Labels are int ``(batch,)`` for both. Code that handles
any model uses:

- ``loss_for(model)``: the loss name for the model's output;
- ``positive_probability(probs)``: ``(batch,)`` probability of class 1 from ``(batch, 1)`` or
  ``(batch, 2)`` (for ROC/AUC, PR curves, thresholds);
- ``class_probabilities(probs)``: ``(batch, k)`` for any model (a sigmoid ``p`` becomes
  ``[1 - p, p]``);
- ``predicted_class(probs, threshold=0.5)``: int labels ``(batch,)``.
"""

from histolib.models.outputs import (
    class_probabilities,
    is_sigmoid,
    loss_for,
    positive_probability,
    predicted_class,
)
from histolib.models.registry import build_model, list_models
from histolib.models.seed import SEED_PCAM_PARAMS, build_seed_pcam_model

__all__ = [
    "SEED_PCAM_PARAMS",
    "build_model",
    "build_seed_pcam_model",
    "class_probabilities",
    "is_sigmoid",
    "list_models",
    "loss_for",
    "positive_probability",
    "predicted_class",
]
