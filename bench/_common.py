"""Shared helpers of the bench scripts: the record's provenance, timing, JSON and tables.

Every bench script measures one concern and returns a JSON-ready record; this module gives
them the same provenance block (`environment`: machine, package versions, git commit, date,
load average), the same statistics (`summarize`: median with min and max of repeated runs)
and the same way to write the record (`write_record`). A record may carry a ``"rows"``:
rows ``{"what", "median", "min", "max", "unit", "note"}`` that ``bench/run.py`` prints.

Run the benchmarks with oneDNN on (never ``TF_ENABLE_ONEDNN_OPTS=0``: it halves TensorFlow's
speed on this CPU); the record says which setting was in force.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "book" / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"

if str(ROOT) not in sys.path:  # `python bench/x.py` from anywhere imports this checkout's histolib
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from histolib import provenance  # noqa: E402  (after the path and the environment are set)
from histolib.files import atomic_write_text  # noqa: E402


def parser(doc: str, name: str) -> argparse.ArgumentParser:
    """The arguments every bench script takes: ``--quick``, ``--repeats``, ``--out``."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="few repeats and small sizes: checks that the script runs (smoke test)")
    p.add_argument("--repeats", type=_positive_int, default=None,
                   help="timed runs per measurement (median); default 3 (ceilings 5), 1 with --quick")
    p.add_argument("--out", type=Path, default=RESULTS / f"bench_{name}.json", help="JSON record to write")
    return p


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages (runnable processes; 2 cores here)."""
    return [round(x, 2) for x in os.getloadavg()]


def cpu_snapshot() -> dict:
    """Wall clock, the machine's busy CPU-seconds (``/proc/stat``: user, nice, system, irq,
    softirq and steal, all cores) and this process's own CPU-seconds (itself and its waited-for
    children). Two snapshots give `others_share`."""
    own = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        busy = None
    return {"wall": time.monotonic(), "busy": busy, "own": own}


#: Taken when a bench script starts: `environment` measures other processes' share since then.
PROCESS_START = cpu_snapshot()


def others_share(start: dict, end: dict | None = None) -> float | None:
    """Fraction of the machine's CPU capacity (all cores) that *other* processes (or the
    hypervisor, as steal time) used between two `cpu_snapshot`s: 0 on a quiet machine, 0.5 when
    something else kept one of two cores busy. Unlike the load average, the benchmark's own
    threads do not count. None where ``/proc/stat`` is unreadable."""
    end = end or cpu_snapshot()
    wall = end["wall"] - start["wall"]
    if start["busy"] is None or end["busy"] is None or wall <= 0:
        return None
    cores = cpu_info()["logical_cpus"] or 1
    others = (end["busy"] - start["busy"]) - (end["own"] - start["own"])
    return round(max(0.0, others) / (wall * cores), 3)


#: Above this `others_share` a record is marked contended.
CONTENDED_SHARE = 0.05


def cpu_info() -> dict:
    """CPU model, usable logical CPUs and the flags that decide TensorFlow's speed
    (`histolib.provenance.cpu_info`)."""
    return provenance.cpu_info()


def git_commit() -> dict:
    """The commit, and whether ``histolib/`` or ``bench/`` hold uncommitted changes."""
    return provenance.git_state(("histolib", "bench"))


def versions() -> dict:
    return provenance.package_versions(("tensorflow", "tensorflow-cpu", "keras", "jax", "numpy", "histolib"))


def environment(load_at_start: list[float] | None = None) -> dict:
    """Provenance of a record: machine, versions, commit, date and load averages.

    ``load_at_start`` is the load average taken before measuring; the one at the end is taken
    here (both for information: they count the benchmark's own threads too). Contention is
    judged by `others_share` since the script started: the record is ``"contended"`` when other
    processes used more than `CONTENDED_SHARE` of the machine's CPU time meanwhile.
    """
    end = load_average()
    start = load_at_start or end
    share = others_share(PROCESS_START)
    return {
        "machine": {**cpu_info(), "os": platform.platform(),
                    "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (oneDNN on)")},
        "versions": versions(),
        "git": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_start": start,
        "load_average_end": end,
        "others_cpu_share": share,
        "contended": share is not None and share > CONTENDED_SHARE,
    }


def summarize(values, scale: float = 1.0, digits: int = 3) -> dict:
    """``{"median", "min", "max", "runs"}`` of repeated measurements, each times ``scale``."""
    vals = [float(v) * scale for v in values]
    if not vals:
        raise ValueError("summarize needs at least one measurement. Received: values=[]")
    return {"median": round(statistics.median(vals), digits), "min": round(min(vals), digits),
            "max": round(max(vals), digits), "runs": [round(v, digits) for v in vals]}


def timed(function, repeats: int, warmup: int = 1) -> dict:
    """Wall seconds and this process's CPU seconds (all threads) of each of ``repeats`` calls
    of ``function()`` after ``warmup`` untimed calls: ``{"wall": [...], "cpu": [...]}``.

    On a shared machine the wall time grows with other processes' load while the CPU time
    stays about what the work costs, so ``items / cpu`` times the core count estimates the
    rate the machine would give undisturbed (approximately: idle threads that spin while
    waiting also count as CPU time, and under heavy load the two vCPUs' CPU-seconds buy less
    work than on a quiet machine, so the estimate is rough there). On the quiet machine the
    two agree within a few percent (matmul float32, n = 2048: 304 GFLOP/s by the wall clock,
    310 by CPU time). Fractions of the ceiling and ratios between variants measured the same
    way on both sides are steadier than either absolute rate.
    """
    for _ in range(warmup):
        function()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"wall": wall, "cpu": cpu}


def cores() -> int:
    return cpu_info()["logical_cpus"] or 1


def rates_both(times: dict, items: float, digits: int = 1) -> dict:
    """``{"per_second": ..., "per_cpu_second": ..., "cpu_time_estimate": ...}`` summaries of
    ``items`` per wall second, per CPU second, and per CPU second times the core count (the
    undisturbed-machine estimate; see `timed`)."""
    n = cores()
    return {"per_second": summarize([items / s for s in times["wall"]], digits=digits),
            "per_cpu_second": summarize([items / s for s in times["cpu"]], digits=digits),
            "cpu_time_estimate": summarize([n * items / s for s in times["cpu"]], digits=digits)}


def row(what: str, stats: dict, unit: str, note: str = "") -> dict:
    """One line of the printed table."""
    return {"what": what, "median": stats["median"], "min": stats["min"], "max": stats["max"],
            "unit": unit, "note": note}


def format_table(rows) -> str:
    """Rows as an aligned text table: what, median, spread (min - max), unit, note."""
    lines = [f"{'measurement':<46} {'median':>10} {'min - max':>21}  {'unit':<12} note"]
    for r in rows:
        spread = f"{_num(r['min'])} - {_num(r['max'])}"
        lines.append(f"{r['what']:<46} {_num(r['median']):>10} {spread:>21}  {r['unit']:<12} {r.get('note', '')}")
    return "\n".join(lines)


def _num(x) -> str:
    if x is None:
        return "-"
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def write_record(record: dict, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def finish(record: dict, args, load_start) -> int:
    """Add provenance, print the table, write the record; the scripts' common ending."""
    record["environment"] = environment(load_start)
    record["quick"] = bool(args.quick)
    env = record["environment"]
    print(format_table(record.get("rows", [])))
    print(f"other processes used {env['others_cpu_share']} of the {env['machine']['logical_cpus']} cores' "
          f"CPU time meanwhile" + ("; CONTENDED: rates are lower bounds" if env["contended"] else ""))
    write_record(record, args.out)
    print(f"wrote {args.out}")
    return 0


def read_record(name: str) -> dict | None:
    """``book/results/bench_<name>.json`` if a script wrote it, else ``None``."""
    path = RESULTS / f"bench_{name}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
