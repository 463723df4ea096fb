"""Per-stage times of a running pipeline, from its workers' Prometheus histograms.

A snapshot sums each histogram's buckets over every worker serving on the ports from
``first_port`` (one port per Python worker); the difference of two snapshots is what happened
between them, and its quantiles are read off the buckets the way Prometheus's
``histogram_quantile`` does (linear inside a bucket).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import urllib3
from prometheus_client.parser import text_string_to_metric_families

from services.devstack import processes

STAGES = {  # the breakdown's name: the job's histogram
    "batch_ms": "fraudstream_job_batch_seconds",
    "redis_ms": "fraudstream_job_redis_call_seconds",
    "scoring_ms": "fraudstream_job_scoring_call_seconds",
}
ROWS = "fraudstream_job_batch_rows"
WORKER_PORTS = 4  # at most this many workers are looked for


@dataclass
class Histogram:
    buckets: defaultdict[float, float] = field(default_factory=lambda: defaultdict(float))
    total: float = 0.0  # the sum of the values observed

    def since(self, before: Histogram) -> list[tuple[float, float]]:
        """Cumulative (upper bound, count) pairs of what was observed after ``before``."""
        return sorted((le, n - before.buckets[le]) for le, n in list(self.buckets.items()))


Snapshot = dict[str, Histogram]


def snapshot(first_port: int) -> Snapshot:
    """Every worker's buckets of the stage histograms (and rows per batch), summed."""
    totals: Snapshot = {name: Histogram() for name in (*STAGES.values(), ROWS)}
    http = urllib3.PoolManager(timeout=2.0, retries=False)
    for port in range(first_port, first_port + WORKER_PORTS):
        if not processes.port_open(port):
            continue
        text = http.request("GET", f"http://127.0.0.1:{port}/metrics").data.decode()
        for family in text_string_to_metric_families(text):
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
