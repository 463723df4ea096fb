"""The HTML report of ``fraudstream backtest``: what a fraud analyst reads before publishing a
rule change.

One self-contained page (no network: styles inline, charts as PNG ``data:`` URIs drawn with
matplotlib's Agg backend), in reading order: the run and what its labels are, a summary table,
what changes against the other strategy (champion/challenger runs), the charts, the alert
queue's load by hour, then one table per strategy with each rule.

Every string of the result is escaped at one place, ``report_html.e``: rule ids, descriptions,
strategy and data source names are user input.

The keys read are those of ``stream_jobs.backtest``'s result: ``strategies.strategy`` is
required, ``strategies.against``, ``comparison``, ``threshold_curve`` and ``score_histogram``
are optional; a missing or null number renders as a dash.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, Final

from stream_jobs.report_html import (
    Chart,
    Html,
    e,
    figure_html,
    new_figure,
    page,
    plain,
    png,
    table,
    use_agg,
)

DASH: Final = "\u2013"  # an undefined number (precision with no labelled alert)
ROLES: Final = ("strategy", "against")
# Colours that stay apart for colour-blind readers (Okabe-Ito): one per strategy, and the two
# sides of the per-rule chart.
LINE: Final = {"strategy": "#0072B2", "against": "#E69F00"}
CAUGHT, FALSE_POSITIVE, BUDGET = "#009E73", "#D55E00", "#CC3311"
FRAUD, LEGIT = "#D55E00", "#0072B2"


# ---- numbers -------------------------------------------------------------------------------


def _finite(value: object) -> float | None:
    """The value as a float, or None where the backtest had no number (null, NaN, missing).
    numpy's numbers count too: a result straight from the computation may hold them."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _count(value: object) -> str:
    """A count with thousands separators; a mean keeps one decimal."""
    x = _finite(value)
    if x is None:
        return DASH
    return f"{x:,.0f}" if x.is_integer() else f"{x:,.1f}"


def _usd(value: object) -> str:
    """Whole US dollars with thousands separators (cents are noise over a month)."""
    x = _finite(value)
    if x is None:
        return DASH
    return f"{'-' if x < 0 else ''}${abs(x):,.0f}"


def _pct(value: object) -> str:
    """A share such as precision or recall, as a percentage."""
    x = _finite(value)
    return DASH if x is None else f"{x:.1%}"


def _rate(value: object) -> str:
    """A small share (alerts per event): two decimals, and never a misleading 0.00%."""
    x = _finite(value)
    if x is None:
        return DASH
    return "<0.01%" if 0 < x < 0.00005 else f"{x:.2%}"


def _diff(kind: str, now: object, before: object) -> str:
    """``now - before`` with its sign; shares in percentage points, not relative percent."""
    a, b = _finite(now), _finite(before)
    if a is None or b is None:
        return DASH
    d = a - b
    if d == 0:
        return "0"
    sign = "+" if d > 0 else "-"
    if kind == "usd":
        return f"{sign}${abs(d):,.0f}"
    if kind in ("pct", "rate"):
        digits = 1 if kind == "pct" else 2
        return f"{d * 100:+.{digits}f} pp"
    return f"{d:+,.0f}" if d.is_integer() else f"{d:+,.1f}"


FORMATS: Final[Mapping[str, Callable[[object], str]]] = {
    "count": _count, "usd": _usd, "pct": _pct, "rate": _rate,
}  # fmt: skip


# ---- HTML pieces ---------------------------------------------------------------------------


def _bar(share: float | None) -> Html:
    """An inline bar for a share in 0..1, so the hourly table reads like a chart without one."""
    width = 0.0 if share is None else max(0.0, min(1.0, share)) * 100
    return Html(f'<span class="bar" style="width:{width:.1f}%"></span>')


# ---- the result's parts --------------------------------------------------------------------


def _strategies(result: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The strategies in the run, the evaluated one first."""
    found: Mapping[str, Any] = result["strategies"]
    return {role: found[role] for role in ROLES if found.get(role)}


def _name(role: str, strategy: Mapping[str, Any]) -> str:
    """A strategy's document name and version, as the analyst knows it."""
    name = str(strategy.get("name") or role)
    version = strategy.get("version")
    return name if version is None else f"{name} v{version}"


def _labels(strategies: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """What each strategy is called in tables and charts; the other one says so, as both may
    carry the same name."""
    return {role: _name(role, s) + ("" if role == "strategy" else " (against)")
            for role, s in strategies.items()}  # fmt: skip


def _summary(strategy: Mapping[str, Any]) -> Mapping[str, Any]:
    """A strategy's totals; its alert rate is its fire rate when only that is given."""
    summary: dict[str, Any] = dict(strategy.get("summary") or {})
    summary.setdefault("alert_rate", summary.get("fire_rate"))
    return summary


def _rules(strategy: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(strategy.get("rules") or [])


def _budget(result: Mapping[str, Any]) -> float:
    """The daily alert budget; 0 means none."""
    return _finite(result.get("budget")) or 0.0


# ---- sections ------------------------------------------------------------------------------


def _header(result: Mapping[str, Any], strategies: Mapping[str, Mapping[str, Any]]) -> Html:
    """The title and the run: which range, data, model and budget the numbers come from."""
    span, data, model = result.get("range", {}), result.get("data", {}), result.get("model", {})
    title = " against ".join(_name(role, s) for role, s in strategies.items())
    budget = _budget(result)
    model_text = f"model {model.get('version', DASH)}" + (
        " (calibrated)" if model.get("calibrated") else " (uncalibrated scores)"
    )
    facts = [
        f"{span.get('from', DASH)} to {span.get('to', DASH)} ({_count(span.get('days'))} days)",
        f"data {data.get('source', DASH)}: {_count(data.get('events'))} events in range, "
        f"{_count(data.get('history_events'))} before it for card history",
        model_text,
        f"daily alert budget {_count(budget)}" if budget > 0 else "no daily alert budget",
    ]
    return Html(
        f"<h1>Backtest of {e(title)}</h1>"
        f'<p class="run">{" &middot; ".join(e(f) for f in facts)}</p>'
    )


def _labels_note(result: Mapping[str, Any]) -> Html:
    """What precision and recall are computed on: analysts must see the unknown share first."""
    labels: Mapping[str, Any] = result.get("labels", {})
    assumed = _finite(labels.get("assumed_legit")) or 0
    text = (
        f"Unknown labels: {_pct(labels.get('unknown_share'))} of events "
        f"({_count(labels.get('unknown_immature'))} too recent for their chargeback to have "
        f"arrived, {_count(labels.get('unknown_declined'))} declined: a declined transaction's "
        "outcome is never known). Precision and recall are computed on the events with a "
        f"label only: {_count(labels.get('fraud'))} fraud, {_count(labels.get('legit'))} legit"
        + (
            f" and {_count(assumed)} assumed legit (no chargeback once it would have arrived)."
            if assumed
            else "."
        )
    )
    return Html(f'<p class="note"><strong>Labels.</strong> {e(text)}</p>')


SUMMARY_ROWS: Final = (
    ("Events", "events", "count"),
    ("Alerts", "alerts", "count"),
    ("\u2003of which reviews", "reviews", "count"),
    ("\u2003of which declines", "declines", "count"),
    ("Alert rate (alerts per event)", "alert_rate", "rate"),
    ("Alerts per day, mean", "alerts_per_day_mean", "count"),
    ("Alerts per day, busiest day", "alerts_per_day_max", "count"),
    ("Days over the alert budget", "days_over_budget", "count"),
    ("Distinct cards flagged", "distinct_cards", "count"),
    ("USD flagged", "usd_flagged", "usd"),
    ("Fraud caught", "fraud_caught", "count"),
    ("Fraud in range", "fraud_total", "count"),
    ("Fraud caught, USD", "fraud_caught_usd", "usd"),
    ("Fraud in range, USD", "fraud_total_usd", "usd"),
    ("Precision (fraud among labelled alerts)", "precision", "pct"),
    ("Recall (fraud caught among fraud)", "recall", "pct"),
    ("Net USD (the backtest's cost model)", "net_usd", "usd"),
)


def _summary_table(
    result: Mapping[str, Any],
    strategies: Mapping[str, Mapping[str, Any]],
    labels: Mapping[str, str],
) -> Html:
    """Each strategy's totals side by side, and the change when there are two."""
    summaries = [_summary(s) for s in strategies.values()]
    both = len(summaries) == 2
    rows = []
    for title, key, kind in SUMMARY_ROWS:
        if key == "days_over_budget" and _budget(result) <= 0:
            continue  # no budget, nothing to be over
        row: list[object] = [title, *(FORMATS[kind](s.get(key)) for s in summaries)]
        if both:
            row.append(_diff(kind, summaries[0].get(key), summaries[1].get(key)))
        rows.append(row)
    headers = ["", *labels.values(), *(["Change"] if both else [])]
    return Html(f"<h2>Summary</h2>{table(headers, rows)}")


def _comparison(result: Mapping[str, Any], labels: Mapping[str, str]) -> Html:
    """Which alerts the change adds and removes: what the analyst's team would see differently."""
    comparison: Mapping[str, Any] | None = result.get("comparison")
    if not comparison or "against" not in labels:
        return Html("")
    rows = []
    for key, title in (
        ("newly_flagged", "Newly flagged"),
        ("no_longer_flagged", "No longer flagged"),
    ):
        part: Mapping[str, Any] = comparison.get(key) or {}
        count, fraud, legit = (_finite(part.get(k)) for k in ("count", "fraud", "legit"))
        unknown = None
        if count is not None and fraud is not None and legit is not None:
            unknown = count - fraud - legit
        rows.append([title, _count(count), _usd(part.get("usd")), _count(fraud), _count(legit),
                     _count(unknown)])  # fmt: skip
    caption = (
        f"Newly flagged: alerted by {labels['strategy']}, not by {labels['against']}; "
        "no longer flagged: the reverse. Unknown: neither fraud nor legit (immature or declined)."
    )
    grid = table(["", "Transactions", "USD", "Fraud", "Legit", "Unknown"], rows)
    return Html(f'<h2>What changes</h2>{grid}<p class="caption">{e(caption)}</p>')


def _hourly(strategies: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str]) -> Html:
    """The alert queue's expected load by hour: when reviewers are needed."""
    series = {role: [_finite(v) for v in s.get("alerts_by_hour") or []]
              for role, s in strategies.items()}  # fmt: skip
    hours = max((len(v) for v in series.values()), default=0)
    if hours == 0:
        return Html('<h2>Alert queue load by hour</h2><p class="missing">No hourly counts.</p>')
    headers: list[object] = ["Hour (UTC)"]
    for role in series:
        headers += [f"{labels[role]}: mean alerts", "share of the day", ""]
    rows = []
    for hour in range(hours):
        row: list[object] = [f"{hour:02d}:00\u2013{(hour + 1) % 24:02d}:00"]
        for values in series.values():
            value = values[hour] if hour < len(values) else None
            total = sum(v for v in values if v is not None)
            share = None if value is None or total <= 0 else value / total
            row += [_count(None if value is None else round(value, 1)), _pct(share), _bar(share)]
        rows.append(row)
    grid = table(headers, rows, text=range(0, len(headers), 3))  # hours and bars: not numbers
    caption = "Mean alerts raised in each hour of the day over the range, by UTC hour."
    return Html(f'<h2>Alert queue load by hour</h2>{grid}<p class="caption">{e(caption)}</p>')


RULE_HEADERS: Final = (
    "Rule", "State", "Outcome", "Fires", "Fire rate", "Cards", "USD flagged", "Fraud caught",
    "Fraud USD", "False positives", "Precision", "Net USD", "Description",
)  # fmt: skip


def _rule_row(rule: Mapping[str, Any]) -> list[object]:
    code = rule.get("code")
    name = Html(e(rule.get("id", DASH)) + (f"<br><code>{e(code)}</code>" if code else ""))
    return [
        name, rule.get("state", DASH), rule.get("outcome", DASH), _count(rule.get("fires")),
        _rate(rule.get("fire_rate")), _count(rule.get("distinct_cards")),
        _usd(rule.get("usd_flagged")), _count(rule.get("fraud_caught")),
        _usd(rule.get("fraud_caught_usd")), _count(rule.get("false_positives")),
        _pct(rule.get("precision")), _usd(rule.get("net_usd")), rule.get("description", ""),
    ]  # fmt: skip


def _rules_section(strategies: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str]) -> Html:
    """One table per strategy, rules in the document's order (as the analyst wrote them)."""
    parts = ["<h2>Rules</h2>"]
    for role, strategy in strategies.items():
        thresholds: Mapping[str, Any] = strategy.get("thresholds") or {}
        settings = ", ".join(f"{k} {v}" for k, v in thresholds.items()) or DASH
        rows = [_rule_row(r) for r in _rules(strategy)]
        grid = table(RULE_HEADERS, rows, text=(0, 1, 2, len(RULE_HEADERS) - 1))
        parts.append(
            f"<h3>{e(labels[role])}</h3><p>Thresholds: {e(settings)}</p>"
            f'<div class="wide">{grid}</div>'
        )
    note = (
        "State: active rules act; shadow rules are recorded, not acted on (their fires show what "
        "they would do); paused rules are not evaluated. Precision counts fires with a label "
        "only; a dash means no such fire."
    )
    parts.append(f'<p class="caption">{e(note)}</p>')
    return Html("".join(parts))


# ---- charts --------------------------------------------------------------------------------


def _alerts_by_day(strategy: Mapping[str, Any]) -> dict[date, float | None]:
    """A strategy's alerts on each day (ISO dates in the result)."""
    per_day = strategy.get("alerts_per_day") or []
    return {date.fromisoformat(str(p["day"])[:10]): _finite(p.get("alerts")) for p in per_day}


def _alerts_chart(
    result: Mapping[str, Any],
    strategies: Mapping[str, Mapping[str, Any]],
    labels: Mapping[str, str],
) -> Chart:
    """Alerts per day against the budget: the question is whether reviewers can keep up."""
    title = "Alerts per day against the budget"
    budget = _budget(result)
    series = {role: _alerts_by_day(s) for role, s in strategies.items()}
    days = sorted(set().union(*series.values()))
    if not days:
        return Chart(title, "", "", missing="No alerts per day: the range held no days.")
    figure = new_figure(9, 3.8)
    axes = figure.subplots()
    x = range(len(days))  # one slot per day: a date axis would tick hours on a short range
    for role, alerts in series.items():
        y = [math.nan if (a := alerts.get(d)) is None else a for d in days]
        axes.plot(x, y, marker="o", ms=3, lw=1.6, color=LINE[role], label=plain(labels[role]))
        if budget > 0:
            over = [(i, v) for i, v in zip(x, y, strict=True) if v > budget]
            axes.plot([i for i, _ in over], [v for _, v in over], "o", ms=7, mfc="none",
                      color=BUDGET)  # fmt: skip
    step = math.ceil(len(days) / 12)  # at most a dozen labels
    axes.set_xticks(x[::step], [d.strftime("%b %d") for d in days[::step]])
    if budget > 0:
        axes.axhline(budget, color=BUDGET, ls="--", lw=1.2, label=f"budget {budget:,.0f}/day")
    axes.set(ylabel="alerts per day", ylim=(0, None))
    axes.grid(alpha=0.3)
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8)
    over_days = ", ".join(
        f"{labels[r]}: {_count(_summary(s).get('days_over_budget'))}" for r, s in strategies.items()
    )
    alt = f"Line chart of alerts per day for {' and '.join(labels.values())}" + (
        f", with the daily budget of {budget:,.0f} as a dashed line; days over budget: {over_days}."
        if budget > 0 else "; no daily budget is set."
    )  # fmt: skip
    caption = "Alerts (reviews and declines) raised each day" + (
        "; circled days are over the budget." if budget > 0 else "."
    )
    return Chart(title, alt, caption, png=png(figure))


def _rule_order(strategies: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every rule id of either strategy, the busiest (caught + false positives) first."""
    load: dict[str, float] = {}
    for strategy in strategies.values():
        for rule in _rules(strategy):
            volume = (_finite(rule.get("fraud_caught")) or 0) + (
                _finite(rule.get("false_positives")) or 0
            )
            rule_id = str(rule.get("id"))
            load[rule_id] = max(load.get(rule_id, 0.0), volume)
    return sorted(load, key=lambda r: -load[r])


def _tick(rule_id: str, strategies: Mapping[str, Mapping[str, Any]]) -> str:
    """A rule's name on the chart, saying when it is not acting (shadow or paused)."""
    for strategy in strategies.values():
        for rule in _rules(strategy):
            if str(rule.get("id")) == rule_id and rule.get("state") in ("shadow", "paused"):
                return f"{rule_id} ({rule['state']})"
    return rule_id


def _rules_chart(strategies: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str]) -> Chart:
    """Per rule, fraud caught (right) against false positives (left): what each rule costs."""
    from matplotlib.ticker import FuncFormatter

    title = "Fraud caught and false positives per rule"
    order = _rule_order(strategies)
    if not order:
        return Chart(title, "", "", missing="No rules and no model in the strategy.")
    roles = list(strategies)
    height = 0.8 / len(roles)
    figure = new_figure(9, 1.4 + 0.32 * len(order) * len(roles))
    axes = figure.subplots()
    for k, role in enumerate(roles):
        by_id = {str(r.get("id")): r for r in _rules(strategies[role])}
        y = [i + (k - (len(roles) - 1) / 2) * height for i in range(len(order))]
        caught = [_finite(by_id.get(r, {}).get("fraud_caught")) for r in order]
        wrong = [_finite(by_id.get(r, {}).get("false_positives")) for r in order]
        alpha, hatch = (1.0, None) if k == 0 else (0.55, "//")  # the other strategy: lighter
        name = plain(labels[role])
        for values, sign, colour, what in (
            (caught, 1, CAUGHT, "fraud caught"),
            (wrong, -1, FALSE_POSITIVE, "false positives"),
        ):
            bars = axes.barh(
                y,
                [sign * (v or 0) for v in values],
                height,
                color=colour,
                alpha=alpha,
                hatch=hatch,
                edgecolor="white",
                label=f"{name}: {what}",
            )
            axes.bar_label(
                bars,
                labels=[f"{v:,.0f}" if v else "" for v in values],  # no bar, no label
                padding=2,
                fontsize=7,
            )
    axes.axvline(0, color="black", lw=0.8)
    axes.set_yticks(range(len(order)), [plain(_tick(r, strategies)) for r in order], fontsize=8)
    axes.invert_yaxis()
    axes.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{abs(v):,.0f}"))
    axes.margins(x=0.15)
    axes.set_xlabel("\u2190 false positives (labelled legit)      fraud caught \u2192")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=7)
    alt = (
        "Horizontal bar chart, one row per rule and the model, fraud caught to the right and "
        f"false positives to the left, for {' and '.join(labels.values())}; rules: "
        + ", ".join(order)
        + "."
    )
    caption = (
        "Each rule's fires that were fraud (right) and labelled legit (left); fires with unknown "
        "labels are in neither. A transaction several rules flag counts for each of them."
    )
    return Chart(title, alt, caption, png=png(figure))


def _threshold_chart(result: Mapping[str, Any]) -> Chart:
    """Precision and recall as the model's review threshold moves, with the load it brings."""
    from matplotlib.ticker import LogFormatter

    title = "Precision and recall as the review threshold moves"
    points = sorted(
        (p for p in result.get("threshold_curve") or [] if _finite(p.get("threshold")) is not None),
        key=lambda p: float(p["threshold"]),
    )
    if not points:
        return Chart(title, "", "", missing=(
            "No threshold curve: the backtest computed none (for example, no model scores or no "
            "labelled events in the range), so this chart is left out."
        ))  # fmt: skip

    def column(key: str) -> list[float]:
        return [math.nan if (v := _finite(p.get(key))) is None else v for p in points]

    threshold = column("threshold")
    figure = new_figure(9, 4)
    axes = figure.subplots()
    axes.plot(threshold, column("precision"), color=LINE["strategy"], lw=1.8, label="precision")
    axes.plot(threshold, column("recall"), color=CAUGHT, lw=1.8, label="recall")
    axes.set(xlabel="review threshold (model score)", ylabel="precision, recall", ylim=(0, 1.02))
    axes.grid(alpha=0.3)
    load = axes.twinx()
    per_day = column("alerts_per_day")
    load.plot(threshold, per_day, color="#555555", ls=":", lw=1.6, label="alerts per day")
    budget = _budget(result)
    if budget > 0:
        load.axhline(budget, color=BUDGET, ls="--", lw=1.2, label=f"budget {budget:,.0f}/day")
    if any(v > 0 for v in per_day):
        load.set_yscale("log", nonpositive="mask")
        for axis_set in (load.yaxis.set_major_formatter, load.yaxis.set_minor_formatter):
            axis_set(LogFormatter(labelOnlyBase=False))  # 200, 300: not 2 x 10^2
    load.set_ylabel("alerts per day (log scale)")
    handles = axes.get_legend_handles_labels()
    more = load.get_legend_handles_labels()
    axes.legend(handles[0] + more[0], handles[1] + more[1], fontsize=8, ncol=4,
                loc="upper center", bbox_to_anchor=(0.5, -0.16))  # fmt: skip
    alt = (
        f"Line chart of the model's precision and recall over {len(points)} review thresholds "
        f"from {threshold[0]:g} to {threshold[-1]:g}, with alerts per day on a second axis"
        + (f" and the budget of {budget:,.0f} per day." if budget > 0 else ".")
    )
    caption = (
        "The model alone, its review threshold moving: a higher threshold raises precision and "
        "lowers recall and the daily load. Labelled events only."
    )
    return Chart(title, alt, caption, png=png(figure))


def _score_chart(result: Mapping[str, Any]) -> Chart:
    """How far apart the model's scores put fraud and legit: where a threshold can go."""
    title = "Distribution of model scores, fraud and legit"
    histogram: Mapping[str, Any] = result.get("score_histogram") or {}
    raw_edges = [_finite(e) for e in histogram.get("edges") or []]
    edges = [e for e in raw_edges if e is not None]
    fraud = [_finite(c) or 0.0 for c in histogram.get("fraud") or []]
    legit = [_finite(c) or 0.0 for c in histogram.get("legit") or []]
    bins = len(edges) - 1
    if len(edges) != len(raw_edges) or bins < 1 or not len(fraud) == len(legit) == bins:
        return Chart(title, "", "", missing="No score histogram: the backtest scored no event.")
    calibrated = bool((result.get("model") or {}).get("calibrated"))
    figure = new_figure(9, 3.8)
    axes = figure.subplots()
    # On a log axis an empty bin (0) has no place: draw it at a floor below one event.
    log = any(c > 0 for c in fraud + legit)
    floor = 0.5 if log else 0.0
    for counts, name, colour in ((legit, "legit", LEGIT), (fraud, "fraud", FRAUD)):
        drawn = [max(c, floor) for c in counts]
        axes.stairs(drawn, edges, baseline=floor, color=colour, lw=1.6,
                    label=f"{name} ({sum(counts):,.0f})")  # fmt: skip
        axes.stairs(drawn, edges, baseline=floor, color=colour, alpha=0.15, fill=True)
    if log:
        axes.set_yscale("log")
        axes.set_ylim(bottom=floor)
    score = "fraud probability (calibrated)" if calibrated else "model score (uncalibrated)"
    axes.set(xlabel=score, ylabel="events (log scale)" if log else "events")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    alt = (
        f"Histogram of {score} in {len(fraud)} bins, fraud and legit events as two outlines on a "
        f"log-scaled count axis; {sum(fraud):,.0f} fraud and {sum(legit):,.0f} legit events."
    )
    caption = "Labelled events by model score; counts on a log scale, so the rare fraud shows."
    return Chart(title, alt, caption, png=png(figure))


# ---- the page ------------------------------------------------------------------------------


def render(result: Mapping[str, Any]) -> str:
    """The backtest's result as one self-contained HTML page (charts inline, no network)."""
    use_agg()

    strategies = _strategies(result)
    labels = _labels(strategies)
    charts = (
        _alerts_chart(result, strategies, labels),
        _rules_chart(strategies, labels),
        _threshold_chart(result),
        _score_chart(result),
    )
    span = result.get("range", {})
    title = f"Backtest: {labels['strategy']}, {span.get('from', DASH)} to {span.get('to', DASH)}"
    body = "".join((
        _header(result, strategies),
        _labels_note(result),
        _summary_table(result, strategies, labels),
        _comparison(result, labels),
        "<h2>Charts</h2>",
        *(figure_html(c) for c in charts),
        _hourly(strategies, labels),
        _rules_section(strategies, labels),
    ))  # fmt: skip
    return page(title, body)
