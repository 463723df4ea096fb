"""The versioned Redis key and value layout of online features, shared by writers and readers.

Every key carries a hash tag (``{c:card}``, ``{m:merchant}``, ``{d:device}``, ``{t:transaction}``)
so that the keys one script touches sit in one Redis Cluster slot.

``fs:v2:{c:CARD}:state``      STRING, msgpack ``models.fold.CardState``: the card's bounded state
                              and its latest features (read by analysts' tools).
``fs:v2:{c:CARD}:seen``       ZSET, member = 8-byte digest of a transaction id, score = the card's
                              latest time when it was counted: idempotence by id, trimmed to 30
                              days of the card's own event time.
``fs:v2:{c:CARD}:recent``     HASH digest -> msgpack feature row of the transactions the card
                              counted within the replay horizon (at most 64): a replay is
                              decided with the very same features.
``fs:v2:{c:CARD}:labels``     HASH transaction_id -> latest label.
``fs:v2:{c:CARD}:blocked``    STRING (the transaction that blocked it), with a TTL: declined.
``fs:v2:{d:DEVICE}:blocked``  the same for a device.
``fs:v2:{m:MERCHANT}:days``   HASH ``n<day>`` transactions and ``f<day>`` confirmed frauds per
                              UTC epoch day; days past the merchant windows are deleted.
``fs:v2:{m:MERCHANT}:label:ID`` STRING, the label counted for that transaction (latest wins).
``fs:v2:{t:ID}:alert``        STRING, an alert as the job published it, kept for its feedback.

Bump VERSION when a layout changes; old keys then expire by their TTL (v1 keys: 31 days).
"""

from __future__ import annotations

import hashlib
from typing import Final

VERSION: Final = "v2"
PREFIX: Final = f"fs:{VERSION}"


def card_state(card_id: str) -> str:
    return f"{PREFIX}:{{c:{card_id}}}:state"


def card_seen(card_id: str) -> str:
    return f"{PREFIX}:{{c:{card_id}}}:seen"


def card_recent(card_id: str) -> str:
    return f"{PREFIX}:{{c:{card_id}}}:recent"


def card_labels(card_id: str) -> str:
    return f"{PREFIX}:{{c:{card_id}}}:labels"


def blocklist_card(card_id: str) -> str:
    return f"{PREFIX}:{{c:{card_id}}}:blocked"


def blocklist_device(device_id: str) -> str:
    return f"{PREFIX}:{{d:{device_id}}}:blocked"


def merchant_days(merchant_id: str) -> str:
    return f"{PREFIX}:{{m:{merchant_id}}}:days"


def merchant_label(merchant_id: str, transaction_id: str) -> str:
    return f"{PREFIX}:{{m:{merchant_id}}}:label:{transaction_id}"


def alert_context(transaction_id: str) -> str:
    return f"{PREFIX}:{{t:{transaction_id}}}:alert"


def card_keys(card_id: str) -> tuple[str, ...]:
    """Every key of one card (for erasure)."""
    return (card_state(card_id), card_seen(card_id), card_recent(card_id), card_labels(card_id),
            blocklist_card(card_id))  # fmt: skip


def transaction_digest(transaction_id: str) -> bytes:
    """The seen-set member of a transaction id: fixed size whatever the id's length."""
    return hashlib.blake2b(transaction_id.encode(), digest_size=8).digest()
