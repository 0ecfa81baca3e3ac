"""Group keys for grouped splits: which images must stay on one side of a split.

`group_keys` turns ``group_by`` into one key per file; :func:`histolib.data.splits.stratified_split`
then never puts one key on two sides. ``group_by`` is one of:

- ``"near-duplicates"``: the near-duplicate groups of all the source's files
  (:mod:`histolib.data.duplicates`, cached in the user cache): an image and its rotated, zoomed,
  re-coloured ... copies share a key;
- a ``pathlib.Path`` to a table: a CSV with a header ``file,group`` (one row per file, ``file``
  relative to the data root, e.g. ``Serous/p4.png``; patient or slide IDs as ``group``), or the
  JSON that ``histolib duplicates`` writes (``{"groups": [[path, ...], ...]}``);
- a mapping ``{relative path: key}``;
- a callable ``path -> key``;
- any other string: a regular expression searched in the file name, its first group the key
  (e.g. ``r"^(P\\d+)_"``).

A file that a table or mapping does not list is an error naming it (a silent singleton could
leak a patient's images across a split).
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np

from histolib.data.duplicates import find_near_duplicates, read_groups

NEAR_DUPLICATES = "near-duplicates"


def setting(groups) -> str | None:
    """A groups setting as a run records it: ``None``, ``"near-duplicates"``, or a groups table's
    absolute path (the file must exist)."""
    if groups is None or groups == NEAR_DUPLICATES:
        return groups
    path = Path(groups).expanduser()
    if not path.is_file():
        raise ValueError(f"groups must be 'near-duplicates' or a groups file (CSV file,group, or the JSON of "
                         f"'histolib duplicates'). Received: groups={str(groups)!r}, which is no file")
    return str(path.resolve())


def group_by(recorded: str | None):
    """The ``group_by`` argument of `histolib.data.load` for a recorded `setting`."""
    return recorded if recorded in (None, NEAR_DUPLICATES) else Path(recorded)


def read_table(path) -> dict[str, str]:
    """``{relative path: group}`` from a CSV (header ``file,group``) or a groups JSON."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"groups file not found: {path} (expected a CSV with columns file,group or the "
                         "JSON written by 'histolib duplicates')")
    if path.suffix.lower() == ".json":

        return read_groups(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"file", "group"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a CSV with a header naming the columns file and group. "
                         f"Received: columns={list(rows[0]) if rows else []}")
    return {Path(row["file"]).as_posix(): row["group"] for row in rows}


def _from_mapping(paths, mapping, root) -> np.ndarray:
    names = [Path(os.path.relpath(p, root)).as_posix() if root is not None else Path(p).as_posix()
             for p in paths]
    missing = [n for n in names if n not in mapping]
    if missing:
        raise ValueError(f"{len(missing)} of {len(names)} files have no group, e.g. {missing[:3]}; the groups "
                         f"table must list every file relative to the data root {root}")
    return np.array([str(mapping[n]) for n in names])


def _near_duplicates(paths) -> np.ndarray:

    found = find_near_duplicates(list(paths))
    key_of = dict(zip(found.paths, found.keys()))
    return np.array([f"g{key_of[p]}" if p in key_of else f"unreadable:{p}" for p in map(str, paths)])


def group_keys(paths, group_by, root=None) -> np.ndarray:
    """One key per file of ``paths`` (all files of a source, in order); see the module docstring.

    Args:
        paths: file paths.
        group_by: ``"near-duplicates"``, a ``Path`` to a groups table, a mapping, a callable or a
            regular expression.
        root: the data root that tables and mappings name files relative to.

    Returns:
        str ``(len(paths),)``.
    """
    if isinstance(group_by, str) and group_by == NEAR_DUPLICATES:
        return _near_duplicates(paths)
    if isinstance(group_by, os.PathLike):
        return _from_mapping(paths, read_table(group_by), root)
    if isinstance(group_by, dict):
        return _from_mapping(paths, group_by, root)
    if callable(group_by):
        return np.array([str(group_by(p)) for p in paths])
    if not isinstance(group_by, str):
        raise ValueError("group_by must be 'near-duplicates', a groups file (pathlib.Path), a mapping, a "
                         f"callable (path -> key) or a regular expression. Received: group_by={group_by!r}")
    pattern = re.compile(group_by)
    keys = []
    for p in paths:
        m = pattern.search(os.path.basename(p))
        if m is None:
            raise ValueError(f"group_by pattern {group_by!r} does not match the file name of {p}")
        keys.append(m.group(1) if m.groups() else m.group(0))
    return np.array(keys)
