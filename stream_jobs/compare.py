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
- ``recall_at_budget``: the share of the fraud that is among its day's ``budget`` highest
  scores;
- ``cost_usd``: what the strategy's costs make of each day's reviews: the ``budget`` largest
  expected losses (calibrated probability x amount x loss share) that are worth a review cost,
  each a review cost, and every fraud not reviewed its amount x loss share;
- ``ece`` and ``brier``: the calibration of the probability the version gives.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import duckdb
import msgspec
import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve

from models.training.calibration import brier, calibrate, expected_calibration_error
from models.training.registry import Registry
from models.training.trainer import scores_for
from stream_jobs import backtest as bt
from stream_jobs.rules import REVIEW_SAMPLE
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
    features: list[str]  # each row's JSON text, decoded only where a version is re-scored
    weight: Floats  # 1, or with ``weighted`` the inverse of the probability of review
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


def _decisions(connection: Any, window: bt.Range) -> pd.DataFrame:
    """The range's decisions with their latest label; the amount read out of the feature
    row in SQL, so that rows scored already are never decoded."""
    return connection.execute(
        "SELECT d.transaction_id, d.event_time, d.decision, d.model_version, d.score, "
        "d.shadow_model_version, d.shadow_score, d.features, d.review_probability, "
        "TRY_CAST(json_extract(TRY_CAST(d.features AS JSON), '$.amount_usd') AS DOUBLE) "
        "AS amount_usd, "
        f"list_contains(d.reasons, '{REVIEW_SAMPLE}') AS sampled, l.label "
        "FROM decisions d LEFT JOIN labels l USING (transaction_id) "
        "WHERE d.event_time >= ? AND d.event_time < ? ORDER BY d.event_time, d.transaction_id",
        [window.start_ms, window.end_ms],
    ).df()


def ledger(
    lake: Path,
    window: bt.Range,
    maturity_days: float,
    as_of_ms: int | None = None,
    weighted: bool = False,
) -> Ledger:
    """The decisions of ``window`` with a known outcome and a feature row, from the lake.
    ``weighted``: only the reviewed decisions (flagged, or in the random review sample) with
    an analyst's label, each weighted by the inverse of its probability of review, so that
    they stand for every decision (inverse-propensity weighting)."""
    from models.lake import tables as lk

    try:
        frame = _decisions(lk.connect(lk.Lake(lake)), window)
    except duckdb.BinderException:  # files of every table, none with the ledger's columns
        raise bt.BacktestError(
            f"{lake}: its decisions predate the decision ledger (no "
            "feature rows): judge a range decided since"
        ) from None
    except duckdb.CatalogException:
        raise bt.BacktestError(f"{lake}: no decisions table") from None
    if frame.empty:
        raise bt.BacktestError(f"{lake}: no decision in the range")
    labelled = frame["label"].notna().to_numpy()
    states = bt.label_states(
        labelled, (frame["decision"] == "decline").to_numpy(),
        frame["event_time"].to_numpy(np.int64), maturity_days, as_of_ms,
    )  # fmt: skip
    with_row = frame["features"].notna().to_numpy()
    probability = frame["review_probability"].to_numpy(np.float64, na_value=np.nan)
    if weighted:
        reviewed = (frame["decision"] != "approve").to_numpy() | frame["sampled"].fillna(
            False
        ).to_numpy(bool)
        kept = reviewed & labelled & with_row & (probability > 0)
    else:
        kept = states.known & with_row
    chosen = frame[kept].reset_index(drop=True)
    if chosen.empty:
        raise bt.BacktestError(f"{lake}: no decision in the range has a known outcome and a "
                               f"feature row{' and was reviewed' if weighted else ''}")  # fmt: skip
    counts = {
        **states.counts(labelled & (frame["label"] == "fraud").to_numpy()),
        "decisions": len(frame),
        "without_feature_row": int((states.known & ~with_row).sum()),
        "judged": len(chosen),
    }
    weight = 1 / probability[kept] if weighted else np.ones(len(chosen))
    if weighted:
        counts["weighted_total"] = round(float(weight.sum()), 1)  # the decisions they stand for
    return Ledger(
        transaction_id=chosen["transaction_id"].tolist(),
        day=chosen["event_time"].to_numpy(np.int64) // bt.DAY_MS,
        fraud=(chosen["label"] == "fraud").to_numpy(bool),
        amount_usd=chosen["amount_usd"].fillna(0.0).to_numpy(np.float64),
        model_version=chosen["model_version"].fillna("").tolist(),
        score=chosen["score"].to_numpy(np.float64),
        shadow_model_version=chosen["shadow_model_version"].fillna("").tolist(),
        shadow_score=chosen["shadow_score"].to_numpy(np.float64, na_value=np.nan),
        features=chosen["features"].tolist(),
        weight=weight,
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
    missing = np.flatnonzero(np.isnan(score))
    decoded = {i: _features(book.features[i]) for i in missing}
    scorable = np.zeros(len(score), bool)
    scorable[[i for i, row in decoded.items() if all(n in row for n in names)]] = True
    if scorable.any():
        picked = [decoded[i] for i in np.flatnonzero(scorable)]
        matrix = np.array(
            [[np.nan if row[n] is None else row[n] for n in names] for row in picked], np.float32
        )
        onnx = (registry.path(version) / "model.onnx").read_bytes()
        score[scorable], source[scorable] = scores_for(matrix, onnx), "rescored"
    sources = {name: int((source == name).sum()) for name in _SOURCES}
    sources["unscorable"] = int(np.isnan(score).sum())
    return Scores(version, score, calibrate(score, meta.get("calibration")), sources)


def _top_per_day(day: npt.NDArray[np.int64], value: Floats, k: float, weight: Floats) -> Floats:
    """How much of each row is among its day's ``k`` largest values, each row counting its
    weight (one, or the decisions it stands for): 1 or 0, and a fraction for the row that
    crosses ``k``. Ties by ledger order: deterministic."""
    order = np.lexsort((-value, day))  # by day, then by value descending
    w = weight[order]
    total = np.cumsum(w)
    starts = np.searchsorted(day[order], day[order], side="left")
    before = total - w - (total[starts] - w[starts])  # the weight ranked above, in its day
    share = np.zeros(len(day))
    share[order] = np.clip((k - before) / np.where(w > 0, w, 1.0), 0.0, 1.0)
    return share


def recall_at_budget(
    fraud: npt.NDArray[np.bool_],
    day: npt.NDArray[np.int64],
    score: Floats,
    budget: float,
    weight: Floats,
) -> float:
    caught = _top_per_day(day, score, budget, weight) * weight * fraud
    return float(caught.sum() / weight[fraud].sum()) if fraud.any() else 0.0


def cost_usd(
    fraud: npt.NDArray[np.bool_],
    day: npt.NDArray[np.int64],
    probability: Floats,
    amount_usd: Floats,
    t: Thresholds,
    weight: Floats,
) -> float:
    """Reviews at the budget by expected loss, and the fraud they leave, in dollars."""
    loss = probability * amount_usd * t.loss_share
    worth = loss >= t.review_cost_usd
    budget = t.daily_alert_budget or float(weight.sum())  # 0: no budget
    reviewed = worth * _top_per_day(day, np.where(worth, loss, -np.inf), budget, weight)
    missed = fraud * (1.0 - reviewed)  # a share, for the row that crosses the budget
    return float((weight * reviewed).sum() * t.review_cost_usd
                 + (weight * missed * amount_usd).sum() * t.loss_share)  # fmt: skip


def figures(
    fraud: npt.NDArray[np.bool_],
    day: npt.NDArray[np.int64],
    amount_usd: Floats,
    scored: tuple[Floats, Floats],
    t: Thresholds,
    weight: Floats,
) -> dict[str, float]:
    score, probability = scored
    both = fraud.any() and not fraud.all()
    budget = t.daily_alert_budget or float(weight.sum())
    pr_auc = average_precision_score(fraud, score, sample_weight=weight) if both else math.nan
    return {
        "pr_auc": float(pr_auc),
        "recall_at_budget": recall_at_budget(fraud, day, score, budget, weight),
        "cost_usd": cost_usd(fraud, day, probability, amount_usd, t, weight),
        "ece": expected_calibration_error(probability, fraud, weights=weight),
        "brier": brier(probability, fraud, weight),
    }


def _interval(values: list[float]) -> list[float | None]:
    finite = np.asarray([v for v in values if v == v], np.float64)
    if finite.size == 0:
        return [None, None]  # no resample had both classes (or none was drawn)
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
    weight = book.weight[both]
    pairs = [(s.score[both], s.probability[both]) for s in (a, b)]

    def on(rows: npt.NDArray[np.int64]) -> tuple[dict[str, float], dict[str, float]]:
        fa, fb = (figures(fraud[rows], day[rows], amount[rows], (p[0][rows], p[1][rows]), t,
                          weight[rows]) for p in pairs)  # fmt: skip
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
        "pr_curves": {
            "a": _curve(fraud, pairs[0][0], weight),
            "b": _curve(fraud, pairs[1][0], weight),
        },
    }
    for name in point_a:
        result[name] = {
            "a": _figure(point_a[name], draws[name][0]),
            "b": _figure(point_b[name], draws[name][1]),
            "difference": _figure(point_b[name] - point_a[name], draws[name][2]),
        }
    return result


def _curve(fraud: npt.NDArray[np.bool_], score: Floats, weight: Floats) -> dict[str, list[float]]:
    """Precision at evenly spaced recalls (the best precision reaching each), for a chart."""
    if not fraud.any():
        return {"recall": [], "precision": []}
    precision, recall, _ = precision_recall_curve(fraud, score, sample_weight=weight)
    grid = np.linspace(0, 1, CURVE_POINTS)
    best = [float(precision[recall >= r].max()) for r in grid]
    return {"recall": grid.round(4).tolist(), "precision": np.round(best, 6).tolist()}


def _figure(value: float, draws: list[float]) -> dict[str, Any]:
    return {"value": round(value, 6) if value == value else None, "ci95": _interval(draws)}


def winner(result: dict[str, Any], a: str, b: str) -> str | None:
    """The version whose PR-AUC is higher with the difference's interval clear of zero."""
    low, high = result["pr_auc"]["difference"]["ci95"]
    if low is None or high is None:
        return None
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
    weighted: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """``compare`` from the lake, JSON-able: the figures, where the scores came from, the
    ledger's counts and the version that wins, if one does."""
    book = ledger(lake, window, maturity_days, as_of_ms, weighted)
    progress(f"{book.counts['judged']:,} decisions with known outcomes")
    sa, sb = (scores(registry, v, book, rescore) for v in (a, b))
    result = compare(book, sa, sb, t, bootstrap)
    return {
        "a": a,
        "b": b,
        "range": {"from": bt.day(window.start_ms), "to": bt.day(window.end_ms)},
        "maturity_days": maturity_days,
        "weighted": weighted,
        "budget": t.daily_alert_budget,
        "bootstrap": bootstrap,
        "ledger": book.counts,
        "sources": {"a": sa.sources, "b": sb.sources},
        **result,
        "winner": winner(result, a, b),
    }
