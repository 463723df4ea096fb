"""The versioned Redis key and value layout of online features, shared by writers and readers.

``fs:v1:card:{card_id}:events``   ZSET, score = event time (ms), member = a packed PriorEvent;
                                  the card's last 30 days, the member unique per transaction.
``fs:v1:card:{card_id}:features`` STRING, one JSON object: the latest computed features plus
                                  ``event_time`` and ``transaction_id``, so readers can check
                                  freshness (one SET per card per batch, read with one GET).
``fs:v1:merchant:{merchant_id}``  HASH ``fraud``, ``labelled``: counts of known labels.
``fs:v1:label:{transaction_id}``  STRING, set once when a label is counted (idempotence).
``fs:v1:blocklist:card:{card_id}``, ``fs:v1:blocklist:device:{device_id}``
                                  STRING (why), with a TTL: confirmed fraud; the job declines.

Bump VERSION when a layout changes; old keys then expire by their TTL.
"""

from __future__ import annotations

from typing import Final

import msgspec

VERSION: Final = "v1"
PREFIX: Final = f"fs:{VERSION}"


class PriorEvent(msgspec.Struct, frozen=True, array_like=True):
    """What the online features need to remember of a card's past event."""

    transaction_id: str
    time: int
    amount_usd: float
    merchant_id: str
    country: str
    device_id: str | None
    lat: float | None
    lon: float | None


_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder(PriorEvent).decode


def pack(event: PriorEvent) -> bytes:
    return _pack(event)


def unpack(raw: bytes) -> PriorEvent:
    return _unpack(raw)


def card_events(card_id: str) -> str:
    return f"{PREFIX}:card:{card_id}:events"


def card_features(card_id: str) -> str:
    return f"{PREFIX}:card:{card_id}:features"


def merchant_labels(merchant_id: str) -> str:
    return f"{PREFIX}:merchant:{merchant_id}"


def label_seen(transaction_id: str) -> str:
    return f"{PREFIX}:label:{transaction_id}"


def blocklist_card(card_id: str) -> str:
    return f"{PREFIX}:blocklist:card:{card_id}"


def blocklist_device(device_id: str) -> str:
    return f"{PREFIX}:blocklist:device:{device_id}"


def card_labels(card_id: str) -> str:
    """Analysts' labels of a card's transactions: a hash of transaction_id -> label."""
    return f"{PREFIX}:card:{card_id}:labels"


def alert_context(transaction_id: str) -> str:
    """An alert as the job published it, kept for the feedback on it."""
    return f"{PREFIX}:alert:{transaction_id}"
