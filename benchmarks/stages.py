"""Where a running pipeline's time goes: per-stage times from its workers' Prometheus
histograms, and the CPU each of its processes uses.

A snapshot sums each histogram's buckets over every worker serving on the ports from
``first_port`` (one port per Python worker); the difference of two snapshots is what happened
between them, and its quantiles are read off the buckets the way Prometheus's
``histogram_quantile`` does (linear inside a bucket).
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import urllib3
from prometheus_client.parser import text_string_to_metric_families

from services.core.exposition import PORT_ATTEMPTS
from services.devstack import processes

STAGES = {  # the breakdown's name: the job's histogram
    "batch_ms": "fraudstream_job_batch_seconds",
    "redis_ms": "fraudstream_job_redis_call_seconds",
    "scoring_ms": "fraudstream_job_scoring_call_seconds",
}
ROWS = "fraudstream_job_batch_rows"


@dataclass
class Histogram:
    buckets: defaultdict[float, float] = field(default_factory=lambda: defaultdict(float))
    total: float = 0.0  # the sum of the values observed

    def since(self, before: Histogram) -> list[tuple[float, float]]:
        """Cumulative (upper bound, count) pairs of what was observed after ``before``."""
        return sorted((le, n - before.buckets.get(le, 0.0)) for le, n in self.buckets.items())


Snapshot = dict[str, Histogram]


def snapshot(first_port: int) -> Snapshot:
    """Every worker's buckets of the stage histograms (and rows per batch), summed."""
    totals: Snapshot = {name: Histogram() for name in (*STAGES.values(), ROWS)}
    http = urllib3.PoolManager(timeout=2.0, retries=False)
    for port in range(first_port, first_port + PORT_ATTEMPTS):  # where workers may serve
        if not processes.port_open(port):
            continue
        try:
            text = http.request("GET", f"http://127.0.0.1:{port}/metrics").data.decode()
            families = list(text_string_to_metric_families(text))
        except (urllib3.exceptions.HTTPError, UnicodeDecodeError, ValueError):
            continue  # not a worker's metrics: something else took the port
        for family in families:
            if family.name not in totals:
                continue
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    totals[family.name].buckets[float(sample.labels["le"])] += sample.value
                elif sample.name.endswith("_sum"):
                    totals[family.name].total += sample.value
    return totals


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """``histogram_quantile``: cumulative (upper bound, count) pairs, ascending."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = upper, count
    return lower


def breakdown(before: Snapshot, after: Snapshot) -> dict[str, object]:
    """p50/p99 of each stage per batch, and mean rows per batch, between two snapshots."""
    out: dict[str, object] = {}
    for key, name in STAGES.items():
        delta = after[name].since(before[name])
        p50, p99 = _quantile(delta, 0.5), _quantile(delta, 0.99)
        out[key] = {"p50_ms": None if p50 is None else round(p50 * 1000, 2),
                    "p99_ms": None if p99 is None else round(p99 * 1000, 2)}  # fmt: skip
    rows = after[ROWS]
    batches = rows.buckets[math.inf] - before[ROWS].buckets[math.inf]
    out["rows_per_batch"] = (
        round((rows.total - before[ROWS].total) / batches, 1) if batches else None
    )
    out["batches"] = int(batches)
    return out


def _part(argv: list[str]) -> str:
    """Which part of the pipeline a process is, by its command line."""
    line = " ".join(argv)
    for part, marks in (("redis", ("redis-server",)), ("broker", ("tansu", "kafka.Kafka")),
                        ("scoring", ("services.cli serve",)),
                        ("python_workers", ("pyflink.fn_execution", "beam_boot")),
                        ("flink_jvm", ("java",)), ("job_client", ("services.cli job run",)),
                        ("baseline", ("multiprocessing",))):  # fmt: skip
        if any(mark in line for mark in marks):
            return part
    return "other"


def _descendants(root: int) -> dict[int, list[str]]:
    """Every process under ``root``, with its command line."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = processes.stat_fields(int(entry.name))
        if fields is not None:
            parents[int(entry.name)] = int(fields[1])
    found, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                try:
                    argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                found[child] = [a.decode(errors="replace") for a in argv if a]
                frontier.append(child)
    return found


CpuTimes = dict[int, tuple[str, float]]  # pid: (part, CPU seconds so far)


def cpu_seconds() -> CpuTimes:
    """CPU seconds (user and system) each process under this one has used, by part."""
    tick = os.sysconf("SC_CLK_TCK")
    times: CpuTimes = {}
    for pid, argv in _descendants(os.getpid()).items():
        fields = processes.stat_fields(pid)
        if fields is not None:  # utime and stime: a process ended meanwhile is not counted
            times[pid] = (_part(argv), (int(fields[11]) + int(fields[12])) / tick)
    times[os.getpid()] = ("this_benchmark", time.process_time())
    return times


def cpu_since(before: CpuTimes) -> dict[str, float]:
    """CPU seconds used by each part since ``before`` (a process started since counts whole)."""
    used: dict[str, float] = defaultdict(float)
    for pid, (part, seconds) in cpu_seconds().items():
        used[part] += seconds - before.get(pid, (part, 0.0))[1]
    return dict(used)
