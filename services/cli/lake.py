"""``fraudstream lake ...``: query the lake with DuckDB, compact it, replay it into a topic."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.cli.options import setting_option
from services.core.errors import MissingExtra, UserError
from services.core.kafka_check import check_kafka
from services.core.settings import Settings, load_settings

lake_app = typer.Typer(help="The data lake: query it, compact it, replay it into a topic.")
out = Console()

LakeOpt = Annotated[Path | None, setting_option("lake_dir", "The lake directory.", "lake")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def _lake_module() -> ModuleType:
    try:
        import duckdb  # noqa: F401

        from models.lake import tables as lake
    except ImportError as error:
        raise MissingExtra("feedback", error.name) from None
    return lake


def _open(lake_dir: Path | None) -> tuple[ModuleType, Any, Settings]:
    lk = _lake_module()
    settings = load_settings(lake_dir=lake_dir)
    return lk, lk.Lake(settings.lake_path), settings


def _run_sql(connection: Any, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    import duckdb

    try:
        result = connection.execute(sql)
    except duckdb.Error as error:  # one line: DuckDB's SQL excerpt and caret are dropped
        lines = [line.strip() for line in str(error).splitlines()]
        kept = [line for line in lines if line and not line.startswith(("LINE ", "^"))]
        raise UserError(f"query failed: {'; '.join(kept)}") from None
    columns = [d[0] for d in result.description] if result.description else []
    return columns, result.fetchall()


@lake_app.command("query")
def query_cmd(
    sql: Annotated[str, typer.Argument(help="DuckDB SQL over transactions, decisions, labels.")],
    lake: LakeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per row.")] = False,
) -> None:
    """Run SQL over the lake: views `transactions`, `decisions` and `labels` keep one row per
    transaction (the latest decision and label); `*_all` views keep every row written."""
    lk, opened, _ = _open(lake)
    columns, rows = _run_sql(lk.connect(opened), sql)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(dict(zip(columns, row, strict=True)), default=str))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    out.print(table)
    out.print(f"{len(rows)} rows")


@lake_app.command("status")
def status_cmd(lake: LakeOpt = None, as_json: JsonOpt = False) -> None:
    """Files, rows and date partitions of each table."""
    lk, opened, _ = _open(lake)
    report = {}
    for name in lk.TABLES:
        manifest = opened.manifest(name)
        report[name] = {
            "files": len(manifest.files),
            "rows": sum(manifest.files.values()),
            "dates": sorted({f.split("/", 1)[0].removeprefix("date=") for f in manifest.files}),
            "retired_files": len(manifest.retired),
        }
    if as_json:
        typer.echo(json.dumps(report))
        return
    table = Table("table", "files", "rows", "dates", "retired files")
    for name, figures in report.items():
        dates = figures["dates"]
        span = f"{dates[0]} .. {dates[-1]}" if dates else "-"
        table.add_row(name, str(figures["files"]), str(figures["rows"]), span,
                      str(figures["retired_files"]))  # fmt: skip
    out.print(table)


@lake_app.command("compact")
def compact_cmd(
    lake: LakeOpt = None,
    target_rows: Annotated[int, typer.Option(min=2, help="Files this large are left alone.")] = (
        1_000_000
    ),
    as_json: JsonOpt = False,
) -> None:
    """Merge each date's small files into one (safe while the feedback app writes)."""
    lk, opened, _ = _open(lake)
    reports = [opened.compact(name, target_rows) for name in lk.TABLES]
    if as_json:
        typer.echo(json.dumps([vars(r) for r in reports]))
        return
    for r in reports:
        skipped = f"; changed meanwhile, skipped: {', '.join(r.skipped)}" if r.skipped else ""
        out.print(
            f"{r.table}: {r.files_in} files -> {r.files_out} in {r.partitions} dates, "
            f"{r.rows} rows; {r.deleted} retired files deleted{skipped}"
        )


@lake_app.command("replay")
def replay_cmd(
    start: Annotated[
        datetime, typer.Option("--from", formats=["%Y-%m-%d"], help="First UTC date, YYYY-MM-DD.")
    ],
    end: Annotated[
        datetime, typer.Option("--to", formats=["%Y-%m-%d"], help="Last UTC date (included).")
    ],
    topic: Annotated[str | None, typer.Option(help="Target topic (default: transactions).")] = None,
    lake: LakeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-feed the archived transactions of a date range into a topic, in event-time order
    (a backfill: features and decisions are idempotent by transaction id)."""  # fmt: skip
    if end < start:
        raise UserError(f"--to {end:%Y-%m-%d} is before --from {start:%Y-%m-%d}")
    from services.clients.producer import TransactionProducer
    from services.core.contract import Transaction

    lk, opened, settings = _open(lake)
    check_kafka(settings.kafka)
    connection = lk.connect(opened)
    query = connection.execute(
        "SELECT * EXCLUDE (date) FROM transactions WHERE CAST(date AS DATE) BETWEEN ? AND ? "
        "ORDER BY event_time, transaction_id",
        [start.date(), end.date()],
    )
    columns = [d[0] for d in query.description]
    with TransactionProducer(settings, topic) as producer:
        while batch := query.fetchmany(10_000):
            for row in batch:
                producer.send(Transaction(**dict(zip(columns, row, strict=True))))
        report = producer.flush()
    summary = {"topic": producer.topic, "sent": report.delivered, "failed": report.failed}
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        out.print(f"replayed {report.delivered} transactions into {producer.topic}"
                  + (f"; {report.failed} failed" if report.failed else ""))  # fmt: skip
    if report.failed:
        raise typer.Exit(1)


def erase_cmd(
    customer: Annotated[
        str,
        typer.Option("--customer", help="The customer's id as the bank knows it (or its token)."),
    ],
    lake: LakeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Erase a customer: their lake rows (files rewritten atomically) and their cards' Redis
    state; print what was removed."""
    _lake_module()
    from models.lake.erasure import erase_customer

    _, opened, settings = _open(lake)
    names = settings.token.tokenizer().names("customer", customer)
    erased = erase_customer(opened, settings.redis.client(), names)
    report = {"customer": erased.customer, "cards": erased.cards,
              "transactions": erased.transactions, "lake_rows": erased.lake_rows,
              "redis_keys": erased.redis_keys}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(report))
        return
    out.print(f"erased customer {erased.customer}: {erased.cards} cards, "
              f"{erased.transactions} transactions; lake rows {erased.lake_rows}; "
              f"{erased.redis_keys} Redis keys")  # fmt: skip
