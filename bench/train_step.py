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

"Fraction of ceiling" is images/s x training FLOPs per image (3 x forward, counted by
``bench/ceilings.py``) over the matmul ceiling of the dtype the matmuls run in (bfloat16 under
``mixed_bfloat16``). Every rate is given by the wall clock and, for a shared machine, as a
CPU-time estimate (images per CPU-second of this process times the core count; the ceiling
likewise), which other processes' load disturbs much less.

    python bench/train_step.py [--quick] [--repeats 3] [--steps 8] [--data DIR] [--jit-float32]
"""

from __future__ import annotations

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
                real_dir=None, seed=0) -> dict:
    """Train the seed model one way; returns images/s and the settings."""
    import keras

    from histolib import data
    from histolib.models import build_seed_pcam_model

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(seed)
        model = build_seed_pcam_model()
        compile_kwargs = dict(compile_kwargs or {})
        (_compile_plain if plain else _compile_project)(model, **compile_kwargs)
        if source == "arrays":
            feed = _arrays(steps, batch, seed)
        elif source == "synthetic":
            feed = data.load(f"synthetic-pcam:{max(steps * batch, 256)}", "train", batch_size=batch,
                             shuffle=True, seed=seed).repeat()
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
    return {"variant": name, "policy": policy, "source": source, "plain_keras": plain,
            "jit_compile": compile_kwargs.get("jit_compile", "auto (off on CPU)"),
            "steps_per_execution": compile_kwargs.get("steps_per_execution", 1),
            "batch_size": batch, "steps_per_epoch": steps,
            **_images(times, steps * batch)}


def _images(times, items) -> dict:
    both = common.rates_both(times, items)
    return {"images_per_second": both["per_second"], "images_per_cpu_second": both["per_cpu_second"],
            "images_per_second_cpu_time_estimate": both["cpu_time_estimate"]}


def pipeline_alone(real_dir, *, batches, repeats, batch, threads=None) -> dict:
    """Images/s of the real JPEG pipeline (decode, resize none, ``pcam-seed`` augmentation)
    iterated without training; ``threads=1`` confines ``tf.data`` to one thread."""
    import tensorflow as tf

    from histolib import data

    ds = data.load(f"folder:{real_dir}", "train", batch_size=batch, shuffle=True, augment="pcam-seed").repeat()
    if threads is not None:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
        ds = ds.with_options(options)
    iterator = iter(ds)

    def run():
        for _ in range(batches):
            next(iterator)

    return {"threads": threads or "all", "batch_size": batch,
            **_images(common.timed(run, repeats, warmup=1), batches * batch)}




def measure(quick: bool = False, repeats: int = 3, steps: int = 8, real_dir: Path | None = None,
            ceilings_path: Path | None = None, jit_float32: bool = False) -> dict:
    from histolib.strategy import choose_precision
    from histolib.models import build_seed_pcam_model

    batch = 16 if quick else BATCH
    steps = 2 if quick else steps
    default_policy = choose_precision("auto")
    real = real_dir if real_dir is not None and Path(real_dir, "train").is_dir() else None
    common_kw = {"steps": steps, "repeats": repeats, "batch": batch, "real_dir": real}

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

    train_gflop = 3 * ceilings_mod.count_flops(build_seed_pcam_model())["forward"] / 1e9
    ceilings = ceilings_mod.load_ceilings(ceilings_path, quick)
    variants = []
    for name, kwargs in plan:
        v = run_variant(name, **kwargs, **common_kw)
        dtype = "bfloat16" if "bfloat16" in v["policy"] else "float32"
        v["ceiling_dtype"] = dtype
        v["achieved_gflops"] = round(v["images_per_second"]["median"] * train_gflop, 1)
        v["fraction_of_ceiling"] = round(v["achieved_gflops"] / ceilings["gflops"][dtype], 3)
        v["fraction_of_ceiling_cpu_time"] = round(
            v["images_per_second_cpu_time_estimate"]["median"] * train_gflop / ceilings["gflops_cpu_time"][dtype], 3)
        variants.append(v)
        print(f"  {name}: {v['images_per_second']['median']} images/s", flush=True)
    by_name = {v["variant"]: v for v in variants}

    pipeline = []
    if real is not None:
        batches = 3 if quick else 30  # well past the prefetch buffer filled before timing
        pipeline = [pipeline_alone(real, batches=batches, repeats=repeats, batch=batch),
                    pipeline_alone(real, batches=batches, repeats=repeats, batch=batch, threads=1)]

    def ratio(a, b, key="images_per_second"):
        return round(by_name[a][key]["median"] / by_name[b][key]["median"], 3)

    default = by_name["default"]
    settings = [v for v in variants if v["source"] in ("arrays", "synthetic")]  # not the data comparison
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
    }
    if "real JPEG pipeline" in by_name:
        targets["real_pipeline_over_cached"] = ratio("real JPEG pipeline", "cached tensors")
        targets["real_pipeline_over_cached_cpu_time"] = ratio("real JPEG pipeline", "cached tensors",
                                                              "images_per_second_cpu_time_estimate")
        targets["real_pipeline_target"] = 0.95
    table = [common.row(f"train {v['variant']}", v["images_per_second"], "images/s",
                        f"{v['policy']}, {v['fraction_of_ceiling']:.0%} of {v['ceiling_dtype']} ceiling; "
                        f"CPU-time est. {v['images_per_second_cpu_time_estimate']['median']:g}/s, "
                        f"{v['fraction_of_ceiling_cpu_time']:.0%}")
             for v in variants]
    table += [common.row(f"pipeline alone, {p['threads']} thread(s)", p["images_per_second"], "images/s",
                         f"JPEG + pcam-seed aug; {p['images_per_cpu_second']['median']:g} per CPU-s")
              for p in pipeline]
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
        "targets": targets,
        "rows": table,
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
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    load_start = common.load_average()
    start = time.perf_counter()
    record = measure(args.quick, args.repeats or (1 if args.quick else 3),
                     args.steps, args.data, args.ceilings, args.jit_float32)
    record["seconds"] = round(time.perf_counter() - start, 1)
    return common.finish(record, args, load_start)


if __name__ == "__main__":
    raise SystemExit(main())
