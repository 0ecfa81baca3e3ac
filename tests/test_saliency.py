"""Saliency and attention maps: ranges, shapes, known answers, and whether they find lesions."""

import keras
import numpy as np
import pytest
from scipy import stats

from histolib import saliency
from histolib.layers import DifferentialAttention, SelfAttention, ThresholdedAttention

SIZE = 48


def lesion_patches(n, seed):
    """Pink noisy patches; label 1 carries one dark purple disc, its mask the known lesion."""
    rng = np.random.default_rng(seed)
    images = np.array([0.92, 0.75, 0.85], np.float32) + rng.normal(0, 0.05, (n, SIZE, SIZE, 3))
    labels = rng.integers(0, 2, n)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    masks = np.zeros((n, SIZE, SIZE), bool)
    for i in np.flatnonzero(labels):
        radius = rng.uniform(5, 9)
        cy, cx = rng.uniform(radius, SIZE - radius, 2)
        masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        images[i][masks[i]] = [0.35, 0.15, 0.45] + rng.normal(0, 0.05, (masks[i].sum(), 3))
    return np.clip(images, 0, 1).astype(np.float32), labels, masks


def small_cnn(name="cnn"):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="prob")(x)
    return keras.Model(inputs, outputs, name=name)


@pytest.fixture(scope="module")
def trained():
    """A tiny CNN trained for about two seconds to find the disc, and held-out lesion patches."""
    keras.utils.set_random_seed(0)
    model = small_cnn()
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy", metrics=["accuracy"])
    images, labels, _ = lesion_patches(256, seed=0)
    model.fit(images, labels, epochs=5, batch_size=32, verbose=0)
    test_images, test_labels, test_masks = lesion_patches(48, seed=1)
    accuracy = model.evaluate(test_images, test_labels, verbose=0)[1]
    assert accuracy > 0.9, f"the fixture model did not learn the disc (accuracy {accuracy})"
    positive = test_labels == 1
    return model, test_images[positive], test_masks[positive]


@pytest.mark.parametrize("method", saliency.METHODS)
def test_maps_in_unit_range_at_input_size(trained, method):
    model, images, masks = trained
    maps = saliency.Explainer(model, method, smooth_samples=4)(1, images[:6])
    assert maps.shape == (6, SIZE, SIZE) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0, atol=1e-3)  # each scaled to [0, 1]
    result = saliency.localisation(maps, masks[:6])
    assert result["energy_in_mask"] > 2 * result["chance"], result


def test_trained_maps_find_lesion_and_randomised_maps_do_not(trained):
    model, images, masks = trained
    result = saliency.randomisation_check(model, images, 1, masks=masks, seed=0)
    assert result["n_defined"] == len(images) == len(result["spearman"])
    # The rank correlations are those of the two models' maps, recomputed here independently.
    trained_maps = saliency.Explainer(model)(1, images)
    random_maps = saliency.Explainer(saliency.randomise_weights(model, seed=0))(1, images)
    expected = [stats.spearmanr(a.ravel(), b.ravel()).statistic for a, b in zip(trained_maps, random_maps)]
    np.testing.assert_allclose(result["spearman"], expected, rtol=1e-6, atol=1e-9)
    assert result["spearman_mean"] == pytest.approx(np.mean(expected))
    assert result["spearman_mean"] < 0.5, result["spearman_mean"]  # maps change with the weights
    assert result["trained"]["energy_in_mask"] > result["randomised"]["energy_in_mask"] + 0.3
    assert result["trained"]["pointing_game"] > 0.8
    assert result["trained"]["pointing_game"] > result["randomised"]["pointing_game"]


def test_randomise_weights_leaves_the_model_and_is_seeded(trained):
    model, images, _ = trained
    before = [w.copy() for w in model.get_weights()]
    first = saliency.randomise_weights(model, seed=3)
    again = saliency.randomise_weights(model, seed=3)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    for a, b, old in zip(first.get_weights(), again.get_weights(), before):
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, old)


def test_smoothgrad_is_seeded_and_leaves_numpy_global_state(trained):
    model, images, _ = trained
    explainer = saliency.Explainer(model, "smoothgrad", smooth_samples=3)
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    a = explainer(1, images[:2], seed=5)
    assert np.array_equal(np.random.get_state()[1], state)
    b = explainer(1, images[:2], seed=5)
    c = explainer(1, images[:2], seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_gradcam_in_a_nested_backbone_matches_the_flat_model():
    """Grad-CAM through a nested backbone (the Keras 3 workaround) equals the same net flat."""
    keras.utils.set_random_seed(1)
    flat = small_cnn("flat")
    backbone_in = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(backbone_in)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    backbone = keras.Model(backbone_in, x, name="backbone")
    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalMaxPooling2D()(backbone(inputs))
    nested = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="prob")(pooled))
    nested.set_weights(flat.get_weights())
    images, _, _ = lesion_patches(4, seed=2)
    for method in ("gradcam", "gradcam++"):
        for layer in ("conv1", "conv2", None):
            want = saliency.Explainer(flat, method)(1, images, layer=layer)
            got = saliency.Explainer(nested, method)(1, images, layer=layer)
            np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_layer_two_models_deep_is_refused_by_name():
    """Grad-CAM reaches one nested backbone; deeper, the message names the layer as given."""
    inner_in = keras.Input((SIZE, SIZE, 3))
    inner = keras.Model(inner_in, keras.layers.Conv2D(4, 3, name="deep_conv")(inner_in), name="inner")
    middle_in = keras.Input((SIZE, SIZE, 3))
    middle = keras.Model(middle_in, inner(middle_in), name="middle")
    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalMaxPooling2D()(middle(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(pooled))
    with pytest.raises(ValueError) as caught:
        saliency.Explainer(model)(1, np.zeros((1, SIZE, SIZE, 3)), layer="deep_conv")
    assert "2 models deep" in str(caught.value)
    assert "Received: layer='deep_conv'" in str(caught.value)


def test_class_score_for_sigmoid_and_softmax_heads():
    sigmoid = small_cnn()
    logits = keras.ops.convert_to_tensor([[2.0], [-1.0]])
    np.testing.assert_allclose(saliency.class_score(sigmoid, 1)(logits), [2.0, -1.0])
    np.testing.assert_allclose(saliency.class_score(sigmoid, 0)(logits), [-2.0, 1.0])
    softmax = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    scores = keras.ops.convert_to_tensor([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])
    np.testing.assert_allclose(saliency.class_score(softmax, 2)(scores), [0.7, 0.2])
    with pytest.raises(ValueError, match="target=3"):
        saliency.class_score(softmax, 3)
    with pytest.raises(ValueError, match="target=2"):
        saliency.class_score(sigmoid, 2)


def test_bad_arguments_are_named():
    model = small_cnn()
    with pytest.raises(ValueError, match=r"method='gradcam\+'"):
        saliency.Explainer(model, "gradcam+")
    with pytest.raises(ValueError, match=r"images.shape=\(48, 48, 3\)"):
        saliency.Explainer(model)(1, np.zeros((SIZE, SIZE, 3)))
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        saliency.Explainer(model)(1, np.zeros((1, SIZE, SIZE, 3)), layer="conv9")


def attention_model(layer, *, tokens):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu")(inputs)  # 8x8
    if tokens:
        x = keras.layers.Reshape((64, 8))(x)
    x = keras.layers.GlobalAveragePooling1D()(layer(x))
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


@pytest.mark.parametrize("tokens", [False, True])
@pytest.mark.parametrize(
    "make",
    [lambda: SelfAttention(8), lambda: ThresholdedAttention(8),
     lambda: DifferentialAttention(num_heads=2, head_dim=4)],
    ids=["self", "thresholded", "differential"],
)
def test_attention_maps_at_image_size(make, tokens):
    keras.utils.set_random_seed(0)
    model = attention_model(make(), tokens=tokens)
    images = np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32)
    maps = saliency.attention_map(model, images, batch_size=2)
    assert maps.shape == (3, 32, 32) and maps.dtype == np.float32
    assert maps.min() == 0.0 and maps.max() == pytest.approx(1.0)


def test_attention_map_puts_a_bright_token_in_its_place():
    """Queries that look for brightness attend to the one bright 8x8 block: row 0, column 3."""
    attention = SelfAttention(3, name="attention")
    inputs = keras.Input((32, 32, 3))
    tokens = attention(keras.layers.AveragePooling2D(8)(inputs))  # 4x4 grid of 16 tokens
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(tokens)))
    attention.query.kernel.assign(np.zeros((3, 3)))
    attention.query.bias.assign(np.full(3, 4.0))
    attention.key.kernel.assign(np.eye(3))
    attention.key.bias.assign(np.zeros(3))
    images = np.zeros((1, 32, 32, 3), np.float32)
    images[0, :8, 24:] = 1.0
    maps = saliency.attention_map(model, images)[0]
    peak = np.unravel_index(maps.argmax(), maps.shape)
    assert peak[0] < 8 and peak[1] >= 24, peak
    assert maps[24:, :8].max() == 0.0


def test_attention_map_needs_an_attention_layer():
    with pytest.raises(ValueError, match="attention layers found: \\[\\]"):
        saliency.attention_map(small_cnn(), np.zeros((1, SIZE, SIZE, 3)))


def test_energy_and_pointing_game_known_answers():
    masks = np.zeros((3, 4, 4), bool)
    masks[:, :2, :2] = True
    maps = np.zeros((3, 4, 4))
    maps[0, 0, 0], maps[0, 3, 3] = 3.0, 1.0  # 3/4 of the energy inside, peak inside
    maps[1, 3, 3], maps[1, 1, 1] = 1.0, 0.5  # 1/3 inside, peak outside
    np.testing.assert_allclose(saliency.energy_in_mask(maps, masks), [0.75, 1 / 3, 0.25])
    np.testing.assert_array_equal(saliency.pointing_game(maps, masks), [True, False, False])
    assert not saliency.pointing_game(maps[1:2], masks[1:2], tolerance=2)[0]
    assert saliency.pointing_game(maps[1:2], masks[1:2], tolerance=3)[0]  # (3, 3) is 2.8 px from (1, 1)
    result = saliency.localisation(maps, masks)
    assert result == pytest.approx(
        {"n": 3, "energy_in_mask": (0.75 + 1 / 3 + 0.25) / 3, "chance": 0.25, "pointing_game": 1 / 3}
    )
    empty = np.zeros_like(masks)
    with pytest.raises(ValueError, match="empty masks at indices \\[0, 1, 2\\]"):
        saliency.pointing_game(maps, empty)
    with pytest.raises(ValueError, match="same shape"):
        saliency.energy_in_mask(maps, masks[:2])


def test_mixed_bfloat16_model_is_explained_through_a_float32_twin():
    """tf-keras-vis's Grad-CAM++ fails on bfloat16 gradients; the float32 twin gives the maps."""
    keras.utils.set_random_seed(2)
    reference = small_cnn("float32")
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1",
                            dtype="mixed_bfloat16")(inputs)
    x = keras.layers.MaxPooling2D(dtype="mixed_bfloat16")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2",
                            dtype="mixed_bfloat16")(x)
    x = keras.layers.GlobalMaxPooling2D(dtype="mixed_bfloat16")(x)
    low = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="prob")(x))
    low.set_weights(reference.get_weights())
    images, _, _ = lesion_patches(3, seed=4)
    for method in ("gradcam", "gradcam++"):
        explainer = saliency.Explainer(low, method)
        assert all(layer.compute_dtype == "float32" for layer in explainer.model.layers)
        assert low.get_layer("conv1").compute_dtype == "bfloat16"  # the model is left as it was
        np.testing.assert_allclose(explainer(1, images),
                                   saliency.Explainer(reference, method)(1, images), atol=1e-5)


def test_seed_pcam_model_maps():
    from histolib.models import build_seed_pcam_model

    keras.utils.set_random_seed(0)
    model = build_seed_pcam_model()
    images = np.random.default_rng(0).random((2, 96, 96, 3), dtype=np.float32)
    cam = saliency.Explainer(model)(1, images)  # the last convolution, conv3
    attention = saliency.attention_map(model, images)  # 144 tokens -> 12 x 12 grid
    assert cam.shape == attention.shape == (2, 96, 96)
    assert attention.max() == pytest.approx(1.0) and attention.min() == 0.0
