"""Errors for unknown names (models, backbones, attention kinds, data specs) that suggest the
closest valid one, as in ``did you mean 'seed-pcam'?``, besides listing them all."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, valid: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The valid name most like ``name`` (difflib's ratio, case ignored), or ``None`` when none
    reaches ``cutoff``.

    Names with a placeholder such as ``"folder:DIR"`` are matched on their part before the
    colon, so ``"foldr:/data"`` finds ``"folder:DIR"``.
    """
    valid = list(valid)
    key = name.lower().partition(":")[0] if ":" in name else name.lower()
    keys = {(v.lower().partition(":")[0] if ":" in v else v.lower()): v for v in valid}
    match = difflib.get_close_matches(key, list(keys), n=1, cutoff=cutoff)
    return keys[match[0]] if match else None


def unknown_name(kind: str, name, valid: Iterable[str], *, argument: str = "name",
                 plural: str | None = None, suggestion: str | None = None) -> ValueError:
    """A ``ValueError`` for an unknown ``name`` of ``kind`` (e.g. ``"backbone"``).

    The message suggests ``suggestion``, or else the closest valid name (`closest`) when there
    is one, lists all of them (as ``plural``, default ``kind + "s"``) and ends with
    ``Received: argument=name``, e.g.::

        Unknown backbone; did you mean 'xception'? Valid backbones: inception_v3, xception, ...
        Received: backbone='xceptoin'
    """
    valid = [str(v) for v in valid]
    if suggestion is None and isinstance(name, str):
        suggestion = closest(name, valid)
    hint = f"; did you mean {suggestion!r}?" if suggestion else "."
    return ValueError(f"Unknown {kind}{hint} Valid {plural or kind + 's'}: {', '.join(valid)}. "
                      f"Received: {argument}={name!r}")
