"""What-if: a range of past transactions decided again by a model version and one or two
strategies, with what each rule and the whole strategy would have flagged and caught.

Features are the offline fold's (parity-tested with the job's), over the range with up to
``HISTORY_DAYS`` (38) of history before it in place; scores are ONNX Runtime's, as the service
computes them, made probabilities by the version's calibration. Rules, tables and thresholds
are evaluated by the job's own code (``stream_jobs.strategy``, ``stream_jobs.thresholds``),
in event-time order (the alert budget's bar moves with the stream, as in the job). Lists and
blocklists are run-time state: a backtest does not replay them.

Labels: a file's labels are final (the producer's file says so). In the lake, a transaction
with a disposition has its label; one without is legit once older than the label-maturity
window, unknown before; one the job declined has no outcome (a decline hides whether it was
fraud), unless an analyst labelled it. Precision and recall count known labels only, and the
report always gives the share unknown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.features import definitions as f
from models.features import offline
from models.features.offline import attribute_column
from models.training import datasets
from models.training.calibration import calibrate
from models.training.registry import Registry
from models.training.trainer import scores_for
from services.core.signals import Signals
from stream_jobs import rules, thresholds
from stream_jobs import strategy as st

HISTORY_DAYS: Final = max(f.MERCHANT_DAYS) + f.MERCHANT_DELAY_DAYS + 1  # the farthest reach
"""Of the offline fold (a merchant's 30 days end a week back): the range's first day then has
the features the job had."""
DAY_MS: Final = 86_400_000
CURVE_POINTS: Final = 40
HISTOGRAM_BINS: Final = 20
_AMOUNT_USD: Final = f.FEATURE_NAMES.index("amount_usd")


class BacktestError(ValueError):
    """The backtest cannot run: the message says why."""


@dataclass(frozen=True)
class Range:
    start_ms: int
    end_ms: int  # exclusive

    @property
    def days(self) -> float:
        return (self.end_ms - self.start_ms) / DAY_MS


@dataclass(frozen=True)
class Labels:
    """Per row: fraud (bool) and whether the outcome is known."""

    fraud: npt.NDArray[np.bool_]
    known: npt.NDArray[np.bool_]
    counts: dict[str, Any]


@dataclass(frozen=True)
class Scored:
    """The range's rows, their features, scores and labels, in event-time order."""

    frame: pd.DataFrame
    rows: npt.NDArray[np.float64]
    scores: npt.NDArray[np.float64]
    probabilities: npt.NDArray[np.float64]
    labels: Labels
    signals: Signals
    history_events: int
    review_threshold: float
    decline_threshold: float


class _Tx:
    """A row as the rules read a transaction (its fields and attributes)."""

    __slots__ = ("attributes", *st.TRANSACTION_FIELDS)

    def __init__(self, values: dict[str, Any]) -> None:
        for name in self.__slots__:
            setattr(self, name, values.get(name))


def scored(
    registry: Registry,
    version: str,
    data: Path,
    window: Range,
    mapping: Path | None = None,
    maturity_days: float = 60.0,
    as_of_ms: int | None = None,
    labelled: bool = True,
) -> Scored:
    """Load ``data`` (a file or a lake), compute features with history, score the range
    (``labelled``: the data must hold both classes)."""
    meta = registry.metadata(version)
    signals = Signals.model_validate(meta.get("signals", {}))
    dataset = datasets.load(data, mapping, signals, labelled)
    if dataset.kind != "transactions":
        raise BacktestError(f"{dataset.source}: a backtest needs transactions with their cards")
    times = dataset.frame["event_time"].to_numpy()
    kept = (times >= window.start_ms - HISTORY_DAYS * DAY_MS) & (times < window.end_ms)
    frame = dataset.frame[kept].sort_values("event_time", kind="stable").reset_index(drop=True)
    in_range = frame["event_time"].to_numpy() >= window.start_ms
    if not in_range.any():
        raise BacktestError(f"{dataset.source}: no transaction in the range")
    if list(dataset.feature_names) != meta["feature_names"]:
        raise BacktestError(f"{version} expects other features than {dataset.source} gives")
    x = offline.compute(frame, signals).to_numpy(np.float64)  # as the job's rules read them
    onnx = (registry.path(version) / "model.onnx").read_bytes()
    scores = scores_for(x[in_range].astype(np.float32), onnx)  # as the model reads them
    chosen = frame[in_range].reset_index(drop=True)
    lake = data if data.is_dir() else None
    labels = _labels(chosen, lake, maturity_days, as_of_ms)
    return Scored(
        chosen,
        x[in_range],
        scores,
        calibrate(scores, meta.get("calibration")),
        labels,
        signals,
        int((~in_range).sum()),
        float(meta["thresholds"]["review"]),
        float(meta["thresholds"]["decline"]),
    )


@dataclass(frozen=True)
class LabelStates:
    """Per row, by the lake's rule: labelled, assumed legit (unlabelled past the maturity
    window), unknown because immature, or unknown because declined (a decline hides whether
    it was fraud)."""

    labelled: npt.NDArray[np.bool_]
    assumed: npt.NDArray[np.bool_]
    immature: npt.NDArray[np.bool_]
    declined: npt.NDArray[np.bool_]

    @property
    def known(self) -> npt.NDArray[np.bool_]:
        return self.labelled | self.assumed

    def counts(self, fraud: npt.NDArray[np.bool_]) -> dict[str, Any]:
        return {
            "fraud": int((fraud & self.labelled).sum()),
            "legit": int((~fraud & self.labelled).sum()),
            "assumed_legit": int(self.assumed.sum()),
            "unknown_immature": int(self.immature.sum()),
            "unknown_declined": int(self.declined.sum()),
            "unknown_share": float((~self.known).mean()),
        }


def label_states(
    labelled: npt.NDArray[np.bool_],
    declined: npt.NDArray[np.bool_],
    event_time: npt.NDArray[np.int64],
    maturity_days: float,
    as_of_ms: int | None = None,
) -> LabelStates:
    as_of = as_of_ms if as_of_ms is not None else int(datetime.now(UTC).timestamp() * 1000)
    mature = event_time < as_of - maturity_days * DAY_MS
    declined = declined & ~labelled
    return LabelStates(labelled, ~labelled & ~declined & mature,
                       ~labelled & ~declined & ~mature, declined)  # fmt: skip


def _labels(
    frame: pd.DataFrame, lake: Path | None, maturity_days: float, as_of_ms: int | None
) -> Labels:
    fraud = frame["is_fraud"].to_numpy(bool)
    if lake is None:  # a file's labels are final
        every = np.ones(len(frame), bool)
        final = LabelStates(every, ~every, ~every, ~every)
        return Labels(fraud, every, final.counts(fraud))
    from models.lake import tables as lk

    declined_ids = set(
        lk.connect(lk.Lake(lake))
        .execute("SELECT transaction_id FROM decisions WHERE decision = 'decline'")
        .df()["transaction_id"]
    )
    states = label_states(
        frame["label_time"].notna().to_numpy(),
        frame["transaction_id"].isin(declined_ids).to_numpy(),
        frame["event_time"].to_numpy(np.int64), maturity_days, as_of_ms,
    )  # fmt: skip
    return Labels(fraud, states.known, states.counts(fraud))


@dataclass
class _Decided:
    """One strategy's outcome per row, and which rules fired where."""

    outcome: npt.NDArray[np.int8]  # rules.SEVERITY
    model: npt.NDArray[np.int8]
    fired: dict[str, npt.NDArray[np.bool_]]  # rule code -> rows (shadow ones too)


def decide(data: Scored, strategy: st.Strategy, budget: int | None = None) -> _Decided:
    """Every row decided as the job would, in event-time order."""
    if budget is not None:
        strategy = strategy.model_copy(
            update={
                "thresholds": strategy.thresholds.model_copy(update={"daily_alert_budget": budget})
            }
        )
    compiled = st.Compiled(strategy, data.signals)
    t = strategy.thresholds
    alert_budget = thresholds.AlertBudget(t)
    n = len(data.frame)
    outcome, model = np.zeros(n, np.int8), np.zeros(n, np.int8)
    fired: dict[str, npt.NDArray[np.bool_]] = {r.code: np.zeros(n, bool) for r in strategy.rules}
    for i, (tx, row, when) in enumerate(_rows(data)):
        score, p = float(data.scores[i]), float(data.probabilities[i])
        amount_usd = float(row[_AMOUNT_USD])
        if t.mode == "model":
            by_model = rules.model_outcome(score, data.review_threshold, data.decline_threshold)
        else:
            alert_budget.observe([thresholds.expected_loss(p, amount_usd, t)], when / 1000)
            bar = alert_budget.refresh(when / 1000)
            by_model = thresholds.outcome(p, amount_usd, bar, t)
        hits = compiled.evaluate(row, tx, score, p)
        for code in (*(c for c, _ in hits.active), *hits.shadow):
            fired[code][i] = True
        model[i] = rules.SEVERITY[by_model]
        outcome[i] = rules.SEVERITY[rules.combine(by_model, hits.active)]
    return _Decided(outcome, model, fired)


def _rows(data: Scored) -> Any:
    """(transaction, feature row as floats, event time) per row."""
    frame = data.frame
    fields = {n: frame[n].to_numpy(object) for n in st.TRANSACTION_FIELDS if n in frame}
    attributes = [
        (n, frame[attribute_column(n)].to_numpy(object))
        for n in data.signals.attributes
        if attribute_column(n) in frame
    ]
    times = frame["event_time"].to_numpy()
    for i in range(len(frame)):
        values = {n: _value(column[i]) for n, column in fields.items()}
        values["attributes"] = {
            n: v for n, column in attributes if (v := _value(column[i])) is not None
        }
        yield _Tx(values), data.rows[i].tolist(), int(times[i])


def _value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def report(
    data: Scored,
    window: Range,
    named: Sequence[tuple[str, st.Strategy]],
    budget: int | None = None,
    model_version: str = "",
    source: str = "",
) -> dict[str, Any]:
    """The backtest's figures, JSON-able: per strategy, per rule, and the comparison."""
    decided = [decide(data, s, budget) for _, s in named]
    result: dict[str, Any] = {
        "range": {
            "from": day(window.start_ms),
            "to": day(window.end_ms),
            "days": round(window.days, 3),
        },
        "data": {
            "source": source,
            "events": len(data.frame),
            "history_events": data.history_events,
        },
        "model": {
            "version": model_version,
            "calibrated": bool(not np.array_equal(data.scores, data.probabilities)),
        },
        "labels": data.labels.counts,
        "budget": budget if budget is not None else named[0][1].thresholds.daily_alert_budget,
        "strategies": {},
        "threshold_curve": _curve(data, window),
        "score_histogram": _histogram(data),
    }
    for key, (name, strategy), d in zip(("strategy", "against"), named, decided, strict=False):
        result["strategies"][key] = _strategy_figures(data, window, name, strategy, d, budget)
    if len(decided) == 2:
        result["comparison"] = _comparison(data, decided[0], decided[1])
    return result


def day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


def _strategy_figures(
    data: Scored,
    window: Range,
    name: str,
    strategy: st.Strategy,
    d: _Decided,
    budget: int | None,
) -> dict[str, Any]:
    t = strategy.thresholds
    flagged = d.outcome > 0
    entries = [
        _figures(data, d.model > 0, d.model, t)
        | {
            "id": "model",
            "code": "model",
            "description": f"the model, thresholds by {t.mode}",
            "state": "model",
            "outcome": "model",
        }
    ]
    for rule in strategy.rules:
        severity = np.full(len(flagged), rules.SEVERITY[rule.outcome], np.int8)
        entries.append(
            _figures(data, d.fired[rule.code], severity, t)
            | {
                "id": rule.id,
                "code": rule.code,
                "description": rule.description,
                "state": rule.state,
                "outcome": rule.outcome,
            }
        )
    return {
        "name": name,
        "version": strategy.version,
        "thresholds": t.model_dump(),
        "summary": _figures(data, flagged, d.outcome, t)
        | {
            "alert_rate": float(flagged.mean()),
            "reviews": int((d.outcome == 1).sum()),
            "declines": int((d.outcome == 2).sum()),
            **_budget_days(
                data, window, d.outcome, t.daily_alert_budget if budget is None else budget
            ),
        },
        "rules": entries,
        "alerts_per_day": _daily(data, window, d.outcome),
        "alerts_by_hour": _by_hour(data, window, flagged),
    }


def _figures(
    data: Scored, flagged: npt.NDArray[np.bool_], severity: npt.NDArray[np.int8], t: st.Thresholds
) -> dict[str, Any]:
    """Fires, money and labelled outcomes of the rows ``flagged``."""
    amount = data.rows[:, _AMOUNT_USD].astype(np.float64)
    fraud, known = data.labels.fraud, data.labels.known
    caught = flagged & fraud & known
    false = flagged & ~fraud & known
    labelled_flags = int((flagged & known).sum())
    total_fraud = fraud & known
    reviews = flagged & (severity == 1)
    declines_legit = flagged & (severity == 2) & ~fraud & known
    net = (
        float(amount[caught].sum()) * t.loss_share
        - reviews.sum() * t.review_cost_usd
        - float((t.false_decline_share * amount[declines_legit] + t.false_decline_cost_usd).sum())
    )
    return {
        "events": len(flagged),
        "fires": int(flagged.sum()),
        "alerts": int(flagged.sum()),
        "fire_rate": float(flagged.mean()) if len(flagged) else 0.0,
        "distinct_cards": int(data.frame.loc[flagged, "card_id"].nunique()),
        "usd_flagged": round(float(amount[flagged].sum()), 2),
        "fraud_caught": int(caught.sum()),
        "fraud_caught_usd": round(float(amount[caught].sum()), 2),
        "fraud_total": int(total_fraud.sum()),
        "fraud_total_usd": round(float(amount[total_fraud].sum()), 2),
        "false_positives": int(false.sum()),
        "precision": caught.sum() / labelled_flags if labelled_flags else None,
        "recall": caught.sum() / total_fraud.sum() if total_fraud.any() else None,
        "net_usd": round(net, 2),
    }


def _day_index(data: Scored, window: Range) -> npt.NDArray[np.int64]:
    times = data.frame["event_time"].to_numpy(np.int64)
    days: npt.NDArray[np.int64] = (times - window.start_ms) // DAY_MS
    return days


def _daily(data: Scored, window: Range, outcome: npt.NDArray[np.int8]) -> list[dict[str, Any]]:
    days = _day_index(data, window)
    count = math.ceil(window.days)
    reviews = np.bincount(days[outcome == 1], minlength=count)
    declines = np.bincount(days[outcome == 2], minlength=count)
    return [
        {
            "day": day(window.start_ms + i * DAY_MS),
            "alerts": int(reviews[i] + declines[i]),
            "reviews": int(reviews[i]),
            "declines": int(declines[i]),
        }
        for i in range(count)
    ]


def _budget_days(
    data: Scored, window: Range, outcome: npt.NDArray[np.int8], budget: int
) -> dict[str, Any]:
    alerts = np.array([d["alerts"] for d in _daily(data, window, outcome)])
    return {
        "alerts_per_day_mean": round(float(alerts.mean()), 2),
        "alerts_per_day_max": int(alerts.max()),
        "days_over_budget": int((alerts > budget).sum()) if budget else 0,
    }


def _by_hour(data: Scored, window: Range, flagged: npt.NDArray[np.bool_]) -> list[float]:
    hours = (data.frame["event_time"].to_numpy()[flagged] // 3_600_000) % 24
    return [round(float(c) / max(window.days, 1e-9), 3) for c in np.bincount(hours, minlength=24)]


def _curve(data: Scored, window: Range) -> list[dict[str, Any]]:
    """Precision, recall and alerts per day as the model's review threshold moves."""
    fraud, known = data.labels.fraud, data.labels.known
    if not (fraud & known).any():
        return []
    top = np.concatenate(
        [
            np.quantile(data.scores, np.linspace(0.9, 0.9999, CURVE_POINTS)),
            np.linspace(0.01, 0.99, CURVE_POINTS),
        ]
    )  # both the tail and the range
    points = []
    for threshold in np.unique(top):
        flagged = data.scores >= threshold
        labelled = (flagged & known).sum()
        points.append(
            {
                "threshold": float(threshold),
                "precision": float((flagged & fraud & known).sum() / labelled)
                if labelled
                else None,
                "recall": float((flagged & fraud & known).sum() / (fraud & known).sum()),
                "alerts_per_day": float(flagged.sum() / max(window.days, 1e-9)),
            }
        )
    return points


def _histogram(data: Scored) -> dict[str, Any]:
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    fraud, known = data.labels.fraud, data.labels.known
    return {
        "edges": [round(float(e), 3) for e in edges],
        "fraud": np.histogram(data.scores[fraud & known], edges)[0].tolist(),
        "legit": np.histogram(data.scores[~fraud & known], edges)[0].tolist(),
    }


def _comparison(data: Scored, a: _Decided, b: _Decided) -> dict[str, Any]:
    """What ``a`` flags that ``b`` does not, and the reverse (money and labels)."""
    amount = data.rows[:, _AMOUNT_USD].astype(np.float64)
    fraud, known = data.labels.fraud, data.labels.known

    def part(rows: npt.NDArray[np.bool_]) -> dict[str, Any]:
        return {
            "count": int(rows.sum()),
            "usd": round(float(amount[rows].sum()), 2),
            "fraud": int((rows & fraud & known).sum()),
            "legit": int((rows & ~fraud & known).sum()),
        }

    return {
        "newly_flagged": part((a.outcome > 0) & (b.outcome == 0)),
        "no_longer_flagged": part((a.outcome == 0) & (b.outcome > 0)),
    }
