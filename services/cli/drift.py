"""``fraudstream models drift``: how far a range of past transactions moved from what a model
version learned (PSI per feature and for the score), from the lake or a file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.cli.backtest import range_and_version, reported
from services.cli.models import JsonOpt, MappingOpt, RegistryOpt
from services.core.errors import MissingExtra, UserError
from services.core.settings import load_settings

out = Console()


def drift_cmd(
    start: Annotated[str, typer.Option("--from", help="First day (UTC), inclusive.")],
    end: Annotated[str, typer.Option("--to", help="Last day (UTC), exclusive.")],
    version: Annotated[
        str | None, typer.Argument(help="Model version. Default: the current one.")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Transactions: .jsonl, .csv(.gz) or a lake. Default: the lake."),
    ] = None,
    mapping: MappingOpt = None,
    html: Annotated[
        Path | None, typer.Option(help="Write the report with the histograms here.")
    ] = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """PSI of each feature and of the score over a range against the version's training
    data, most drifted first: 0.1 and over warns, 0.25 and over pages (as the alerts do)."""
    try:
        from stream_jobs import backtest as bt
        from stream_jobs import drift
        from stream_jobs.drift_report import render
    except ImportError as error:
        raise MissingExtra("train", error.name) from None
    window, reg, chosen = range_and_version(start, end, registry, version, "name it")
    try:
        result = drift.measure(reg, chosen, data or load_settings().lake_path, window, mapping)
    except bt.BacktestError as error:
        raise UserError(str(error)) from None
    if reported(result, html, render, as_json):
        return
    table = Table("feature", "PSI", "level", title=f"{chosen}: {result['rows']:,} transactions "
                  f"{result['range']['from']} .. {result['range']['to']}")  # fmt: skip
    for row in [result["score"], *result["features"]]:
        table.add_row(row["name"], f"{row['psi']:.4f}", row["level"])
    out.print(table)
