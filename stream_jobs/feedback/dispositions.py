"""What one analyst disposition changes, free of faust so the app and the tests share it.

A disposition is applied to the transaction it names, known either from its alert (the app
keeps each alert's context in Redis: only what a disposition needs, for
``feedback_alert_ttl_days``) or, for a transaction that was never alerted (a chargeback on an
approved payment), from the lake's archive. One whose transaction is not known yet is parked
in Redis and applied once it is (its alert arrives, or the archive catches up), without
holding back the dispositions behind it.

Every write is idempotent and the transaction's latest label wins, by the disposition's time,
whatever order they are applied in: merchant fraud counts move only when a transaction's label
changes (``label_op`` keeps the label it counted and when), a card's label history is a hash
keyed by transaction id, a ``fraud`` blocklists the card and device (if not already) and a
later ``legit`` lifts the entries that transaction created. A redelivered or repeated message
changes nothing. All Redis calls are asyncio with timeouts: a dead Redis never blocks the
app's event loop (its heartbeats, its other agents).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgspec

from models.online import layout
from models.online.layout import AlertContext
from models.online.ops import run_async
from models.online.store import LABEL_CHANGED, LABEL_SUPERSEDED, delete_if_op, label_op
from services.core.contract import (
    Alert,
    Feedback,
    InvalidEvent,
    LabelRecord,
    decode_feedback,
    decode_or_none,
)
from services.core.settings import AsyncRedisClient

_alerts = msgspec.json.Decoder(Alert)
MAX_SKEW_MS = 300_000  # how far ahead of the app's clock a disposition's time is believed


class Parked(msgspec.Struct, array_like=True, frozen=True):
    """A disposition waiting for its transaction: where it came from, its bytes, since when."""

    partition: int
    offset: int
    raw: bytes
    at_ms: int

    def encode(self) -> bytes:
        return _encode_parked(self)


_encode_parked = msgspec.msgpack.Encoder().encode
_decode_parked = msgspec.msgpack.Decoder(Parked).decode


@dataclass(frozen=True)
class Applied:
    record: LabelRecord  # what to publish to ``labels``
    changed: bool  # False: a repeat, or older than the label counted; nothing changed


@dataclass(frozen=True)
class Rejected:
    field: str
    reason: str


def decode(raw: bytes) -> Feedback | Rejected:
    parsed = decode_feedback(raw)
    return Rejected(parsed.field, parsed.reason) if isinstance(parsed, InvalidEvent) else parsed


class Dispositions:
    def __init__(self, client: AsyncRedisClient, blocklist_ttl_ms: int, alert_ttl_ms: int) -> None:
        self._redis = client
        self._blocklist_ttl_ms, self._alert_ttl_ms = blocklist_ttl_ms, alert_ttl_ms

    async def remember(self, raw_alert: bytes) -> str | None:
        """Keep an alert's context for its dispositions; its transaction id, or None for a
        message that is not an alert (the job writes only valid ones)."""
        alert = decode_or_none(_alerts, raw_alert)
        if alert is None:
            return None
        key = layout.alert_context(alert.transaction_id)
        await self._redis.set(key, AlertContext.of_alert(alert).encode(), px=self._alert_ttl_ms)
        return alert.transaction_id

    async def context(self, transaction_id: str) -> AlertContext | None:
        raw = await self._redis.get(layout.alert_context(transaction_id))
        return AlertContext.decode(raw) if isinstance(raw, bytes) else None

    async def apply(self, feedback: Feedback, context: AlertContext) -> Applied:
        """Apply one disposition to its transaction."""
        fraud = feedback.label == "fraud"
        tx_id = feedback.transaction_id
        # A disposition dated ahead of the clock must not outrank every later correction.
        at = min(feedback.time_ms, int(time.time() * 1000) + MAX_SKEW_MS)
        op = label_op(tx_id, context.merchant_id, context.event_time, fraud, at)
        counted = (await run_async(self._redis, [op]))[0]
        record = _record(feedback, context)
        if counted == LABEL_SUPERSEDED:  # a later disposition of this transaction is in place
            return Applied(record, False)
        blocklist = [layout.blocklist_card(context.card_id)]
        blocklist += [layout.blocklist_device(context.device_id)] if context.device_id else []
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(layout.card_labels(context.card_id), tx_id, feedback.label)
        pipe.pexpire(layout.card_labels(context.card_id), self._alert_ttl_ms)
        if fraud:
            for key in blocklist:
                pipe.set(key, tx_id, px=self._blocklist_ttl_ms, nx=True)
        await pipe.execute()
        if not fraud:  # lift what this transaction's fraud label blocked, and nothing else
            await run_async(self._redis, [delete_if_op(key, tx_id) for key in blocklist])
        return Applied(record, counted == LABEL_CHANGED)

    async def park(self, transaction_id: str, parked: Parked, keep_ms: int) -> None:
        """Hold a disposition until its transaction is known (see :meth:`unpark`); the index
        says when to look for it next (at once, the first time)."""
        key = layout.parked(transaction_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.rpush(key, parked.encode())
        pipe.pexpire(key, keep_ms)
        await pipe.execute()
        await self._redis.zadd(layout.PARKED_INDEX, {transaction_id: parked.at_ms}, nx=True)

    async def parked(self, transaction_id: str) -> list[Parked]:
        """The dispositions parked for a transaction, oldest first."""
        entries = await self._redis.lrange(layout.parked(transaction_id), 0, -1)
        return [_decode_parked(e) for e in entries if isinstance(e, bytes)]

    async def look_again(self, transaction_id: str, at_ms: int) -> None:
        """When to look for a transaction not found yet."""
        await self._redis.zadd(layout.PARKED_INDEX, {transaction_id: at_ms}, xx=True)

    async def unpark(self, transaction_id: str, count: int) -> None:
        """Forget the first ``count`` parked dispositions of a transaction (applied or dead
        letters); the transaction leaves the index once none is left."""
        key = layout.parked(transaction_id)
        await self._redis.ltrim(key, count, -1)
        await self._redis.zrem(layout.PARKED_INDEX, transaction_id)
        if await self._redis.exists(key):  # parked meanwhile: back in the index
            await self._redis.zadd(layout.PARKED_INDEX, {transaction_id: int(time.time() * 1000)})

    async def due(self, now_ms: int, limit: int) -> list[str]:
        """The transactions with parked dispositions due to be looked for, longest due first."""
        found: list[Any] = await self._redis.zrangebyscore(
            layout.PARKED_INDEX, "-inf", now_ms, start=0, num=limit
        )
        return [member.decode() for member in found]

    async def waiting_count(self) -> int:
        return int(await self._redis.zcard(layout.PARKED_INDEX))


def _record(feedback: Feedback, context: AlertContext) -> LabelRecord:
    return LabelRecord(
        transaction_id=feedback.transaction_id, label=feedback.label, analyst=feedback.analyst,
        note=feedback.note, labelled_at=feedback.time_ms, event_time=context.event_time,
        card_id=context.card_id, customer_id=context.customer_id,
        merchant_id=context.merchant_id, device_id=context.device_id, alerted=context.alerted,
        decision=context.decision, score=context.score, model_version=context.model_version,
    )  # fmt: skip
