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

import inspect
import warnings

import keras
import numpy as np
from scipy import stats
from tf_keras_vis.gradcam import Gradcam
from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
from tf_keras_vis.saliency import Saliency
from tf_keras_vis.utils import find_layer
from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
from tf_keras_vis.utils.scores import BinaryScore, CategoricalScore

__all__ = [
    "METHODS",
    "Explainer",
    "class_score",
    "attention_map",
    "overlay",
    "energy_in_mask",
    "pointing_game",
    "localisation",
    "randomise_weights",
    "randomisation_check",
]

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


def _check_images(images) -> np.ndarray:
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
        images = _check_images(images)
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
                "Grad-CAM reaches one nested backbone. Received: layer={layer!r}"
            )
        if name not in self._exposed:
            rebuilt, target = _expose(self.model, path)
            self._exposed[name] = (type(self._visualiser)(rebuilt), target)
        visualiser, target = self._exposed[name]
        return visualiser(score, [images], penultimate_layer=target,
                          seek_penultimate_conv_layer=False)[0]


def _takes_attention_scores(layer) -> bool:
    return (not isinstance(layer, keras.Model)
            and "return_attention_scores" in inspect.signature(layer.call).parameters)


def attention_map(model: keras.Model, images, *, layer: str | None = None,
                  batch_size: int = 64) -> np.ndarray:
    """Attention received per token of an attention layer, drawn onto the image.

    The layer (one of `histolib.layers`: ``SelfAttention``, ``ThresholdedAttention``,
    ``DifferentialAttention``) is called on its own input, computed by a sub-model of ``model``,
    with ``return_attention_scores=True``. Its scores ``(batch, n, n)`` or
    ``(batch, heads, n, n)`` (query by key) are averaged over heads and queries, giving how much
    attention each of the ``n = h' * w'`` tokens receives; that is reshaped to the feature grid
    (row-major, as `histolib.layers.tokens.to_tokens` flattens it), resized bilinearly to the
    image and scaled to [0, 1] per image. Differential attention's scores may be negative; the
    scaling maps the least attended token to 0 either way.

    Args:
        model: a model holding one attention layer (or several: name one with ``layer``).
        images: ``(batch, h, w, 3)`` float in [0, 1].
        layer: the attention layer's name; ``None`` when there is exactly one.
        batch_size: images per forward pass.

    Returns:
        ``(batch, h, w)`` float32 in [0, 1].

    Raises:
        ValueError: no (or more than one unnamed) attention layer; a token count that is not a
            square when the layer's input is already ``(batch, n, c)``.
    """
    images = _check_images(images)
    candidates = [item for item in model.layers if _takes_attention_scores(item)]
    if layer is not None:
        candidates = [item for item in candidates if item.name == layer]
    if len(candidates) != 1:
        found = [item.name for item in model.layers if _takes_attention_scores(item)]
        raise ValueError(
            "Expected exactly one attention layer (a layer whose call takes "
            f"return_attention_scores) in model {model.name!r}. Received: layer={layer!r}; "
            f"attention layers found: {found}"
        )
    attention = candidates[0]
    features_in = attention.input[0] if isinstance(attention.input, (list, tuple)) else attention.input
    if len(features_in.shape) == 4:
        grid = tuple(features_in.shape[1:3])
    else:
        n = features_in.shape[1]
        side = int(round(np.sqrt(n)))
        if side * side != n:
            raise ValueError(
                f"Attention layer {attention.name!r} takes {n} tokens, not a square grid; feed it "
                f"a (batch, h, w, c) feature map. Received: input shape {tuple(features_in.shape)}"
            )
        grid = (side, side)
    features = keras.Model(model.input, features_in)
    maps = []
    for start in range(0, len(images), batch_size):
        x = features(images[start:start + batch_size], training=False)
        _, scores = attention(x, return_attention_scores=True)
        scores = keras.ops.convert_to_numpy(keras.ops.cast(scores, "float32"))
        if scores.ndim == 4:  # (b, heads, n, n) -> (b, n, n)
            scores = scores.mean(axis=1)
        received = scores.mean(axis=1).reshape(-1, *grid, 1)  # (b, n) -> (b, h', w', 1)
        resized = keras.ops.image.resize(received, images.shape[1:3], interpolation="bilinear", antialias=False)
        maps.append(keras.ops.convert_to_numpy(resized)[..., 0])
    maps = np.concatenate(maps)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)


def overlay(image, heatmap, *, alpha: float = 0.45, cmap=None) -> np.ndarray:
    """An image with a heatmap blended over it, as an array ready for ``imshow`` or saving.

    Args:
        image: ``(h, w, 3)`` uint8, or float in [0, 1].
        heatmap: ``(h, w)`` float in [0, 1].
        alpha: the heatmap's weight in the blend.
        cmap: a matplotlib colour map or its name; default `histolib.plots.OVERLAY_CMAP`
            (chosen for H&E: no pink or purple).

    Returns:
        ``(h, w, 3)`` float32 in [0, 1].
    """
    import matplotlib

    from histolib.plots import OVERLAY_CMAP

    image = np.asarray(image)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if image.ndim != 3 or image.shape[-1] != 3 or heatmap.shape != image.shape[:2]:
        raise ValueError(
            "Expected image (h, w, 3) and heatmap (h, w) of the same h and w. "
            f"Received: image.shape={image.shape}, heatmap.shape={heatmap.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"Expected alpha in [0, 1]. Received: alpha={alpha}")
    base = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    colours = matplotlib.colormaps.get_cmap(cmap or OVERLAY_CMAP)(np.clip(heatmap, 0.0, 1.0))[..., :3].astype(np.float32)
    return np.clip((1.0 - alpha) * base + alpha * colours, 0.0, 1.0)


def _check_maps_masks(maps, masks):
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    if maps.ndim != 3 or maps.shape != masks.shape:
        raise ValueError(
            "Expected maps and masks of the same shape (batch, h, w). "
            f"Received: maps.shape={maps.shape}, masks.shape={masks.shape}"
        )
    if np.any(maps < 0):
        raise ValueError("Expected non-negative maps (energy). Received: a map with negative values")
    return maps, masks


def energy_in_mask(maps, masks) -> np.ndarray:
    """Share of each map's energy (sum of its values) that falls inside the mask.

    An all-zero map carries no information and counts as uniform: its share is the mask's area
    fraction, the chance level.

    Args:
        maps: ``(batch, h, w)`` non-negative.
        masks: ``(batch, h, w)`` bool.

    Returns:
        ``(batch,)`` float64 in [0, 1].
    """
    maps, masks = _check_maps_masks(maps, masks)
    total = maps.sum(axis=(1, 2))
    inside = (maps * masks).sum(axis=(1, 2))
    chance = masks.mean(axis=(1, 2))
    return np.where(total > 0, inside / np.where(total > 0, total, 1.0), chance)


def pointing_game(maps, masks, *, tolerance: int = 0) -> np.ndarray:
    """Whether each map's maximum falls in the mask (Zhang et al. 2016, the pointing game).

    Args:
        maps: ``(batch, h, w)`` non-negative.
        masks: ``(batch, h, w)`` bool, each with at least one pixel.
        tolerance: pixels by which the mask is grown before the test (the paper used 15 at 224).

    Returns:
        ``(batch,)`` bool. An all-zero map has no maximum and misses.

    Raises:
        ValueError: when a mask is empty (there is nothing to point at).
    """
    from scipy import ndimage

    maps, masks = _check_maps_masks(maps, masks)
    empty = np.flatnonzero(~masks.any(axis=(1, 2)))
    if empty.size:
        raise ValueError(f"Expected a lesion in every mask. Received: empty masks at indices {empty.tolist()}")
    if tolerance > 0:
        disk = np.hypot(*np.mgrid[-tolerance:tolerance + 1, -tolerance:tolerance + 1]) <= tolerance
        masks = np.stack([ndimage.binary_dilation(mask, structure=disk) for mask in masks])
    flat = maps.reshape(len(maps), -1)
    peak = flat.argmax(axis=1)
    return masks.reshape(len(masks), -1)[np.arange(len(maps)), peak] & (flat.max(axis=1) > 0)


def localisation(maps, masks, *, tolerance: int = 0) -> dict:
    """How well maps find known lesions, over the images whose mask is not empty.

    Returns:
        ``{"n": images scored, "energy_in_mask": mean share of energy inside the mask,
        "chance": mean mask area fraction (the share of a uniform map),
        "pointing_game": hit rate}``.
    """
    maps, masks = _check_maps_masks(maps, masks)
    keep = masks.any(axis=(1, 2))
    if not keep.any():
        raise ValueError("Expected at least one non-empty mask. Received: every mask empty")
    maps, masks = maps[keep], masks[keep]
    return {
        "n": int(keep.sum()),
        "energy_in_mask": float(energy_in_mask(maps, masks).mean()),
        "chance": float(masks.mean()),
        "pointing_game": float(pointing_game(maps, masks, tolerance=tolerance).mean()),
    }


def randomise_weights(model: keras.Model, *, seed: int = 0) -> keras.Model:
    """A copy of ``model`` whose trainable weights are redrawn at random (the model stays as is).

    Each trainable tensor is replaced by independent normal draws with that tensor's own mean and
    standard deviation (a constant tensor, such as a single bias, uses its absolute value), so activations keep their trained scale while everything learned is gone;
    non-trainable state (batch-norm moving statistics) is kept. Drawn from
    ``numpy.random.default_rng(seed)``, so the randomised model is reproducible. (Adebayo et al.
    re-initialise from the layers' initialisers; Keras 3 initialisers without a seed draw from its
    global seed generator, which this library leaves alone.)
    """
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    rng = np.random.default_rng(seed)
    for variable in clone.trainable_weights:
        value = keras.ops.convert_to_numpy(variable).astype(np.float64)
        scale = value.std() if value.std() > 0 else abs(value.mean())  # one value: its size
        variable.assign(rng.normal(value.mean(), scale, size=value.shape).astype(variable.dtype))
    return clone


def randomisation_check(model: keras.Model, images, score=1, *, method: str = "gradcam",
                        layer: str | None = None, masks=None, seed: int = 0) -> dict:
    """Model-randomisation sanity check (Adebayo et al. 2018, https://arxiv.org/abs/1810.03292).

    A map that explains the model must change when the model's weights are randomised; one that
    only reflects the image (an edge detector) does not. Maps of ``model`` and of
    `randomise_weights` (``model``, ``seed``) are compared per image by Spearman rank correlation.

    Args:
        model, images, score, method, layer: as for `Explainer`.
        masks: optional ``(batch, h, w)`` lesion masks; when given, `localisation` of both models'
            maps is reported too.
        seed: seeds the randomisation (and SmoothGrad's noise).

    Returns:
        ``{"spearman": per-image rank correlations (list; NaN where a map is constant),
        "spearman_mean": their mean over defined values, "spearman_median", "n_defined"}``, plus
        ``"trained"`` and ``"randomised"`` localisation dicts when ``masks`` is given.
    """
    images = _check_images(images)
    randomised = randomise_weights(model, seed=seed)
    trained_maps = Explainer(model, method)(score, images, layer=layer, seed=seed)
    random_maps = Explainer(randomised, method)(score, images, layer=layer, seed=seed)
    rho = []
    for a, b in zip(trained_maps, random_maps):
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            rho.append(float("nan"))
        else:
            rho.append(float(stats.spearmanr(a.ravel(), b.ravel()).statistic))
    rho_array = np.asarray(rho)
    defined = rho_array[~np.isnan(rho_array)]
    result = {
        "spearman": rho,
        "spearman_mean": float(defined.mean()) if defined.size else float("nan"),
        "spearman_median": float(np.median(defined)) if defined.size else float("nan"),
        "n_defined": int(defined.size),
    }
    if masks is not None:
        result["trained"] = localisation(trained_maps, masks)
        result["randomised"] = localisation(random_maps, masks)
    return result
