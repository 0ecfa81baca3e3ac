"""Which split a model was trained on: written into ``run.json`` by training, read back to score
the model on its own test split.

A source without split folders is split by a seed, optionally keeping groups together
(:mod:`histolib.data.groups`) and optionally oversampled in the seed's leaky order
(:mod:`histolib.data.splits`). Scoring a model on a split made with another seed or other groups
scores it on images it trained on. So ``histolib train`` records, under ``run.json``'s
``"data"``, the ``split_seed``, ``groups`` (``"near-duplicates"``, the absolute path of a groups
table, or ``None``) and ``oversample``, and `recorded_split` gives them back for a model file,
refusing explicit settings that disagree.
"""

from __future__ import annotations

import json
from pathlib import Path

from histolib.data.groups import NEAR_DUPLICATES
from histolib.data.splits import SPLIT_VERSION


def group_setting(groups) -> str | None:
    """``None``, ``"near-duplicates"``, or a groups table's absolute path (the file must exist)."""
    if groups is None or groups == NEAR_DUPLICATES:
        return groups
    path = Path(groups).expanduser()
    if not path.is_file():
        raise ValueError(f"groups must be 'near-duplicates' or a groups file (CSV file,group, or the JSON of "
                         f"'histolib duplicates'). Received: groups={str(groups)!r}, which is no file")
    return str(path.resolve())


def group_by(setting: str | None):
    """The ``group_by`` argument of `histolib.data.load` for a `group_setting`."""
    return setting if setting in (None, NEAR_DUPLICATES) else Path(setting)


def describe(*, split_seed: int, groups: str | None, oversample: str | None) -> dict:
    """The split settings as recorded in ``run.json["data"]``."""
    return {"split_seed": int(split_seed), "groups": groups, "oversample": oversample}


def _same_spec(a: str, b: str) -> bool:
    kind_a, _, arg_a = a.partition(":")
    kind_b, _, arg_b = b.partition(":")
    if kind_a != kind_b:
        return False
    if arg_a and arg_b and Path(arg_a).exists() and Path(arg_b).exists():
        return Path(arg_a).resolve() == Path(arg_b).resolve()
    return arg_a == arg_b


def _recorded_data(record: dict) -> dict:
    """The data settings of a ``run.json``: ``config.data`` (run configurations), else the older
    ``data`` section, whose split seed may be the run's ``seed`` and whose split algorithm was 1."""
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    if isinstance(config.get("data"), dict):
        return config["data"]
    data = record.get("data") if isinstance(record.get("data"), dict) else {}
    return {**data, "split_seed": data.get("split_seed", record.get("seed", 0)), "split_version": 1} if data else {}


def recorded_split(model_path, spec: str, *, split_seed=None, groups=None, oversample=None) -> dict:
    """The split settings to score ``model_path`` on ``spec`` with.

    When ``run.json`` beside the model records training on ``spec``, its settings are used and
    an explicit setting (not ``None``) that disagrees is an error, as is a grouped split made by
    another split algorithm (`histolib.data.splits.SPLIT_VERSION`) than this histolib's.
    Otherwise the explicit settings, defaulting to split seed 0, no groups, no oversampling.

    Returns:
        ``{"split_seed", "groups", "oversample", "from"}``, ``"from"`` naming the record or
        ``"options"``.

    Raises:
        ValueError: one line naming the record, the option and both values.
    """
    given = {"split_seed": split_seed, "groups": group_setting(groups), "oversample": oversample}
    path = Path(model_path).parent / "run.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    data = _recorded_data(record)
    if not data.get("spec") or not _same_spec(data["spec"], spec):
        return {"split_seed": int(split_seed or 0), "groups": given["groups"], "oversample": oversample,
                "from": "options"}
    if data.get("groups") and data.get("split_version", 1) != SPLIT_VERSION:
        raise ValueError(f"{path} records a grouped split made by split algorithm {data.get('split_version', 1)}, "
                         f"and this histolib makes version {SPLIT_VERSION}: its test images cannot be told apart; "
                         "retrain the model")
    stored = {"split_seed": int(data["split_seed"]), "groups": data.get("groups"), "oversample": data.get("oversample")}
    for key, value in given.items():
        if value is not None and value != stored[key]:
            option = "--" + key.replace("_", "-")
            raise ValueError(f"{option} {value} disagrees with {path}, which records {key} {stored[key]!r} for "
                             f"{data['spec']}: the model would be scored on images it trained on; drop {option} "
                             "to score it on its own test split")
    return {**stored, "from": str(path)}
