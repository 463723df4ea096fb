"""The lake's write path: the manifest commit's cost, and the feedback app's archive rate.

Two measurements, each with a baseline in the same run:
- ``Lake.append`` of transaction rows in 10,000-row batches against plain
  ``pyarrow.parquet.write_table`` of the same batches (what the manifest, the offsets and the
  date partitioning add);
- the feedback app's archive thread writing a backlog of transactions from the embedded
  broker into the lake (read, decode, validate, Parquet, commit) against a librdkafka
  consumer that only reads and decodes the same backlog; with the app's CPU time per 1,000
  events and its memory.

    python -m benchmarks.lake [--count 100000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.cleanup import stop_on_signals
from benchmarks.provenance import provenance
from models.lake import tables as lk
from services.clients.producer import TransactionProducer
from services.core.contract import decode_transaction
from services.core.kafka import assigned_consumer
from services.core.settings import Settings
from services.devstack import processes, stack
from services.devstack.processes import free_loopback_port
from services.generator import GeneratorConfig, generate

BATCH = 10_000


def _rows(count: int) -> list[dict[str, Any]]:
    return [lk.transaction_row(item.transaction)
            for item in generate(GeneratorConfig(seed=4), count)]  # fmt: skip


def _parquet_alone(rows: list[dict[str, Any]], directory: Path) -> float:
    schema = lk.SCHEMAS["transactions"]
    started = time.perf_counter()
    for n, start in enumerate(range(0, len(rows), BATCH)):
        pq.write_table(pa.Table.from_pylist(rows[start : start + BATCH], schema=schema),
                       directory / f"{n}.parquet")  # fmt: skip
    return len(rows) / (time.perf_counter() - started)


def _lake_append(rows: list[dict[str, Any]], directory: Path) -> float:
    lake = lk.Lake(directory)
    started = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        lake.append("transactions", [lk.Sourced("t", 0, start + i, row)
                                     for i, row in enumerate(batch)])  # fmt: skip
    assert lake.rows("transactions") == len(rows)
    return len(rows) / (time.perf_counter() - started)


def _read_and_decode(settings: Settings, count: int) -> float:
    consumer = assigned_consumer(settings, [settings.topic.transactions], group="bench-lake")
    seen, started = 0, time.perf_counter()
    while seen < count:
        for message in consumer.consume(10_000, timeout=1.0):
            if not message.error():
                decode_transaction(message.value() or b"")
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return count / elapsed


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as reply:
        return b"fraudstream_feedback_ready 1.0" in reply.read()


def _archive(settings: Settings, count: int, logs: Path) -> dict[str, float]:
    """The app starts on empty topics; the clock runs from the first event produced to the
    last one archived (producing the backlog takes under a second)."""
    env = settings.child_environment()
    argv = [sys.executable, "-m", "services.cli", "feedback-app"]
    app = processes.spawn("feedback-app", argv, logs / "feedback-app.log", env=env)
    lake = lk.Lake(settings.lake_path)
    try:
        processes.wait_until(lambda: _ready(settings.feedback.metrics_port), 180, "app ready")
        started, cpu_before = time.perf_counter(), _cpu_s(app.pid)
        with TransactionProducer(settings) as producer:
            for item in generate(GeneratorConfig(seed=5), count):
                producer.send(item.transaction)
        processes.wait_until(lambda: lake.rows("transactions") >= count, 600, "archived",
                             interval=0.05)  # fmt: skip
        elapsed, cpu = time.perf_counter() - started, _cpu_s(app.pid) - cpu_before
        rss = _rss_mb(app.pid)
    finally:
        processes.stop(app)
    return {
        "archive_events_per_s": round(count / elapsed),
        "archive_cpu_ms_per_1000_events": round(cpu / count * 1e6, 1),
        "feedback_app_rss_mb": round(rss, 1),
        "lake_files": len(lake.files("transactions")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="transactions per measurement")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args()
    stop_on_signals()

    rows = _rows(args.count)
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        (root / "plain").mkdir()
        parquet = _parquet_alone(rows, root / "plain")
        appended = _lake_append(rows, root / "lake-inproc")
        settings = Settings.of(state_dir=root / "state", feedback_metrics_port=free_loopback_port(),
                            lake_flush_s=1.0)  # fmt: skip
        state = stack.up(settings, feedback=False, workbench=False)
        try:
            local = stack.client_settings(settings, state)
            archive = _archive(local, args.count, root / "logs")
            baseline = _read_and_decode(local, args.count)
        finally:
            stack.down(settings)
    result: dict[str, Any] = {
        "benchmark": "lake",
        "count": args.count,
        "parquet_alone_rows_per_s": round(parquet),
        "lake_append_rows_per_s": round(appended),
        "ratio_append_to_parquet": round(appended / parquet, 3),
        "baseline_read_decode_events_per_s": round(baseline),
        **archive,
        "ratio_archive_to_read_decode": round(archive["archive_events_per_s"] / baseline, 3),
        **provenance(),
    }
    if not args.json:
        for name, value in result.items():
            print(f"{name:>36}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
