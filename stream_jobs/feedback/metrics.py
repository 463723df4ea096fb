"""The feedback app's Prometheus metrics, shared by its agents and its archive thread."""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from models.lake.tables import TABLES
from services.core.lag import Partition, per_topic
from stream_jobs.metrics import LATENCY_BUCKETS

AGENTS = ("alerts", "alert-feedback", "archive")  # what processing_seconds times


class FeedbackMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "fraudstream_feedback"
        self.processed = Counter(
            f"{p}_processed", "Dispositions applied: changed the label, or a repeat (or older "
            "than the label in place)", ["label", "result"], registry=registry,
        )  # fmt: skip
        self.dlq = Counter(
            f"{p}_dlq", "Dispositions dead-lettered, by failing field ($: an error that would "
            "recur)", ["field"], registry=registry,
        )  # fmt: skip
        self.alerts = Counter(f"{p}_alerts_remembered", "Alerts kept", registry=registry)
        self.chargebacks = Counter(
            f"{p}_chargebacks_forwarded",
            "Chargebacks sent on as fraud dispositions",
            registry=registry,
        )
        self.alerts_skipped = Counter(
            f"{p}_alerts_skipped", "Alerts not kept: an error that would recur", registry=registry
        )
        self.parked = Counter(
            f"{p}_parked", "Dispositions parked: their transaction was not known yet",
            registry=registry,
        )  # fmt: skip
        self.unparked = Counter(
            f"{p}_unparked", "Parked dispositions applied once their transaction was known, or "
            "dead-lettered after feedback_park_s", ["result"], registry=registry,
        )  # fmt: skip
        self.parked_now = Gauge(
            f"{p}_parked_transactions", "Transactions with dispositions waiting", registry=registry
        )
        self.stuck_seconds = Gauge(
            f"{p}_stuck_seconds", "How long an agent has been retrying its current message "
            "through an outage (0: not)", ["agent"], registry=registry,
        )  # fmt: skip
        self.ready = Gauge(
            f"{p}_ready", "1 when ready: partitions assigned, no agent stuck past "
            "feedback_stuck_s, the event loop answering", registry=registry,
        )  # fmt: skip
        self.lag = Gauge(
            f"{p}_consumer_lag", "Messages behind the partitions' ends", ["topic"],
            registry=registry,
        )  # fmt: skip
        self.lag_seconds = Gauge(
            f"{p}_consumer_lag_seconds", "Age of the newest message processed (its Kafka "
            "timestamp)", ["topic"], registry=registry,
        )  # fmt: skip
        self.processing = Histogram(
            f"{p}_processing_seconds", "Time to process one message or, for the archive, one "
            "batch", ["agent"],
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
        for result in ("applied", "dead_letter"):
            self.unparked.labels(result)
        for field in ("$", "transaction_id"):  # an error that would recur; none known
            self.dlq.labels(field)
        for agent in AGENTS:
            self.processing.labels(agent)
        for agent in AGENTS[:2]:
            self.stuck_seconds.labels(agent)
        for table in TABLES:
            for counter in (self.lake_files, self.lake_rows, self.lake_errors, self.lake_skipped):
                counter.labels(table)

    def report_lag(self, lag: Mapping[Partition, int]) -> None:
        for topic, behind in per_topic(lag).items():
            self.lag.labels(topic).set(behind)

    def message_age(self, topic: str, timestamp_s: float) -> None:
        self.lag_seconds.labels(topic).set(max(0.0, time.time() - timestamp_s))
