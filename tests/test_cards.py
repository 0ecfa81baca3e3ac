"""histolib.cards: model cards, thresholds, and which split a model is scored on."""

import json

import pytest

from histolib import cards


def complete_card(**changes) -> dict:
    card = {
        "model": "m.keras", "summary": "a test model", "threshold": 0.42, "tta": True,
        "threshold_rule": "Youden's J on valid, 8-view TTA",
        "data": {"spec": "folder:/data/ovarian", "file_list": {"files": 3, "sha256": "0" * 64}},
        "split": {"split_seed": 3, "groups": "near-duplicates", "oversample": None, "fold": None, "split_version": 2,
                  "files": {"train": ["A/1.jpg"], "valid": ["A/2.jpg"], "test": ["B/3.jpg"]}},
        "training": {"command": "histolib train ...", "precision": "float32", "cpu_flags": ["avx2"],
                     "record": "book/results/m_run.json"},
        "scores": {split: {"accuracy": 0.8, "auc": 0.9, "n": 1, "intervals": {}, "tta": True}
                   for split in ("valid", "test")},
        "limits": "none known",
    }
    card.update(changes)
    return card


def test_a_card_is_complete_or_refused_naming_what_it_lacks(tmp_path):
    model = tmp_path / "m.keras"
    assert cards.missing_fields(complete_card()) == []
    partial = complete_card(limits=None)
    del partial["limits"], partial["scores"]["test"]["auc"], partial["training"]["cpu_flags"]
    assert sorted(cards.missing_fields(partial)) == ["limits", "scores.test.auc", "training.cpu_flags"]
    with pytest.raises(ValueError, match=r"incomplete: missing .*scores.test.auc"):
        cards.write_card(model, partial)
    assert not cards.card_path(model).exists()
    assert cards.write_card(model, complete_card()) == tmp_path / "m.json"
    assert cards.read_card(model)["threshold"] == 0.42


def test_the_threshold_comes_from_the_card_else_the_run_folder(tmp_path):
    model = tmp_path / "pcam-seed.keras"
    assert cards.read_threshold(model) == 0.5 and cards.threshold_record(model) == {}
    (tmp_path / "threshold.json").write_text(json.dumps({"threshold": 0.3}))
    assert cards.read_threshold(model) == 0.3
    cards.write_card(model, complete_card())
    assert cards.read_threshold(model) == 0.42 and cards.threshold_record(model)["tta"] is True
    assert cards.threshold_record(tmp_path / "other.keras")["threshold"] == 0.3  # the folder's file
    cards.card_path(model).write_text(json.dumps(complete_card(threshold=4.2)))
    with pytest.raises(ValueError, match="threshold=4.2"):
        cards.read_threshold(model)


def test_the_split_comes_from_the_card_when_there_is_no_run_record(tmp_path):
    model = tmp_path / "m.keras"
    given = {"split_seed": None, "groups": None, "oversample": None}
    cards.write_card(model, complete_card())
    split = cards.recorded_split(model, "folder:/data/ovarian", given, fixed_splits=False)
    assert (split["split_seed"], split["groups"], split["from"]) == (3, "near-duplicates", str(tmp_path / "m.json"))
    assert split["files"]["test"] == ["B/3.jpg"]
    with pytest.raises(ValueError, match="--split-seed 0 disagrees with .*m.json"):
        cards.recorded_split(model, "folder:/data/ovarian", {**given, "split_seed": 0}, fixed_splits=False)


def test_without_run_record_or_card_an_unsplit_source_needs_an_explicit_split(tmp_path):
    model = tmp_path / "alone.keras"
    given = {"split_seed": None, "groups": None, "oversample": None}
    with pytest.raises(ValueError, match="no run.json or model card .* give --split-seed"):
        cards.recorded_split(model, "folder:/data/ovarian", given, fixed_splits=False)
    assert cards.recorded_split(model, "folder:/data/ovarian", {**given, "split_seed": 2},
                                fixed_splits=False)["from"] == "options"
    assert cards.recorded_split(model, "folder:/data/pcam", given, fixed_splits=True)["split_seed"] == 0
    # A card for other data says nothing about this data.
    cards.write_card(model, complete_card())
    with pytest.raises(ValueError, match="no run.json or model card"):
        cards.recorded_split(model, "folder:/data/elsewhere", given, fixed_splits=False)


def test_a_grouped_split_of_the_old_algorithm_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"seed": 0, "data": {"spec": "folder:/d", "split_seed": 1,
                                                                  "groups": "near-duplicates"}}))
    with pytest.raises(ValueError, match="split algorithm 1"):
        cards.recorded_split(run / "best.keras", "folder:/d", {"split_seed": None, "groups": None, "oversample": None},
                             fixed_splits=False)
