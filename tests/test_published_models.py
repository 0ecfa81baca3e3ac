"""The published models in book/results/models load and predict as they did when recorded.

``tests/data/published_predictions.json`` holds their probabilities on 32 built-in synthetic
patches, computed before issue 14 reorganised the package (commit 2bda1c1). A change that moves
a registered layer, renames a config key or alters the synthetic generator fails here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = json.loads((ROOT / "tests" / "data" / "published_predictions.json").read_text())

# Run in a fresh process, as a new user would: the models are loaded with Keras after a bare
# `import histolib` (issue 14: that must be enough), with oneDNN off (its bfloat16 paths move
# these probabilities by up to 0.01).
SCRIPT = """
import json, sys
import numpy as np
import keras
import histolib  # registers its layers: nothing else is needed to load a saved model

models = {path: keras.saving.load_model(path, compile=False) for path in sys.argv[1:]}

from histolib import cards
from histolib.data import synthetic

images, _, _ = synthetic.pcam_patches(32, seed=0, split="test")
x = images.astype(np.float32) / 255.0
out = {path: {"probability": np.asarray(model.predict(x, batch_size=32, verbose=0))[:, 0].tolist(),
              "threshold": cards.read_threshold(path)} for path, model in models.items()}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def predictions():
    paths = [str(ROOT / "book" / "results" / "models" / f"{name}.keras") for name in EXPECTED["models"]]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", SCRIPT, *paths], env=env, capture_output=True,
                            text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    return {Path(path).stem: value for path, value in found.items()}


@pytest.mark.parametrize("name", sorted(EXPECTED["models"]))
def test_published_model_predicts_as_recorded(name, predictions):
    expected = EXPECTED["models"][name]
    got = predictions[name]
    np.testing.assert_allclose(got["probability"], expected["probability"], rtol=0, atol=1e-5)
    assert got["threshold"] == pytest.approx(expected["threshold"], abs=1e-12)
    # The probabilities spread over both sides of the threshold: a constant model would fail.
    calls = np.asarray(got["probability"]) > got["threshold"]
    assert 0 < calls.sum() < len(calls)


PCAM_MODELS = sorted((ROOT / "book" / "results" / "models").glob("pcam-*.keras"))  # ovarian-* are not PCam


@pytest.fixture(scope="module")
def pcam_test_folder(tmp_path_factory):
    """An image folder of PCam-like test patches, ``DIR/test/{0,1}/*.jpg`` (built-in synthetic)."""
    from histolib.data import synthetic

    images, labels, _ = synthetic.pcam_patches(24, seed=3, split="test")
    root = tmp_path_factory.mktemp("pcam-folder")
    synthetic.write_folder(root, images, labels, ["0", "1"], split="test", fmt="jpg")
    return root


@pytest.mark.parametrize("path", PCAM_MODELS, ids=lambda p: p.stem)
def test_every_published_pcam_model_loads_safely_and_scores_a_test_folder(path, pcam_test_folder, tmp_path):
    """Issue 11: every PCam model under book/results/models loads with safe_mode=True after
    `import histolib` and is scored by `histolib evaluate --data folder:DIR --split test`."""
    import keras

    from histolib import cli

    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert tuple(model.input_shape[1:]) == (96, 96, 3) and model.output_shape[-1] in (1, 2)
    tta = json.loads(path.with_suffix(".json").read_text())["tta"]  # the model card
    out = tmp_path / "test.json"
    argv = ["evaluate", "--model", str(path), "--data", f"folder:{pcam_test_folder}", "--split", "test",
            "--json", str(out)] + (["--tta"] if tta else [])
    assert cli.main(argv) == 0
    scores = json.loads(out.read_text())
    assert scores["n"] == 24 and 0.0 <= scores["accuracy"] <= 1.0 and 0.0 <= scores["auc"] <= 1.0


MODELS = sorted((ROOT / "book" / "results" / "models").glob("*.keras"))


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_every_published_model_has_a_complete_card(path):
    """Issue 20: a model is committed only with its complete card (what it is, what it was trained
    and scored on), which replaces the old NAME.threshold.json."""
    from histolib import cards

    card = cards.read_card(path)
    assert card is not None, f"{path.name} has no model card {cards.card_path(path).name}"
    assert cards.missing_fields(card) == [] and card["model"] == path.name
    assert card["scores"]["test"]["n"] > 0 and card["scores"]["valid"]["n"] > 0
    assert not path.with_name(path.stem + ".threshold.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("path", PCAM_MODELS, ids=lambda p: p.stem)
def test_histolib_evaluate_reproduces_each_pcam_cards_test_score(path, shared_data, tmp_path):
    """Issue 20: `histolib evaluate` on ../shared/data/pcam-jpeg/test (with --tta where the card
    says so; oneDNN off, as CI runs) gives the card's test accuracy within 0.003."""
    from histolib import cards, cli

    card = cards.read_card(path)
    folder = shared_data / "pcam-jpeg"
    if not (folder / "test").is_dir():
        pytest.skip(f"no PCam test patches at {folder / 'test'}")
    out = tmp_path / "test.json"
    argv = ["evaluate", "--model", str(path), "--data", f"folder:{folder}", "--split", "test", "--json", str(out)]
    assert cli.main(argv + (["--tta"] if card["tta"] else [])) == 0
    scores = json.loads(out.read_text())
    assert scores["n"] == card["scores"]["test"]["n"] == 1500
    assert scores["accuracy"] == pytest.approx(card["scores"]["test"]["accuracy"], abs=0.003)
    assert scores["auc"] == pytest.approx(card["scores"]["test"]["auc"], abs=0.003)
