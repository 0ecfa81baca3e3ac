"""Unknown names suggest the closest valid one."""

import pytest

from histolib import names

MODELS = ["seed-pcam", "seed-subtype-xception", "mobilenet", "mobilenet+differential", "seed_cnn+self"]
SPECS = ["synthetic-pcam", "synthetic-subtype", "pcam-h5:DIR", "tfds:patch_camelyon", "folder:DIR"]


@pytest.mark.parametrize("typed, expected", [
    ("seed-pam", "seed-pcam"),
    ("SEED-PCAM", "seed-pcam"),
    ("mobilenet+diferential", "mobilenet+differential"),
    ("MobileNet", "mobilenet"),
    ("seed_cnn+slf", "seed_cnn+self"),
])
def test_closest_model_names(typed, expected):
    assert names.closest(typed, MODELS) == expected


@pytest.mark.parametrize("typed, expected", [
    ("synthetic-pca", "synthetic-pcam"),
    ("foldr:/data/pcam", "folder:DIR"),
    ("tfds:patch_camelyn", "tfds:patch_camelyon"),
    ("pcam_h5:/data", "pcam-h5:DIR"),
])
def test_closest_data_specs_match_the_part_before_the_colon(typed, expected):
    assert names.closest(typed, SPECS) == expected


def test_nothing_close_suggests_nothing():
    assert names.closest("resnet50", MODELS) is None
    error = names.unknown_name("model name", "resnet50", MODELS)
    assert "did you mean" not in str(error)
    assert str(error).endswith("Received: name='resnet50'")


def test_message_suggests_lists_and_names_the_argument():
    error = names.unknown_name("backbone", "xceptoin", ["inception_v3", "xception"], argument="backbone")
    assert isinstance(error, ValueError)
    assert str(error) == ("Unknown backbone; did you mean 'xception'? Valid backbones: inception_v3, "
                          "xception. Received: backbone='xceptoin'")
    assert "did you mean" not in str(names.unknown_name("attention", 3, ["self"], argument="attention"))
