"""histolib.models.fold: batch normalisation folded into convolutions for inference."""

import keras
import numpy as np
import pytest

from histolib.models import build_classifier, fold_batch_norm
from histolib.models.fold import foldable_pairs


def _randomise_batch_norm(model, seed=0):
    """Give every BatchNormalization non-trivial statistics, so folding has something to do."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape) if "variance" in w.path or "gamma" in w.path
                               else rng.normal(0, 0.3, w.shape) for w in layer.weights])


def small_model():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="conv_bn")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = keras.layers.BatchNormalization(scale=False, name="dw_bn")(x)
    x = keras.layers.SeparableConv2D(6, 3, padding="same", name="sep")(x)
    x = keras.layers.BatchNormalization(center=False, name="sep_bn")(x)
    branch = keras.layers.Conv2D(6, 1, name="shared")(x)  # used twice: must not be folded
    y = keras.layers.BatchNormalization(name="shared_bn")(branch)
    x = keras.layers.Add()([y, branch])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


def test_fold_matches_the_original_and_removes_foldable_batch_norms():
    keras.utils.set_random_seed(0)
    model = small_model()
    _randomise_batch_norm(model)
    assert set(foldable_pairs(model)) == {"conv", "dw", "sep"}
    folded = fold_batch_norm(model)
    kinds = {layer.name: type(layer).__name__ for layer in folded.layers}
    assert kinds["conv_bn"] == kinds["dw_bn"] == kinds["sep_bn"] == "FoldedBatchNorm"
    assert kinds["shared_bn"] == "BatchNormalization"
    x = np.random.default_rng(1).uniform(0, 1, (4, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert model.get_layer("conv_bn").__class__ is keras.layers.BatchNormalization  # original untouched


@pytest.mark.slow
def test_fold_mobilenet_classifier_under_mixed_bfloat16():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        model = build_classifier("mobilenet", weights=None, input_shape=(96, 96, 3))
        _randomise_batch_norm(model)
        folded = fold_batch_norm(model)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert len(foldable_pairs(model)) == 27  # every BatchNormalization of MobileNet
    assert not [layer for layer in folded.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert folded.count_params() < model.count_params()  # 4 per channel become 1 bias
    x = np.random.default_rng(2).uniform(0, 1, (8, 96, 96, 3)).astype("float32")
    p, q = model.predict(x, verbose=0), folded.predict(x, verbose=0)
    assert np.abs(p - q).max() < 0.05  # bfloat16 round-off through 28 layers; same calls
    assert (p.argmax(axis=1) == q.argmax(axis=1)).mean() >= 0.75


def test_fold_refuses_a_subclassed_model():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional"):
        fold_batch_norm(Net())


def test_calibrate_batch_norm_takes_the_batch_statistics_and_freezes():
    from histolib.models import calibrate_batch_norm

    keras.utils.set_random_seed(0)
    model = small_model()
    images = np.random.default_rng(2).uniform(0, 1, (16, 16, 16, 3)).astype("float32")
    conv_out = keras.Model(model.inputs, model.get_layer("conv").output)(images).numpy()
    momenta = {layer.name: layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert calibrate_batch_norm(model, images, until="sep_bn") is model
    bn = model.get_layer("conv_bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), conv_out.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), conv_out.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-6)
    # In inference mode the calibrated batch norms now normalise that batch: mean 0, variance 1.
    normed = keras.Model(model.inputs, bn.output)(images, training=False).numpy()
    np.testing.assert_allclose(normed.mean(axis=(0, 1, 2)), 0, atol=1e-3)
    upto = [layer.name for layer in model.layers][: [layer.name for layer in model.layers].index("sep_bn") + 1]
    assert not any(model.get_layer(name).trainable for name in upto)
    assert model.get_layer("shared_bn").trainable and model.get_layer("shared_bn").moving_mean.numpy().max() == 0
    assert {n: model.get_layer(n).momentum for n in momenta} == momenta  # momenta put back
