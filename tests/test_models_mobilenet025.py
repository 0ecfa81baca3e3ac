"""mobilenet_025: MobileNet v1 at width 0.25, the one backbone with real ImageNet weights offline."""

import numpy as np
import pytest

import keras

from histolib import models
from histolib import files
from histolib.models import weights as weights_module
from histolib.models.backbones import get_backbone

NAMES = ["mobilenet_025", "mobilenet_025+self", "mobilenet_025+thresholded", "mobilenet_025+differential"]
FILE = "mobilenet_2_5_224_tf_no_top.h5"


def test_registry_names():
    assert set(NAMES) <= set(models.list_models())
    assert get_backbone("mobilenet_025").weights_file(224) == FILE


def test_spec_matches_keras():
    spec = get_backbone("mobilenet_025")
    for size in (96, 224, 299):
        base = spec.constructor(include_top=False, weights=None, input_shape=(size, size, 3))
        assert base.output_shape[1:] == (spec.grid[size], spec.grid[size], spec.channels)
    assert base.get_layer(spec.gradcam_layer).output.shape[-1] == 256


@pytest.fixture()
def real_weights(shared_data, monkeypatch):
    folder = shared_data.parent / "weights"
    if not (folder / FILE).is_file():
        pytest.skip(f"{FILE} not found in {folder}")
    monkeypatch.setenv("HISTOLIB_WEIGHTS_DIR", str(folder))
    monkeypatch.setattr(files, "reachable", lambda *a, **k: pytest.fail("asked the network"))
    return folder / FILE


@pytest.mark.parametrize("name", NAMES)
def test_imagenet_weights_from_histolib_weights_dir(real_weights, name):
    model = models.build_model(name, num_classes=5, input_shape=(224, 224, 3), weights="imagenet")
    reference = keras.applications.MobileNet(alpha=0.25, include_top=False, weights=str(real_weights),
                                             input_shape=(224, 224, 3))
    for layer in (layer for layer in reference.layers if layer.weights):
        for a, b in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(a, b)
    frozen_params = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert frozen_params == reference.count_params() == 218_544  # the whole backbone frozen
    assert model.output_shape == (None, 5)


def test_offline_without_the_file_names_it(monkeypatch, tmp_path):
    monkeypatch.setattr(files, "reachable", lambda *a, **k: False)
    monkeypatch.setenv("HISTOLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HISTOLIB_WEIGHTS_DIR", str(tmp_path / "empty"))
    with pytest.raises(weights_module.WeightsNotFoundError, match=FILE):
        models.build_model("mobilenet_025+thresholded", num_classes=5, input_shape=(224, 224, 3), weights="imagenet")
