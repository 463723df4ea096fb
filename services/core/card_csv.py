"""The public synthetic card-transaction CSV format (``fraudTrain.csv``/``fraudTest.csv`` style).

One mapping from its columns onto the Transaction contract, used by ``produce --from-csv``
and by training. Column mapping:

==========================  ======================================================
CSV column                  Transaction field
==========================  ======================================================
``trans_num``               ``transaction_id``
``trans_date_trans_time``   ``event_time`` (the file has no zone: read as UTC)
``cc_num``                  ``card_id`` and ``customer_id`` (the file has no customer id)
``merchant``                ``merchant_id`` (its constant ``fraud_`` prefix removed)
``category``                ``merchant_category`` (an MCC, see ``CATEGORY_TO_MCC``) and
                            ``channel`` (``*_net``: ecommerce, else card_present)
``amt``                     ``amount`` in ``USD``, ``country`` ``US``
``merch_lat``/``merch_long`` ``lat``/``lon``: where the card was used (both empty: unknown)
``is_fraud``                the label, kept apart from the event
==========================  ======================================================

Empty values are allowed where the data has none: an empty ``category`` is misc retail
(``UNKNOWN_CATEGORY_MCC``, card present), empty coordinates are an event without a place, and
the unused ``lat``/``long``/``unix_time`` may be empty. A ``.csv.gz`` file is read as it is.

Dropped: the cardholder's name, gender, street, city, state, zip, home ``lat``/``long``,
``city_pop``, ``job`` and ``dob`` (personal data the pipeline must not carry), and
``unix_time`` (shifted years away from ``trans_date_trans_time`` in the published files).
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TextIO

import msgspec

from services.core.contract import InvalidEvent, Transaction
from services.core.errors import UserError

REQUIRED_COLUMNS: Final = (
    "trans_date_trans_time", "cc_num", "merchant", "category", "amt", "lat", "long",
    "merch_lat", "merch_long", "trans_num", "unix_time", "is_fraud",
)  # fmt: skip

CATEGORY_TO_MCC: Final = {
    "gas_transport": "5541",
    "grocery_pos": "5411",
    "grocery_net": "5411",
    "home": "5200",
    "shopping_pos": "5311",
    "shopping_net": "5311",
    "kids_pets": "5995",
    "entertainment": "7999",
    "food_dining": "5812",
    "personal_care": "7230",
    "health_fitness": "7997",
    "misc_pos": "5999",
    "misc_net": "5999",
    "travel": "4722",
}
UNKNOWN_CATEGORY_MCC: Final = "5999"  # misc retail, for categories the mapping does not know
_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"


class CsvFormatError(UserError, ValueError):
    """The file is not in the expected format; the message names what is wrong."""


class CsvRow(msgspec.Struct, frozen=True):
    """One row: its line number, the transaction (or why it is invalid) and its label."""

    line: int
    event: Transaction | InvalidEvent
    is_fraud: bool


def check_columns(columns: list[str] | None, path: Path) -> None:
    """Raise CsvFormatError naming the missing columns."""
    if not columns:
        raise CsvFormatError(f"{path.name}: empty file, expected a header row")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise CsvFormatError(f"{path.name}: missing columns {', '.join(missing)}")


def to_transaction(row: dict[str, str]) -> Transaction:
    """Map one CSV row onto the contract; raises ValueError/TypeError when a value is bad."""
    try:
        when = datetime.strptime(row["trans_date_trans_time"], _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(
            f"bad trans_date_trans_time {row['trans_date_trans_time'][:40]!r} - at `$.event_time`"
        ) from None
    category = row["category"]
    merchant = row["merchant"].removeprefix("fraud_")
    return Transaction(
        transaction_id=row["trans_num"],
        event_time=int(when.timestamp() * 1000),
        card_id=row["cc_num"],
        customer_id=row["cc_num"],
        merchant_id=merchant,
        merchant_category=CATEGORY_TO_MCC.get(category, UNKNOWN_CATEGORY_MCC),
        amount=_number(row["amt"], "amount"),
        currency="USD",
        country="US",
        channel="ecommerce" if category.endswith("_net") else "card_present",
        lat=_coordinate(row["merch_lat"], row["merch_long"], "lat"),
        lon=_coordinate(row["merch_long"], row["merch_lat"], "lon"),
    )


def _coordinate(text: str, other: str, field: str) -> float | None:
    """A coordinate, or None when the row has neither (an event without a place)."""
    return None if not text.strip() and not other.strip() else _number(text, field)


def is_card_csv_name(path: Path) -> bool:
    return path.name.endswith((".csv", ".csv.gz"))


def open_text(path: Path) -> TextIO:
    """A CSV file for reading as text, gzip-compressed when its name ends in ``.gz``."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", newline="", encoding="utf-8")
    return path.open(newline="", encoding="utf-8")


def _number(text: str, field: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"not a number: {text[:20]!r} - at `$.{field}`") from None


def read_card_csv(path: Path) -> Iterator[CsvRow]:
    """Rows of the file as transactions with labels; invalid rows come back as InvalidEvent."""
    if not path.is_file():
        raise CsvFormatError(f"{path}: no such file")
    with open_text(path) as handle:
        reader = csv.DictReader(handle)
        check_columns(list(reader.fieldnames or []), path)
        for row in reader:
            line = reader.line_num
            try:
                event: Transaction | InvalidEvent = to_transaction(row)
            except (ValueError, TypeError, AttributeError) as error:
                message = str(error)
                field = message.rsplit("`$.", 1)[-1].rstrip("`") if "`$." in message else "$"
                event = InvalidEvent(field, message.split(" - at `")[0])
            yield CsvRow(line, event, row.get("is_fraud", "").strip() == "1")
