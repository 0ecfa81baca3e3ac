"""Ceilings: this machine's matrix-multiply rate through TensorFlow, and each model's FLOPs.

1. The ceiling. Large square matmuls ``(n, n) @ (n, n)`` (``2 n^3`` FLOPs), n = 2048 and
   4096, in a ``tf.function``, float32 and bfloat16, after warm-up calls; each is timed
   repeatedly and the ceiling of a dtype is the *fastest* call over both sizes, in GFLOP/s: a
   ceiling is what the hardware reaches, and the median of a few calls sat 10-30 % below it
   (the table shows median and spread per size). This CPU has AVX-512 BF16, so oneDNN runs
   bfloat16 matmuls at about twice the float32 rate; these two numbers are what the other
   scripts divide by ("fraction of the ceiling of the dtype it runs in"). A dense 3x3
   convolution through oneDNN can still beat the bfloat16 matmul by 10-20 %, so a fraction a
   little above 1 means "at the ceiling", not a counting error.
2. FLOPs per image, counted from the layers (`count_flops`): a convolution
   ``2 k_h k_w c_in c_out H_out W_out``; a depthwise convolution ``2 k_h k_w c_in m H_out W_out``;
   a separable one that plus its pointwise ``2 c_in m c_out H_out W_out``; a dense layer
   ``2 c_in c_out`` per token; attention its projections (dense, per token) plus the two
   ``(n x n)`` matmuls ``Q K^T`` and ``A V``. One multiply-add is two FLOPs. Biases, batch
   normalisation, activations, pooling and softmax are element-wise and not counted (under
   1 % here). Forward plus backward is taken as 3x forward (the backward pass computes the
   gradients of both the inputs and the weights, each about one forward's worth of
   multiply-adds; the first layer's input gradient is not needed, so 3x slightly overstates).
3. The cross-check: TensorFlow's profiler (``tf.compat.v1.profiler`` float operations) on the
   frozen graph of the model's concrete function for one image. It counts element-wise ops
   too, so it reads slightly above the layer count.

Models: the PCam seed (``build_seed_pcam_model``, 96 px) and each backbone classifier
(``build_classifier(backbone, weights=None)``) at the backbone's own input size (InceptionV3
and Xception 299, MobileNet 224, the seed CNN 96).

    python bench/ceilings.py [--quick] [--repeats 5] [--out book/results/bench_ceilings.json]
"""

from __future__ import annotations

import time

try:
    from bench import _common as common
except ImportError:  # run as `python bench/ceilings.py`
    import _common as common

MATMUL_SIZES = (2048, 4096)
ATTENTION_CLASSES = ("SelfAttention", "ThresholdedAttention", "DifferentialAttention")
BACKWARD_FACTOR = 3  # forward + backward = 3 x forward (see the module docstring)


def matmul_ceiling(dtype: str, n: int = 2048, repeats: int = 5) -> dict:
    """GFLOP/s of ``(n, n) @ (n, n)`` in ``dtype`` through a ``tf.function``: median, min, max
    by the wall clock (``gflops``) and by CPU time times the core count
    (``gflops_cpu_time_estimate``, the undisturbed-machine estimate; see ``_common.timed``)."""
    import tensorflow as tf

    a = tf.random.stateless_uniform((n, n), seed=(1, 2), dtype=tf.float32)
    b = tf.random.stateless_uniform((n, n), seed=(3, 4), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)

    @tf.function
    def matmul(x, y):
        return tf.reduce_sum(tf.cast(tf.matmul(x, y)[:1, :1], tf.float32))  # force the result

    times = common.timed(lambda: matmul(a, b).numpy(), repeats, warmup=2)
    both = common.rates_both(times, 2 * n**3 / 1e9)
    return {"dtype": dtype, "n": n, "flops_per_call": 2 * n**3, "gflops": both["per_second"],
            "gflops_cpu_time_estimate": both["cpu_time_estimate"]}


def load_ceilings(path=None, quick: bool = False) -> dict:
    """The ceilings other scripts divide by: ``{"gflops": {dtype: wall-clock GFLOP/s},
    "gflops_cpu_time": {dtype: CPU-time estimate}, "source": ...}`` from a
    ``bench_ceilings.json`` (default ``book/results/``), else measured now (n = 512 with
    ``quick``)."""
    import json
    from pathlib import Path

    path = Path(path) if path is not None else common.RESULTS / "bench_ceilings.json"
    if path.is_file():
        record = json.loads(path.read_text())
        if "ceiling_gflops_cpu_time" in record:
            return {"gflops": record["ceiling_gflops"], "gflops_cpu_time": record["ceiling_gflops_cpu_time"],
                    "source": str(path)}
    sizes = (512,) if quick else MATMUL_SIZES
    measured = {d: [matmul_ceiling(d, n, 3) for n in sizes] for d in ("float32", "bfloat16")}
    return {**peak_ceilings(measured), "source": f"measured here (n={sizes})"}


def peak_ceilings(measured: dict) -> dict:
    """``{"gflops": {dtype: fastest wall-clock GFLOP/s}, "gflops_cpu_time": {dtype: ...}}`` over
    the `matmul_ceiling` records ``measured[dtype]`` (one per size)."""
    return {"gflops": {d: max(m["gflops"]["max"] for m in ms) for d, ms in measured.items()},
            "gflops_cpu_time": {d: max(m["gflops_cpu_time_estimate"]["max"] for m in ms)
                                for d, ms in measured.items()}}


def _tokens(shape) -> int:
    """Positions a per-position layer is applied at: the product of the middle dimensions."""
    out = 1
    for d in shape[1:-1]:
        out *= int(d)
    return out


def _attention_flops(layer) -> int:
    n, _ = int(layer.input.shape[-2]), int(layer.input.shape[-1])
    if len(layer.input.shape) == 4:  # a map given directly: tokens are its positions
        n = int(layer.input.shape[1]) * int(layer.input.shape[2])
    flops = 0
    for name in ("query", "key", "value", "output_dense", "q_proj", "k_proj", "v_proj", "out_proj"):
        sub = getattr(layer, name, None)
        if sub is not None:
            c_in, c_out = sub.kernel.shape
            flops += 2 * n * int(c_in) * int(c_out)
    if type(layer).__name__ == "DifferentialAttention":
        h, d = layer.num_heads, layer._d
        flops += 2 * (2 * h) * n * n * d  # Q K^T over 2h heads of width d
        flops += 2 * h * n * n * (2 * d)  # A V over h heads of width 2d
    else:
        k = layer.key_dim
        flops += 2 * 2 * n * n * k  # Q K^T and A V
    return flops


def count_flops(model) -> dict:
    """Forward FLOPs per image of a flat functional Keras model, counted from its layers.

    Returns:
        ``{"forward": int, "by_kind": {"conv", "depthwise", "pointwise", "dense",
        "attention"}: int, "uncounted": [names of layers with weights not counted]}``.
    """
    kinds = dict.fromkeys(("conv", "depthwise", "pointwise", "dense", "attention"), 0)
    uncounted = []
    for layer in model.layers:
        cls = type(layer).__name__
        if cls in ("Functional", "Model", "Sequential"):
            raise ValueError(f"count_flops needs a flat model; {layer.name!r} is a nested model. "
                             f"Received: model.name={model.name!r}")
        if cls in ATTENTION_CLASSES:
            kinds["attention"] += _attention_flops(layer)
            continue
        if not layer.weights:
            continue
        out = layer.output.shape
        if cls == "DepthwiseConv2D":
            kh, kw, cin, mult = layer.kernel.shape
            kinds["depthwise"] += 2 * kh * kw * cin * mult * out[1] * out[2]
        elif cls == "SeparableConv2D":
            kh, kw, cin, mult = layer.depthwise_kernel.shape
            # depthwise at the output's resolution (strides apply there), then 1x1 pointwise
            kinds["depthwise"] += 2 * kh * kw * cin * mult * out[1] * out[2]
            _, _, cmid, cout = layer.pointwise_kernel.shape
            kinds["pointwise"] += 2 * cmid * cout * out[1] * out[2]
        elif cls == "Conv2D":
            kh, kw, cin, cout = layer.kernel.shape  # cin is per group for grouped convolutions
            flops = 2 * kh * kw * cin * cout * out[1] * out[2]
            kinds["pointwise" if (kh, kw) == (1, 1) else "conv"] += flops
        elif cls == "Dense":
            cin, cout = layer.kernel.shape
            kinds["dense"] += 2 * cin * cout * _tokens(out)
        elif cls not in ("BatchNormalization", "LayerNormalization", "Normalization"):
            uncounted.append(layer.name)
    kinds = {k: int(v) for k, v in kinds.items()}
    return {"forward": sum(kinds.values()), "by_kind": kinds, "uncounted": uncounted}


def profiler_flops(model, input_shape) -> int | None:
    """TensorFlow's profiler's float operations for one image of ``input_shape`` ``(h, w, 3)``,
    on the frozen graph of the model's inference function; ``None`` where the profiler fails."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    try:
        function = tf.function(tf.autograph.experimental.do_not_convert(lambda x: model(x, training=False)))
        concrete = function.get_concrete_function(tf.TensorSpec((1, *input_shape), tf.float32))
        frozen = convert_variables_to_constants_v2(concrete)
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        return int(tf.compat.v1.profiler.profile(graph=frozen.graph, options=options).total_float_ops)
    except Exception as error:  # the profiler is a v1 tool; report, do not fail the bench
        print(f"profiler failed on {model.name}: {type(error).__name__}: {error}")
        return None


def model_specs(quick: bool) -> list[tuple[str, tuple]]:
    """``(name, input_shape)`` of the models measured: the seed and each backbone classifier
    at its own input size."""
    from histolib.models import get_backbone, list_backbones

    names = ["seed-pcam"] + list_backbones()
    if quick:
        names = ["seed-pcam", "mobilenet"]
    out = []
    for name in names:
        size = 96 if name == "seed-pcam" else get_backbone(name).default_size
        out.append((name, (size, size, 3)))
    return out


def build(name: str, input_shape):
    """The model ``name`` (``"seed-pcam"`` or a backbone) with random weights."""
    from histolib.models import build_classifier, build_seed_pcam_model

    if name == "seed-pcam":
        return build_seed_pcam_model(input_shape)
    return build_classifier(name, weights=None, input_shape=input_shape)


def model_flops(name: str, input_shape, *, profile: bool = True) -> dict:
    import keras

    model = build(name, input_shape)
    counted = count_flops(model)
    record = {"model": name, "input_shape": list(input_shape), "params": int(model.count_params()),
              "forward_flops": counted["forward"],
              "train_flops": BACKWARD_FACTOR * counted["forward"],
              "by_kind": counted["by_kind"], "uncounted_layers": counted["uncounted"]}
    if profile:
        prof = profiler_flops(model, input_shape)
        record["profiler_forward_flops"] = prof
        record["profiler_over_counted"] = None if not prof else round(prof / counted["forward"], 4)
    keras.backend.clear_session()
    return record


def measure(quick: bool = False, repeats: int = 5) -> dict:
    sizes = (512,) if quick else MATMUL_SIZES
    measured = {d: [matmul_ceiling(d, n, repeats) for n in sizes] for d in ("float32", "bfloat16")}
    peak = peak_ceilings(measured)
    models = [model_flops(name, shape) for name, shape in model_specs(quick)]
    table = [common.row(f"matmul {d} (n={c['n']})", c["gflops"], "GFLOP/s",
                        f"CPU-time estimate {c['gflops_cpu_time_estimate']['median']}")
             for d, ms in measured.items() for c in ms]
    table += [common.row(f"ceiling {d} (fastest call)", {"median": g, "min": g, "max": g}, "GFLOP/s",
                         f"CPU-time estimate {peak['gflops_cpu_time'][d]}") for d, g in peak["gflops"].items()]
    for m in models:
        g = m["forward_flops"] / 1e9
        note = ("profiler/count {:.3f}".format(m["profiler_over_counted"])
                if m.get("profiler_over_counted") else "profiler n/a")
        table.append(common.row(f"FLOPs/image fwd {m['model']} @{m['input_shape'][0]}",
                                {"median": g, "min": g, "max": g}, "GFLOP", note + f"; fwd+bwd {3 * g:.3g}"))
    return {
        "benchmark": "ceilings: matmul GFLOP/s by dtype; FLOPs per image by model",
        "ceilings": measured,
        "ceiling_rule": "fastest call over the sizes, per dtype",
        "ceiling_gflops": peak["gflops"],
        "ceiling_gflops_cpu_time": peak["gflops_cpu_time"],
        "flops_convention": "2 FLOPs per multiply-add; conv, depthwise, pointwise, dense and attention "
                            "matmuls counted; element-wise ops not; train = 3 x forward",
        "models": models,
        "rows": table,
    }


def main(argv=None) -> int:
    args = common.parser(__doc__, "ceilings").parse_args(argv)
    load_start = common.load_average()
    start = time.perf_counter()
    record = measure(args.quick, args.repeats or (2 if args.quick else 5))
    record["seconds"] = round(time.perf_counter() - start, 1)
    return common.finish(record, args, load_start)


if __name__ == "__main__":
    raise SystemExit(main())
