"""Model quality on later data, never seen in training.

(s) declared signals: generator data with attributes (``produce --attributes``), its last
fifth by time scored with the rest as history, three ways in the same run: the model on the
built-in features only, the model with the signals file's attribute and entity features, and
a plain LightGBM on the raw columns (amount, MCC, currency, country, channel, place and every
attribute, categories native) as the reference; PR-AUC and recall at 1 % FPR per pattern.
``--mapped FILE MAPPING`` adds the same three on a producer's own file.

(a) generator data (the shipped model's documented recipe), trained and evaluated on its own
later time split; (b) every labelled card-transaction file in ``../shared/data/`` (``.csv`` or
``.csv.gz``): trained on every month but the last and evaluated on the last month with the
earlier months as history (what ``fraudstream models evaluate V --data LATER --history
EARLIER`` computes: the stream's view of a later period). Reported per file: PR-AUC, ROC-AUC,
recall at 1 % and 0.1 % FPR, the features with the most gain, and, where the file has a
``fraud_scenario`` column (never a feature), PR-AUC and recall at the 1 %-FPR threshold per
scenario against all legitimate rows. (c) On the same files, the drift and retraining study:
a model trained on the first two months and left alone against one retrained weekly, PR-AUC
per later week for both, and the days the drift alerts would have fired.

    python -m benchmarks.model_quality [--json] [--shared-data DIR] [--skip-real]
        [--mapped FILE MAPPING] [--count N] [--signals-count N] [--weekly-only]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from benchmarks.provenance import provenance
from models.errors import DataError
from models.features.offline import attribute_column
from models.training import datasets, drift
from models.training.metrics import evaluate
from models.training.registry import Registry
from models.training.trainer import TrainConfig, feature_matrix, scores_for, train
from models.training.workflow import train_and_publish
from services.clients.produce import FileSink, generated_items, run
from services.core.card_csv import is_card_csv_name, open_text
from services.core.signals import EMPTY, Signals
from services.generator import GeneratorConfig
from services.generator.signals import generated_signals
from stream_jobs.backtest import HISTORY_DAYS

ROOT = Path(__file__).resolve().parents[1]
RECIPE = GeneratorConfig(seed=7, customers=5_000, fraud_rate=0.01, start_ms=1_767_225_600_000)
RECIPE_COUNT = 300_000


def _quality(data: Path, workdir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    published = train_and_publish(data, Registry(workdir / data.stem), TrainConfig())
    meta = published.metadata
    metrics = meta["metrics"]
    return {
        "data": data.name,
        "kind": meta["kind"],
        "rows": meta["data"]["rows"],
        "eval_rows": metrics["rows"],
        "eval_positives": metrics["positives"],
        "pr_auc": metrics["pr_auc"],
        "roc_auc": metrics["roc_auc"],
        "recall_at_1pct_fpr": metrics["recall_at_1pct_fpr"],
        "recall_at_0_1pct_fpr": metrics["recall_at_0_1pct_fpr"],
        "train_seconds": round(time.perf_counter() - started, 1),
    }


def _figures(y: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64]) -> dict[str, Any]:
    metrics = evaluate(y, scores).as_dict()
    keys = ("rows", "positives", "pr_auc", "roc_auc", "recall_at_1pct_fpr", "recall_at_0_1pct_fpr")
    return {key: metrics[key] for key in keys} | {"review_threshold": metrics["review"]["score"]}


def _by_scenario(
    path: Path,
    ids: npt.NDArray[np.object_],
    y: npt.NDArray[np.bool_],
    scores: npt.NDArray[np.float64],
) -> dict[str, Any]:
    """Per fraud scenario: its frauds against every legitimate row."""
    with open_text(path) as handle:
        header = handle.readline()
    if "fraud_scenario" not in header.strip().split(","):
        return {}
    with open_text(path) as handle:
        scenario = pd.read_csv(handle, usecols=["trans_num", "fraud_scenario"],
                               dtype={"trans_num": str})  # fmt: skip
    of = pd.Series(ids).map(scenario.set_index("trans_num")["fraud_scenario"]).to_numpy()
    cut = _figures(y, scores)["review_threshold"]
    out = {}
    for kind in sorted({int(k) for k in of[y]}):
        rows = ~y | (of == kind)
        flagged = scores[y & (of == kind)] > cut
        out[str(kind)] = {
            "frauds": int((y & (of == kind)).sum()),
            "pr_auc": round(float(evaluate(y[rows], scores[rows]).pr_auc), 6),
            "recall_at_1pct_fpr": round(float(flagged.mean()), 6),
        }
    return out


def _later_month(path: Path) -> dict[str, Any]:
    """Train on every month but the last; score the last with the earlier months as history."""
    started = time.perf_counter()
    whole = datasets.load(path)
    if whole.kind != "transactions":
        raise DataError(f"{path.name}: not transaction data (no card history to keep)")
    month = pd.to_datetime(whole.frame["event_time"], unit="ms", utc=True).dt.strftime("%Y-%m")
    last = month.max()
    earlier = datasets.Dataset(whole.kind, whole.frame[month < last].reset_index(drop=True),
                               whole.fingerprint, f"{path.name} before {last}")  # fmt: skip
    later = datasets.Dataset(whole.kind, whole.frame[month == last].reset_index(drop=True),
                             whole.fingerprint, f"{path.name} {last}")  # fmt: skip
    trained = train(earlier, TrainConfig())
    both = datasets.after_history(earlier, later)
    scored = ~both.frame["history"].to_numpy(bool)
    x = feature_matrix(both)[scored]
    y = both.frame["is_fraud"].to_numpy(bool)[scored]
    scores = scores_for(x, trained.onnx)
    ids = both.frame["transaction_id"].to_numpy()[scored]
    gains = trained.booster.feature_importance("gain")
    top = sorted(zip(gains, whole.feature_names, strict=True), reverse=True)[:8]
    return {
        "data": path.name,
        "protocol": f"train before {last}, evaluate {last} with the earlier months as history",
        "train_rows": int((~scored).sum()),
        **_figures(y, scores),
        "by_scenario": _by_scenario(path, ids, y, scores),
        "top_features_by_gain": [name for _, name in top],
        "seconds": round(time.perf_counter() - started, 1),
    }


WEEK_MS = 7 * 86_400_000
DAY_MS = 86_400_000
FROZEN_DAYS = 61  # April and May
LABEL_DELAY_DAYS = 7  # the handbook's delay period: a week's labels are known a week later


def _psi_days(
    reference: dict[str, Any], frame: pd.DataFrame, x: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float64], names: list[str],
) -> list[dict[str, Any]]:  # fmt: skip
    """Per day, PSI of the score and the most drifted feature against the frozen model's
    reference, as the 24-hour recording rule computes them (days of 1,000 rows or more)."""
    day = frame["event_time"].to_numpy() // DAY_MS
    out = []
    for d in np.unique(day):
        rows = day == d
        if rows.sum() < 1_000:
            continue
        columns = {n: x[rows, i] for i, n in enumerate(names)} | {"score": scores[rows]}
        psi = drift.drift(reference, columns)
        feature = max((n for n in psi if n != "score"), key=lambda n: psi[n])
        out.append({"day": pd.to_datetime(int(d) * DAY_MS, unit="ms").strftime("%Y-%m-%d"),
                    "score_psi": round(psi["score"], 4), "feature": feature,
                    "feature_psi": round(psi[feature], 4)})  # fmt: skip
    return out


def _weekly_study(path: Path) -> dict[str, Any]:
    """A model trained on April-May and left alone, against one retrained every week on all
    the labels known by then (the rows a week older: labels come a week late), over the
    weeks of June-July; every week scored with its whole history in place (the features are
    computed once, over everything, each row from its own past). Neither trains on the first
    ``HISTORY_DAYS``: their 30-day windows are still filling (as ``fraudstream retrain`` keeps
    a lead-in). Drift: the frozen model's reference against each day, as the 24-hour alert
    rule would see it."""
    started = time.perf_counter()
    whole = datasets.load(path)
    frame = whole.frame.sort_values("event_time", kind="stable").reset_index(drop=True)
    whole = replace(whole, frame=frame)
    x = feature_matrix(whole)
    y = frame["is_fraud"].to_numpy(bool)
    times = frame["event_time"].to_numpy(np.int64)
    first = int(times.min()) // DAY_MS * DAY_MS
    cut = first + FROZEN_DAYS * DAY_MS

    warm = first + HISTORY_DAYS * DAY_MS  # rows before it have features with a cold start

    def trained_before(end: int) -> Any:
        rows = (times >= warm) & (times < end)
        part = replace(whole, frame=frame[rows].reset_index(drop=True))
        return train(part, TrainConfig(), x=x[rows])

    frozen = trained_before(cut - LABEL_DELAY_DAYS * DAY_MS)
    names = list(whole.feature_names)
    weeks, days = [], []
    start = cut
    while start + WEEK_MS <= int(times.max()) + DAY_MS:
        rows = (times >= start) & (times < start + WEEK_MS)
        week = pd.to_datetime(start, unit="ms").strftime("%Y-%m-%d")
        weekly = trained_before(start - LABEL_DELAY_DAYS * DAY_MS)
        frozen_scores = scores_for(x[rows], frozen.onnx)
        weekly_scores = scores_for(x[rows], weekly.onnx)
        weeks.append({
            "week": week, "rows": int(rows.sum()), "fraud": int(y[rows].sum()),
            "frozen_pr_auc": round(float(evaluate(y[rows], frozen_scores).pr_auc), 4),
            "weekly_pr_auc": round(float(evaluate(y[rows], weekly_scores).pr_auc), 4),
        })  # fmt: skip
        days += _psi_days(frozen.metadata["drift"], frame[rows], x[rows], frozen_scores, names)
        start += WEEK_MS
    warn = [d["day"] for d in days if max(d["score_psi"], d["feature_psi"]) >= drift.WARN]
    page = [d["day"] for d in days if max(d["score_psi"], d["feature_psi"]) >= drift.PAGE]
    return {
        "data": path.name,
        "protocol": f"frozen: trained on the first {FROZEN_DAYS} days' labels known by then "
        f"(after a {HISTORY_DAYS}-day warm-up of the features); "
        f"weekly: retrained on every label known at each week's start ({LABEL_DELAY_DAYS}-day "
        "label delay); each week scored with its history in place",
        "weeks": weeks,
        "mean_frozen_pr_auc": round(float(np.mean([w["frozen_pr_auc"] for w in weeks])), 4),
        "mean_weekly_pr_auc": round(float(np.mean([w["weekly_pr_auc"] for w in weeks])), 4),
        "drift_days": days,
        "alert_would_warn_on": warn,
        "alert_would_page_on": page,
        "seconds": round(time.perf_counter() - started, 1),
    }


SIGNALS_RECIPE = GeneratorConfig(seed=11, customers=8_000, fraud_rate=0.01,
                                 start_ms=1_767_225_600_000, attributes=True)  # fmt: skip
RAW_CONTRACT = ("amount", "merchant_category", "currency", "country", "channel", "lat", "lon")
LATER_SHARE = 0.2


def _raw_frame(frame: pd.DataFrame, signals: Signals, categories: dict[str, Any]) -> pd.DataFrame:
    """The rows' raw columns for a plain LightGBM: numbers as they are, categories native
    (with the training rows' categories: an unseen one is missing)."""
    raw = pd.DataFrame(index=frame.index)
    for column in RAW_CONTRACT:
        raw[column] = frame[column]
    for name, declared in signals.attributes.items():
        column = frame[attribute_column(name)]
        numeric = declared.type in ("number", "timestamp")
        raw[name] = pd.to_numeric(column, errors="coerce") if numeric else column
    for column in raw.columns:
        if raw[column].dtype == object:
            raw[column] = pd.Categorical(raw[column].where(raw[column].notna(), None),
                                         categories=categories.get(column))  # fmt: skip
            categories.setdefault(column, raw[column].cat.categories)
        elif raw[column].dtype == bool:
            raw[column] = raw[column].astype(np.float64)
    return raw


def _plain_lightgbm(
    earlier: pd.DataFrame, later: pd.DataFrame, signals: Signals
) -> npt.NDArray[np.float64]:
    """A plain LightGBM on raw columns, defaults but for the learning rate and early stopping
    on the latest share of its training rows (as the pipeline's)."""
    import lightgbm as lgb

    categories: dict[str, Any] = {}
    x = _raw_frame(earlier, signals, categories)
    y = earlier["is_fraud"].to_numpy(bool)
    order = np.argsort(earlier["event_time"].to_numpy(), kind="stable")
    cut = int(len(order) * 0.85)
    fit, stop = order[:cut], order[cut:]
    params = {"objective": "binary", "learning_rate": 0.05, "verbosity": -1, "seed": 7,
              "num_threads": 2, "metric": "average_precision"}  # fmt: skip
    booster = lgb.train(
        params, lgb.Dataset(x.iloc[fit], y[fit]), num_boost_round=1000,
        valid_sets=[lgb.Dataset(x.iloc[stop], y[stop])],
        callbacks=[lgb.early_stopping(50, verbose=False)],
    )  # fmt: skip
    scores = booster.predict(_raw_frame(later, signals, categories))
    return np.asarray(scores, dtype=np.float64)


def _split_later(whole: datasets.Dataset) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The first four fifths by event time, and the last fifth."""
    times = whole.frame["event_time"].to_numpy()
    cut = np.quantile(times, 1 - LATER_SHARE)
    earlier = replace(whole, frame=whole.frame[times < cut].reset_index(drop=True))
    later = replace(whole, frame=whole.frame[times >= cut].reset_index(drop=True))
    return earlier, later


def _per_pattern(
    patterns: npt.NDArray[np.object_], y: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64]
) -> dict[str, Any]:
    cut = _figures(y, scores)["review_threshold"]
    out = {}
    for name in sorted({str(p) for p in patterns[y]}):
        mine = y & (patterns == name)
        rows = ~y | mine
        out[name] = {
            "frauds": int(mine.sum()),
            "pr_auc": round(float(evaluate(y[rows], scores[rows]).pr_auc), 4),
            "recall_at_1pct_fpr": round(float((scores[mine] > cut).mean()), 4),
        }
    return out


def _three_ways(whole: datasets.Dataset, patterns: pd.Series | None) -> dict[str, Any]:
    """Built-in features, with the signals' features, and a plain LightGBM on raw columns:
    trained on the earlier four fifths, scored on the last fifth with the rest as history."""
    earlier, later = _split_later(whole)
    out: dict[str, Any] = {"train_rows": len(earlier.frame), "later_rows": len(later.frame)}
    for label, signals in (("built_in", EMPTY), ("with_signals", whole.signals)):
        started = time.perf_counter()
        e, lt = replace(earlier, signals=signals), replace(later, signals=signals)
        trained = train(e, TrainConfig())
        both = datasets.after_history(e, lt)
        scored = ~both.frame["history"].to_numpy(bool)
        y = both.frame["is_fraud"].to_numpy(bool)[scored]
        scores = scores_for(feature_matrix(both)[scored], trained.onnx)
        gains = trained.booster.feature_importance("gain")
        out[label] = {**_figures(y, scores), "features": len(e.feature_names),
                      "top_features_by_gain": [n for _, n in sorted(
                          zip(gains, e.feature_names, strict=True), reverse=True)[:8]],
                      "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
        if patterns is not None:
            ids = both.frame["transaction_id"].to_numpy()[scored]
            out[label]["by_pattern"] = _per_pattern(patterns.reindex(ids).to_numpy(), y, scores)
    started = time.perf_counter()
    y = later.frame["is_fraud"].to_numpy(bool)
    scores = _plain_lightgbm(earlier.frame, later.frame, whole.signals)
    seconds = round(time.perf_counter() - started, 1)
    out["plain_lightgbm_raw_columns"] = {**_figures(y, scores), "seconds": seconds}
    if patterns is not None:
        ids = later.frame["transaction_id"].to_numpy()
        out["plain_lightgbm_raw_columns"]["by_pattern"] = _per_pattern(
            patterns.reindex(ids).to_numpy(), y, scores
        )
    ours, theirs = out["with_signals"]["pr_auc"], out["plain_lightgbm_raw_columns"]["pr_auc"]
    out["margin_over_built_in"] = round(ours - out["built_in"]["pr_auc"], 4)
    out["ratio_to_plain_lightgbm"] = round(ours / theirs, 3) if theirs else None
    return out


def _signals_quality(workdir: Path, count: int) -> dict[str, Any]:
    events = workdir / "signals.jsonl"
    labels = workdir / "signals.labels.csv"
    run(generated_items(SIGNALS_RECIPE, count), FileSink(events), rate=0, labels=labels)
    whole = datasets.load(events, signals=generated_signals())
    patterns = pd.read_csv(labels, dtype=str).set_index("transaction_id")["pattern"]
    return {"data": f"generator with attributes ({count} events)", **_three_ways(whole, patterns)}


def _mapped_quality(path: Path, mapping: Path) -> dict[str, Any]:
    return {"data": path.name, **_three_ways(datasets.load(path, mapping), None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--shared-data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--skip-real", action="store_true", help="only the generator data")
    parser.add_argument("--mapped", nargs=2, type=Path, metavar=("FILE", "MAPPING"))
    parser.add_argument("--count", type=int, default=RECIPE_COUNT,
                        help="generated events of the quality figure")  # fmt: skip
    parser.add_argument("--signals-count", type=int, default=300_000)
    parser.add_argument("--weekly-only", action="store_true",
                        help="only the drift and retraining study of the real files")  # fmt: skip
    args = parser.parse_args()
    if args.weekly_only:
        files = sorted(p for p in args.shared_data.iterdir() if is_card_csv_name(p))
        print(json.dumps({"benchmark": "model_quality", "weekly_retraining":
                          [_weekly_study(p) for p in files], **provenance()}))  # fmt: skip
        return

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        generated = workdir / "generated.jsonl"
        run(generated_items(RECIPE, args.count), FileSink(generated), rate=0,
            labels=workdir / "generated.labels.csv")  # fmt: skip
        quality = [_quality(generated, workdir)]
        signals = [_signals_quality(workdir, args.signals_count)]
    if args.mapped:
        signals.append(_mapped_quality(*args.mapped))
    shared = args.shared_data
    real = sorted(p for p in shared.iterdir() if is_card_csv_name(p)) if shared.is_dir() else []
    later, weekly, skipped = [], [], []
    for path in [] if args.skip_real else real:
        try:
            later.append(_later_month(path))
            weekly.append(_weekly_study(path))
        except DataError as error:
            skipped.append({"data": path.name, "reason": str(error)})
    result = {
        "benchmark": "model_quality",
        "quality": quality,
        "later_period": later,
        "weekly_retraining": weekly,
        "signals": signals,
        "real_files_found": [p.name for p in real],
        "skipped": skipped,
        **provenance(),
    }
    if not args.json:
        for row in quality + later:
            print(f"{row['data']:>40}: PR-AUC {row['pr_auc']}  ROC-AUC {row['roc_auc']}  "
                  f"recall@1%FPR {row['recall_at_1pct_fpr']}")  # fmt: skip
        for study in weekly:
            for w in study["weeks"]:
                print(f"{study['data'][:28]:>28} week of {w['week']}: PR-AUC frozen "
                      f"{w['frozen_pr_auc']}  retrained weekly {w['weekly_pr_auc']}")  # fmt: skip
        for row in signals:
            for way in ("built_in", "with_signals", "plain_lightgbm_raw_columns"):
                print(f"{row['data'][:28]:>28} {way:>26}: PR-AUC {row[way]['pr_auc']}  "
                      f"recall@1%FPR {row[way]['recall_at_1pct_fpr']}")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
