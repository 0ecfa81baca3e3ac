"""The records under book/results say only what was measured or published."""

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "book" / "results"


def _walk(value, path=""):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield f"{path}.{key}", key, inner
            yield from _walk(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _walk(inner, f"{path}[{i}]")


def test_no_record_gives_the_pcam_seed_an_auc_it_never_published():
    """The PCam seed's README gives accuracy, F1, precision and recall, and no ROC AUC."""
    published = json.loads((RESULTS / "published.json").read_text())["pcam"]
    assert not [where for where, key, _ in _walk(published) if key == "auc"]
    invented = [f"{p.name}{where}" for p in sorted(RESULTS.rglob("*.json"))
                for where, key, inner in _walk(json.loads(p.read_text()))
                if key == "seed_published_test" and isinstance(inner, dict) and "auc" in inner]
    assert not invented, invented
