"""The backtest's figures against a small case computed by hand from the generated rows, and
the CLI that prints them and writes the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.features.definitions import FEATURE_NAMES
from models.training.registry import DEFAULT_REGISTRY, Registry
from services.generator import GeneratorConfig, Labelled, generate
from stream_jobs import backtest as bt
from stream_jobs import strategy as st
from tests.unit.test_datasets import write_card_csv
from tests.unit.test_strategy import _LIMITS

DAY_MS = 86_400_000
CHALLENGER = """
version: 7
rules:
  - {id: over_hundred, when: "amount_usd > 100.0", outcome: review}
  - {id: over_five_hundred, when: "amount_usd > 500.0", outcome: decline, state: shadow}
thresholds: {mode: model}
"""


@pytest.fixture(scope="module")
def items() -> list[Labelled]:
    return list(generate(GeneratorConfig(seed=11, customers=400, fraud_rate=0.05), 8_000))


@pytest.fixture(scope="module")
def csv_file(items: list[Labelled], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_card_csv(tmp_path_factory.mktemp("bt") / "cards.csv", items)


def _window(items: list[Labelled]) -> bt.Range:
    last = max(i.transaction.event_time_ms for i in items)
    end = (last // DAY_MS + 1) * DAY_MS
    return bt.Range(end - 3 * DAY_MS, end)


def test_the_figures_equal_a_hand_computed_case(items: list[Labelled], csv_file: Path) -> None:
    registry = Registry(DEFAULT_REGISTRY)
    version = registry.current() or ""
    window = _window(items)
    data = bt.scored(registry, version, csv_file, window)
    challenger = st.parse(CHALLENGER)
    result = bt.report(
        data,
        window,
        [("challenger", challenger), ("shipped", st.default())],
        model_version=version,
        source=csv_file.name,
    )

    chosen = [i for i in items if window.start_ms <= i.transaction.event_time_ms < window.end_ms]
    assert result["data"]["events"] == len(chosen)
    assert result["data"]["history_events"] == len(items) - len(chosen)
    amounts = np.array([i.transaction.amount for i in chosen])  # USD: the CSV's currency
    fraud = np.array([i.is_fraud for i in chosen])
    times = np.array([i.transaction.event_time_ms for i in chosen])
    order = np.argsort(times, kind="stable")
    amounts, fraud = amounts[order], fraud[order]

    rules = {r["id"]: r for r in result["strategies"]["strategy"]["rules"]}
    over = amounts > 100.0
    assert rules["over_hundred"]["fires"] == over.sum() > 0
    assert rules["over_hundred"]["fraud_caught"] == (over & fraud).sum()
    assert rules["over_hundred"]["false_positives"] == (over & ~fraud).sum()
    assert rules["over_hundred"]["precision"] == pytest.approx((over & fraud).sum() / over.sum())
    assert rules["over_hundred"]["usd_flagged"] == pytest.approx(amounts[over].sum(), abs=0.05)
    shadow = amounts > 500.0
    assert rules["over_five_hundred"]["fires"] == shadow.sum() > 0  # counted, not acted on

    model = data.scores >= data.review_threshold
    assert rules["model"]["fires"] == model.sum()
    summary = result["strategies"]["strategy"]["summary"]
    flagged = over | model
    assert summary["alerts"] == flagged.sum()
    assert summary["fraud_caught"] == (flagged & fraud).sum()
    assert summary["recall"] == pytest.approx((flagged & fraud).sum() / fraud.sum())
    assert summary["declines"] == (data.scores >= data.decline_threshold).sum()
    per_day = result["strategies"]["strategy"]["alerts_per_day"]
    assert len(per_day) == 3
    assert sum(d["alerts"] for d in per_day) == summary["alerts"]
    assert sum(result["strategies"]["strategy"]["alerts_by_hour"]) * 3 == pytest.approx(
        summary["alerts"], rel=1e-3
    )

    column = {name: data.rows[:, i].astype(float) for i, name in enumerate(FEATURE_NAMES)}
    limits = np.array([_LIMITS.get(m, 10_000.0) for m in data.frame["merchant_category"]])
    shipped = (
        (column["amount_usd"] > limits)
        | ((column["speed_from_prev_kmh"] > 1_000.0) & (column["distance_from_prev_km"] > 500.0))
        | (column["tiny_count_10m"] >= 5.0)
    )
    shipped_flagged = shipped | model
    comparison = result["comparison"]
    assert comparison["newly_flagged"]["count"] == (flagged & ~shipped_flagged).sum() > 0
    assert comparison["no_longer_flagged"]["count"] == (~flagged & shipped_flagged).sum()
    assert result["labels"]["unknown_share"] == 0.0  # a file's labels are final


def test_the_cli_prints_json_and_writes_the_report(
    items: list[Labelled], csv_file: Path, tmp_path: Path
) -> None:
    window = _window(items)
    strategy, html = tmp_path / "challenger.yaml", tmp_path / "report.html"
    strategy.write_text(CHALLENGER)
    day = bt.day
    done = _backtest(
        csv_file, "--from", day(window.start_ms), "--to", day(window.end_ms),
        "--strategy", str(strategy), "--against", "0", "--json", "--html", str(html),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["strategies"]["strategy"]["name"] == "challenger.yaml"
    assert result["strategies"]["against"]["name"] == "version 0 (shipped)"
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('<img src="data:image/png;base64,') >= 3
    refused = _backtest(csv_file, "--from", "2030-01-01", "--to", "2030-01-02",
                        "--strategy", str(strategy))  # fmt: skip
    assert refused.returncode == 1
    assert "no transaction in the range" in refused.stderr


def _backtest(data: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``fraudstream backtest --data DATA ARGV`` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "backtest", "--data", str(data), *argv],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
