"""CLI commands of the feedback loop: label an alert, look at a card, run the faust app."""

from __future__ import annotations

import dataclasses
import getpass
import json
from typing import Annotated, Literal

import typer

from services.cli.options import kafka_settings
from services.core.contract import parse_event_time
from services.core.errors import MissingExtra, UserError
from services.core.redis_check import check_redis
from services.core.settings import load_settings

REDRIVE = "redrive"


def feedback_cmd(
    transaction_id: Annotated[
        str,
        typer.Argument(
            help="The transaction (alerted or not); or `redrive`: send the "
            "dead letters of alert-feedback.dlq again.",
            show_default=False,
        ),
    ],
    label: Annotated[
        Literal["fraud", "legit"] | None, typer.Option(help="The disposition.")
    ] = None,
    note: Annotated[str, typer.Option(help="Free text for the record.")] = "",
    analyst: Annotated[str | None, typer.Option(help="Who decided (default: the user).")] = None,
    event_time: Annotated[
        str | None,
        typer.Option(
            help="When the transaction happened, if known (RFC 3339 or epoch ms; a "
            "chargeback's date): speeds up finding one that was never alerted."
        ),
    ] = None,
    from_beginning: Annotated[
        bool, typer.Option(help="redrive: every dead letter, not only those not re-sent yet.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Send an analyst's disposition of a transaction to `alert-feedback` (`redrive`: re-send
    the dead letters of `alert-feedback.dlq`, once their cause is fixed)."""
    from services.clients.feedback import FeedbackProducer, redrive

    settings = kafka_settings()
    if transaction_id == REDRIVE and label is None:
        redriven = redrive(settings, from_beginning)
        report = dataclasses.asdict(redriven)
        typer.echo(json.dumps(report) if as_json else
                   ", ".join(f"{k} {v}" for k, v in report.items()))  # fmt: skip
        if redriven.unacknowledged:
            raise typer.Exit(1)
        return
    if label is None:
        raise UserError("--label fraud|legit is required")
    when = None if event_time is None else _time(event_time)
    producer = FeedbackProducer(settings)
    producer.send(transaction_id, label, analyst or getpass.getuser(), note, when)
    if producer.close(30):
        raise UserError(f"the broker did not acknowledge the feedback within 30 s ({label})")
    typer.echo(f"{label}: {transaction_id}")


def _time(text: str) -> int:
    try:
        return parse_event_time(int(text) if text.isdigit() else text, "event_time")
    except ValueError as error:
        raise typer.BadParameter(
            str(error).split(" - at")[0], param_hint="'--event-time'"
        ) from None


def features_cmd(
    card: Annotated[
        str,
        typer.Argument(
            help="The card: its number (grouped or not), its id as the bank has it, or its token."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """What Redis holds for a card: latest features, blocklisting, analysts' labels."""
    from models.online.store import card_view

    settings = load_settings()
    names = settings.token.tokenizer().names("card", card)  # as the pipeline names the card
    view = card_view(settings.redis.client(), names)
    if as_json:
        typer.echo(json.dumps(view))
        return
    for key, value in view.items():
        if key == "features" and isinstance(value, dict):
            for name, number in value.items():
                typer.echo(f"  {name:<26} {number}")
        else:
            typer.echo(f"{key}: {value}")


def feedback_app_cmd() -> None:
    """Run the faust feedback app (one worker) until SIGTERM or Ctrl-C."""
    try:
        from stream_jobs.feedback import app
    except ImportError as error:
        raise MissingExtra("feedback", error.name) from None
    settings = kafka_settings()
    check_redis(settings.redis, outage_ok=True)  # it waits for Redis, visibly
    app.run(settings)
