"""Chargebacks as an issuer receives them: a CSV with a transaction id, the transaction's date
and a reason code per row (and, optionally, the day the chargeback arrived). Each becomes a
fraud label for that transaction, alerted or approved, sent as the pipeline's ``Feedback``
with the transaction's date and the arrival date as its time.

A file is checked whole before anything is sent: one bad row refuses the file, and the error
names every bad line, so nothing is ever half-imported."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Final

import msgspec

from services.clients.feedback import FeedbackProducer
from services.core.contract import Chargeback
from services.core.errors import UserError
from services.core.settings import Settings

REQUIRED: Final = ("transaction_id", "transaction_date", "reason_code")
RECEIVED: Final = "received_date"  # optional; default: today
MAX_ROWS: Final = 1_000_000
SHOWN_ERRORS: Final = 20
_DAY_MS: Final = 86_400_000


class ChargebackFileError(UserError):
    """The file was refused: the message names the lines."""


def _when(text: str) -> int | str:
    """A day (2026-11-02: its noon, UTC) as epoch ms, or the text (an RFC 3339 time)."""
    value = text.strip()
    return f"{value}T12:00:00Z" if len(value) == 10 else value


def _row(row: dict[str, str | None], today_ms: int) -> Chargeback:
    """One row, or a ValueError naming the field."""
    received = row.get(RECEIVED)
    try:
        chargeback = Chargeback(
            transaction_id=(row["transaction_id"] or "").strip(),
            event_time=_when(row["transaction_date"] or ""),
            reason_code=(row["reason_code"] or "").strip(),
            received_at=_when(received) if received else today_ms,
        )  # fmt: skip
        checked = msgspec.convert(msgspec.to_builtins(chargeback), Chargeback)  # the lengths
    except (msgspec.ValidationError, ValueError) as error:
        raise ValueError(_field(str(error))) from None
    if checked.received_ms > today_ms + _DAY_MS:
        raise ValueError(f"{RECEIVED}: in the future")
    return checked


def _field(message: str) -> str:
    """``reason - at `$.name``` as ``name: reason`` (a file's columns are named otherwise)."""
    reason, _, where = message.partition(" - at `$.")
    name = where.rstrip("`")
    column = {"event_time": "transaction_date", "received_at": RECEIVED}.get(name, name)
    return f"{column}: {reason}" if name else reason


def read(path: Path) -> list[Chargeback]:
    """Every row of the file, checked; a ChargebackFileError names the bad lines."""
    today = int(time.time() * 1000)
    found: list[Chargeback] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise ChargebackFileError(f"{path.name}: no column {', '.join(missing)} (the "
                                          f"header needs {', '.join(REQUIRED)})")  # fmt: skip
            for row in reader:
                line = reader.line_num
                if len(found) + len(errors) >= MAX_ROWS:
                    raise ChargebackFileError(f"{path.name}: more than {MAX_ROWS:,} rows")
                try:
                    chargeback = _row(row, today)
                except ValueError as error:
                    errors.append(f"line {line}: {error}")
                    continue
                if chargeback.transaction_id in seen:
                    errors.append(f"line {line}: transaction_id: again (first on line "
                                  f"{seen[chargeback.transaction_id]})")  # fmt: skip
                    continue
                seen[chargeback.transaction_id] = line
                found.append(chargeback)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ChargebackFileError(f"{path.name}: cannot read it as CSV: {error}") from None
    if errors:
        shown = "\n".join(errors[:SHOWN_ERRORS])
        more = f"\n… and {len(errors) - SHOWN_ERRORS} more" if len(errors) > SHOWN_ERRORS else ""
        raise ChargebackFileError(f"{path.name}: {len(errors)} bad rows, nothing imported:\n"
                                  f"{shown}{more}")  # fmt: skip
    if not found:
        raise ChargebackFileError(f"{path.name}: no chargeback in it")
    return found


def send(settings: Settings, chargebacks: list[Chargeback], by: str) -> int:
    """Each as a fraud label on ``alert-feedback``; the number the broker did not
    acknowledge (a repeat of the file labels the same transactions the same way)."""
    producer = FeedbackProducer(settings)
    for c in chargebacks:
        feedback = c.feedback(by)
        producer.send(c.transaction_id, "fraud", by, feedback.note, c.event_time_ms,
                      at=c.received_ms)  # fmt: skip
    return producer.close(30)
