"""Distribution strategies: a TPU where one is reachable, then mirrored GPUs, then default.

This module chooses (strategy and precision); `histolib.strategy.batches` shapes the batches
and `histolib.strategy.replicated` holds `fit_replicated`, both importable from here.

``get_strategy()`` picks one and logs which and why; ``choose_strategy()`` returns the reason
too. The environment variable ``HISTOLIB_STRATEGY`` overrides the automatic choice:

============  ==================================================================
value         strategy
============  ==================================================================
auto          (default) TPU, else MultiWorkerMirrored when ``TF_CONFIG`` names
              two or more workers, else Mirrored on >= 2 GPUs, else default
tpu           TPUStrategy; falls back to the automatic choice, logging why
mirrored      MirroredStrategy over all GPUs, or over all logical CPUs when
              there is no GPU (how the tests split one CPU into two replicas)
multiworker   MultiWorkerMirroredStrategy, configured by ``TF_CONFIG``
default       TensorFlow's default (one device) strategy
============  ==================================================================

A TPU is only looked for where there is a sign of one (``TPU_NAME``, ``COLAB_TPU_ADDR``,
``TPU_ACCELERATOR_TYPE``, or ``/dev/accel*`` / ``/dev/vfio`` devices of a TPU VM), so on other
machines nothing waits on Google's metadata server.

Keras 3 on JAX (``KERAS_BACKEND=jax``, the route that works on Colab's TPU runtimes, which no
longer ship TensorFlow): strategies are TensorFlow's concept, and the choices are

=============  =================================================================
auto           (default) data-parallel where JAX sees two or more devices, else
               default
data-parallel  `DataParallel`: ``keras.distribution.DataParallel`` over all of
               JAX's devices (TPU cores, GPUs, or the CPU split into N devices by
               ``XLA_FLAGS=--xla_force_host_platform_device_count=N``)
default        one device
=============  =================================================================

and ``tpu``, ``mirrored`` and ``multiworker`` are refused with a message. `DataParallel` wears
the two things of a strategy that `histolib.train.fit` uses, ``scope()`` and
``num_replicas_in_sync``: build the model, compile it *and* fit it inside its scope (Keras
shards each global batch over the devices at every step, and the variables are replicated).

Batches: under a strategy the batch a dataset yields is the *global* batch, split across
replicas; `global_batch_size` scales a per-replica batch, and `make_tpu_safe` gives a dataset
the static shapes TPUs (and XLA) want: every batch full (``drop_remainder``) and the shape
asserted.

Training: ``model.fit`` works under the default, Mirrored and TPU strategies (build and
compile the model inside ``strategy.scope()``). Under MultiWorkerMirroredStrategy, Keras
3.15's ``fit`` fails before the first step (it reduces the first ``(x, y)`` batch with
``strategy.reduce``, which that strategy cannot do for a tuple: keras-team/keras#20585,
tensorflow/tensorflow#72388); `fit_replicated` is a plain ``strategy.run`` loop that works
under every strategy, multi-worker included.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
from typing import NamedTuple

import keras
import tensorflow as tf

from histolib.provenance import has_bfloat16
from histolib.strategy.batches import datasets_for_strategy, global_batch_size, make_tpu_safe
from histolib.strategy.replicated import fit_replicated

log = logging.getLogger(__name__)

CHOICES = ("auto", "tpu", "mirrored", "multiworker", "data-parallel", "default")
#: The choices under ``KERAS_BACKEND=jax``.
JAX_CHOICES = ("auto", "data-parallel", "default")


class DataParallel:
    """``keras.distribution.DataParallel`` over JAX devices, with a strategy's ``scope()``.

    Args:
        devices: JAX devices (default: all of ``jax.devices()``).

    Attributes:
        distribution: the ``keras.distribution.DataParallel``.
        devices: the devices' names, e.g. ``["cpu:0", "cpu:1"]`` or ``["tpu:0", ...]``.
        num_replicas_in_sync: how many devices each global batch is split over.
    """

    def __init__(self, devices=None):
        import jax  # deferred: JAX is an optional backend

        devices = list(jax.devices() if devices is None else devices)
        self.distribution = keras.distribution.DataParallel(devices=devices)
        self.devices = [f"{d.platform}:{d.id}" for d in devices]
        self.num_replicas_in_sync = len(devices)

    def scope(self):
        """A context manager making the distribution current (``Distribution.scope()``)."""
        return self.distribution.scope()

    def __repr__(self):
        return f"DataParallel(devices={self.devices})"


class StrategyChoice(NamedTuple):
    """A strategy, its kind (one of ``"tpu"``, ``"mirrored"``, ``"multiworker"``,
    ``"data-parallel"``, ``"default"``) and the reason it was chosen.

    ``strategy`` is a ``tf.distribute.Strategy``, or a `DataParallel` under JAX."""

    strategy: tf.distribute.Strategy | DataParallel
    kind: str
    reason: str

    @property
    def replicas(self) -> int:
        """Replicas (devices) each global batch is split over."""
        return int(self.strategy.num_replicas_in_sync)

    @property
    def devices(self) -> list[str]:
        """The devices the strategy trains on (see `devices_of`)."""
        return devices_of(self.strategy)


def devices_of(strategy) -> list[str]:
    """The devices ``strategy`` trains on, as ``"platform:index"``: e.g. ``["cpu:0"]``,
    ``["gpu:0", "gpu:1"]`` or ``["tpu:0", ..., "tpu:7"]``; TensorFlow's default strategy (and
    JAX without a distribution) use the first device only."""
    if isinstance(strategy, DataParallel):
        return list(strategy.devices)
    try:
        return [d.split("device:")[-1].lower() for d in strategy.extended.worker_devices]
    except RuntimeError:  # the default strategy: one device
        pass
    if keras.backend.backend() == "jax":
        import jax  # deferred: JAX is an optional backend

        return [f"{d.platform}:{d.id}" for d in jax.devices()[:1]]
    gpus = tf.config.list_logical_devices("GPU")
    return [(gpus or tf.config.list_logical_devices("CPU"))[0].name.split("device:")[-1].lower()]


def training_scope(strategy):
    """The context `histolib.train.fit` trains in: a `DataParallel`'s scope (under JAX the
    model must be built, compiled, trained, restored and asked for predictions with the
    distribution current, so each batch is sharded over the devices), and nothing for
    TensorFlow's strategies (their scope matters where variables are made, which `fit` enters
    itself)."""
    return strategy.scope() if isinstance(strategy, DataParallel) else contextlib.nullcontext()


def _tpu_signs() -> list[str]:
    signs = [f"${name}" for name in ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE") if os.environ.get(name)]
    signs += sorted(glob.glob("/dev/accel*")) + sorted(glob.glob("/dev/vfio/[0-9]*"))
    return signs


def _try_tpu() -> StrategyChoice | str:
    """A TPUStrategy, or the reason there is none."""
    signs = _tpu_signs()
    if not signs:
        return ("no TPU: none of $TPU_NAME, $COLAB_TPU_ADDR, $TPU_ACCELERATOR_TYPE is set and "
                "there is no /dev/accel* or /dev/vfio device")
    tpu = os.environ.get("TPU_NAME") or (
        "grpc://" + os.environ["COLAB_TPU_ADDR"] if os.environ.get("COLAB_TPU_ADDR") else "local"
    )
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        if tpu != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    except Exception as error:  # noqa: BLE001 - any failure means: no usable TPU here
        return (f"TPU signs ({', '.join(signs)}) but TensorFlow could not use it "
                f"({type(error).__name__}: {error}); a TensorFlow TPU build may be missing")
    return StrategyChoice(
        strategy, "tpu", f"TPU {tpu!r} with {strategy.num_replicas_in_sync} cores ({', '.join(signs)})"
    )


def _workers_in_tf_config() -> int:
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}). Received: TF_CONFIG={os.environ['TF_CONFIG']!r}")
    return len(config.get("cluster", {}).get("worker", []))


def _mirrored(reason_prefix: str) -> StrategyChoice:
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    kind = "GPU" if gpus else "CPU"
    return StrategyChoice(
        strategy, "mirrored", f"{reason_prefix}: {len(devices)} {kind} replicas ({', '.join(devices)})"
    )


def _multiworker(reason: str) -> StrategyChoice:
    return StrategyChoice(tf.distribute.MultiWorkerMirroredStrategy(), "multiworker", reason)


def _default(reason: str) -> StrategyChoice:
    return StrategyChoice(tf.distribute.get_strategy(), "default", reason)


def _automatic(tpu_reason: str | None = None) -> StrategyChoice:
    tpu = _try_tpu() if tpu_reason is None else tpu_reason
    if isinstance(tpu, StrategyChoice):
        return tpu
    workers = _workers_in_tf_config()
    if workers >= 2:
        return _multiworker(f"{tpu}; TF_CONFIG names {workers} workers")
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) >= 2:
        return _mirrored(f"{tpu}; {len(gpus)} GPUs")
    return _default(f"{tpu}; {len(gpus)} GPU(s) and no multi-worker TF_CONFIG: one device")


def _choose_on_jax(name: str, source: str) -> StrategyChoice:
    """The choice under ``KERAS_BACKEND=jax`` (see the module docstring)."""
    import jax  # deferred: JAX is an optional backend

    if name not in JAX_CHOICES:
        raise ValueError(
            f"Strategy {name!r} is TensorFlow's; under KERAS_BACKEND=jax the choices are "
            f"{', '.join(JAX_CHOICES)}. Received: {source}={name!r}"
        )
    devices = jax.devices()
    described = f"{len(devices)} JAX device(s) ({', '.join(f'{d.platform}:{d.id}' for d in devices)})"
    if name == "data-parallel" or (name == "auto" and len(devices) >= 2):
        why = "requested by " + source if name == "data-parallel" else "auto"
        return StrategyChoice(DataParallel(devices), "data-parallel", f"{why}: {described}")
    why = "requested by " + source if name == "default" else "auto"
    return StrategyChoice(tf.distribute.get_strategy(), "default", f"{why}: one device of {described}")


def choose_strategy(name: str | None = None) -> StrategyChoice:
    """Pick a strategy (see the module docstring), log it, and say why.

    Args:
        name: one of ``"auto"``, ``"tpu"``, ``"mirrored"``, ``"multiworker"``, ``"default"``
            (TensorFlow), or ``"auto"``, ``"data-parallel"``, ``"default"`` (JAX); ``None``
            reads ``$HISTOLIB_STRATEGY`` (``"auto"`` when unset).

    Returns:
        A `StrategyChoice` ``(strategy, kind, reason)``.

    Raises:
        ValueError: for an unknown name.
    """
    source = "argument" if name is not None else "$HISTOLIB_STRATEGY"
    name = (name if name is not None else os.environ.get("HISTOLIB_STRATEGY", "auto")).strip().lower()
    if name not in CHOICES:
        raise ValueError(f"Unknown strategy; valid: {', '.join(CHOICES)}. Received: {source}={name!r}")
    if keras.backend.backend() == "jax":
        choice = _choose_on_jax(name, source)
    elif name == "data-parallel":
        raise ValueError(
            "data-parallel is Keras's distribution API, for KERAS_BACKEND=jax; under TensorFlow "
            f"choose mirrored (GPUs) or tpu. Received: {source}={name!r}"
        )
    elif name == "tpu":
        tpu = _try_tpu()
        if isinstance(tpu, StrategyChoice):
            choice = tpu
        else:
            log.warning("TPU strategy requested but unavailable (%s); falling back", tpu)
            choice = _automatic(tpu_reason=f"TPU requested, {tpu}")
    elif name == "mirrored":
        choice = _mirrored(f"requested by {source}")
    elif name == "multiworker":
        choice = _multiworker(f"requested by {source}; {_workers_in_tf_config()} worker(s) in TF_CONFIG")
    elif name == "default":
        choice = _default(f"requested by {source}")
    else:
        choice = _automatic()
    log.info("Distribution strategy: %s (%d replica(s)), because %s", choice.kind, choice.replicas, choice.reason)
    return choice


def get_strategy(name: str | None = None) -> tf.distribute.Strategy | DataParallel:
    """The strategy `choose_strategy` picks (logged with its reason)."""
    return choose_strategy(name).strategy


#: The Keras dtype policies `choose_precision` picks from.
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def choose_precision(name: str = "auto") -> str:
    """The Keras dtype policy for ``name``; ``"auto"`` picks per device.

    ``mixed_bfloat16`` on TPUs and, under TensorFlow, on CPUs with bfloat16 instructions
    (AVX-512 BF16 or AMX: measured 97 against 73 images/s for the seed model) while oneDNN is
    on, ``mixed_float16`` on GPUs, ``float32`` otherwise. So ``float32`` on any CPU under JAX
    (XLA's CPU backend does not use those instructions for convolutions: ``bench/train_step.py``,
    the JAX rows), and with ``TF_ENABLE_ONEDNN_OPTS=0``, where TensorFlow's own kernels emulate
    bfloat16: the seed model's training step then took 18x the CPU time of float32 (423 against
    24 CPU-seconds for 512 images on the Xeon with AMX; with oneDNN on, 5.8 against 14.5).
    bfloat16 stays the CPU choice because it did not cost accuracy where it was measured: the
    seed's PCam model on real patches, float32 against mixed_bfloat16 over five training seeds,
    differed by +0.0015 in valid accuracy (95 % interval -0.0066 to +0.0097) and +0.0003 in AUC
    (``book/results/precision_pcam.json``; the rule, an interval below zero would switch it to
    float32, is checked against the record by ``tests/test_strategy.py``).
    Other names of `PRECISIONS` are returned as they are.
    """
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}. Received: precision={name!r}")
    if name != "auto":
        return name

    if keras.backend.backend() == "jax":
        import jax  # deferred: JAX is an optional backend

        return {"tpu": "mixed_bfloat16", "gpu": "mixed_float16"}.get(jax.devices()[0].platform, "float32")
    if tf.config.list_logical_devices("TPU"):
        return "mixed_bfloat16"
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if has_bfloat16() and onednn_enabled() else "float32"


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its CPU kernels through oneDNN: on unless ``TF_ENABLE_ONEDNN_OPTS``
    is ``0`` or ``false`` (TensorFlow reads the variable once, at import)."""
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false")


__all__ = [
    "CHOICES", "JAX_CHOICES", "PRECISIONS", "DataParallel", "StrategyChoice", "choose_precision",
    "choose_strategy", "datasets_for_strategy", "devices_of", "fit_replicated", "get_strategy", "onednn_enabled",
    "global_batch_size", "make_tpu_safe", "training_scope",
]
