"""The benchmark suite: FLOP counting checked by hand, the runner's table, and a smoke run of
every script with ``--quick`` (records with the expected keys and positive numbers; no timing
is asserted anywhere)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import _common as common  # noqa: E402
from bench import ceilings, run  # noqa: E402

MINE = ("ceilings", "train_step", "recipes", "inference", "scale")


def test_count_flops_matches_hand_counts():
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c")(inputs)  # 2*3*3*3*4*8*8
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", name="d")(x)  # 2*3*3*4*4*4
    x = keras.layers.SeparableConv2D(6, 3, padding="same", name="s")(x)  # 2*9*4*4*4 + 2*4*6*4*4
    x = keras.layers.Conv2D(5, 1, name="p")(x)  # 2*6*5*4*4
    x = keras.layers.Reshape((16, 5))(x)
    x = keras.layers.Dense(7, name="t")(x)  # per token: 2*5*7*16
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(2, name="o")(x)  # 2*7*2
    counted = ceilings.count_flops(keras.Model(inputs, outputs))
    assert counted["by_kind"] == {
        "conv": 2 * 9 * 3 * 4 * 64,
        "depthwise": 2 * 9 * 4 * 16 + 2 * 9 * 4 * 16,
        "pointwise": 2 * 4 * 6 * 16 + 2 * 6 * 5 * 16,
        "dense": 2 * 5 * 7 * 16 + 2 * 7 * 2,
        "attention": 0,
    }
    assert counted["forward"] == sum(counted["by_kind"].values())
    assert counted["uncounted"] == []


def test_seed_model_flops_by_hand_and_profiler():
    from histolib.models import build_seed_pcam_model

    model = build_seed_pcam_model()
    counted = ceilings.count_flops(model)
    convs = 2 * 9 * (3 * 64 * 96 * 96 + 64 * 128 * 48 * 48 + 128 * 256 * 24 * 24)
    attention = 3 * 2 * 144 * 256 * 128 + 2 * 144 * 128 * 128 + 2 * 2 * 144 * 144 * 128
    head = 2 * 128 * 64 + 2 * 64
    assert counted["by_kind"]["conv"] == convs
    assert counted["by_kind"]["attention"] == attention
    assert counted["by_kind"]["dense"] == head
    profiled = ceilings.profiler_flops(model, (96, 96, 3))
    # the profiler adds element-wise ops (bias, pooling, softmax): a little more, never less
    assert counted["forward"] <= profiled <= 1.02 * counted["forward"]


def test_summarize_and_rows_from_a_record_without_rows():
    stats = common.summarize([3.0, 1.0, 2.0])
    assert (stats["median"], stats["min"], stats["max"]) == (2.0, 1.0, 3.0)
    slide_like = {"results": [{"stride": 96, "seconds_median": 4.0, "seconds_min": 3.5, "seconds_max": 5.0},
                              {"stride": 48, "seconds_median": 9.0, "seconds_min": 8.0, "seconds_max": 9.5}],
                  "environment": {"load": {"median": 1, "min": 1, "max": 1}}}
    rows = run.extract_rows("slide", slide_like)
    assert [(r["what"], r["median"], r["min"], r["max"]) for r in rows] == [
        ("slide: stride 96", 4.0, 3.5, 5.0), ("slide: stride 48", 9.0, 8.0, 9.5)]


@pytest.fixture(scope="module")
def quick_suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", *MINE,
                           "--results", str(out), "--out", str(out / "bench.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _positive(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@pytest.mark.slow
@pytest.mark.parametrize("name,keys", [
    ("ceilings", ("ceilings", "ceiling_gflops", "models", "rows")),
    ("train_step", ("variants", "targets", "train_flops_per_image", "ceilings_gflops", "rows")),
    ("recipes", ("results", "mobilenet_over_seed", "mobilenet_over_seed_cpu_time", "rows")),
    ("inference", ("results", "layer_microbench", "depthwise_explanation", "rows")),
    ("scale", ("estimates", "models", "tpu_chapter_remedy", "rows")),
])
def test_each_script_writes_its_record(quick_suite, name, keys):
    record = json.loads((quick_suite / f"bench_{name}.json").read_text())
    assert set(keys) <= record.keys()
    assert record["quick"] is True
    env = record["environment"]
    assert env["versions"]["tensorflow"] and env["machine"]["logical_cpus"] >= 1
    assert len(env["load_average_start"]) == 3
    assert record["rows"] and all(_positive(r["median"]) and r["min"] <= r["median"] <= r["max"]
                                  for r in record["rows"])
    if name == "ceilings":
        assert all(_positive(v) for v in record["ceiling_gflops"].values())
        assert all(_positive(v) for v in record["ceiling_gflops_cpu_time"].values())
        for m in record["models"]:
            assert _positive(m["forward_flops"]) and m["train_flops"] == 3 * m["forward_flops"]
    if name == "train_step":
        assert {v["variant"] for v in record["variants"]} >= {"plain float32 twin", "default"}
        assert all(_positive(v["images_per_second"]["median"]) and _positive(v["fraction_of_ceiling"])
                   and _positive(v["images_per_second_cpu_time_estimate"]["median"])
                   and _positive(v["fraction_of_ceiling_cpu_time"]) for v in record["variants"])
        assert _positive(record["targets"]["default_over_plain_float32_twin"])
        backends = {v["variant"]: v["backend"] for v in record["variants"]}
        assert backends["default on JAX"] == "jax" and backends["default"] == "tensorflow"  # issue 13's JAX row
        for key in ("jax_over_tensorflow", "augment_in_model_over_tf_data",
                    "host_decode_only_over_augmented_per_cpu_second"):
            assert _positive(record["targets"][key]), key
    if name == "recipes":
        assert [r["name"] for r in record["results"]] == ["seed recipe", "mobilenet 160"]
        assert all(_positive(r["images_per_second"]["median"]) and _positive(r["epoch_minutes"])
                   and _positive(r["inference_images_per_second"]["per_second"]["median"]) for r in record["results"])
        assert [r["policy"] for r in record["results"]] == ["float32", "float32"]  # compared in one precision
        assert record["results"][1]["options"] == {"freeze": False, "backbone_size": 160}
    if name == "inference":
        assert {r["policy"] for r in record["results"]} == {"float32", "mixed_bfloat16"}
        assert all(_positive(r["fraction_of_ceiling"]) for r in record["results"])
        intensity = {m["layer"]: m["arithmetic_intensity"] for m in record["layer_microbench"]}
        assert intensity["depthwise 3x3"] < intensity["pointwise 1x1"] < intensity["full conv 3x3"]
    if name == "scale":
        assert all(_positive(e["epoch_seconds"]) and _positive(e["input_rate_needed"])
                   for e in record["estimates"])
        measured = [p for p in json.loads((quick_suite / "bench_train_step.json").read_text())["pipeline_alone"]
                    if p.get("source", "real") == "real"]
        if measured:  # the real JPEG folder was there: scale read its rate per core
            rates = record["pipeline_rates_per_core"]
            assert rates and all(_positive(p["images_per_second_per_core"]) for p in rates)
            assert all(_positive(n) for e in record["estimates"] for n in e["host_cores_needed"].values())


@pytest.mark.slow
def test_run_merges_records_into_one(quick_suite):
    merged = json.loads((quick_suite / "bench.json").read_text())
    assert merged["failed"] == []
    assert set(merged["scripts"]) == set(MINE)
    env = merged["environment"]
    assert env["git"]["commit"] and env["date"] and len(env["load_average_start"]) == 3
    assert isinstance(merged["contended"], bool)
    assert {r["what"].split(":")[0] for r in merged["rows"]} == set(MINE)
    assert any(t["target"].startswith("default training path / plain") for t in merged["targets"])
