"""The versioned Redis key and value layout of online features, shared by writers and readers.

Every key carries a hash tag (``{c:card}``, ``{m:merchant}``, ``{d:device}``, ``{t:transaction}``)
so that the keys one script touches sit in one Redis Cluster slot. Ids are never spliced in
raw: ``%``, ``{``, ``}`` and ``:`` are percent-encoded (``escape``), so no id can end a hash
tag early or pose as another key's suffix (``merchant_label("shop", "z}:days")`` once named
``merchant_days("shop}:label:z")``), and one card's keys still share one slot.

``fs:v3:{c:CARD}:state``      STRING, msgpack ``models.features.fold.CardState``: the card's
                              bounded state and its latest features (read by analysts' tools).
``fs:v3:{c:CARD}:seen``       ZSET, member = 8-byte digest of a transaction id, score = the card's
                              latest time when it was counted: idempotence by id, trimmed to 30
                              days of the card's own event time.
``fs:v3:{c:CARD}:recent``     HASH digest -> msgpack feature row of the transactions the card
                              counted within the replay horizon (at most 64): a replay is
                              decided with the very same features.
``fs:v3:{c:CARD}:labels``     HASH transaction_id -> latest label.
``fs:v3:{c:CARD}:blocked``    STRING (the transaction that blocked it), with a TTL: declined.
``fs:v3:{d:DEVICE}:blocked``  the same for a device.
``fs:v3:{m:MERCHANT}:days``   HASH ``n<day>`` transactions and ``f<day>`` confirmed frauds per
                              UTC epoch day; days past the merchant windows are deleted.
``fs:v3:{m:MERCHANT}:label:ID`` STRING ``time:label``, the label counted for that transaction
                              (the latest disposition by time wins).
``fs:v3:{t:ID}:alert``        STRING, msgpack context of an alert (card, customer, merchant, device,
                              time, decision), kept for its dispositions.
``fs:v3:{t:ID}:parked``       LIST of dispositions waiting for their transaction to be known.
``fs:v3:{e:NAME.DIGEST}:state`` STRING, msgpack ``models.features.entities.EntityState`` of a
                              declared entity value (DIGEST: a hash of the value, never it).
``fs:v3:{e:NAME.DIGEST}:seen``  ZSET digest of a transaction id -> job clock when counted, kept
                              for the replay horizon: a replay never counts an event twice.
``fs:v3:{feedback}:parked``   ZSET of transaction ids with parked dispositions, score = parked at.

Bump VERSION when a layout changes; old keys then expire by their TTL. v3 escapes ids (v2
spliced them raw); ``migrate_v2`` (``fraudstream redis migrate``) moves a v2 store's keys to
their v3 names, keeping their TTLs.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec

from services.core.contract import Alert, DecisionOutcome

VERSION: Final = "v3"
PREFIX: Final = f"fs:{VERSION}"
_ESCAPES: Final = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D", ":": "%3A"})


def escape(identifier: str) -> str:
    """An id as it may appear in a key name: no hash-tag braces, no separators (injective)."""
    return identifier.translate(_ESCAPES)


def _key(kind: str, identifier: str, suffix: str) -> str:
    return f"{PREFIX}:{{{kind}:{escape(identifier)}}}:{suffix}"


def card_state(card_id: str) -> str:
    return _key("c", card_id, "state")


def card_seen(card_id: str) -> str:
    return _key("c", card_id, "seen")


def card_recent(card_id: str) -> str:
    return _key("c", card_id, "recent")


def card_labels(card_id: str) -> str:
    return _key("c", card_id, "labels")


def blocklist_card(card_id: str) -> str:
    return _key("c", card_id, "blocked")


def blocklist_device(device_id: str) -> str:
    return _key("d", device_id, "blocked")


def merchant_days(merchant_id: str) -> str:
    return _key("m", merchant_id, "days")


def merchant_label(merchant_id: str, transaction_id: str) -> str:
    return _key("m", merchant_id, f"label:{escape(transaction_id)}")


def alert_context(transaction_id: str) -> str:
    return _key("t", transaction_id, "alert")


def parked(transaction_id: str) -> str:
    return _key("t", transaction_id, "parked")


def entity_keys(name: str, digest: str) -> tuple[str, str]:
    """The state and seen keys of one entity value (one slot). Its name is an identifier
    and its digest hex: nothing to escape."""
    tag = f"{PREFIX}:{{e:{name}.{digest}}}"
    return f"{tag}:state", f"{tag}:seen"


PARKED_INDEX: Final = f"{PREFIX}:{{feedback}}:parked"


def card_keys(card_id: str) -> tuple[str, ...]:
    """Every key of one card (for erasure)."""
    return (card_state(card_id), card_seen(card_id), card_recent(card_id), card_labels(card_id),
            blocklist_card(card_id))  # fmt: skip


def transaction_digest(transaction_id: str) -> bytes:
    """The seen-set member of a transaction id: fixed size whatever the id's length."""
    return hashlib.blake2b(transaction_id.encode(), digest_size=8).digest()


class AlertContext(msgspec.Struct, array_like=True, frozen=True):
    """The value of ``alert_context``: what a disposition needs of its transaction (about 150
    bytes in msgpack, against a few KB for the whole alert): the keys it writes and what was
    decided. ``alerted`` is False for one built from the lake (a transaction never alerted)."""

    event_time: int
    card_id: str
    customer_id: str
    merchant_id: str
    device_id: str | None
    alerted: bool = True
    decision: DecisionOutcome | None = None
    score: float | None = None
    model_version: str | None = None

    @classmethod
    def of_alert(cls, alert: Alert) -> AlertContext:
        tx = alert.transaction
        return cls(tx.event_time_ms, tx.card_id, tx.customer_id, tx.merchant_id, tx.device_id,
                   True, alert.decision, alert.score, alert.model_version)  # fmt: skip

    @classmethod
    def of_lake(cls, row: dict[str, Any]) -> AlertContext:
        """From ``models.lake.tables.find_transactions``: a transaction that was never alerted."""
        return cls(int(row["event_time"]), row["card_id"], row["customer_id"],
                   row["merchant_id"], row["device_id"], False, row["decision"], row["score"],
                   row["model_version"])  # fmt: skip

    def encode(self) -> bytes:
        return _encode_context(self)

    @classmethod
    def decode(cls, raw: bytes) -> AlertContext:
        return _decode_context(raw)


_encode_context = msgspec.msgpack.Encoder().encode
_decode_context = msgspec.msgpack.Decoder(AlertContext).decode
