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

from histolib import evaluate
from histolib.data import synthetic

images, _, _ = synthetic.pcam_patches(32, seed=0, split="test")
x = images.astype(np.float32) / 255.0
out = {path: {"probability": np.asarray(model.predict(x, batch_size=32, verbose=0))[:, 0].tolist(),
              "threshold": evaluate.read_threshold(path)} for path, model in models.items()}
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
