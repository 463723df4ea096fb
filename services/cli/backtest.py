"""``fraudstream backtest``: what a strategy (and a model version) would have done over a range
of past transactions, against another strategy, before it is published."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.cli.models import JsonOpt, MappingOpt, RegistryOpt, _registry
from services.cli.strategy import named_strategy
from services.core.contract import parse_event_time
from services.core.errors import MissingExtra, UserError
from services.core.settings import load_settings

out = Console()
StrategyRef = Annotated[
    str | None,
    typer.Option(
        help="A strategy file, or a published version number (0: the shipped one). "
        "Default: the version in force now."
    ),
]


MaturityOpt = Annotated[
    float | None,
    typer.Option(
        min=0, max=3650, help="Lake: an unlabelled transaction older than this many days is legit. "
        "Default: FRAUDSTREAM_LAKE_LABEL_MATURITY_DAYS (60).",
    ),
]  # fmt: skip


def matured(days: float | None) -> float:
    return load_settings().lake.label_maturity_days if days is None else days


def reported(
    result: dict[str, Any], html: Path | None, render: Callable[[dict[str, Any]], str],
    as_json: bool,
) -> bool:  # fmt: skip
    """Write ``--html`` and print ``--json``; whether the JSON was the output (else the
    caller prints its table)."""
    if html is not None:
        html.write_text(render(result), encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(result))
    return as_json


def _day_ms(text: str, what: str) -> int:
    try:
        return parse_event_time(text if "T" in text else f"{text}T00:00:00Z", what)
    except ValueError as error:
        raise UserError(f"--{what}: {error} (a date, 2026-11-01, or an RFC 3339 time)") from None


def range_and_version(
    start: str, end: str, registry: Path | None, version: str | None, how: str
) -> tuple[Any, Any, str]:
    """The ``--from``/``--to`` range, the registry and the version a command runs on (the
    current one unless named; ``how``: how to name one)."""
    from stream_jobs import backtest as bt

    window = bt.Range(_day_ms(start, "from"), _day_ms(end, "to"))
    if window.end_ms <= window.start_ms:
        raise UserError("--to must be after --from")
    reg = _registry(registry)
    chosen = version or reg.current()
    if chosen is None:
        raise UserError(f"no model version: train one, or {how}")
    return window, reg, chosen


def backtest_cmd(
    start: Annotated[str, typer.Option("--from", help="First day (UTC), inclusive.")],
    end: Annotated[str, typer.Option("--to", help="Last day (UTC), exclusive.")],
    strategy: StrategyRef = None,
    against: Annotated[
        str | None,
        typer.Option(help="A second strategy (file or version) decided on the same events."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model version. Default: current.")] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Labelled transactions: .jsonl, .csv(.gz) or a lake. Default: the lake."),
    ] = None,
    mapping: MappingOpt = None,
    budget: Annotated[
        int | None, typer.Option(min=0, help="Daily alert budget, instead of each strategy's own.")
    ] = None,
    maturity_days: MaturityOpt = None,
    html: Annotated[Path | None, typer.Option(help="Write the report with charts here.")] = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay a range through the offline features, a model version and one or two
    strategies: per rule and per strategy, fires, alerts per day against the budget, money
    flagged and caught, precision and recall on known labels."""
    try:
        from stream_jobs import backtest as bt
        from stream_jobs.backtest_report import render
    except ImportError as error:
        raise MissingExtra("train", error.name) from None
    window, reg, version = range_and_version(start, end, registry, model, "give --model")
    source = data or load_settings().lake_path
    named = [named_strategy(strategy), *([named_strategy(against)] if against is not None else [])]
    try:
        scored = bt.scored(reg, version, source, window, mapping, matured(maturity_days))
    except bt.BacktestError as error:
        raise UserError(str(error)) from None
    result = bt.report(scored, window, named, budget, version, source.name)
    if reported(result, html, render, as_json):
        return
    _print(result)
    if html is not None:
        out.print(f"report: {html}")


def _print(result: dict[str, Any]) -> None:
    labels = result["labels"]
    out.print(
        f"{result['data']['events']:,} transactions {result['range']['from']} .. "
        f"{result['range']['to']} (history: {result['data']['history_events']:,}), model "
        f"{result['model']['version']}; unknown outcome: {labels['unknown_share']:.1%}"
    )
    for key, s in result["strategies"].items():
        summary = s["summary"]
        out.print(
            f"[bold]{key}: {s['name']}[/] alerts/day {summary['alerts_per_day_mean']:,.1f} "
            f"(max {summary['alerts_per_day_max']:,}, budget {result['budget'] or '-'}), "
            f"precision {_ratio(summary['precision'])}, recall {_ratio(summary['recall'])}, "
            f"net {summary['net_usd']:,.0f} USD"
        )
        table = Table(
            "rule",
            "state",
            "fires",
            "cards",
            "USD flagged",
            "fraud caught",
            "false pos.",
            "precision",
            "net USD",
        )
        for r in s["rules"]:
            table.add_row(
                r["id"],
                r["state"],
                f"{r['fires']:,}",
                f"{r['distinct_cards']:,}",
                f"{r['usd_flagged']:,.0f}",
                f"{r['fraud_caught']:,}",
                f"{r['false_positives']:,}",
                _ratio(r["precision"]),
                f"{r['net_usd']:,.0f}",
            )
        out.print(table)
    if "comparison" in result:
        c = result["comparison"]
        for key in ("newly_flagged", "no_longer_flagged"):
            p = c[key]
            out.print(
                f"{key.replace('_', ' ')}: {p['count']:,} ({p['usd']:,.0f} USD; "
                f"{p['fraud']:,} fraud, {p['legit']:,} legit)"
            )


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
