"""Inference speed: images/s of each model at its input size, float32 and bfloat16, against the
ceiling; and why depthwise-separable convolutions sit far below it.

Models: the PCam seed (96 px) and each backbone classifier (``build_classifier(backbone,
weights=None)``) at its own input size (seed CNN 96, MobileNet 224, Xception and InceptionV3
299), built under the ``float32`` and the ``mixed_bfloat16`` policy. Each is called as a
``tf.function`` on one batch (batch sizes that keep both cores busy), one untimed warm-up call,
then the median of repeated calls. "Fraction of ceiling" is images/s x forward FLOPs per image
(counted by ``bench/ceilings.py``) over the matmul ceiling of the dtype; on a shared machine the
CPU-time estimates (per CPU-second of this process times the core count, on both sides) are
disturbed less by other processes than the wall-clock rates.

Depthwise-separable convolutions. A 3x3 depthwise convolution does 9 multiply-adds per
output value, against ``9 c_in`` for a full convolution: it reads and writes as many bytes as
a full convolution of the same map but does ``c_in`` times less arithmetic, so its arithmetic
intensity (FLOPs per byte moved) is about 2 and it runs at the speed of memory, not of the
multiply-add units. MobileNet spends about 3 % of its FLOPs in depthwise layers but a large
share of its time; its 1x1 pointwise layers are plain matmuls and run near the ceiling.
`layer_microbench` measures the three kinds on one MobileNet-sized map (56 x 56 x 128) so the
record shows it in numbers. What helps, measured: bfloat16 makes the depthwise layer itself
1.5-2x faster (half the bytes per value), yet the whole of MobileNet runs slower under
``mixed_bfloat16`` than in float32, because Keras's ``BatchNormalization`` upcasts its bfloat16
input to float32 and casts the result back: extra passes over every activation map of a network
whose layers are memory-bound already. Folding each batch norm into the convolution before it
(`histolib.models.fold_batch_norm`, an inference copy computing the same function) removes those
passes; the "BN folded" rows measure it for the three backbones in both dtypes. A larger batch
changes little (the batch-128 row); channels-last (NHWC, TensorFlow's CPU default) is what
oneDNN's depthwise kernels want; oneDNN itself must stay on (``TF_ENABLE_ONEDNN_OPTS=0`` halves
the speed), and ``jit_compile`` (XLA) is about 10x slower here, bypassing oneDNN.

    python bench/inference.py [--quick] [--repeats 3] [--ceilings JSON] [--models NAME ...]
"""

from __future__ import annotations

import time
from pathlib import Path

try:
    from bench import _common as common
    from bench import ceilings as ceilings_mod
except ImportError:  # run as `python bench/inference.py`
    import _common as common
    import ceilings as ceilings_mod

#: Models measured with batch normalisation folded too (`histolib.models.fold_batch_norm`).
FOLD_MODELS = ("mobilenet", "xception", "inception_v3")
#: Batch sizes that keep 2 cores busy without minutes per call.
BATCH = {96: 256, 224: 32, 299: 16}
POLICIES = ("float32", "mixed_bfloat16")


def _images_per_second(model, batch: int, input_shape, repeats: int) -> dict:
    import tensorflow as tf

    x = tf.random.stateless_uniform((batch, *input_shape), seed=(0, 1))
    call = tf.function(tf.autograph.experimental.do_not_convert(lambda t: model(t, training=False)))
    both = common.rates_both(common.timed(lambda: call(x).numpy(), repeats, warmup=1), batch)
    return {"images_per_second": both["per_second"],
            "images_per_second_cpu_time_estimate": both["cpu_time_estimate"]}


def model_speed(name: str, input_shape, policy: str, batch: int, repeats: int, *, fold: bool = False) -> dict:
    """Images/s of model ``name`` built under ``policy``; with ``fold``, of its
    `histolib.models.fold_batch_norm` copy (same FLOPs counted: the folded layers are element-wise)."""
    import keras

    from histolib.models import fold_batch_norm

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = ceilings_mod.build(name, input_shape)
        flops = ceilings_mod.count_flops(model)
        speed = _images_per_second(fold_batch_norm(model) if fold else model, batch, input_shape, repeats)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return {"model": name, "input_shape": list(input_shape), "policy": policy, "batch_size": batch,
            "batch_norm_folded": fold, "forward_flops": flops["forward"], "by_kind": flops["by_kind"], **speed}


def _with_fractions(r: dict, ceilings: dict) -> dict:
    dtype = "bfloat16" if "bfloat16" in r["policy"] else "float32"
    r["ceiling_dtype"] = dtype
    r["achieved_gflops"] = round(r["images_per_second"]["median"] * r["forward_flops"] / 1e9, 1)
    r["fraction_of_ceiling"] = round(r["achieved_gflops"] / ceilings["gflops"][dtype], 3)
    r["fraction_of_ceiling_cpu_time"] = round(r["images_per_second_cpu_time_estimate"]["median"]
                                              * r["forward_flops"] / 1e9 / ceilings["gflops_cpu_time"][dtype], 3)
    return r


def layer_microbench(dtype: str, batch: int, repeats: int, hw: int = 56, channels: int = 128) -> list[dict]:
    """GFLOP/s and arithmetic intensity of a 3x3 depthwise, a 1x1 pointwise and a 3x3 full
    convolution on one ``(batch, hw, hw, channels)`` map in ``dtype``."""
    import keras
    import tensorflow as tf

    size = tf.constant(1, dtype).dtype.size
    x = tf.cast(tf.random.stateless_uniform((batch, hw, hw, channels), seed=(2, 3)), dtype)
    layers = {
        "depthwise 3x3": (keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, dtype=dtype),
                          9 * channels, 9 * channels),
        "pointwise 1x1": (keras.layers.Conv2D(channels, 1, use_bias=False, dtype=dtype),
                          channels * channels, channels * channels),
        "full conv 3x3": (keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, dtype=dtype),
                          9 * channels * channels, 9 * channels * channels),
    }
    out = []
    for kind, (layer, macs_per_position, weights) in layers.items():
        call = tf.function(tf.autograph.experimental.do_not_convert(lambda t, layer=layer: layer(t)))
        flops = 2 * macs_per_position * batch * hw * hw
        both = common.rates_both(common.timed(lambda: call(x).numpy(), repeats, warmup=1), flops / 1e9)
        moved = size * (2 * batch * hw * hw * channels + weights)  # read input, write output, weights
        out.append({"layer": kind, "dtype": dtype, "shape": [batch, hw, hw, channels], "flops": flops,
                    "bytes_moved_min": moved, "arithmetic_intensity": round(flops / moved, 2),
                    "gflops": both["per_second"], "gflops_cpu_time_estimate": both["cpu_time_estimate"]})
    return out




def measure(quick: bool = False, repeats: int = 3, ceilings_path: Path | None = None, models=None) -> dict:
    specs = ceilings_mod.model_specs(quick)
    if models:
        specs = [(name, shape) for name, shape in ceilings_mod.model_specs(False) if name in models]
    ceilings = ceilings_mod.load_ceilings(ceilings_path, quick)
    results = []
    for name, shape in specs:
        batch = 8 if quick else BATCH[shape[0]]
        folds = (False, True) if name in FOLD_MODELS else (False,)
        for policy in POLICIES:
            for fold in folds:
                r = _with_fractions(model_speed(name, shape, policy, batch, repeats, fold=fold), ceilings)
                results.append(r)
                print(f"  {name} {policy}{' BN folded' if fold else ''} batch {batch}: "
                      f"{r['images_per_second']['median']} images/s", flush=True)

    # what else might help a depthwise-separable network: a larger batch, on MobileNet in bfloat16
    batch_sweep = []
    if not quick and any(name == "mobilenet" for name, _ in specs):
        for batch in (128,):  # batch 32 is in the main results
            batch_sweep.append(_with_fractions(model_speed("mobilenet", (224, 224, 3), "mixed_bfloat16", batch,
                                                           repeats), ceilings))
    micro = []
    for dtype in ("float32", "bfloat16"):
        micro += layer_microbench(dtype, 2 if quick else 16, repeats, hw=28 if quick else 56)
    for m in micro:
        m["fraction_of_ceiling"] = round(m["gflops"]["median"] / ceilings["gflops"][m["dtype"]], 3)
        m["fraction_of_ceiling_cpu_time"] = round(m["gflops_cpu_time_estimate"]["median"]
                                                  / ceilings["gflops_cpu_time"][m["dtype"]], 3)

    table = [common.row(f"infer {r['model']} @{r['input_shape'][0]} {r['policy']}"
                        f"{' BN folded' if r['batch_norm_folded'] else ''} b{r['batch_size']}",
                        r["images_per_second"], "images/s", f"{r['fraction_of_ceiling']:.0%} of {r['ceiling_dtype']} ceiling; "
                        f"CPU-time est. {r['fraction_of_ceiling_cpu_time']:.0%}")
             for r in results]
    table += [common.row(f"infer mobilenet @224 bf16 batch {r['batch_size']}", r["images_per_second"], "images/s",
                         f"{r['fraction_of_ceiling']:.0%} of bfloat16 ceiling; CPU-time est. "
                         f"{r['fraction_of_ceiling_cpu_time']:.0%}") for r in batch_sweep]
    table += [common.row(f"layer {m['layer']} {m['dtype']} {m['shape'][1]}x{m['shape'][2]}x{m['shape'][3]}",
                         m["gflops"], "GFLOP/s", f"intensity {m['arithmetic_intensity']} FLOP/B, "
                         f"{m['fraction_of_ceiling']:.0%} of ceiling; CPU-time est. "
                         f"{m['fraction_of_ceiling_cpu_time']:.0%}") for m in micro]
    return {
        "benchmark": "inference: images/s by model and dtype, fraction of the ceiling; depthwise layers",
        "ceilings_gflops": ceilings["gflops"],
        "ceilings_gflops_cpu_time": ceilings["gflops_cpu_time"],
        "ceilings_source": ceilings["source"],
        "results": results,
        "mobilenet_batch_sweep": batch_sweep,
        "layer_microbench": micro,
        "depthwise_explanation": (
            "A 3x3 depthwise convolution does 9 multiply-adds per output value (a full 3x3 "
            "convolution 9*c_in) while moving the same input and output bytes, so its arithmetic "
            "intensity is ~2 FLOP/byte against ~30-500 for pointwise and full convolutions: it is "
            "bound by memory bandwidth, not by the multiply-add units the matmul ceiling measures. "
            "bfloat16 halves the bytes (the depthwise layer alone runs 1.5-2x faster in it), but "
            "the whole of MobileNet runs slower in mixed_bfloat16 than in float32: Keras's "
            "BatchNormalization upcasts its bfloat16 input to float32 and casts back, extra passes "
            "over every map on a network whose layers are already memory-bound. Folding each batch "
            "norm into the convolution before it (histolib.models.fold_batch_norm, for inference) "
            "removes those passes; see the BN-folded rows. A larger batch changes little; "
            "channels-last (NHWC) is the layout oneDNN's depthwise kernels use, and oneDNN must "
            "stay on. jit_compile (XLA) is 10x slower here: XLA on the CPU bypasses oneDNN."),
        "rows": table,
    }


def main(argv=None) -> int:
    p = common.parser(__doc__, "inference")
    p.add_argument("--ceilings", type=Path, default=None,
                   help="bench_ceilings.json to divide by (default: book/results/, else measured here)")
    p.add_argument("--models", nargs="+", default=None,
                   help="measure only these (seed-pcam and backbone names; default all)")
    args = p.parse_args(argv)
    load_start = common.load_average()
    start = time.perf_counter()
    record = measure(args.quick, args.repeats or (1 if args.quick else 3), args.ceilings, args.models)
    record["models_measured"] = sorted({r["model"] for r in record["results"]})
    record["seconds"] = round(time.perf_counter() - start, 1)
    return common.finish(record, args, load_start)


if __name__ == "__main__":
    raise SystemExit(main())
