"""Scale on paper: one epoch of full PatchCamelyon on a Colab TPU v2-8 and on one modern GPU.

From the measured training FLOPs per image (3 x the forward FLOPs counted from the layers by
``bench/ceilings.py``) and published peak bfloat16 rates, at an assumed utilisation, the time
of one epoch over PCam's 262,144 training patches and the input rate the pipeline must sustain
to keep the accelerator busy. That rate is set against the input pipelines' measured rates per
CPU core (images per CPU-second: each case of ``book/results/bench_pipeline.json`` from
``bench/pipeline.py`` when it is there, the ``.h5`` stream and the JPEG folder with and without
augmentation; else the JPEG pipeline of ``bench/train_step.py``) to say how many host cores
each would need, and so whether it keeps up.

Peak rates (dense bfloat16, no sparsity):

- TPU v2-8: 4 chips x 45 TFLOP/s = 180 TFLOP/s. Source: Google Cloud, "TPU v2"
  (https://cloud.google.com/tpu/docs/v2: peak compute per chip 45 teraflops, bf16; a v2-8
  board holds 4 chips, 8 TensorCores).
- NVIDIA A100 SXM: 312 TFLOP/s. Source: NVIDIA A100 datasheet
  (https://www.nvidia.com/en-us/data-center/a100/: BFLOAT16 Tensor Core 312 TFLOPS; 624 with
  sparsity).
- NVIDIA H100 SXM: 989 TFLOP/s. Source: NVIDIA H100 datasheet
  (https://www.nvidia.com/en-us/data-center/h100/: BF16 Tensor Core 1,979 TFLOPS with
  sparsity, half that dense).

Utilisation: 40 % of peak is assumed (model FLOPs utilisation of well-fed convolutional
networks in bfloat16 on TPUs and GPUs is commonly 30-50 %; a model this small, with a 3-channel
first convolution and 144-token attention, may well do worse, so the epoch times are optimistic
and the input rates a lower bound on what is needed). The time at 100 % is given as the floor.

    python bench/scale.py [--quick] [--utilisation 0.4] [--host-cores 8]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

try:
    from bench import _common as common
    from bench import ceilings as ceilings_mod
except ImportError:  # run as `python bench/scale.py`
    import _common as common
    import ceilings as ceilings_mod

PCAM_TRAIN = 262_144
UTILISATION = 0.4
#: Host CPU cores assumed free for input per accelerator (accelerator hosts commonly give 8-12
#: vCPUs per GPU or TPU board; check ``os.cpu_count()`` on yours and pass ``--host-cores``).
HOST_CORES = 8
ACCELERATORS = {  # name: (peak bf16 TFLOP/s, dense; source in the module docstring)
    "Colab TPU v2-8": 180.0,
    "NVIDIA A100 SXM": 312.0,
    "NVIDIA H100 SXM": 989.0,
}

TPU_CHAPTER_REMEDY = (
    "Do not decode JPEGs on the host at accelerator speed: write PCam once as sharded TFRecords "
    "of raw uint8 patches (or read TFDS's patch_camelyon, already TFRecords) on Cloud Storage, "
    "read the shards in parallel (interleave with num_parallel_calls=AUTOTUNE, deterministic off "
    "for training), batch before map so augmentation runs vectorised on whole batches (or on the "
    "accelerator inside the model), cache the decoded set in host RAM when it fits (PCam's "
    "train split is 7.2 GB of uint8), and prefetch so the host always has the next batches ready.")


def pipeline_rates(results: Path = common.RESULTS) -> list[dict]:
    """Measured input rates per CPU core: each case of ``bench_pipeline.json`` (DATA's
    ``bench/pipeline.py``: 1000 / its CPU-seconds per 1,000 images), else the JPEG pipeline of
    ``bench_train_step.json`` (images per CPU-second); empty where neither was recorded."""
    path = results / "bench_pipeline.json"
    if path.is_file():
        rows = json.loads(path.read_text()).get("rows", [])
        found = [{"case": r["case"], "images_per_second_per_core": round(1000 / r["cpu_s_per_1000"], 1),
                  "source": f"{path.name}: 1000 / cpu_s_per_1000"}
                 for r in rows if r.get("cpu_s_per_1000") and r.get("case") != "h5-naive"]
        if found:
            return found
    path = results / "bench_train_step.json"
    if path.is_file():
        for p in json.loads(path.read_text()).get("pipeline_alone", []):
            if p.get("threads") == "all" and p.get("source", "real") == "real" and "images_per_cpu_second" in p:
                return [{"case": "jpeg-folder-aug", "source": f"{path.name}: pipeline_alone",
                         "images_per_second_per_core": p["images_per_cpu_second"]["median"]}]
    return []


def model_flops(quick: bool) -> list[dict]:
    """Training FLOPs per image of the models trained on PCam (96 px): the seed, and in the
    full run each backbone classifier at 96 px (InceptionV3 resizes to 139 inside)."""
    from histolib.models import list_backbones

    names = ["seed-pcam"] + ([] if quick else list_backbones())
    out = []
    for name in names:
        r = ceilings_mod.model_flops(name, (96, 96, 3), profile=False)
        out.append({"model": name, "input_shape": r["input_shape"], "forward_flops": r["forward_flops"],
                    "train_flops": r["train_flops"]})
    return out


def estimate(models, pipelines, utilisation: float = UTILISATION) -> list[dict]:
    """Epoch seconds and required input rate for each model on each accelerator."""
    rows = []
    for m in models:
        for name, tflops in ACCELERATORS.items():
            rate = tflops * 1e12 * utilisation / m["train_flops"]  # images/s at that utilisation
            r = {"model": m["model"], "accelerator": name, "peak_bf16_tflops": tflops,
                 "utilisation": utilisation, "images_per_second": round(rate),
                 "epoch_seconds": round(PCAM_TRAIN / rate, 1),
                 "epoch_seconds_at_peak": round(PCAM_TRAIN * m["train_flops"] / (tflops * 1e12), 2),
                 "input_rate_needed": round(rate)}
            r["host_cores_needed"] = {p["case"]: round(rate / p["images_per_second_per_core"], 1)
                                      for p in pipelines}
            rows.append(r)
    return rows


def measure(quick: bool = False, utilisation: float = UTILISATION, host_cores: int = HOST_CORES,
            results: Path = common.RESULTS) -> dict:
    models = model_flops(quick)
    pipelines = pipeline_rates(results)
    rows = estimate(models, pipelines, utilisation)
    table = []
    for r in rows:
        note = f"needs {r['input_rate_needed']:,} images/s in"
        if r["host_cores_needed"]:
            note += "; host cores: " + ", ".join(f"{c} {n:g}" for c, n in r["host_cores_needed"].items())
        s = r["epoch_seconds"]
        table.append(common.row(f"epoch {r['model']} on {r['accelerator']}",
                                {"median": s, "min": r["epoch_seconds_at_peak"], "max": s}, "s/epoch",
                                note + " (min: at 100 % of peak)"))
    return {
        "benchmark": "scale on paper: full PCam epoch on accelerators, input rate needed",
        "pcam_train_images": PCAM_TRAIN,
        "utilisation_assumed": utilisation,
        "accelerators_peak_bf16_tflops": ACCELERATORS,
        "models": models,
        "pipeline_rates_per_core": pipelines,
        "estimates": rows,
        "host_cores_assumed": host_cores,
        "keeps_up": {f"{case} on {r['accelerator']}": n <= host_cores
                     for r in rows if r["model"] == "seed-pcam" for case, n in r["host_cores_needed"].items()},
        "keeps_up_rule": f"a pipeline keeps up with the seed model when it needs at most {host_cores} host cores",
        "tpu_chapter_remedy": TPU_CHAPTER_REMEDY,
        "rows": table,
    }


def main(argv=None) -> int:
    p = common.parser(__doc__, "scale")
    p.add_argument("--utilisation", type=float, default=UTILISATION,
                   help="assumed fraction of the accelerator's peak (default 0.4)")
    p.add_argument("--host-cores", type=int, default=HOST_CORES,
                   help=f"host CPU cores free for input per accelerator (default {HOST_CORES})")
    p.add_argument("--results", type=Path, default=common.RESULTS,
                   help="folder holding bench_pipeline.json / bench_train_step.json")
    args = p.parse_args(argv)
    if not 0 < args.utilisation <= 1:
        p.error(f"--utilisation must be in (0, 1], got {args.utilisation}")
    load_start = common.load_average()
    start = time.perf_counter()
    record = measure(args.quick, args.utilisation, args.host_cores, args.results)
    record["seconds"] = round(time.perf_counter() - start, 1)
    return common.finish(record, args, load_start)


if __name__ == "__main__":
    raise SystemExit(main())
