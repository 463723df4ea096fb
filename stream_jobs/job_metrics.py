"""Prometheus metrics of the stream job's Python workers, and the consumer-lag probe.

Each Python worker serves its own registry on the first free port from
``job_metrics_port`` (one port per worker; Prometheus scrapes them as one job).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from services.settings import Settings

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5)
PORT_ATTEMPTS = 16


class JobMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "fraudstream_job"
        self.events = Counter(f"{p}_events", "Transactions consumed", ["result"], registry=registry)
        self.decisions = Counter(
            f"{p}_decisions", "Decisions produced", ["decision"], registry=registry
        )
        self.dlq = Counter(
            f"{p}_dlq", "Dead letters by failing field", ["field"], registry=registry
        )
        self.degraded = Counter(
            f"{p}_degraded_decisions", "Decisions made without a dependency", ["dependency"],
            registry=registry,
        )  # fmt: skip
        self.late = Counter(f"{p}_late_events", "Events behind the watermark", registry=registry)
        self.latency = Histogram(
            f"{p}_latency_seconds", "Event ingest (Kafka timestamp) to decision",
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.scoring = Histogram(
            f"{p}_scoring_call_seconds", "Scoring service call time", buckets=LATENCY_BUCKETS,
            registry=registry,
        )  # fmt: skip
        self.batch_rows = Histogram(
            f"{p}_batch_rows", "Rows per micro-batch",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000), registry=registry,
        )  # fmt: skip
        self.lag = Gauge(
            f"{p}_consumer_lag", "Messages behind the partition's end", ["partition"],
            registry=registry,
        )  # fmt: skip


def serve_metrics(registry: CollectorRegistry, first_port: int) -> int | None:
    """Serve on the first free port from ``first_port``; None if disabled (0) or all taken."""
    if first_port == 0:
        return None
    for port in range(first_port, first_port + PORT_ATTEMPTS):
        with contextlib.suppress(OSError):
            start_http_server(port, addr="127.0.0.1", registry=registry)
            return port
    return None


class LagProbe:
    """Consumer lag per partition: the partition's end offset minus the next offset to decide."""

    def __init__(self, settings: Settings, metrics: JobMetrics, interval_s: float = 2.0) -> None:
        from confluent_kafka import Consumer

        from services.kafka import client_config

        self._consumer = Consumer(client_config(settings) | {"group.id": "fraudstream-lag"})
        self._topic, self._metrics, self._interval = (
            settings.topic_transactions,
            metrics,
            interval_s,
        )
        self._next: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-probe", daemon=True)
        self._thread.start()

    def processed(self, offsets: Iterator[tuple[int, int]]) -> None:
        with self._lock:
            for partition, offset in offsets:
                if offset + 1 > self._next.get(partition, -1):
                    self._next[partition] = offset + 1

    def _run(self) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        while not self._stop.wait(self._interval):
            with self._lock:
                known = dict(self._next)
            for partition, next_offset in known.items():
                with contextlib.suppress(KafkaException):
                    _, high = self._consumer.get_watermark_offsets(
                        TopicPartition(self._topic, partition), timeout=1.0
                    )
                    self._metrics.lag.labels(str(partition)).set(max(high - next_offset, 0))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()
