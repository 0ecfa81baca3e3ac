"""Where a result came from: package versions, the git commit, the machine and its CPU flags.

Run records (``run.json`` from `histolib.train.fit`) and benchmark records (``bench/``) carry
the same facts, read here and nowhere else: `cpu_info` is the one reader of ``/proc/cpuinfo``,
`package_versions` of the installed distributions, `git_state` of the checkout.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import keras
import tensorflow as tf

#: The histolib checkout (or the site-packages folder holding an installed histolib).
ROOT = Path(__file__).resolve().parents[1]

#: CPU flags that decide TensorFlow's speed on a CPU, in the order records list them.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")

#: Flags that give bfloat16 arithmetic in hardware (AVX-512 BF16, AMX).
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")

#: Distributions whose versions a run record lists.
PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "jax", "jaxlib", "numpy", "scikit-learn", "scipy", "histolib")


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def cpu_info() -> dict:
    """The CPU model, usable logical CPUs and the `SPEED_FLAGS` the CPU has.

    Returns:
        ``{"cpu": model name, "logical_cpus": int, "cpu_flags": [flag, ...]}``; the flags in
        `SPEED_FLAGS` order. Without ``/proc/cpuinfo`` (not Linux) the model comes from
        ``platform`` and the flags are empty.
    """
    model, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model is None:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    return {"cpu": model, "logical_cpus": usable_cpus(), "cpu_flags": [f for f in SPEED_FLAGS if f in flags]}


def has_bfloat16() -> bool:
    """Whether the CPU computes in bfloat16 in hardware (AVX-512 BF16 or AMX)."""
    return any(flag in cpu_info()["cpu_flags"] for flag in BFLOAT16_FLAGS)


def package_versions(names=PACKAGES) -> dict:
    """``{"python": ..., name: version}`` for each installed distribution of ``names``.

    TensorFlow's CPU wheel is installed as ``tensorflow-cpu``; its version is reported under
    ``tensorflow`` too.
    """
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    if "tensorflow" not in out and "tensorflow-cpu" in out:
        out["tensorflow"] = out["tensorflow-cpu"]
    return out


def git_state(paths=("histolib",)) -> dict:
    """``{"commit": HEAD of the checkout, "modified": whether ``paths`` (folders of the
    checkout) hold uncommitted changes to tracked files}``; both ``None`` outside a git checkout
    or without git."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no",
                                "--", *paths], capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "modified": None}
    return {"commit": commit, "modified": bool(dirty)}


def memory_gib() -> float | None:
    """Physical memory in GiB (one decimal), ``None`` where the OS does not say."""
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def describe_environment() -> dict:
    """Package versions, git commit and machine, for run records.

    Returns a JSON-ready dict: ``packages`` (`package_versions`), ``git`` (``commit`` of the
    histolib checkout and ``histolib_modified``: whether ``histolib/`` had uncommitted
    changes), ``machine`` (OS, CPU model, logical CPUs usable by this process, memory in GiB,
    `SPEED_FLAGS` present, the Keras backend's devices, the oneDNN setting), the Keras
    ``backend`` (``"tensorflow"`` or ``"jax"``) and the Keras dtype policy in force.
    """
    git = git_state(("histolib",))
    machine = {
        "os": platform.platform(),
        **cpu_info(),
        "memory_gib": memory_gib(),
        "devices": backend_devices(),
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
    }
    return {
        "packages": package_versions(),
        "git": {"commit": git["commit"], "histolib_modified": git["modified"]},
        "machine": machine,
        "backend": keras.backend.backend(),
        "dtype_policy": keras.config.dtype_policy().name,
    }


def backend_devices() -> list[str]:
    """The devices of the Keras backend in use: TensorFlow's physical devices (``"CPU:0"``,
    ``"GPU:0"``, ...) or JAX's (``"cpu:0"``, ``"tpu:0"``, ...)."""
    if keras.backend.backend() == "jax":
        import jax  # deferred: JAX is an optional backend

        return [f"{d.platform}:{d.id}" for d in jax.devices()]

    return [d.device_type + ":" + d.name.rsplit(":", 1)[-1] for d in tf.config.list_physical_devices()]
