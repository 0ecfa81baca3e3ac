"""Slide heatmap speed: the whole real region, read + tissue mask + tiles + batched prediction.

Times ``histolib.regions.read_region`` followed by ``histolib.slide.heatmap`` on
``../shared/data/he-region/CMU-1-Small-Region.svs`` (2220 x 2967 pixels) with the PCam seed
model (random weights: the speed does not depend on them), built under the float32 and the
``mixed_bfloat16`` policies, at stride 96 and stride 48, after one untimed warm-up that traces
the model's predict function. Reports the median of repeated runs with their minimum and
maximum, a breakdown of one run into its stages, and tiles per second, prints a table, and
writes ``book/results/bench_slide.json``.

    python bench/slide.py [--region PATH] [--repeats 5] [--batch-size 128] [--dtypes ...] [--out JSON]

Run it with oneDNN on (do not set ``TF_ENABLE_ONEDNN_OPTS=0``): that halves TensorFlow's speed
on this CPU. The machine may be shared; the record keeps the load average beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

try:
    from bench import _common as common
except ImportError:  # run as `python bench/slide.py`
    import _common as common

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REGION = ROOT.parent / "shared" / "data" / "he-region" / "CMU-1-Small-Region.svs"
DEFAULT_OUT = ROOT / "book" / "results" / "bench_slide.json"
STRIDES = (96, 48)
def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _seed_model(dtype: str):
    import keras

    from histolib.models import build_seed_pcam_model

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(dtype)
    try:
        return build_seed_pcam_model()
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def measure(region_path: Path, *, repeats: int = 5, batch_size: int = 128,
            dtypes=("float32", "mixed_bfloat16")) -> dict:
    """Time the whole region at each stride and dtype policy; returns the record for JSON."""
    import keras
    import numpy as np
    import tensorflow as tf

    from histolib import slide
    from histolib.data import regions

    results = []
    for dtype in dtypes:
        model = _seed_model(dtype)
        region = regions.read_region(region_path)
        slide.heatmap(model, region, stride=96, batch_size=batch_size)  # warm-up: traces predict
        for stride in STRIDES:
            runs, cpu = [], []
            for _ in range(repeats):
                start, start_cpu = time.perf_counter(), time.process_time()
                result = slide.heatmap(model, regions.read_region(region_path), stride=stride,
                                       batch_size=batch_size)
                runs.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            # one run again, stage by stage
            region, t_read = _timed(regions.read_region, region_path)
            mask, t_mask = _timed(regions.tissue_mask, region)
            tissue, t_tiles = _timed(regions.tissue_fraction, mask, tile=96, stride=stride)
            keep = np.argwhere(tissue >= 0.25)
            _, t_predict = _timed(slide.predict_tiles, model, region, keep * stride,
                                  tile=96, batch_size=batch_size)
            median = statistics.median(runs)
            results.append({
                "dtype_policy": dtype,
                "stride": stride,
                "tiles": result.n_tiles,
                "tiles_scored": result.n_scored,
                "seconds_median": round(median, 3),
                "seconds_min": round(min(runs), 3),
                "seconds_max": round(max(runs), 3),
                "seconds_runs": [round(r, 3) for r in runs],
                "tiles_scored_per_second": round(result.n_scored / median, 1),
                # CPU seconds of this process over all its threads: less sensitive than wall
                # time to other work on a shared machine (wall >= cpu / cores)
                "cpu_seconds_median": round(statistics.median(cpu), 3),
                "stages_seconds": {"read": round(t_read, 3), "tissue_mask": round(t_mask, 3),
                                   "tile_fractions": round(t_tiles, 3),
                                   "predict": round(t_predict, 3)},
            })
    return {
        "benchmark": "slide heatmap, whole region, tissue mask included",
        "region": region_path.name,
        "region_shape": list(region.shape),
        "model": "seed-pcam (random weights)",
        "tile": 96,
        "min_tissue": 0.25,
        "mask_method": "otsu",
        "batch_size": batch_size,
        "repeats": repeats,
        "target": "under 10 s at stride 96 (issue 6, item 4)",
        "results": results,
        "environment": common.environment(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--region", type=Path, default=DEFAULT_REGION, help="SVS or TIFF region")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per stride (median)")
    parser.add_argument("--batch-size", type=int, default=128, help="tiles per forward pass")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "mixed_bfloat16"],
                        help="Keras dtype policies to build the model under")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON record to write")
    args = parser.parse_args(argv)
    if not args.region.is_file():
        print(f"bench/slide.py: error: region not found: {args.region}", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    record = measure(args.region, repeats=args.repeats, batch_size=args.batch_size,
                     dtypes=args.dtypes)
    print(f"{record['region']} {record['region_shape']}, batch {record['batch_size']}, "
          f"median of {record['repeats']} runs (min - max)")
    print(f"{'dtype':>15} {'stride':>6} {'tiles':>6} {'scored':>6} {'seconds':>8} {'spread':>14} {'tiles/s':>8}"
          f" {'cpu s':>6}"
          f"  stages (read / mask / fractions / predict)")
    for row in record["results"]:
        stages = " / ".join(f"{v:.2f}" for v in row["stages_seconds"].values())
        print(f"{row['dtype_policy']:>15} {row['stride']:>6} {row['tiles']:>6} {row['tiles_scored']:>6} "
              f"{row['seconds_median']:>8.2f} {row['seconds_min']:>6.2f} - {row['seconds_max']:<5.2f} "
              f"{row['tiles_scored_per_second']:>8.1f} {row['cpu_seconds_median']:>6.2f}  {stages}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
