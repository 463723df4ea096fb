"""Prometheus metrics of the stream job's Python workers.

Each Python worker serves its own registry on the first free port from
``job_metrics_port`` (one port per worker; Prometheus scrapes them as one job).
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from models.online.lists import KINDS as LIST_KINDS
from services.core.lag import Partition

DEPENDENCIES = ("redis", "scoring", "scoring_rejected", "scoring_reply")  # degraded reasons
POLICIES = ("policy:redis_down", "policy:scoring_down")  # the failure policy's reasons
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5)
# A batch's stages take a millisecond or two: finer buckets, so their quantiles mean something.
STAGE_BUCKETS = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.035,
                 0.05, 0.1, 0.25, 0.5, 1, 2.5)  # fmt: skip


class JobMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "fraudstream_job"
        self.events = Counter(f"{p}_events", "Transactions consumed", ["result"], registry=registry)
        self.decisions = Counter(
            f"{p}_decisions", "Decisions produced by outcome and model version (none: rules only)",
            ["decision", "model_version"], registry=registry,
        )  # fmt: skip
        self.dlq = Counter(
            f"{p}_dlq",
            "Dead letters by kind and failing field",
            ["kind", "field"],
            registry=registry,
        )
        self.degraded = Counter(
            f"{p}_degraded_decisions", "Decisions made without a dependency", ["dependency"],
            registry=registry,
        )  # fmt: skip
        self.policy = Counter(
            f"{p}_policy_decisions", "Decisions the failure policy raised (a dependency was "
            "missing)", ["policy"], registry=registry,
        )  # fmt: skip
        self.unrecorded = Counter(
            f"{p}_unrecorded_events", "Events decided without Redis: recorded in their cards' "
            "histories once it was back, or dropped past the limit", ["result"],
            registry=registry,
        )  # fmt: skip
        self.unrecorded_held = Gauge(
            f"{p}_unrecorded_held", "Events decided without Redis, waiting to be recorded",
            registry=registry,
        )  # fmt: skip
        self.late = Counter(
            f"{p}_late_events", "Valid events behind their partition's watermark (the latest "
            "valid event time less the allowed out-of-orderness)", registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            f"{p}_latency_seconds", "The job's read of a record to its decision",
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.scoring = Histogram(
            f"{p}_scoring_call_seconds", "Scoring service call time", buckets=STAGE_BUCKETS,
            registry=registry,
        )  # fmt: skip
        self.redis = Histogram(
            f"{p}_redis_call_seconds", "Redis time of one batch's features (both round trips)",
            buckets=STAGE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.batch = Histogram(
            f"{p}_batch_seconds", "One micro-batch decided: decoding, Redis, scoring, rules and "
            "encoding (what a batch waits for beyond this is the batching itself)",
            buckets=STAGE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.breaker = Gauge(
            f"{p}_scoring_breaker_state", "The scoring client's circuit breaker: 0 closed, "
            "1 half-open (one trial call), 2 open (rules only)", registry=registry,
        )  # fmt: skip
        self.lag_seconds = Gauge(
            f"{p}_consumer_lag_seconds",
            "Age of the newest record decided (its Kafka timestamp, never in the future), at "
            "its batch's end",
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
        self.rule_fires = Counter(
            f"{p}_rule_fires", "Strategy rules that fired: active (acted on) or shadow "
            "(recorded only)", ["rule", "state"], registry=registry,
        )  # fmt: skip
        self.rule_errors = Counter(
            f"{p}_rule_errors", "Strategy rules that failed on an event (they did not fire)",
            ["rule"], registry=registry,
        )  # fmt: skip
        self.list_hits = Counter(
            f"{p}_list_hits", "Transactions that met an analysts' list entry", ["entry"],
            registry=registry,
        )  # fmt: skip
        self.strategy_version = Gauge(
            f"{p}_strategy_version", "The newest strategy version this worker holds",
            registry=registry,
        )  # fmt: skip
        self.strategy_refused = Counter(
            f"{p}_strategy_refused", "Strategy messages this worker refused (not a document, "
            "a version again, dated before its publication, rules its signals lack)",
            registry=registry,
        )  # fmt: skip
        self.strategy_polled = Gauge(
            f"{p}_strategy_polled_timestamp_seconds", "When this worker last read the strategy "
            "topic", registry=registry,
        )  # fmt: skip
        self.review_bar = Gauge(
            f"{p}_review_bar_usd", "Expected fraud loss (probability x amount x loss share) from "
            "which the model's score is reviewed: the review cost, raised to hold the daily "
            "alert budget", registry=registry,
        )  # fmt: skip
        self.thresholds = Gauge(
            f"{p}_score_thresholds", "The model version's score thresholds in force (a strategy "
            "of thresholds mode model): review, decline", ["name"], registry=registry,
        )  # fmt: skip

        for dependency in DEPENDENCIES:  # every series exists from the start: rates work
            self.degraded.labels(dependency)
        for policy in POLICIES:
            self.policy.labels(policy)
        for result in ("recorded", "dropped"):
            self.unrecorded.labels(result)
        for outcome in ("approve", "review", "decline"):
            self.decisions.labels(outcome, "none")
        for action in ("block", "allow"):
            for kind in LIST_KINDS:
                self.list_hits.labels(f"list:{action}_{kind}")

    def report_lag(self, lag: Mapping[Partition, int]) -> None:
        for (_topic, partition), behind in lag.items():
            self.lag.labels(str(partition)).set(behind)
