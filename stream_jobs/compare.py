"""Champion against challenger on outcomes: two model versions judged on the decision ledger.

The ledger is the lake's ``decisions`` table: every decision keeps its model's score, the
shadow model's score and the feature row it was decided with, and ``labels`` join onto it by
transaction id. A version's score for a decision is the one recorded (as the model in force or
as the shadow), or, for a version that never saw the decision, its ONNX score of the recorded
feature row, as the service would have computed it. Both versions are judged on the same
decisions: those with a known outcome (the backtest's rule: a label, or no label once older
than the maturity window; a decline without a label has none) and a recorded feature row.

Figures, each with a bootstrap 95 % interval (rows resampled with replacement, the same
resamples for both versions, so the difference's interval is paired):

- ``pr_auc``: average precision;
- ``recall_at_budget``: the share of fraud among each day's ``budget`` highest scores;
- ``cost_usd``: what the strategy's costs make of each day's reviews: the ``budget`` largest
  expected losses (calibrated probability x amount x loss share) that are worth a review cost,
  each a review cost, and every fraud not reviewed its amount x loss share;
- ``ece`` and ``brier``: the calibration of the probability the version gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, precision_recall_curve

from models.training.calibration import brier, calibrate, expected_calibration_error
from models.training.registry import Registry
from models.training.trainer import scores_for
from stream_jobs import backtest as bt
from stream_jobs.strategy import Thresholds

Floats = npt.NDArray[np.float64]
BOOTSTRAP: Final = 200
LEVEL: Final = 0.95
_SOURCES: Final = ("recorded", "shadow", "rescored")
CURVE_POINTS: Final = 101


@dataclass(frozen=True)
class Ledger:
    """A range's judgeable decisions, in event-time order."""

    transaction_id: list[str]
    day: npt.NDArray[np.int64]  # days since the epoch (UTC) of the event
    fraud: npt.NDArray[np.bool_]
    amount_usd: Floats
    model_version: list[str]
    score: Floats
    shadow_model_version: list[str]
    shadow_score: Floats  # NaN: no shadow scored it
    features: list[dict[str, float | None]]
    counts: dict[str, Any]


@dataclass(frozen=True)
class Scores:
    """One version's raw score and calibrated probability per ledger row (NaN: none), and
    where the scores came from."""

    version: str
    score: Floats
    probability: Floats
    sources: dict[str, int]


_features = msgspec.json.Decoder(dict[str, float | None]).decode


def ledger(
    lake: Path, window: bt.Range, maturity_days: float, as_of_ms: int | None = None
) -> Ledger:
    """The decisions of ``window`` with a known outcome and a feature row, from the lake."""
    from models.lake import tables as lk

    frame = (
        lk.connect(lk.Lake(lake))
        .execute(
            "SELECT d.transaction_id, d.event_time, d.decision, d.model_version, d.score, "
            "d.shadow_model_version, d.shadow_score, d.features, l.label "
            "FROM decisions d LEFT JOIN labels l USING (transaction_id) "
            "WHERE d.event_time >= ? AND d.event_time < ? ORDER BY d.event_time, d.transaction_id",
            [window.start_ms, window.end_ms],
        )
        .df()
    )
    if frame.empty:
        raise bt.BacktestError(f"{lake}: no decision in the range")
    labelled = frame["label"].notna().to_numpy()
    states = bt.label_states(
        labelled, (frame["decision"] == "decline").to_numpy(),
        frame["event_time"].to_numpy(np.int64), maturity_days, as_of_ms,
    )  # fmt: skip
    with_row = frame["features"].notna().to_numpy()
    kept = states.known & with_row
    chosen = frame[kept].reset_index(drop=True)
    if chosen.empty:
        raise bt.BacktestError(
            f"{lake}: no decision in the range has a known outcome and a feature row"
        )
    rows = [_features(text) for text in chosen["features"]]
    counts = {
        **states.counts(labelled & (frame["label"] == "fraud").to_numpy()),
        "decisions": len(frame),
        "without_feature_row": int((states.known & ~with_row).sum()),
        "judged": len(chosen),
    }
    return Ledger(
        transaction_id=chosen["transaction_id"].tolist(),
        day=chosen["event_time"].to_numpy(np.int64) // bt.DAY_MS,
        fraud=(chosen["label"] == "fraud").to_numpy(bool),
        amount_usd=np.array([row.get("amount_usd") or 0.0 for row in rows], np.float64),
        model_version=chosen["model_version"].fillna("").tolist(),
        score=chosen["score"].to_numpy(np.float64),
        shadow_model_version=chosen["shadow_model_version"].fillna("").tolist(),
        shadow_score=chosen["shadow_score"].to_numpy(np.float64, na_value=np.nan),
        features=rows,
        counts=counts,
    )


def scores(registry: Registry, version: str, book: Ledger, rescore: bool = False) -> Scores:
    """``version``'s scores of the ledger: recorded where it decided or shadowed a decision
    (unless ``rescore``), else from the recorded feature row."""
    meta = registry.metadata(version)
    score = np.full(len(book.fraud), np.nan)
    source = np.full(len(book.fraud), "", dtype=object)
    if not rescore:
        mine = np.array([v == version for v in book.model_version], bool)
        score[mine], source[mine] = book.score[mine], "recorded"
        shadowed = ~mine & np.array([v == version for v in book.shadow_model_version], bool)
        shadowed &= ~np.isnan(book.shadow_score)
        score[shadowed], source[shadowed] = book.shadow_score[shadowed], "shadow"
    names: list[str] = meta["feature_names"]
    missing = np.isnan(score)
    scorable = missing & np.array([all(n in row for n in names) for row in book.features], bool)
    if scorable.any():
        picked = [book.features[i] for i in np.flatnonzero(scorable)]
        matrix = np.array(
            [[np.nan if row[n] is None else row[n] for n in names] for row in picked], np.float32
        )
        onnx = (registry.path(version) / "model.onnx").read_bytes()
        score[scorable], source[scorable] = scores_for(matrix, onnx), "rescored"
    sources = {name: int((source == name).sum()) for name in _SOURCES}
    sources["unscorable"] = int(np.isnan(score).sum())
    return Scores(version, score, calibrate(score, meta.get("calibration")), sources)


def _top_per_day(day: npt.NDArray[np.int64], value: Floats, k: int) -> npt.NDArray[np.bool_]:
    """Each day's ``k`` largest values (ties by ledger order: deterministic)."""
    order = np.lexsort((-value, day))  # by day, then by value descending
    sorted_days = day[order]
    starts = np.searchsorted(sorted_days, sorted_days, side="left")
    rank = np.arange(len(order)) - starts
    chosen = np.zeros(len(day), bool)
    chosen[order[rank < k]] = True
    return chosen


def recall_at_budget(
    fraud: npt.NDArray[np.bool_], day: npt.NDArray[np.int64], score: Floats, budget: int
) -> float:
    caught = _top_per_day(day, score, budget) & fraud
    return float(caught.sum() / fraud.sum()) if fraud.any() else 0.0


def cost_usd(
    fraud: npt.NDArray[np.bool_],
    day: npt.NDArray[np.int64],
    probability: Floats,
    amount_usd: Floats,
    t: Thresholds,
) -> float:
    """Reviews at the budget by expected loss, and the fraud they leave, in dollars."""
    loss = probability * amount_usd * t.loss_share
    worth = loss >= t.review_cost_usd
    budget = t.daily_alert_budget or len(fraud)  # 0: no budget
    reviewed = worth & _top_per_day(day, np.where(worth, loss, -np.inf), budget)
    missed = fraud & ~reviewed
    return float(reviewed.sum() * t.review_cost_usd + (amount_usd[missed] * t.loss_share).sum())


def figures(
    fraud: npt.NDArray[np.bool_],
    day: npt.NDArray[np.int64],
    amount_usd: Floats,
    s: Scores | tuple[Floats, Floats],
    t: Thresholds,
) -> dict[str, float]:
    score, probability = (s.score, s.probability) if isinstance(s, Scores) else s
    both = fraud.any() and not fraud.all()
    return {
        "pr_auc": float(average_precision_score(fraud, score)) if both else float("nan"),
        "recall_at_budget": recall_at_budget(fraud, day, score, t.daily_alert_budget or len(day)),
        "cost_usd": cost_usd(fraud, day, probability, amount_usd, t),
        "ece": expected_calibration_error(probability, fraud),
        "brier": brier(probability, fraud),
    }


def _interval(values: list[float]) -> list[float]:
    finite = np.asarray([v for v in values if v == v], np.float64)
    if finite.size == 0:
        return [float("nan"), float("nan")]
    tail = (1 - LEVEL) / 2 * 100
    return [round(float(np.percentile(finite, tail)), 6),
            round(float(np.percentile(finite, 100 - tail)), 6)]  # fmt: skip


def compare(
    book: Ledger, a: Scores, b: Scores, t: Thresholds, bootstrap: int = BOOTSTRAP, seed: int = 0
) -> dict[str, Any]:
    """Both versions' figures (``a``, ``b``) on the rows both scored, their difference
    (B - A), and bootstrap intervals of each."""
    both = ~np.isnan(a.score) & ~np.isnan(b.score)
    if not both.any():
        raise bt.BacktestError("no decision in the range can be scored by both versions")
    fraud, day, amount = book.fraud[both], book.day[both], book.amount_usd[both]
    pairs = [(s.score[both], s.probability[both]) for s in (a, b)]

    def on(rows: npt.NDArray[np.int64]) -> tuple[dict[str, float], dict[str, float]]:
        fa, fb = (figures(fraud[rows], day[rows], amount[rows], (p[0][rows], p[1][rows]), t)
                  for p in pairs)  # fmt: skip
        return fa, fb

    everything = np.arange(int(both.sum()))
    point_a, point_b = on(everything)
    draws: dict[str, list[list[float]]] = {name: [[], [], []] for name in point_a}
    rng = np.random.default_rng(seed)
    for _ in range(bootstrap):
        fa, fb = on(np.sort(rng.integers(0, everything.size, everything.size)))
        for name, per in draws.items():
            per[0].append(fa[name])
            per[1].append(fb[name])
            per[2].append(fb[name] - fa[name])
    result: dict[str, Any] = {
        "rows": int(both.sum()),
        "fraud": int(fraud.sum()),
        "pr_curves": {"a": _curve(fraud, pairs[0][0]), "b": _curve(fraud, pairs[1][0])},
    }
    for name in point_a:
        result[name] = {
            "a": _figure(point_a[name], draws[name][0]),
            "b": _figure(point_b[name], draws[name][1]),
            "difference": _figure(point_b[name] - point_a[name], draws[name][2]),
        }
    return result


def _curve(fraud: npt.NDArray[np.bool_], score: Floats) -> dict[str, list[float]]:
    """Precision at evenly spaced recalls (the best precision reaching each), for a chart."""
    if not fraud.any():
        return {"recall": [], "precision": []}
    precision, recall, _ = precision_recall_curve(fraud, score)
    grid = np.linspace(0, 1, CURVE_POINTS)
    best = [float(precision[recall >= r].max()) for r in grid]
    return {"recall": grid.round(4).tolist(), "precision": np.round(best, 6).tolist()}


def _figure(value: float, draws: list[float]) -> dict[str, Any]:
    return {"value": round(value, 6) if value == value else None, "ci95": _interval(draws)}


def winner(result: dict[str, Any], a: str, b: str) -> str | None:
    """The version whose PR-AUC is higher with the difference's interval clear of zero."""
    low, high = result["pr_auc"]["difference"]["ci95"]
    return b if low > 0 else a if high < 0 else None


def report(
    registry: Registry,
    a: str,
    b: str,
    lake: Path,
    window: bt.Range,
    t: Thresholds,
    maturity_days: float,
    *,
    rescore: bool = False,
    bootstrap: int = BOOTSTRAP,
    as_of_ms: int | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """``compare`` from the lake, JSON-able: the figures, where the scores came from, the
    ledger's counts and the version that wins, if one does."""
    book = ledger(lake, window, maturity_days, as_of_ms)
    progress(f"{book.counts['judged']:,} decisions with known outcomes")
    sa, sb = (scores(registry, v, book, rescore) for v in (a, b))
    result = compare(book, sa, sb, t, bootstrap)
    return {
        "a": a,
        "b": b,
        "range": {"from": bt.day(window.start_ms), "to": bt.day(window.end_ms)},
        "maturity_days": maturity_days,
        "budget": t.daily_alert_budget,
        "bootstrap": bootstrap,
        "ledger": book.counts,
        "sources": {"a": sa.sources, "b": sb.sources},
        **result,
        "winner": winner(result, a, b),
    }
