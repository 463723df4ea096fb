"""The feedback app's Prometheus metrics, shared by its agents and its archive thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from models.lake import TABLES
from services.core.lag import Partition, per_topic
from stream_jobs.metrics import LATENCY_BUCKETS

AGENTS = ("alerts", "alert-feedback", "lake-labels", "archive")  # what processing_seconds times


class FeedbackMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._ready = threading.Event()
        p = "fraudstream_feedback"
        self.processed = Counter(
            f"{p}_processed", "Dispositions applied", ["label", "result"], registry=registry
        )
        self.dlq = Counter(f"{p}_dlq", "Invalid dispositions", ["field"], registry=registry)
        self.alerts = Counter(f"{p}_alerts_remembered", "Alerts kept", registry=registry)
        self.ready = Gauge(f"{p}_ready", "1 once partitions are assigned", registry=registry)
        self.lag = Gauge(
            f"{p}_consumer_lag", "Messages behind the partitions' ends", ["topic"],
            registry=registry,
        )  # fmt: skip
        self.lag_seconds = Gauge(
            f"{p}_consumer_lag_seconds", "Age of the newest message processed (its Kafka "
            "timestamp)", ["topic"], registry=registry,
        )  # fmt: skip
        self.processing = Histogram(
            f"{p}_processing_seconds", "Time to process one message (a disposition waits for "
            "its alert) or, for lake-labels and archive, one batch", ["agent"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.lake_files = Counter(
            f"{p}_lake_files", "Parquet files added to the lake", ["table"], registry=registry
        )
        self.lake_rows = Counter(f"{p}_lake_rows", "Rows written", ["table"], registry=registry)
        self.redis_retries = Counter(
            f"{p}_redis_retries", "Redis calls retried in an outage", registry=registry
        )
        self.lake_errors = Counter(
            f"{p}_lake_errors", "Lake writes failed (retried)", ["table"], registry=registry
        )
        self.lake_skipped = Counter(
            f"{p}_lake_skipped", "Invalid records not archived", ["table"], registry=registry
        )

        for label in ("fraud", "legit"):  # every series exists from the start: rates work
            for result in ("applied", "repeat"):
                self.processed.labels(label, result)
        for agent in AGENTS:
            self.processing.labels(agent)
        for table in TABLES:
            for counter in (self.lake_files, self.lake_rows, self.lake_errors, self.lake_skipped):
                counter.labels(table)

    def mark_ready(self) -> None:
        """Partitions assigned: the gauge, and ``/readyz``, say so."""
        self.ready.set(1)
        self._ready.set()

    def is_ready(self) -> bool:
        return self._ready.is_set()

    def report_lag(self, lag: Mapping[Partition, int]) -> None:
        for topic, behind in per_topic(lag).items():
            self.lag.labels(topic).set(behind)

    def message_age(self, topic: str, timestamp_s: float) -> None:
        self.lag_seconds.labels(topic).set(max(0.0, time.time() - timestamp_s))
