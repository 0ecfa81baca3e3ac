"""histolib.layers against independent NumPy implementations of their formulas."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from histolib.layers import (
    DifferentialAttention,
    SelfAttention,
    ThresholdedAttention,
    lambda_init_for_depth,
    to_tokens,
)

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- NumPy references
def np_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def np_self_attention(x, wq, bq, wk, bk, wv, bv, wo, bo):
    q, k, v = x @ wq + bq, x @ wk + bk, x @ wv + bv
    a = np_softmax(q @ k.transpose(0, 2, 1) / math.sqrt(wq.shape[1]))
    return (a @ v) @ wo + bo, a


def np_thresholded_softmax(x, wq, bq, wk, bk):
    q, k = x @ wq + bq, x @ wk + bk
    return np_softmax(q @ k.transpose(0, 2, 1))  # no 1/sqrt(d)


def np_differential(x, wq, wk, wv, wo, lq1, lk1, lq2, lk2, scale, num_heads, depth):
    b, n, _ = x.shape
    h = num_heads
    d = wq.shape[1] // (2 * h)
    lam_init = 0.8 - 0.6 * np.exp(-0.3 * depth)
    lam = np.exp(np.sum(lq1 * lk1)) - np.exp(np.sum(lq2 * lk2)) + lam_init
    q, k, v = x @ wq, x @ wk, x @ wv
    maps, heads = [], []
    for i in range(h):
        a = []
        for j in (2 * i, 2 * i + 1):  # q/k head j: columns j*d ... (j+1)*d
            qj, kj = q[..., j * d : (j + 1) * d], k[..., j * d : (j + 1) * d]
            a.append(np_softmax(qj @ kj.transpose(0, 2, 1) / np.sqrt(d)))
        ai = a[0] - lam * a[1]
        vi = v[..., i * 2 * d : (i + 1) * 2 * d]  # v head i: width 2d
        oi = ai @ vi
        oi = oi / np.sqrt(np.mean(oi**2, axis=-1, keepdims=True) + 1e-5) * scale
        heads.append(oi * (1 - lam_init))
        maps.append(ai)
    return np.concatenate(heads, axis=-1) @ wo, np.stack(maps, axis=1), lam


def randomize(layer, rng, scale=0.3):
    """Random normal weights (not the initialisers') so the test checks the formula."""
    layer.set_weights([rng.normal(0, scale, w.shape).astype("float32") for w in layer.get_weights()])


def tokens(rng, b=2, n=12, c=16):
    return rng.normal(0, 1, (b, n, c)).astype("float32")


# ---------------------------------------------------------------- SelfAttention
def test_self_attention_matches_numpy():
    rng = np.random.default_rng(0)
    x = tokens(rng)
    layer = SelfAttention(key_dim=8)
    layer.build(x.shape)
    randomize(layer, rng)
    out, att = layer(x, return_attention_scores=True)
    w = [layer.query.kernel, layer.query.bias, layer.key.kernel, layer.key.bias,
         layer.value.kernel, layer.value.bias, layer.output_dense.kernel, layer.output_dense.bias]
    ref_out, ref_att = np_self_attention(x, *[keras.ops.convert_to_numpy(v) for v in w])
    assert out.shape == (2, 12, 8) and att.shape == (2, 12, 12)
    np.testing.assert_allclose(att, ref_att, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.sum(att, axis=-1), 1.0, atol=1e-5)


def test_feature_maps_are_flattened_row_major():
    rng = np.random.default_rng(1)
    fmap = rng.normal(size=(2, 3, 4, 16)).astype("float32")
    flat = fmap.reshape(2, 12, 16)
    np.testing.assert_array_equal(to_tokens(fmap), flat)
    for layer in (SelfAttention(8), ThresholdedAttention(8), DifferentialAttention(2)):
        np.testing.assert_allclose(layer(fmap), layer(flat), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="Received: inputs.shape"):
        to_tokens(np.zeros((2, 3), "float32"))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SelfAttention(key_dim=0), "key_dim=0"),
        (lambda: ThresholdedAttention(key_dim=2.5), "key_dim=2.5"),
        (lambda: DifferentialAttention(num_heads=0), "num_heads=0"),
        (lambda: DifferentialAttention(2, head_dim=-1), "head_dim=-1"),
        (lambda: DifferentialAttention(2, depth=-1), "depth=-1"),
    ],
)
def test_bad_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ---------------------------------------------------------------- ThresholdedAttention
def test_thresholded_attention_matches_numpy_and_keeps_above_uniform():
    rng = np.random.default_rng(2)
    x = tokens(rng, n=10, c=16)
    layer = ThresholdedAttention(key_dim=8)
    layer.build(x.shape)
    randomize(layer, rng, scale=0.25)
    wq, bq, wk, bk, wv, bv = [
        keras.ops.convert_to_numpy(v)
        for v in (layer.query.kernel, layer.query.bias, layer.key.kernel, layer.key.bias,
                  layer.value.kernel, layer.value.bias)
    ]
    soft = np_thresholded_softmax(x, wq, bq, wk, bk)
    n = x.shape[1]
    # Away from the tie: no softmax entry within 1e-4 of 1/n, so float round-off cannot flip one.
    assert np.min(np.abs(soft - 1 / n)) > 1e-4
    kept = soft > 1 / n
    assert 0 < kept.sum() < kept.size  # the rule zeroes some entries and keeps others
    ref_att = np.where(kept, soft, 0.0)
    ref_out = ref_att @ (x @ wv + bv)
    out, att = layer(x, return_attention_scores=True)
    att = keras.ops.convert_to_numpy(att)
    np.testing.assert_array_equal(att > 0, kept)  # exactly the entries above 1/n survive
    np.testing.assert_allclose(att, ref_att, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-5)
    # The seed's batch-wide mean(A) is 1/n: every row of a softmax sums to one.
    assert soft.mean() == pytest.approx(1 / n, rel=1e-6)
    # No renormalisation: kept rows sum to less than one.
    assert np.all(att.sum(-1) < 1.0)


def test_thresholded_output_of_one_image_ignores_its_batch():
    rng = np.random.default_rng(3)
    x = tokens(rng, b=4)
    layer = ThresholdedAttention(key_dim=8)
    np.testing.assert_allclose(layer(x)[:1], layer(x[:1]), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- DifferentialAttention
def _diff_weights(layer):
    names = ("q_proj", "k_proj", "v_proj", "out_proj")
    kernels = [keras.ops.convert_to_numpy(getattr(layer, a).kernel) for a in names]
    lambdas = [
        keras.ops.convert_to_numpy(getattr(layer, a))
        for a in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2", "subln_scale")
    ]
    return kernels + lambdas


@pytest.mark.parametrize("num_heads, head_dim, depth", [(2, None, 0), (3, 5, 2)])
def test_differential_attention_matches_numpy(num_heads, head_dim, depth):
    rng = np.random.default_rng(4 + depth)
    x = tokens(rng, n=9, c=16)
    layer = DifferentialAttention(num_heads, head_dim=head_dim, depth=depth)
    layer.build(x.shape)
    randomize(layer, rng)
    d = head_dim or 16 // num_heads // 2
    assert layer.q_proj.kernel.shape == (16, 2 * num_heads * d)
    assert layer.v_proj.kernel.shape == (16, 2 * num_heads * d)
    assert layer.out_proj.kernel.shape == (2 * num_heads * d, 16)
    assert layer.lambda_q1.shape == (d,) and layer.subln_scale.shape == (2 * d,)
    assert layer.q_proj.use_bias is False and layer.out_proj.use_bias is False
    assert isinstance(layer.lambda_init, float)
    assert layer.lambda_init == pytest.approx(0.8 - 0.6 * math.exp(-0.3 * depth))
    ref_out, ref_att, lam = np_differential(x, *_diff_weights(layer), num_heads, depth)
    out, att = layer(x, return_attention_scores=True)
    assert out.shape == (2, 9, 16) and att.shape == (2, num_heads, 9, 9)
    np.testing.assert_allclose(att, ref_att, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-4)
    assert float(layer.lam()) == pytest.approx(lam, rel=1e-6)
    # Each row of a differential map sums to 1 - lam (two softmax rows, each summing to one).
    np.testing.assert_allclose(np.sum(att, axis=-1), 1 - lam, atol=1e-5)


def test_differential_default_lambda_init_and_init_scale():
    assert lambda_init_for_depth(0) == pytest.approx(0.2)
    assert lambda_init_for_depth(10) == pytest.approx(0.8 - 0.6 * math.exp(-3))
    keras.utils.set_random_seed(0)
    layer = DifferentialAttention(num_heads=1, head_dim=4096)
    layer.build((None, 4, 8))
    lambdas = np.concatenate(
        [keras.ops.convert_to_numpy(getattr(layer, a)) for a in ("lambda_q1", "lambda_k1")]
    )
    assert abs(lambdas.mean()) < 0.01 and lambdas.std() == pytest.approx(0.1, rel=0.05)
    np.testing.assert_array_equal(layer.subln_scale, np.ones(8192))


def test_differential_head_dim_too_small_raises():
    with pytest.raises(ValueError, match="num_heads=8"):
        DifferentialAttention(num_heads=8).build((None, 4, 8))


# ---------------------------------------------------------------- serialization, jit, dtypes
def _model_with_all_layers(n=8, c=16):
    inputs = keras.Input((n, c))
    a = SelfAttention(key_dim=8, kernel_regularizer="l2", name="self")(inputs)
    b = ThresholdedAttention(key_dim=8, name="thr")(inputs)
    d, dmap = DifferentialAttention(2, depth=1, name="diff")(inputs, return_attention_scores=True)
    return keras.Model(inputs, [a, b, d, dmap])


@pytest.mark.parametrize(
    "layer",
    [SelfAttention(4, kernel_regularizer="l2"), ThresholdedAttention(6), DifferentialAttention(3, 2, 4)],
    ids=["self", "thresholded", "differential"],
)
def test_from_config_round_trip(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is type(layer)
    assert keras.saving.get_registered_name(type(layer)) == f"histolib>{type(layer).__name__}"


def test_keras_file_round_trip_safe_mode(tmp_path):
    rng = np.random.default_rng(5)
    model = _model_with_all_layers()
    x = tokens(rng, n=8)
    before = [keras.ops.convert_to_numpy(t) for t in model(x)]
    path = tmp_path / "layers.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    after = [keras.ops.convert_to_numpy(t) for t in loaded(x)]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert loaded.get_layer("diff").lambda_init == pytest.approx(lambda_init_for_depth(1))


def test_jit_compile_matches_eager():
    rng = np.random.default_rng(6)
    model = _model_with_all_layers()
    x = tokens(rng, b=4, n=8)
    eager = [keras.ops.convert_to_numpy(t) for t in model(x)]
    model.compile(jit_compile=True)
    jitted = model.predict(x, batch_size=4, verbose=0)
    for e, j in zip(eager, jitted):
        np.testing.assert_allclose(j, e, rtol=1e-4, atol=1e-5)


def test_mixed_bfloat16_softmax_in_float32():
    rng = np.random.default_rng(7)
    x = tokens(rng, n=8)
    reference = _model_with_all_layers()
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = _model_with_all_layers()
        model.set_weights(reference.get_weights())
        outs = model(x)
        diff_layer = model.get_layer("diff")
        assert diff_layer.lambda_q1.dtype == "float32"
        model.compile(optimizer="adam", loss=["mse", "mse", "mse", None], jit_compile=False)
        targets = [np.zeros(t.shape, "float32") for t in outs[:3]]
        loss = model.train_on_batch(x, targets)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    ref = reference(x)
    assert [keras.backend.standardize_dtype(t.dtype) for t in outs] == ["bfloat16", "bfloat16", "bfloat16", "float32"]
    _, dmap = diff_layer(x, return_attention_scores=True)
    lam = float(diff_layer.lam())
    # The maps are float32 softmax results: rows sum to 1 - lam to float32 precision.
    np.testing.assert_allclose(np.sum(dmap, axis=-1), 1 - lam, atol=1e-5)
    for low, high in zip(outs, ref):
        np.testing.assert_allclose(
            np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(low, "float32"))),
            keras.ops.convert_to_numpy(high),
            atol=0.1,
            rtol=0.05,
        )
    assert np.all(np.isfinite(loss))


def test_jax_backend_loads_and_runs_the_layers(tmp_path):
    """The same .keras file runs under KERAS_BACKEND=jax, jitted, with TensorFlow's outputs."""
    pytest.importorskip("jax")
    rng = np.random.default_rng(8)
    model = _model_with_all_layers()
    x = tokens(rng, b=4, n=8)
    model.save(tmp_path / "layers.keras")
    np.savez(tmp_path / "io.npz", x=x, *[keras.ops.convert_to_numpy(t) for t in model(x)])
    script = textwrap.dedent(
        f"""
        import json, numpy as np, keras
        import histolib.layers  # registers the layers
        assert keras.backend.backend() == "jax", keras.backend.backend()
        data = np.load({str(tmp_path / "io.npz")!r})
        model = keras.saving.load_model({str(tmp_path / "layers.keras")!r}, safe_mode=True)
        model.compile(jit_compile=True)
        outs = model.predict(data["x"], batch_size=4, verbose=0)
        errs = [float(np.max(np.abs(o - data[f"arr_{{i}}"]))) for i, o in enumerate(outs)]
        model.compile(optimizer="adam", loss=["mse", "mse", "mse", None], jit_compile=True)
        loss = model.train_on_batch(data["x"], [np.zeros_like(data[f"arr_{{i}}"]) for i in range(3)])
        print(json.dumps({{"errs": errs, "loss": float(np.ravel(loss)[0])}}))
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert max(report["errs"]) < 1e-4, report
    assert np.isfinite(report["loss"])
