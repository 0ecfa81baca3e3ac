"""histolib.layers.mil: AttentionMILPooling and MaskedGlobalMaxPooling1D against NumPy."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from histolib.layers import AttentionMILPooling, MaskedGlobalMaxPooling1D

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- NumPy reference
def np_attention_pool(h, mask, wv, bv, wu, bu, ww, bw, gated):
    """Ilse et al. 2018, eq. 8 (plain) / eq. 9 (gated), softmax over the real instances only."""
    hidden = np.tanh(h @ wv + bv)
    if gated:
        hidden = hidden / (1 + np.exp(-(h @ wu + bu)))  # tanh(V h) * sigmoid(U h)
    logits = (hidden @ ww + bw)[..., 0]  # (b, n)
    scores = np.zeros_like(logits)
    for i in range(len(h)):
        real = mask[i]
        e = np.exp(logits[i, real] - logits[i, real].max())
        scores[i, real] = e / e.sum()
    return np.einsum("bn,bnc->bc", scores, h), scores


def randomize(layer, rng, scale=0.5):
    """Random normal weights (biases too), so the test checks the formula, not zero biases."""
    layer.set_weights([rng.normal(0, scale, w.shape).astype("float32") for w in layer.get_weights()])


def bags(rng, b=3, n=7, c=6):
    """Random bags and a mask with 7, 4 and 1 real instances (padding at the end)."""
    x = rng.normal(0, 1, (b, n, c)).astype("float32")
    mask = np.arange(n)[None, :] < np.array([n, 4, 1][:b])[:, None]
    return x, mask


def weights_of(layer):
    if layer.gated:
        (wv, bv), (wu, bu), (ww, bw) = (d.get_weights() for d in (layer.attention_v, layer.attention_u,
                                                                  layer.attention_w))
    else:
        (wv, bv), (ww, bw) = (d.get_weights() for d in (layer.attention_v, layer.attention_w))
        wu = bu = None
    return wv, bv, wu, bu, ww, bw


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_attention_pooling_matches_numpy(gated):
    rng = np.random.default_rng(0)
    x, mask = bags(rng)
    layer = AttentionMILPooling(units=5, gated=gated)
    layer(x, mask=mask)
    randomize(layer, rng)
    pooled, scores = layer(x, mask=mask, return_attention_scores=True)
    ref_pooled, ref_scores = np_attention_pool(x, mask, *weights_of(layer), gated=gated)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scores), ref_scores, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(pooled), ref_pooled, atol=1e-5)
    assert keras.backend.standardize_dtype(scores.dtype) == "float32"
    assert tuple(pooled.shape) == (3, 6) and tuple(scores.shape) == (3, 7)
    expected_weights = 3 if gated else 2  # V, (U,) w: each a kernel and a bias
    assert len(layer.weights) == 2 * expected_weights
    assert [w.shape for w in layer.attention_w.weights] == [(5, 1), (1,)]


def test_scores_sum_to_one_over_real_instances_and_are_exactly_zero_on_padding():
    rng = np.random.default_rng(1)
    x, mask = bags(rng)
    x[~mask] = 1e3  # loud padding
    layer = AttentionMILPooling(units=4)
    _, scores = layer(x, mask=mask, return_attention_scores=True)
    scores = keras.ops.convert_to_numpy(scores)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(scores[~mask] == 0.0)
    assert np.all(scores[mask] > 0.0)
    assert scores[2, 0] == pytest.approx(1.0)  # a bag of one instance gives it all the weight


def test_permuting_the_instances_permutes_the_scores_and_keeps_the_pooled_vector():
    rng = np.random.default_rng(2)
    x, mask = bags(rng)
    layer = AttentionMILPooling(units=8)
    pooled, scores = layer(x, mask=mask, return_attention_scores=True)
    order = rng.permutation(x.shape[1])
    pooled_p, scores_p = layer(x[:, order], mask=mask[:, order], return_attention_scores=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(pooled_p), keras.ops.convert_to_numpy(pooled),
                               atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scores_p), keras.ops.convert_to_numpy(scores)[:, order],
                               atol=1e-6)


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_padding_changes_nothing(gated):
    """A bag of 5 instances, alone and padded to 12 with random values, pools the same."""
    rng = np.random.default_rng(3)
    bag = rng.normal(0, 1, (1, 5, 6)).astype("float32")
    padded = np.concatenate([bag, rng.normal(0, 10, (1, 7, 6)).astype("float32")], axis=1)
    mask = np.arange(12)[None] < 5
    layer = AttentionMILPooling(units=4, gated=gated)
    alone, scores_alone = layer(bag, return_attention_scores=True)
    with_padding, scores_padded = layer(padded, mask=mask, return_attention_scores=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(with_padding), keras.ops.convert_to_numpy(alone),
                               atol=1e-6)
    scores_padded = keras.ops.convert_to_numpy(scores_padded)
    np.testing.assert_allclose(scores_padded[:, :5], keras.ops.convert_to_numpy(scores_alone), atol=1e-7)
    assert np.all(scores_padded[:, 5:] == 0.0)
    pooled_max = MaskedGlobalMaxPooling1D()(padded, mask=mask)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(pooled_max), bag.max(axis=1))


def test_keras_masking_is_the_same_as_an_explicit_mask():
    rng = np.random.default_rng(4)
    x, mask = bags(rng)
    x[~mask] = 0.0  # Masking(0.0) treats all-zero instances as padding
    inputs = keras.Input((None, 6))
    masked = keras.layers.Masking(0.0)(inputs)
    pool = AttentionMILPooling(units=4, name="pool")
    model = keras.Model(inputs, [*pool(masked, return_attention_scores=True), MaskedGlobalMaxPooling1D()(masked)])
    pooled, scores, maxed = (keras.ops.convert_to_numpy(t) for t in model(x))
    ref_pooled, ref_scores = pool(x, mask=mask, return_attention_scores=True)
    np.testing.assert_allclose(scores, keras.ops.convert_to_numpy(ref_scores), atol=1e-7)
    np.testing.assert_allclose(pooled, keras.ops.convert_to_numpy(ref_pooled), atol=1e-6)
    np.testing.assert_array_equal(maxed, np.where(mask[..., None], x, -np.inf).max(axis=1))
    assert getattr(model.outputs[0], "_keras_mask", None) is None  # the bag axis is pooled away


def test_a_bag_of_padding_only_pools_to_zeros():
    x = np.ones((2, 3, 4), "float32")
    mask = np.array([[False] * 3, [True, False, False]])
    pooled, scores = AttentionMILPooling(units=2)(x, mask=mask, return_attention_scores=True)
    pooled, scores = keras.ops.convert_to_numpy(pooled), keras.ops.convert_to_numpy(scores)
    assert np.all(pooled[0] == 0) and np.all(scores[0] == 0)
    np.testing.assert_allclose(scores[1], [1, 0, 0])
    maxed = keras.ops.convert_to_numpy(MaskedGlobalMaxPooling1D()(x, mask=mask))
    np.testing.assert_array_equal(maxed, [[0, 0, 0, 0], [1, 1, 1, 1]])


def test_training_through_padding_keeps_the_weights_finite():
    """Gradients through the -1e9 logits of padding and the -inf of the masked max are finite."""
    rng = np.random.default_rng(5)
    features = keras.Input((None, 6), name="features")
    mask = keras.Input((None,), dtype="bool", name="mask")
    pooled = keras.layers.Concatenate()([AttentionMILPooling(4)(features, mask=mask),
                                         MaskedGlobalMaxPooling1D()(features, mask=mask)])
    model = keras.Model({"features": features, "mask": mask}, keras.layers.Dense(1)(pooled))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, m = bags(rng)
    m[0] = False  # one bag of padding only
    loss = model.train_on_batch({"features": x, "mask": m}, np.ones((3, 1), "float32"))
    assert np.isfinite(loss)
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


@pytest.mark.parametrize(
    "make, message",
    [(lambda: AttentionMILPooling(units=0), "units=0"), (lambda: AttentionMILPooling(units=2.5), "units=2.5"),
     (lambda: AttentionMILPooling(gated="yes"), "gated='yes'")],
)
def test_bad_arguments_raise(make, message):
    with pytest.raises(ValueError, match=f"Received: {message}"):
        make()


@pytest.mark.parametrize("layer", [AttentionMILPooling(), MaskedGlobalMaxPooling1D()], ids=["attention", "max"])
def test_inputs_that_are_not_bags_raise(layer):
    with pytest.raises(ValueError, match=r"\(batch, instances, channels\).*Received: input_shape=\(2, 4\)"):
        layer(np.zeros((2, 4), "float32"))


def test_from_config_round_trip():
    layer = AttentionMILPooling(units=16, gated=False, kernel_regularizer="l2", name="pool")
    clone = AttentionMILPooling.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.units, clone.gated) == (16, False)
    for kind in (AttentionMILPooling, MaskedGlobalMaxPooling1D):
        revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(kind()))
        assert type(revived) is kind
        assert keras.saving.get_registered_name(kind) == f"histolib>{kind.__name__}"


def _bag_model():
    features = keras.Input((None, 6), name="features")
    mask = keras.Input((None,), dtype="bool", name="mask")
    gated, gated_scores = AttentionMILPooling(5, name="gated")(features, mask=mask, return_attention_scores=True)
    plain = AttentionMILPooling(5, gated=False, name="plain")(features, mask=mask)
    maxed = MaskedGlobalMaxPooling1D(name="max")(features, mask=mask)
    return keras.Model({"features": features, "mask": mask}, [gated, gated_scores, plain, maxed])


def test_keras_file_round_trip_safe_mode(tmp_path):
    rng = np.random.default_rng(6)
    model = _bag_model()
    x, mask = bags(rng)
    inputs = {"features": x, "mask": mask}
    before = [keras.ops.convert_to_numpy(t) for t in model(inputs)]
    model.save(tmp_path / "bags.keras")
    loaded = keras.saving.load_model(tmp_path / "bags.keras", safe_mode=True)
    after = [keras.ops.convert_to_numpy(t) for t in loaded(inputs)]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert loaded.get_layer("plain").gated is False


def test_mixed_bfloat16_scores_stay_float32():
    rng = np.random.default_rng(7)
    x, mask = bags(rng)
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        layer = AttentionMILPooling(8)
        pooled, scores = layer(x, mask=mask, return_attention_scores=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.backend.standardize_dtype(pooled.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(scores.dtype) == "float32"
    scores = keras.ops.convert_to_numpy(scores)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(scores[~mask] == 0.0)


def test_jax_backend_loads_and_trains_the_layers(tmp_path):
    """The same .keras file runs under KERAS_BACKEND=jax, jitted, with TensorFlow's outputs."""
    pytest.importorskip("jax")
    rng = np.random.default_rng(8)
    model = _bag_model()
    x, mask = bags(rng)
    model.save(tmp_path / "bags.keras")
    np.savez(tmp_path / "io.npz", x=x, mask=mask, *[keras.ops.convert_to_numpy(t) for t in
                                                    model({"features": x, "mask": mask})])
    script = textwrap.dedent(
        f"""
        import json, numpy as np, keras
        import histolib.layers  # registers the layers
        assert keras.backend.backend() == "jax", keras.backend.backend()
        data = np.load({str(tmp_path / "io.npz")!r})
        inputs = {{"features": data["x"], "mask": data["mask"]}}
        model = keras.saving.load_model({str(tmp_path / "bags.keras")!r}, safe_mode=True)
        model.compile(jit_compile=True)
        outs = model.predict(inputs, batch_size=3, verbose=0)
        errs = [float(np.max(np.abs(o - data[f"arr_{{i}}"]))) for i, o in enumerate(outs)]
        padding = float(np.abs(outs[1][~data["mask"]]).max())
        model.compile(optimizer="adam", loss=["mse", None, "mse", "mse"], jit_compile=True)
        targets = [np.zeros_like(data[f"arr_{{i}}"]) for i in (0, 2, 3)]
        loss = model.train_on_batch(inputs, [targets[0], None, targets[1], targets[2]])
        print(json.dumps({{"errs": errs, "padding": padding, "loss": float(np.ravel(loss)[0])}}))
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert max(report["errs"]) < 1e-5, report
    assert report["padding"] == 0.0, report
    assert np.isfinite(report["loss"])
