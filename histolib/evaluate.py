"""Evaluation: predictions, metrics with intervals, thresholds, and paired comparisons.

Everything is computed by scikit-learn (``sklearn.metrics``) and SciPy (``scipy.stats``); this
module only arranges the calls and their inputs.

Probabilities are handled as ``probs`` of shape ``(n, k)`` with ``k >= 2`` columns, one per
class; a sigmoid model's ``(n, 1)`` output becomes ``[1 - p, p]``. For two classes the score of
the positive class (label 1, e.g. tumour) is ``probs[:, 1]`` and a case is called positive when
that score is ``> threshold`` (as `histolib.models.predicted_class` calls it); with more classes the call is the argmax and metrics are macro
averages over classes.
"""

from __future__ import annotations


import keras
import numpy as np
from scipy import stats
from sklearn import metrics as skm
from sklearn.metrics import balanced_accuracy_score, roc_auc_score, roc_curve

from histolib.models import class_probabilities, predicted_class

#: The metrics `classification_metrics` reports as scalars (and `bootstrap_intervals` can bound).
SCALAR_METRICS = ("accuracy", "precision", "recall", "f1", "balanced_accuracy", "auc")


def as_class_probs(outputs) -> np.ndarray:
    """Model outputs ``(n,)``, ``(n, 1)`` sigmoid or ``(n, k)`` softmax as ``(n, k>=2)`` float64.

    A sigmoid ``p`` becomes ``[1 - p, p]`` (`histolib.models.class_probabilities`).
    """
    p = np.asarray(outputs, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2:
        raise ValueError(f"expected outputs of shape (n,), (n, 1) or (n, k). Received: shape={p.shape}")
    return class_probabilities(p).astype(np.float64)


def load_model(path):
    """Load a ``.keras`` model saved by histolib, for inference (``compile=False``).

    (``import histolib`` has registered its layers, so this is ``keras.saving.load_model`` with
    an error that names the file.)

    Raises:
        ValueError: ``path`` is not a readable ``.keras`` model (the message names it).
    """
    try:
        return keras.models.load_model(path, compile=False)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"cannot load a Keras model from {path}: {error}") from error


def dihedral_views(images):
    """The 8 flips/rotations of a batch ``(b, h, w, c)`` with ``h == w``, as a list of 8 tensors.

    The dihedral group of the square: rotations by 0, 90, 180 and 270 degrees (anticlockwise),
    each without and with a left-right flip. Tissue has no preferred orientation, so a patch's
    label is the same in all 8 views. Computed with ``keras.ops``: the views are tensors of the
    Keras backend in use (TensorFlow or JAX).
    """
    images = keras.ops.convert_to_tensor(images)
    if len(images.shape) != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(
            "test-time augmentation needs square images (batch, h, h, channels). "
            f"Received: shape={tuple(images.shape)}"
        )
    views = []
    for k in range(4):
        rotated = keras.ops.rot90(images, k=k, axes=(1, 2))
        views += [rotated, keras.ops.flip(rotated, axis=2)]
    return views


def _replicas() -> int:
    """Devices a batch is split over under the Keras distribution in force (1 without one)."""
    distribution = keras.distribution.distribution()
    return 1 if distribution is None else int(np.prod(distribution.device_mesh.shape))


def _predict_batch(model, images, size: int, tta: bool) -> np.ndarray:
    """``model``'s float32 outputs ``(n, k)`` for ``images`` ``(n, h, w, c)``, ``n <= size``
    (or a dict of such arrays, as a multiple-instance model takes: bags and their masks).

    The batch is zero-padded to ``size`` rows, so every call has the same shape and the
    model's predict function (a ``tf.function`` or a ``jax.jit``) is traced once.
    """
    n = len(keras.tree.flatten(images)[0])
    if n < size:
        images = keras.tree.map_structure(
            lambda a: np.concatenate([a, np.zeros((size - n, *a.shape[1:]), a.dtype)]), images)
    if not tta:
        return np.asarray(model.predict_on_batch(images), np.float32)[:n]
    if not isinstance(images, np.ndarray):
        raise ValueError("test-time augmentation needs images (batch, h, h, channels). "
                         f"Received: inputs of type {type(images).__name__}")
    views = keras.ops.concatenate(dihedral_views(images), axis=0)  # (8 * size, h, w, c)
    out = np.asarray(model.predict_on_batch(views), np.float32)
    return out.reshape(8, size, *out.shape[1:]).mean(axis=0)[:n]


def predict(model, dataset, *, tta: bool = False, steps: int | None = None, progress: bool = False):
    """Labels and class probabilities of ``model`` over ``dataset``, under any Keras backend.

    Batches go through ``model.predict_on_batch`` (no TensorFlow outside the ``tf.data``
    input), each padded to the size of the first (rounded up to a multiple of the devices of
    the Keras distribution in force), so the model is compiled once.

    Args:
        model: a Keras model whose output is probabilities (sigmoid ``(b, 1)`` or softmax).
        dataset: ``tf.data.Dataset`` of ``(images (b, h, w, 3) float32, labels (b,) int)``, or
            of ``(inputs, labels)`` with ``inputs`` a dict of arrays (bags and their masks,
            `histolib.data.bags.dataset`).
        tta: average the probabilities over the 8 `dihedral_views` of every image.
        steps: stop after this many batches (for repeated datasets); default: all.
        progress: show a Keras progress bar over batches.

    Returns:
        ``(y_true (n,) int64, probs (n, k) float64)`` with ``k >= 2`` (see `as_class_probs`).
    """
    if steps is not None:
        dataset = dataset.take(steps)
    total = steps
    if total is None:
        cardinality = int(dataset.cardinality())
        total = cardinality if cardinality >= 0 else None
    bar = keras.utils.Progbar(total, unit_name="batch") if progress else None
    labels, outputs, size = [], [], None
    for i, (images, y) in enumerate(dataset.as_numpy_iterator()):
        n = len(keras.tree.flatten(images)[0])
        if size is None:
            size = -(-n // _replicas()) * _replicas()
        for start in range(0, n, size):  # a later batch larger than the first
            part = keras.tree.map_structure(lambda a: a[start:start + size], images)
            outputs.append(_predict_batch(model, part, size, tta))
        labels.append(np.asarray(y).reshape(-1))
        if bar is not None:
            bar.update(i + 1)
    if not labels:
        raise ValueError("the dataset gave no batches to predict on")
    return np.concatenate(labels).astype(np.int64), as_class_probs(np.concatenate(outputs))


def choose_threshold(y_true, scores) -> dict:
    """The decision threshold maximising Youden's J = TPR - FPR (balanced accuracy is (1 + J) / 2).

    Use it on validation data only, never on test data. The threshold is placed halfway
    between the score at the best ROC point and the next lower score, so that a small change
    in a model's output does not flip the cases sitting exactly on it.

    Args:
        y_true: ``(n,)`` labels in {0, 1}.
        scores: ``(n,)`` scores of class 1 (higher means more likely positive).

    Returns:
        ``{"threshold": t, "method": "youden_j", "youden_j": J, "balanced_accuracy": b}``;
        ``t`` is 0.5 (method ``"default"``) when the labels hold only one class.
    """
    y_true = np.asarray(y_true).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(np.unique(y_true)) < 2:
        return {"threshold": 0.5, "method": "default", "reason": "validation labels hold one class"}
    fpr, tpr, thresholds = roc_curve(y_true, scores, drop_intermediate=False)
    best = int(np.argmax(tpr - fpr))
    if best == 0:
        threshold = 0.5
    elif best + 1 < len(thresholds):
        threshold = float((thresholds[best] + thresholds[best + 1]) / 2)
    else:
        threshold = float(np.nextafter(thresholds[best], -np.inf))
    return {
        "threshold": threshold,
        "method": "youden_j",
        "youden_j": float(tpr[best] - fpr[best]),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, scores > threshold)),
    }


def predicted_labels(probs, threshold: float = 0.5) -> np.ndarray:
    """Class calls ``(n,)``: ``probs[:, 1] > threshold`` for two classes, the argmax otherwise
    (`histolib.models.predicted_class`)."""
    return predicted_class(as_class_probs(probs), threshold).astype(np.int64)


def _auc(y_true, probs) -> float:

    k = probs.shape[1]
    present = np.unique(y_true)
    if len(present) < 2 or (k > 2 and len(present) < k):
        return float("nan")
    if k == 2:
        return float(roc_auc_score(y_true, probs[:, 1]))
    return float(roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=np.arange(k)))


def _metric(name: str, y_true, probs, y_pred) -> float:
    """One of `SCALAR_METRICS` through sklearn.metrics (binary: of class 1; else macro)."""
    if name == "auc":
        return _auc(y_true, probs)
    if name == "accuracy":
        return float(skm.accuracy_score(y_true, y_pred))
    if name == "balanced_accuracy":
        # The mean recall over the classes present in y_true: balanced_accuracy_score's value,
        # without its warning when a small test split lacks a class the model predicts.
        return float(skm.recall_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0))
    k = probs.shape[1]
    kwargs = {"average": "binary"} if k == 2 else {"average": "macro", "labels": np.arange(k)}
    score = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}[name]
    return float(score(y_true, y_pred, zero_division=0, **kwargs))


def classification_metrics(y_true, probs, *, threshold: float = 0.5, class_names=None) -> dict:
    """Accuracy, precision, recall, F1, balanced accuracy, ROC AUC, confusion matrix, report.

    Args:
        y_true: ``(n,)`` integer labels.
        probs: class probabilities ``(n, k)`` (or a sigmoid's ``(n,)`` / ``(n, 1)``).
        threshold: for two classes, the positive-class score above which a case is
            called positive (read it from training with `read_threshold`; never tune it here).
        class_names: ``k`` names for the report; default ``"0"``, ``"1"``, ...

    Returns:
        A JSON-ready dict: ``n``, ``threshold`` (None for more than two classes), ``average``
        (``"binary"``: of class 1; ``"macro"``: unweighted mean over classes), the scalars of
        `SCALAR_METRICS`, ``brier`` (two classes), ``auc_per_class`` (more than two classes,
        one-vs-rest), ``confusion_matrix`` (rows true, columns predicted) and
        ``classification_report`` (scikit-learn's, as a dict).
    """
    y_true = np.asarray(y_true).reshape(-1).astype(np.int64)
    probs = as_class_probs(probs)
    if len(y_true) != len(probs):
        raise ValueError(f"y_true and probs must have the same length. Received: {len(y_true)} and {len(probs)}")
    k = probs.shape[1]
    if y_true.min(initial=0) < 0 or y_true.max(initial=0) >= k:
        raise ValueError(f"labels must lie in 0..{k - 1} for {k} classes. Received: labels {np.unique(y_true).tolist()}")
    names = [str(c) for c in (class_names if class_names is not None else range(k))]
    if len(names) != k:
        raise ValueError(f"class_names must name {k} classes. Received: class_names={list(class_names)!r}")
    y_pred = predicted_labels(probs, threshold)
    out = {"n": int(len(y_true)), "threshold": float(threshold) if k == 2 else None,
           "average": "binary" if k == 2 else "macro"}
    out.update({name: _metric(name, y_true, probs, y_pred) for name in SCALAR_METRICS})
    if k == 2:
        out["brier"] = float(skm.brier_score_loss(y_true, probs[:, 1]))
    else:
        out["auc_per_class"] = {
            name: (float(skm.roc_auc_score(y_true == c, probs[:, c])) if 0 < (y_true == c).sum() < len(y_true)
                   else float("nan"))
            for c, name in enumerate(names)
        }
    out["confusion_matrix"] = skm.confusion_matrix(y_true, y_pred, labels=np.arange(k)).tolist()
    out["classification_report"] = skm.classification_report(
        y_true, y_pred, labels=np.arange(k), target_names=names, output_dict=True, zero_division=0)
    return out


def bootstrap_intervals(y_true, probs, *, threshold: float = 0.5, metrics=SCALAR_METRICS,
                        n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Percentile bootstrap intervals of metrics, resampling cases with replacement.

    Runs ``scipy.stats.bootstrap`` over case indices (so labels and scores stay paired) with a
    ``numpy.random.Generator`` seeded by ``seed``; the global RNG is not touched.

    Returns:
        ``{metric: [low, high]}`` for each name in ``metrics`` (from `SCALAR_METRICS`).
    """
    y_true = np.asarray(y_true).reshape(-1).astype(np.int64)
    probs = as_class_probs(probs)
    unknown = sorted(set(metrics) - set(SCALAR_METRICS))
    if unknown:
        raise ValueError(f"metrics must be among {SCALAR_METRICS}. Received unknown: {unknown}")
    y_pred = predicted_labels(probs, threshold)
    out = {}
    for name in metrics:
        def statistic(index, name=name):
            return _metric(name, y_true[index], probs[index], y_pred[index])

        result = stats.bootstrap(
            (np.arange(len(y_true)),), statistic, n_resamples=n_resamples, confidence_level=confidence,
            method="percentile", vectorized=False, rng=np.random.default_rng(seed),
        )
        out[name] = [float(result.confidence_interval.low), float(result.confidence_interval.high)]
    return out


def evaluate_model(model, dataset, *, threshold: float = 0.5, tta: bool = False, class_names=None,
                   steps: int | None = None, bootstrap: int = 0, seed: int = 0, progress: bool = False) -> dict:
    """`predict` then `classification_metrics` (and `bootstrap_intervals` when ``bootstrap`` > 0).

    Returns the metrics dict, with ``tta`` and, when asked, ``ci95`` (``{metric: [low, high]}``
    from ``bootstrap`` resamples).
    """
    y_true, probs = predict(model, dataset, tta=tta, steps=steps, progress=progress)
    out = classification_metrics(y_true, probs, threshold=threshold, class_names=class_names)
    out["tta"] = bool(tta)
    if bootstrap:
        out["ci95"] = bootstrap_intervals(y_true, probs, threshold=threshold, n_resamples=bootstrap, seed=seed)
    return out


def paired_comparison(baseline, variant) -> dict:
    """Compare two variants scored on the same training seeds, with paired tests.

    Args:
        baseline: ``(s,)`` scores of the baseline, one per training seed.
        variant: ``(s,)`` scores of the variant on the same seeds, in the same order.

    Returns:
        ``n``, ``mean_baseline``, ``mean_variant``, ``mean_difference`` (variant - baseline),
        ``ttest_rel`` (``scipy.stats.ttest_rel``: statistic, pvalue) and ``wilcoxon``
        (``scipy.stats.wilcoxon``: statistic, pvalue; with 5 seeds or fewer its two-sided p
        cannot go below 0.0625, so it alone cannot show a difference there). Where every
        seed's difference is the same, the t statistic is undefined (no spread): statistic
        NaN, and p-value 1.0 if the differences are all zero, else NaN.
    """
    a = np.asarray(baseline, dtype=np.float64).reshape(-1)
    b = np.asarray(variant, dtype=np.float64).reshape(-1)
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(
            "baseline and variant need the same number (>= 2) of per-seed scores. "
            f"Received: {len(a)} and {len(b)}"
        )
    diff = b - a
    if np.allclose(diff, diff[0], rtol=0, atol=1e-12):
        t = {"statistic": float("nan"), "pvalue": 1.0 if abs(diff[0]) <= 1e-12 else float("nan")}
    else:
        tr = stats.ttest_rel(b, a)
        t = {"statistic": float(tr.statistic), "pvalue": float(tr.pvalue)}
    if np.allclose(diff, 0):
        w = {"statistic": float("nan"), "pvalue": 1.0}
    else:
        wr = stats.wilcoxon(b, a)
        w = {"statistic": float(wr.statistic), "pvalue": float(wr.pvalue)}
    return {
        "n": int(len(a)),
        "mean_baseline": float(a.mean()),
        "mean_variant": float(b.mean()),
        "mean_difference": float(diff.mean()),
        "ttest_rel": t,
        "wilcoxon": w,
    }


def corrected_cv_comparison(baseline, variant, *, test_fraction: float) -> dict:
    """Compare two recipes scored on the same cross-validation folds (``k`` folds x ``r`` repeats),
    with the corrected resampled t-test of Nadeau and Bengio (2003; Bouckaert and Frank 2004 for
    repeated k-fold): folds share training data, so the plain paired t-test is too confident; the
    variance of the mean difference is taken as ``(1 / (k r) + n_test / n_train) s^2``.

    Args:
        baseline, variant: ``(k r,)`` per-fold scores, in the same fold order.
        test_fraction: ``n_test / n`` of a fold (``1 / k``); ``n_test / n_train`` follows from it.

    Returns:
        ``n`` (folds), ``mean_baseline``, ``mean_variant``, ``mean_difference`` (variant -
        baseline), ``statistic``, ``pvalue`` (two-sided, ``k r - 1`` degrees of freedom) and the
        95 % interval of the mean difference, ``interval``.
    """
    a = np.asarray(baseline, dtype=np.float64).reshape(-1)
    b = np.asarray(variant, dtype=np.float64).reshape(-1)
    if len(a) != len(b) or len(a) < 2 or not 0 < test_fraction < 1:
        raise ValueError("baseline and variant need the same number (>= 2) of per-fold scores and 0 < test_fraction "
                         f"< 1. Received: {len(a)} and {len(b)} scores, test_fraction={test_fraction!r}")
    diff, n = b - a, len(a)
    se = np.sqrt((1.0 / n + test_fraction / (1.0 - test_fraction)) * diff.var(ddof=1))
    t = float(diff.mean() / se) if se > 0 else float("nan")
    half = float(stats.t.ppf(0.975, n - 1) * se)
    return {"n": n, "mean_baseline": float(a.mean()), "mean_variant": float(b.mean()),
            "mean_difference": float(diff.mean()), "statistic": t,
            "pvalue": float(2 * stats.t.sf(abs(t), n - 1)) if se > 0 else float("nan"),
            "interval": [float(diff.mean() - half), float(diff.mean() + half)]}
