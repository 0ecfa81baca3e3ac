"""histolib.models: the seed models, the output conventions and build_model's names."""

import keras
import numpy as np
import pytest

from histolib.layers import SelfAttention
from histolib.models import (
    SEED_PCAM_PARAMS,
    build_model,
    build_seed_pcam_model,
    class_probabilities,
    loss_for,
    positive_probability,
    predicted_class,
)


def test_seed_pcam_model_has_the_published_parameter_count():
    model = build_seed_pcam_model()
    # Layer by layer from the seed's description: 3 x 3 convolutions 3 -> 64 -> 128 -> 256, four
    # Dense(128) projections (q, k, v from 256 channels, output from 128), Dense(64), Dense(1).
    expected = {"conv1": 3 * 3 * 3 * 64 + 64, "conv2": 3 * 3 * 64 * 128 + 128, "conv3": 3 * 3 * 128 * 256 + 256,
                "attention": 3 * (256 * 128 + 128) + 128 * 128 + 128, "fc": 128 * 64 + 64, "prob": 64 + 1}
    assert {name: model.get_layer(name).count_params() for name in expected} == expected
    assert model.count_params() == sum(expected.values()) == SEED_PCAM_PARAMS
    assert build_seed_pcam_model((32, 32, 3)).count_params() == SEED_PCAM_PARAMS  # any input size
    assert model.input_shape == (None, 96, 96, 3)
    assert model.get_layer("tokens").output.shape == (None, 144, 256)
    assert isinstance(model.get_layer("attention"), SelfAttention)
    assert model.get_layer("attention").key_dim == 128
    assert model.output_shape == (None, 1)
    # L2 1e-4 on every kernel: 9 kernels (3 conv, 4 attention projections, 2 dense).
    x = np.zeros((1, 96, 96, 3), "float32")
    model(x)
    assert len(model.losses) == 9
    kernels = [w for w in model.trainable_weights if w.path.endswith("kernel")]
    expected = 1e-4 * sum(float(np.sum(np.square(w.numpy()))) for w in kernels)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-4)


def test_seed_pcam_model_outputs_probabilities_and_learns():
    keras.utils.set_random_seed(0)
    model = build_seed_pcam_model((32, 32, 3))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (16, 32, 32, 3)).astype("float32")
    y = (x[:, 12:20, 12:20].mean(axis=(1, 2, 3)) > 0.5).astype("int32")
    x[y == 1, 12:20, 12:20] += 0.3
    x = np.clip(x, 0, 1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss_for(model))
    assert loss_for(model) == "binary_crossentropy"
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=8, batch_size=8, verbose=0)
    assert model.evaluate(x, y, verbose=0) < first
    probs = model.predict(x, verbose=0)
    assert probs.shape == (16, 1) and np.all((probs >= 0) & (probs <= 1))


def test_centred_seed_pcam_model_is_the_seed_model_on_centred_inputs():
    plain = build_seed_pcam_model((32, 32, 3))
    centred = build_seed_pcam_model((32, 32, 3), centre_inputs=True)
    assert centred.count_params() == plain.count_params() == SEED_PCAM_PARAMS
    centred.set_weights(plain.get_weights())
    x = np.random.default_rng(1).uniform(0, 1, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(centred.predict(x, verbose=0), plain.predict(2 * x - 1, verbose=0),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_centred_seed_pcam_model_learns_synthetic_pcam():
    """Chapter 5's quick profile: the centred seed model learns synthetic-pcam at 32 px."""
    from histolib import data

    keras.utils.set_random_seed(0)
    train_ds = data.load("synthetic-pcam:1024", "train", batch_size=16, image_size=32, shuffle=True, seed=0)
    val_ds = data.load("synthetic-pcam:1024", "valid", batch_size=64, image_size=32)
    model = build_seed_pcam_model((32, 32, 3), centre_inputs=True)
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")])
    model.fit(train_ds, epochs=4, verbose=0)
    assert model.evaluate(val_ds, verbose=0, return_dict=True)["auc"] > 0.85


def test_seed_pcam_model_rejects_bad_input_shape():
    with pytest.raises(ValueError, match="input_shape"):
        build_seed_pcam_model((90, 90, 3))


def test_output_helpers_handle_sigmoid_and_softmax():
    sigmoid = np.array([[0.2], [0.9]], "float32")
    softmax = np.array([[0.8, 0.2], [0.1, 0.9]], "float32")
    np.testing.assert_allclose(positive_probability(sigmoid), [0.2, 0.9])
    np.testing.assert_allclose(positive_probability(softmax), [0.2, 0.9])
    np.testing.assert_allclose(class_probabilities(sigmoid), softmax, atol=1e-7)
    np.testing.assert_array_equal(predicted_class(sigmoid), [0, 1])
    np.testing.assert_array_equal(predicted_class(softmax), [0, 1])
    np.testing.assert_array_equal(predicted_class(np.eye(3)[[2, 0]]), [2, 0])
    with pytest.raises(ValueError, match="probs.shape=\\(2, 3\\)"):
        positive_probability(np.ones((2, 3)))
    with pytest.raises(ValueError, match="probs.shape"):
        positive_probability(np.ones(4))


def test_build_model_seed_pcam():
    model = build_model("seed-pcam")
    assert model.count_params() == 494_337
    with pytest.raises(ValueError, match="num_classes=5"):
        build_model("seed-pcam", num_classes=5)
    with pytest.raises(ValueError, match="Valid model names: .*seed-pcam"):
        build_model("resnet")


# ---------------------------------------------------------------- backbones and build_classifier

from histolib.layers import DifferentialAttention, ThresholdedAttention  # noqa: E402
from histolib.models import (  # noqa: E402
    BACKBONES,
    WeightsNotFoundError,
    build_classifier,
    build_seed_subtype_model,
    get_backbone,
    gradcam_layer_name,
    list_backbones,
    list_models,
    model_options,
)
from histolib import files  # noqa: E402
from histolib.models import weights as weights_module  # noqa: E402


def test_misspelt_backbone_and_attention_suggest_the_closest():
    with pytest.raises(ValueError, match="did you mean 'xception'\\? Valid backbones: "):
        get_backbone("Xceptoin")
    with pytest.raises(ValueError, match="did you mean 'differential'\\? .*attention='diferential'"):
        build_classifier("seed_cnn", attention="diferential", weights=None)


def test_list_backbones_and_unknown_names():
    assert list_backbones() == ["inception_v3", "xception", "mobilenet", "mobilenet_025", "pcam_mnet025", "seed_cnn"]
    with pytest.raises(ValueError, match="Valid backbones: inception_v3, xception, mobilenet, mobilenet_025, pcam_mnet025, "
                                         "seed_cnn"):
        get_backbone("resnet50")
    assert [get_backbone(n).application for n in ("xception", "mobilenet_025", "seed_cnn")] == [
        "Xception()", "MobileNet(alpha=0.25)", "(histolib)"]
    with pytest.raises(ValueError, match="attention='cross'"):
        build_classifier("seed_cnn", attention="cross", weights=None)
    with pytest.raises(ValueError, match="num_classes=1"):
        build_classifier("seed_cnn", num_classes=1, weights=None)
    with pytest.raises(ValueError, match="input_shape"):
        build_classifier("seed_cnn", input_shape=(96, 96), weights=None)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["inception_v3", "xception", "mobilenet"])
def test_backbone_spec_matches_keras(name):
    """The stated feature-map sizes, channels, Grad-CAM layer and min size, checked on Keras."""
    spec = get_backbone(name)

    def features(size):
        return spec.constructor(include_top=False, weights=None, input_shape=(size, size, 3))

    for size in (96, 224, 299):
        model = features(size)
        assert model.output_shape[1:] == (spec.grid[size], spec.grid[size], spec.channels)
    assert model.get_layer(spec.gradcam_layer).output.shape[1:3] == (spec.grid[299],) * 2
    assert features(spec.min_size).output_shape[1] >= 3
    if spec.min_size > 71:  # Xception refuses inputs under 71 px
        assert features(spec.min_size - 1).output_shape[1] < 3


def test_seed_cnn_spec_matches_the_seed_trunk():
    spec = get_backbone("seed_cnn")
    for size in (96, 224, 299):
        model = build_classifier("seed_cnn", input_shape=(size, size, 3), weights=None)
        grid = model.get_layer("pool3").output.shape
        assert grid[1:] == (spec.grid[size], spec.grid[size], spec.channels)


@pytest.mark.parametrize("attention", [None, "self", "thresholded", "differential"])
def test_build_classifier_variants(attention):
    keras.utils.set_random_seed(1)
    model = build_classifier("mobilenet", attention=attention, num_classes=3, weights=None)
    assert model.name == ("mobilenet" if attention is None else f"mobilenet_{attention}")
    scale = model.get_layer("scale")
    np.testing.assert_allclose(scale(np.array([0.0, 0.5, 1.0], "float32")), [-1.0, 0.0, 1.0])
    assert gradcam_layer_name(model) == "conv_pw_13_relu"
    x = np.random.default_rng(0).uniform(0, 1, (2, 96, 96, 3)).astype("float32")
    probs = keras.ops.convert_to_numpy(model(x))
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    if attention is not None:
        assert model.get_layer("tokens").output.shape == (None, 9, 1024)
    assert all(w.trainable for w in model.weights if "moving" not in w.path)


def test_small_maps_are_resized_inside_the_model():
    model = build_classifier("inception_v3", attention="self", weights=None)
    assert model.input_shape == (None, 96, 96, 3)
    assert model.get_layer("resize").output.shape == (None, 139, 139, 3)
    assert model.get_layer("mixed10").output.shape == (None, 3, 3, 2048)
    assert model.get_layer("tokens").output.shape == (None, 9, 2048)
    assert "resize" not in [layer.name for layer in build_classifier("xception", weights=None).layers]


def test_seed_cnn_classifier_has_no_scaling_and_no_imagenet_weights():
    model = build_classifier("seed_cnn", attention="differential", weights=None)
    names = [layer.name for layer in model.layers]
    assert "scale" not in names and "resize" not in names
    assert isinstance(model.get_layer("attention"), DifferentialAttention)
    assert model.get_layer("attention").out_proj.kernel.shape == (128, 256)
    with pytest.raises(ValueError, match="seed_cnn.*weights=None"):
        build_classifier("seed_cnn", weights="imagenet")


def test_seed_subtype_model_as_published():
    model = build_seed_subtype_model("mobilenet", input_shape=(96, 96, 3), weights=None)
    names = [layer.name for layer in model.layers]
    assert "scale" not in names  # the seed fed [0, 1] straight to the backbone
    order = ["tokens", "attention", "noise1", "pool", "fc", "bn", "noise2", "dropout", "probs"]
    assert names[-len(order):] == order
    attention = model.get_layer("attention")
    assert isinstance(attention, ThresholdedAttention) and attention.key_dim == 1024
    assert model.output_shape == (None, 5)
    assert model.get_layer("fc").units == 512
    assert model.get_layer("noise1").stddev == 0.25 and model.get_layer("dropout").rate == 0.25
    with pytest.raises(ValueError, match="backbone='seed_cnn'"):
        build_seed_subtype_model("seed_cnn", weights=None)


def test_unknown_build_options_are_value_errors_naming_them():
    with pytest.raises(ValueError, match=r"model 'seed-pcam' takes no option \['dropout'\]"):
        build_model("seed-pcam", options={"dropout": 0.2})


def test_registered_models_are_built_listed_and_accepted_by_the_command(monkeypatch):
    from histolib import cli
    from histolib.models import MODELS, register_model

    def tiny(*, num_classes, input_shape, weights, width=4):
        inputs = keras.Input(input_shape or (8, 8, 3))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(width, 3)(inputs))
        return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x), name="tiny")

    from histolib.models import registry

    assert registry.MODELS is MODELS
    monkeypatch.setattr(registry, "MODELS", dict(MODELS))  # the registration ends with the test
    registry.register_model("tiny-test", tiny, summary="a test model")
    assert "tiny-test" in registry.list_models()
    model = registry.build_model("tiny-test", num_classes=3, options={"width": 5})
    assert model.output_shape == (None, 3) and model.layers[1].filters == 5
    with pytest.raises(ValueError, match="depth"):
        registry.build_model("tiny-test", options={"depth": 2})
    with pytest.raises(ValueError, match="taken"):
        registry.register_model("tiny-test", tiny)
    # The command's --model reads the same table: every listed name parses, others do not; the MIL
    # models train on bags of tile features, which the command does not make, and say so.
    parser = cli.build_parser()
    for name in registry.list_models():
        argv = ["train", "--data", "synthetic-pcam", "--model", name, "--epochs", "1", "--out", "x"]
        if name.startswith("mil-"):
            with pytest.raises(cli.UsageError, match=f"{name} trains on bags of tile features"):
                parser.parse_args(argv)
        else:
            assert parser.parse_args(argv).model == name
    with pytest.raises(cli.UsageError, match="Unknown model name; did you mean 'tiny-test'\?"):
        parser.parse_args(["train", "--data", "synthetic-pcam", "--model", "tiny-tset", "--epochs", "1", "--out", "x"])
    assert register_model is registry.register_model


def test_build_model_names():
    names = list_models()
    poolings = ["mean", "max", "meanmax", "attention", "gated", "thresholded", "differential"]
    # the seed's two, seed-subtype-<5 ImageNet-style backbones>, 6 backbones x 4 heads, mil-<pooling>,
    # tiles-<3 encoders>+<pooling>
    assert len(names) == 2 + 5 + 6 * 4 + len(poolings) + 3 * len(poolings)
    assert {f"tiles-both+{p}" for p in poolings} | {f"mil-{p}" for p in poolings} <= set(names)
    centred = build_model("seed-pcam-centred")  # the seed's model with a parameter-free Rescaling first
    assert centred.get_layer("centre").get_config()["scale"] == 2.0
    assert centred.count_params() == build_model("seed-pcam").count_params() == SEED_PCAM_PARAMS
    assert {"seed-pcam", "seed-subtype-xception", "mobilenet+differential", "seed_cnn+self"} <= set(names)
    model = build_model("seed_cnn+self")  # weights="auto": seed_cnn has none
    assert model.name == "seed_cnn_self" and model.output_shape == (None, 2)
    assert build_model("mobilenet+differential", weights=None, num_classes=4).output_shape == (None, 4)
    model = build_model("seed-subtype-mobilenet", weights=None, num_classes=5, input_shape=(96, 96, 3))
    assert model.name == "seed-subtype-mobilenet"
    for bad in ("mobilenet+", "seed-subtype-seed_cnn", "mobilenet+self+self", "vgg16"):
        with pytest.raises(ValueError, match="Valid model names: seed-pcam, seed-pcam-centred, "):
            build_model(bad, weights=None)



def test_backbone_size_resizes_inside_the_model():
    model = build_classifier("mobilenet_025", weights=None, backbone_size=128)
    assert model.input_shape == (None, 96, 96, 3)
    assert model.get_layer("resize").output.shape == (None, 128, 128, 3)
    assert model.get_layer("conv_pw_13_relu").output.shape == (None, 4, 4, 256)  # 3 x 3 at 96 px
    x = np.random.default_rng(0).uniform(0, 1, (2, 96, 96, 3)).astype("float32")
    assert model(x).shape == (2, 2)
    with pytest.raises(ValueError, match="at least 95 for mobilenet_025.*backbone_size=64"):
        build_classifier("mobilenet_025", weights=None, backbone_size=64)


def test_model_options_of_the_registry():
    assert model_options("mobilenet_025") == ["backbone_size", "freeze"]
    assert model_options("seed_cnn+self") == ["backbone_size", "freeze"]
    assert model_options("seed-pcam") == ["centre_inputs"]  # build_seed_pcam_model(centre_inputs=...)
    assert build_model("mobilenet_025", weights=None, options={"backbone_size": 112}).get_layer("resize").output.shape[1] == 112
    with pytest.raises(ValueError, match="takes no option \\['freeze'\\]"):
        build_model("seed-pcam", options={"freeze": False})


def test_classifier_keras_round_trip(tmp_path):
    model = build_classifier("seed_cnn", attention="differential", input_shape=(32, 32, 3), weights=None)
    x = np.random.default_rng(2).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded(x), model(x))


# ---------------------------------------------------------------- weights, offline
def _no_network(*args, **kwargs):
    raise AssertionError("the test tried to reach the network")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, an empty histolib cache, no HISTOLIB_WEIGHTS_DIR."""
    monkeypatch.setattr(files, "reachable", lambda *a, **k: False)
    monkeypatch.setenv("HISTOLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HISTOLIB_WEIGHTS_DIR", raising=False)
    return tmp_path


def _write_keras_h5(model, path):
    """Write weights the way Keras's own application files are stored (legacy HDF5)."""
    from histolib.models import write_application_weights

    write_application_weights(model, path)


def test_imagenet_weights_load_from_histolib_weights_dir(offline, monkeypatch):
    spec = get_backbone("mobilenet")
    fname = spec.weights_file(128)
    assert fname == "mobilenet_1_0_128_tf_no_top.h5"
    keras.utils.set_random_seed(3)
    source = keras.applications.MobileNet(include_top=False, weights=None, input_shape=(128, 128, 3))
    weights_dir = offline / "weights"
    weights_dir.mkdir()
    _write_keras_h5(source, weights_dir / fname)
    monkeypatch.setenv("HISTOLIB_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.setattr(files, "reachable", _no_network)
    model = build_classifier("mobilenet", input_shape=(128, 128, 3), weights="imagenet")
    for layer in source.layers:
        if layer.weights:
            loaded = model.get_layer(layer.name)
            for a, b in zip(loaded.get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(a, b)
            assert not loaded.trainable  # frozen: pretrained weights, freeze=True
    assert model.get_layer("probs").trainable
    from histolib.models import parameter_counts

    counts = parameter_counts(model)
    assert counts["trainable"] == 1024 * 2 + 2  # only the head learns
    assert counts["trainable"] + counts["frozen"] == model.count_params()
    # Through the registry: frozen by default, trained with freeze=False (--fine-tune).
    frozen = build_model("mobilenet", input_shape=(128, 128, 3), weights="imagenet")
    tuned = build_model("mobilenet", input_shape=(128, 128, 3), weights="imagenet", options={"freeze": False})
    assert not frozen.get_layer("conv1").trainable and tuned.get_layer("conv1").trainable
    assert all(layer.trainable for layer in tuned.layers)
    np.testing.assert_array_equal(tuned.get_layer("conv1").get_weights()[0], source.get_layer("conv1").get_weights()[0])
    # The same file given as a path, unfrozen.
    model = build_classifier(
        "mobilenet", input_shape=(128, 128, 3), weights=str(weights_dir / fname), freeze=False
    )
    np.testing.assert_array_equal(
        model.get_layer("conv1").get_weights()[0], source.get_layer("conv1").get_weights()[0]
    )
    assert model.get_layer("conv1").trainable


def test_offline_without_weights_names_the_file(offline):
    with pytest.raises(WeightsNotFoundError) as error:
        build_classifier("inception_v3", weights="imagenet")
    message = str(error.value)
    assert "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/" in message
    assert "HISTOLIB_WEIGHTS_DIR" in message and str(offline / "cache" / "weights") in message
    with pytest.raises(FileNotFoundError, match="no_such.h5"):
        build_classifier("xception", weights=str(offline / "no_such.h5"))


def test_a_downloaded_file_in_the_cache_is_used_without_network(offline, monkeypatch):
    spec = get_backbone("mobilenet")  # no published MD5: any file of that name is kept
    cached = offline / "cache" / "weights" / spec.weights_file(160)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"stand-in")
    monkeypatch.setattr(files, "reachable", _no_network)
    assert weights_module.resolve_weights(spec, "imagenet", input_size=160) == str(cached)
    # A file whose MD5 differs from the published one is not trusted: offline, that is an error.
    damaged = offline / "cache" / "weights" / get_backbone("xception").weights_file()
    damaged.write_bytes(b"not the published weights")
    monkeypatch.setattr(files, "reachable", lambda *a, **k: False)
    with pytest.raises(WeightsNotFoundError, match="xception_weights"):
        weights_module.resolve_weights(get_backbone("xception"), "imagenet")


def test_weights_urls_match_keras():
    from keras.src.applications import inception_v3, mobilenet, xception

    assert get_backbone("inception_v3").weights_url + get_backbone("inception_v3").weights_file() == (
        inception_v3.WEIGHTS_PATH_NO_TOP
    )
    assert get_backbone("xception").weights_url + get_backbone("xception").weights_file() == (
        xception.WEIGHTS_PATH_NO_TOP
    )
    assert get_backbone("mobilenet").weights_url == mobilenet.BASE_WEIGHT_PATH
    assert BACKBONES["seed_cnn"].weights_file() is None


# ---------------------------------------------------------------- dtypes, XLA, JAX
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


@pytest.mark.slow
def test_builders_under_mixed_bfloat16_with_jit_output_float32():
    x = np.random.default_rng(4).uniform(0, 1, (4, 32, 32, 3)).astype("float32")
    y = np.array([0, 1, 1, 0], "int32")
    previous = keras.config.dtype_policy()
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        models = [
            build_model("seed-pcam", input_shape=(32, 32, 3)),
            build_model("seed_cnn+differential", input_shape=(32, 32, 3)),
        ]
    finally:
        keras.mixed_precision.set_global_policy(previous)
    for model in models:
        assert model.get_layer("attention").compute_dtype == "bfloat16"
        assert keras.backend.standardize_dtype(model.outputs[0].dtype) == "float32"
        model.compile(optimizer="adam", loss=loss_for(model), jit_compile=True)
        losses = [float(model.train_on_batch(x, y)) for _ in range(2)]
        assert np.all(np.isfinite(losses))
        probs = model.predict(x, verbose=0)
        assert probs.dtype == np.float32
        np.testing.assert_allclose(class_probabilities(probs).sum(-1), 1.0, atol=1e-5)


JAX_SCRIPT = """
import json, numpy as np, keras
from histolib.models import build_model, gradcam_layer_name, loss_for
assert keras.backend.backend() == "jax", keras.backend.backend()
report = {}
rng = np.random.default_rng(0)
x = rng.uniform(0, 1, (4, 32, 32, 3)).astype("float32")
y = np.array([0, 1, 0, 1], "int32")
for name in ("seed-pcam", "seed_cnn+differential"):
    keras.utils.set_random_seed(0)
    model = build_model(name, input_shape=(32, 32, 3))
    model.compile(optimizer="adam", loss=loss_for(model), jit_compile=True)
    losses = [float(model.train_on_batch(x, y)) for _ in range(3)]
    report[name] = {"losses": losses, "probs": model.predict(x, verbose=0).tolist(),
                    "gradcam": gradcam_layer_name(model), "params": model.count_params()}
print(json.dumps(report))
"""


@pytest.mark.slow
def test_builders_train_on_the_jax_backend():
    """The Colab-TPU route: the same builders, Keras 3 on JAX, jitted."""
    pytest.importorskip("jax")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT], capture_output=True, text=True, env=env, timeout=400
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    seed = report["seed-pcam"]
    assert seed["gradcam"] == "conv3" and np.array(seed["probs"]).shape == (4, 1)
    assert seed["params"] == build_seed_pcam_model((32, 32, 3)).count_params()
    diff = report["seed_cnn+differential"]
    assert np.array(diff["probs"]).shape == (4, 2)
    np.testing.assert_allclose(np.array(diff["probs"]).sum(-1), 1.0, atol=1e-5)
    for entry in report.values():
        assert np.all(np.isfinite(entry["losses"]))


def test_ensemble_averages_its_members_and_loads_safely(tmp_path):
    from histolib.models import build_ensemble

    keras.utils.set_random_seed(4)
    members = [build_classifier("seed_cnn", input_shape=(32, 32, 3), weights=None) for _ in range(3)]
    ensemble = build_ensemble(members, name="pcam_ensemble")
    x = np.random.default_rng(5).uniform(0, 1, (4, 32, 32, 3)).astype("float32")
    expected = np.mean([m.predict(x, verbose=0) for m in members], axis=0)
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert ensemble.count_params() == sum(m.count_params() for m in members)
    ensemble.save(tmp_path / "ensemble.keras")
    loaded = keras.saving.load_model(tmp_path / "ensemble.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    sigmoid = build_ensemble([build_seed_pcam_model(), build_seed_pcam_model()])
    assert sigmoid.output_shape == (None, 1)
    with pytest.raises(ValueError, match="at least two members"):
        build_ensemble(members[:1])
    with pytest.raises(ValueError, match="shapes"):
        build_ensemble([members[0], build_classifier("seed_cnn", input_shape=(32, 32, 3), num_classes=3, weights=None)])
