"""Every Prometheus metric of the project, defined once, on a registry passed in.

Components build their metrics object on their own ``CollectorRegistry`` (tests use a fresh
one), so nothing is registered globally at import time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

ERROR_TYPES = ("unauthorized", "overloaded", "disconnected", "too_large", "invalid",
               "malformed", "not_ready")  # fmt: skip
RELOAD_FAILURES = ("incompatible_inputs", "load_error", "registry_error")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
SCORE_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99)


class ScoreDistribution(Collector):
    """A histogram of scores filled a whole batch at a time (one numpy pass, not a call per
    row), labelled by model version and role (primary or shadow)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self._name, self._doc = name, documentation
        self._edges = np.asarray(buckets, dtype=np.float64)
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], tuple[npt.NDArray[np.int64], float]] = {}

    def observe_many(self, version: str, role: str, scores: npt.ArrayLike) -> None:
        values = np.asarray(scores, dtype=np.float64)
        counts = np.bincount(np.searchsorted(self._edges, values, side="left"),
                             minlength=self._edges.size + 1)  # fmt: skip
        with self._lock:
            total, summed = self._series.get((version, role), (np.zeros_like(counts), 0.0))
            self._series[(version, role)] = (total + counts, summed + float(values.sum()))

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._doc, labels=["model_version", "role"])
        with self._lock:
            series = dict(self._series)
        for (version, role), (counts, summed) in series.items():
            cumulative = np.cumsum(counts)
            buckets = [
                (repr(float(e)), int(c)) for e, c in zip(self._edges, cumulative, strict=False)
            ]
            buckets.append(("+Inf", int(cumulative[-1])))
            family.add_metric([version, role], buckets, summed)
        yield family


class ScoringMetrics:
    """The scoring service's metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.request_seconds = Histogram(
            "fraudstream_scoring_request_seconds",
            "Request latency in the service, every request, by endpoint and status code",
            ["endpoint", "code"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.batch_rows = Histogram(
            "fraudstream_scoring_batch_rows", "Rows per scoring request",
            buckets=BATCH_BUCKETS, registry=registry,
        )  # fmt: skip
        self.errors = Counter(
            "fraudstream_scoring_errors", "Failed requests by type", ["type"], registry=registry
        )
        for kind in ERROR_TYPES:  # every series exists from the start: rates and alerts work
            self.errors.labels(kind)
        self.model_load_seconds = Gauge(
            "fraudstream_scoring_model_load_seconds", "Time to load a model version",
            ["model_version"], registry=registry,
        )  # fmt: skip
        self.model_info = Gauge(
            "fraudstream_scoring_model_info", "1 for each loaded model version and its role",
            ["model_version", "role"], registry=registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "fraudstream_scoring_in_flight", "Scoring requests being served", registry=registry
        )
        self.reload_failures = Counter(
            "fraudstream_scoring_reload_failures", "Registry versions refused, never served: "
            "inputs other than the serving feature list, or not loadable", ["reason"],
            registry=registry,
        )  # fmt: skip
        for reason in RELOAD_FAILURES:
            self.reload_failures.labels(reason)
        self.current_refused = Gauge(
            "fraudstream_scoring_current_refused", "1 while the registry's CURRENT names a "
            "version this service refused, or cannot be read: it serves the one it had",
            registry=registry,
        )  # fmt: skip
        self.reloads = Counter(
            "fraudstream_scoring_reloads", "Model swaps after the registry changed",
            registry=registry,
        )  # fmt: skip
        self.scores = ScoreDistribution(
            "fraudstream_scoring_score", "Distribution of returned scores", SCORE_BUCKETS
        )
        registry.register(self.scores)
