"""Training and inference speed of the PCam recipes the book compares: the seed's, and the
fine-tuned MobileNet 0.25 at 128 px (issue 11's chosen recipe) and at 160 px (issue 22's).

Each recipe trains as ``histolib train`` runs it, for ``repeats + 1`` epochs of ``steps``
batches of 64 (the first epoch, tracing, dropped): its model from `histolib.models.build_model`
under its dtype policy, Adam, its loss, and its augmented ``tf.data`` stream of the real JPEG
folder (``--data``; synthetic patches where the folder is absent). Inference is the model called
on a batch of 64 patches (96 x 96, the resize inside the model), without the data pipeline.
Rows:

- ``seed recipe``: ``seed-pcam``, ``pcam-seed`` augmentation, in ``float32`` (as the MobileNet
  rows, so the rates compare) and, where ``--precision auto`` picks it on this machine (AVX-512
  BF16 or AMX), in ``mixed_bfloat16``, the policy its recorded runs trained in;
- ``mobilenet 128`` and ``mobilenet 160``: ``mobilenet_025`` fine-tuned (nothing frozen) on
  patches resized to 128 or 160 inside the model, ``pcam`` augmentation, ``float32`` (the
  recipes' ``--precision float32``: MobileNet's batch norms upcast bfloat16 to float32 and back
  on this CPU, so bfloat16 is slower there);
- ``mobilenet 128, mixed_bfloat16``: the same under bfloat16, to show that choice.

Weights are random (the speed does not depend on them, and no weights file is needed). Every
rate is given by the wall clock and as a CPU-time estimate (see ``_common.timed``); the record
carries the CPU flags. "Epoch minutes" is 20,000 patches at the wall-clock rate, without
validation.

    python bench/recipes.py [--quick] [--repeats 3] [--steps 8] [--data DIR]
"""

from __future__ import annotations

import time
from pathlib import Path

try:
    from bench import _common as common
    from bench.inference import _images_per_second
    from bench.train_step import _fit_timed, _images
except ImportError:  # run as `python bench/recipes.py`
    import _common as common
    from inference import _images_per_second
    from train_step import _fit_timed, _images

BATCH = 64
TRAIN_PATCHES = 20_000


def recipes(auto_policy: str) -> list[dict]:
    """The measured rows: name, model name, builder options, policy, augmentation."""
    seed = {"name": "seed recipe", "model": "seed-pcam", "options": {}, "augment": "pcam-seed"}
    mobilenet = {"model": "mobilenet_025", "augment": "pcam"}
    rows = [{**seed, "policy": "float32"}]
    if auto_policy != "float32":
        rows.append({**seed, "name": f"seed recipe, {auto_policy}", "policy": auto_policy})
    return rows + [
        {"name": f"mobilenet {size}", **mobilenet, "options": {"freeze": False, "backbone_size": size},
         "policy": "float32"} for size in (128, 160)
    ] + [{"name": "mobilenet 128, mixed_bfloat16", **mobilenet, "options": {"freeze": False, "backbone_size": 128},
          "policy": "mixed_bfloat16"}]


def _inference(model, batch: int, repeats: int) -> dict:
    """Images/s of ``model`` called on one batch of ``batch`` 96 x 96 patches (bench/inference.py's
    measurement), under the record's names."""
    rates = _images_per_second(model, batch, (96, 96, 3), repeats)
    return {"per_second": rates["images_per_second"], "cpu_time_estimate": rates["images_per_second_cpu_time_estimate"]}


def measure_one(recipe: dict, *, steps: int, repeats: int, batch: int, real_dir, seed: int = 0) -> dict:
    import keras

    from histolib import data, models

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = models.build_model(recipe["model"], weights=None, dtype_policy=recipe["policy"], options=recipe["options"])
    metrics = [keras.metrics.BinaryAccuracy(name="accuracy")] if models.is_sigmoid(model) else ["accuracy"]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=models.loss_for(model), metrics=metrics)
    spec = f"folder:{real_dir}" if real_dir is not None else f"synthetic-pcam:{max(steps * batch, 256)}"
    feed = data.load(spec, "train", batch_size=batch, shuffle=True, augment=recipe["augment"], seed=seed).repeat()
    times = _fit_timed(model, feed, steps=steps, repeats=repeats, batch=batch)
    rates = _images(times, steps * batch)
    return {**recipe, "data": spec, "batch_size": batch, "steps_per_epoch": steps, "params": model.count_params(),
            **rates, "epoch_minutes": round(TRAIN_PATCHES / rates["images_per_second"]["median"] / 60, 1),
            "inference_images_per_second": _inference(model, batch, repeats)}


def measure(quick: bool = False, repeats: int = 3, steps: int = 8, real_dir: Path | None = None) -> dict:
    from histolib.strategy import choose_precision

    batch = 16 if quick else BATCH
    steps = 2 if quick else steps
    real = real_dir if real_dir is not None and Path(real_dir, "train").is_dir() else None
    plan = recipes(choose_precision("auto"))
    if quick:
        plan = [r for r in plan if r["name"] in ("seed recipe", "mobilenet 160")]
    results = []
    for recipe in plan:
        results.append(measure_one(recipe, steps=steps, repeats=repeats, batch=batch, real_dir=real))
        print(f"  {recipe['name']}: {results[-1]['images_per_second']['median']} images/s", flush=True)
    seed, mobilenet = results[0], next(r for r in results if r["name"] == "mobilenet 160")  # both float32
    flags = ", ".join(common.cpu_info().get("cpu_flags") or []) or "no AVX-512/AMX flags"
    rows = [common.row(f"train {r['name']}", r["images_per_second"], "images/s",
                       f"{r['policy']}, {r['augment']}; CPU-time est. "
                       f"{r['images_per_second_cpu_time_estimate']['median']:g}/s; epoch {r['epoch_minutes']} min; "
                       f"CPU {flags}") for r in results]
    inference = [(r["name"], r["policy"], r["inference_images_per_second"]) for r in results]
    rows += [common.row(f"inference {name}", rates["per_second"], "images/s",
                        f"{policy}; CPU-time est. {rates['cpu_time_estimate']['median']:g}/s")
             for name, policy, rates in inference]
    return {
        "benchmark": "training and inference images/s of the seed's PCam recipe and the fine-tuned MobileNet recipes",
        "batch_size": batch,
        "real_data": str(real) if real is not None else None,
        "results": results,
        "mobilenet_over_seed": round(mobilenet["images_per_second"]["median"] / seed["images_per_second"]["median"], 3),
        "mobilenet_over_seed_cpu_time": round(mobilenet["images_per_second_cpu_time_estimate"]["median"]
                                              / seed["images_per_second_cpu_time_estimate"]["median"], 3),
        "rows": rows,
    }


def main(argv=None) -> int:
    p = common.parser(__doc__, "recipes")
    p.add_argument("--steps", type=int, default=8, help="batches per timed epoch")
    p.add_argument("--data", type=Path, default=common.SHARED_DATA / "pcam-jpeg",
                   help="the real PCam JPEG folder (DIR/train/{0,1}); synthetic patches when absent")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    load_start = common.load_average()
    start = time.perf_counter()
    record = measure(args.quick, args.repeats or (1 if args.quick else 3), args.steps, args.data)
    record["seconds"] = round(time.perf_counter() - start, 1)
    return common.finish(record, args, load_start)


if __name__ == "__main__":
    raise SystemExit(main())
