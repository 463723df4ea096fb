"""The HTML report of ``fraudstream models compare``: the figures with their intervals, where
each version's scores came from, what the ledger held, and both precision-recall curves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

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

FIGURES: Final = (
    ("pr_auc", "PR-AUC", "{:.4f}"),
    ("recall_at_budget", "Recall at the daily budget", "{:.1%}"),
    ("cost_usd", "Cost (reviews and fraud missed), USD", "{:,.0f}"),
    ("ece", "Calibration error (ECE)", "{:.4f}"),
    ("brier", "Brier score", "{:.5f}"),
)
COLOURS: Final = {"a": "#0072B2", "b": "#E69F00"}  # Okabe-Ito: apart for colour-blind readers


def _number(form: str, value: object) -> str:
    return form.format(value) if isinstance(value, int | float) and value == value else "\u2013"


def _figures(result: Mapping[str, Any]) -> Html:
    rows = []
    for key, name, form in FIGURES:
        f = result[key]
        low, high = f["difference"]["ci95"]
        rows.append([name, *(f"{_number(form, f[s]['value'])} ({_number(form, f[s]['ci95'][0])}"
                             f" .. {_number(form, f[s]['ci95'][1])})" for s in ("a", "b")),
                     _number(form, f["difference"]["value"]),
                     f"{_number(form, low)} .. {_number(form, high)}"])  # fmt: skip
    headers = ["", f"A: {result['a']}", f"B: {result['b']}", "B \u2212 A", "95 % interval"]
    return table(headers, rows)


def _sources(result: Mapping[str, Any]) -> Html:
    names = ("recorded", "shadow", "rescored", "unscorable")
    rows = [[result[s], *(f"{result['sources'][s][n]:,}" for n in names)] for s in ("a", "b")]
    return table(["version", "as decided", "as shadow", "from features", "unscorable"], rows)


def _ledger(result: Mapping[str, Any]) -> Html:
    book = result["ledger"]
    keys = ("decisions", "fraud", "legit", "assumed_legit", "unknown_immature",
            "unknown_declined", "without_feature_row", "judged")  # fmt: skip
    return table(["", "decisions"], [[k.replace("_", " "), f"{book[k]:,}"] for k in keys])


def _pr_chart(result: Mapping[str, Any]) -> Chart:
    title = "Precision against recall"
    curves = result["pr_curves"]
    if not curves["a"]["recall"]:
        return Chart(title, "", "", missing="No fraud among the judged decisions: no curve.")
    figure = new_figure(7, 4)
    axes = figure.add_subplot()
    for side in ("a", "b"):
        axes.plot(curves[side]["recall"], curves[side]["precision"], color=COLOURS[side],
                  label=f"{side.upper()}: {result[side]}")  # fmt: skip
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_ylim(0, 1.02)
    axes.legend()
    axes.grid(alpha=0.3)
    alt = f"Precision-recall curves of {result['a']} and {result['b']} on the same decisions."
    caption = "On the decisions both versions scored; the higher curve flags fewer legit per fraud."
    return Chart(title, alt, caption, png=png(figure))


def render(result: Mapping[str, Any]) -> str:
    use_agg()
    span = result["range"]
    winner = result["winner"]
    verdict = (
        f"{winner} wins on PR-AUC (the interval of the difference is clear of zero)"
        if winner
        else "Neither wins on PR-AUC: the interval of the difference holds 0"
    )
    body = "".join((
        f"<h1>{e(result['a'])} against {e(result['b'])}</h1>",
        f'<p class="run">{e(span["from"])} to {e(span["to"])} (exclusive): '
        f"{result['rows']:,} decisions with known outcomes, {result['fraud']:,} of them fraud; "
        f"labels mature after {result['maturity_days']:g} days; daily budget "
        f"{result['budget']:,}; {result['bootstrap']:,} bootstrap resamples.</p>",
        f'<p class="note">{e(verdict)}.</p>',
        "<h2>Figures</h2>", _figures(result),
        "<h2>Charts</h2>", figure_html(_pr_chart(result)),
        "<h2>Where the scores came from</h2>", _sources(result),
        "<h2>The ledger</h2>", _ledger(result),
    ))  # fmt: skip
    return page(f"Model comparison: {result['a']} against {result['b']}", body)
