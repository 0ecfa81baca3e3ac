"""histolib.evaluate on small cases whose answers can be worked out by hand."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from histolib import evaluate

# 4 negatives, 4 positives; at threshold 0.5: TN 3, FP 1, FN 1, TP 3.
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
S = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])


def test_binary_metrics_match_hand_counts():
    m = evaluate.classification_metrics(Y, S, threshold=0.5)
    assert m["confusion_matrix"] == [[3, 1], [1, 3]]
    assert m["n"] == 8 and m["average"] == "binary" and m["threshold"] == 0.5
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)
    assert m["balanced_accuracy"] == pytest.approx(3 / 4)
    # 16 positive-negative pairs; only (0.4 vs 0.6) is ranked wrongly.
    assert m["auc"] == pytest.approx(15 / 16)
    assert m["brier"] == pytest.approx(np.mean((S - Y) ** 2))
    assert m["classification_report"]["1"]["support"] == 4
    # A sigmoid's (n, 1) output and (n, 2) probabilities give the same answer.
    assert evaluate.classification_metrics(Y, S[:, None])["auc"] == m["auc"]
    assert evaluate.classification_metrics(Y, np.stack([1 - S, S], 1))["f1"] == m["f1"]


def test_threshold_changes_the_calls_not_the_auc():
    m = evaluate.classification_metrics(Y, S, threshold=0.35)
    assert m["confusion_matrix"] == [[3, 1], [0, 4]]  # 0.4 now called positive
    assert m["recall"] == 1.0 and m["precision"] == pytest.approx(4 / 5)
    assert m["auc"] == pytest.approx(15 / 16)


def test_multiclass_metrics_are_macro_averages():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([
        [0.8, 0.1, 0.1], [0.2, 0.7, 0.1],  # class 0: right, wrong (called 1)
        [0.1, 0.8, 0.1], [0.1, 0.6, 0.3],  # class 1: right, right
        [0.1, 0.2, 0.7], [0.6, 0.1, 0.3],  # class 2: right, wrong (called 0)
    ])
    m = evaluate.classification_metrics(y, p, class_names=["a", "b", "c"])
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["threshold"] is None and m["average"] == "macro"
    assert m["accuracy"] == pytest.approx(4 / 6)
    # precision per class: a 1/2, b 2/3, c 1/1; recall: a 1/2, b 1, c 1/2
    assert m["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["balanced_accuracy"] == pytest.approx(m["recall"])
    # One-vs-rest AUC of class "b": positives score 0.8, 0.6; negatives 0.1, 0.7, 0.2, 0.1
    # -> 7 of 8 pairs ranked right.
    assert m["auc_per_class"]["b"] == pytest.approx(7 / 8)
    assert m["auc"] == pytest.approx(np.mean(list(m["auc_per_class"].values())))
    assert set(m["classification_report"]) >= {"a", "b", "c", "macro avg"}


def test_choose_threshold_maximises_youden_j():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.3, 0.5, 0.7, 0.9])
    # ROC points by descending score: J = TPR - FPR is largest (1 - 1/3) at score 0.3; the
    # next lower score is 0.2, so the threshold sits at 0.25.
    t = evaluate.choose_threshold(y, s)
    assert t["method"] == "youden_j"
    assert t["threshold"] == pytest.approx(0.25)
    assert t["youden_j"] == pytest.approx(2 / 3)
    assert t["balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    assert evaluate.choose_threshold([1, 1, 1], [0.2, 0.5, 0.9])["threshold"] == 0.5


def test_dihedral_views_are_the_eight_symmetries():
    image = np.arange(4, dtype="float32").reshape(1, 2, 2, 1)  # [[0, 1], [2, 3]]
    views = [v.numpy().reshape(-1).tolist() for v in evaluate.dihedral_views(image)]
    assert len({tuple(v) for v in views}) == 8
    assert views[0] == [0, 1, 2, 3]
    assert views[1] == [1, 0, 3, 2]  # left-right flip
    assert views[2] == [1, 3, 0, 2]  # 90 degrees anticlockwise
    with pytest.raises(ValueError, match="square"):
        evaluate.dihedral_views(np.zeros((1, 2, 3, 1)))


def _linear_model():
    inputs = keras.Input((4, 4, 3))
    h = keras.layers.Flatten()(inputs)
    out = keras.layers.Dense(1, activation="sigmoid", kernel_initializer=keras.initializers.RandomNormal(seed=3))(h)
    return keras.Model(inputs, out)


def test_predict_with_tta_averages_the_eight_views():
    model = _linear_model()
    rng = np.random.default_rng(0)
    x = rng.random((5, 4, 4, 3)).astype("float32")
    y = np.array([0, 1, 0, 1, 1], dtype="int32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    labels, plain = evaluate.predict(model, ds)
    assert labels.tolist() == y.tolist() and plain.shape == (5, 2)
    assert plain[:, 1] == pytest.approx(model.predict(x, verbose=0)[:, 0], abs=1e-6)
    _, tta = evaluate.predict(model, ds, tta=True)
    expected = np.mean([model.predict(v.numpy(), verbose=0)[:, 0] for v in evaluate.dihedral_views(x)], axis=0)
    assert tta[:, 1] == pytest.approx(expected, abs=1e-6)
    assert not np.allclose(tta, plain)
    _, first = evaluate.predict(model, ds, steps=1)
    assert len(first) == 2


def test_bootstrap_intervals_are_seeded_and_bracket_the_estimate():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    point = evaluate.classification_metrics(y, s)
    ci = evaluate.bootstrap_intervals(y, s, metrics=("accuracy", "auc"), n_resamples=200, seed=5)
    again = evaluate.bootstrap_intervals(y, s, metrics=("accuracy", "auc"), n_resamples=200, seed=5)
    assert ci == again
    for name in ("accuracy", "auc"):
        low, high = ci[name]
        assert low < point[name] < high and high - low < 0.2
    perfect = evaluate.bootstrap_intervals(Y, Y * 0.8 + 0.1, metrics=("accuracy",), n_resamples=50)
    assert perfect["accuracy"] == [1.0, 1.0]
    with pytest.raises(ValueError, match="metrics"):
        evaluate.bootstrap_intervals(Y, S, metrics=("speed",))


def test_paired_comparison_matches_the_t_formula():
    base = np.array([0.80, 0.82, 0.79, 0.81, 0.83, 0.80])
    diff = np.array([0.010, 0.020, 0.015, 0.005, 0.012, 0.018])
    out = evaluate.paired_comparison(base, base + diff)
    t = diff.mean() / (diff.std(ddof=1) / math.sqrt(len(diff)))
    assert out["n"] == 6 and out["mean_difference"] == pytest.approx(diff.mean())
    assert out["ttest_rel"]["statistic"] == pytest.approx(t)
    assert out["ttest_rel"]["pvalue"] < 0.01
    # All six differences positive: the exact two-sided Wilcoxon p is 2 / 2**6.
    assert out["wilcoxon"]["pvalue"] == pytest.approx(2 / 64)
    with pytest.raises(ValueError, match="same number"):
        evaluate.paired_comparison([0.8, 0.9], [0.8])


def test_paired_comparison_with_equal_differences_is_undefined_not_a_warning():
    import warnings

    base = np.array([0.2, 0.2, 0.4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy would warn of catastrophic cancellation
        same = evaluate.paired_comparison(base, base)
        shifted = evaluate.paired_comparison(base, base + 0.1)
    assert same["ttest_rel"]["pvalue"] == 1.0 and math.isnan(same["ttest_rel"]["statistic"])
    assert math.isnan(shifted["ttest_rel"]["pvalue"]) and shifted["mean_difference"] == pytest.approx(0.1)
    assert shifted["wilcoxon"]["pvalue"] == pytest.approx(2 / 2**3)


def test_balanced_accuracy_ignores_predicted_classes_absent_from_the_split_quietly():
    import warnings

    y_true = np.array([0, 0, 1, 1, 1])
    y_pred = np.array([0, 2, 1, 1, 2])  # class 2 predicted, never true
    probs = np.eye(3)[y_pred]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = evaluate.classification_metrics(y_true, probs)
    assert metrics["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)  # mean recall of classes 0 and 1


def test_corrected_cv_comparison_is_more_careful_than_the_plain_paired_test():
    """Nadeau and Bengio's correction: the variance of the mean difference over k x r folds is
    (1/(k r) + n_test/n_train) s^2, not s^2 / (k r)."""
    from scipy import stats as st

    rng = np.random.default_rng(0)
    base = rng.uniform(0.7, 0.8, 15)
    variant = base + 0.01 + rng.normal(0, 0.01, 15)
    got = evaluate.corrected_cv_comparison(base, variant, test_fraction=0.2)
    d = variant - base
    se = np.sqrt((1 / 15 + 0.2 / 0.8) * d.var(ddof=1))
    assert got["statistic"] == pytest.approx(d.mean() / se)
    assert got["pvalue"] == pytest.approx(2 * st.t.sf(abs(d.mean() / se), 14))
    assert got["pvalue"] > st.ttest_rel(variant, base).pvalue  # wider than the plain paired test
    low, high = got["interval"]
    assert low < got["mean_difference"] < high
    with pytest.raises(ValueError, match="test_fraction"):
        evaluate.corrected_cv_comparison(base, variant, test_fraction=1.0)
