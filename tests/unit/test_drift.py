"""PSI against a model's reference bins: zero for the same distribution, past the page
threshold for a planted shift, finite for an empty bin; the bins travel as plain JSON."""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as hs

from models.training import drift


def _sample(seed: int, n: int, shift: float = 0.0) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    return rng.lognormal(3.0 + shift, 1.0, n)


def test_identical_data_has_no_drift_and_a_planted_shift_pages() -> None:
    train = _sample(1, 50_000)
    ref = drift.reference(["amount_usd"], train[:, None], train / train.max())
    bins = ref["features"]["amount_usd"]
    assert len(bins["edges"]) == drift.BINS - 1
    assert bins["shares"] == pytest.approx([0.1] * 10 + [0.0], abs=1e-3)
    same = drift.psi(bins["shares"], drift.counts(bins["edges"], train))
    assert same == pytest.approx(0.0, abs=1e-9)
    fresh = drift.psi(bins["shares"], drift.counts(bins["edges"], _sample(2, 50_000)))
    assert fresh < 0.01  # another sample of the same law: noise only
    shifted = drift.psi(bins["shares"], drift.counts(bins["edges"], _sample(3, 50_000, 0.5)))
    assert shifted > drift.PAGE  # amounts up by e^0.5 (x1.65): it moved
    small = drift.psi(bins["shares"], drift.counts(bins["edges"], _sample(4, 50_000, 0.1)))
    assert drift.WARN > small > 0.01  # a nudge is seen, and stays below the warning


def test_missing_values_have_their_own_bin_and_few_distinct_values_fewer_bins() -> None:
    flags = np.array([0.0] * 900 + [1.0] * 100 + [np.nan] * 250)
    cut = drift.edges(flags)
    assert cut == [0.0]  # two values: two bins, not ten
    assert drift.counts(cut, flags).tolist() == [900, 100, 250]
    assert drift.edges(np.array([np.nan, np.nan])) == []
    assert drift.counts([], np.array([np.nan, 3.0])).tolist() == [1, 1]


def test_an_empty_bin_is_a_large_finite_term_and_no_data_no_drift() -> None:
    shares = [0.5, 0.5, 0.0]
    assert np.isfinite(drift.psi(shares, [0, 100, 0]))
    assert drift.psi(shares, [0, 100, 0]) > drift.PAGE
    assert drift.psi(shares, [0, 0, 0]) == 0.0
    with pytest.raises(ValueError, match="2 counts for 3 reference bins"):
        drift.psi(shares, [1, 2])


def test_the_reference_is_json_and_drift_reads_it_back() -> None:
    x = np.column_stack([_sample(5, 5_000), _sample(6, 5_000)])
    ref = json.loads(json.dumps(drift.reference(["a", "b"], x, np.linspace(0, 1, 5_000))))
    found = drift.drift(ref, {"a": x[:, 0], "b": _sample(7, 5_000, 1.0), "unknown": x[:, 0]})
    assert set(found) == {"a", "b"}
    assert found["a"] == pytest.approx(0.0, abs=1e-9)
    assert found["b"] > drift.PAGE


@given(hs.lists(hs.floats(-1e6, 1e6), min_size=1, max_size=300))
def test_every_value_lands_in_exactly_one_bin(values: list[float]) -> None:
    data = np.array(values)
    cut = drift.edges(data)
    seen = drift.counts(cut, data)
    assert seen.sum() == len(values)
    assert seen.size == len(cut) + 2


def test_the_scoring_service_counts_rows_into_the_versions_bins() -> None:
    """The counters Prometheus computes PSI from: rows per bin of each feature and of the
    score, summed over batches, with the reference shares beside them; a version without a
    reference counts nothing."""
    from prometheus_client import CollectorRegistry

    from services.scoring.server.metrics import ScoringMetrics

    registry = CollectorRegistry()
    metrics = ScoringMetrics(registry)
    train = _sample(8, 10_000)
    ref = drift.reference(["amount_usd"], train[:, None], np.linspace(0, 1, 10_000))
    rows = np.array([[1.0], [np.nan], [1e9]], np.float32)
    for _ in range(2):
        metrics.drift.observe("v0002", ref, ["amount_usd"], rows, np.array([0.0, 0.5, 1.0]))
    metrics.drift.observe("v0001", None, ["amount_usd"], rows, np.array([0.0, 0.5, 1.0]))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"model_version": "v0002", **labels})

    rows_total = "fraudstream_scoring_drift_rows_total"
    assert value(rows_total, feature="amount_usd", bin="0") == 2  # 1.0: the lowest decile
    assert value(rows_total, feature="amount_usd", bin="9") == 2  # 1e9: the highest
    assert value(rows_total, feature="amount_usd", bin="missing") == 2
    assert value(rows_total, feature="score", bin="0") == 2
    share = value("fraudstream_scoring_drift_reference_share", feature="amount_usd", bin="3")
    assert share == pytest.approx(0.1, abs=1e-3)
    assert registry.get_sample_value(
        rows_total, {"model_version": "v0001", "feature": "amount_usd", "bin": "0"}
    ) is None  # fmt: skip


@given(hs.lists(hs.tuples(hs.floats(-50, 150) | hs.just(float("nan")),
                          hs.floats(0, 1)), min_size=1, max_size=200))  # fmt: skip
def test_the_services_one_pass_count_equals_the_offline_count(
    rows: list[tuple[float, float]],
) -> None:
    """The scoring service counts a batch in one comparison pass; the lake and the model card
    with ``drift.counts`` column by column: the same bins, whatever the values."""
    from services.scoring.server.metrics import _Layout

    train = np.column_stack([np.arange(100.0), np.repeat([0.0, 1.0], 50)])
    ref = drift.reference(["a", "flag"], train, np.linspace(0, 1, 100))
    layout = _Layout.of(ref, ["a", "flag"])
    batch = np.array([[v, v > 50, s] for v, s in rows], np.float64)
    batch[np.isnan(batch[:, 0]), 1] = np.nan
    counted = layout.count(batch)
    for column, name in enumerate(layout.names):
        bins = ref["features"][name]
        expected = drift.counts(bins["edges"], batch[:, column])
        assert counted[column, : expected.size].tolist() == expected.tolist()
        assert counted[column, expected.size :].sum() == 0
