"""Training speed of the PCam seed model on this CPU, path by path, against the dtype's ceiling.

Each variant trains the seed model (``build_seed_pcam_model``, batch 64) with ``model.fit``
for ``repeats + 1`` epochs of ``steps`` batches; the first epoch (tracing, oneDNN's kernel
choice) is dropped and the rest give images/s (median, min, max). Variants:

- ``plain float32 twin``: what the seed did, plain Keras ``model.fit(x, y)`` on in-memory
  float32 arrays, float32 policy, ``compile("adam", "binary_crossentropy", ["accuracy"])``;
- ``plain mixed_bfloat16``: the same in ``mixed_bfloat16``;
- ``default``: the project's path as ``histolib train`` takes it on this CPU: the
  ``tf.data`` pipeline of ``histolib.data.load`` (shuffled, prefetched), the dtype policy
  ``histolib.strategy.choose_precision("auto")`` picks (``mixed_bfloat16`` on a CPU with AVX-512
  BF16), ``train.fit``'s compile (Adam, accuracy and AUC), ``steps_per_execution=1`` and
  Keras's ``jit_compile="auto"`` (XLA off on a CPU-only machine);
- ``default + jit_compile``, ``default + steps_per_execution=8``, ``float32 pipeline``
  (and with ``--jit-float32`` its ``+ jit_compile``): one setting changed at a time;
- ``real JPEG pipeline``: the default path on ``folder:../shared/data/pcam-jpeg`` with the
  ``pcam-seed`` augmentation (decode, augment and train share the 2 cores), against
  ``cached tensors``: the same number of already decoded and augmented batches held in memory.
  Their ratio says whether the input pipeline is the bottleneck (target: within 5 %).
- ``pipeline alone``: the real pipeline iterated without training, all threads and one thread
  (``tf.data`` private thread pool of 1): the rate it can feed, and the rate per core.
- augmentation, host or device: ``default + pcam augmentation in tf.data`` (the host augments)
  against ``default + pcam augmentation in the model`` (`histolib.models.with_augmentation`:
  the host only decodes, the training step augments); and the host's rate each way (``pipeline
  alone`` with ``pcam`` augmentation, and decoding only), on the real JPEG folder when present,
  else on the synthetic source.
- Keras on JAX (``KERAS_BACKEND=jax``, the route on Colab's TPU runtimes), in a child process
  (the backend is fixed at import): ``default on JAX`` (same pipeline, policy and compile;
  JAX always compiles the step with XLA), ``float32 pipeline on JAX`` and ``default + pcam
  augmentation in the model on JAX``; ``targets["jax_over_tensorflow"]`` divides the first by
  ``default``, ``jax_over_tensorflow_float32`` the second by ``float32 pipeline``.

"Fraction of ceiling" is images/s x training FLOPs per image (3 x forward, counted by
``bench/ceilings.py``) over the matmul ceiling of the dtype the matmuls run in (bfloat16 under
``mixed_bfloat16``). Every rate is given by the wall clock and, for a shared machine, as a
CPU-time estimate (images per CPU-second of this process times the core count; the ceiling
likewise), which other processes' load disturbs much less.

    python bench/train_step.py [--quick] [--repeats 3] [--steps 8] [--data DIR] [--jit-float32] [--no-jax]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

try:
    from bench import _common as common
    from bench import ceilings as ceilings_mod
except ImportError:  # run as `python bench/train_step.py`
    import _common as common
    import ceilings as ceilings_mod

BATCH = 64


def _epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = {"wall": [], "cpu": []}

        def on_epoch_begin(self, epoch, logs=None):
            self._start, self._start_cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.times["wall"].append(time.perf_counter() - self._start)
            self.times["cpu"].append(time.process_time() - self._start_cpu)

    return EpochTimer()


def _compile_plain(model, **kwargs):
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"], **kwargs)


def _compile_project(model, **kwargs):
    """As ``histolib.train.fit`` compiles a sigmoid model."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy",
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
                  **kwargs)


def _fit_timed(model, data, *, steps, repeats, batch) -> dict:
    timer = _epoch_timer()
    if isinstance(data, tuple):  # in-memory arrays: plain Keras
        model.fit(*data, batch_size=batch, epochs=repeats + 1, verbose=0, callbacks=[timer])
    else:
        model.fit(data, steps_per_epoch=steps, epochs=repeats + 1, verbose=0, callbacks=[timer], shuffle=False)
    return {k: v[1:] for k, v in timer.times.items()}  # the first epoch traces: dropped


def _arrays(steps, batch, seed=0):
    import numpy as np

    from histolib.data import synthetic

    images, labels, _ = synthetic.pcam_patches(steps * batch, seed)
    return images.astype(np.float32) / 255.0, labels.astype(np.int32)


def _cached(dataset, batches):
    """``batches`` batches of ``dataset`` decoded once, then repeated from memory."""
    import tensorflow as tf

    xs, ys = [], []
    for x, y in dataset.take(batches):
        xs.append(x)
        ys.append(y)
    return tf.data.Dataset.from_tensor_slices((tf.stack(xs), tf.stack(ys))).repeat().prefetch(2)


def run_variant(name, *, policy, source, compile_kwargs=None, plain=False, steps, repeats, batch,
                real_dir=None, seed=0, augment_in=None) -> dict:
    """Train the seed model one way; returns images/s and the settings. ``augment_in``:
    ``None``, ``"tf.data"`` or ``"model"`` (the ``pcam`` set, on the host or in the step)."""
    import keras

    from histolib import data
    from histolib.models import build_seed_pcam_model, with_augmentation

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(seed)
        model = build_seed_pcam_model()
        if augment_in == "model":
            model = with_augmentation(model, "pcam", seed=seed)
        compile_kwargs = dict(compile_kwargs or {})
        (_compile_plain if plain else _compile_project)(model, **compile_kwargs)
        if source == "arrays":
            feed = _arrays(steps, batch, seed)
        elif source == "synthetic":
            feed = data.load(f"synthetic-pcam:{max(steps * batch, 256)}", "train", batch_size=batch,
                             shuffle=True, seed=seed, augment="pcam" if augment_in == "tf.data" else None).repeat()
        elif source in ("real", "real-cached"):
            feed = data.load(f"folder:{real_dir}", "train", batch_size=batch, shuffle=True,
                             augment="pcam-seed", seed=seed).repeat()
            if source == "real-cached":
                feed = _cached(feed, steps)
        else:
            raise ValueError(f"unknown source {source!r}")
        times = _fit_timed(model, feed, steps=steps, repeats=repeats, batch=batch)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    backend = keras.backend.backend()
    return {"variant": name, "backend": backend, "policy": policy, "source": source, "plain_keras": plain,
            "augment_in": augment_in,
            "jit_compile": compile_kwargs.get("jit_compile", "always (XLA)" if backend == "jax" else "auto (off on CPU)"),
            "steps_per_execution": compile_kwargs.get("steps_per_execution", 1),
            "batch_size": batch, "steps_per_epoch": steps,
            **_images(times, steps * batch)}


def _images(times, items) -> dict:
    both = common.rates_both(times, items)
    return {"images_per_second": both["per_second"], "images_per_cpu_second": both["per_cpu_second"],
            "images_per_second_cpu_time_estimate": both["cpu_time_estimate"]}


def pipeline_alone(real_dir, *, batches, repeats, batch, threads=None, augment="pcam-seed") -> dict:
    """Images/s of the training pipeline iterated without training: the real JPEG folder
    (decode, no resize) or, with ``real_dir=None``, the synthetic source, with ``augment`` (a
    set, or ``None``: decoding only, as when the model augments); ``threads=1`` confines
    ``tf.data`` to one thread."""
    import tensorflow as tf

    from histolib import data

    spec = f"folder:{real_dir}" if real_dir is not None else f"synthetic-pcam:{max(batches * batch, 256)}"
    ds = data.load(spec, "train", batch_size=batch, shuffle=True, augment=augment).repeat()
    if threads is not None:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
        ds = ds.with_options(options)
    iterator = iter(ds)

    def run():
        for _ in range(batches):
            next(iterator)

    return {"threads": threads or "all", "batch_size": batch, "source": "real" if real_dir else "synthetic",
            "augment": augment or "none (in the model)",
            **_images(common.timed(run, repeats, warmup=1), batches * batch)}


def jax_variants(plan, common_kw) -> list[dict]:
    """Run ``plan`` (``[(name, run_variant kwargs)]``) in a child process under KERAS_BACKEND=jax;
    its variants, or ``[]`` (with the reason printed) where JAX is missing or fails."""
    child = {"plan": plan, **{k: (str(v) if isinstance(v, Path) else v) for k, v in common_kw.items()}}
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--jax-child", json.dumps(child)],
                          capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        print(f"  JAX variants skipped: {done.stderr.strip().splitlines()[-1:]}", flush=True)
        return []
    return json.loads(done.stdout.strip().splitlines()[-1])


def _jax_child(spec: str) -> int:
    """The child of `jax_variants`: run the plan, print the variants as one JSON line."""
    import jax
    import keras

    assert keras.backend.backend() == "jax", keras.backend.backend()
    child = json.loads(spec)
    plan = child.pop("plan")
    variants = [run_variant(name, **kwargs, **child) | {"devices": [str(d) for d in jax.devices()]}
                for name, kwargs in plan]
    print(json.dumps(variants))
    return 0




def _plans(quick: bool, default_policy: str, real, jit_float32: bool):
    """``(plan, jax_plan)``: the variants to run here and under JAX, ``[(name, kwargs)]``."""
    plan = [("plain float32 twin", dict(policy="float32", source="arrays", plain=True)),
            ("default", dict(policy=default_policy, source="synthetic"))]
    if not quick:
        plan += [("plain mixed_bfloat16", dict(policy="mixed_bfloat16", source="arrays", plain=True)),
                 ("default + steps_per_execution=8", dict(policy=default_policy, source="synthetic",
                                                          compile_kwargs={"steps_per_execution": 8})),
                 ("default + jit_compile", dict(policy=default_policy, source="synthetic",
                                                compile_kwargs={"jit_compile": True})),
                 ("float32 pipeline", dict(policy="float32", source="synthetic"))]
    if jit_float32:
        plan.append(("float32 pipeline + jit_compile", dict(policy="float32", source="synthetic",
                                                           compile_kwargs={"jit_compile": True})))
    if real is not None:
        plan += [("real JPEG pipeline", dict(policy=default_policy, source="real")),
                 ("cached tensors", dict(policy=default_policy, source="real-cached"))]
    plan += [(f"default + pcam augmentation in {where}", dict(policy=default_policy, source="synthetic",
                                                              augment_in="tf.data" if where == "tf.data" else "model"))
             for where in ("tf.data", "the model")]
    jax_plan = [("default on JAX", dict(policy=default_policy, source="synthetic")),
                ("float32 pipeline on JAX", dict(policy="float32", source="synthetic")),
                ("default + pcam augmentation in the model on JAX",
                 dict(policy=default_policy, source="synthetic", augment_in="model"))]
    return plan, (jax_plan[:1] if quick else jax_plan)


def _targets(variants: list, pipeline: list) -> dict:
    """The ratios the issues ask for, from the variants (by name) and the pipeline rates."""
    by_name = {v["variant"]: v for v in variants}

    def ratio(a, b, key="images_per_second"):
        return round(by_name[a][key]["median"] / by_name[b][key]["median"], 3)

    default = by_name["default"]
    settings = [v for v in variants if v["source"] in ("arrays", "synthetic")  # not the data comparison
                and v["backend"] == "tensorflow" and not v["augment_in"]]
    targets = {
        "default_over_plain_float32_twin": ratio("default", "plain float32 twin"),
        "default_over_plain_float32_twin_cpu_time": ratio("default", "plain float32 twin",
                                                          "images_per_second_cpu_time_estimate"),
        "default_over_twin_target": 1.3,
        "default_fraction_of_ceiling": default["fraction_of_ceiling"],
        "default_fraction_of_ceiling_cpu_time": default["fraction_of_ceiling_cpu_time"],
        "fraction_of_ceiling_target": 0.6,
        "fastest_variant": max(settings, key=lambda v: v["images_per_second"]["median"])["variant"],
        "fastest_variant_cpu_time": max(
            settings, key=lambda v: v["images_per_second_cpu_time_estimate"]["median"])["variant"],
        "augment_in_model_over_tf_data": ratio("default + pcam augmentation in the model",
                                               "default + pcam augmentation in tf.data"),
    }
    if "default on JAX" in by_name:
        targets["jax_over_tensorflow"] = ratio("default on JAX", "default")
        targets["jax_over_tensorflow_cpu_time"] = ratio("default on JAX", "default",
                                                        "images_per_second_cpu_time_estimate")
    if "float32 pipeline on JAX" in by_name and "float32 pipeline" in by_name:
        targets["jax_over_tensorflow_float32"] = ratio("float32 pipeline on JAX", "float32 pipeline")
    host = {p["augment"]: p["images_per_cpu_second"]["median"] for p in pipeline[-2:]}
    targets["host_decode_only_over_augmented_per_cpu_second"] = round(
        host["none (in the model)"] / host["pcam"], 3)
    if "real JPEG pipeline" in by_name:
        targets["real_pipeline_over_cached"] = ratio("real JPEG pipeline", "cached tensors")
        targets["real_pipeline_over_cached_cpu_time"] = ratio("real JPEG pipeline", "cached tensors",
                                                              "images_per_second_cpu_time_estimate")
        targets["real_pipeline_target"] = 0.95
    return targets


def _rows(variants: list, pipeline: list) -> list:
    table = [common.row(f"train {v['variant']}", v["images_per_second"], "images/s",
                        f"{v['backend']}, {v['policy']}, {v['fraction_of_ceiling']:.0%} of {v['ceiling_dtype']} "
                        f"ceiling; CPU-time est. {v['images_per_second_cpu_time_estimate']['median']:g}/s, "
                        f"{v['fraction_of_ceiling_cpu_time']:.0%}")
             for v in variants]
    return table + [common.row(f"pipeline alone, {p['threads']} thread(s)", p["images_per_second"], "images/s",
                               f"{p['source']}, augmentation {p['augment']}; "
                               f"{p['images_per_cpu_second']['median']:g} per CPU-s")
                    for p in pipeline]


def measure(quick: bool = False, repeats: int = 3, steps: int = 8, real_dir: Path | None = None,
            ceilings_path: Path | None = None, jit_float32: bool = False, with_jax: bool = True) -> dict:
    from histolib.strategy import choose_precision
    from histolib.models import build_seed_pcam_model

    batch = 16 if quick else BATCH
    steps = 2 if quick else steps
    default_policy = choose_precision("auto")
    real = real_dir if real_dir is not None and Path(real_dir, "train").is_dir() else None
    common_kw = {"steps": steps, "repeats": repeats, "batch": batch, "real_dir": real}
    plan, jax_plan = _plans(quick, default_policy, real, jit_float32)

    train_gflop = 3 * ceilings_mod.count_flops(build_seed_pcam_model())["forward"] / 1e9
    ceilings = ceilings_mod.load_ceilings(ceilings_path, quick)
    variants = [run_variant(name, **kwargs, **common_kw) for name, kwargs in plan]
    if with_jax:
        variants += jax_variants(jax_plan, common_kw)
    for v in variants:
        dtype = "bfloat16" if "bfloat16" in v["policy"] else "float32"
        v["ceiling_dtype"] = dtype
        v["achieved_gflops"] = round(v["images_per_second"]["median"] * train_gflop, 1)
        v["fraction_of_ceiling"] = round(v["achieved_gflops"] / ceilings["gflops"][dtype], 3)
        v["fraction_of_ceiling_cpu_time"] = round(
            v["images_per_second_cpu_time_estimate"]["median"] * train_gflop / ceilings["gflops_cpu_time"][dtype], 3)
        print(f"  {v['variant']}: {v['images_per_second']['median']} images/s", flush=True)

    pipeline = []
    batches = 3 if quick else 30  # well past the prefetch buffer filled before timing
    if real is not None:
        pipeline = [pipeline_alone(real, batches=batches, repeats=repeats, batch=batch),
                    pipeline_alone(real, batches=batches, repeats=repeats, batch=batch, threads=1)]
    pipeline += [pipeline_alone(real, batches=batches, repeats=repeats, batch=batch, augment=augment)
                 for augment in ("pcam", None)]  # the host's rate with augmentation there, and without
    return {
        "benchmark": "training step: seed PCam model images/s by path, fraction of the dtype's ceiling",
        "model": "seed-pcam",
        "train_flops_per_image": round(train_gflop * 1e9),
        "ceilings_gflops": ceilings["gflops"],
        "ceilings_gflops_cpu_time": ceilings["gflops_cpu_time"],
        "ceilings_source": ceilings["source"],
        "default_policy": default_policy,
        "batch_size": batch,
        "real_data": str(real) if real is not None else None,
        "variants": variants,
        "pipeline_alone": pipeline,
        "targets": _targets(variants, pipeline),
        "rows": _rows(variants, pipeline),
    }


def main(argv=None) -> int:
    p = common.parser(__doc__, "train_step")
    p.add_argument("--steps", type=int, default=8, help="batches per timed epoch")
    p.add_argument("--data", type=Path, default=common.SHARED_DATA / "pcam-jpeg",
                   help="the real PCam JPEG folder (DIR/train/{0,1}); skipped when absent")
    p.add_argument("--ceilings", type=Path, default=None,
                   help="bench_ceilings.json to divide by (default: book/results/, else measured here)")
    p.add_argument("--jit-float32", action="store_true",
                   help="also time float32 with jit_compile (XLA compiles slowly on this CPU)")
    p.add_argument("--no-jax", action="store_true", help="skip the Keras-on-JAX variants (a child process)")
    p.add_argument("--jax-child", metavar="JSON", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.jax_child:
        return _jax_child(args.jax_child)
    if args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    load_start = common.load_average()
    start = time.perf_counter()
    record = measure(args.quick, args.repeats or (1 if args.quick else 3),
                     args.steps, args.data, args.ceilings, args.jit_float32, not args.no_jax)
    record["seconds"] = round(time.perf_counter() - start, 1)
    return common.finish(record, args, load_start)


if __name__ == "__main__":
    raise SystemExit(main())
