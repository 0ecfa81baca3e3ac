"""What a model file's records say: its model card, its decision threshold, the split it trained on.

A published model ``NAME.keras`` carries a model card ``NAME.json`` beside it (after Mitchell et
al. 2019, *Model Cards for Model Reporting*): what the model is, the data and split it was trained
on (for a source without split folders, the very files of each split), how its threshold was
chosen, the command, precision and CPU that trained it, its scores with the split each was
measured on (``valid``: where everything was chosen; ``test``: the final score, measured once),
and its limits. `missing_fields` says what an incomplete card lacks; `write_card` refuses one.

A model in a run folder (``best.keras``) has the run's ``threshold.json`` and ``run.json`` instead.

`recorded_split` gives the split to score a model on: the one its ``run.json`` or card records for
the data asked for. Scoring a model on a split made with another seed or other groups scores it
on images it trained on, so on a source without split folders a model with neither record is
refused unless the split is given explicitly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from histolib.data.groups import setting as group_setting
from histolib.data.splits import SPLIT_VERSION
from histolib.files import write_json

__all__ = ["CARD_FIELDS", "SCORE_FIELDS", "card_path", "missing_fields", "read_card", "read_threshold",
           "recorded_split", "relative_files", "threshold_record", "write_card"]

#: What a complete card holds at its top level, and in each of its parts.
CARD_FIELDS = {
    "model": None, "summary": None, "threshold": None, "tta": None, "threshold_rule": None,
    "data": ("spec", "file_list"),
    "split": ("split_seed", "groups", "oversample", "fold", "split_version"),
    "training": ("command", "precision", "cpu_flags", "record"),
    "scores": ("valid", "test"),
    "limits": None,
}
#: What each of a card's scores holds (``intervals``: 95 % bootstrap intervals of accuracy and AUC).
SCORE_FIELDS = ("accuracy", "auc", "n", "intervals", "tta")


def card_path(model_path) -> Path:
    """``NAME.json`` beside ``NAME.keras``."""
    return Path(model_path).with_suffix(".json")


def read_card(model_path) -> dict | None:
    """The card beside ``model_path``, or ``None`` when there is none."""
    path = card_path(model_path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path} is not a model card (not JSON: {error})") from None


def missing_fields(card: dict) -> list[str]:
    """The fields a card lacks (``"scores.test.auc"`` ...), ``[]`` for a complete one."""
    missing = []
    for name, parts in CARD_FIELDS.items():
        if name not in card:
            missing.append(name)
        elif parts is not None:
            missing += [f"{name}.{part}" for part in parts if part not in (card[name] or {})]
    for split in ("valid", "test"):
        score = card.get("scores", {}).get(split) or {}
        missing += [f"scores.{split}.{field}" for field in SCORE_FIELDS if field not in score and split in
                    card.get("scores", {})]
    return missing


def write_card(model_path, card: dict) -> Path:
    """Write a complete ``card`` beside ``model_path``.

    Raises:
        ValueError: naming every missing field (nothing is written).
    """
    missing = missing_fields(card)
    if missing:
        raise ValueError(f"the model card of {model_path} is incomplete: missing {missing}")
    write_json(card_path(model_path), card)
    return card_path(model_path)


def threshold_record(model_path) -> dict:
    """The threshold of ``model_path``: from its card (``threshold``, ``tta``, how it was chosen),
    else from ``threshold.json`` in its folder (what `histolib.train.fit` writes beside
    ``best.keras``), with ``"path"`` naming the file; ``{}`` when there is neither. ``"tta":
    true`` says the threshold was chosen on 8-view test-time-augmented predictions, and the model
    is meant to be scored that way."""
    card = read_card(model_path)
    if card is not None:
        return {"threshold": card.get("threshold"), "tta": bool(card.get("tta")),
                "method": card.get("threshold_rule"), "path": str(card_path(model_path))}
    path = Path(model_path).parent / "threshold.json"
    return {**json.loads(path.read_text()), "path": str(path)} if path.is_file() else {}


def read_threshold(model_path) -> float:
    """The decision threshold recorded for ``model_path`` (`threshold_record`), else 0.5."""
    record = threshold_record(model_path)
    value = record.get("threshold")
    if value is None:
        return 0.5
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"a threshold must lie in [0, 1]. Received: threshold={value} in {record['path']}")
    return value


def relative_files(items, root) -> list[str]:
    """File paths as ``class/name`` relative to the data ``root`` (POSIX separators)."""
    return [Path(os.path.relpath(str(item), root)).as_posix() for item in items]


def _same_spec(a: str, b: str) -> bool:
    kind_a, _, arg_a = a.partition(":")
    kind_b, _, arg_b = b.partition(":")
    if kind_a != kind_b:
        return False
    if arg_a and arg_b and Path(arg_a).exists() and Path(arg_b).exists():
        return Path(arg_a).resolve() == Path(arg_b).resolve()
    return arg_a == arg_b


def _run_record_data(model_path) -> tuple[dict, str] | None:
    """The data settings of the ``run.json`` beside a model: ``config.data``, else the older
    ``data`` section (split seed maybe the run's ``seed``, split algorithm 1)."""
    path = Path(model_path).parent / "run.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    if isinstance(config.get("data"), dict):
        return config["data"], str(path)
    data = record.get("data") if isinstance(record.get("data"), dict) else {}
    if not data.get("spec"):
        return None
    return {**data, "split_seed": data.get("split_seed", record.get("seed", 0)), "split_version": 1}, str(path)


def _recorded(model_path) -> tuple[dict, str] | None:
    """``(data settings, where from)`` of a model's run record, else of its card."""
    found = _run_record_data(model_path)
    if found is not None:
        return found
    card = read_card(model_path)
    if card and isinstance(card.get("data"), dict) and isinstance(card.get("split"), dict):
        return {"spec": card["data"].get("spec"), **card["split"]}, str(card_path(model_path))
    return None


def _unrecorded(model_path, given: dict, *, fixed_splits: bool) -> dict:
    """The explicit split settings for a model without a record for this data: refused on a
    source without split folders unless the split seed is given."""
    if not fixed_splits and given["split_seed"] is None:
        raise ValueError(f"{model_path} has no run.json or model card for this data, so the split it trained on "
                         "is unknown and the test split could hold its training images; give --split-seed (and "
                         "--groups) to score it on a split of your choosing")
    return {"split_seed": int(given["split_seed"] or 0), "groups": given["groups"],
            "oversample": given["oversample"], "from": "options", "files": None}


def recorded_split(model_path, spec: str, given: dict, *, fixed_splits: bool) -> dict:
    """The split settings to score ``model_path`` on ``spec`` with.

    When the model's ``run.json`` (else its card) records training on ``spec``, its settings are
    used and an explicit setting in ``given`` (``split_seed``, ``groups``, ``oversample``; ``None``
    when not given) that disagrees is an error, as is a grouped split made by another split
    algorithm than this histolib's (`histolib.data.splits.SPLIT_VERSION`). Otherwise the given
    settings; on a source without split folders (``fixed_splits`` false) only with a split seed.

    Returns:
        ``{"split_seed", "groups", "oversample", "from", "files"}``: ``"from"`` names the record
        or says ``"options"``; ``"files"`` is the card's ``{split: [class/name, ...]}`` or ``None``.

    Raises:
        ValueError: one line naming the record, the option and both values.
    """
    given = {**given, "groups": group_setting(given.get("groups"))}
    found = _recorded(model_path)
    if found is None or not found[0].get("spec") or not _same_spec(found[0]["spec"], spec):
        return _unrecorded(model_path, given, fixed_splits=fixed_splits)
    data, origin = found
    if data.get("groups") and data.get("split_version", 1) != SPLIT_VERSION:
        raise ValueError(f"{origin} records a grouped split made by split algorithm {data.get('split_version', 1)}, "
                         f"and this histolib makes version {SPLIT_VERSION}: its test images cannot be told apart; "
                         "retrain the model")
    stored = {"split_seed": int(data.get("split_seed") or 0),  # none recorded for fixed split folders
              "groups": data.get("groups"), "oversample": data.get("oversample")}
    for key, value in given.items():
        if value is not None and value != stored[key]:
            option = "--" + key.replace("_", "-")
            raise ValueError(f"{option} {value} disagrees with {origin}, which records {key} {stored[key]!r} for "
                             f"{data['spec']}: the model would be scored on images it trained on; drop {option} "
                             "to score it on its own test split")
    return {**stored, "from": origin, "files": data.get("files")}
