"""``fraudstream models compare``: two model versions judged on the decision ledger's
matured, labelled decisions, with bootstrap intervals (``stream_jobs.compare``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.cli.backtest import (
    MaturityOpt,
    StrategyRef,
    matured,
    range_and_version,
    reported,
)  # fmt: skip
from services.cli.models import JsonOpt, RegistryOpt
from services.cli.strategy import named_strategy
from services.core.errors import MissingExtra, UserError
from services.core.settings import load_settings

out = Console()
_FIGURES = (("pr_auc", "PR-AUC", "{:.4f}"), ("recall_at_budget", "recall at budget", "{:.1%}"),
            ("cost_usd", "cost (USD)", "{:,.0f}"), ("ece", "calibration error", "{:.4f}"),
            ("brier", "Brier", "{:.5f}"))  # fmt: skip


def compare_cmd(
    a: Annotated[str, typer.Argument(help="The champion: a model version.")],
    b: Annotated[str, typer.Argument(help="The challenger: a model version.")],
    start: Annotated[str, typer.Option("--from", help="First day (UTC), inclusive.")],
    end: Annotated[str, typer.Option("--to", help="Last day (UTC), exclusive.")],
    lake: Annotated[
        Path | None, typer.Option(help="The lake. Default: the configured one.")
    ] = None,
    strategy: StrategyRef = None,
    maturity_days: MaturityOpt = None,
    rescore: Annotated[
        bool,
        typer.Option(
            help="Score every decision from its recorded features, even where a version's "
            "score was recorded."
        ),
    ] = False,
    weighted: Annotated[
        bool,
        typer.Option(
            help="Judge on the reviewed decisions only (flagged, or in the random review "
            "sample), each weighted by the inverse of its probability of review."
        ),
    ] = False,
    bootstrap: Annotated[int, typer.Option(min=0, max=10_000, help="Bootstrap resamples.")] = 200,
    html: Annotated[Path | None, typer.Option(help="Write the report with charts here.")] = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A against B on the lake's decisions with known outcomes: PR-AUC, recall at the
    strategy's daily budget, cost by the strategy's costs, calibration; each with a 95 %
    bootstrap interval, and the difference B - A with its own."""
    try:
        from stream_jobs import backtest as bt
        from stream_jobs import compare
        from stream_jobs.compare_report import render
    except ImportError as error:
        raise MissingExtra("train", error.name) from None
    window, reg, _ = range_and_version(start, end, registry, a, "name it")
    for version in (a, b):
        reg.path(version)  # a clear error for a version that is not there
    _, chosen = named_strategy(strategy)
    source = lake or load_settings().lake_path
    try:
        result = compare.report(reg, a, b, source, window, chosen.thresholds,
                                matured(maturity_days), rescore=rescore,
                                bootstrap=bootstrap, weighted=weighted)  # fmt: skip
    except bt.BacktestError as error:
        raise UserError(str(error)) from None
    if not reported(result, html, render, as_json):
        _print(result)


def _print(result: dict[str, Any]) -> None:
    book = result["ledger"]
    out.print(
        f"{result['a']} against {result['b']}, {result['range']['from']} .. "
        f"{result['range']['to']}: {result['rows']:,} decisions ({result['fraud']:,} fraud) of "
        f"{book['decisions']:,}; labels mature after {result['maturity_days']:g} days, "
        f"unknown outcome {book['unknown_share']:.1%}"
    )
    table = Table("figure", result["a"], result["b"], "B - A", "B - A, 95 % interval")
    for key, name, form in _FIGURES:
        f = result[key]
        low, high = f["difference"]["ci95"]
        table.add_row(name, _form(form, f["a"]["value"]), _form(form, f["b"]["value"]),
                      _form(form, f["difference"]["value"]),
                      f"{_form(form, low)} .. {_form(form, high)}")  # fmt: skip
    out.print(table)
    winner = result["winner"]
    out.print(f"winner on PR-AUC: {winner}" if winner else "no winner: the interval holds 0")


def _form(form: str, value: float | None) -> str:
    return "-" if value is None or value != value else form.format(value)
