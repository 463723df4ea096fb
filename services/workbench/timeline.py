"""A card's recent history from the lake, as an investigator reads it: every transaction with
the decision that was acted on and its latest label, and a marker where the card used a device
or a country it had not used in the lookback before it (the handbook's "all recent
transactions of the card")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import duckdb

from models.errors import LakeError
from models.lake.tables import Lake, connect

DAY_MS: Final = 86_400_000
LOOKBACK_DAYS: Final = 60  # before the shown range, what "new" is judged against
LIMIT: Final = 500  # newest first; a card with more in 30 days is itself a finding

# The card's rows are filtered before anything is de-duplicated (the lake's one-row-per-
# transaction views window the whole table first): a case page reads its card, not the lake.
_QUERY: Final = """
    WITH card AS (
        SELECT * FROM transactions_all
        WHERE card_id = ? AND date >= ? AND date <= ? AND event_time <= ?
        QUALIFY row_number() OVER (PARTITION BY transaction_id ORDER BY event_time) = 1
    ), seen AS (
        SELECT transaction_id, event_time, amount, currency, merchant_id, merchant_category,
               country, device_id,
               row_number() OVER (PARTITION BY device_id ORDER BY event_time) = 1
                   AND device_id IS NOT NULL AND event_time > min(event_time) OVER () AS new_device,
               row_number() OVER (PARTITION BY country ORDER BY event_time) = 1
                   AND event_time > min(event_time) OVER () AS new_country
        FROM card
    ), shown AS (
        SELECT * FROM seen WHERE event_time >= ? ORDER BY event_time DESC LIMIT ?
    ), decided AS (
        SELECT transaction_id, decision, score, reasons FROM decisions_all
        WHERE date >= ? AND transaction_id IN (SELECT transaction_id FROM shown)
        QUALIFY row_number() OVER (PARTITION BY transaction_id ORDER BY decided_at) = 1
    ), labelled AS (
        SELECT transaction_id, label, analyst FROM labels_all
        WHERE transaction_id IN (SELECT transaction_id FROM shown)
        QUALIFY row_number() OVER (PARTITION BY transaction_id ORDER BY labelled_at DESC) = 1
    )
    SELECT s.*, d.decision, d.score, d.reasons, l.label, l.analyst
    FROM shown s
    LEFT JOIN decided d USING (transaction_id)
    LEFT JOIN labelled l USING (transaction_id)
    ORDER BY s.event_time DESC
"""


@dataclass(frozen=True)
class Entry:
    transaction_id: str
    event_time: int
    amount: float
    currency: str
    merchant_id: str
    merchant_category: str
    country: str
    device_id: str | None
    new_device: bool
    new_country: bool
    decision: str | None  # None: not decided (yet), or decided before the lake began
    score: float | None
    reasons: list[str] | None
    label: str | None
    analyst: str | None


def card_timeline(lake: Lake, card: str, since_ms: int, until_ms: int) -> list[Entry]:
    """The card's transactions from ``since_ms`` to ``until_ms``, newest first."""
    if not lake.files("transactions"):
        return []
    first = since_ms - LOOKBACK_DAYS * DAY_MS
    try:
        cursor = connect(lake).execute(
            _QUERY, [card, _date(first), _date(until_ms), until_ms, since_ms, LIMIT,
                     _date(since_ms)]
        )  # fmt: skip
        names = [column[0] for column in cursor.description]
        rows = cursor.fetchall()
    except (duckdb.Error, OSError) as error:
        raise LakeError(f"the lake: {error}") from None
    return [Entry(**dict(zip(names, row, strict=True))) for row in rows]


_SHARED_DEVICES: Final = """
    WITH mine AS (
        SELECT DISTINCT device_id FROM transactions_all
        WHERE card_id = ? AND device_id IS NOT NULL AND date >= ? AND date <= ?
            AND event_time BETWEEN ? AND ?
    )
    SELECT card_id, count(DISTINCT device_id) AS devices FROM transactions_all
    WHERE device_id IN (SELECT device_id FROM mine) AND card_id <> ?
        AND date >= ? AND date <= ? AND event_time BETWEEN ? AND ?
    GROUP BY card_id ORDER BY devices DESC, card_id LIMIT 50
"""


def cards_sharing_a_device(lake: Lake, card: str, since_ms: int, until_ms: int) -> list[str]:
    """The other cards used on any of this card's devices in the range (a shared phone or
    browser: a fraud ring's sign), those sharing the most devices first."""
    if not lake.files("transactions"):
        return []
    window = [_date(since_ms), _date(until_ms), since_ms, until_ms]
    try:
        rows = connect(lake).execute(_SHARED_DEVICES, [card, *window, card, *window]).fetchall()
    except (duckdb.Error, OSError) as error:
        raise LakeError(f"the lake: {error}") from None
    return [str(row[0]) for row in rows]


def _date(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d")
