"""Saliency maps, attention maps and the numbers that say whether they point at the lesion.

Gradient maps come from tf-keras-vis (``Gradcam``, ``GradcamPlusPlus``, ``Saliency``): the
settings go in at construction (the model, a model modifier such as ``ReplaceToLinear``), the data
at call time (the score, the images, the layer), and every map comes back as ``(batch, h, w)``
float32 in [0, 1] at the input size. Attention maps come from the attention layers of
`histolib.layers` called with ``return_attention_scores=True``. `localisation` measures a map
against a known lesion mask (share of the map's energy inside the mask, the pointing game) and
`randomisation_check` is the model-randomisation sanity check of Adebayo et al. 2018.

Backends: tf-keras-vis differentiates with TensorFlow, so `Explainer` (and `randomisation_check`)
run under ``KERAS_BACKEND=tensorflow`` only and refuse another backend at once, saying so.
`attention_map` and the scores (`localisation` & co.) use ``keras.ops`` and NumPy and run under
JAX too.

One module per job:

- :mod:`histolib.saliency.explain`: `Explainer`, `class_score`, `METHODS` (tf-keras-vis, and its
  Keras 3 workarounds);
- :mod:`histolib.saliency.attention`: `attention_map`;
- :mod:`histolib.saliency.scores`: `energy_in_mask`, `pointing_game`, `localisation`,
  `randomise_weights`, `randomisation_check`, and `instance_auc` for the attention weights of a
  multiple-instance model (`histolib.models.attention_scores`).

`overlay` (a map blended over its image) lives with the other drawing in `histolib.plots`; it is
importable from here too.
"""

from histolib.plots import overlay
from histolib.saliency.attention import attention_map
from histolib.saliency.explain import METHODS, Explainer, class_score
from histolib.saliency.scores import (
    energy_in_mask,
    instance_auc,
    localisation,
    pointing_game,
    randomisation_check,
    randomise_weights,
)

__all__ = [
    "METHODS",
    "Explainer",
    "class_score",
    "attention_map",
    "overlay",
    "energy_in_mask",
    "instance_auc",
    "pointing_game",
    "localisation",
    "randomise_weights",
    "randomisation_check",
]
