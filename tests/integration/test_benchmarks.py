"""Every benchmark runs once, in a short mode, so none can rot unnoticed: it finishes and its
JSON has the keys it promises. The figures themselves are not judged here (they belong to a
quiet machine, not to a CI run on a loaded one); and a benchmark stopped by a signal stops the
processes it started."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.capacity import Costs
from services.devstack import processes
from services.generator import GeneratorConfig, generate
from tests.environment import without_settings
from tests.unit.test_datasets import write_card_csv

ROOT = Path(__file__).resolve().parents[2]
E2E_STAGES = {"source_ms", "pipeline_ms", "sink_ms", "batch_ms", "redis_ms", "scoring_ms",
              "rows_per_batch", "batches"}  # fmt: skip


def _run(name: str, *argv: str, timeout: float = 280) -> dict[str, Any]:
    env = without_settings()
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--json", *argv],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(result, dict)
    assert result.get("commit"), "provenance missing"
    assert result.get("machine"), "provenance missing"
    return result


SHORT = {  # benchmark: its short arguments, and the keys its JSON promises
    "scoring": (["--seconds", "0.3", "--repeats", "30"],
                {"inprocess_batch256", "service_msgpack_batch256", "service_json_batch1",
                 "service_rows_per_s_saturation", "service_batch1_at_1000rps", "reload_batch1",
                 "drift_count_batch1", "drift_count_batch256", "ratio_batch256",
                 "service_healthz", "ratio_batch256_lower_bound"}),
    "features": (["--events", "300", "--fill", "3000"],
                 {"by_history", "declared_entities", "memory", "batch", "decider_events_per_s",
                  "decider_wall_us_per_event", "decider_alert_share"}),
    "strategy": (["--events", "300"],
                 {"python_3_rules_us_per_event", "rules_30", "rules_30_tables_50k_entries"}),
    "produce": (["--count", "2000"],
                {"baseline_librdkafka_events_per_s", "full_path_events_per_s",
                 "ratio_full_to_baseline", "bytes_per_event"}),
    "lake": (["--count", "2000"],
             {"parquet_alone_rows_per_s", "lake_append_rows_per_s", "archive_events_per_s",
              "ratio_archive_to_read_decode"}),
    "workbench": (["--cases", "50", "--requests", "10"],
                  {"ingest_cases_per_s", "queue_full_ms", "baseline_healthz_full_ms"}),
    "model_quality": (["--skip-real", "--count", "20000", "--signals-count", "20000",
                       "--shared-data", "no-such-directory"],
                      {"quality", "signals", "later_period", "weekly_retraining"}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SHORT))
def test_a_benchmark_runs_short_and_keeps_its_keys(name: str) -> None:
    argv, keys = SHORT[name]
    result = _run(name, *argv)
    assert result["benchmark"] == name
    assert keys <= result.keys(), keys - result.keys()
    if name == "features":  # the Decider's time split by its own histograms: each part spent
        parts = result["decider_wall_us_per_event"]
        assert all(parts[part] > 0 for part in ("features", "scoring", "rest")), parts


def test_the_backtest_benchmark_runs_on_a_small_file(tmp_path: Path) -> None:
    items = list(generate(GeneratorConfig(seed=3, customers=300), 3_000))
    data = write_card_csv(tmp_path / "cards.csv", items)
    result = _run(
        "backtest",
        "--data",
        str(data),
        "--from",
        "2000-01-01T00:00:00Z",
        "--to",
        "2099-01-01T00:00:00Z",
    )
    assert result["events"] == len(items)
    assert {"events_per_s", "strategy_share", "seconds_per_million"} <= result.keys()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("broker", ["tansu", "kafka"])
def test_the_end_to_end_benchmark_measures_both_pipelines_stage_by_stage(broker: str) -> None:
    result = _run("e2e", "--broker", broker, "--warmup", "300", "--count", "1000",
                  "--seconds", "0.5", timeout=850)  # fmt: skip
    assert result["broker"] == broker
    assert result["delivery"] == ("exactly-once" if broker == "kafka" else "at-least-once")
    assert {"ratio", "pyflink_events_per_s", "baseline_events_per_s", "p99_ms"} <= result.keys()
    for pipeline in ("pyflink", "baseline"):
        figures = result[pipeline]
        assert isinstance(figures, dict)
        assert figures["backlog_decided"] == 1000, pipeline
        stages = figures["rate_1000"]["stages"]
        assert stages.keys() >= E2E_STAGES
        # the workers' own histograms were read: batches were counted, their time is known
        assert stages["batches"] > 0, pipeline
        assert stages["batch_ms"]["p50_ms"] is not None, pipeline
    # every process of the job was found and charged its CPU: what the capacity plan reads
    cpu = result["pyflink"]["cpu_us_per_event"]
    assert all(cpu.get(part, 0) > 0 for part in ("python_workers", "flink_jvm", "redis",
                                                   "scoring", "broker")), cpu  # fmt: skip
    assert Costs.of(cpu).slot > 0


def test_the_end_to_end_benchmark_refuses_exactly_once_on_tansu() -> None:
    env = without_settings()
    done = subprocess.run([sys.executable, "-m", "benchmarks.e2e", "--broker", "tansu",
                           "--delivery", "exactly-once"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=env, check=False)  # fmt: skip
    assert done.returncode == 2
    assert "Tansu has no exactly-once delivery" in done.stderr


def _services(pid: int) -> set[int]:
    """The scoring services ``pid`` started (its children running ``services.cli serve``)."""
    found = set()
    for entry in Path("/proc").glob("[0-9]*"):
        fields = processes.stat_fields(int(entry.name))
        if fields is None or int(fields[1]) != pid:
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"services.cli\0serve" in argv:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    fields = processes.stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def test_a_benchmark_stopped_by_a_signal_stops_what_it_started() -> None:
    """SIGTERM (a CI timeout) while the scoring benchmark's service runs: both end."""
    env = without_settings()
    bench = subprocess.Popen([sys.executable, "-m", "benchmarks.scoring", "--json",
                              "--seconds", "60"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        processes.wait_until(lambda: bool(_services(bench.pid)), 120, "the scoring service")
        started = _services(bench.pid)
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(30) == 128 + signal.SIGTERM  # it unwound, not killed outright
        processes.wait_until(lambda: not any(_alive(pid) for pid in started), 20,
                             "the benchmark's scoring service to stop")  # fmt: skip
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()


def test_the_capacity_plan_reads_the_figures_the_end_to_end_benchmark_prints(
    tmp_path: Path,
) -> None:
    cpu = {"python_workers": 200.0, "flink_jvm": 80.0, "redis": 40.0, "scoring": 12.0,
           "broker": 75.0}  # fmt: skip
    path = tmp_path / "e2e.json"
    path.write_text("a line of progress\n" + json.dumps({"pyflink": {"cpu_us_per_event": cpu}}))
    result = _run("capacity", "--e2e", str(path), "--load", "10000")
    assert result["plans"] == [{
        "load_per_s": 10_000, "taskmanager_slots": 5, "redis_shards": 1, "scoring_pods": 1,
        "broker_cores": 2, "kafka_partitions": 10, "cores": 9,
        "first_bottleneck": "taskmanager_slots",
    }]  # fmt: skip
