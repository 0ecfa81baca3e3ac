"""Data preparation that runs once per folder and is then cached: the folder check and the
near-duplicate groups.

Times, each on a fresh user cache (a temporary ``$HISTOLIB_CACHE``) and then again from the
cache:

- ``histolib.data.images.check_files`` on ``../shared/data/pcam-jpeg`` (24,500 JPEG patches,
  96x96): every file decoded once in a parallel tf.data pass; the cached run only stats the
  files and reads one JSON entry;
- ``histolib.data.duplicates.folder_near_duplicates`` on ``../shared/data/ovarian`` (498
  micrographs, up to 888x550): ORB features of each image and its mirror, hashed candidate
  matches, RANSAC verification; the record also counts the groups per class.

Wall and CPU seconds are both recorded (on a shared machine the wall time grows with other
processes' load). ``--quick`` uses the ``valid`` split of pcam-jpeg (3,000 files) and the first
60 ovarian files.

    python bench/data_prep.py [--quick] [--pcam DIR] [--ovarian DIR] [--repeats N] [--out JSON]
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
from pathlib import Path

try:
    from bench import _common as common
except ImportError:  # run as `python bench/data_prep.py`
    import _common as common


def _once(function):
    start, start_cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, {"wall": time.perf_counter() - start, "cpu": time.process_time() - start_cpu}


def _rows(what, files, first, cached, note):
    rows = [{"what": f"{what}, first run", "unit": "s", "note": f"{files} files; {note}",
             **common.summarize([first["wall"]]), "cpu_s": round(first["cpu"], 2)}]
    rows.append({"what": f"{what}, cached", "unit": "s", "note": f"{files} files; stat + one JSON read",
                 **common.summarize(cached["wall"]), "cpu_s": round(min(cached["cpu"]), 3)})
    return rows


def folder_check(root: Path, repeats: int, quick: bool) -> list[dict]:
    from histolib.data import images, layout

    paths = layout.all_files(root / "valid" if quick else root)
    run = functools.partial(images.check_files, paths, where=str(root))
    found, first = _once(run)
    assert not found.cached and not found.bad
    cached = common.timed(run, repeats, warmup=0)
    return _rows("folder check (decode every file)", len(paths), first, cached,
                 "tf.data parallel decode, ignore_errors")


def near_duplicates(root: Path, repeats: int, quick: bool) -> tuple[list[dict], dict]:
    from histolib.data import duplicates, layout

    paths = list(layout.all_files(root))[: 60 if quick else None]
    run = functools.partial(duplicates.find_near_duplicates, paths)
    found, first = _once(run)
    cached = common.timed(run, repeats, warmup=0)
    classes = [Path(p).parent.name for p in found.paths]
    per_class = {}
    for name in sorted(set(classes)):
        groups = [g for g in found.groups if any(classes[i] == name for i in g)]
        per_class[name] = {"files": classes.count(name), "groups": len(groups),
                           "groups_of_2_or_more": sum(len(g) > 1 for g in groups),
                           "files_in_them": sum(1 for g in groups if len(g) > 1 for i in g if classes[i] == name)}
    summary = {"files": len(found.paths), "groups": len(found.groups), "verified_pairs": len(found.pairs),
               "cross_class_groups": [[found.paths[i].split(str(root) + "/")[-1] for i in g]
                                      for g in found.groups if len({classes[i] for i in g}) > 1],
               "per_class": per_class, "settings": duplicates.SETTINGS}
    rows = _rows("near-duplicate groups (ORB + LSH + RANSAC)", len(paths), first, cached,
                 f"{len(found.groups)} groups, {len(found.pairs)} verified pairs")
    return rows, summary


def main(argv=None) -> int:
    p = common.parser(__doc__, "data_prep")
    p.add_argument("--pcam", type=Path, default=common.SHARED_DATA / "pcam-jpeg", help="the JPEG patch folder")
    p.add_argument("--ovarian", type=Path, default=common.SHARED_DATA / "ovarian", help="the ovarian folder")
    args = p.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    load = common.load_average()
    rows, record = [], {}
    with tempfile.TemporaryDirectory() as store:
        os.environ["HISTOLIB_CACHE"] = store  # a fresh cache: the first runs pay in full
        if args.pcam.is_dir():
            rows += folder_check(args.pcam, repeats, args.quick)
        if args.ovarian.is_dir():
            dup_rows, record["near_duplicates"] = near_duplicates(args.ovarian, repeats, args.quick)
            rows += dup_rows
    if not rows:
        print(f"no data found at {args.pcam} or {args.ovarian}", file=sys.stderr)
        return 2
    record["rows"] = rows
    return common.finish(record, args, load)


if __name__ == "__main__":
    sys.exit(main())
