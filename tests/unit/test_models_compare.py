"""``models compare`` on a small hand-made ledger in a real lake (Parquet, DuckDB): every figure
equals the one computed by hand, the ledger keeps only decisions with known outcomes and a
feature row, the bootstrap's intervals say when a version wins and when neither does, and a
version that never saw a decision is scored from its recorded features as the service would."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.features.definitions import FEATURE_NAMES
from models.lake import tables as lk
from models.training.registry import Registry
from models.training.trainer import scores_for
from services.core.contract import Decision, LabelRecord
from stream_jobs import backtest as bt
from stream_jobs import compare
from stream_jobs.compare_report import render
from stream_jobs.strategy import Thresholds

DAY_MS = bt.DAY_MS
DAY1 = 1_772_323_200_000  # 2026-03-01
SHIPPED = Path(__file__).resolve().parents[2] / "models" / "registry"
# id, day, score of A (decided), score of B (shadow), amount, label (None: none), decision,
# with a feature row
Row = tuple[str, int, float, float, float, str | None, str, bool]
ROWS: list[Row] = [
    ("t1", 0, 0.9, 0.2, 100.0, "fraud", "review", True),
    ("t2", 0, 0.8, 0.65, 50.0, "legit", "review", True),
    ("t3", 0, 0.1, 0.7, 200.0, "fraud", "approve", True),  # a chargeback on an approval
    ("t4", 1, 0.3, 0.6, 40.0, "fraud", "approve", True),
    ("t5", 1, 0.6, 0.1, 10.0, "legit", "review", True),
    ("t6", 1, 0.2, 0.3, 20.0, None, "approve", True),  # matured: legit
    ("t7", 1, 0.95, 0.9, 30.0, None, "decline", True),  # declined, unlabelled: unknown
    ("t8", 3, 0.5, 0.5, 30.0, None, "approve", True),  # too recent: unknown
    ("t9", 1, 0.4, 0.4, 30.0, "legit", "approve", False),  # decided before the ledger
]
AS_OF = DAY1 + 4 * DAY_MS
MATURITY_DAYS = 2.0  # as of AS_OF: day 1 (t6) has matured, day 3 (t8) has not
THRESHOLDS = Thresholds(daily_alert_budget=1, review_cost_usd=5.0, loss_share=1.0)
WINDOW = bt.Range(DAY1, DAY1 + 4 * DAY_MS)


def _registry(root: Path) -> Registry:
    """v0001 as shipped (with its ONNX model); v0002 and v0003 uncalibrated, without one."""
    shutil.copytree(SHIPPED, root)
    for version in ("v0002", "v0003"):
        (root / "versions" / version).mkdir()
        meta = {"version": version, "feature_names": list(FEATURE_NAMES)}
        (root / "versions" / version / "metadata.json").write_text(json.dumps(meta))
    return Registry(root)


def _features(amount: float) -> dict[str, float | None]:
    row: dict[str, float | None] = dict.fromkeys(FEATURE_NAMES, 1.0)
    row["amount_usd"] = amount
    return row


def _ledger(lake_dir: Path, rows: list[Row]) -> None:
    lake = lk.Lake(lake_dir)
    decisions: list[lk.Sourced] = []
    labels: list[lk.Sourced] = []
    for i, (tx, day, a, b, amount, label, outcome, with_row) in enumerate(rows):
        at = DAY1 + day * DAY_MS + i * 60_000
        decision = Decision(
            transaction_id=tx, card_id=f"card-{i}", event_time=at, decided_at=at + 30,
            score=a, decision=outcome, reasons=[], model_version="v0002",  # type: ignore[arg-type]
            shadow_model_version="v0003", shadow_score=b,
            features=_features(amount) if with_row else {},
        )  # fmt: skip
        decisions.append(lk.Sourced("decisions", 0, i, lk.decision_row(decision)))
        if label is not None:
            record = LabelRecord(transaction_id=tx, label=label, analyst="ana",  # type: ignore[arg-type]
                                 labelled_at=at + DAY_MS, event_time=at, card_id=f"card-{i}",
                                 customer_id="c", merchant_id="m")  # fmt: skip
            labels.append(lk.Sourced("labels", 0, len(labels), lk.label_row(record)))
    lake.append("decisions", decisions)
    lake.append("labels", labels)


def test_the_figures_equal_those_computed_by_hand(tmp_path: Path) -> None:
    registry = _registry(tmp_path / "registry")
    _ledger(tmp_path / "lake", ROWS)
    result = compare.report(registry, "v0002", "v0003", tmp_path / "lake", WINDOW, THRESHOLDS,
                            MATURITY_DAYS, bootstrap=50, as_of_ms=AS_OF)  # fmt: skip

    assert result["ledger"] == {
        "fraud": 3, "legit": 3, "assumed_legit": 1, "unknown_immature": 1,
        "unknown_declined": 1, "unknown_share": pytest.approx(2 / 9), "decisions": 9,
        "without_feature_row": 1, "judged": 6,
    }  # fmt: skip
    assert result["sources"]["a"] == {"recorded": 6, "shadow": 0, "rescored": 0, "unscorable": 0}
    assert result["sources"]["b"] == {"recorded": 0, "shadow": 6, "rescored": 0, "unscorable": 0}
    assert (result["rows"], result["fraud"]) == (6, 3)
    # A ranks t1 F, t2 L, t5 L, t4 F, t6 L, t3 F: 1/3 + (2/4)/3 + (3/6)/3.
    # B ranks t3 F, t2 L, t4 F, t6 L, t1 F, t5 L: 1/3 + (2/3)/3 + (3/5)/3.
    expected = {
        "pr_auc": (2 / 3, 34 / 45),
        "recall_at_budget": (1 / 3, 2 / 3),  # each day's top score: A t1, t5; B t3, t4
        # A reviews t1 (90 USD at stake) and t4 (12), misses t3's 200; B reviews t3 (140) and
        # t4 (24), misses t1's 100; two reviews at 5 USD each
        "cost_usd": (210.0, 110.0),
        "ece": (3.3 / 6, 1.75 / 6),  # ten bins; B's 0.6 and 0.65 share one
        "brier": (2.35 / 6, 1.4125 / 6),
    }
    for name, (a, b) in expected.items():
        figure = result[name]
        assert figure["a"]["value"] == pytest.approx(a, abs=1e-6), name
        assert figure["b"]["value"] == pytest.approx(b, abs=1e-6), name
        assert figure["difference"]["value"] == pytest.approx(b - a, abs=1e-6), name
        low, high = figure["difference"]["ci95"]
        assert low <= high, name
    page = render(result)
    assert "v0002 against v0003" in page
    assert "data:image/png;base64," in page


def test_the_bootstrap_names_a_winner_only_when_the_interval_clears_zero(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 600
    fraud = rng.random(n) < 0.2
    good = np.clip(np.where(fraud, 0.7, 0.3) + rng.normal(0, 0.15, n), 0, 1)  # separates
    noise = rng.random(n)  # does not
    rows: list[Row] = [(f"t{i}", i % 5, float(noise[i]), float(good[i]), 50.0,
             "fraud" if fraud[i] else "legit", "approve", True) for i in range(n)]  # fmt: skip
    registry = _registry(tmp_path / "registry")
    _ledger(tmp_path / "lake", rows)
    book = compare.ledger(tmp_path / "lake", WINDOW, MATURITY_DAYS, AS_OF)
    a, b = (compare.scores(registry, v, book) for v in ("v0002", "v0003"))

    forward = compare.compare(book, a, b, THRESHOLDS, bootstrap=100)
    backward = compare.compare(book, b, a, THRESHOLDS, bootstrap=100)
    same = compare.compare(book, a, a, THRESHOLDS, bootstrap=100)

    assert compare.winner(forward, "v0002", "v0003") == "v0003"
    assert compare.winner(backward, "v0003", "v0002") == "v0003"
    assert compare.winner(same, "v0002", "v0002") is None  # the negative control
    assert same["pr_auc"]["difference"]["ci95"] == [0.0, 0.0]
    low, high = forward["pr_auc"]["b"]["ci95"]
    assert low < forward["pr_auc"]["b"]["value"] < high


def test_a_version_that_never_saw_a_decision_is_scored_from_its_feature_row(
    tmp_path: Path,
) -> None:
    registry = _registry(tmp_path / "registry")
    names = registry.metadata("v0001")["feature_names"]
    rng = np.random.default_rng(3)
    matrix = rng.uniform(0, 500, (12, len(names)))
    matrix[::4, names.index("amount_usd")] = np.nan  # a signal the event lacked: None
    served = scores_for(matrix.astype(np.float32), (registry.path("v0001") / "model.onnx")
                        .read_bytes())  # fmt: skip
    lake = lk.Lake(tmp_path / "lake")
    rows = []
    for i, values in enumerate(matrix):
        features = {n: None if v != v else float(v) for n, v in zip(names, values, strict=True)}
        decision = Decision(transaction_id=f"t{i}", card_id="c", event_time=DAY1 + i,
                            decided_at=DAY1 + i, score=float(served[i]), decision="approve",
                            reasons=[], model_version="v0001", features=features)  # fmt: skip
        rows.append(lk.Sourced("decisions", 0, i, lk.decision_row(decision)))
    lake.append("decisions", rows)
    book = compare.ledger(tmp_path / "lake", WINDOW, 0.0, AS_OF)  # every one matured: legit

    recorded = compare.scores(registry, "v0001", book)
    rescored = compare.scores(registry, "v0001", book, rescore=True)

    assert recorded.sources["recorded"] == 12
    assert rescored.sources["rescored"] == 12
    np.testing.assert_allclose(rescored.score, recorded.score, atol=1e-7)


def test_weighted_the_reviewed_decisions_stand_for_all_by_their_probability(
    tmp_path: Path,
) -> None:
    """Two flagged decisions (reviewed for certain) and two of the 10 % review sample (each
    stands for ten approvals); an approval outside the sample, even with a chargeback, and
    an unlabelled one are left out. A fraud at the bottom of the ranking that stands for ten
    weighs ten times as much: weighted PR-AUC 1/11 + (11/22)(10/11) = 6/11, against 3/4
    unweighted on the same four."""
    registry = _registry(tmp_path / "registry")
    lake = lk.Lake(tmp_path / "lake")
    rows = [  # id, score, outcome, in the sample, probability of review, label
        ("r1", 0.9, "review", False, 1.0, "fraud"),
        ("r2", 0.8, "review", False, 1.0, "legit"),
        ("r3", 0.2, "approve", True, 0.1, "legit"),
        ("r4", 0.1, "approve", True, 0.1, "fraud"),
        ("r5", 0.3, "approve", False, 0.1, "fraud"),  # a chargeback, outside the sample
        ("r6", 0.4, "approve", False, 0.1, None),
    ]
    decisions: list[lk.Sourced] = []
    labels: list[lk.Sourced] = []
    for i, (tx, score, outcome, sampled, probability, label) in enumerate(rows):
        decision = Decision(
            transaction_id=tx, card_id="c", event_time=DAY1 + i, decided_at=DAY1 + i,
            score=score, decision=outcome, model_version="v0002",  # type: ignore[arg-type]
            reasons=["sample:review"] if sampled else [], features=_features(10.0),
            shadow_model_version="v0003", shadow_score=score, review_probability=probability,
        )  # fmt: skip
        decisions.append(lk.Sourced("decisions", 0, i, lk.decision_row(decision)))
        if label is not None:
            record = LabelRecord(transaction_id=tx, label=label, analyst="ana",  # type: ignore[arg-type]
                                 labelled_at=DAY1 + DAY_MS, event_time=DAY1 + i, card_id="c",
                                 customer_id="c", merchant_id="m")  # fmt: skip
            labels.append(lk.Sourced("labels", 0, len(labels), lk.label_row(record)))
    lake.append("decisions", decisions)
    lake.append("labels", labels)

    def pr_auc(weighted: bool) -> tuple[float, dict[str, object]]:
        result = compare.report(registry, "v0002", "v0003", tmp_path / "lake", WINDOW,
                                THRESHOLDS, MATURITY_DAYS, bootstrap=10, as_of_ms=AS_OF,
                                weighted=weighted)  # fmt: skip
        return result["pr_auc"]["a"]["value"], result["ledger"]

    weighted, book = pr_auc(True)
    assert weighted == pytest.approx(6 / 11, abs=1e-6)
    assert (book["judged"], book["weighted_total"]) == (4, 22.0)
    unweighted, _ = pr_auc(False)
    assert unweighted != pytest.approx(6 / 11, abs=1e-3)  # the weights made the difference


def test_a_row_that_crosses_the_budget_counts_for_its_share() -> None:
    """A sampled fraud standing for 100 approvals, against a daily budget of 50: half of it
    is reviewed, not all (nor none); with unit weights the top row counts whole."""
    fraud = np.array([True, False])
    day = np.array([0, 0], np.int64)
    score = np.array([0.9, 0.1])
    assert compare.recall_at_budget(fraud, day, score, 50, np.array([100.0, 1.0])) == 0.5
    assert compare.recall_at_budget(fraud, day, score, 1, np.ones(2)) == 1.0
    assert compare.recall_at_budget(fraud, day, score[::-1], 1, np.ones(2)) == 0.0
