"""The numbers that say whether a map points at the lesion, and whether it explains the model.

`localisation` measures maps against known lesion masks (the share of a map's energy inside the
mask, the pointing game); `randomisation_check` is the model-randomisation sanity check of
Adebayo et al. 2018: a map that explains a model must change when its weights are randomised.
`instance_auc` does for the attention weights of a multiple-instance model what `localisation`
does for a map: how well they find the positive tiles of a bag (its ``top1`` is the pointing game).
"""

from __future__ import annotations

import keras
import numpy as np
from scipy import ndimage, stats
from sklearn.metrics import roc_auc_score

from histolib.saliency.explain import Explainer, check_images


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
    images = check_images(images)
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


def instance_auc(scores, mask, instance_labels, bag_labels) -> dict:
    """How well per-instance scores (attention weights) find the positive instances of positive bags.

    Multiple-instance learning trains on bag labels only; where the instance labels are known
    (PCam bags: which patches hold tumour), this measures what the instance scores learned.
    Only positive bags count (a negative bag has no positive instance to find).

    Args:
        scores: ``(b, n)`` a score per instance, higher meaning "more likely positive".
        mask: ``(b, n)`` bool, True on real instances.
        instance_labels: ``(b, n)`` int, 1 on positive instances (anything on padding).
        bag_labels: ``(b,)`` int.

    Returns:
        ``auc``: the mean over positive bags holding both kinds of instance of the ROC AUC of
        the scores within the bag (0.5: no better than chance; scale-free, so bags of any size
        count alike); ``n_bags``: how many bags that mean is over; ``top1``: the share of
        positive bags whose highest-scoring instance is positive (chance: the share of
        positive instances, ``chance_top1``).
    """
    scores, mask = np.asarray(scores, np.float64), np.asarray(mask, bool)
    labels, bag_labels = np.asarray(instance_labels), np.asarray(bag_labels).reshape(-1)
    if not scores.shape == mask.shape == labels.shape or scores.ndim != 2 or len(bag_labels) != len(scores):
        raise ValueError("scores, mask and instance_labels must be (bags, instances) and bag_labels (bags,). "
                         f"Received: shapes {scores.shape}, {mask.shape}, {labels.shape}, {bag_labels.shape}")
    aucs, top, chance = [], [], []
    for i in np.flatnonzero(bag_labels == 1):
        y, s = labels[i][mask[i]], scores[i][mask[i]]
        if 0 < y.sum() < len(y):
            aucs.append(roc_auc_score(y, s))
        top.append(float(y[np.argmax(s)] == 1))
        chance.append(float(y.mean()))
    return {"auc": float(np.mean(aucs)) if aucs else float("nan"), "n_bags": len(aucs),
            "top1": float(np.mean(top)) if top else float("nan"),
            "chance_top1": float(np.mean(chance)) if chance else float("nan")}
