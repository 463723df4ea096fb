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

_QUERY: Final = """
    WITH seen AS (
        SELECT transaction_id, event_time, amount, currency, merchant_id, merchant_category,
               country, device_id,
               row_number() OVER (PARTITION BY device_id ORDER BY event_time) = 1
                   AND device_id IS NOT NULL AND event_time > min(event_time) OVER () AS new_device,
               row_number() OVER (PARTITION BY country ORDER BY event_time) = 1
                   AND event_time > min(event_time) OVER () AS new_country
        FROM transactions
        WHERE card_id = ? AND date >= ? AND date <= ? AND event_time <= ?
    )
    SELECT s.*, d.decision, d.score, d.reasons, l.label, l.analyst
    FROM seen s
    LEFT JOIN decisions d USING (transaction_id)
    LEFT JOIN labels l USING (transaction_id)
    WHERE s.event_time >= ?
    ORDER BY s.event_time DESC
    LIMIT ?
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
            _QUERY, [card, _date(first), _date(until_ms), until_ms, since_ms, LIMIT]
        )
        names = [column[0] for column in cursor.description]
        rows = cursor.fetchall()
    except (duckdb.Error, OSError) as error:
        raise LakeError(f"the lake: {error}") from None
    return [Entry(**dict(zip(names, row, strict=True))) for row in rows]


def _date(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d")
