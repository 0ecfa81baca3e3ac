"""Gradient maps through tf-keras-vis: `Explainer` (Grad-CAM, Grad-CAM++, saliency, SmoothGrad).

Keras 3 notes (tf-keras-vis 0.8.7 was written for tf.keras 2; it works under Keras 3 with four
workarounds, kept here and nowhere else):

- A single-input model called with a list of one tensor makes Keras 3 warn that the input
  structure does not match; tf-keras-vis always passes a list, so `Explainer` silences exactly
  that warning around the call.
- Grad-CAM on a layer inside a nested model (a ``keras.applications`` backbone used as one layer
  of the classifier) fails in Keras 3 with "Output ... is not connected to `inputs`": the inner
  layer's output lives in the backbone's own graph. `Explainer` rebuilds the outer graph with
  ``keras.models.clone_model(..., call_function=...)`` (sharing the layers, so the weights too),
  calling the backbone through a twin that also returns the wanted layer's output, and hands that
  tensor to tf-keras-vis as its penultimate layer.
- Under a ``mixed_bfloat16`` policy Grad-CAM++ fails ("cannot compute Mul ... bfloat16"):
  tf-keras-vis only recognises float16 as mixed precision and multiplies bfloat16 gradients by
  float32 scores. `Explainer` explains a float32 twin of such a model (the same layers rebuilt
  with a float32 policy, the same weights), which also keeps bfloat16's 8-bit mantissa out of
  the gradients.
- SmoothGrad draws its noise from NumPy's global generator (``np.random.normal``); `Explainer`
  seeds it from the call's ``seed`` and restores the global state afterwards, so the maps are
  reproducible and the caller's random stream is left as it was.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
from tf_keras_vis.gradcam import Gradcam
from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
from tf_keras_vis.saliency import Saliency
from tf_keras_vis.utils import find_layer
from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
from tf_keras_vis.utils.scores import BinaryScore, CategoricalScore

METHODS = ("gradcam", "gradcam++", "saliency", "smoothgrad")

_INPUT_STRUCTURE_WARNING = "The structure of `inputs` doesn't match the expected structure"


def class_score(model: keras.Model, target: int):
    """The tf-keras-vis score for class ``target`` of a probability model.

    A sigmoid head ``(batch, 1)`` scores class 1 as its output and class 0 as its negation
    (``BinaryScore``); a softmax head ``(batch, k)`` scores column ``target``
    (``CategoricalScore``). With ``ReplaceToLinear`` the output is the logit, as Grad-CAM wants.

    Raises:
        ValueError: when ``target`` is not a class of the model's output.
    """
    width = model.outputs[0].shape[-1]
    classes = 2 if width == 1 else width
    if not isinstance(target, (int, np.integer)) or not 0 <= target < classes:
        raise ValueError(
            f"Expected target to be a class index in [0, {classes}) for a model whose output "
            f"has shape {tuple(model.outputs[0].shape)}. Received: target={target!r}"
        )
    return BinaryScore(bool(target)) if width == 1 else CategoricalScore(int(target))


def check_images(images) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            "Expected images of shape (batch, h, w, 3), float in [0, 1]. "
            f"Received: images.shape={images.shape}"
        )
    return images


def _layer_path(model: keras.Model, name: str) -> list:
    """The chain of layers ``[outer, ..., layer]`` from ``model`` down to the layer ``name``."""
    for layer in model.layers:
        if layer.name == name:
            return [layer]
        if isinstance(layer, keras.Model):
            inner = _layer_path(layer, name)
            if inner:
                return [layer, *inner]
    return []


def _all_layer_names(model: keras.Model) -> list:
    names = []
    for layer in model.layers:
        names.append(layer.name)
        if isinstance(layer, keras.Model):
            names.extend(_all_layer_names(layer))
    return names


def _last_conv_name(model: keras.Model) -> str:
    conv = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
            keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
    layer = find_layer(model, lambda layer: isinstance(layer, conv))
    if layer is None:
        raise ValueError(
            f"Model {model.name!r} has no convolutional layer for Grad-CAM; pass layer= the name "
            "of a layer with a (batch, h, w, channels) output."
        )
    return layer.name


def _expose(model: keras.Model, path: list):
    """``(model', tensor)``: ``model`` rebuilt on the same layers, and the output of ``path[-1]``.

    ``path`` is ``[nested_model, layer]``. The outer graph is replayed with ``clone_model``, the
    nested model called through a twin that also returns the inner layer's output, which then
    passes an ``Identity`` layer so tf-keras-vis can take it as the penultimate layer.
    """
    nested, inner = path
    twin = keras.Model(nested.inputs, [*nested.outputs, inner.output], name=f"{nested.name}_exposed")
    exposed = {}

    def call_function(layer, *args, **kwargs):
        if layer is not nested:
            return layer(*args, **kwargs)
        *outputs, feature = twin(*args, **kwargs)
        exposed["layer"] = keras.layers.Identity(name=f"{inner.name}_exposed")
        exposed["layer"](feature)
        return outputs[0] if len(outputs) == 1 else outputs

    rebuilt = keras.models.clone_model(model, clone_function=lambda layer: layer,
                                       call_function=call_function)
    return rebuilt, exposed["layer"]


def _float32_twin(model: keras.Model) -> keras.Model:
    """``model`` itself if it computes in float32 throughout, else a float32 copy of it."""

    def low_precision(layer) -> bool:
        inner = layer.layers if isinstance(layer, keras.Model) else []
        return layer.compute_dtype != "float32" or any(low_precision(item) for item in inner)

    if not any(low_precision(layer) for layer in model.layers):
        return model

    def float32_layer(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    twin = keras.models.clone_model(model, clone_function=float32_layer, recursive=True)
    twin.set_weights(model.get_weights())
    return twin


class Explainer:
    """Gradient maps of a Keras model through tf-keras-vis, in [0, 1] at the input size.

    Methods: ``"gradcam"`` (Selvaraju et al. 2017, https://arxiv.org/abs/1610.02391),
    ``"gradcam++"`` (Chattopadhyay et al. 2018, https://arxiv.org/abs/1710.11063),
    ``"saliency"`` (the absolute input gradient, Simonyan et al. 2013) and ``"smoothgrad"`` (its
    average over noisy copies, Smilkov et al. 2017, https://arxiv.org/abs/1706.03825).

    Args:
        model: a Keras model taking ``(batch, h, w, 3)`` images and returning probabilities,
            sigmoid ``(batch, 1)`` or softmax ``(batch, k)``. A model with a lower-precision
            policy (``mixed_bfloat16``) is explained through a float32 copy.
        method: one of `METHODS`.
        modifier: a tf-keras-vis model modifier (or list of them) applied to a clone of the
            model; the default ``ReplaceToLinear()`` scores logits instead of saturated
            probabilities. ``None`` explains the model as it is.
        smooth_samples: noisy copies per image for ``"smoothgrad"``.
        smooth_noise: noise standard deviation for ``"smoothgrad"``, as a fraction of each
            image's value range.

    Call arguments:
        score: a class index (see `class_score`), or any tf-keras-vis score / callable on the
            model's output.
        images: ``(batch, h, w, 3)`` float in [0, 1].
        layer: name of the layer Grad-CAM reads (its output must be ``(batch, h', w', c)``);
            ``None`` takes the last convolution. A layer inside a nested backbone works too.
            Ignored by the gradient methods.
        seed: seeds SmoothGrad's noise.

    Returns:
        ``(batch, h, w)`` float32 maps, each scaled to [0, 1] (an all-zero map stays zero).

    Grad-CAM weighs each channel by its gradient averaged over the map, which is faithful behind
    a global-average-pooling head. Behind ``Flatten`` + ``Dense`` the weights differ by position,
    and the average can flip a channel's sign: the map then lights everything but the evidence
    (its ReLU removes the lesion). Check maps against known masks with `localisation`, and try an
    earlier layer or ``"gradcam++"``.
    """

    def __init__(self, model: keras.Model, method: str = "gradcam", *, modifier=ReplaceToLinear(),
                 smooth_samples: int = 20, smooth_noise: float = 0.2):
        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(
                "Gradient maps come from tf-keras-vis, which differentiates with TensorFlow's "
                "GradientTape and runs under the TensorFlow backend only; start Python with "
                "KERAS_BACKEND=tensorflow to explain a model (a .keras file saved under JAX loads "
                f"there unchanged). Received: KERAS_BACKEND={keras.backend.backend()!r}"
            )
        if method not in METHODS:
            raise ValueError(f"Expected method to be one of {METHODS}. Received: method={method!r}")
        if smooth_samples < 1:
            raise ValueError(f"Expected smooth_samples >= 1. Received: smooth_samples={smooth_samples}")
        self.method = method
        self.smooth_samples = int(smooth_samples)
        self.smooth_noise = float(smooth_noise)
        visualiser = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus}.get(method, Saliency)
        self._visualiser = visualiser(_float32_twin(model), model_modifier=modifier)
        self.model = self._visualiser.model  # the modified clone (or the model itself)
        self._exposed = {}  # nested layer name -> (Gradcam over the rebuilt model, its layer)

    def __call__(self, score, images, *, layer: str | None = None, seed: int = 0) -> np.ndarray:
        images = check_images(images)
        if isinstance(score, (int, np.integer)):
            score = class_score(self.model, int(score))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_INPUT_STRUCTURE_WARNING)
            if self.method in ("gradcam", "gradcam++"):
                maps = self._cam(score, images, layer)
            elif self.method == "saliency":
                maps = self._visualiser(score, [images])[0]
            else:
                state = np.random.get_state()
                np.random.seed(seed)
                try:
                    maps = self._visualiser(score, [images], smooth_samples=self.smooth_samples,
                                            smooth_noise=self.smooth_noise)[0]
                finally:
                    np.random.set_state(state)
        return np.clip(np.asarray(maps, dtype=np.float32), 0.0, 1.0)

    def _cam(self, score, images, layer):
        name = _last_conv_name(self.model) if layer is None else layer
        path = _layer_path(self.model, name)
        if not path:
            raise ValueError(
                f"Model {self.model.name!r} has no layer named {name!r}. Received: layer={layer!r}; "
                f"layers: {_all_layer_names(self.model)}"
            )
        if len(path) == 1:
            return self._visualiser(score, [images], penultimate_layer=name,
                                    seek_penultimate_conv_layer=False)[0]
        if len(path) > 2:
            raise ValueError(
                f"Layer {name!r} sits {len(path) - 1} models deep ({[p.name for p in path]}); "
                f"Grad-CAM reaches one nested backbone. Received: layer={layer!r}"
            )
        if name not in self._exposed:
            rebuilt, target = _expose(self.model, path)
            self._exposed[name] = (type(self._visualiser)(rebuilt), target)
        visualiser, target = self._exposed[name]
        return visualiser(score, [images], penultimate_layer=target,
                          seek_penultimate_conv_layer=False)[0]
