"""A model card: what a data scientist or a model-risk reviewer reads about one version, as a
self-contained HTML page in the version's directory (``model_card.html``).

In reading order: the version and the data window it saw, its figures on the evaluation
split it did not train on, the precision-recall curve, calibration (a reliability diagram of
the calibrated probability), the features it leans on (gain), and how far its training data
moved from the previous version's (PSI against that version's reference bins).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np

from models.training import drift
from models.training.calibration import calibrate
from models.training.trainer import Matrix, Trained, pr_curve_png
from stream_jobs.report_html import (
    Chart,
    Html,
    e,
    figure_html,
    new_figure,
    page,
    png,
    table,
    use_agg,
)

TOP: Final = 15
RELIABILITY_BINS: Final = 10


def _day(ms: object) -> str:
    if not isinstance(ms, int):
        return "\u2013"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _header(meta: Mapping[str, Any]) -> Html:
    data = meta["data"]
    window = meta.get("retrain", {}).get("window")
    seen = f"{_day(window[0])} to {_day(window[1])} (exclusive)" if window else "the whole file"
    return Html(
        f"<h1>Model card: {e(meta['version'])}</h1>"
        f'<p class="run">Trained {e(meta["created_at"])} on {e(data["source"])}, {e(seen)}: '
        f"{data['rows']:,} transactions, {data['positives']:,} fraud. Training "
        f"{data['train_rows']:,} rows, validation (early stopping, calibration) "
        f"{data['valid_rows']:,}, evaluation {data['eval_rows']:,}: the latest rows, from "
        f"{e(_day(data['eval_from_event_time']))}, never trained on.</p>"
    )


def _figures(meta: Mapping[str, Any]) -> Html:
    m, cal = meta["metrics"], meta["metrics"].get("calibration", {})
    rows = [
        ["PR-AUC", f"{m['pr_auc']:.4f}"],
        ["ROC-AUC", f"{m['roc_auc']:.4f}"],
        ["Recall at 1 % false positives", f"{m['recall_at_1pct_fpr']:.1%}"],
        ["Recall at 0.1 % false positives", f"{m['recall_at_0_1pct_fpr']:.1%}"],
        *([["Calibration error (ECE)", f"{cal['ece']:.4f}"],
           ["Brier score", f"{cal['brier']:.5f}"]] if cal else []),
    ]  # fmt: skip
    for name in ("review", "decline"):
        t = m[name]
        rows.append([f"{name.capitalize()} threshold (precision, recall)",
                     f"{t['score']:.4f} ({t['precision']:.1%}, {t['recall']:.1%})"])  # fmt: skip
    return table(["On the evaluation split", ""], rows, text=(0,))


def _reliability(meta: Mapping[str, Any], trained: Trained) -> Chart:
    title = "Calibration"
    p = calibrate(trained.eval_scores, meta.get("calibration"))
    y = trained.eval_labels.astype(np.float64)
    which = np.minimum((p * RELIABILITY_BINS).astype(np.int64), RELIABILITY_BINS - 1)
    n = np.bincount(which, minlength=RELIABILITY_BINS)
    used = n > 0
    mean_p = np.bincount(which, p, RELIABILITY_BINS)[used] / n[used]
    rate = np.bincount(which, y, RELIABILITY_BINS)[used] / n[used]
    figure = new_figure(5, 4)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="#999999", linestyle="--", label="perfect")
    axes.plot(mean_p, rate, marker="o", color="#0072B2", label="this version")
    axes.set_xlabel("calibrated probability (bin mean)")
    axes.set_ylabel("fraud rate")
    axes.legend()
    alt = "Reliability diagram: observed fraud rate against the calibrated probability."
    caption = f"Ten equal-width bins of the probability, {len(p):,} evaluation rows."
    return Chart(title, alt, caption, png=png(figure))


def _importance(meta: Mapping[str, Any], trained: Trained) -> tuple[Html, Chart]:
    gain = trained.booster.feature_importance("gain")
    names: list[str] = meta["feature_names"]
    total = float(gain.sum()) or 1.0
    order = np.argsort(-gain)[:TOP]
    rows = [[names[i], f"{gain[i] / total:.1%}"] for i in order]
    figure = new_figure(7, 4)
    axes = figure.add_subplot()
    axes.barh([names[i] for i in order][::-1], [gain[i] / total for i in order][::-1],
              color="#0072B2")  # fmt: skip
    axes.set_xlabel("share of the total gain")
    caption = "Gain: the loss reduction of every split on the feature."
    alt = f"The {len(order)} features with the most gain."
    chart = Chart("Feature importance", alt, caption, png=png(figure))
    return table(["feature", "share of gain"], rows), chart


def _drift(meta: Mapping[str, Any], x: Matrix, previous: Mapping[str, Any] | None) -> Html:
    if previous is None or "drift" not in previous:
        return Html('<p class="missing">No previous version with a drift reference.</p>')
    names: list[str] = meta["feature_names"]
    columns = {n: x[:, i] for i, n in enumerate(names) if n in previous["drift"]["features"]}
    moved = sorted(drift.drift(previous["drift"], columns).items(), key=lambda kv: -kv[1])
    rows = [[n, f"{v:.4f}", "page" if v >= drift.PAGE else "warn" if v >= drift.WARN else "ok"]
            for n, v in moved[:TOP]]  # fmt: skip
    note = (f"PSI of this version's training data against {previous['version']}'s reference "
            "bins: 0.1 and over warns, 0.25 and over pages, as the drift alerts do.")  # fmt: skip
    return Html(table(["feature", "PSI", "level"], rows) + f'<p class="caption">{e(note)}</p>')


def render(
    meta: Mapping[str, Any], trained: Trained, x: Matrix, previous: Mapping[str, Any] | None
) -> str:
    """The card of a version about to be published (``meta`` has its name)."""
    use_agg()
    pr = Chart("Precision against recall", "Precision-recall curve on the evaluation split.",
               "Every threshold's precision and recall on rows the model did not train on.",
               png=pr_curve_png(trained.eval_labels, trained.eval_scores,
                                f"{meta['version']}: evaluation"))  # fmt: skip
    importance, chart = _importance(meta, trained)
    body = "".join((
        _header(meta),
        "<h2>Figures</h2>", _figures(meta),
        "<h2>Charts</h2>", figure_html(pr), figure_html(_reliability(meta, trained)),
        "<h2>What it leans on</h2>", importance, figure_html(chart),
        "<h2>Drift against the previous version</h2>", _drift(meta, x, previous),
    ))  # fmt: skip
    return page(f"Model card: {meta['version']}", body)
