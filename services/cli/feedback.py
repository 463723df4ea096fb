"""CLI commands of the feedback loop: label an alert, look at a card, run the faust app."""

from __future__ import annotations

import getpass
import json
from typing import Annotated, Literal

import typer

from services.cli.options import kafka_settings
from services.core.errors import MissingExtra, UserError
from services.core.redis_check import check_redis
from services.core.settings import load_settings


def feedback_cmd(
    transaction_id: Annotated[str, typer.Argument(help="The alerted transaction.")],
    label: Annotated[Literal["fraud", "legit"], typer.Option(help="The disposition.")],
    note: Annotated[str, typer.Option(help="Free text for the record.")] = "",
    analyst: Annotated[str | None, typer.Option(help="Who decided (default: the user).")] = None,
) -> None:
    """Send an analyst's disposition of an alert to `alert-feedback`."""
    from services.clients.feedback import FeedbackProducer

    producer = FeedbackProducer(kafka_settings())
    producer.send(transaction_id, label, analyst or getpass.getuser(), note)
    if producer.close(30):
        raise UserError(f"the broker did not acknowledge the feedback within 30 s ({label})")
    typer.echo(f"{label}: {transaction_id}")


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
    from models import redis_layout as layout
    from models.online import OnlineFeatureStore

    settings = load_settings()
    client = settings.redis.client()
    names = settings.token.tokenizer().names("card", card)  # as the pipeline names the card
    card_id = next((n for n in names if client.exists(*layout.card_keys(n))), names[0])
    blocked: bytes | None = client.get(layout.blocklist_card(card_id))  # type: ignore[assignment]
    labels: dict[bytes, bytes] = client.hgetall(layout.card_labels(card_id))  # type: ignore[assignment]
    view = {
        "card_id": card_id,
        "features": OnlineFeatureStore(client).snapshot(card_id),
        "counted_transactions": client.zcard(layout.card_seen(card_id)),
        "blocklisted_by": blocked.decode() if blocked else None,
        "labels": {k.decode(): v.decode() for k, v in labels.items()},
    }
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
    check_redis(settings.redis)
    app.run(settings)
