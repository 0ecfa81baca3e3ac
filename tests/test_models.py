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
    assert SEED_PCAM_PARAMS == 494_337
    assert model.count_params() == 494_337
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
    with pytest.raises(ValueError, match="Valid names: .*seed-pcam"):
        build_model("resnet")
