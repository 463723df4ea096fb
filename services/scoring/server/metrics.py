"""Every Prometheus metric of the project, defined once, on a registry passed in.

Components build their metrics object on their own ``CollectorRegistry`` (tests use a fresh
one), so nothing is registered globally at import time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from models.training import drift

ERROR_TYPES = ("unauthorized", "overloaded", "disconnected", "too_large", "invalid",
               "malformed", "not_ready")  # fmt: skip
RELOAD_FAILURES = ("incompatible_inputs", "load_error", "registry_error", "shadow_refused")
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


@dataclass(frozen=True)
class _Layout:
    """A version's bins laid out for one pass over a batch: the counted columns' edges,
    padded with +inf to one width, and each column's number of bins (its last: missing)."""

    names: tuple[str, ...]  # counted columns: features in matrix order, then "score"
    columns: npt.NDArray[np.intp]  # their positions in the batch with its scores appended
    edges: npt.NDArray[np.float64]  # (columns, width)
    sizes: npt.NDArray[np.intp]  # bins per column, the missing one included
    shares: tuple[tuple[float, ...], ...]

    @classmethod
    def of(cls, reference: Mapping[str, Any], features: Sequence[str]) -> _Layout:
        bins = reference["features"]
        chosen = [(i, n) for i, n in enumerate([*features, "score"])
                  if n in bins and n not in drift.CYCLIC]  # fmt: skip
        width = max((len(bins[n]["edges"]) for _, n in chosen), default=0)
        edges = np.full((len(chosen), width), np.inf)
        for row, (_, name) in enumerate(chosen):
            edges[row, : len(bins[name]["edges"])] = bins[name]["edges"]
        return cls(
            names=tuple(n for _, n in chosen),
            columns=np.array([i for i, _ in chosen], np.intp),
            edges=edges,
            sizes=np.array([len(bins[n]["edges"]) + 2 for _, n in chosen], np.intp),
            shares=tuple(tuple(bins[n]["shares"]) for _, n in chosen),
        )

    def count(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """Rows per bin of each column (columns x (width + 2)) of a batch (rows x columns):
        a value's bin is the number of edges below it (``drift.counts``), NaN the last."""
        below = np.zeros(values.shape, np.intp)
        for cut in self.edges.T:  # one comparison per decile: a dozen passes, not rows x cuts
            below += values > cut
        index = np.where(np.isnan(values), self.sizes - 1, below)
        stride = self.edges.shape[1] + 2
        flat = (index + np.arange(len(self.names)) * stride).ravel()
        counted = np.bincount(flat, minlength=len(self.names) * stride)
        return counted.reshape(len(self.names), stride).astype(np.int64)


class DriftBins(Collector):
    """Rows per reference bin of each feature and of the score, counted a whole batch at a
    time (one comparison pass and one ``bincount``), with the version's reference shares
    beside them: Prometheus computes PSI from the two (``monitoring/rules.yml``). Versions
    trained before references were kept are not counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._layouts: dict[str, _Layout] = {}
        self._counts: dict[str, npt.NDArray[np.int64]] = {}

    def prepare(
        self, version: str, reference: Mapping[str, Any] | None, names: Sequence[str]
    ) -> _Layout | None:
        """The version's bins, exported at zero from its load on: an increase over a window
        then counts the first rows too (a series first seen already counting would not)."""
        if reference is None:
            return None
        layout = self._layouts.get(version)
        if layout is None:
            layout = _Layout.of(reference, names)
            zero = np.zeros((len(layout.names), layout.edges.shape[1] + 2), np.int64)
            with self._lock:
                self._layouts[version] = layout
                self._counts.setdefault(version, zero)
        return layout

    def observe(
        self, version: str, reference: Mapping[str, Any] | None, names: Sequence[str],
        rows: npt.NDArray[np.float32], scores: npt.NDArray[np.float64],
    ) -> None:  # fmt: skip
        layout = self.prepare(version, reference, names)
        if layout is None:
            return
        batch = np.column_stack([rows.astype(np.float64), scores])[:, layout.columns]
        counted = layout.count(batch)
        with self._lock:
            self._counts[version] = self._counts.get(version, 0) + counted

    def collect(self) -> Iterator[Metric]:
        rows = CounterMetricFamily("fraudstream_scoring_drift_rows", "Rows scored per "
                                   "reference bin of a feature or of the score",
                                   labels=["model_version", "feature", "bin"])  # fmt: skip
        shares = GaugeMetricFamily("fraudstream_scoring_drift_reference_share", "The share of "
                                   "the version's training rows in each bin",
                                   labels=["model_version", "feature", "bin"])  # fmt: skip
        with self._lock:
            counted, layouts = dict(self._counts), dict(self._layouts)
        for version, layout in layouts.items():
            for row, name in enumerate(layout.names):
                size = int(layout.sizes[row])
                for index in range(size):
                    label = [version, name, _bin(index, size)]
                    if version in counted:
                        rows.add_metric(label, int(counted[version][row, index]))
                    if index < len(layout.shares[row]):
                        shares.add_metric(label, layout.shares[row][index])
        yield rows
        yield shares


def _bin(index: int, size: int) -> str:
    """A bin's label: its number, the last one "missing"."""
    return "missing" if index == size - 1 else str(index)


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
            "inputs other than the serving feature list, or not loadable (shadow_refused: the "
            "registry's SHADOW)", ["reason"],
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
        self.drift = DriftBins()
        registry.register(self.drift)
