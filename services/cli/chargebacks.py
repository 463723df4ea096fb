"""``fraudstream chargebacks import FILE``: an issuer's chargebacks as fraud labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from services.cli.options import kafka_settings
from services.core.errors import UserError

chargebacks_app = typer.Typer(help="Chargebacks: fraud labels for any transaction, from a file.")


@chargebacks_app.command("import")
def import_cmd(
    file: Annotated[
        Path,
        typer.Argument(help="CSV: transaction_id, transaction_date, reason_code[, received_date]."),
    ],
    by: Annotated[str, typer.Option(help="Recorded as the labels' analyst.")] = "chargebacks",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check the whole file (a bad row refuses it, naming every bad line: nothing is
    half-imported), then send each chargeback as a fraud label with its transaction's date
    and its arrival date. Importing the same file again labels the same way."""
    from services.clients import chargebacks

    found = chargebacks.read(file)
    unacknowledged = chargebacks.send(kafka_settings(), found, by)
    if unacknowledged:
        raise UserError(f"{unacknowledged} of {len(found)} not acknowledged by the broker: "
                        "import the file again (a repeat labels the same way)")  # fmt: skip
    report = {"imported": len(found), "file": file.name}
    typer.echo(json.dumps(report) if as_json else f"{len(found):,} chargebacks imported")
