"""Input-pipeline benchmark: images/s and peak memory of histolib.data's readers.

Cases, each run in its own process so its peak RSS is its own:

- ``h5-stream``: a full-size PCam train file (262,144 patches, 7.25 GB, written once into a
  temporary folder by tiling a 4,096-patch random block, then deleted) streamed through
  ``histolib.data.load("pcam-h5:DIR", "train", batch_size=256, shuffle=True,
  augment="pcam-seed")``, prefetched: the training pipeline.
- ``h5-stream-noaug``: the same file and pipeline without augmentation (reading + shuffling).
- ``h5-naive``: the naive way on a smaller file (``--naive-n`` patches): ``h5py`` reads the whole
  array, then batches of 256 are sliced from NumPy, scaled and augmented eagerly with the same
  Keras layers. Its time includes the read.
- ``jpeg-folder`` / ``jpeg-folder-aug``: ``folder:../shared/data/pcam-jpeg`` train (20,000 JPEGs),
  decode only and with ``pcam-seed``, batch 256, shuffled.

Reported per case: images, wall seconds, images/s, CPU-seconds per 1,000 images (user + system,
all threads; robust to other load on the machine) and peak RSS. The machine's load average is
recorded, because other jobs on a shared machine lower the wall-clock rates. The big file is
read right after it is written, so it is probably in the page cache; cold-disk reads are not
measured.

Usage::

    python bench/pipeline.py                   # all cases, writes book/results/bench_pipeline.{txt,json}
    python bench/pipeline.py --full-n 65536    # a smaller "full" file where disk or time is short
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from bench import _common as common
except ImportError:  # run as `python bench/pipeline.py`
    import _common as common

ROOT = common.ROOT
BATCH = 256
CASES = ("h5-stream", "h5-stream-noaug", "h5-naive", "jpeg-folder", "jpeg-folder-aug")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def write_h5(directory: Path, n: int, split: str = "train") -> Path:
    """A PCam-layout file pair of ``n`` patches, tiled from a 4,096-patch random block."""
    import h5py
    import numpy as np

    from histolib.data.pcam import PCAM_FILE

    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, (4096, 96, 96, 3), dtype=np.uint8)
    x_path = directory / PCAM_FILE.format(split=split, key="x")
    with h5py.File(x_path, "w") as f:
        x = f.create_dataset("x", shape=(n, 96, 96, 3), dtype=np.uint8)
        for start in range(0, n, len(block)):
            stop = min(start + len(block), n)
            x[start:stop] = block[: stop - start]
    with h5py.File(directory / PCAM_FILE.format(split=split, key="y"), "w") as f:
        f.create_dataset("y", data=(np.arange(n) % 2).astype(np.uint8).reshape(-1, 1, 1, 1))
    return x_path


def run_case(case: str, path: str) -> dict:
    """Run one case in this process; returns its measurements."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np

    from histolib import data

    if case == "h5-naive":
        import h5py

        from histolib.layers.augmentation import augmentation

        aug = augmentation("pcam-seed", seed=0)
        x_path = Path(path) / "camelyonpatch_level_2_split_train_x.h5"
        aug(np.zeros((2, 96, 96, 3), np.float32), training=True)  # build the layers first
        cpu, t = _cpu(), time.perf_counter()
        with h5py.File(x_path, "r") as f:
            x = f["x"][:]
        with h5py.File(str(x_path).replace("_x.h5", "_y.h5"), "r") as f:
            y = f["y"][:].reshape(-1)
        n = 0
        order = np.random.default_rng(0).permutation(len(x))
        for start in range(0, len(x), BATCH):
            idx = np.sort(order[start:start + BATCH])
            batch = aug(x[idx].astype(np.float32) / 255.0, training=True)
            n += len(y[idx])
        del batch
    else:
        spec, aug = {
            "h5-stream": (f"pcam-h5:{path}", "pcam-seed"),
            "h5-stream-noaug": (f"pcam-h5:{path}", None),
            "jpeg-folder": (f"folder:{path}", None),
            "jpeg-folder-aug": (f"folder:{path}", "pcam-seed"),
        }[case]
        ds = data.load(spec, "train", batch_size=BATCH, shuffle=True, augment=aug, seed=0)
        for _ in ds.take(2):  # trace the graphs before timing
            pass
        cpu, t = _cpu(), time.perf_counter()
        n = 0
        for _, labels in ds:
            n += int(labels.shape[0])
    wall = time.perf_counter() - t
    return {"case": case, "images": n, "wall_s": round(wall, 2), "images_per_s": round(n / wall, 1),
            "cpu_s_per_1000": round((_cpu() - cpu) / n * 1000, 3), "peak_rss_mib": round(_peak_rss_mib(), 1)}


def _child(case: str, path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--case", case, "--path", path],
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full-n", type=int, default=262144, help="patches in the 'full-size' file")
    parser.add_argument("--naive-n", type=int, default=32768, help="patches in the naive-read file")
    parser.add_argument("--jpeg", default=str(ROOT.parent / "shared" / "data" / "pcam-jpeg"))
    parser.add_argument("--workdir", default=None, help="where to write the temporary .h5 files")
    parser.add_argument("--out", default=str(ROOT / "book" / "results"), help="folder for bench_pipeline.{txt,json}")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.path)))
        return 0

    cases = args.cases.split(",")
    rows, notes = [], {}
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench_pipeline_") as tmp:
        full, small = Path(tmp) / "full", Path(tmp) / "small"
        full.mkdir()
        small.mkdir()
        if any(c.startswith("h5-stream") for c in cases):
            import h5py  # noqa: F401  (imports outside the timed write)

            import histolib.data.synthetic  # noqa: F401

            t = time.perf_counter()
            x_path = write_h5(full, args.full_n)
            notes["full_file"] = {"patches": args.full_n, "bytes": x_path.stat().st_size,
                                  "write_s": round(time.perf_counter() - t, 1)}
            print(f"wrote {x_path.stat().st_size / 1e9:.2f} GB in {notes['full_file']['write_s']} s", flush=True)
        for case in [c for c in cases if c.startswith("h5-stream")]:
            rows.append(_child(case, str(full)))
            print(rows[-1], flush=True)
        for p in full.iterdir():
            p.unlink()
        if "h5-naive" in cases:
            write_h5(small, args.naive_n)
            rows.append(_child("h5-naive", str(small)))
            print(rows[-1], flush=True)
    for case in [c for c in cases if c.startswith("jpeg")]:
        if not Path(args.jpeg, "train").is_dir():
            print(f"skipping {case}: no JPEG folder at {args.jpeg}", flush=True)
            continue
        rows.append(_child(case, args.jpeg))
        print(rows[-1], flush=True)

    record = {"rows": rows, "batch_size": BATCH, "notes": notes, "environment": common.environment()}
    header = f"{'case':<18}{'images':>9}{'wall s':>9}{'images/s':>10}{'CPU s/1k img':>14}{'peak RSS MiB':>14}"
    lines = [header, "-" * len(header)]
    lines += [f"{r['case']:<18}{r['images']:>9}{r['wall_s']:>9}{r['images_per_s']:>10}{r['cpu_s_per_1000']:>14}"
              f"{r['peak_rss_mib']:>14}" for r in rows]
    env = record["environment"]
    lines.append(f"batch {BATCH}; {env['machine']['logical_cpus']} CPUs; other processes used "
                 f"{env['others_cpu_share']} of their CPU time; TF {env['versions'].get('tensorflow')}; {env['date']}")
    if "full_file" in notes:
        f = notes["full_file"]
        lines.append(f"full file: {f['patches']:,} patches, {f['bytes'] / 1e9:.2f} GB, written in {f['write_s']} s")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_pipeline.txt").write_text(table + "\n")
    (out / "bench_pipeline.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
