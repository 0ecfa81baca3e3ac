"""Splits and oversampling: stratified, grouped, after the split, and the seed's leaky order."""

import numpy as np
import pytest

from histolib.data import splits
from histolib.data.synthetic import subtype_table


@pytest.fixture(scope="module")
def seed_set():
    """Labels and patients in the ovarian seed's proportions (3,082 images)."""
    return subtype_table(seed=0)


def test_stratified_split_fractions_and_proportions(seed_set):
    labels, _ = seed_set
    parts = splits.stratified_split(labels, (0.8, 0.1, 0.1), seed=42)
    sizes = {k: len(v) for k, v in parts.items()}
    assert sum(sizes.values()) == 3082 and abs(sizes["test"] - 308) <= 1 and abs(sizes["valid"] - 308) <= 1
    together = np.concatenate(list(parts.values()))
    assert len(np.unique(together)) == 3082
    full = np.bincount(labels) / 3082
    for idx in parts.values():
        assert np.abs(np.bincount(labels[idx], minlength=5) / len(idx) - full).max() < 0.01


def test_split_is_seeded(seed_set):
    labels, _ = seed_set
    a = splits.stratified_split(labels, seed=1)["test"]
    b = splits.stratified_split(labels, seed=1)["test"]
    c = splits.stratified_split(labels, seed=2)["test"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_grouped_split_keeps_patients_apart(seed_set):
    labels, patients = seed_set
    parts = splits.stratified_split(labels, (0.8, 0.1, 0.1), seed=0, groups=patients)
    owners = [set(patients[idx]) for idx in parts.values()]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    assert sum(len(v) for v in parts.values()) == 3082
    for idx in parts.values():  # every class in every split, sizes near their fractions
        assert (np.bincount(labels[idx], minlength=5) > 0).all()
    assert abs(len(parts["test"]) / 3082 - 0.1) < 0.03


def test_oversample_after_split_touches_training_only(seed_set):
    labels, _ = seed_set
    train = splits.select(labels, "train", seed=0, oversample_order="after")
    valid = splits.select(labels, "valid", seed=0, oversample_order="after")
    test = splits.select(labels, "test", seed=0, oversample_order="after")
    counts = np.bincount(labels[train])
    assert counts.min() == counts.max() == np.bincount(labels[splits.stratified_split(labels)["train"]]).max()
    assert len(np.unique(test)) == len(test) and len(np.unique(valid)) == len(valid)
    assert splits.count_shared(train, test) == 0 and splits.count_shared(train, valid) == 0


def test_oversample_before_split_reproduces_the_seed_and_leaks(seed_set):
    labels, _ = seed_set
    parts = {s: splits.select(labels, s, seed=42, oversample_order="before") for s in splits.SPLITS}
    assert {s: len(v) for s, v in parts.items()} == {"train": 4752, "valid": 594, "test": 594}
    shared = splits.count_shared(parts["train"], parts["test"])
    # Most test rows of the smallest, most oversampled classes are copies of training images.
    assert shared > 200
    lgsc = labels[parts["test"]] == 3
    assert splits.count_shared(parts["train"], parts["test"][lgsc]) / lgsc.sum() > 0.9


def test_count_shared_compares_pixels():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 255, (5, 4, 4, 3), dtype=np.uint8)
    test = np.concatenate([train[:2], rng.integers(0, 255, (3, 4, 4, 3), dtype=np.uint8)])
    assert splits.count_shared(train, test) == 2
    assert splits.count_shared([1, 2, 2], [2, 3, 4, 2]) == 2


@pytest.mark.parametrize("fractions", [(0.8, 0.1), (0.5, 0.5, 0.5), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1)])
def test_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        splits.stratified_split(np.zeros(10), fractions)


def test_select_rejects_unknown_arguments(seed_set):
    labels, patients = seed_set
    with pytest.raises(ValueError, match="split"):
        splits.select(labels, "validation")
    with pytest.raises(ValueError, match="oversample"):
        splits.select(labels, "train", oversample_order="sometimes")
    with pytest.raises(ValueError, match="groups"):
        splits.select(labels, "train", groups=patients, oversample_order="before")


def test_grouped_split_leaves_no_split_without_a_class_of_few_large_groups():
    # Endometri's near-duplicate families in the real ovarian set: 98 images in 11 groups.
    sizes = [35, 29, 7, 5, 4, 4, 4, 3, 3, 2, 2]
    groups = np.repeat(np.arange(len(sizes)), sizes)
    labels = np.zeros(len(groups), dtype=int)
    for seed in range(10):
        parts = splits.stratified_split(labels, (0.8, 0.1, 0.1), seed=seed, groups=groups)
        assert all(len(parts[s]) > 0 for s in ("train", "valid", "test")), (seed, parts)
        owners = [set(groups[parts[s]]) for s in ("train", "valid", "test")]
        assert sum(map(len, owners)) == len(sizes)  # still no group on two sides


def test_grouped_split_is_stratified_group_k_fold_taken_8_1_1(seed_set):
    """80/10/10 with groups is scikit-learn's StratifiedGroupKFold(10): fold 0 is the test split,
    fold 1 the valid split, folds 2-9 train (split algorithm 2)."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels, patients = seed_set
    parts = splits.stratified_split(labels, (0.8, 0.1, 0.1), seed=7, groups=patients)
    folds = list(StratifiedGroupKFold(10, shuffle=True, random_state=7).split(labels, labels, patients))
    np.testing.assert_array_equal(parts["test"], np.sort(folds[0][1]))
    np.testing.assert_array_equal(parts["valid"], np.sort(folds[1][1]))
    np.testing.assert_array_equal(parts["train"], np.sort(np.concatenate([f[1] for f in folds[2:]])))
    assert splits.SPLIT_VERSION == 2
    three_one = splits.stratified_split(labels, (0.75, 0.25, 0.0), seed=7, groups=patients)
    assert len(three_one["test"]) == 0 and abs(len(three_one["valid"]) / len(labels) - 0.25) < 0.02


def test_grouped_split_needs_whole_folds_and_enough_groups(seed_set):
    labels, patients = seed_set
    with pytest.raises(ValueError, match="multiple of 1/k"):
        splits.stratified_split(labels, (0.5, 0.17, 0.33), seed=0, groups=patients)
    with pytest.raises(ValueError, match="10 folds need at least 10 groups"):
        splits.stratified_split(np.arange(40) % 2, (0.8, 0.1, 0.1), groups=np.arange(40) % 4)


def test_cross_validation_folds_keep_groups_apart_and_cover_every_image_once(seed_set):
    labels, patients = seed_set
    tested = []
    for fold in range(5):
        parts = splits.stratified_split(labels, splits.Folds(5, fold), seed=11, groups=patients)
        owners = [set(patients[parts[s]]) for s in splits.SPLITS]
        assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
        assert sum(len(v) for v in parts.values()) == len(labels)
        assert abs(len(parts["valid"]) / (len(labels) - len(parts["test"])) - 1 / 8) < 0.03
        tested.append(parts["test"])
    assert sorted(np.concatenate(tested).tolist()) == list(range(len(labels)))  # each image tested once
    np.testing.assert_array_equal(splits.select(labels, "test", fractions=splits.Folds(5, 2), seed=11, groups=patients),
                                  tested[2])
    with pytest.raises(ValueError, match="fold=5"):
        splits.Folds(5, 5)
    with pytest.raises(ValueError, match="folds"):
        splits.select(labels, "train", fractions=splits.Folds(5, 0), oversample_order="before")
