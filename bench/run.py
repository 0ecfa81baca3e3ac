"""Run the whole benchmark suite: every ``bench/*.py`` script, one table, one JSON record.

Runs each script in its own process (so one script's dtype policy, threads or memory never
leak into the next), in this order: ``ceilings`` (the other scripts divide by its matmul
rates), ``train_step``, ``recipes``, ``inference``, ``pipeline`` and ``slide`` where they exist, and
``scale`` last (it reads the pipeline's measured rate). Each script writes its own
``bench_<name>.json`` into ``--results``; this one prints their rows as one table (median of
repeated runs, with the spread min - max), then the issue's targets against what was
measured, and writes everything, with the machine, package versions, git commit, date and the
load average at start and end, to ``book/results/bench.json``.

The machine may be shared: when other processes used more than 5 % of the machine's CPU time
while a script ran (``/proc/stat`` minus the benchmark's own CPU time; see
``_common.others_share``), the record is marked ``"contended": true`` and the absolute rates
are then lower bounds.

With ``--only``, the other scripts are not rerun: their last records in ``--results`` are merged
as they are (``"rerun": false``; each keeps its own date and load average); ``--collect`` runs
nothing and merges every record there.

    python bench/run.py [--quick] [--only NAME ... | --collect] [--repeats N] [--steps N]
                        [--results DIR] [--out JSON]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

try:
    from bench import _common as common
except ImportError:  # run as `python bench/run.py`
    import _common as common

BENCH = Path(__file__).resolve().parent
ORDER = ("ceilings", "train_step", "recipes", "inference", "pipeline", "slide", "scale")
#: For a script without ``--quick``: smaller-size options to pass instead, where it takes them.
QUICK_FALLBACK = (("--repeats", "1"), ("--full-n", "8192"), ("--naive-n", "4096"))
LABEL_KEYS = ("name", "what", "variant", "model", "format", "spec", "source", "policy", "dtype_policy", "stride",
              "threads", "batch_size", "workers")


def _help(script: Path) -> str:
    try:
        return subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                              timeout=300).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def command(name: str, script: Path, *, quick: bool, results: Path) -> list[str]:
    """The command line for one script: ``--out`` into ``results``; ``--quick`` where the script
    takes it (else the smaller sizes of `QUICK_FALLBACK` it takes); the fresh ceilings and the
    results folder where taken."""
    options = _help(script)
    cmd = [sys.executable, str(script)]
    out_help = re.search(r"^\s+--out\b.*(\n\s{8,}[^-\s].*)*", options, re.MULTILINE)  # with wrapped lines
    if out_help:  # a file, or (bench/pipeline.py) the folder it writes bench_<name>.json into
        folder = "folder" in out_help.group(0)
        cmd += ["--out", str(results if folder else results / f"bench_{name}.json")]
    if quick:
        if "--quick" in options:
            cmd.append("--quick")
        else:
            for option, value in QUICK_FALLBACK:
                if option in options:
                    cmd += [option, value]
    if "--ceilings" in options and (results / "bench_ceilings.json").is_file():
        cmd += ["--ceilings", str(results / "bench_ceilings.json")]
    if "--results" in options:
        cmd += ["--results", str(results)]
    return cmd


def run_script(name: str, *, quick: bool, results: Path, timeout: float, repeats=None, steps=None) -> dict:
    """Run ``bench/<name>.py``; returns its exit status, seconds, load averages and record."""
    script = BENCH / f"{name}.py"
    cmd = command(name, script, quick=quick, results=results)
    options = _help(script)
    if repeats is not None and "--repeats" in options and "--repeats" not in cmd:
        cmd += ["--repeats", str(repeats)]
    if steps is not None and "--steps" in options:
        cmd += ["--steps", str(steps)]
    print(f"== {name}: {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}", flush=True)
    out = results / f"bench_{name}.json"
    before = out.stat().st_mtime if out.is_file() else None
    load = common.load_average()
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=common.ROOT, timeout=timeout, text=True, capture_output=True)
        status, tail = done.returncode, (done.stdout + done.stderr)
    except subprocess.TimeoutExpired as error:
        status, tail = "timeout", f"timed out after {timeout:.0f} s\n{error.stdout or ''}"
    seconds = time.perf_counter() - start
    lines = [ln for ln in tail.splitlines() if ln.strip() and not ln.startswith(("WARNING", "I0000", "W0000"))]
    print("\n".join(lines[-40:]), flush=True)
    entry = {"script": f"bench/{name}.py", "returncode": status, "seconds": round(seconds, 1),
             "load_average_start": load, "load_average_end": common.load_average()}
    if out.is_file() and out.stat().st_mtime != before:
        entry["record"] = json.loads(out.read_text())
    else:
        entry["error"] = "\n".join(lines[-15:]) or "no record written"
    return entry


def _label(d: dict) -> str:
    return ", ".join(f"{k} {d[k]}" for k in LABEL_KEYS if isinstance(d.get(k), (str, int, float)))


def extract_rows(name: str, record) -> list[dict]:
    """A record's table rows: its ``"rows"`` when it has them, else every measurement found in it
    (a ``{"median", "min", "max"}`` dict, or ``X_median`` beside ``X_min`` and ``X_max``)."""
    if isinstance(record, dict) and isinstance(record.get("rows"), list) and all(
            isinstance(r, dict) and "median" in r for r in record["rows"]):
        return [{**r, "what": f"{name}: {r.get('what', '')}"} for r in record["rows"]]
    rows = []
    if isinstance(record, dict) and isinstance(record.get("rows"), list):  # single runs, e.g. images_per_s
        for r in (r for r in record["rows"] if isinstance(r, dict)):
            rate = next(((k, v) for k, v in r.items() if isinstance(v, (int, float))
                         and (k.endswith("_per_s") or k.endswith("per_second"))), None)
            if rate:
                what = r.get("case") or r.get("name") or _label(r)
                rows.append({"what": f"{name}: {what}", "median": rate[1], "min": rate[1], "max": rate[1],
                             "unit": rate[0], "note": "one run"})
        if rows:
            return rows

    def walk(node, path, context):
        if isinstance(node, dict):
            label = _label(node) or context
            if {"median", "min", "max"} <= node.keys():
                rows.append({"what": f"{name}: {path} {label}".strip(), "median": node["median"],
                             "min": node["min"], "max": node["max"], "unit": node.get("unit", ""), "note": ""})
                return
            for key, value in node.items():
                if key.endswith("_median") and isinstance(value, (int, float)):
                    base = key[: -len("_median")]
                    rows.append({"what": f"{name}: {label}".strip(", "), "median": value,
                                 "min": node.get(base + "_min", value), "max": node.get(base + "_max", value),
                                 "unit": base, "note": ""})
                elif isinstance(value, (dict, list)) and key not in ("environment", "machine", "versions"):
                    walk(value, key, label)
        elif isinstance(node, list):
            for item in node:
                walk(item, path, context)

    walk(record, "", "")
    return rows


def _goal(target, goal, measured, ok, measured_cpu=None, ok_cpu=None) -> dict:
    out = {"target": target, "goal": goal, "measured": measured, "met": bool(ok)}
    if measured_cpu is not None:
        out.update(measured_cpu_time=measured_cpu, met_cpu_time=bool(ok_cpu))
    return out


def targets(scripts: dict) -> list[dict]:
    """The issue's targets against what the records hold: ``{"target", "goal", "measured",
    "met"}``, with ``measured_cpu_time`` / ``met_cpu_time`` (the CPU-time estimates, less
    disturbed by other load) where the record has them."""
    out = []

    def rec(name):
        return scripts.get(name, {}).get("record") or {}

    t = rec("train_step").get("targets", {})
    if t:
        a, b = t["default_over_plain_float32_twin"], t.get("default_over_plain_float32_twin_cpu_time")
        out.append(_goal("default training path / plain float32 twin", ">= 1.3", a, a >= 1.3,
                         b, b is not None and b >= 1.3))
        a, b = t["default_fraction_of_ceiling"], t.get("default_fraction_of_ceiling_cpu_time")
        out.append(_goal("default training path, fraction of its dtype's ceiling", ">= 0.6", a, a >= 0.6,
                         b, b is not None and b >= 0.6))
        if "real_pipeline_over_cached" in t:
            a, b = t["real_pipeline_over_cached"], t.get("real_pipeline_over_cached_cpu_time")
            out.append(_goal("training from the real JPEG pipeline / from cached tensors", ">= 0.95", a, a >= 0.95,
                             b, b is not None and b >= 0.95))
        a, b = t["fastest_variant"], t.get("fastest_variant_cpu_time")
        out.append(_goal("fastest training setting", "the default", a, a == "default", b, b == "default"))
    for r in rec("inference").get("results", []):
        a, b = r["fraction_of_ceiling"], r.get("fraction_of_ceiling_cpu_time")
        out.append(_goal(f"inference {r['model']} @{r['input_shape'][0]} {r['policy']}"
                         f"{', BN folded' if r.get('batch_norm_folded') else ''}, fraction of ceiling",
                         ">= 0.6", a, a >= 0.6, b, b is not None and b >= 0.6))
    pipeline_goals = {"h5-stream": 5000, "jpeg-folder": 2000}  # issue 2: images/s on this 2-core CPU
    for r in rec("pipeline").get("rows", []):
        if r.get("case") in pipeline_goals:
            goal = pipeline_goals[r["case"]]
            out.append(_goal(f"input pipeline {r['case']} ({r['images']:,} images), images/s", f">= {goal:,}",
                             r["images_per_s"], r["images_per_s"] >= goal))
        if r.get("case") == "h5-stream":
            out.append(_goal("input pipeline h5-stream, peak memory (MiB)", "< 2048", r["peak_rss_mib"],
                             r["peak_rss_mib"] < 2048))
    for r in rec("slide").get("results", []):
        if r.get("stride") == 96 and "seconds_median" in r:
            policy = r.get("policy") or r.get("dtype_policy")
            name = "slide heatmap, whole region, stride 96" + (f", {policy}" if policy else "")
            out.append(_goal(name, "< 10 s", r["seconds_median"], r["seconds_median"] < 10))
    scale = rec("scale")
    for what, ok in (scale.get("keeps_up") or {}).items():
        out.append(_goal(f"input pipeline {what} (seed model)", f"<= {scale.get('host_cores_assumed')} host cores",
                         ok, ok))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="pass --quick to every script (smoke test)")
    p.add_argument("--only", nargs="+", choices=ORDER, help="run only these scripts")
    p.add_argument("--collect", action="store_true",
                   help="run nothing: merge the records already in --results into --out")
    p.add_argument("--results", type=Path, default=common.RESULTS, help="folder for the scripts' records")
    p.add_argument("--out", type=Path, default=common.RESULTS / "bench.json", help="the merged record")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per script")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per measurement, passed to every script that takes --repeats")
    p.add_argument("--steps", type=int, default=None, help="batches per timed epoch, for train_step")
    args = p.parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    load_start = common.load_average()
    start = time.perf_counter()
    scripts = {}
    for name in ORDER:
        if not (BENCH / f"{name}.py").is_file():
            continue
        if not args.collect and (not args.only or name in args.only):
            scripts[name] = run_script(name, quick=args.quick, results=args.results, timeout=args.timeout,
                                       repeats=args.repeats, steps=args.steps)
            continue
        kept = args.results / f"bench_{name}.json"  # not rerun: keep its last record, marked so
        if kept.is_file():
            scripts[name] = {"script": f"bench/{name}.py", "rerun": False, "returncode": 0,
                             "record": json.loads(kept.read_text())}

    rows = [r for n, s in scripts.items() if "record" in s for r in extract_rows(n, s["record"])]
    goals = targets(scripts)
    env = common.environment(load_start)
    record = {
        "benchmark": "histolib benchmark suite (bench/run.py)",
        "quick": args.quick,
        "seconds": round(time.perf_counter() - start, 1),
        "contended": env["contended"] or any(s.get("record", {}).get("environment", {}).get("contended")
                                             for s in scripts.values()),
        "environment": env,
        "rows": rows,
        "targets": goals,
        "scripts": scripts,
        "failed": [n for n, s in scripts.items() if s["returncode"] != 0 or "record" not in s],
    }
    if record["contended"]:
        record["notes"] = (
            "Measured while other processes shared the CPU: wall-clock rates are lower bounds and vary "
            "with the load between runs. The CPU-time estimates (rate per CPU-second of the benchmark "
            "process, times the core count) are disturbed less; fractions of the ceiling and ratios "
            "between variants computed from them are the figures to read (see _common.timed).")
    print()
    print(common.format_table(rows))
    print()
    for g in goals:
        cpu = (f"; CPU-time estimate {g['measured_cpu_time']} {'met' if g['met_cpu_time'] else 'missed'}"
               if "measured_cpu_time" in g else "")
        print(f"{'MET   ' if g['met'] else 'MISSED'} {g['target']}: {g['measured']} (goal {g['goal']}{cpu})")
    shares = {n: s.get("record", {}).get("environment", {}).get("others_cpu_share") for n, s in scripts.items()}
    print(f"share of the CPU other processes used, per script: {shares}; over the whole run "
          f"{env['others_cpu_share']} of {env['machine']['logical_cpus']} cores"
          + ("; CONTENDED: rates are lower bounds" if record["contended"] else ""))
    if record["failed"]:
        print(f"FAILED: {', '.join(record['failed'])}")
    common.write_record(record, args.out)
    print(f"wrote {args.out}")
    return 1 if record["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
