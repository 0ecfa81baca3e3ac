"""Model builders for the two seeds and their corrected variants.

Every builder takes images ``(batch, h, w, 3)`` float32 in [0, 1], as
``histolib.data.load`` gives them, and does any scaling inside the model with plain layers
(``Rescaling``, ``Resizing``; no ``Lambda``), so nothing is scaled twice.

- `build_seed_pcam_model()`: the PCam seed, 494,337 parameters.
- `build_seed_subtype_model(backbone)`: the ovarian seed on a frozen ImageNet backbone.
- `build_classifier(backbone, *, attention=None, num_classes=2, input_shape=(96, 96, 3),
  weights="imagenet", freeze=True, backbone_size=None)`: any backbone of `list_backbones()`
  with attention ``None``, ``"self"``, ``"thresholded"`` or ``"differential"``; ``freeze=False``
  fine-tunes a pretrained backbone, ``backbone_size`` resizes inside the model.
- `build_ensemble(members)`: several trained models as one, averaging their probabilities.
- `build_model(name, *, num_classes=2, input_shape=None, weights="auto", dtype_policy=None,
  options=None)`: the command line's names, one table (`MODELS`, `list_models()`,
  `register_model`, `model_options(name)`).
- `with_augmentation(model, augment, seed=0)`: the model with an augmentation set inside its
  training step (identity at inference), so the host only decodes.
- `build_mil_classifier(feature_dim, pooling="gated")`: multiple-instance learning over bags of
  tiles or their precomputed features (mean, max, mean+max, attention, gated attention, or token
  attention across the tiles, thresholded or differential);
- `build_tile_classifier(encoder)`: an image of any size cut into tiles at native resolution, a
  frozen tile encoder, a MIL head (`histolib.models.tiles`; registry names ``tiles-*``);
  `build_tile_encoder(backbone)` the frozen tile encoder, `attention_scores(model, inputs)`
  each instance's attention weight.
- `fold_batch_norm(model)`: an inference copy with each BatchNormalization folded into the
  convolution before it (faster, most of all under ``mixed_bfloat16`` on a CPU);
  `calibrate_batch_norm(model, images)` gives a random backbone's batch norms real statistics.
- `parameter_counts(model)`: trainable and frozen parameters; `write_application_weights`
  saves weights in the layout of Keras's application files (stand-ins for offline use).
- `get_backbone(name)` gives a backbone's spec (scaling, sizes, Grad-CAM layer, channels);
  `gradcam_layer_name(model)` the Grad-CAM layer of a built model. Feature-map sizes at 96,
  224 and 299 pixels are tabulated in `histolib.models.backbones`.

Output convention (see `histolib.models.outputs`): models output probabilities in float32.
The PCam seed (``build_model("seed-pcam")``) outputs ``(batch, 1)``, the sigmoid probability
of class 1, trained with ``binary_crossentropy``; every other model outputs a softmax
``(batch, num_classes)``, two columns for two classes, trained with
``sparse_categorical_crossentropy``. Labels are int ``(batch,)`` for both. Code that handles
any model uses:

- ``loss_for(model)``: the loss name for the model's output;
- ``is_sigmoid(model)``: whether the output is one sigmoid column;
- ``positive_probability(probs)``: ``(batch,)`` probability of class 1 from ``(batch, 1)`` or
  ``(batch, 2)`` (for ROC/AUC, PR curves, thresholds);
- ``class_probabilities(probs)``: ``(batch, k)`` for any model (a sigmoid ``p`` becomes
  ``[1 - p, p]``);
- ``predicted_class(probs, threshold=0.5)``: int labels ``(batch,)``.
"""

from histolib.models.augmented import with_augmentation
from histolib.models.backbones import (
    BACKBONES,
    MIN_GRID,
    BackboneSpec,
    get_backbone,
    gradcam_layer_name,
    list_backbones,
)
from histolib.models.classifier import build_classifier, parameter_counts
from histolib.models.ensemble import build_ensemble
from histolib.models.fold import calibrate_batch_norm, fold_batch_norm
from histolib.models.mil import POOLINGS, attention_scores, build_mil_classifier, build_tile_encoder
from histolib.models.outputs import (
    class_probabilities,
    is_sigmoid,
    loss_for,
    positive_probability,
    predicted_class,
)
from histolib.models.registry import (
    MODELS,
    ModelEntry,
    build_model,
    check_options,
    list_models,
    model_options,
    register_model,
)
from histolib.models.seed import SEED_PCAM_PARAMS, build_seed_pcam_model, build_seed_subtype_model
from histolib.models.tiles import build_tile_classifier, tile_settings
from histolib.models.weights import WeightsNotFoundError, write_application_weights

__all__ = [
    "BACKBONES",
    "MODELS",
    "MIN_GRID",
    "POOLINGS",
    "SEED_PCAM_PARAMS",
    "BackboneSpec",
    "ModelEntry",
    "WeightsNotFoundError",
    "attention_scores",
    "build_classifier",
    "build_ensemble",
    "build_mil_classifier",
    "build_tile_classifier",
    "check_options",
    "tile_settings",
    "build_model",
    "build_seed_pcam_model",
    "build_seed_subtype_model",
    "build_tile_encoder",
    "calibrate_batch_norm",
    "class_probabilities",
    "fold_batch_norm",
    "get_backbone",
    "gradcam_layer_name",
    "is_sigmoid",
    "list_backbones",
    "list_models",
    "loss_for",
    "model_options",
    "parameter_counts",
    "positive_probability",
    "predicted_class",
    "with_augmentation",
    "register_model",
    "write_application_weights",
]
